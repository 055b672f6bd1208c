"""Geometric augmentation of a sample dict, keeping the flow between source and reference exact.

A sample is a dict of tensors on one HR grid ``(H, W)``: ``hr`` (C, H, W), ``ref`` (3, H, W), ``flow``
(2, H, W), ``valid`` (H, W) bool, ``mask`` (H, W) bool (False at nodata), and any other tensor whose last
two dimensions are the grid. Entries that are not tensors (``name``, ``has_flow``) pass through untouched.
Every function here is pure: it returns a new dict and never modifies its input. Apply them before the
degradation, while everything still lives on the HR grid.

The flow convention is that of :mod:`sschsr.ops.warp`: source pixel ``p`` appears in ``ref`` at
``p + flow[p]``. Both images are cropped at the same window, so a crop leaves the flow's values unchanged;
``valid`` then also requires ``p + flow[p]`` to land inside the crop.

A dihedral transform moves every pixel by an affine map ``T(p) = A p + b`` applied to source and reference
alike. From ``S(p) = R(p + f(p))``, with ``S' = S o T^-1`` and ``R' = R o T^-1``:

    S'(p') = R(T^-1 p' + f(T^-1 p')) = R'(p' + A f(T^-1 p'))

so the new flow is the old field moved like an image, with every vector multiplied by the linear part
``A``: a horizontal flip negates x, a vertical flip negates y, and ``torch.rot90(k=1)`` (which maps
``(x, y)`` to ``(y, W - 1 - x)``) takes ``(fx, fy)`` to ``(fy, -fx)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from sschsr.ops.warp import in_bounds

Sample = dict[str, Any]


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def spatial_size(sample: Mapping[str, Any]) -> tuple[int, int]:
    """The ``(H, W)`` grid shared by every tensor of ``sample`` (tensors with at least 2 dimensions).

    Raises:
        ValueError: when there is no spatial tensor, or two tensors disagree on the grid.
    """
    sizes = {k: tuple(v.shape[-2:]) for k, v in sample.items() if isinstance(v, Tensor) and v.ndim >= 2}
    if not sizes:
        raise ValueError("sample has no spatial tensor")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"sample tensors must share one (H, W) grid, got {sizes}")
    return next(iter(sizes.values()))


def crop(sample: Mapping[str, Any], top: int, left: int, height: int, width: int) -> Sample:
    """Cut every spatial tensor at the window ``[top:top+height, left:left+width]``.

    ``flow`` keeps its values (source and reference are cut alike); ``valid`` becomes
    ``valid & (p + flow[p] inside the window)``.

    Returns:
        a new sample with every spatial tensor of size ``(height, width)``.
    """
    h, w = spatial_size(sample)
    if top < 0 or left < 0 or height < 1 or width < 1 or top + height > h or left + width > w:
        raise ValueError(f"crop window ({top}, {left}, {height}, {width}) does not fit in a {h}x{w} sample")
    out: Sample = {}
    for k, v in sample.items():
        if isinstance(v, Tensor) and v.ndim >= 2:
            out[k] = v[..., top : top + height, left : left + width]
        else:
            out[k] = v
    if "valid" in out and "flow" in out:
        inside = in_bounds(out["flow"][None].float(), height, width)[0]
        out["valid"] = out["valid"] & inside
    return out


def _fit(size: int | tuple[int, int] | None, h: int, w: int, multiple_of: int) -> tuple[int, int]:
    ch, cw = (h, w) if size is None else _size2(size)
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    if size is None:
        ch, cw = ch - ch % multiple_of, cw - cw % multiple_of
    if ch % multiple_of or cw % multiple_of:
        raise ValueError(f"crop size {(ch, cw)} is not a multiple of {multiple_of}")
    if ch < 1 or cw < 1 or ch > h or cw > w:
        raise ValueError(f"crop size {(ch, cw)} does not fit in a {h}x{w} sample (multiple of {multiple_of})")
    return ch, cw


def random_crop(
    sample: Mapping[str, Any],
    size: int | tuple[int, int],
    generator: torch.Generator | None = None,
    multiple_of: int = 1,
) -> Sample:
    """Crop every spatial tensor at one window drawn uniformly over the grid.

    Args:
        sample: dict of tensors on one ``(H, W)`` grid (module docstring).
        size: crop ``(h, w)`` or an int for a square; must be a multiple of ``multiple_of`` and fit.
        generator: the randomness (pass one: library code never uses the global RNG).
        multiple_of: the crop size must be a multiple of this (the scale factor, so the LR grid is whole).

    Returns:
        a new sample of size ``(h, w)``; flow values unchanged, ``valid`` restricted to targets inside.

    Example:
        >>> s = {"hr": torch.rand(31, 64, 64), "flow": torch.zeros(2, 64, 64), "valid": torch.ones(64, 64, dtype=torch.bool)}
        >>> random_crop(s, 32, torch.Generator().manual_seed(0), multiple_of=4)["hr"].shape
        torch.Size([31, 32, 32])
    """
    h, w = spatial_size(sample)
    ch, cw = _fit(size, h, w, multiple_of)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    return crop(sample, top, left, ch, cw)


def center_crop(
    sample: Mapping[str, Any], size: int | tuple[int, int] | None = None, multiple_of: int = 1
) -> Sample:
    """Crop every spatial tensor at the central window (deterministic; for validation and test).

    Args:
        size: crop ``(h, w)`` or an int; ``None`` keeps the whole grid trimmed to a multiple of
            ``multiple_of`` (the trimmed rows and columns are split evenly between both sides).

    Returns:
        a new sample; see :func:`crop`.
    """
    h, w = spatial_size(sample)
    ch, cw = _fit(size, h, w, multiple_of)
    return crop(sample, (h - ch) // 2, (w - cw) // 2, ch, cw)


def transform_flow_vectors(flow: Tensor, hflip: bool, vflip: bool, k: int) -> Tensor:
    """Multiply the flow vectors (not the field's positions) by the dihedral transform's linear part.

    Args:
        flow: ``(..., 2, H, W)``, x then y.

    Returns:
        same shape: x negated by ``hflip``, y by ``vflip``, then ``(fx, fy) -> (fy, -fx)`` per quarter turn.
    """
    fx, fy = flow[..., 0, :, :], flow[..., 1, :, :]
    if hflip:
        fx = -fx
    if vflip:
        fy = -fy
    for _ in range(k % 4):
        fx, fy = fy, -fx
    return torch.stack((fx, fy), dim=-3)


def flip_rot(sample: Mapping[str, Any], hflip: bool = False, vflip: bool = False, k: int = 0) -> Sample:
    """Apply one of the 8 dihedral transforms to every spatial tensor, flow vectors included.

    The order is: horizontal flip (columns reversed), vertical flip (rows reversed), then
    ``torch.rot90(k)`` over the last two dimensions (counter-clockwise on screen, ``H`` and ``W`` swap for
    odd ``k``). ``flow_warp(ref', flow')`` equals the same transform of ``flow_warp(ref, flow)``; ``valid``
    and ``mask`` move with their pixels.

    Args:
        sample: dict of tensors on one grid (module docstring).
        hflip, vflip: flips; k: number of quarter turns (any integer, taken mod 4).

    Returns:
        a new sample.
    """
    k = k % 4
    out: Sample = {}
    for key, v in sample.items():
        if not (isinstance(v, Tensor) and v.ndim >= 2):
            out[key] = v
            continue
        if key == "flow":
            v = transform_flow_vectors(v, hflip, vflip, k)
        if hflip:
            v = v.flip(-1)
        if vflip:
            v = v.flip(-2)
        if k:
            v = torch.rot90(v, k, dims=(-2, -1))
        out[key] = v.contiguous()
    return out


def random_flip_rot(sample: Mapping[str, Any], generator: torch.Generator | None = None) -> Sample:
    """:func:`flip_rot` with one of the 8 dihedral transforms drawn uniformly (vflip is covered by
    hflip plus a half turn, so drawing hflip and k suffices)."""
    draw = int(torch.randint(0, 8, (1,), generator=generator))
    return flip_rot(sample, hflip=bool(draw & 1), vflip=False, k=draw >> 1)
