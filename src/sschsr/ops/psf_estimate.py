"""Which PSF made the LR data: the candidate through which a sharp image of the scene best explains them.

A user rarely knows their camera's PSF. Given a sharp estimate of the scene on the HR grid (the
network's output, or the reference warped onto the HSI's grid) and the LR side as the pipeline holds it
(upsampled and presented on the paper's grid, :func:`sschsr.ops.degradations.present`), each candidate
:class:`~sschsr.ops.degradations.Observation` (same phase, another PSF) predicts the LR side
(:func:`~sschsr.ops.degradations.low_pass_as`); the one with the smallest mean squared residual over the
interior wins. With ``affine``, each channel of the prediction is first fitted to the data by a gain and
an offset (a reference photo's colours are not the HSI's).

The estimate is as good as the sharp image: detail the sharp image lacks makes a narrower PSF look right,
detail it has that the scene has not (a network's over-sharpening, a photo's noise) a wider one
(``experiments/results/psf_estimate_error.json`` has its error where the truth is known). The candidates span
the degradation family's widths (:func:`candidates`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sschsr.ops.degradations import Observation, Psf, low_pass_as

MAX_BANDS = 8  # channels compared by default: the PSF is one for all bands


def candidates(scale: int, phase: float) -> list[Observation]:
    """The PSFs tried at ``scale`` and ``phase``: Gaussians of std 0.15 to 1.0 LR px in steps of 0.05
    (x the scale for HR px), the block mean with a Gaussian of 0 to 0.5 LR px on top (steps of 0.0625), and
    the paper's kernel when ``phase`` is the paper's (0.5)."""
    out = [Observation(psf=Psf(sigma=round(scale * k / 20, 6)), phase=phase) for k in range(3, 21)]
    out += [
        Observation(psf=Psf(sigma=round(scale * k / 16, 6), area=float(scale)), phase=phase) for k in range(9)
    ]
    if phase == 0.5:
        out.append(Observation())
    return out


@dataclass(frozen=True)
class PsfEstimate:
    """The chosen observation and each candidate's residual (RMS, data units), best first."""

    observation: Observation
    residuals: tuple[tuple[str, float], ...]

    def describe(self, scale: int) -> str:
        return self.observation.describe(scale)


def _residual(pred: Tensor, data: Tensor, affine: bool, border: int) -> float:
    if border:
        pred, data = pred[..., border:-border, border:-border], data[..., border:-border, border:-border]
    p, d = pred.flatten(2).double(), data.flatten(2).double()
    if affine:  # per channel: data ~ a * pred + b
        pm, dm = p.mean(-1, keepdim=True), d.mean(-1, keepdim=True)
        pc, dc = p - pm, d - dm
        gain = (pc * dc).sum(-1, keepdim=True) / (pc * pc).sum(-1, keepdim=True).clamp_min(1e-12)
        p = gain * pc + dm
    return float((p - d).square().mean().sqrt())


def estimate_psf(
    sharp: Tensor,
    lr_up: Tensor,
    scale: int,
    phase: float,
    affine: bool = False,
    options: list[Observation] | None = None,
    max_bands: int | None = MAX_BANDS,
) -> PsfEstimate:
    """The observation among ``options`` (default :func:`candidates` at ``scale`` and ``phase``) whose
    presented low pass of ``sharp`` is nearest ``lr_up``.

    Args:
        sharp: ``(B, K, H, W)`` a sharp image of the scene on the HR grid.
        lr_up: ``(B, K, H, W)`` the LR side, upsampled and presented on the paper's grid.
        scale: the LR factor.
        phase: where LR pixel 0 is centred (HR px; :func:`sschsr.ops.degradations.grid_phase`).
        affine: fit each channel's gain and offset first (``sharp`` of other colours than ``lr_up``).
        max_bands: compare at most this many channels, spread evenly over ``K`` (the PSF is one for all
            bands; the cost grows with their number); None: all.

    Returns:
        :class:`PsfEstimate`.
    """
    if sharp.shape != lr_up.shape or sharp.ndim != 4:
        raise ValueError(
            f"estimate_psf expects two (B, K, H, W) of one shape; got {tuple(sharp.shape)}, {tuple(lr_up.shape)}"
        )
    options = candidates(scale, phase) if options is None else options
    if max_bands is not None and sharp.shape[1] > max_bands:
        keep = torch.linspace(0, sharp.shape[1] - 1, max_bands).round().long().to(sharp.device)
        sharp, lr_up = sharp.index_select(1, keep), lr_up.index_select(1, keep)
    with torch.no_grad():
        x, y = sharp.detach().double(), lr_up.detach().double()
        border = 2 * scale if min(x.shape[-2:]) > 8 * scale else 0
        scored = sorted(
            ((_residual(low_pass_as(x, scale, o), y, affine, border), i) for i, o in enumerate(options)),
        )
    best = options[scored[0][1]]
    return PsfEstimate(best, tuple((options[i].psf.describe(), r) for r, i in scored))
