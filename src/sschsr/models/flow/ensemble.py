"""Self-ensembling a flow network over the eight symmetries of the square (test-time augmentation).

A flow network is not equivariant to flips and transpositions: its errors on a mirrored or transposed
pair are partly independent of those on the pair itself, so the mean of the eight predictions, each
mapped back, is more accurate than any one (the self-ensemble EDSR uses for SR, applied to the flow).

One subtlety makes the naive version fail. ``rgb_hsi`` (the upsampled LR side) shows the scene shifted by
``d`` px in x and in y (:func:`sschsr.data.degrade.content_shift`: 3 px at x8), and a trained network adds
that shift to every vector it predicts. Transposing the pair keeps the shift ``(d, d)``; mirroring it in x
turns it into ``(-d, d)``, which the network has never seen, and the prediction is off by ``2d`` px. So
``image1`` of every transformed pair is moved by the difference, ``(d, d) - A (d, d)``, before the network
sees it. With that, each transformed prediction is as accurate as the untransformed one.

A transform ``g`` is ``(transpose, hflip, vflip)``: transpose the grid, then mirror columns, then rows. On a
flow field it moves the field like an image and multiplies every vector by the linear part ``A`` (swap x
and y, then negate x for ``hflip``, y for ``vflip``), as in :mod:`sschsr.data.augment`.

    >>> flow = dihedral_flow(lambda a, b: net(a, b, iters=12, test_mode=True), rgb_hsi, ref,
    ...                      shift=content_shift(8))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import torch
from torch import Tensor

from sschsr.ops.warp import flow_warp

Transform = tuple[bool, bool, bool]  # (transpose, hflip, vflip)

TRANSFORMS: dict[int, tuple[Transform, ...]] = {
    1: ((False, False, False),),
    2: ((False, False, False), (True, False, False)),  # needs no shift correction
    8: tuple(product((False, True), repeat=3)),
}


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


def untransform_flow(flow: Tensor, g: Transform) -> Tensor:
    """A flow ``(B, 2, H', W')`` predicted on a pair moved by ``g``, as the flow of the original pair."""
    transpose, hflip, vflip = g
    if vflip:
        flow = flow.flip(-2)
    if hflip:
        flow = flow.flip(-1)
    fx, fy = flow.unbind(1)
    fx, fy = (-fx if hflip else fx), (-fy if vflip else fy)
    if transpose:
        return torch.stack([fy, fx], 1).transpose(-1, -2)
    return torch.stack([fx, fy], 1)


def move_content(x: Tensor, dx: float, dy: float) -> Tensor:
    """``(B, C, H, W)`` with its content moved by ``(dx, dy)`` px: ``out(p) = x(p - (dx, dy))``, the border
    repeated where nothing comes in (exact for whole pixels)."""
    if dx == 0 and dy == 0:
        return x
    b, _, h, w = x.shape
    flow = x.new_tensor([-dx, -dy]).view(1, 2, 1, 1).expand(b, 2, h, w)
    return flow_warp(x, flow, padding_mode="border")


def dihedral_flow(
    flow_fn: Callable[[Tensor, Tensor], Tensor],
    image1: Tensor,
    image2: Tensor,
    transforms: int = 8,
    shift: float = 0.0,
) -> Tensor:
    """The mean of ``flow_fn`` over ``transforms`` symmetries of the pair, each mapped back.

    Args:
        flow_fn: ``(image1, image2) -> (B, 2, H, W)`` flow, e.g. a :class:`~sschsr.models.flow.RAFT` call.
        image1, image2: ``(B, 3, H, W)``; the flow goes from ``image1``'s grid into ``image2``.
        transforms: 1 (``flow_fn`` alone), 2 (with the transposed pair) or 8 (all flips and transpositions).
        shift: how far ``image1``'s content sits from the grid the flow is defined on, in px along x and y
            (:func:`sschsr.data.degrade.content_shift` of the scale for ``rgb_hsi``; 0 for ordinary images).

    Returns:
        ``(B, 2, H, W)``, the dtype of ``flow_fn``'s output.
    """
    if transforms not in TRANSFORMS:
        raise ValueError(f"transforms must be one of {sorted(TRANSFORMS)}; got {transforms}")
    total = None
    for g in TRANSFORMS[transforms]:
        _, hflip, vflip = g
        # the shift (d, d) becomes (-d, d) under hflip, (d, -d) under vflip: put it back to (d, d)
        a = move_content(transform_image(image1, g), 2 * shift * hflip, 2 * shift * vflip)
        flow = untransform_flow(flow_fn(a, transform_image(image2, g)), g)
        total = flow if total is None else total + flow
    return total / len(TRANSFORMS[transforms])
