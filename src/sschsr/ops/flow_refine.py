"""Test-time refinement of a flow field against the LR observation it must explain.

The flow network reads ``rgb_hsi``, an upsampled LR image, and the sharp reference; at x8 its vectors are
off by about a quarter of an LR pixel, and nothing it learnt tells it where the reference's detail falls
inside one. The degradation does: warped by the true flow, the reference seen through the paper's
degradation (:func:`sschsr.ops.degrade.degrade`, then bicubic upsampling) must look like ``rgb_hsi``.
:func:`refine_flow` minimises that mismatch over a smooth correction of the flow.

- **Data term**: Charbonnier distance between the two images averaged over ``scale x scale`` blocks (the
  LR grid, where they carry information), each normalised by its local mean and standard deviation over
  ``(2 * window + 1)^2`` LR pixels, per channel (several windows: the mean of one such term each). The
  normalisation absorbs what colour matching leaves of the camera change (tone curve, white balance,
  vignetting) and weighs texture, not brightness.
- **Correction**: the sum of bilinear fields with control points every ``cells`` HR px (64, 32, 16: coarse
  ones carry a correction across flat regions, fine ones follow local error), each with a quadratic
  smoothness penalty. Adam on the control points, ``iters`` steps.

On held-out CAVE pairs with the shipped flow networks and their self-ensemble
(``experiments/results/flow_eval_*_refined.json``) the end-point error goes from 2.05 to 1.29 px at x8 and
from 2.15 to 1.12 px at x4 (homography + elastic pairs: 1.74 -> 0.86 and 1.80 -> 0.69 px); docs/measured.md
has what it does to the super-resolution. The settings were chosen on pairs of CAVE training
scenes, not on the scenes scored; ``experiments/refine_sweep.py`` compares settings (docs/results.md
has why a smaller window was not taken). The cost is ``iters`` forward and backward passes of a
warp at the input's size; the degradation and the correction fields are matrix products on the LR grid and
the control points (:func:`observe_matrix`, :func:`bilinear_matrix`; ``experiments/bench_test_time.py``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from sschsr.ops.degradations import Observation, Psf, low_pass_matrix
from sschsr.ops.degrade import (
    KERNEL_SIZE,
    SIGMA,
    bicubic_matrix,
    blur_decimate_matrix,
    low_pass,
    matrix_as,
    separable,
    use_matrices,
)
from sschsr.ops.psf_estimate import estimate_psf
from sschsr.ops.warp import flow_warp


@dataclass(frozen=True)
class FlowRefiner:
    """:func:`refine_flow` with its settings bound, callable as ``refiner(flow, rgb_hsi, ref)``.

    Attributes:
        scale: the LR degradation factor of ``rgb_hsi``.
        iters: optimisation steps (0: the flow unchanged).
        lr: Adam step size, px.
        cells: spacing of each correction field's control points, HR px.
        smooth: weight of the quadratic smoothness penalty of every field.
        window: local normalisation radius, LR px; a tuple of radii: the data term is the mean of one
            term per radius (small ones follow texture, large ones carry across flat regions). The
            default, 1 and 4, was chosen over one window of 2 (used up to fc17515) on pairs of CAVE
            training scenes (``experiments/results/refine_windows_*.json``).
        var_eps: added to the local variance before normalising (image values in [0, 1]).
        charbonnier_eps: of the data term.
        psf: the LR data's PSF (:class:`~sschsr.ops.degradations.Psf`); None: the paper's degradation;
            ``"auto"``: estimated per image from the reference warped by the flow given
            (:func:`sschsr.ops.psf_estimate.estimate_psf`, gains and offsets fitted), appended to ``log``.
        phase: where LR pixel 0 is centred, HR px (:func:`~sschsr.ops.degradations.grid_phase`; the data
            presented on the paper's grid, :func:`sschsr.pipeline.on_lr_grid`); with ``psf`` only.
        log: the estimates ``"auto"`` made (:class:`~sschsr.ops.psf_estimate.PsfEstimate`), newest last.
    """

    scale: int
    iters: int = 150
    lr: float = 0.2
    cells: tuple[int, ...] = (64, 32, 16)
    smooth: float = 0.01
    window: int | tuple[int, ...] = (1, 4)
    var_eps: float = 1e-5
    charbonnier_eps: float = 1e-3
    psf: Psf | str | None = None
    phase: float = 0.5
    log: list = field(default_factory=list, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if (
            self.scale < 1
            or self.iters < 0
            or self.lr <= 0
            or not self.windows
            or min(self.windows) < 0
            or not self.cells
            or min(self.cells) < 1
            or not (self.psf is None or self.psf == "auto" or isinstance(self.psf, Psf))
        ):
            raise ValueError(f"invalid FlowRefiner settings: {self}")

    @property
    def windows(self) -> tuple[int, ...]:
        """The normalisation radii, one data term each."""
        return self.window if isinstance(self.window, tuple) else (self.window,)

    def __call__(self, flow: Tensor, rgb_hsi: Tensor, ref: Tensor) -> Tensor:
        return refine_flow(flow, rgb_hsi, ref, self)

    def settings(self) -> dict[str, object]:
        """Every field but ``scale`` (and the PSF's when it is the paper's), JSON-ready: what a record of a
        refined result states."""
        out = {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in self.__dataclass_fields__.values()
            if f.name not in ("scale", "log", "psf", "phase")
        }
        if self.psf is not None:
            out["psf"] = self.psf if isinstance(self.psf, str) else asdict(self.psf)
            out["phase"] = self.phase
        return out

    def observation(self, flow: Tensor, rgb_hsi: Tensor, ref: Tensor) -> Observation | None:
        """The LR data's observation to refine against: None for the paper's, ``psf`` at ``phase``, or
        estimated (``"auto"``, logged) from ``ref`` warped by ``flow``."""
        if self.psf is None:
            return None
        if self.psf != "auto":
            return Observation.at(self.psf, self.phase)
        warped = flow_warp(ref.float(), flow.float(), padding_mode="border")
        estimate = estimate_psf(warped, rgb_hsi.float(), self.scale, self.phase, affine=True)
        self.log.append(estimate)
        return estimate.observation

    @classmethod
    def from_settings(cls, scale: int, settings: dict[str, object]) -> FlowRefiner:
        """The refiner of ``settings`` (some or all of :meth:`settings`' entries, lists for tuples) at
        ``scale``; unknown fields raise TypeError, bad values ValueError."""
        return cls(scale, **{k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()})


def checked_settings(settings: object, exclude: Sequence[str] = ("scale",)) -> dict[str, object]:
    """``settings`` when it is a dict of :class:`FlowRefiner` fields other than ``exclude`` that
    :meth:`FlowRefiner.from_settings` takes; ValueError otherwise (not a dict, an excluded or unknown field,
    a bad value). What a command line or a config gives as the refinement's settings goes through here."""
    if not isinstance(settings, dict) or any(k in settings for k in exclude):
        raise ValueError(f"a mapping of FlowRefiner fields other than {', '.join(exclude)}; got {settings!r}")
    try:
        FlowRefiner.from_settings(1, settings)
    except TypeError as e:  # an unknown field
        raise ValueError(str(e)) from None
    return settings


def refiner_for(scale: int, iters: int, settings: dict[str, object] | None = None) -> FlowRefiner | None:
    """The refinement by ``iters`` steps at ``scale``, its other fields from ``settings`` where given (as
    :meth:`FlowRefiner.from_settings` takes them; an ``iters`` there is overridden), the defaults
    otherwise; None for 0 steps (no refinement)."""
    return FlowRefiner.from_settings(scale, {**(settings or {}), "iters": iters}) if iters else None


def refiner_settings(iters: int, settings: dict[str, object] | None = None) -> dict[str, object] | None:
    """:meth:`FlowRefiner.settings` of :func:`refiner_for`, as a record of a refined result states them;
    None for 0 steps (no refinement)."""
    refiner = refiner_for(1, iters, settings)
    return refiner.settings() if refiner else None


def observe(x: Tensor, scale: int, observation: Observation | None = None) -> Tensor:
    """``(B, C, H, W)`` as the LR side shows it (:func:`sschsr.ops.degrade.low_pass`: ``rgb_hsi`` is made
    that way), on the LR grid (the mean of each ``scale x scale`` block): ``(B, C, H // scale, W // scale)``.
    Blur, decimation, bicubic upsampling and block means are linear and separable: one matrix per axis
    (:func:`observe_matrix`), so nothing runs at the HR size but one matrix product. ``observation``: LR
    data made otherwise (:class:`~sschsr.ops.degradations.Observation`, presented on the paper's grid);
    None: the paper's."""
    if observation is not None and not observation.psf.paper:
        h, w = x.shape[-2:]
        reflect = min(h, w) > 1
        return separable(
            x,
            matrix_as(observed_blocks_matrix, (h, scale, observation, "y", reflect), x),
            matrix_as(observed_blocks_matrix, (w, scale, observation, "x", reflect), x),
        )
    if not use_matrices(*x.shape[-2:]):  # a long side: the convolutions (sschsr.ops.degrade.MATRIX_MAX_SIZE)
        return F.avg_pool2d(low_pass(x, scale), scale)
    h, w = x.shape[-2:]
    reflect = min(h, w) > KERNEL_SIZE // 2  # as low_pass's blur pads the paper's kernel
    return separable(
        x,
        matrix_as(observe_matrix, (h, scale, reflect), x),
        matrix_as(observe_matrix, (w, scale, reflect), x),
    )


@functools.lru_cache(maxsize=32)
def observe_matrix(n: int, scale: int, reflect: bool) -> Tensor:
    """``(n // scale, n)`` float64: :func:`observe` along one axis (block means of the first ``n // scale``
    blocks of the bicubic upsampling, cropped to ``n``, of the paper's blur and decimation)."""
    up = bicubic_matrix(math.ceil(n / scale), scale)[:n]
    return block_means_matrix(n, scale) @ up @ blur_decimate_matrix(n, scale, KERNEL_SIZE, SIGMA, reflect)


def block_means_matrix(n: int, scale: int) -> Tensor:
    """``(n // scale, n)`` float64: the mean of each whole ``scale``-pixel block."""
    blocks = torch.zeros(n // scale, n, dtype=torch.float64)
    for i in range(n // scale):
        blocks[i, i * scale : (i + 1) * scale] = 1 / scale
    return blocks


@functools.lru_cache(maxsize=32)
def observed_blocks_matrix(n: int, scale: int, observation: Observation, axis: str, reflect: bool) -> Tensor:
    """``(n // scale, n)`` float64: :func:`observe` along one axis for LR data of ``observation``."""
    return block_means_matrix(n, scale) @ low_pass_matrix(n, scale, observation, axis, reflect)


def local_moments(x: Tensor, radius: int) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``x`` ``(B, C, H, W)`` over ``(2 radius + 1)^2`` windows (replicated borders), per
    channel; each the shape of ``x``."""
    k = 2 * radius + 1

    def mean(t: Tensor) -> Tensor:
        return F.avg_pool2d(F.pad(t, (radius,) * 4, mode="replicate"), k, stride=1)

    m = mean(x)
    return m, (mean(x * x) - m * m).clamp_min(0)


def local_normalise(x: Tensor, radius: int, var_eps: float) -> Tensor:
    """``(x - mean) / sqrt(var + var_eps)`` with :func:`local_moments` over ``(2 radius + 1)^2`` windows, per
    channel; same shape as ``x``."""
    if radius == 0:
        return x
    m, var = local_moments(x, radius)
    return (x - m) / (var + var_eps).sqrt()


def correction(deltas: list[Tensor], cells: tuple[int, ...], size: tuple[int, int]) -> Tensor:
    """The sum of the bilinear fields of control points ``deltas[i]`` ``(B, 2, h_i, w_i)`` spaced
    ``cells[i]`` px, on an ``size`` grid: ``(B, 2, H, W)``. Each field is one matrix per axis
    (:func:`bilinear_matrix`)."""
    h, w = size
    total = 0
    for d, c in zip(deltas, cells, strict=True):
        if not use_matrices(h, w):  # a long side: PyTorch's interpolation, cropped
            full = ((d.shape[-2] - 1) * c + 1, (d.shape[-1] - 1) * c + 1)
            total = total + F.interpolate(d, size=full, mode="bilinear", align_corners=True)[..., :h, :w]
            continue
        my = matrix_as(bilinear_matrix, (d.shape[-2], c, h), d)
        mx = matrix_as(bilinear_matrix, (d.shape[-1], c, w), d)
        total = total + separable(d, my, mx)
    return total


@functools.lru_cache(maxsize=32)
def bilinear_matrix(points: int, cell: int, n: int) -> Tensor:
    """``(n, points)`` float64: linear interpolation between control points ``cell`` px apart (point ``j``
    at px ``j * cell``) at px ``0 .. n - 1`` (``n <= (points - 1) * cell + 1``)."""
    if n > (points - 1) * cell + 1:
        raise ValueError(f"{points} control points {cell} px apart do not cover {n} px")
    m = torch.zeros(n, points, dtype=torch.float64)
    for i in range(n):
        j, frac = divmod(i, cell)
        m[i, j] = 1 - frac / cell
        if frac:
            m[i, j + 1] = frac / cell
    return m


def refine_flow(flow: Tensor, rgb_hsi: Tensor, ref: Tensor, refiner: FlowRefiner) -> Tensor:
    """``flow`` plus the smooth correction that best explains ``rgb_hsi`` by the warped reference.

    Args:
        flow: ``(B, 2, H, W)`` from ``rgb_hsi``'s grid into ``ref`` (x, y px; :mod:`sschsr.ops.warp`), e.g.
            the flow network's.
        rgb_hsi: ``(B, 3, H, W)`` the upsampled LR side rendered and colour-matched to ``ref``, made by the
            paper's degradation at ``refiner.scale`` (other LR data: move them onto that convention first,
            as :func:`sschsr.pipeline.on_lr_grid` does).
        ref: ``(B, 3, Hr, Wr)`` the reference.
        refiner: the settings.

    Returns:
        ``(B, 2, H, W)`` float32, without gradient history; ``flow`` itself (as float32) when
        ``refiner.iters`` is 0 or the image spans fewer than 4 LR pixels a side. Works under
        ``torch.inference_mode`` (it optimises on copies outside it) and autocast (it computes in float32).
    """
    if flow.ndim != 4 or flow.shape[1] != 2 or rgb_hsi.shape[-2:] != flow.shape[-2:]:
        raise ValueError(
            f"refine_flow expects flow (B, 2, H, W) on rgb_hsi's grid; got {tuple(flow.shape)}, {tuple(rgb_hsi.shape)}"
        )
    s = refiner.scale
    h, w = flow.shape[-2:]
    if refiner.iters == 0 or min(h, w) < 4 * s:
        return flow.float()
    autocast_off = torch.autocast(device_type=flow.device.type, enabled=False)  # float32 throughout
    with torch.inference_mode(False), torch.enable_grad(), autocast_off:
        flow0, ref = flow.detach().float().clone(), ref.detach().float().clone()
        lr_side = F.avg_pool2d(rgb_hsi.detach().float().clone(), s)
        targets = [local_normalise(lr_side, r, refiner.var_eps) for r in refiner.windows]
        b = flow.shape[0]
        deltas = [
            torch.zeros(
                b, 2, math.ceil(h / c) + 1, math.ceil(w / c) + 1, device=flow.device, requires_grad=True
            )
            for c in refiner.cells
        ]
        opt = torch.optim.Adam(deltas, lr=refiner.lr)
        observation = refiner.observation(flow0, rgb_hsi.detach(), ref)
        for _ in range(refiner.iters):
            warped = flow_warp(ref, flow0 + correction(deltas, refiner.cells, (h, w)), padding_mode="border")
            seen = observe(warped, s, observation)
            data = sum(
                ((local_normalise(seen, r, refiner.var_eps) - t).square() + refiner.charbonnier_eps**2)
                .sqrt()
                .mean()
                for r, t in zip(refiner.windows, targets, strict=True)
            ) / len(targets)
            smooth = sum(d.diff(dim=-1).square().mean() + d.diff(dim=-2).square().mean() for d in deltas)
            opt.zero_grad(set_to_none=True)
            (data + refiner.smooth * smooth).backward()
            opt.step()
        with torch.no_grad():
            return flow0 + correction(deltas, refiner.cells, (h, w))
