"""Back-projection: make a super-resolved cube agree with the LR data it was made from.

A network's output ``sr`` need not explain its input: seen through the degradation again
(:func:`sschsr.ops.degrade.low_pass`, the paper's blur, decimation and bicubic upsampling), it differs from
``lr_up``, mostly in the low frequencies of each band (brightness and spectral slope over tens of pixels),
which the degradation keeps and which therefore are known exactly. :func:`back_project` replaces that part
by the data's: it returns ``sr`` plus the smallest smooth correction after which its degradation is
``lr_up``, per band. The nearest such cube in the Euclidean norm would take a correction that is a sum of
copies of the blur kernel, one per LR pixel: at x8 the 8-tap kernel covers its own 8 x 8 block and little
more, so a smooth error would be replaced by a pattern of bumps. The correction is therefore sought as ``d = G z`` with ``G`` a Gaussian blur
of ``sigma`` HR px (default a quarter of an LR pixel), ``z`` the smallest that explains the data: conjugate
gradients on ``min_z ||low_pass(sr + G z) - lr_up||^2`` from ``z = 0`` (CGLS, whose iterates stay in the row
space of the operator). Detail the degradation removes, where the reference helps, is left to the network.
(``sigma`` and the default number of steps were chosen on the CAVE validation scenes, not on the scenes
scored.)

It is the classical iterative back-projection of super-resolution with the exact adjoint of the paper's
degradation; the degradation must be the data's (LR data made otherwise: move them onto the paper's grid
first, :func:`sschsr.pipeline.on_lr_grid`).

**Noise.** Fitting the data exactly reproduces their noise, amplified where the blur leaves the finest LR
frequencies weak (x4 with the paper's sigma 3; docs/usage.md, "Back-projection", has what that costs). By
default the fit is therefore told the noise, estimated from the data themselves: each band's noise is what the other bands cannot explain (:func:`band_noise`, HySime's
estimate; a hyperspectral cube's spectra span a few directions, noise spans all). The data are first
filtered along the spectrum (:func:`spectral_denoise`, a Wiener filter on the bands' principal directions),
then the correction is damped:
``min_z ||low_pass(sr + G z) - target||^2 + lambda ||z||^2`` per band with ``lambda = (noise /
correction_std)^2``, the Gaussian-prior reading of Tikhonov regularisation (damped CGLS). Noise-free
data give ``noise`` near 0 and nearly the exact fit back. ``correction_std`` and the filter were chosen
on the CAVE validation scenes with and without noise; docs/usage.md ("Back-projection") has what it does on
the test scenes, ``experiments/results/sr_eval_*_bp*.json`` the records. The cost is ``iters``
applications of the degradation and of its adjoint, each a few matrix products per band
(:func:`smoothed_low_pass`), plus a ``C x C`` eigenproblem (``experiments/bench_test_time.py``).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from sschsr.ops.degradations import Observation, low_pass_as, presentation_matrix
from sschsr.ops.degrade import (
    KERNEL_SIZE,
    SIGMA,
    blur_decimate_matrix,
    low_pass,
    matrix_as,
    separable,
    smooth,
    smoothing_size,
    upsample,
    use_matrices,
)

CORRECTION_STD = 0.02  # the prior size of the correction's coefficients (see back_project's damping)
MIN_NOISE_BANDS = 8  # fewer bands: no spectral redundancy to estimate the noise from (taken as 0)


def band_noise(cube: Tensor) -> Tensor:
    """Per-band noise standard deviation of ``cube``, from its spectral redundancy.

    Each band is regressed on all the others and a constant over the pixels (the noise estimate of HySime,
    Bioucas-Dias and Nascimento 2008): what the other bands cannot explain is taken as noise (a few percent
    high, as the other bands' noise leaks into the prediction). In closed
    form, with ``R = Y^T Y`` over the ``N`` pixels of the bands and a constant, the residual variance of band
    ``i`` is ``1 / [R^-1]_ii`` and the estimate ``sqrt(1 / ((N - C) [R^-1]_ii))``. Signal that only one band
    has counts as noise; on noise-free CAVE scenes the estimate is a few 1e-4.

    Args:
        cube: ``(B, C, H, W)``.

    Returns:
        ``(B, C, 1, 1)`` float32; zeros when ``C < MIN_NOISE_BANDS`` or the image has fewer than
        ``4 (C + 1)`` pixels (too few to tell noise from signal).
    """
    if cube.ndim != 4:
        raise ValueError(f"band_noise expects (B, C, H, W), got {tuple(cube.shape)}")
    b, c, h, w = cube.shape
    n = h * w
    if c < MIN_NOISE_BANDS or n < 4 * (c + 1):
        return torch.zeros(b, c, 1, 1, device=cube.device)
    y = cube.detach().double().flatten(2).transpose(1, 2)  # (B, N, C)
    y = torch.cat([y, torch.ones_like(y[..., :1])], -1)
    gram = y.transpose(1, 2) @ y
    ridge = 1e-10 * gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)  # constant or repeated bands
    gram = gram + ridge[:, None, None] * torch.eye(c + 1, dtype=gram.dtype, device=gram.device)
    inverse_diagonal = torch.linalg.inv(gram).diagonal(dim1=-2, dim2=-1)[..., :c]
    return (1 / ((n - c) * inverse_diagonal)).sqrt().float().view(b, c, 1, 1)


def spectral_filter(cube: Tensor, noise: Tensor) -> Tensor:
    """The spectral Wiener filter of ``cube``: along each eigenvector of the band covariance (about the mean
    over the pixels), the fraction ``max(0, 1 - n / v)`` of what varies is kept, ``v`` the eigenvalue and
    ``n`` the mean of ``noise ** 2`` (white noise adds ``n`` to every direction). Directions carrying the
    scene's spectra pass nearly whole, those at the noise level are removed.

    Args:
        cube: ``(B, C, H, W)``.
        noise: ``(B, C, 1, 1)`` per-band noise standard deviation (:func:`band_noise`).

    Returns:
        ``(B, C, C)`` float32, symmetric, eigenvalues in [0, 1].
    """
    b, c, h, w = cube.shape
    y = cube.detach().double().flatten(2)
    y = y - y.mean(-1, keepdim=True)
    values, vectors = torch.linalg.eigh(y @ y.transpose(1, 2) / (h * w))
    noise_variance = noise.double().flatten(1).square().mean(1, keepdim=True)
    gain = (1 - noise_variance / values.clamp_min(1e-30)).clamp(0, 1)
    return (vectors * gain[:, None, :] @ vectors.transpose(1, 2)).float()


def spectral_denoise(cube: Tensor, noise: Tensor) -> Tensor:
    """``cube`` through its spectral Wiener filter: its mean spectrum plus :func:`spectral_filter` of what
    varies about it. Noise-free data (``noise`` 0) come back as they are.

    Args:
        cube: ``(B, C, H, W)``.
        noise: ``(B, C, 1, 1)`` per-band noise standard deviation (:func:`band_noise`).

    Returns:
        ``(B, C, H, W)`` float32.
    """
    cube = cube.float()
    if not bool((noise > 0).any()):
        return cube
    mean = cube.mean((-2, -1), keepdim=True)
    return mean + (spectral_filter(cube, noise) @ (cube - mean).flatten(2)).view_as(cube)


def smoothed_low_pass(z: Tensor, scale: int, sigma: float, observation: Observation | None = None) -> Tensor:
    """``low_pass(smooth(z, sigma), scale)`` (:func:`sschsr.ops.degrade.smooth`): a correction shaped by the Gaussian of
    ``sigma`` HR px, seen as the LR data see it. The smoothing and the paper's blur-and-decimate are one matrix per axis
    (:func:`_smoothed_blur_matrix`), so no convolution runs at the HR size. ``observation``: LR data
    degraded otherwise (:class:`~sschsr.ops.degradations.Observation`, presented on the paper's grid:
    :func:`~sschsr.ops.degradations.low_pass_as`); None: the paper's.

    Args:
        z: ``(..., H, W)``.

    Returns:
        ``(..., H, W)``.
    """
    h, w = z.shape[-2:]
    if observation is not None and not observation.psf.paper:
        reflect = (min(h, w) > smoothing_size(sigma) // 2, min(h, w) > 1)
        dy = matrix_as(_smoothed_observation_rows, (h, scale, float(sigma), observation, "y", *reflect), z)
        dx = matrix_as(_smoothed_observation_rows, (w, scale, float(sigma), observation, "x", *reflect), z)
        uy = matrix_as(presentation_matrix, (h, scale, observation, "y", reflect[1]), z)
        ux = matrix_as(presentation_matrix, (w, scale, observation, "x", reflect[1]), z)
        return separable(separable(z, dy, dx), uy, ux)  # LR samples, then presented: two thin products
    if sigma == 0:
        return low_pass(z, scale)
    if not use_matrices(h, w):  # a long side: the convolutions (sschsr.ops.degrade.MATRIX_MAX_SIZE)
        return low_pass(smooth(z, sigma), scale)
    reflect = (  # as blur() pads the smoothing and the paper's kernel
        min(h, w) > smoothing_size(sigma) // 2,
        min(h, w) > KERNEL_SIZE // 2,
    )
    my = matrix_as(_smoothed_blur_matrix, (h, scale, float(sigma), *reflect), z)
    mx = matrix_as(_smoothed_blur_matrix, (w, scale, float(sigma), *reflect), z)
    return upsample(separable(z, my, mx), scale)[..., :h, :w]


@functools.lru_cache(maxsize=32)
def _smoothed_blur_matrix(
    n: int, scale: int, sigma: float, reflect_smooth: bool, reflect_blur: bool
) -> Tensor:
    """``(ceil(n / scale), n)``: the paper's blur-and-decimate after the Gaussian of ``sigma``, along one axis."""
    smooth = blur_decimate_matrix(n, 1, smoothing_size(sigma), sigma, reflect_smooth)
    return blur_decimate_matrix(n, scale, KERNEL_SIZE, SIGMA, reflect_blur) @ smooth


@functools.lru_cache(maxsize=32)
def _smoothed_observation_rows(
    n: int, scale: int, sigma: float, observation: Observation, axis: str, reflect_smooth: bool, reflect: bool
) -> Tensor:
    """``(ceil(n / scale), n)``: ``observation``'s LR samples (:meth:`~sschsr.ops.degradations.Observation.rows`)
    after the Gaussian of ``sigma``, along one axis; :func:`~sschsr.ops.degradations.presentation_matrix`
    after it makes the presented low pass (:func:`~sschsr.ops.degradations.low_pass_matrix`)."""
    rows = observation.rows(n, scale, axis, reflect)
    if sigma == 0:
        return rows
    return rows @ blur_decimate_matrix(n, 1, smoothing_size(sigma), sigma, reflect_smooth)


def back_project(
    sr: Tensor,
    lr_up: Tensor,
    scale: int,
    iters: int,
    sigma: float | None = None,
    correction_std: float | None = CORRECTION_STD,
    noise: Tensor | float | None = None,
    observation: Observation | None = None,
) -> Tensor:
    """``sr`` plus the smooth correction (per band) after which its degradation agrees with ``lr_up`` as far
    as ``lr_up``'s noise allows.

    Args:
        sr: ``(B, C, H, W)`` a super-resolved cube.
        lr_up: ``(B, C, H, W)`` the upsampled LR data ``sr`` was made from, ``low_pass(hr, scale)`` (plus
            noise) for the scene ``hr`` (the network's input of that name).
        scale: the degradation factor.
        iters: conjugate-gradient steps (0: ``sr`` unchanged). Each band converges independently, faster
            at x8 than at x4 (the blur removes less there; the least-constrained directions take longer).
        sigma: of the Gaussian that smooths the correction, HR px (None: ``scale / 4``; 0: none, the
            Euclidean projection).
        correction_std: the prior size of the correction's coefficients ``z``; the damping of band ``i`` is
            ``(noise_i / correction_std) ** 2`` and ``lr_up`` is first filtered along the spectrum
            (:func:`spectral_denoise`); None: neither, the exact fit.
        noise: the standard deviation of ``lr_up``'s noise, per band ``(B, C, 1, 1)`` or one number (None:
            :func:`band_noise` of ``lr_up``; 0: noise-free data, the exact fit).
        observation: how the LR data were made (:class:`~sschsr.ops.degradations.Observation`; ``lr_up``
            presented on the paper's grid as :func:`sschsr.pipeline.on_lr_grid` does); None: the paper's
            degradation.

    Returns:
        ``(B, C, H, W)`` float32, without gradient history. Works under ``torch.inference_mode`` and
        autocast (it computes in float32 on copies).
    """
    if sr.ndim != 4 or sr.shape != lr_up.shape:
        raise ValueError(
            f"back_project expects sr and lr_up of one shape (B, C, H, W); got {tuple(sr.shape)}, {tuple(lr_up.shape)}"
        )
    sigma = scale / 4 if sigma is None else sigma
    if iters < 0 or scale < 1 or sigma < 0 or (correction_std is not None and correction_std <= 0):
        raise ValueError(
            "back_project: iters, sigma must be >= 0, scale >= 1 and correction_std > 0; "
            f"got {iters}, {sigma}, {scale}, {correction_std}"
        )
    if iters == 0:
        return sr.float()
    autocast_off = torch.autocast(device_type=sr.device.type, enabled=False)
    with torch.inference_mode(False), torch.enable_grad(), autocast_off:
        x, target = sr.detach().float().clone(), lr_up.detach().float().clone()
        damping = torch.zeros_like(x[..., :1, :1])
        if correction_std is not None:
            noise = band_noise(target) if noise is None else noise
            noise = torch.as_tensor(noise, dtype=x.dtype, device=x.device).expand_as(damping)
            damping = (noise / correction_std).square()
            target = spectral_denoise(target, noise)

        def op(z: Tensor) -> Tensor:
            return smoothed_low_pass(z, scale, sigma, observation)

        def dot(a: Tensor, b: Tensor) -> Tensor:  # per (sample, band)
            return (a * b).sum((-2, -1), keepdim=True)

        z = torch.zeros_like(x)
        _, vjp = torch.func.vjp(op, z)  # op is linear: one vector-Jacobian product function serves every step

        def gradient(residual: Tensor, z: Tensor) -> Tensor:  # minus the objective's half-gradient in z
            return vjp(residual)[0] - damping * z

        residual = target - (
            low_pass(x, scale) if observation is None else low_pass_as(x, scale, observation)
        )
        step = gradient(residual, z)
        direction, norm = step, dot(step, step)
        for _ in range(iters):
            image = op(direction)
            alpha = norm / (dot(image, image) + damping * dot(direction, direction)).clamp_min(1e-30)
            z = z + alpha * direction
            residual = residual - alpha * image
            step = gradient(residual, z)
            new_norm = dot(step, step)
            direction = step + new_norm / norm.clamp_min(1e-30) * direction
            norm = new_norm
        return (x + smooth(z, sigma)).detach()  # the correction itself, G z
