"""Image-quality and alignment measures.

Super-resolution quality (:func:`psnr`, :func:`ssim`, :func:`sam_degrees`, :func:`ergas`, the metric
collection :class:`HSIMetrics`) follows DESIGN.md, "Metrics"; see the conventions further down.

``luminance`` and ``rank_correlation`` measure how well two renderings line up whatever their colour
processing: Spearman's rank correlation is unchanged by any monotone tone curve (exposure, gamma), so
it isolates geometry from photometry.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection


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


# --------------------------------------------------------------------------------------------------
# Super-resolution quality: PSNR, SSIM, SAM, ERGAS (DESIGN.md, "Metrics")
#
# Conventions (checked against hand computations and torchmetrics in tests/test_sr_metrics.py):
# - PSNR: per band with data range 1, then the mean over bands (torchmetrics' PSNR without ``dim`` pools
#   the squared errors of the whole cube first, which weighs bright, noisy bands differently);
# - SSIM: per band with data_range=1 (torchmetrics' Gaussian window, 11 x 11, sigma 1.5), mean over bands;
#   the paper's code left data_range unset, so it was estimated from the data, which inflates SSIM on
#   dark images;
# - SAM: in degrees (torchmetrics returns radians), mean over pixels;
# - ERGAS: 100 / s * sqrt(mean over bands of RMSE_b^2 / mean_b^2), torchmetrics' definition with ratio=s.
# Every function takes (B, C, H, W) and returns (B,) float32: one value per image, computed in float64
# (float32 where the device has no float64), outside any autocast region.

MAX_PSNR = 100.0  # dB: an exact band (MSE 0) would make means infinite; 100 dB is MSE 1e-10
MIN_BAND_MEAN = 1e-6  # ERGAS divides by each band's mean: a black band (mean 0) is divided by this instead
SSIM_BAND_CHUNK = 8  # bands per SSIM call: SSIM holds 5 padded copies of its input, so bound that memory
SR_METRICS = ("psnr", "ssim", "sam", "ergas")


def _check_pair(sr: Tensor, hr: Tensor, name: str) -> None:
    if sr.ndim != 4 or sr.shape != hr.shape:
        raise ValueError(
            f"{name} expects sr and hr of the same shape (B, C, H, W); got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )


def _wide(x: Tensor) -> Tensor:
    """float64 for accurate sums and angles; float32 on devices without float64 (Apple MPS)."""
    return x.float() if x.device.type == "mps" else x.double()


def _no_autocast(fn):
    """Run a metric in full precision even when called inside a bf16/fp16 autocast region."""

    def wrapper(*args, **kwargs):
        devices = {a.device.type for a in args if isinstance(a, Tensor)} or {"cpu"}
        device = next(iter(devices))
        with torch.autocast(device_type=device if device in ("cuda", "cpu", "xpu") else "cpu", enabled=False):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_no_autocast
def psnr(sr: Tensor, hr: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per band, averaged over the bands of each image.

    ``PSNR_b = 10 log10(data_range^2 / MSE_b)``, ``MSE_b`` over the pixels of band ``b``; capped at
    :data:`MAX_PSNR` for an exact band.

    Args:
        sr, hr: ``(B, C, H, W)`` float, ``hr`` the ground truth; values in ``[0, data_range]``.

    Returns:
        ``(B,)`` float32, dB.

    Example:
        >>> hr = torch.zeros(1, 2, 4, 4)
        >>> sr = hr.clone(); sr[:, 0] = 0.1; sr[:, 1] = 0.01  # band MSEs 1e-2 and 1e-4: 20 dB and 40 dB
        >>> round(float(psnr(sr, hr)), 4)
        30.0
    """
    _check_pair(sr, hr, "psnr")
    from torchmetrics.functional.image import peak_signal_noise_ratio

    per_band = peak_signal_noise_ratio(
        _wide(sr), _wide(hr), data_range=data_range, dim=(2, 3), reduction="none"
    )
    return per_band.clamp(max=MAX_PSNR).mean(dim=1).float()  # (B, C) -> (B,)


@_no_autocast
def ssim(sr: Tensor, hr: Tensor, data_range: float = 1.0) -> Tensor:
    """Structural similarity per band with a fixed ``data_range``, averaged over the bands of each image.

    torchmetrics' SSIM filters each channel separately (a depthwise Gaussian window) and averages the SSIM
    map over channels and pixels, which is the mean of the per-band SSIMs; bands are passed in chunks to
    bound memory.

    Args:
        sr, hr: ``(B, C, H, W)`` float with ``H, W >= 6`` (the window's reflect padding).

    Returns:
        ``(B,)`` float32 in [-1, 1]; 1 for identical images.
    """
    _check_pair(sr, hr, "ssim")
    from torchmetrics.functional.image import structural_similarity_index_measure

    c = sr.shape[1]
    total = torch.zeros(sr.shape[0], dtype=torch.float32, device=sr.device)
    for i in range(0, c, SSIM_BAND_CHUNK):
        a, b = sr[:, i : i + SSIM_BAND_CHUNK].float(), hr[:, i : i + SSIM_BAND_CHUNK].float()
        value = structural_similarity_index_measure(a, b, data_range=data_range, reduction="none")
        total += value.float() * a.shape[1]
    return total / c


@_no_autocast
def sam_degrees(sr: Tensor, hr: Tensor) -> Tensor:
    """Spectral angle between the spectra of ``sr`` and ``hr`` at every pixel, in degrees, mean over pixels.

    ``angle = arccos(<s, h> / (|s| |h|))``; a pixel where both spectra are zero counts as 0 degrees, one
    where only one of them is zero as 90 degrees (torchmetrics gives NaN for both).

    Args:
        sr, hr: ``(B, C, H, W)`` float, ``C >= 2``.

    Returns:
        ``(B,)`` float32, degrees in [0, 180].

    Example:
        >>> hr = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
        >>> sam_degrees(torch.tensor([0.0, 2.0]).view(1, 2, 1, 1), hr)  # orthogonal spectra
        tensor([90.])
    """
    _check_pair(sr, hr, "sam_degrees")
    s, h = _wide(sr), _wide(hr)
    dot = (s * h).sum(dim=1)
    norms = s.norm(dim=1) * h.norm(dim=1)
    cos = torch.where(norms > 0, dot / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)
    both_zero = (s.norm(dim=1) == 0) & (h.norm(dim=1) == 0)
    cos = torch.where(both_zero, 1.0, cos)
    angle = torch.rad2deg(torch.acos(cos.clamp(-1.0, 1.0)))
    return angle.flatten(1).mean(dim=1).float()


@_no_autocast
def ergas(sr: Tensor, hr: Tensor, scale: float) -> Tensor:
    """Erreur relative globale adimensionnelle de synthese (lower is better).

    ``ERGAS = 100 / s * sqrt(mean_b(RMSE_b^2 / mean(hr_b)^2))``, torchmetrics' definition with
    ``ratio = s``. A band whose mean is 0 would divide by zero: band means below :data:`MIN_BAND_MEAN`
    count as that value (a large but finite ERGAS).

    Args:
        sr, hr: ``(B, C, H, W)`` float; scale: the super-resolution factor ``s``.

    Returns:
        ``(B,)`` float32.

    Example:
        >>> hr = torch.full((1, 1, 2, 2), 0.5)
        >>> ergas(hr + 0.05, hr, scale=4)  # 100 / 4 * 0.05 / 0.5
        tensor([2.5000])
    """
    _check_pair(sr, hr, "ergas")
    s, h = _wide(sr).flatten(2), _wide(hr).flatten(2)
    mse = (s - h).square().mean(dim=2)  # (B, C)
    mean_sq = h.mean(dim=2).abs().clamp_min(MIN_BAND_MEAN).square()
    return (100.0 / scale * (mse / mean_sq).mean(dim=1).sqrt()).float()


def sr_metrics(sr: Tensor, hr: Tensor, scale: float) -> dict[str, Tensor]:
    """All four measures of each image: ``{"psnr", "ssim", "sam", "ergas"}`` -> ``(B,)`` float32."""
    return {
        "psnr": psnr(sr, hr),
        "ssim": ssim(sr, hr),
        "sam": sam_degrees(sr, hr),
        "ergas": ergas(sr, hr, scale),
    }


class _ImageMean(Metric):
    """Mean over images of a per-image measure; the sum and count are summed across processes (DDP)."""

    full_state_update = False
    higher_is_better: bool | None = None

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def measure(self, sr: Tensor, hr: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, sr: Tensor, hr: Tensor) -> None:
        values = self.measure(sr.detach(), hr.detach())
        self.total += values.to(self.total.dtype).sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()


class PSNR(_ImageMean):
    """Mean over images of :func:`psnr` (per band, data range 1)."""

    higher_is_better = True

    def measure(self, sr: Tensor, hr: Tensor) -> Tensor:
        return psnr(sr, hr)


class SSIM(_ImageMean):
    """Mean over images of :func:`ssim` (per band, data_range 1)."""

    higher_is_better = True

    def measure(self, sr: Tensor, hr: Tensor) -> Tensor:
        return ssim(sr, hr)


class SAM(_ImageMean):
    """Mean over images of :func:`sam_degrees` (degrees)."""

    higher_is_better = False

    def measure(self, sr: Tensor, hr: Tensor) -> Tensor:
        return sam_degrees(sr, hr)


class ERGAS(_ImageMean):
    """Mean over images of :func:`ergas` at scale ``s``."""

    higher_is_better = False

    def __init__(self, scale: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.scale = float(scale)

    def measure(self, sr: Tensor, hr: Tensor) -> Tensor:
        return ergas(sr, hr, self.scale)


class HSIMetrics(MetricCollection):
    """PSNR, SSIM, SAM and ERGAS of super-resolved cubes, each a mean over images, synchronised under DDP.

    Args:
        scale: the super-resolution factor (for ERGAS).
        prefix: prepended to the names, e.g. ``"val/"`` gives ``val/psnr`` ... ``val/ergas``.

    Example:
        >>> m = HSIMetrics(scale=4, prefix="val/")
        >>> hr = torch.rand(2, 5, 16, 16)
        >>> m.update(hr, hr)
        >>> {k: round(float(v), 3) for k, v in sorted(m.compute().items())}
        {'val/ergas': 0.0, 'val/psnr': 100.0, 'val/sam': 0.0, 'val/ssim': 1.0}
    """

    def __init__(self, scale: float, prefix: str | None = None):
        super().__init__(
            {"psnr": PSNR(), "ssim": SSIM(), "sam": SAM(), "ergas": ERGAS(scale)},
            prefix=prefix,
            compute_groups=False,  # four different measures: nothing to share
        )
