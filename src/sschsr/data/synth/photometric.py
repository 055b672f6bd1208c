"""What a different camera makes of the same light: response, exposure, white balance, tone, optics, noise.

The reference photo of a real pair comes from another camera than the HSI. ``camera_change`` imitates one
in the order a camera processes light:

    linear RGB = render(hsi, random spectral response)        (sschsr.data.spectral.random_camera_srf)
    * colour correction matrix (a camera maps its sensor RGB towards sRGB; calibrations are imperfect)
    * white-balance gains per channel (an imperfect balance leaves a colour cast)
    * exposure (auto-exposure: the 99th percentile of the brightest channel lands on a random level)
    * vignetting (radial fall-off, centre slightly off)
    + sensor noise (signal-dependent shot noise plus read noise), clipped to [0, 1]
    -> gamma encoding (a power law, sRGB-like) -> 8-bit JPEG at a random quality, decoded in memory.

Every step is random within a sensible range, drawn from the generator, and each one can be switched off
in :class:`PhotometricConfig`; with ``enabled=False`` the output is the plain CIE rendering, clamped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from sschsr.data.spectral import camera_srf, random_camera_srf, render
from sschsr.data.synth.scenes import numpy_rng


@dataclass
class PhotometricConfig:
    """Switches and ranges of the camera change.

    Attributes:
        enabled: master switch; False gives ``clamp(render(hsi, cie1931))`` in linear light.
        other_camera: a random spectral response instead of the CIE 1931 one.
        color_correction, ccm_strength: the 3 x 3 matrix taking that response closest (least squares) to
            the CIE one, applied at a random strength (1: a perfectly calibrated camera, up to metamerism).
        white_balance, wb_range: per-channel gains ``exp(U(-wb_range, wb_range))`` (0.15: casts of up to
            about 10 %, what a camera's auto white balance typically leaves).
        exposure, exposure_range: level of the 99th percentile of the brightest channel after exposure.
        vignetting, vignetting_range: relative fall-off at the corners.
        noise, shot_noise_range, read_noise_range: shot-noise variance per unit signal and read-noise
            standard deviation, in linear units of full scale.
        gamma, gamma_range: encoding ``v = x ** (1 / gamma)``; off: the output stays linear.
        jpeg, jpeg_quality: JPEG round trip at a quality drawn from the range (PIL, in memory).
    """

    enabled: bool = True
    other_camera: bool = True
    color_correction: bool = True
    ccm_strength: tuple[float, float] = (0.0, 0.5)
    white_balance: bool = True
    wb_range: float = 0.1
    exposure: bool = True
    exposure_range: tuple[float, float] = (0.7, 1.0)
    vignetting: bool = True
    vignetting_range: tuple[float, float] = (0.0, 0.2)
    noise: bool = True
    shot_noise_range: tuple[float, float] = (0.0, 5e-4)
    read_noise_range: tuple[float, float] = (0.0, 2e-3)
    gamma: bool = True
    gamma_range: tuple[float, float] = (1.8, 2.6)
    jpeg: bool = True
    jpeg_quality: tuple[int, int] = (75, 95)

    @staticmethod
    def off() -> PhotometricConfig:
        """No change at all: the CIE rendering in linear light."""
        return PhotometricConfig(enabled=False)


@dataclass
class Camera:
    """One drawn camera: everything ``apply_camera`` needs except the noise samples.

    Attributes:
        srf: ``(3, C)`` spectral response; wb: ``(3,)`` gains; exposure: target level or None (off);
        vignetting: corner fall-off; centre: ``(2,)`` vignetting centre in [0, 1] image coordinates;
        shot, read: noise parameters; gamma: encoding exponent or None (linear); jpeg_quality: or None.
    """

    srf: np.ndarray
    wb: np.ndarray
    exposure: float | None = None
    vignetting: float = 0.0
    centre: tuple[float, float] = (0.5, 0.5)
    shot: float = 0.0
    read: float = 0.0
    gamma: float | None = None
    jpeg_quality: int | None = None


def sample_camera(
    wavelengths: np.ndarray, generator: torch.Generator, cfg: PhotometricConfig | None = None
) -> Camera:
    """Draw a camera (response and processing) from ``cfg``'s ranges.

    Args:
        wavelengths: ``(C,)`` band centres of the HSI in nm.
    """
    cfg = cfg if cfg is not None else PhotometricConfig()
    wl = np.asarray(wavelengths, dtype=np.float64)
    if not cfg.enabled:
        return Camera(srf=camera_srf(wl), wb=np.ones(3))
    srf = random_camera_srf(wl, generator) if cfg.other_camera else camera_srf(wl)
    rng = numpy_rng(generator)
    # always draw every value, so switching one step off does not change the others
    strength = rng.uniform(*cfg.ccm_strength)
    if cfg.color_correction and cfg.other_camera:
        srf = color_correct(srf, camera_srf(wl), float(strength))
    wb = np.exp(rng.uniform(-cfg.wb_range, cfg.wb_range, 3))
    exposure = rng.uniform(*cfg.exposure_range)
    vig = rng.uniform(*cfg.vignetting_range)
    centre = tuple(0.5 + rng.uniform(-0.1, 0.1, 2))
    shot, read = rng.uniform(*cfg.shot_noise_range), rng.uniform(*cfg.read_noise_range)
    gamma = rng.uniform(*cfg.gamma_range)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return Camera(
        srf=srf,
        wb=wb / wb.mean() if cfg.white_balance else np.ones(3),
        exposure=float(exposure) if cfg.exposure else None,
        vignetting=float(vig) if cfg.vignetting else 0.0,
        centre=(float(centre[0]), float(centre[1])),
        shot=float(shot) if cfg.noise else 0.0,
        read=float(read) if cfg.noise else 0.0,
        gamma=float(gamma) if cfg.gamma else None,
        jpeg_quality=quality if cfg.jpeg else None,
    )


def color_correct(srf: np.ndarray, target: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Fold a colour correction matrix into a response: ``M @ srf`` with ``M`` the least-squares fit of
    ``srf`` to ``target`` (both ``(3, C)``), blended with the identity by ``strength``.

    Rows of ``M`` are normalised to sum to 1, so grey stays grey and the rows of the result still sum to 1.
    """
    s64, t64 = srf.astype(np.float64), target.astype(np.float64)
    m = t64 @ s64.T @ np.linalg.pinv(s64 @ s64.T)
    m = strength * m + (1 - strength) * np.eye(3)
    m = m / m.sum(axis=1, keepdims=True)
    return (m @ s64).astype(np.float32)


def jpeg_roundtrip(rgb: Tensor, quality: int) -> Tensor:
    """Encode ``(3, H, W)`` in [0, 1] as an 8-bit JPEG in memory and decode it -> ``(3, H, W)`` float32."""
    arr = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    out = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def apply_camera(rgb: Tensor, cam: Camera, generator: torch.Generator) -> Tensor:
    """Process linear camera RGB as ``cam`` would (everything after the spectral response).

    Args:
        rgb: ``(3, H, W)`` float32 linear RGB, already rendered through ``cam.srf``.
        generator: source of the noise.

    Returns:
        ``(3, H, W)`` float32 in [0, 1]: gamma-encoded unless ``cam.gamma`` is None.
    """
    h, w = rgb.shape[-2:]
    x = rgb * torch.as_tensor(cam.wb, dtype=rgb.dtype)[:, None, None]
    if cam.exposure is not None:
        peak = x.amax(0).flatten()
        peak = peak[:: max(1, peak.numel() // 16384)]  # a subsample is as good for a percentile, and fast
        level = torch.quantile(peak, 0.99).clamp(min=1e-4)
        x = x * (cam.exposure / level)
    if cam.vignetting > 0:
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        r2 = ((xx - cam.centre[0]) ** 2 + (yy - cam.centre[1]) ** 2) / 0.5  # about 1 at the corners
        x = x * (1 - cam.vignetting * r2.clamp(max=1.5))
    if cam.shot > 0 or cam.read > 0:
        sd = (cam.shot * x.clamp(min=0) + cam.read**2).sqrt()
        x = x + sd * torch.randn(x.shape, generator=generator)
    x = x.clamp(0.0, 1.0)
    if cam.gamma is not None:
        x = x.pow(1.0 / cam.gamma)
    if cam.jpeg_quality is not None:
        x = jpeg_roundtrip(x, cam.jpeg_quality)
    return x.float()


def camera_change(
    hsi: Tensor, wavelengths: np.ndarray, generator: torch.Generator, cfg: PhotometricConfig | None = None
) -> Tensor:
    """What another camera would photograph of ``hsi`` from the same place.

    Args:
        hsi: ``(C, H, W)`` float32 reflectance in [0, 1].
        wavelengths: ``(C,)`` band centres in nm.
        generator: the only source of randomness.
        cfg: which steps to apply, and their ranges.

    Returns:
        ``(3, H, W)`` float32 in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = camera_change(torch.rand(31, 16, 16), np.linspace(400, 700, 31), g)
        >>> out.shape, bool(out.min() >= 0), bool(out.max() <= 1)
        (torch.Size([3, 16, 16]), True, True)
    """
    cfg = cfg if cfg is not None else PhotometricConfig()
    cam = sample_camera(wavelengths, generator, cfg)
    return apply_camera(render(hsi, torch.from_numpy(cam.srf)), cam, generator)
