"""The LR degradation of the paper: per-band Gaussian blur, decimation, optional noise; bicubic back up.

SSC-HSR's setting: Gaussian kernel of size 8 and sigma 3, keep every s-th pixel (s = 4, 8, 16), then
bicubic interpolation back to the HR grid for the network's input ``lr_up``. An even kernel has no centre
pixel; it is centred between pixels (padding 3 before and 4 after for size 8), and decimation keeps
pixels ``0, s, 2s, ...`` as MATLAB's ``(1:s:end)`` does.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

KERNEL_SIZE = 8  # the paper's Gaussian blur: size and sigma (HR px)
SIGMA = 3.0


def gaussian_kernel(
    size: int = KERNEL_SIZE, sigma: float = SIGMA, dtype=torch.float32, device=None
) -> Tensor:
    """A normalised 2-D Gaussian kernel, centred at ``(size - 1) / 2`` (between pixels for even sizes).

    Returns:
        ``(size, size)``, sums to 1.
    """
    if size < 1 or sigma <= 0:
        raise ValueError(f"kernel size must be >= 1 and sigma > 0, got {size}, {sigma}")
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    k = g[:, None] * g[None, :]
    return (k / k.sum()).to(dtype)


def gaussian_kernel_1d(
    size: int = KERNEL_SIZE, sigma: float = SIGMA, dtype=torch.float32, device=None
) -> Tensor:
    """The 1-D factor of :func:`gaussian_kernel`: ``(size,)``, sums to 1; ``outer(g, g)`` is the 2-D kernel.
    :func:`blur` with it filters separably."""
    return gaussian_kernel(size, sigma, dtype=dtype, device=device).sum(0)


def blur(x: Tensor, kernel: Tensor, stride: int = 1) -> Tensor:
    """Blur every channel of ``x`` with ``kernel``, reflect-padded so the size is kept, keeping every
    ``stride``-th pixel (``blur(x, k, s) == blur(x, k)[..., ::s, ::s]``, computed only where kept).

    Args:
        x: ``(B, C, H, W)``; kernel: ``(k, k)``, or ``(k,)`` for the separable kernel ``outer(kernel, kernel)``
            (the same result, computed along x then along y: ``2 k`` instead of ``k^2`` products a pixel).

    Returns:
        ``(B, C, ceil(H / stride), ceil(W / stride))``.
    """
    k = kernel.shape[-1]
    pad_lo, pad_hi = (k - 1) // 2, k // 2
    c = x.shape[1]
    mode = "reflect" if min(x.shape[-2:]) > max(pad_lo, pad_hi) else "replicate"
    w = kernel.to(x)
    if kernel.ndim == 1:
        along_x = F.pad(x, (pad_lo, pad_hi, 0, 0), mode=mode)
        along_x = F.conv2d(along_x, w.view(1, 1, 1, k).expand(c, 1, 1, k), stride=(1, stride), groups=c)
        along_y = F.pad(along_x, (0, 0, pad_lo, pad_hi), mode=mode)
        return F.conv2d(along_y, w.view(1, 1, k, 1).expand(c, 1, k, 1), stride=(stride, 1), groups=c)
    xp = F.pad(x, (pad_lo, pad_hi, pad_lo, pad_hi), mode=mode)
    return F.conv2d(xp, w[None, None].expand(c, 1, k, k), stride=stride, groups=c)


def smoothing_size(sigma: float) -> int:
    """The size of :func:`smooth`'s Gaussian kernel: ``2 round(3 sigma) + 1``."""
    return 2 * round(3 * sigma) + 1


def smooth(z: Tensor, sigma: float) -> Tensor:
    """``z`` ``(B, C, H, W)`` filtered by the normalised Gaussian of ``sigma`` HR px
    (:func:`smoothing_size`), separably (:func:`blur`); ``sigma`` 0: ``z``."""
    if sigma == 0:
        return z
    return blur(z, gaussian_kernel_1d(smoothing_size(sigma), sigma, dtype=z.dtype, device=z.device))


MATRIX_MAX_SIZE = 1024
"""The longest input side (px) that the separable linear maps here (:func:`blur_decimate`,
:func:`upsample`, and those of back-projection and the flow refinement) apply as dense matrices. A dense
matrix costs a multiply per input pixel of the row for each output pixel, against a few taps for a
convolution: on tiles it is much faster (fewer, larger matrix products, cheap backward passes), on whole
remote-sensing scenes it would be far slower, so longer inputs take the convolution / interpolation path
(equal within float rounding, tested)."""


def use_matrices(*lengths: int) -> bool:
    """Whether inputs with sides of these ``lengths`` (px) take the dense-matrix path (:data:`MATRIX_MAX_SIZE`)."""
    return max(lengths) <= MATRIX_MAX_SIZE


def blur_decimate(x: Tensor, scale: int, kernel_size: int = KERNEL_SIZE, sigma: float = SIGMA) -> Tensor:
    """``blur(x, gaussian_kernel(kernel_size, sigma), stride=scale)`` (tested equal within float
    rounding), as two matrix products (:func:`blur_decimate_matrix`; the kernel is separable) up to
    :data:`MATRIX_MAX_SIZE`, as the separable convolution beyond: on tiles several times faster than the
    convolution on CPU, forward and backward. Never under autocast.

    Args:
        x: ``(..., H, W)``, any size.

    Returns:
        ``(..., ceil(H / scale), ceil(W / scale))`` in ``x``'s dtype.
    """
    if not use_matrices(*x.shape[-2:]):
        kernel = gaussian_kernel_1d(kernel_size, sigma, dtype=x.dtype, device=x.device)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = blur(x.reshape(-1, 1, *x.shape[-2:]), kernel, stride=scale)
        return out.reshape(*x.shape[:-2], *out.shape[-2:])
    h, w = x.shape[-2:]
    reflect = min(h, w) > kernel_size // 2  # as blur() pads: reflected, or replicated on tiny grids
    my = matrix_as(blur_decimate_matrix, (h, scale, kernel_size, float(sigma), reflect), x)
    mx = matrix_as(blur_decimate_matrix, (w, scale, kernel_size, float(sigma), reflect), x)
    return separable(x, my, mx)


def separable(x: Tensor, my: Tensor, mx: Tensor) -> Tensor:
    """``my @ x @ mx.T`` for ``x`` ``(..., H, W)``, ``my`` ``(H', H)``, ``mx`` ``(W', W)``: a linear map
    applied along y and along x, the x side as one matrix product over every row; ``(..., H', W')``.
    Never under autocast (the matrices are in ``x``'s dtype)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        along_x = (x.reshape(-1, x.shape[-1]) @ mx.mT).reshape(*x.shape[:-1], mx.shape[0])
        return my @ along_x


@functools.lru_cache(maxsize=64)
def blur_decimate_matrix(n: int, scale: int, kernel_size: int, sigma: float, reflect: bool) -> Tensor:
    """``(ceil(n / scale), n)`` float64 matrix of :func:`blur_decimate` along one axis: the normalised 1-D
    factor of :func:`gaussian_kernel`, :func:`blur`'s padding (``(k - 1) // 2`` before, ``k // 2``
    after; reflected, or replicated when ``reflect`` is false) and every ``scale``-th sample from the
    first."""
    if n < 1 or scale < 1:
        raise ValueError(f"blur_decimate_matrix needs n >= 1 and scale >= 1; got {n}, {scale}")
    g = gaussian_kernel_1d(kernel_size, sigma, dtype=torch.float64)
    pad_lo = (kernel_size - 1) // 2
    m = torch.zeros(math.ceil(n / scale), n, dtype=torch.float64)
    for i in range(m.shape[0]):
        for t in range(kernel_size):
            j = i * scale + t - pad_lo
            if reflect:
                j = -j if j < 0 else (2 * (n - 1) - j if j > n - 1 else j)
            m[i, min(max(j, 0), n - 1)] += g[t]
    return m


def degrade(
    hr: Tensor,
    scale: int,
    kernel_size: int = KERNEL_SIZE,
    sigma: float = SIGMA,
    noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The paper's LR observation of an HR cube: :func:`blur` with :func:`gaussian_kernel`, every
    ``scale``-th pixel kept (computed by :func:`blur_decimate`), plus noise.

    Args:
        hr: ``(B, C, H, W)`` with H and W divisible by ``scale``.
        scale: integer factor >= 1.
        noise_std: standard deviation of additive Gaussian noise on the LR cube (0: none).

    Returns:
        ``(B, C, H // scale, W // scale)``.
    """
    if hr.ndim != 4:
        raise ValueError(f"degrade expects (B, C, H, W), got {tuple(hr.shape)}")
    if scale < 1 or hr.shape[-1] % scale or hr.shape[-2] % scale:
        raise ValueError(f"HR size {tuple(hr.shape[-2:])} must be divisible by the scale {scale}")
    lr = blur_decimate(hr, scale, kernel_size, sigma)
    if noise_std > 0:
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype, device="cpu").to(lr.device)
        lr = lr + noise_std * noise
    return lr


def upsample(lr: Tensor, scale: int) -> Tensor:
    """Bicubic interpolation to ``scale`` times the size (the network's ``lr_up`` input): PyTorch's
    ``F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False)`` (tested equal within
    float rounding), computed as two matrix products (:func:`bicubic_matrix`) up to
    :data:`MATRIX_MAX_SIZE`: on CPU several times faster, forward and backward (back-projection and the
    flow refinement differentiate through it). Computed in ``lr``'s dtype, never under autocast.

    Args:
        lr: ``(..., h, w)``.

    Returns:
        ``(..., h * scale, w * scale)``, not clamped.
    """
    h, w = lr.shape[-2:]
    if not use_matrices(h, w):
        flat = lr.reshape(-1, 1, h, w)
        up = F.interpolate(flat, scale_factor=scale, mode="bicubic", align_corners=False)
        return up.reshape(*lr.shape[:-2], h * scale, w * scale)
    return separable(lr, matrix_as(bicubic_matrix, (h, scale), lr), matrix_as(bicubic_matrix, (w, scale), lr))


def matrix_as(make: Callable[..., Tensor], args: tuple, like: Tensor) -> Tensor:
    """``make(*args)`` (a float64 CPU matrix) on ``like``'s device in its dtype, made and converted once
    per arguments, device and dtype. Always an ordinary tensor, even when first asked for under
    ``torch.inference_mode``: back-projection and the flow refinement differentiate through it later."""
    return _converted(make, args, like.device, like.dtype)


@functools.lru_cache(maxsize=128)
def _converted(make: Callable[..., Tensor], args: tuple, device: torch.device, dtype: torch.dtype) -> Tensor:
    with torch.inference_mode(False):
        return make(*args).to(device, dtype).clone()


@functools.lru_cache(maxsize=64)
def bicubic_matrix(n: int, scale: int, offset: float = 0.0) -> Tensor:
    """``(n * scale, n)`` float64 matrix of PyTorch's bicubic upsampling along one axis: sample ``i`` at
    ``(i + 0.5) / scale - 0.5`` (align_corners=False), the cubic convolution kernel with ``A = -0.75``,
    indices clamped at the borders, as ``upsample_bicubic2d`` does. ``offset`` (HR px) moves the content
    by that much (sample ``i`` at ``(i - offset + 0.5) / scale - 0.5``; for whole pixels the upsampling
    moved by :func:`sschsr.ops.warp.move_content` away from the borders)."""
    if n < 1 or scale < 1:
        raise ValueError(f"bicubic_matrix needs n >= 1 and scale >= 1; got {n}, {scale}")
    a = -0.75
    x = (torch.arange(n * scale, dtype=torch.float64) - offset + 0.5) / scale - 0.5
    x0 = x.floor()
    t = x - x0

    def near(d: Tensor) -> Tensor:  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d: Tensor) -> Tensor:  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    rows = torch.arange(n * scale)
    m = torch.zeros(n * scale, n, dtype=torch.float64)
    for k, wk in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t)), strict=True):
        m.index_put_((rows, (x0.long() + k).clamp(0, n - 1)), wk, accumulate=True)
    return m


def low_pass(x: Tensor, scale: int) -> Tensor:
    """``x`` as the upsampled LR side shows it: the paper's blur (:func:`gaussian_kernel`'s defaults, as
    :func:`degrade`) kept at every ``scale``-th pixel, bicubic back up (:func:`upsample`), cropped to ``x``'s
    size. Unlike :func:`degrade` any size is taken; for sizes divisible by ``scale`` it is
    ``upsample(degrade(x, scale), scale)``.

    Args:
        x: ``(B, C, H, W)``.

    Returns:
        ``(B, C, H, W)``.
    """
    h, w = x.shape[-2:]
    return upsample(blur_decimate(x, scale), scale)[..., :h, :w]


def content_shift(scale: int, kernel_size: int = KERNEL_SIZE) -> float:
    """How far (HR pixels, in x and in y alike) ``upsample(degrade(hr, scale), scale)`` shows ``hr``'s
    content from where it is in ``hr``: ``lr_up(p) ~ hr(p - shift)``.

    The LR pixel ``i`` is the blurred cube at HR pixel ``scale * i``, i.e. a weighted mean centred at
    ``scale * i + c`` (``c = 0.5`` for an even kernel, padded 3 before and 4 after, 0 for an odd one);
    bicubic interpolation with ``align_corners=False`` puts it back at ``scale * i + (scale - 1) / 2``. So
    ``shift = (scale - 1) / 2 - c``: 3 px at x8, 1 px at x4, 0 at x2 with the paper's kernel of 8. The
    networks learn it from their training pairs (the flow network adds it to every vector); a mirrored
    input has it in the other direction (:func:`sschsr.models.ensemble.dihedral_flow` corrects it).
    """
    if scale < 1 or kernel_size < 1:
        raise ValueError(f"scale and kernel_size must be >= 1, got {scale}, {kernel_size}")
    centre = (kernel_size - 1) / 2 - (kernel_size - 1) // 2
    return (scale - 1) / 2 - centre


LR_GRIDS = ("paper", "block")  # how LR data sit on the HR grid (see lr_grid_shift)


def lr_grid_shift(scale: int, lr_grid: str = "paper") -> float:
    """:func:`content_shift` of LR data made one of two ways (:data:`LR_GRIDS`), in HR pixels along x and y.

    - ``paper``: the paper's degradation (an even Gaussian kernel of 8, every s-th pixel), on which every
      network here trains and every CAVE evaluation is made: :func:`content_shift`, 3 px at x8.
    - ``block``: each LR pixel centred on its ``s x s`` block of HR pixels, as a camera pixel integrates
      its footprint, block averaging or area resizing make it: 0 (bicubic up with
      ``align_corners=False`` puts pixel ``i`` at HR ``s * i + (s - 1) / 2``, its block's centre).

    Example:
        >>> lr_grid_shift(8, "paper"), lr_grid_shift(8, "block")
        (3.0, 0.0)
    """
    if lr_grid not in LR_GRIDS:
        raise ValueError(f"unknown LR grid {lr_grid!r}; expected one of {', '.join(LR_GRIDS)}")
    return content_shift(scale) if lr_grid == "paper" else 0.0


@dataclass
class Degradation:
    """Configured degradation, callable on ``(B, C, H, W)`` HR cubes; see :func:`degrade`."""

    scale: int
    kernel_size: int = KERNEL_SIZE
    sigma: float = SIGMA
    noise_std: float = 0.0

    def __call__(self, hr: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return degrade(hr, self.scale, self.kernel_size, self.sigma, self.noise_std, generator)
