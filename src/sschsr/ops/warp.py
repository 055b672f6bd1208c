"""Backward warping by a dense flow field.

Flow convention (the same everywhere in sschsr, ``sschsr-synth`` included): ``flow`` is ``(B, 2, H, W)``,
channel 0 is x (columns), channel 1 is y (rows), in pixels of the grid it is defined on. The source pixel
``p`` appears in the other image at ``p + flow[p]``. Pixel centres sit at integer coordinates.

So ``flow_warp(ref, flow)`` pulls the reference onto the source grid: ``out[p] = ref[p + flow[p]]``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor


def coords_grid(batch: int, height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Pixel coordinates of a grid.

    Returns:
        ``(B, 2, H, W)``: channel 0 holds x (column index), channel 1 holds y (row index).
    """
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype),
        torch.arange(width, device=device, dtype=dtype),
        indexing="ij",
    )
    return torch.stack((xs, ys), dim=0)[None].expand(batch, -1, -1, -1)


def flow_warp(
    x: Tensor,
    flow: Tensor,
    mode: Literal["bilinear", "nearest", "bicubic"] = "bilinear",
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros",
) -> Tensor:
    """Sample ``x`` at ``p + flow[p]`` for every pixel ``p`` of the flow's grid.

    Args:
        x: ``(B, C, Hx, Wx)`` image to sample (the grids of ``x`` and ``flow`` may differ in size;
            coordinates are in ``x``'s pixels).
        flow: ``(B, 2, H, W)`` displacement in pixels, x then y.
        mode: interpolation.
        padding_mode: what is read outside ``x``.

    Returns:
        ``(B, C, H, W)`` warped image, same dtype as ``x``.

    Example:
        >>> x = torch.rand(1, 3, 8, 8)
        >>> torch.allclose(flow_warp(x, torch.zeros(1, 2, 8, 8)), x, atol=1e-6)
        True
    """
    if x.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or flow.shape[0] != x.shape[0]:
        raise ValueError(
            f"flow_warp expects x (B, C, H, W) and flow (B, 2, H, W); got {tuple(x.shape)} and {tuple(flow.shape)}"
        )
    b, _, h, w = flow.shape
    hx, wx = x.shape[-2:]
    pos = coords_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow
    # normalise to [-1, 1] with align_corners=True: -1 and 1 are the centres of the corner pixels
    gx = 2.0 * pos[:, 0] / max(wx - 1, 1) - 1.0
    gy = 2.0 * pos[:, 1] / max(hx - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=True)


def move_content(x: Tensor, dx: float, dy: float) -> Tensor:
    """``(B, C, H, W)`` with its content moved by ``(dx, dy)`` px: ``out(p) = x(p - (dx, dy))``, the border
    repeated where nothing comes in (exact for whole pixels)."""
    if dx == 0 and dy == 0:
        return x
    b, _, h, w = x.shape
    flow = x.new_tensor([-dx, -dy]).view(1, 2, 1, 1).expand(b, 2, h, w)
    return flow_warp(x, flow, padding_mode="border")


def in_bounds(flow: Tensor, height: int | None = None, width: int | None = None) -> Tensor:
    """Where ``p + flow[p]`` lands inside an image of ``height x width`` (default: the flow's own grid).

    Args:
        flow: ``(B, 2, H, W)``.

    Returns:
        ``(B, H, W)`` bool.
    """
    b, _, h, w = flow.shape
    height = h if height is None else height
    width = w if width is None else width
    pos = coords_grid(b, h, w, device=flow.device, dtype=flow.dtype) + flow
    return (pos[:, 0] >= 0) & (pos[:, 0] <= width - 1) & (pos[:, 1] >= 0) & (pos[:, 1] <= height - 1)
