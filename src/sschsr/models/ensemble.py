"""Self-ensembles over symmetries of the square (test-time augmentation: 1, 2, 4 or all 8), of a flow network
(:func:`dihedral_flow`) and of the whole super-resolution network (:class:`SelfEnsemble`), and the other
test-time wrappers of a network (:class:`ShiftedInputs`, :class:`BackProjected`).

A network is not equivariant to flips and transpositions: its errors on a mirrored or transposed input
are partly independent of those on the input itself, so the mean of the eight predictions, each mapped
back, is more accurate than any one (EDSR's "self-ensemble" for SR).

One subtlety makes the naive version fail. ``rgb_hsi`` (the upsampled LR side) shows the scene shifted by
``d`` px in x and in y (:func:`sschsr.ops.degrade.content_shift`: 3 px at x8), and a trained network adds
that shift to every vector it predicts. Transposing the pair keeps the shift ``(d, d)``; mirroring it in x
turns it into ``(-d, d)``, which the network has never seen, and the prediction is off by ``2d`` px. So
``image1`` of every transformed pair is moved by the difference, ``(d, d) - A (d, d)``, before the network
sees it. With that, each transformed prediction is as accurate as the untransformed one. The SR network
learns the same shift from ``lr_up``, so :class:`SelfEnsemble` moves ``lr_up`` and ``rgb_hsi`` alike.

A transform ``g`` is ``(transpose, hflip, vflip)``: transpose the grid, then mirror columns, then rows. On a
flow field it moves the field like an image and multiplies every vector by the linear part ``A`` (swap x
and y, then negate x for ``hflip``, y for ``vflip``), as in :mod:`sschsr.data.augment`.

    >>> flow = dihedral_flow(lambda a, b: net(a, b, iters=12, test_mode=True), rgb_hsi, ref,
    ...                      shift=content_shift(8))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import torch
from torch import Tensor, nn

from sschsr import progress
from sschsr.ops.back_projection import CORRECTION_STD, back_project, band_noise
from sschsr.ops.degradations import Observation, Psf
from sschsr.ops.psf_estimate import estimate_psf
from sschsr.ops.warp import flow_warp, move_content

Transform = tuple[bool, bool, bool]  # (transpose, hflip, vflip)

TRANSFORMS: dict[int, tuple[Transform, ...]] = {
    1: ((False, False, False),),
    2: ((False, False, False), (True, False, False)),  # needs no shift correction
    # the input, its transposition and its two mirror images: on the validation scenes as good as all eight
    # (better in PSNR at x8 and x4) at half the passes (experiments/tta_subsets.py; the default)
    4: ((False, False, False), (True, False, False), (False, True, False), (False, False, True)),
    8: tuple(product((False, True), repeat=3)),
}


def transform_set(transforms: int | Sequence[Transform]) -> tuple[Transform, ...]:
    """The transforms of a self-ensemble: those of :data:`TRANSFORMS` for a count, or the given ones.

    Raises:
        ValueError: a count not in :data:`TRANSFORMS`, an empty set or a transform not three booleans.
    """
    if isinstance(transforms, int):
        if transforms not in TRANSFORMS:
            raise ValueError(f"transforms must be one of {sorted(TRANSFORMS)}; got {transforms}")
        return TRANSFORMS[transforms]
    out = tuple(tuple(g) for g in transforms)
    if not out or any(len(g) != 3 or not all(isinstance(b, bool) for b in g) for g in out):
        raise ValueError(f"transforms must be (transpose, hflip, vflip) booleans; got {transforms}")
    return out  # type: ignore[return-value]


def transform_image(x: Tensor, g: Transform) -> Tensor:
    """``(..., H, W)`` moved by ``g`` (``(..., W, H)`` when ``g`` transposes)."""
    transpose, hflip, vflip = g
    if transpose:
        x = x.transpose(-1, -2)
    if hflip:
        x = x.flip(-1)
    if vflip:
        x = x.flip(-2)
    return x


def untransform_image(x: Tensor, g: Transform) -> Tensor:
    """The inverse of :func:`transform_image`: ``(..., H', W')`` of the moved frame back to the original."""
    transpose, hflip, vflip = g
    if vflip:
        x = x.flip(-2)
    if hflip:
        x = x.flip(-1)
    return x.transpose(-1, -2) if transpose else x


def untransform_flow(flow: Tensor, g: Transform) -> Tensor:
    """A flow ``(B, 2, H', W')`` predicted on a pair moved by ``g``, as the flow of the original pair: the
    field moved back like an image, every vector multiplied by ``A^-1``."""
    transpose, hflip, vflip = g
    fx, fy = flow.unbind(1)
    fx, fy = (-fx if hflip else fx), (-fy if vflip else fy)
    return untransform_image(torch.stack([fy, fx] if transpose else [fx, fy], 1), g)


def transform_flow(flow: Tensor, g: Transform) -> Tensor:
    """The inverse of :func:`untransform_flow`: a flow ``(B, 2, H, W)`` of the original pair as the flow of
    the pair moved by ``g`` (the field moved like an image, every vector multiplied by ``A``)."""
    fx, fy = transform_image(flow, g).unbind(1)
    transpose, hflip, vflip = g
    if transpose:
        fx, fy = fy, fx
    return torch.stack([-fx if hflip else fx, -fy if vflip else fy], 1)


def shifted_input(x: Tensor, g: Transform, shift: float) -> Tensor:
    """An input that shows the scene ``shift`` px off its grid (``lr_up``, ``rgb_hsi``) moved by ``g`` and
    corrected so that the shift is ``(shift, shift)`` again, as the network saw it in training."""
    _, hflip, vflip = g
    return move_content(transform_image(x, g), 2 * shift * hflip, 2 * shift * vflip)


def dihedral_flow(
    flow_fn: Callable[[Tensor, Tensor], Tensor],
    image1: Tensor,
    image2: Tensor,
    transforms: int | Sequence[Transform] = 8,
    shift: float = 0.0,
) -> Tensor:
    """The mean of ``flow_fn`` over ``transforms`` symmetries of the pair, each mapped back.

    Args:
        flow_fn: ``(image1, image2) -> (B, 2, H, W)`` flow, e.g. a :class:`~sschsr.models.flow.RAFT` call.
        image1, image2: ``(B, 3, H, W)``; the flow goes from ``image1``'s grid into ``image2``.
        transforms: a count of :data:`TRANSFORMS` (1: ``flow_fn`` alone, 2: with the transposed pair, 8: all
            flips and transpositions) or the transforms themselves (:func:`transform_set`).
        shift: how far ``image1``'s content sits from the grid the flow is defined on, in px along x and y
            (:func:`sschsr.ops.degrade.content_shift` of the scale for ``rgb_hsi``; 0 for ordinary images).

    Returns:
        ``(B, 2, H, W)``, the dtype of ``flow_fn``'s output.
    """
    group = transform_set(transforms)
    total = None
    for g in group:
        flow = untransform_flow(flow_fn(shifted_input(image1, g, shift), transform_image(image2, g)), g)
        total = flow if total is None else total + flow
    return total / len(group)


class ShiftedInputs(nn.Module):
    """``model`` given ``lr_up`` and ``rgb_hsi`` with their content moved by ``(shift, shift)`` px (``ref``
    as it is): LR data made another way than the model's training data
    (:func:`sschsr.ops.degrade.lr_grid_shift`) presented as it learnt them, so that its outputs (``sr``,
    ``flow``, the warped references) lie on the HR grid of the data given. :func:`sschsr.pipeline.on_lr_grid`
    makes it.

    Shape:
        as ``model``.
    """

    def __init__(self, model: nn.Module, shift: float):
        super().__init__()
        self.model, self.shift = model, shift

    def forward(self, lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor) -> dict[str, Tensor]:
        d = self.shift
        return self.model(move_content(lr_up, d, d), ref, move_content(rgb_hsi, d, d))


class BackProjected(nn.Module):
    """``model`` whose ``sr`` is made to agree with its ``lr_up`` by ``iters`` steps of
    :func:`sschsr.ops.back_projection.back_project` at ``scale`` with ``correction_std`` (None: the exact
    fit; other outputs as they are).
    :func:`sschsr.pipeline.with_back_projection` makes it.

    ``psf``: the LR data's PSF (:class:`~sschsr.ops.degradations.Psf`) centred at ``phase`` (HR px,
    :func:`~sschsr.ops.degradations.grid_phase`; the data presented on the paper's grid); None: the
    paper's degradation; ``"auto"``: estimated per image from the model's ``sr`` against ``lr_up``
    (:func:`sschsr.ops.psf_estimate.estimate_psf`); ``"auto-reference"``: the estimate the model's flow
    refinement made for this image from the reference (:class:`~sschsr.ops.flow_refine.FlowRefiner` with
    ``psf="auto"``), or from ``sr`` where it made none. ``auto`` was chosen on the validation scenes
    (``experiments/results/sr_lr_s29_tta1{,_refpsf}_val_x8_*.json``). Each estimate is appended to ``estimates`` with its source and
    the noise that back-projection estimated (:func:`sschsr.ops.back_projection.band_noise`).

    Shape:
        as ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        scale: int,
        iters: int,
        correction_std: float | None = CORRECTION_STD,
        psf: Psf | str | None = None,
        phase: float = 0.5,
    ):
        super().__init__()
        if not (psf is None or isinstance(psf, Psf) or psf in ("auto", "auto-reference")):
            raise ValueError(f"psf must be a Psf, None, 'auto' or 'auto-reference'; got {psf!r}")
        self.model, self.scale, self.iters, self.correction_std = model, scale, iters, correction_std
        self.psf, self.phase = psf, phase
        self.estimates: list[dict] = []

    def refiner_logs(self) -> list[list]:
        """The estimate logs of the flow refiners inside ``model``."""
        return [
            m.flow_refiner.log
            for m in self.model.modules()
            if isinstance(getattr(getattr(m, "flow_refiner", None), "log", None), list)
        ]

    def observation(self, sr: Tensor, lr_up: Tensor, from_reference: object = None) -> Observation | None:
        """The observation back-projection fits (class docstring: ``psf``); ``from_reference``: the
        refinement's estimate for this image, if it made one."""
        if self.psf is None:
            return None
        if self.psf not in ("auto", "auto-reference"):
            return Observation.at(self.psf, self.phase)
        if self.psf == "auto-reference" and from_reference is not None:
            estimate, source = from_reference, "reference"
        else:
            estimate, source = estimate_psf(sr.float(), lr_up.float(), self.scale, self.phase), "output"
        noise = band_noise(lr_up.float())
        self.estimates.append(
            {
                "psf": estimate.describe(self.scale),
                "source": source,
                "noise_mean": float(noise.mean()),
                "estimate": estimate,
            }
        )
        return estimate.observation

    def forward(self, lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor) -> dict[str, Tensor]:
        logs = self.refiner_logs()
        before = [len(log) for log in logs]
        out = self.model(lr_up, ref, rgb_hsi)
        made = [log[-1] for log, n in zip(logs, before, strict=True) if len(log) > n]
        observation = self.observation(out["sr"], lr_up, made[-1] if made else None)
        sr = back_project(
            out["sr"],
            lr_up,
            self.scale,
            self.iters,
            correction_std=self.correction_std,
            observation=observation,
        ).to(out["sr"].dtype)
        return {**out, "sr": sr}


class SelfEnsemble(nn.Module):
    """A super-resolution network run on ``transforms`` symmetries of its inputs, outputs mapped back and
    averaged: ``sr`` and ``ref_warp`` as images. A network with a flow network (``model.flow_net``, e.g.
    :class:`~sschsr.models.sschsr.SSCHSR`) aligns once for all passes: the flow is :func:`dihedral_flow` of
    its flow estimator (``model.estimate_flow(rgb_hsi, ref, refine=False)``), then refined once
    (``model.refine_flow``, :mod:`sschsr.ops.flow_refine`), and every pass is given that flow, moved by its
    transform (``model(..., flow=...)``); ``flow`` and ``ref_warp0`` (``ref`` warped by it) are returned as
    for a single pass. A model without one has its passes' own ``flow`` outputs averaged as flows. Other
    outputs are dropped.

    Args:
        model: ``model(lr_up, ref, rgb_hsi) -> dict`` with at least ``sr`` (e.g. :class:`~sschsr.models.sschsr.SSCHSR`).
        transforms: a count of :data:`TRANSFORMS` or the transforms themselves (:func:`transform_set`).
        shift: :func:`sschsr.ops.degrade.content_shift` of the scale: how far ``lr_up`` and ``rgb_hsi``
            show the scene from the HR grid (``ref`` is on its own grid and is only moved by ``g``).

    Shape:
        as ``model``: ``(B, C, H, W)``, ``(B, 3, H, W)``, ``(B, 3, H, W)`` in; a dict of ``(B, K, H, W)`` out.
    """

    IMAGES = ("sr", "ref_warp")  # averaged as images

    def __init__(self, model: nn.Module, transforms: int | Sequence[Transform] = 8, shift: float = 0.0):
        super().__init__()
        transform_set(transforms)  # checked
        self.model, self.transforms, self.shift = model, transforms, shift

    def ensemble_flow(self, rgb_hsi: Tensor, ref: Tensor) -> Tensor | None:
        """The model's flow over the symmetries, refined once; None for a model without a flow network."""
        if getattr(self.model, "flow_net", None) is None:
            return None
        flow = dihedral_flow(
            lambda a, b: self.model.estimate_flow(a, b, refine=False),
            rgb_hsi,
            ref,
            self.transforms,
            self.shift,
        )
        return self.model.refine_flow(flow, rgb_hsi, ref)

    def forward(self, lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor) -> dict[str, Tensor]:
        flow = self.ensemble_flow(rgb_hsi, ref)
        keys = self.IMAGES if flow is not None else (*self.IMAGES, "flow")  # else: each pass's own flow
        total: dict[str, Tensor] = {}
        warps = False  # whether the model returns ref_warp0
        group = transform_set(self.transforms)
        n = len(group)
        for k, g in enumerate(group, 1):
            given = {} if flow is None else {"flow": transform_flow(flow, g)}
            out = self.model(
                shifted_input(lr_up, g, self.shift),
                transform_image(ref, g),
                shifted_input(rgb_hsi, g, self.shift),
                **given,
            )
            warps = warps or "ref_warp0" in out
            for key in keys:
                if key in out:
                    value = untransform_flow(out[key], g) if key == "flow" else untransform_image(out[key], g)
                    total[key] = value if key not in total else total[key] + value
            progress.advance("pass", note=f"pass {k}/{n}")
        out = {k: v / n for k, v in total.items()}
        if flow is not None:
            out["flow"] = flow
        if (warps or flow is not None) and "flow" in out:  # the stage-1 warp is that of the ensemble's flow
            out["ref_warp0"] = flow_warp(ref, out["flow"].to(ref.dtype), padding_mode="border")
        return out
