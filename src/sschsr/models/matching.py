"""GAM: attention matching of 3x3 feature patches at ``H/4`` (DESIGN.md, method step 4).

Every source position ``p`` (the grid of ``rgb_hsi``) is compared with reference positions ``q`` (the grid
of ``ref_warp``) by the cosine similarity of their 3x3 feature patches; the best ``q`` gives the
correspondence offset ``C[p] = q - p`` (x then y, pixels of that level: the flow convention of
:mod:`sschsr.ops.warp`, so ``flow_warp(f_ref, C)`` pulls the matched features onto the source grid) and its
similarity is the score ``S[p]``.

Descriptors, as in the paper's code: features are L2-normalised per pixel over channels, the 3x3
neighbourhood (zero padded) is concatenated, and that patch vector is L2-normalised again.

Two searches:

- ``global``: every ``q`` in the image (the paper). Computed in blocks of query rows, so memory is bounded
  by ``chunk_size`` similarity entries instead of growing with the square of the area (the official code
  needs 9.6 GB at 1024 x 1024).
- ``local``: ``q`` within ``(2r + 1)^2`` of ``p``. ``ref_warp`` is already aligned by the stage-1 flow, so
  true matches are near; time and memory are linear in the area. Patch dot products are computed from
  per-pixel dot products summed over the 3x3 window, so each displacement costs ``C`` (not ``9C``)
  multiply-adds per pixel. With ``r`` at least the image size minus one it returns what ``global`` does.

The best index is an argmax (with a faint preference for short offsets, :data:`DISTANCE_PRIOR`), which has
no gradient; ``S`` keeps the gradient of the winning similarity,
so a loss through the modulation mask still trains the matching encoder.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GAM", "Matching", "global_match", "index_to_offset", "local_match", "patch_descriptors"]

Matching = Literal["global", "local"]

EPS = 1e-12  # F.normalize's floor on norms: an all-zero patch gets similarity 0
DISTANCE_PRIOR = 1e-5  # similarity given up per pixel of |dx| + |dy| when choosing the best match. In flat
# regions every candidate's features are equal and float noise would pick one at random (the paper's code:
# the first in raster order, i.e. the far corner); with this the nearest wins, which after the flow
# alignment is the likely match. Distinct textures differ by far more. S is the similarity itself.


def _check_pair(src: Tensor, ref: Tensor, patch_size: int) -> None:
    if src.ndim != 4 or src.shape != ref.shape:
        raise ValueError(
            f"matching expects src and ref features of one shape (B, D, h, w); got {tuple(src.shape)} and {tuple(ref.shape)}"
        )
    if patch_size < 1 or patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd and positive; got {patch_size}")


def patch_descriptors(feat: Tensor, patch_size: int = 3) -> Tensor:
    """Unit-norm patch vectors of per-pixel unit-norm features.

    Args:
        feat: ``(B, D, h, w)`` float.
        patch_size: odd side of the patch.

    Returns:
        ``(B, D * patch_size^2, h, w)``, L2 norm 1 per position (0 where the patch is all zero).
    """
    b, d, h, w = feat.shape
    feat = F.normalize(feat, dim=1, eps=EPS)
    patches = F.unfold(feat, patch_size, padding=patch_size // 2).view(b, d * patch_size**2, h, w)
    return F.normalize(patches, dim=1, eps=EPS)


def index_to_offset(index: Tensor, width: int) -> Tensor:
    """Flat indices of matched positions to offsets from each query's own position.

    Args:
        index: ``(B, h, w)`` int64, ``q_y * width + q_x`` of the match of every query ``p``.
        width: ``w`` of the reference grid.

    Returns:
        ``(B, 2, h, w)`` float32, ``q - p``: x then y.
    """
    _, h, w = index.shape
    ys = torch.arange(h, device=index.device).view(1, h, 1)
    xs = torch.arange(w, device=index.device).view(1, 1, w)
    return torch.stack((index % width - xs, index // width - ys), dim=1).float()


def global_match(
    src: Tensor, ref: Tensor, patch_size: int = 3, chunk_size: int = 2**24
) -> tuple[Tensor, Tensor]:
    """Best match of every source patch among all reference patches.

    Args:
        src: ``(B, D, h, w)`` features on the source grid (from ``rgb_hsi``).
        ref: ``(B, D, h, w)`` features of the reference (from ``ref_warp``).
        patch_size: odd side of the compared patches.
        chunk_size: similarity entries computed at once per batch item (query rows are taken in blocks
            of ``max(1, chunk_size // (w * h * w))``); results do not depend on it.

    Returns:
        ``C (B, 2, h, w)`` float32 offsets ``q - p`` (x, y), ``S (B, 1, h, w)`` cosine similarity in
        [-1, 1] of the best match (differentiable in the features).
    """
    _check_pair(src, ref, patch_size)
    b, _, h, w = src.shape
    n = h * w
    q = patch_descriptors(src, patch_size).flatten(2)  # (B, D', N)
    k = patch_descriptors(ref, patch_size).flatten(2)
    rows = max(1, chunk_size // (w * n))
    ys = torch.arange(h, device=src.device, dtype=q.dtype).repeat_interleave(w)
    xs = torch.arange(w, device=src.device, dtype=q.dtype).repeat(h)
    with torch.no_grad():
        qt = q.transpose(1, 2)  # (B, N, D')
        index = []
        for r0 in range(0, h, rows):
            sl = slice(r0 * w, (r0 + rows) * w)
            dist = (ys[sl, None] - ys[None]).abs() + (xs[sl, None] - xs[None]).abs()  # (n, N) |q - p|_1
            sim = torch.bmm(qt[:, sl], k) - DISTANCE_PRIOR * dist
            index.append(sim.argmax(dim=-1))
        index = torch.cat(index, dim=1)  # (B, N)
    best = torch.gather(k, 2, index.unsqueeze(1).expand(-1, k.shape[1], -1))
    score = (q * best).sum(dim=1).view(b, 1, h, w)
    return index_to_offset(index.view(b, h, w), w), score


def _box_sum(x: Tensor, size: int) -> Tensor:
    """Sum over ``size x size`` windows, zero padded, same size out."""
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=True) * (size * size)


def local_match(src: Tensor, ref: Tensor, radius: int = 4, patch_size: int = 3) -> tuple[Tensor, Tensor]:
    """Best match of every source patch among the reference patches within ``radius`` (Chebyshev).

    Same contract and same similarities as :func:`global_match`, restricted to ``|q - p| <= radius`` per
    axis and to ``q`` inside the image. Memory: ``(2r + 1)^2`` maps of ``h x w``.
    """
    _check_pair(src, ref, patch_size)
    if radius < 0:
        raise ValueError(f"radius must be >= 0; got {radius}")
    b, _, h, w = src.shape
    r = radius
    f = F.normalize(src, dim=1, eps=EPS)
    g = F.normalize(ref, dim=1, eps=EPS)
    # |patch|^2 is the box sum of per-pixel |f|^2 (1 inside the image, 0 in the zero padding)
    norm_q = _box_sum(f.square().sum(1, keepdim=True), patch_size).sqrt().clamp_min(EPS)
    # padded with ones, not zeros: those positions are masked out, and 0/0 would put NaN in the gradient
    norm_k = F.pad(
        _box_sum(g.square().sum(1, keepdim=True), patch_size).sqrt().clamp_min(EPS), (r, r, r, r), value=1.0
    )
    inside = F.pad(torch.ones(1, 1, h, w, device=src.device, dtype=torch.bool), (r, r, r, r))
    g = F.pad(g, (r, r, r, r))

    dots, norms, valid, dist = [], [], [], []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            window = (..., slice(r + dy, r + dy + h), slice(r + dx, r + dx + w))
            dots.append((f * g[window]).sum(1))
            norms.append(norm_k[window][:, 0])
            valid.append(inside[window][:, 0])
            dist.append(abs(dy) + abs(dx))
    # patch dot product = 3x3 box sum of per-pixel dot products at the same displacement
    sim = _box_sum(torch.stack(dots, dim=1), patch_size) / (norm_q * torch.stack(norms, dim=1))
    sim = sim.masked_fill(~torch.stack(valid, dim=1), float("-inf"))  # q outside the reference image
    prior = DISTANCE_PRIOR * torch.tensor(dist, device=sim.device, dtype=sim.dtype).view(1, -1, 1, 1)
    best = (sim.detach() - prior).argmax(dim=1, keepdim=True)
    score = sim.gather(1, best)
    side = 2 * r + 1
    offset = torch.cat((best % side - r, best // side - r), dim=1).float()
    return offset, score


class GAM(nn.Module):
    """Patch matching between the matching features of ``rgb_hsi`` and of ``ref_warp``.

    Args:
        matching: ``local`` (window of ``radius`` around each position; linear memory) or ``global``
            (the whole image, the paper; memory bounded by ``chunk_size``).
        radius: half side of the local window, pixels at ``H/4`` (4 covers +-16 px at full resolution).
        patch_size: odd side of the compared patches (the paper: 3).
        chunk_size: global search only, similarity entries computed at once per batch item.

    Shape:
        ``forward(src (B, D, h, w), ref (B, D, h, w))`` -> ``C (B, 2, h, w)`` float32 offsets (x, y) in
        pixels of ``h x w`` with ``src[p] ~ ref[p + C[p]]``, ``S (B, 1, h, w)`` similarity in [-1, 1].

    Example:
        >>> import torch
        >>> feat = torch.randn(1, 8, 12, 12)
        >>> c, s = GAM("local", radius=3)(feat, torch.roll(feat, shifts=(1, 2), dims=(-2, -1)))
        >>> c[0, :, 6, 6].tolist(), round(s[0, 0, 6, 6].item(), 4)
        ([2.0, 1.0], 1.0)
    """

    def __init__(
        self, matching: Matching = "local", radius: int = 4, patch_size: int = 3, chunk_size: int = 2**24
    ):
        super().__init__()
        if matching not in ("local", "global"):
            raise ValueError(f"matching must be 'local' or 'global'; got {matching!r}")
        self.matching, self.radius, self.patch_size, self.chunk_size = (
            matching,
            radius,
            patch_size,
            chunk_size,
        )

    def forward(self, src: Tensor, ref: Tensor) -> tuple[Tensor, Tensor]:
        if self.matching == "local":
            return local_match(src, ref, self.radius, self.patch_size)
        return global_match(src, ref, self.patch_size, self.chunk_size)

    def extra_repr(self) -> str:
        window = f", radius={self.radius}" if self.matching == "local" else f", chunk_size={self.chunk_size}"
        return f"{self.matching!r}{window}, patch_size={self.patch_size}"
