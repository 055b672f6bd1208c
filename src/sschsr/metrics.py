"""Image-quality and alignment measures.

``luminance`` and ``rank_correlation`` measure how well two renderings line up whatever their colour
processing: Spearman's rank correlation is unchanged by any monotone tone curve (exposure, gamma), so
it isolates geometry from photometry.
"""

from __future__ import annotations

import torch
from torch import Tensor


def luminance(img: Tensor) -> Tensor:
    """Mean over the channel axis.

    Args:
        img: ``(..., C, H, W)``.

    Returns:
        ``(..., H, W)``.
    """
    return img.mean(dim=-3)


def _ranks(x: Tensor) -> Tensor:
    r = torch.empty_like(x, dtype=torch.float64)
    r[x.argsort()] = torch.arange(x.numel(), dtype=torch.float64, device=x.device)
    return r


def rank_correlation(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """Spearman's rank correlation of two equally shaped arrays over ``mask`` (default: everywhere).

    Ties are broken by position (fine for continuous images).

    Args:
        a, b: same shape, e.g. ``(H, W)``; mask: bool, same shape.

    Returns:
        correlation in [-1, 1]; NaN when fewer than 2 pixels are selected.
    """
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.reshape(-1), b.reshape(-1)
    if mask is not None:
        m = mask.reshape(-1).bool()
        a, b = a[m], b[m]
    if a.numel() < 2:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp_min(1e-12))
