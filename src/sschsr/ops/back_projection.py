"""Back-projection: make a super-resolved cube agree with the LR data it was made from.

A network's output ``sr`` need not explain its input: seen through the degradation again
(:func:`sschsr.data.degrade.low_pass`, the paper's blur, decimation and bicubic upsampling), it differs from
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
first, :func:`sschsr.inference.on_lr_grid`), and the output reproduces the data's noise too: where the
blur leaves the finest LR frequencies weak (x4 with the paper's sigma 3) that noise comes out amplified, so
``sschsr-predict`` runs it by default only at x8 and x16 (:func:`sschsr.inference.default_back_project`).
The README ("Measured") has what it
does on held-out CAVE scenes, ``experiments/results/sr_eval_*_bp.json`` the records. The cost is ``iters`` applications of the
degradation and of its adjoint at the output's size (``experiments/bench_test_time.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sschsr.data.degrade import blur, gaussian_kernel, low_pass


def back_project(sr: Tensor, lr_up: Tensor, scale: int, iters: int, sigma: float | None = None) -> Tensor:
    """``sr`` plus the smallest smooth correction (per band) after which its degradation is ``lr_up``.

    Args:
        sr: ``(B, C, H, W)`` a super-resolved cube.
        lr_up: ``(B, C, H, W)`` the upsampled LR data ``sr`` was made from, ``low_pass(hr, scale)`` for the
            scene ``hr`` (the network's input of that name).
        scale: the degradation factor.
        iters: conjugate-gradient steps (0: ``sr`` unchanged). Each band converges independently, faster
            at x8 than at x4 (the blur removes less there; the least-constrained directions take longer).
        sigma: of the Gaussian that smooths the correction, HR px (None: ``scale / 4``; 0: none, the
            Euclidean projection).

    Returns:
        ``(B, C, H, W)`` float32, without gradient history. Works under ``torch.inference_mode`` and
        autocast (it computes in float32 on copies).
    """
    if sr.ndim != 4 or sr.shape != lr_up.shape:
        raise ValueError(
            f"back_project expects sr and lr_up of one shape (B, C, H, W); got {tuple(sr.shape)}, {tuple(lr_up.shape)}"
        )
    sigma = scale / 4 if sigma is None else sigma
    if iters < 0 or scale < 1 or sigma < 0:
        raise ValueError(
            f"back_project: iters, sigma must be >= 0 and scale >= 1; got {iters}, {sigma}, {scale}"
        )
    if iters == 0:
        return sr.float()
    autocast_off = torch.autocast(device_type=sr.device.type, enabled=False)
    with torch.inference_mode(False), torch.enable_grad(), autocast_off:
        x, target = sr.detach().float().clone(), lr_up.detach().float().clone()
        size = 2 * round(3 * sigma) + 1
        # its 1-D factor (a row sum of the normalised 2-D kernel): blur() then filters separably
        kernel = gaussian_kernel(size, sigma, device=x.device).sum(0) if sigma > 0 else None

        def smooth(z: Tensor) -> Tensor:
            return z if kernel is None else blur(z, kernel)

        def op(z: Tensor) -> Tensor:
            return low_pass(smooth(z), scale)

        def dot(a: Tensor, b: Tensor) -> Tensor:  # per (sample, band)
            return (a * b).sum((-2, -1), keepdim=True)

        z = torch.zeros_like(x)
        _, vjp = torch.func.vjp(op, z)  # op is linear: one vector-Jacobian product function serves every step

        def adjoint(residual: Tensor) -> Tensor:
            return vjp(residual)[0]

        residual = target - low_pass(x, scale)
        step = adjoint(residual)  # steepest descent direction of the least-squares problem in z
        direction, norm = step, dot(step, step)
        for _ in range(iters):
            image = op(direction)
            alpha = norm / dot(image, image).clamp_min(1e-30)
            z = z + alpha * direction
            residual = residual - alpha * image
            step = adjoint(residual)
            new_norm = dot(step, step)
            direction = step + new_norm / norm.clamp_min(1e-30) * direction
            norm = new_norm
        return (x + smooth(z)).detach()
