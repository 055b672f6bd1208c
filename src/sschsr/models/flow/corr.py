"""All-pairs correlation volume, its pyramid, and the lookup around the current flow (RAFT, section 3.2).

``C(p, q) = <g(I1)[p], g(I2)[q]> / sqrt(D)`` for every pixel ``p`` of image 1 and ``q`` of image 2, both
at 1/8 resolution. The pyramid ``C^k`` average-pools the last two (image-2) dimensions by ``2^k``. The
lookup reads, at each level, a ``(2r+1) x (2r+1)`` window around where the current flow sends ``p``.

Differences from the official RAFT code (deliberate, each documented where it is done):

- coordinates at level ``k`` are ``(x + 0.5) / 2^k - 0.5``, the exact position on the pooled grid
  (RAFT uses ``x / 2^k``, off by a fraction of a pixel at the coarse levels);
- window channels are ordered row-major over ``(dy, dx)``, x the fast index (RAFT swaps x and y);
- levels the image is too small for (a pooled side would be 0) are not built; their channels are zeros,
  so any input size gives finite output (RAFT fails or returns NaN below about 128 px).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def bilinear_sampler(img: Tensor, coords: Tensor) -> Tensor:
    """Sample ``img`` at pixel coordinates, zeros outside.

    Args:
        img: ``(N, C, H, W)``.
        coords: ``(N, h, w, 2)`` positions in ``img``'s pixels, x then y; pixel centres at integers.

    Returns:
        ``(N, C, h, w)``.
    """
    h, w = img.shape[-2:]
    # align_corners=False normalisation: pixel centre i -> (2i + 1) / size - 1. Unlike the
    # align_corners=True form it is defined for a side of one pixel (the coarsest pyramid levels).
    gx = (2.0 * coords[..., 0] + 1.0) / w - 1.0
    gy = (2.0 * coords[..., 1] + 1.0) / h - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def max_pyramid_levels(height: int, width: int) -> int:
    """How many levels halving ``height x width`` (with floor) keep at least one pixel."""
    return 1 + int(math.floor(math.log2(max(1, min(height, width)))))


def all_pairs_correlation(fmap1: Tensor, fmap2: Tensor) -> Tensor:
    """Dot products of every feature vector of ``fmap1`` with every one of ``fmap2``, over sqrt(D).

    Args:
        fmap1, fmap2: ``(B, D, H, W)``.

    Returns:
        ``(B, H, W, H, W)``: ``[b, y1, x1, y2, x2]``, computed in float32.
    """
    b, d, h, w = fmap1.shape
    f1 = fmap1.float().reshape(b, d, h * w)
    f2 = fmap2.float().reshape(b, d, h * w)
    corr = torch.einsum("bdi,bdj->bij", f1, f2) / math.sqrt(d)
    return corr.reshape(b, h, w, h, w)


def corr_pyramid(corr: Tensor, num_levels: int) -> list[Tensor]:
    """Average-pool the image-2 dimensions of a correlation volume by 1, 2, 4, ...

    Args:
        corr: ``(B, H1, W1, H2, W2)``.
        num_levels: wanted levels; fewer are returned when ``H2`` or ``W2`` runs out
            (see :func:`max_pyramid_levels`).

    Returns:
        list of ``(B * H1 * W1, 1, H2 / 2^k, W2 / 2^k)``.
    """
    b, h1, w1, h2, w2 = corr.shape
    level = corr.reshape(b * h1 * w1, 1, h2, w2)
    pyramid = [level]
    for _ in range(1, min(num_levels, max_pyramid_levels(h2, w2))):
        level = F.avg_pool2d(level, 2, stride=2)
        pyramid.append(level)
    return pyramid


def window_offsets(radius: int, device=None, dtype=torch.float32) -> Tensor:
    """Integer offsets of a ``(2r+1)^2`` window, ``(2r+1, 2r+1, 2)`` as ``[dy, dx] -> (dx, dy)``."""
    d = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    return torch.stack((dx, dy), dim=-1)


def lookup(pyramid: list[Tensor], coords: Tensor, radius: int, num_levels: int) -> Tensor:
    """Correlation values in a window of radius ``r`` around ``coords`` at every pyramid level.

    Args:
        pyramid: from :func:`corr_pyramid`, built from a ``(B, H, W, H2, W2)`` volume.
        coords: ``(B, 2, H, W)`` where each pixel of image 1 currently lands in image 2 (level-0 pixels).
        radius: window radius ``r`` in pixels of each level.
        num_levels: channels are made for this many levels; missing coarse levels are zeros.

    Returns:
        ``(B, num_levels * (2r+1)^2, H, W)``; level-major, then row-major over ``(dy, dx)``: the centre of
        level 0 (zero offset) is channel ``(2r+1)^2 // 2``.
    """
    b, _, h, w = coords.shape
    k = (2 * radius + 1) ** 2
    centre = coords.permute(0, 2, 3, 1).reshape(b * h * w, 1, 1, 2).float()
    offsets = window_offsets(radius, device=coords.device)[None]  # (1, 2r+1, 2r+1, 2)
    out = []
    for i, corr in enumerate(pyramid[:num_levels]):
        scale = 2**i
        # pooled pixel j covers level-0 pixels [j*2^i, (j+1)*2^i): its centre is at j*2^i + (2^i - 1)/2
        sampled = bilinear_sampler(corr, (centre + 0.5) / scale - 0.5 + offsets)  # (BHW, 1, 2r+1, 2r+1)
        out.append(sampled.reshape(b, h, w, k))
    corr_feats = torch.cat(out, dim=-1).permute(0, 3, 1, 2)
    missing = num_levels - len(out)
    if missing > 0:
        corr_feats = torch.cat((corr_feats, corr_feats.new_zeros(b, missing * k, h, w)), dim=1)
    return corr_feats.contiguous()


class CorrBlock:
    """The correlation pyramid of one image pair and its lookup, as in RAFT.

    Args:
        fmap1, fmap2: ``(B, D, H, W)`` features at 1/8 resolution.
        num_levels: pyramid levels (4 in RAFT).
        radius: lookup radius (4 for RAFT, 3 for RAFT-small).

    Example:
        >>> from sschsr.ops.warp import coords_grid
        >>> f = torch.randn(1, 8, 6, 6)
        >>> CorrBlock(f, f, num_levels=4, radius=3)(coords_grid(1, 6, 6)).shape  # zero flow
        torch.Size([1, 196, 6, 6])
    """

    def __init__(self, fmap1: Tensor, fmap2: Tensor, num_levels: int = 4, radius: int = 4):
        self.num_levels, self.radius = num_levels, radius
        with torch.autocast(device_type=fmap1.device.type, enabled=False):  # dot products in float32
            self.pyramid = corr_pyramid(all_pairs_correlation(fmap1, fmap2), num_levels)

    @property
    def out_channels(self) -> int:
        return self.num_levels * (2 * self.radius + 1) ** 2

    def __call__(self, coords: Tensor) -> Tensor:
        with torch.autocast(device_type=coords.device.type, enabled=False):
            return lookup(self.pyramid, coords, self.radius, self.num_levels)
