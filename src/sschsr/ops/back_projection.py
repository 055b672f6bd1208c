"""Back-projection: make a super-resolved cube agree with the LR data it was made from.

A network's output ``sr`` need not explain its input: seen through the degradation again
(:func:`sschsr.data.degrade.low_pass`, the paper's blur, decimation and bicubic upsampling), it differs from
``lr_up``, mostly in the low frequencies of each band (brightness and spectral slope over tens of pixels),
which the degradation keeps and which therefore are known exactly. :func:`back_project` replaces that part
by the data's: it returns the cube nearest to ``sr`` (Euclidean, per band) among those whose degradation is
``lr_up``, i.e. the orthogonal projection of ``sr`` onto that affine set, computed by conjugate gradients on
the least-squares problem ``min_d ||low_pass(sr + d) - lr_up||^2`` started from ``d = 0`` (CGLS: its iterates
stay in the row space of the operator, so it converges to the smallest correction). Detail the degradation
removes, where the reference helps, is left to the network.

It is the classical iterative back-projection of super-resolution with the exact adjoint of the paper's
degradation; the degradation must be the data's (LR data made otherwise: move them onto the paper's grid
first, :func:`sschsr.inference.on_lr_grid`). The README ("Measured") has what it does on held-out CAVE
scenes, ``experiments/results/sr_eval_*_bp.json`` the records. The cost is ``iters`` applications of the
degradation and of its adjoint at the output's size.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sschsr.data.degrade import low_pass


def _adjoint(residual: Tensor, scale: int) -> Tensor:
    """``low_pass``'s adjoint applied to ``residual`` ``(B, C, H, W)``: the gradient of
    ``<low_pass(x), residual>`` with respect to ``x``; same shape."""
    x = torch.zeros_like(residual, requires_grad=True)
    (grad,) = torch.autograd.grad(low_pass(x, scale), x, grad_outputs=residual)
    return grad


def back_project(sr: Tensor, lr_up: Tensor, scale: int, iters: int) -> Tensor:
    """``sr`` moved the least (per band) so that its degradation matches ``lr_up``.

    Args:
        sr: ``(B, C, H, W)`` a super-resolved cube.
        lr_up: ``(B, C, H, W)`` the upsampled LR data ``sr`` was made from, ``low_pass(hr, scale)`` for the
            scene ``hr`` (the network's input of that name).
        scale: the degradation factor.
        iters: conjugate-gradient steps (0: ``sr`` unchanged). Each band converges independently: at x8
            in about 5 steps, at x4 in about 20 (the blur removes less there, and the least-constrained
            directions take longer).

    Returns:
        ``(B, C, H, W)`` float32, without gradient history. Works under ``torch.inference_mode`` and
        autocast (it computes in float32 on copies).
    """
    if sr.ndim != 4 or sr.shape != lr_up.shape:
        raise ValueError(
            f"back_project expects sr and lr_up of one shape (B, C, H, W); got {tuple(sr.shape)}, {tuple(lr_up.shape)}"
        )
    if iters < 0 or scale < 1:
        raise ValueError(f"back_project: iters must be >= 0 and scale >= 1; got {iters}, {scale}")
    if iters == 0:
        return sr.float()
    autocast_off = torch.autocast(device_type=sr.device.type, enabled=False)
    with torch.inference_mode(False), torch.enable_grad(), autocast_off:
        x, target = sr.detach().float().clone(), lr_up.detach().float().clone()

        def dot(a: Tensor, b: Tensor) -> Tensor:  # per (sample, band)
            return (a * b).sum((-2, -1), keepdim=True)

        residual = target - low_pass(x, scale)
        step = _adjoint(residual, scale)  # steepest descent direction of the least-squares problem
        direction, norm = step, dot(step, step)
        for _ in range(iters):
            image = low_pass(direction, scale)
            alpha = norm / dot(image, image).clamp_min(1e-30)
            x = x + alpha * direction
            residual = residual - alpha * image
            step = _adjoint(residual, scale)
            new_norm = dot(step, step)
            direction = step + new_norm / norm.clamp_min(1e-30) * direction
            norm = new_norm
        return x.detach()
