"""Figures: flow fields as colour, and the synthetic-pair sheet (source, reference, flow, validity, warp).

matplotlib is imported inside the functions that draw, with the Agg backend, so importing this module
costs nothing and works without a display.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from torch import Tensor

ArrayLike = Tensor | np.ndarray


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB, all inputs in [0, 1]; returns ``(..., 3)`` float in [0, 1]."""
    h6 = (h % 1.0) * 6.0
    i = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # the six sectors of the hue circle, in order: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def flow_to_color(flow: ArrayLike, max_norm: float | None = None) -> np.ndarray:
    """Colour-code a flow field: hue = direction, saturation = magnitude, zero flow = white.

    Magnitudes up to ``max_norm`` (default: the field's largest magnitude) grow in saturation at full
    value; beyond it (only when ``max_norm`` is given) the colour darkens, down to half value at three
    times ``max_norm``, so out-of-range vectors stay visible. Hue follows the angle of (x, y) with y
    pointing down: right is red, down is yellow-green, left is cyan, up is blue-violet.

    Args:
        flow: ``(2, H, W)`` tensor or array, x then y, pixels.
        max_norm: magnitude that reaches full saturation.

    Returns:
        ``(H, W, 3)`` uint8.

    Example:
        >>> flow_to_color(np.zeros((2, 4, 4)))[0, 0].tolist()
        [255, 255, 255]
    """
    f = _np(flow).astype(np.float64)
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"flow must be (2, H, W), got {f.shape}")
    f = np.nan_to_num(f)
    mag = np.hypot(f[0], f[1])
    if max_norm is None:
        max_norm = float(mag.max())
    max_norm = max(float(max_norm), 1e-9)
    rel = mag / max_norm
    hue = np.arctan2(f[1], f[0]) / (2 * np.pi)
    sat = np.clip(rel, 0.0, 1.0)
    val = np.clip(1.0 - 0.25 * (rel - 1.0), 0.5, 1.0)
    rgb = _hsv_to_rgb(hue, sat, val)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def _hwc(img: ArrayLike) -> np.ndarray:
    """(3, H, W) or (H, W, 3) or (H, W) -> float HWC (or HW) in [0, 1] for imshow."""
    a = _np(img).astype(np.float32)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.dtype == np.uint8:
        a = a / 255.0
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    return np.clip(a, 0.0, 1.0)


def _luma(a: np.ndarray) -> np.ndarray:
    return a.mean(axis=-1) if a.ndim == 3 else a


def _normalised(a: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit deviation over ``mask``: the two cameras differ in exposure and colour."""
    m = a[mask] if mask.any() else a.ravel()
    return (a - m.mean()) / (m.std() + 1e-6)


def pair_figure(
    hsi_rgb: ArrayLike,
    ref: ArrayLike,
    flow: ArrayLike,
    valid: ArrayLike,
    ref_warped: ArrayLike,
    path: str | os.PathLike,
    title: str | None = None,
) -> Path:
    """Write a PNG sheet of one synthetic pair.

    Panels: the HSI rendered to RGB (source view), the reference, the flow colour (with its maximum), the
    validity mask, the reference warped onto the source grid, and the absolute luminance difference
    to the source before and after the warp (each luminance normalised to zero mean and unit deviation
    over the valid pixels, since the cameras differ; invalid pixels shown black after the warp).

    Args:
        hsi_rgb: ``(3, H, W)`` or ``(H, W, 3)`` in [0, 1].
        ref: ``(3, H, W)`` or ``(H, W, 3)``, float in [0, 1] or uint8.
        flow: ``(2, H, W)``; valid: ``(H, W)`` bool; ref_warped: like ``ref``.
        path: output PNG, written atomically.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    src, r, rw = _hwc(hsi_rgb), _hwc(ref), _hwc(ref_warped)
    v = _np(valid).astype(bool)
    f = _np(flow)
    mag = np.hypot(f[0], f[1])
    d_before = np.abs(_normalised(_luma(r), v) - _normalised(_luma(src), v))
    d_after = np.abs(_normalised(_luma(rw), v) - _normalised(_luma(src), v)) * v
    vmax = float(np.percentile(d_before, 99)) or 1.0

    panels = [
        (src, "source (HSI rendered)", None),
        (r, "reference", None),
        (flow_to_color(f), f"flow, max {mag.max():.1f} px, mean {mag.mean():.1f}", None),
        (v, f"valid ({100 * v.mean():.1f} %)", "gray"),
        (rw, "reference warped to source", None),
        (d_before, f"|diff| before warp (mean {d_before[v].mean() if v.any() else 0:.2f})", "magma"),
        (d_after, f"|diff| after warp (mean {d_after[v].mean() if v.any() else 0:.2f})", "magma"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    for ax, (img, name, cmap) in zip(axes.flat, panels, strict=False):
        kw = {"vmin": 0, "vmax": vmax} if cmap == "magma" else {}
        ax.imshow(img, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=10)
    # the last panel: a colour wheel so the flow colours can be read
    n = 101
    yy, xx = np.mgrid[-1 : 1 : n * 1j, -1 : 1 : n * 1j]
    wheel = flow_to_color(np.stack([xx, yy]), max_norm=1.0)
    wheel[np.hypot(xx, yy) > 1] = 255
    axes.flat[7].imshow(wheel)
    axes.flat[7].set_title("flow colour key (x right, y down)", fontsize=10)
    for ax in axes.flat:
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
