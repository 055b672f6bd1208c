"""Image filters that shape procedural depth: Gaussian blur, O(1) box means, the guided filter.

Used by :func:`sschsr.data.synth.geometry.procedural_depth` to put depth steps on an image's edges.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``(H, W)``, reflect-padded."""
    r = max(1, int(3 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    x = x[None, None]
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))
    return x[0, 0]


def _window_means(x: Tensor, r: int, dim: int) -> Tensor:
    """Means of ``x`` over the windows ``[i - r, i + r]`` along ``dim``, cut at the border.

    From the running sum ``c``: ``(c[min(i + r, n - 1)] - c[i - r - 1]) / count`` (no ``c[-1]`` term for
    ``i <= r``), slice by slice, without padded copies.
    """
    n = x.shape[dim]
    r = min(r, n - 1)
    c = x.cumsum(dim)
    out = torch.empty_like(c)
    out.narrow(dim, 0, n - r).copy_(c.narrow(dim, r, n - r))
    if r:
        out.narrow(dim, n - r, r).copy_(c.narrow(dim, n - 1, 1).expand_as(out.narrow(dim, n - r, r)))
    if n - r - 1 > 0:
        out.narrow(dim, r + 1, n - r - 1).sub_(c.narrow(dim, 0, n - r - 1))
    i = torch.arange(n)
    count = ((i + r + 1).clamp(max=n) - (i - r).clamp(min=0)).to(c.dtype)
    return out.div_(count.view(-1, *([1] * (-dim - 1))))


def _box(x: Tensor, r: int) -> Tensor:
    """Mean over a (2r+1)^2 window, ``(N, H, W)``, windows cut at the border.

    Separable running sums in float64: O(1) per pixel whatever ``r``. The same as average pooling with
    ``count_include_pad=False`` up to float32 rounding, which costs O(r^2) per pixel (2.5 s of the 3.8 s
    of a 512 x 512 pair went there).
    """
    return _window_means(_window_means(x.double(), r, -1), r, -2).to(x.dtype)


def guided_filter(guide: Tensor, src: Tensor, radius: int, eps: float) -> Tensor:
    """Edge-preserving smoothing of ``src`` ``(N, H, W)`` along the edges of ``guide`` ``(H, W)``.

    He, Sun and Tang, "Guided image filtering" (ECCV 2010), eqs. (5)-(8): locally ``q = a I + b``, so
    label maps filtered this way put their boundaries on the guide's edges (box filters: O(1) per pixel).
    """
    g = guide[None]
    n = src.shape[0]
    # all box means of a pass in one call: [I, I^2, p, I p], then [a, b]
    means = _box(torch.cat([g, g * g, src, g * src]), radius)
    mean_i, mean_ii, mean_p, mean_ip = means[:1], means[1:2], means[2 : 2 + n], means[2 + n :]
    cov_ip = mean_ip - mean_i * mean_p
    var_i = mean_ii - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    ab = _box(torch.cat([a, b]), radius)
    return ab[:n] * g + ab[n:]


def _argmax0(x: Tensor) -> Tensor:
    """``x.argmax(0)`` for a few channels (the first maximum on ties), as a running comparison: a
    reduction over the outer axis is several times slower than this on CPU."""
    best, idx = x[0], torch.zeros(x.shape[1:], dtype=torch.long)
    for k in range(1, x.shape[0]):
        better = x[k] > best
        idx.masked_fill_(better, k)
        best = torch.maximum(best, x[k])
    return idx
