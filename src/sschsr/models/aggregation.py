"""IDFA: iterative deformable feature aggregation (DESIGN.md, method step 4).

At level ``l`` (factor ``f = 1, 2, 4`` over the ``H/4`` matching grid) a modulated deformable convolution
reads the reference features ``F_ref_l`` at

    offset = C_l + residual,        C_l = f * nearest_upsample(C)          (the same for every tap)
    mask   = sigmoid(m * S_l),      S_l = nearest_upsample(S)

where ``residual`` (per tap and offset group, at most ``max_residual`` px, ``max_residual * tanh``) and
``m`` come from a small conv over ``[F_ref_l, warp(F_ref_l, C_l), guide_l]``. The guide tells the offsets
what the HSI looks like at ``p``: ``F_hsi_l`` at the coarsest level, and with ``iterative`` a 1x1 fusion of
``[F_hsi_l, F_sr_(l-1)]`` at the finer ones, so that each level refines its offsets with what the coarser
fusion produced (the paper's code does the same; ``iterative=False`` is the ablation without it). With
``guide="residual"`` the fusion is added to ``F_hsi_l`` instead (``F_hsi_l + conv1x1([F_hsi_l, F_sr_(l-1)])``,
the conv starting at zero): the iterative level starts as the one without guidance and learns what the coarser
output adds, where ``"concat"`` (the paper's, the default) starts from a random projection of both.
``"detached"`` is ``"concat"`` with the gradient stopped at ``F_sr_(l-1)``: the offsets read the coarser
output but do not train it, which then learns for the reconstruction alone. The prediction head starts at
zero: at initialisation the offsets are ``C_l`` and the mask is 0.5.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.models.encoders import NEGATIVE_SLOPE, conv3x3
from sschsr.ops.dcn import ModulatedDeformConv
from sschsr.ops.warp import flow_warp

__all__ = ["GUIDES", "IDFA", "Guide", "expand_offsets", "scale_correspondence"]

Guide = Literal["concat", "residual", "detached"]
GUIDES: tuple[str, ...] = get_args(Guide)


def scale_correspondence(offset: Tensor, score: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Bring the matching result from its grid to a finer one (nearest, as the paper's code).

    Args:
        offset: ``(B, 2, h, w)`` offsets in pixels of ``h x w`` (x, y).
        score: ``(B, 1, h, w)`` similarity.
        size: ``(H_l, W_l)``, an integer multiple of ``(h, w)``.

    Returns:
        ``(B, 2, H_l, W_l)`` offsets in pixels of the finer grid (times the factor), ``(B, 1, H_l, W_l)`` score.
    """
    h, w = offset.shape[-2:]
    if size[0] % h or size[1] % w or size[0] // h != size[1] // w:
        raise ValueError(
            f"level size {tuple(size)} is not one integer multiple of the matching grid {(h, w)}"
        )
    factor = size[0] // h
    if factor == 1:
        return offset, score
    offset = F.interpolate(offset, size=size, mode="nearest") * factor
    return offset, F.interpolate(score, size=size, mode="nearest")


def expand_offsets(offset: Tensor, taps: int, groups: int) -> Tensor:
    """One (x, y) offset per pixel to the deformable-conv layout, the same for every tap and group.

    Args:
        offset: ``(B, 2, H, W)``, x then y.
        taps: ``kh * kw``.
        groups: offset groups ``G``.

    Returns:
        ``(B, 2 * G * taps, H, W)``: ``(dy, dx)`` pairs (torchvision's order), see :mod:`sschsr.ops.dcn`.
    """
    return offset.flip(1).repeat(1, groups * taps, 1, 1)


class IDFA(nn.Module):
    """One level of iterative deformable feature aggregation.

    Args:
        channels: ``C_l`` of ``F_ref_l`` (and of the output ``A_ref_l``).
        hsi_channels: channels of ``F_hsi_l``.
        prev_channels: channels of ``F_sr_(l-1)`` (already at this level's resolution); None at the coarsest
            level. Used only when ``iterative``.
        iterative: guide the offsets with ``F_sr_(l-1)`` as well as ``F_hsi_l``.
        guide: how, when ``iterative``: ``concat`` (a 1x1 conv of both, the paper's), ``residual``
            (``F_hsi_l`` plus a zero-initialised 1x1 conv of both, which then has ``hsi_channels`` outputs) or
            ``detached`` (``concat`` with no gradient from the offsets into ``F_sr_(l-1)``).
        kernel_size: of the deformable convolution.
        offset_groups: groups of channels with their own offsets and masks (the paper: 8; reduced to the
            largest divisor of ``channels`` not above it).
        max_residual: bound in pixels of the learned offset residual (the paper's code: 10).

    Shape:
        ``forward(f_ref (B, C_l, H_l, W_l), offset (B, 2, h, w), score (B, 1, h, w), f_hsi (B, C_hsi, H_l, W_l),
        prev (B, C_prev, H_l, W_l) | None)`` -> ``A_ref_l (B, C_l, H_l, W_l)``; ``offset``/``score`` from
        :class:`sschsr.models.matching.GAM` on a grid that divides ``(H_l, W_l)``.
    """

    def __init__(
        self,
        channels: int,
        hsi_channels: int,
        prev_channels: int | None = None,
        iterative: bool = True,
        guide: Guide = "concat",
        kernel_size: int = 3,
        offset_groups: int = 8,
        max_residual: float = 10.0,
    ):
        super().__init__()
        if guide not in GUIDES:
            raise ValueError(f"unknown IDFA guide {guide!r}; expected one of {list(GUIDES)}")
        self.channels, self.iterative, self.max_residual = channels, iterative, max_residual
        self.guide_mode = guide
        self.offset_groups = math.gcd(channels, offset_groups)
        self.taps = kernel_size * kernel_size
        s = NEGATIVE_SLOPE
        if iterative and prev_channels:
            guide_channels = hsi_channels if guide == "residual" else channels
            self.guide = nn.Conv2d(hsi_channels + prev_channels, guide_channels, 1)
            if guide == "residual":  # starts as the level without guidance
                nn.init.zeros_(self.guide.weight)
                nn.init.zeros_(self.guide.bias)
        else:
            self.guide = None
            guide_channels = hsi_channels
        self.offset_body = nn.Sequential(
            conv3x3(2 * channels + guide_channels, channels),
            nn.LeakyReLU(s),
            conv3x3(channels, channels),
            nn.LeakyReLU(s),
        )
        # (dy, dx) residual per group and tap, then the mask's m per group and tap
        self.offset_head = conv3x3(channels, 3 * self.offset_groups * self.taps)
        nn.init.zeros_(self.offset_head.weight)
        nn.init.zeros_(self.offset_head.bias)
        self.dcn = ModulatedDeformConv(
            channels, channels, kernel_size, padding=kernel_size // 2, offset_groups=self.offset_groups
        )
        self.act = nn.LeakyReLU(s)

    def forward(
        self, f_ref: Tensor, offset: Tensor, score: Tensor, f_hsi: Tensor, prev: Tensor | None = None
    ) -> Tensor:
        if f_ref.shape[1] != self.channels or f_ref.shape[-2:] != f_hsi.shape[-2:]:
            raise ValueError(
                f"IDFA({self.channels}) got f_ref {tuple(f_ref.shape)} and f_hsi {tuple(f_hsi.shape)}"
            )
        size = tuple(f_ref.shape[-2:])
        base, score = scale_correspondence(offset.to(f_ref.dtype), score.to(f_ref.dtype), size)
        if self.guide is not None:
            if prev is None:
                raise ValueError(
                    "IDFA(iterative, prev_channels=...) needs prev, the previous level's fused features"
                )
            if self.guide_mode == "detached":
                prev = prev.detach()
            guide = self.guide(torch.cat((f_hsi, prev), dim=1))
            if self.guide_mode == "residual":
                guide = f_hsi + guide
        else:
            guide = f_hsi
        warped = flow_warp(f_ref, base)  # F_ref_l pulled onto the source grid by the match
        pred = self.offset_head(self.offset_body(torch.cat((f_ref, warped, guide), dim=1)))
        n = self.offset_groups * self.taps
        residual, m = pred[:, : 2 * n], pred[:, 2 * n :]
        dcn_offset = expand_offsets(base, self.taps, self.offset_groups) + self.max_residual * torch.tanh(
            residual
        )
        mask = torch.sigmoid(m * score)  # trust in a tap grows with the match's similarity, as m learns
        return self.act(self.dcn(f_ref, dcn_offset, mask))
