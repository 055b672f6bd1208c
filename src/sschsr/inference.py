"""Running a loaded network on a user's scene: its inputs prepared the way training prepared them, the
network run on scenes of any size in overlapping tiles, and the device chosen.

    >>> from sschsr.checkpoints import load_model
    >>> from sschsr.inference import prepare_inputs, predict_tiled
    >>> from sschsr.pipeline import TestTime
    >>> net = TestTime().build(load_model(None, scale=4, n_bands=31), scale=4)  # doctest: +SKIP
    >>> lr_up, ref_hr, rgb_hsi = prepare_inputs(lr, ref, 4, wavelengths)  # doctest: +SKIP
    >>> sr = predict_tiled(net, lr_up, ref_hr, rgb_hsi, tile=512)["sr"]  # doctest: +SKIP

Model files are :mod:`sschsr.checkpoints`' business, the test-time steps around the network
:mod:`sschsr.pipeline`'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr import progress
from sschsr.checkpoints import DEFAULT_CAMERA
from sschsr.data.spectral import camera_srf, default_wavelengths, fast_match_histograms, render
from sschsr.errors import InputError
from sschsr.ops.degrade import upsample

log = logging.getLogger(__name__)

ASPECT_TOLERANCE = 0.02  # relative difference of height/width ratios between reference and HSI


# --------------------------------------------------------------------------------------------------
# Inputs


def check_reference(ref_hw: tuple[int, int], lr_hw: tuple[int, int], name: str = "the reference") -> None:
    """InputError when the reference is smaller than the LR grid or of another aspect ratio (2 %)."""
    (rh, rw), (h, w) = ref_hw, lr_hw
    if rh < h or rw < w:
        raise InputError(
            f"{name} is {rh}x{rw} pixels, smaller than the LR HSI ({h}x{w}): it must be at least as large"
        )
    ratio_ref, ratio_hsi = rh / rw, h / w
    if abs(ratio_ref / ratio_hsi - 1) > ASPECT_TOLERANCE:
        raise InputError(
            f"{name} has aspect ratio {rh}x{rw} ({rw / rh:.3f}:1) but the LR HSI {h}x{w} ({w / h:.3f}:1): "
            "crop the reference to the HSI's field of view"
        )


def resample(img: Tensor, size: tuple[int, int]) -> Tensor:
    """``(C, H', W')`` to ``(C, *size)``: antialiased bilinear when shrinking, bicubic when enlarging,
    clamped to [0, 1]; returned as is when the size already fits."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img.float()
    shrink = img.shape[-2] > size[0] or img.shape[-1] > size[1]
    mode = "bilinear" if shrink else "bicubic"
    out = F.interpolate(img[None].float(), size=size, mode=mode, align_corners=False, antialias=shrink)
    return out[0].clamp(0, 1)


def prepare_inputs(
    lr: Tensor,
    ref: Tensor,
    scale: int,
    wavelengths: np.ndarray | None = None,
    camera: str = DEFAULT_CAMERA,
) -> tuple[Tensor, Tensor, Tensor]:
    """The network's three inputs from an LR HSI and a photo, as the data pipeline made them in training.

    ``lr_up`` = bicubic(``lr``); ``ref`` resampled to the HR grid ``(s*h, s*w)``; ``rgb_hsi`` = ``lr_up``
    rendered through the camera response of ``wavelengths``, histogram-matched to ``ref`` per channel.

    Args:
        lr: ``(C, h, w)`` float32, normalised (nominally [0, 1]).
        ref: ``(3, H', W')`` float32 in [0, 1], at least ``h x w`` with the HSI's aspect ratio (2 %).
        scale: the factor ``s``.
        wavelengths: ``(C,)`` band centres in nm; None: evenly over 400-700 nm.
        camera: the camera response the model was trained with (``info["camera"]``).

    Returns:
        ``lr_up (C, H, W)``, ``ref (3, H, W)``, ``rgb_hsi (3, H, W)``, float32 on the CPU.

    Raises:
        InputError: reference too small or of another aspect ratio; wavelengths that do not fit.
    """
    if lr.ndim != 3 or ref.ndim != 3 or ref.shape[0] != 3:
        raise ValueError(
            f"prepare_inputs expects lr (C, h, w) and ref (3, H, W); got {tuple(lr.shape)}, {tuple(ref.shape)}"
        )
    c, h, w = lr.shape
    check_reference(tuple(ref.shape[-2:]), (h, w))
    wl = default_wavelengths(c) if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
    if wl.shape != (c,):
        raise InputError(f"{len(wl)} wavelengths for an HSI of {c} bands")
    size = (h * scale, w * scale)
    lr_up = upsample(lr[None].float(), scale)[0]
    ref_hr = resample(ref, size)
    rgb = render(lr_up, camera_srf(wl, camera))
    rgb_hsi = fast_match_histograms(rgb, ref_hr).clamp(0, 1)
    return lr_up.contiguous(), ref_hr.contiguous(), rgb_hsi.contiguous()


# --------------------------------------------------------------------------------------------------
# Running


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: every ``tile - overlap`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _ramp(n: int, start: int, end: int, length: int, overlap: int) -> Tensor:
    """Blending weights of a tile along one axis: a raised-cosine rise over ``overlap`` pixels at each side
    that touches another tile, 1 elsewhere (and at the scene's own borders). Always > 0."""
    w = torch.ones(n)
    k = min(overlap, n)
    if k > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(k) + 0.5) / k)
        if start > 0:
            w[:k] = torch.minimum(w[:k], rise)
        if end < length:
            w[-k:] = torch.minimum(w[-k:], rise.flip(0))
    return w


def tile_count(h: int, w: int, tile: int | None, overlap: int | None = None) -> int:
    """How many tiles :func:`predict_tiled` runs on an ``h x w`` scene."""
    if tile is None or (tile >= h and tile >= w):
        return 1
    overlap = default_overlap(tile) if overlap is None else overlap
    return len(_starts(h, tile, overlap)) * len(_starts(w, tile, overlap))


def default_overlap(tile: int) -> int:
    """Overlap between tiles: a quarter of the tile, at most 32 HR pixels (wider than the fusion's 3x3
    convolutions and attention windows reach at the finest level, and than typical residual flows)."""
    return max(0, min(32, tile // 4))


def predict_tiled(
    model: nn.Module,
    lr_up: Tensor,
    ref: Tensor,
    rgb_hsi: Tensor,
    tile: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    keys: Iterable[str] = ("sr",),
) -> dict[str, Tensor]:
    """Run ``model`` on a whole scene, in one pass or in overlapping tiles blended smoothly.

    Tiles of ``tile x tile`` HR pixels, ``overlap`` pixels shared with each neighbour, are sent to
    ``device`` one at a time; their outputs are weighted by a raised-cosine window (1 inside, falling to 0
    across the overlap, 1 at the scene's borders) and averaged on the CPU. Device memory is bounded by the
    tile; the CPU holds the inputs and the outputs of the whole scene. A tile sees only its own part of the
    reference: motion larger than the overlap is matched less well near tile borders.

    Args:
        model: ``model(lr_up, ref, rgb_hsi) -> dict`` with at least ``sr``.
        lr_up: ``(C, H, W)``; ref, rgb_hsi: ``(3, H, W)`` (a leading batch dimension of 1 is accepted).
        tile: tile side in HR pixels; None: the whole scene at once.
        overlap: pixels shared by neighbouring tiles (default :func:`default_overlap`).
        device: where the model runs (it is moved there).
        keys: the outputs to return, those the model produces (``sr``, ``flow``, ``ref_warp0``, ``ref_warp``).

    Returns:
        ``{key: (K, H, W) float32 CPU tensor}`` for each requested key the model returned.
    """
    lr_up, ref, rgb_hsi = (t[0] if t.ndim == 4 else t for t in (lr_up, ref, rgb_hsi))
    _, h, w = lr_up.shape
    device = torch.device(device)
    model = model.to(device).eval()
    keys = tuple(keys)
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if tile is None or (tile >= h and tile >= w):
        with torch.inference_mode():
            out = model(lr_up[None].to(device), ref[None].to(device), rgb_hsi[None].to(device))
        progress.advance("tile", note="tile 1/1")
        return {k: out[k][0].float().cpu() for k in keys if k in out}

    overlap = default_overlap(tile) if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    acc: dict[str, Tensor] = {}
    weight = torch.zeros(1, h, w)
    origins = [(y0, x0) for y0 in _starts(h, tile, overlap) for x0 in _starts(w, tile, overlap)]
    for i, (y0, x0) in enumerate(origins, 1):
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        crop = (slice(None), slice(y0, y1), slice(x0, x1))
        with torch.inference_mode():
            out = model(*(t[crop][None].to(device) for t in (lr_up, ref, rgb_hsi)))
        win = _ramp(y1 - y0, y0, y1, h, overlap)[:, None] * _ramp(x1 - x0, x0, x1, w, overlap)[None, :]
        for k in keys:
            if k not in out:
                continue
            pred = out[k][0].float().cpu()
            if k not in acc:
                acc[k] = torch.zeros(pred.shape[0], h, w)
            acc[k][crop] += pred * win
        weight[0, y0:y1, x0:x1] += win
        progress.advance("tile", note=f"tile {i}/{len(origins)}")
    return {k: v / weight for k, v in acc.items()}


def predict_batch(
    net: torch.nn.Module, batch: dict[str, Any], tile: int | None, device: torch.device
) -> torch.Tensor:
    """``sr`` ``(B, C, H, W)`` on the CPU for one batch of a datamodule (``lr_up``, ``ref``, ``rgb_hsi``), whole
    or each sample in tiles of ``tile`` HR pixels (:func:`predict_tiled`)."""
    if tile is None:
        with torch.inference_mode():
            out = net(*(batch[k].to(device) for k in ("lr_up", "ref", "rgb_hsi")))
        return out["sr"].float().cpu()
    srs = [
        predict_tiled(net, batch["lr_up"][i], batch["ref"][i], batch["rgb_hsi"][i], tile=tile, device=device)[
            "sr"
        ]
        for i in range(batch["lr_up"].shape[0])
    ]
    return torch.stack(srs)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cuda"`` when none is available: InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(device)
