"""A family of LR degradations: PSF width and shape, sampling phase, pixel integration and noise, drawn per
sample, with the paper's exact degradation (:mod:`sschsr.ops.degrade`) one member.

Real hyperspectral cameras are not the paper's 8 x 8 Gaussian sampled at every s-th pixel: a sensor pixel
integrates its footprint (block means, centred on the block), the optics add a PSF of their own width, and
the data are noisy. A network trained on one degradation learns to undo exactly that one (the shipped
models before this family: below bicubic on block means). Training over the family makes it undo any.

One draw is an :class:`Observation`: the PSF (:class:`Psf`), the phase (where LR pixel 0 is centred on the
HR grid) and the noise. Along each axis LR pixel ``i`` is the HR signal weighted around
``c_i = scale * i + phase``, by the PSF integrated over each HR pixel's own footprint (:func:`psf_matrix`).

Phase and presentation. Bicubic upsampling puts LR pixel ``i`` at HR ``scale * i + (scale - 1) / 2``, so
``upsample(lr)`` shows the scene moved by ``(scale - 1) / 2 - phase`` px. Every network here learnt the
paper's convention (phase 0.5, :func:`sschsr.ops.degrade.content_shift`); data of another phase are
presented in it by moving ``lr_up`` by ``phase - 0.5`` px, as :func:`sschsr.pipeline.on_lr_grid` does at
test time for a stated grid (:func:`present`). The phase itself is a convention the pixels cannot tell:
the user states it (``--lr-grid``) or the file does (GeoTIFF, ENVI: pixels are areas, block-centred).

Noise: per band, Gaussian of ``noise * f_b`` (``f_b`` drawn in ``[1 - spread, 1 + spread]``) plus a
signal-dependent part of variance ``shot * max(x, 0)`` (Poisson-Gaussian, as photon counts), added to the
LR cube.

Example:
    >>> fam = DegradationFamily.of(paper=0.0)
    >>> obs = fam.draw(8, torch.Generator().manual_seed(0))
    >>> obs.observe(torch.rand(1, 3, 32, 32), 8, torch.Generator().manual_seed(1)).shape
    torch.Size([1, 3, 4, 4])
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from sschsr.errors import InputError
from sschsr.ops.degrade import (
    KERNEL_SIZE,
    SIGMA,
    bicubic_matrix,
    blur_decimate,
    blur_decimate_matrix,
    low_pass,
    lr_grid_shift,
    matrix_as,
    separable,
)
from sschsr.ops.warp import move_content


def grid_phase(scale: int, lr_grid: str = "paper") -> float:
    """Where LR pixel 0 is centred on the HR grid (HR px; pixel ``j`` at ``j``) for data of ``lr_grid``
    (:data:`sschsr.ops.degrade.LR_GRIDS`): 0.5 for the paper's (an even kernel of 8), ``(scale - 1) / 2``
    for block centres.

    Example:
        >>> grid_phase(8, "paper"), grid_phase(8, "block")
        (0.5, 3.5)
    """
    return (scale - 1) / 2 - lr_grid_shift(scale, lr_grid)


@dataclass(frozen=True)
class Psf:
    """The point spread of one LR pixel, in HR px: a Gaussian of std ``sigma`` along x (``sigma_y`` along
    y; None: ``sigma``) convolved with a box of ``area`` px (the sensor pixel's integration; ``scale``:
    its whole block, 0: a point sample). ``paper``: the paper's kernel instead (8 taps of a sigma-3
    Gaussian, :func:`sschsr.ops.degrade.blur_decimate_matrix`), the other fields ignored.
    """

    sigma: float = SIGMA
    sigma_y: float | None = None
    area: float = 0.0
    paper: bool = False

    def __post_init__(self) -> None:
        if self.sigma < 0 or (self.sigma_y is not None and self.sigma_y < 0) or self.area < 0:
            raise InputError(
                f"PSF widths must be >= 0; got sigma {self.sigma}, sigma_y {self.sigma_y}, area {self.area}"
            )

    @classmethod
    def of_paper(cls) -> Psf:
        return cls(paper=True)

    def widths(self) -> tuple[float, float]:
        """``(sigma_x, sigma_y)`` in HR px."""
        return self.sigma, self.sigma if self.sigma_y is None else self.sigma_y

    def std(self) -> float:
        """The PSF's overall standard deviation (HR px, geometric mean over the two axes, pixel footprint
        included): the paper's kernel about 2.06 px, a block mean at x8 about 2.31."""
        if self.paper:
            g = torch.arange(KERNEL_SIZE, dtype=torch.float64) - (KERNEL_SIZE - 1) / 2
            w = torch.exp(-0.5 * (g / SIGMA) ** 2)
            return float(((w * g**2).sum() / w.sum() + 1 / 12).sqrt())
        sx, sy = self.widths()
        box = self.area**2 / 12 + 1 / 12
        return math.sqrt(math.sqrt((sx**2 + box) * (sy**2 + box)))

    def describe(self) -> str:
        if self.paper:
            return "paper (8 x 8 Gaussian, sigma 3)"
        sx, sy = self.widths()
        width = f"sigma {sx:.2f}" if sx == sy else f"sigma {sx:.2f} x {sy:.2f}"
        return f"Gaussian {width} px" + (f" over a {self.area:g} px box" if self.area else "")


def _integral_cdf(u: Tensor, sigma: float) -> Tensor:
    """``G(u) = int_{-inf}^u Phi(t / sigma) dt`` (``relu(u)`` for sigma 0)."""
    if sigma == 0:
        return u.clamp_min(0)
    t = u / sigma
    cdf = 0.5 * (1 + torch.erf(t / math.sqrt(2)))
    pdf = torch.exp(-0.5 * t**2) / math.sqrt(2 * math.pi)
    return sigma * (t * cdf + pdf)


def _cdf(u: Tensor, sigma: float) -> Tensor:
    if sigma == 0:
        return (u > 0).double() + 0.5 * (u == 0).double()
    return 0.5 * (1 + torch.erf(u / (sigma * math.sqrt(2))))


def pixel_weights(offset: Tensor, sigma: float, area: float) -> Tensor:
    """The weight of an HR pixel at ``offset`` px from the PSF's centre: the Gaussian of ``sigma``
    convolved with a box of ``area``, integrated over the pixel's own footprint ``[offset - 1/2, offset + 1/2]``
    (closed form; exact for any sigma and area, 0 included).

    Args:
        offset: any shape, float64.

    Returns:
        the shape of ``offset``; over all integer offsets the weights sum to 1.
    """
    if area == 0:
        return _cdf(offset + 0.5, sigma) - _cdf(offset - 0.5, sigma)
    a = area / 2
    g = functools.partial(_integral_cdf, sigma=sigma)
    return (g(offset + 0.5 + a) - g(offset - 0.5 + a) - g(offset + 0.5 - a) + g(offset - 0.5 - a)) / area


@functools.lru_cache(maxsize=64)
def psf_matrix(n: int, scale: int, phase: float, sigma: float, area: float, reflect: bool = True) -> Tensor:
    """``(ceil(n / scale), n)`` float64: LR pixel ``i`` as the weights of the HR pixels around
    ``scale * i + phase`` (:func:`pixel_weights`), the signal reflected at the borders (as
    :func:`sschsr.ops.degrade.blur` pads; replicated when ``reflect`` is false). Rows sum to 1."""
    if n < 1 or scale < 1:
        raise ValueError(f"psf_matrix needs n >= 1 and scale >= 1; got {n}, {scale}")
    reach = math.ceil(4 * sigma + area / 2 + 1.5)
    m = torch.zeros(math.ceil(n / scale), n, dtype=torch.float64)
    for i in range(m.shape[0]):
        centre = scale * i + phase
        js = torch.arange(math.floor(centre) - reach, math.ceil(centre) + reach + 1)
        w = pixel_weights(js.double() - centre, sigma, area)
        if reflect and n > 1:
            period = 2 * (n - 1)
            js = js % period
            js = torch.where(js > n - 1, period - js, js)
        else:
            js = js.clamp(0, n - 1)
        m[i].index_add_(0, js, w)
    return m / m.sum(1, keepdim=True)


@dataclass(frozen=True)
class Observation:
    """One LR degradation: the PSF, the phase (HR px; :func:`grid_phase`) and the noise (module docstring).

    Attributes:
        psf: the point spread.
        phase: where LR pixel 0 is centred, HR px (the paper's kernel: 0.5 only).
        noise: Gaussian noise std, in the data's units (band ``b``: ``noise * f_b``).
        spread: the per-band factors ``f_b`` are drawn in ``[1 - spread, 1 + spread]``.
        shot: signal-dependent noise variance per unit of signal.
    """

    psf: Psf = field(default_factory=Psf.of_paper)
    phase: float = 0.5
    noise: float = 0.0
    spread: float = 0.0
    shot: float = 0.0

    @classmethod
    def at(cls, psf: Psf, phase: float) -> Observation:
        """``psf`` centred at ``phase`` (the paper's kernel: at its own phase, 0.5), noise-free: what the
        test-time steps fit when told the PSF."""
        return cls(psf=psf, phase=0.5 if psf.paper else phase)

    def __post_init__(self) -> None:
        if self.psf.paper and self.phase != 0.5:
            raise InputError(f"the paper's kernel is centred at phase 0.5, not {self.phase}")
        if self.noise < 0 or self.shot < 0 or not 0 <= self.spread <= 1:
            raise InputError(f"noise and shot must be >= 0 and spread in [0, 1]; got {self}")

    def rows(self, n: int, scale: int, axis: str, reflect: bool = True) -> Tensor:
        """``(ceil(n / scale), n)`` float64: the LR samples along one ``axis`` (``"x"`` or ``"y"``) as
        weights of the HR pixels (the paper's: :func:`~sschsr.ops.degrade.blur_decimate_matrix`; others:
        :func:`psf_matrix`)."""
        if self.psf.paper:
            return blur_decimate_matrix(n, scale, KERNEL_SIZE, SIGMA, reflect)
        sx, sy = self.psf.widths()
        return psf_matrix(
            n, scale, float(self.phase), float(sx if axis == "x" else sy), float(self.psf.area), reflect
        )

    def blur_decimate(self, hr: Tensor, scale: int) -> Tensor:
        """The noise-free LR cube: ``(..., H, W)`` -> ``(..., ceil(H / scale), ceil(W / scale))``, in
        ``hr``'s dtype (the paper's: :func:`~sschsr.ops.degrade.blur_decimate`; others: :meth:`rows`
        along each axis as dense matrices)."""
        if self.psf.paper:
            return blur_decimate(hr, scale)
        h, w = hr.shape[-2:]
        return separable(
            hr, matrix_as(self.rows, (h, scale, "y"), hr), matrix_as(self.rows, (w, scale, "x"), hr)
        )

    def observe(self, hr: Tensor, scale: int, generator: torch.Generator | None = None) -> Tensor:
        """The LR cube of ``hr`` ``(B, C, H, W)`` (H, W divisible by ``scale``): blurred, sampled, noisy.
        The noise comes from ``generator`` (CPU); the paper's member without noise draws nothing from it."""
        if hr.ndim != 4:
            raise ValueError(f"observe expects (B, C, H, W), got {tuple(hr.shape)}")
        if scale < 1 or hr.shape[-1] % scale or hr.shape[-2] % scale:
            raise ValueError(f"HR size {tuple(hr.shape[-2:])} must be divisible by the scale {scale}")
        lr = self.blur_decimate(hr, scale)
        if self.noise == 0 and self.shot == 0:
            return lr
        b, c = lr.shape[:2]
        std = torch.full((b, c, 1, 1), self.noise, dtype=torch.float64)
        if self.spread:
            std = std * (
                1 + self.spread * (2 * torch.rand(b, c, 1, 1, generator=generator, dtype=torch.float64) - 1)
            )
        var = std.to(lr).square() + self.shot * lr.clamp_min(0)
        noise = torch.randn(lr.shape, generator=generator, dtype=lr.dtype, device="cpu").to(lr.device)
        return lr + var.sqrt() * noise

    def presentation(self, scale: int) -> float:
        """How far ``upsample(lr)`` must be moved to show the scene as the paper's data do (px):
        ``phase - 0.5`` (:func:`present`)."""
        return self.phase - grid_phase(scale, "paper")

    def describe(self, scale: int) -> str:
        noise = f", noise {self.noise:g}" + (f" (+-{self.spread:.0%} per band)" if self.spread else "")
        shot = f", shot {self.shot:g}" if self.shot else ""
        return f"{self.psf.describe()}, phase {self.phase:g} of {scale}{noise if self.noise else ''}{shot}"


@functools.lru_cache(maxsize=64)
def low_pass_matrix(n: int, scale: int, observation: Observation, axis: str, reflect: bool = True) -> Tensor:
    """``(n, n)`` float64: along one ``axis`` (``"x"`` or ``"y"``), a signal as the presented LR side
    shows it: ``observation``'s blur and sampling (:meth:`Observation.rows`), bicubic back up and moved
    onto the paper's grid (:meth:`Observation.presentation`), cropped to ``n``. For the paper's
    observation it is the matrix of :func:`sschsr.ops.degrade.low_pass`."""
    return presentation_matrix(n, scale, observation, axis, reflect) @ observation.rows(
        n, scale, axis, reflect
    )


@functools.lru_cache(maxsize=128)
def presentation_matrix(
    n: int, scale: int, observation: Observation, axis: str, reflect: bool = True
) -> Tensor:
    """``(n, ceil(n / scale))`` float64: the second factor of :func:`low_pass_matrix`, LR samples back up to
    the HR grid (bicubic) and moved onto the paper's grid (:meth:`Observation.presentation`), cropped to
    ``n``. ``axis`` and ``reflect`` only make the arguments those of :meth:`Observation.rows`."""
    m = math.ceil(n / scale)
    return bicubic_matrix(m, scale, observation.presentation(scale))[:n]


def low_pass_as(x: Tensor, scale: int, observation: Observation) -> Tensor:
    """``x`` ``(..., H, W)`` as the presented LR side of ``observation`` shows it (:func:`low_pass_matrix`
    along each axis, applied as its two factors: the LR samples, then their presentation on the HR grid,
    an ``H / scale``-th of the dense matrix's work; the paper's: :func:`sschsr.ops.degrade.low_pass`):
    ``(..., H, W)``."""
    if observation.psf.paper:
        return low_pass(x, scale)
    h, w = x.shape[-2:]
    reflect = min(h, w) > 1
    lr = separable(
        x,
        matrix_as(observation.rows, (h, scale, "y", reflect), x),
        matrix_as(observation.rows, (w, scale, "x", reflect), x),
    )
    return separable(
        lr,
        matrix_as(presentation_matrix, (h, scale, observation, "y", reflect), x),
        matrix_as(presentation_matrix, (w, scale, observation, "x", reflect), x),
    )


def present(lr_up: Tensor, shift: float) -> Tensor:
    """``lr_up`` ``(B, C, H, W)`` with its content moved by ``(shift, shift)`` px
    (:meth:`Observation.presentation`), as :class:`sschsr.models.ensemble.ShiftedInputs` does at test time."""
    return move_content(lr_up, shift, shift)


@dataclass(frozen=True)
class DegradationFamily:
    """The degradations a dataset draws from, one per sample (module docstring).

    With probability ``paper`` a sample gets the paper's exact degradation (plus ``noise_std`` of Gaussian
    noise, the former ``data.noise_std``); otherwise:

    - PSF: with probability ``area``, block integration (a box of ``scale`` px) and a Gaussian of std drawn
      in ``area_sigma``; otherwise a Gaussian of std drawn in ``sigma``; both in LR px (times the scale for
      HR px) unless ``units`` is ``hr``. ``sigma_y = sigma * r``, ``r`` drawn log-uniformly in
      ``[1 / anisotropy, anisotropy]``.
    - phase: the paper's grid, block centres or uniformly anywhere between, with the weights of ``grids``
      (``paper``, ``block``, ``between``); the paper's kernel's phase with a Gaussian PSF is 0.5.
    - noise: with probability ``noisy``, Gaussian std drawn in ``noise`` with a per-band ``spread``, and
      a shot-noise coefficient drawn in ``shot``, both from one uniform draw ``t``: the Gaussian at ``t``
      of its range, the shot noise at ``1 - t`` of its own (the more of one, the less of the other).

    A fixed degradation is a family with equal bounds (e.g. block means: ``paper=0, area=1,
    area_sigma=(0, 0), grids=(0, 1, 0), noisy=0``); ``conf/degradation/`` has the named ones.
    """

    paper: float = 1.0
    noise_std: float = 0.0
    units: str = "lr"
    sigma: tuple[float, float] = (0.2, 0.6)
    area: float = 0.5
    area_sigma: tuple[float, float] = (0.0, 0.5)
    anisotropy: float = 1.25
    grids: tuple[float, float, float] = (1.0, 1.0, 1.0)
    noisy: float = 0.75
    noise: tuple[float, float] = (0.0, 0.012)
    spread: float = 0.5
    shot: tuple[float, float] = (0.0, 1e-4)

    def __post_init__(self) -> None:
        for name in ("paper", "area", "noisy"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"degradation.{name} is a probability in [0, 1], got {getattr(self, name)}")
        for name in ("sigma", "area_sigma", "noise", "shot"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise InputError(
                    f"degradation.{name} must be a range [lo, hi] with 0 <= lo <= hi, got {[lo, hi]}"
                )
        if self.units not in ("lr", "hr"):
            raise InputError(f"degradation.units must be 'lr' or 'hr', got {self.units!r}")
        if self.anisotropy < 1:
            raise InputError(f"degradation.anisotropy must be >= 1, got {self.anisotropy}")
        if len(self.grids) != 3 or min(self.grids) < 0 or sum(self.grids) <= 0:
            raise InputError(
                f"degradation.grids: three weights >= 0 (paper, block, between), got {self.grids}"
            )
        if self.noise_std < 0 or not 0 <= self.spread <= 1:
            raise InputError(
                f"degradation.noise_std must be >= 0 and spread in [0, 1]; got {self.noise_std}, {self.spread}"
            )

    @classmethod
    def of(cls, config: Any = None, **overrides: Any) -> DegradationFamily:
        """A family from a mapping of its fields (a Hydra config; ``_target_`` ignored), a family, or None
        (the paper's degradation), with ``overrides`` on top."""
        if config is None:
            base: dict[str, Any] = {}
        elif isinstance(config, DegradationFamily):
            base = asdict(config)
        elif isinstance(config, Mapping) or hasattr(config, "items"):
            base = {k: v for k, v in dict(config).items() if k != "_target_"}
        else:
            raise InputError(
                f"degradation must be a mapping of DegradationFamily fields, got {type(config).__name__}"
            )
        base.update(overrides)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(base) - known)
        if unknown:
            raise InputError(f"unknown degradation field(s) {unknown}; known: {sorted(known)}")
        for name in ("sigma", "area_sigma", "noise", "shot", "grids"):
            if name in base:
                base[name] = tuple(float(v) for v in base[name])
        return cls(**base)

    @property
    def always_paper(self) -> bool:
        return self.paper >= 1

    def draw(self, scale: int, generator: torch.Generator | None = None) -> Observation:
        """One :class:`Observation` at ``scale``. The paper's member with probability 1 draws nothing
        from ``generator`` (the evaluation pairs of the paper's degradation stay as they were)."""
        if self.always_paper:
            return Observation(noise=self.noise_std)
        u = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
        if u[0] < self.paper:
            return Observation(noise=self.noise_std)
        unit = scale if self.units == "lr" else 1.0

        def within(bounds: tuple[float, float], t: float) -> float:
            return (bounds[0] + t * (bounds[1] - bounds[0])) * unit

        block = u[1] < self.area
        sigma = within(self.area_sigma if block else self.sigma, u[2])
        ratio = self.anisotropy ** (2 * u[3] - 1)
        psf = Psf(
            sigma=sigma, sigma_y=sigma * ratio if ratio != 1 else None, area=float(scale) if block else 0.0
        )
        weights = torch.tensor(self.grids, dtype=torch.float64)
        cumulative = (weights / weights.sum()).cumsum(0).tolist()
        choice = next(i for i, c in enumerate(cumulative) if u[4] < c or i == 2)
        lo, hi = grid_phase(scale, "paper"), grid_phase(scale, "block")
        phase = (lo, hi, lo + u[5] * (hi - lo))[choice]
        if u[6] >= self.noisy:
            return Observation(psf=psf, phase=phase)
        noise_bounds, shot_bounds = self.noise, self.shot
        t = u[7]
        return Observation(
            psf=psf,
            phase=phase,
            noise=noise_bounds[0] + t * (noise_bounds[1] - noise_bounds[0]),
            spread=self.spread,
            shot=shot_bounds[0] + (1 - t) * (shot_bounds[1] - shot_bounds[0]),
        )


def named_observation(kind: str, scale: int, sigma: float = 0.0, noise: float = 0.0) -> Observation:
    """The fixed degradations the records name: ``paper`` (noise added if given), ``block`` (block means,
    plus a Gaussian of ``sigma`` HR px), ``gauss`` (a Gaussian of ``sigma`` HR px sampled at block centres).

    Example:
        >>> named_observation("gauss", 8, sigma=2.0, noise=0.005).describe(8)
        'Gaussian sigma 2.00 px, phase 3.5 of 8, noise 0.005'
    """
    if kind == "paper":
        return Observation(noise=noise)
    block = grid_phase(scale, "block")
    if kind == "block":
        return Observation(psf=Psf(sigma=sigma, area=float(scale)), phase=block, noise=noise)
    if kind == "gauss":
        return Observation(psf=Psf(sigma=sigma), phase=block, noise=noise)
    raise InputError(f"unknown degradation {kind!r}; expected paper, block or gauss")


__all__ = [
    "DegradationFamily",
    "Observation",
    "Psf",
    "grid_phase",
    "low_pass_as",
    "low_pass_matrix",
    "presentation_matrix",
    "named_observation",
    "pixel_weights",
    "present",
    "psf_matrix",
]
