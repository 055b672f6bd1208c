"""A flow network run on its pair shrunk by a whole factor, the flow enlarged back.

The flow networks were trained on crops of 96-128 px. On whole 512 x 512 scenes at x8 they leave whole
untextured objects (peppers, the grey patches of a chart) at the wrong motion, far from any depth edge; on
the pair shrunk by 2 they see scenes nearer the size they learnt, and the test-time refinement
(:mod:`sschsr.ops.flow_refine`) puts back the detail the smaller grid cannot hold. The flow network also
costs a quarter. docs/usage.md ("Flow on the shrunk pair") has the numbers; ``experiments/eval_flow.py
--flow-factor`` and ``experiments/eval_sr.py --flow-factor`` measure them.

``image1`` (``rgb_hsi``) shows the scene ``shift`` px from its grid (:func:`sschsr.ops.degrade.content_shift`),
which the flow networks learnt to add to every vector; shrunk by ``factor`` it would show it ``shift /
factor`` px off, so it is moved the rest of the way (:func:`sschsr.ops.warp.move_content`) and the flow
network finds the offset it learnt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from sschsr.ops.warp import move_content

MIN_SIDE = 64  # the shrunk pair keeps at least this many px a side (8 cells of a flow network's 1/8 grid)
AUTO_SIDE = 512  # pairs at least this long a side are shrunk by 2 by default (:func:`auto_factor`)

FlowFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class CoarseFlow:
    """:func:`coarse_flow` with its settings bound, callable as ``coarse(flow_fn, image1, image2)``.

    Attributes:
        factor: the shrink factor (1: ``flow_fn`` on the pair as it is; None: :func:`auto_factor` of each
            pair's size).
        shift: where ``image1`` shows the scene from its grid, px (its
            :func:`~sschsr.ops.degrade.content_shift`; 0 for ordinary images).
    """

    factor: int | None = None
    shift: float = 0.0

    def __post_init__(self) -> None:
        if self.factor is not None and self.factor < 1:
            raise ValueError(f"the flow's shrink factor must be >= 1; got {self.factor}")

    def __call__(self, flow_fn: FlowFn, image1: Tensor, image2: Tensor) -> Tensor:
        factor = auto_factor(*image1.shape[-2:]) if self.factor is None else self.factor
        return coarse_flow(flow_fn, image1, image2, factor, self.shift)


def auto_factor(height: int, width: int) -> int:
    """The default shrink factor of an ``height x width`` pair: 2 from :data:`AUTO_SIDE` px a side, else 1.
    Measured on CAVE pairs (docs/usage.md): shrunk by 2, whole 512 px scenes get a lower refined error and 256 px
    crops none; larger factors and larger images were not measured."""
    return 2 if min(height, width) >= AUTO_SIDE else 1


def shrink(x: Tensor, factor: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, ceil(H / factor), ceil(W / factor))``: means of ``factor x factor``
    blocks (the far edges repeated up to a multiple of ``factor``). Small pixel ``q`` covers pixels
    ``factor * q .. factor * q + factor - 1``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % factor, -w % factor
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(x, factor)


def coarse_flow(flow_fn: FlowFn, image1: Tensor, image2: Tensor, factor: int, shift: float = 0.0) -> Tensor:
    """``flow_fn`` on the pair shrunk by ``factor`` (:func:`shrink`), its flow enlarged back.

    Args:
        flow_fn: ``(image1, image2) -> (B, 2, h, w)`` flow from ``image1``'s grid into ``image2`` (x, y px),
            e.g. a :class:`~sschsr.models.flow.RAFT` call.
        image1, image2: ``(B, 3, H, W)``.
        factor: the shrink factor; 1, or a pair that would shrink below :data:`MIN_SIDE` px a side, calls
            ``flow_fn`` on the pair as it is.
        shift: where ``image1`` shows the scene from its grid, px (see the module docstring).

    Returns:
        ``(B, 2, H, W)`` in px of the full grid: bilinear enlargement of the small flow, times ``factor``.
    """
    h, w = image1.shape[-2:]
    if factor == 1 or min(h, w) < MIN_SIDE * factor:
        return flow_fn(image1, image2)
    d = shift * (factor - 1) / factor
    small = flow_fn(move_content(shrink(image1, factor), d, d), shrink(image2, factor))
    size = (small.shape[-2] * factor, small.shape[-1] * factor)
    return factor * F.interpolate(small, size=size, mode="bilinear", align_corners=False)[..., :h, :w]
