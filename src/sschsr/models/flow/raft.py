"""A RAFT-style optical flow network (Teed & Deng, "RAFT: Recurrent All-Pairs Field Transforms for
Optical Flow", ECCV 2020), written from the paper in plain PyTorch: no compiled ops, any input size.

In sschsr it is stage 1 of SSC-HSR: ``image1`` is ``rgb_hsi`` (the LR HSI upsampled and rendered to RGB,
on the HSI grid) and ``image2`` is ``ref`` (the unaligned RGB photo); the flow it predicts sends each HSI
pixel ``p`` to ``p + flow[p]`` in ``ref``, so ``sschsr.ops.warp.flow_warp(ref, flow)`` aligns the photo.

Presets (parameter counts are measured by ``tests/test_flow_model.py``):

- ``base`` (about 5.3 M): RAFT. Residual encoders (64-96-128), 256-d features, instance norm; context
  encoder with batch norm, 128 hidden + 128 context channels; 4 levels, radius 4; separable
  1x5/5x1 ConvGRU; convex upsampling.
- ``small`` (about 1.2 M): RAFT-small's encoders (bottleneck blocks 32-64-96, 128-d features, context
  without norm), 96 hidden + 64 context; 4 levels, radius 3; one 3x3 ConvGRU. Unlike RAFT-small, which
  upsamples bilinearly, it upsamples convexly with a slimmer mask head (128 wide, +0.18 M parameters):
  sharper motion boundaries, which the warp of stage 2 needs. ``upsample="bilinear"`` gives RAFT-small's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.models.flow.corr import CorrBlock
from sschsr.models.flow.extractor import Block, Encoder, Norm, encode_pair
from sschsr.models.flow.update import GRU, UpdateBlock, bilinear_upsample, convex_upsample
from sschsr.ops.degrade import smooth
from sschsr.ops.warp import coords_grid

Preset = Literal["small", "base"]
Upsample = Literal["convex", "bilinear"]

FACTOR = 8  # the encoders halve the resolution three times
MIN_SIDE = 16  # smaller inputs are padded up to this: the coarse grid is then at least 2x2, which
# instance and batch norm need (a single pixel has no variance) and which leaves a 2-level pyramid


@dataclass(frozen=True)
class RAFTConfig:
    """Every architectural setting; :data:`PRESETS` holds the two named ones."""

    feature_dim: int
    hidden_dim: int
    context_dim: int
    corr_levels: int
    corr_radius: int
    encoder_widths: tuple[int, int, int, int]
    encoder_block: Block
    context_norm: Norm
    motion_corr_dims: tuple[int, ...]
    motion_flow_dims: tuple[int, int]
    motion_dim: int
    gru: GRU
    head_dim: int
    mask_dim: int
    upsample: Upsample
    dropout: float = 0.0


PRESETS: dict[str, RAFTConfig] = {
    "base": RAFTConfig(
        feature_dim=256, hidden_dim=128, context_dim=128, corr_levels=4, corr_radius=4,
        encoder_widths=(64, 64, 96, 128), encoder_block="residual", context_norm="batch",
        motion_corr_dims=(256, 192), motion_flow_dims=(128, 64), motion_dim=128,
        gru="sepconv", head_dim=256, mask_dim=256, upsample="convex",
    ),
    "small": RAFTConfig(
        feature_dim=128, hidden_dim=96, context_dim=64, corr_levels=4, corr_radius=3,
        encoder_widths=(32, 32, 64, 96), encoder_block="bottleneck", context_norm="none",
        motion_corr_dims=(96,), motion_flow_dims=(64, 32), motion_dim=82,
        gru="conv", head_dim=128, mask_dim=128, upsample="convex",
    ),
}  # fmt: skip


def normalise_image(x: Tensor) -> Tensor:
    """``[0, 1]`` to ``[-1, 1]`` (RAFT's ``2 * (x / 255) - 1`` for images already in [0, 1])."""
    return 2.0 * x - 1.0


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The size an input is padded to: a multiple of 8, at least :data:`MIN_SIDE`."""

    def up(n: int) -> int:
        return max(MIN_SIDE, -(-n // FACTOR) * FACTOR)

    return up(height), up(width)


def pad_to(x: Tensor, height: int, width: int) -> Tensor:
    """Replicate-pad ``(B, C, h, w)`` at the bottom and right to ``height x width``.

    Padding only at the far sides keeps pixel coordinates (and so flow values) unchanged.
    """
    ph, pw = height - x.shape[-2], width - x.shape[-1]
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def downsample_flow(flow: Tensor, factor: int = FACTOR) -> Tensor:
    """Full-resolution flow ``(B, 2, H, W)`` (H, W multiples of ``factor``) to coarse pixels
    ``(B, 2, H / factor, W / factor)``: the mean over each cell, divided by ``factor``."""
    return F.avg_pool2d(flow, factor) / factor


class RAFT(nn.Module):
    """Recurrent all-pairs field transforms: flow from ``image1`` to ``image2``.

    Args:
        preset: ``small`` (about 1.2 M parameters) or ``base`` (about 5.3 M, RAFT's architecture).
        hidden_dim, context_dim: GRU state and context channels (preset's when None).
        corr_levels: correlation pyramid levels (preset's when None).
        corr_radius: lookup radius at each level (preset's when None).
        dropout: channel dropout on the encoders' outputs while training.
        upsample: ``convex`` (learnt 9-neighbour weights) or ``bilinear`` (preset's when None).
        context_norm: normalisation of the context encoder (preset's when None; ``batch`` for base
            as in RAFT, ``none`` for small; prefer ``none`` or ``group`` with batches of one or two).
        iters: default number of recurrent updates.
        ref_blur: sigma (px) of a Gaussian applied to ``image2`` (the sharp reference) before anything else, so
            that the features compare it with the blurred, upsampled LR side like with like; 0 (the default,
            and the shipped networks'): off. In pixels of the pair the network is given (a pair shrunk by
            ``coarse_flow`` gets the same sigma, twice as much in scene units).

    Example:
        >>> net = RAFT("small").eval()
        >>> flow = net(torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53), iters=2, test_mode=True)
        >>> flow.shape
        torch.Size([1, 2, 37, 53])
    """

    def __init__(
        self,
        preset: Preset = "small",
        hidden_dim: int | None = None,
        context_dim: int | None = None,
        corr_levels: int | None = None,
        corr_radius: int | None = None,
        dropout: float = 0.0,
        upsample: Upsample | None = None,
        context_norm: Norm | None = None,
        iters: int = 12,
        ref_blur: float = 0.0,
    ):
        super().__init__()
        if ref_blur < 0:
            raise ValueError(f"ref_blur must be >= 0; got {ref_blur}")
        if preset not in PRESETS:
            raise ValueError(f"unknown RAFT preset {preset!r}; expected one of {sorted(PRESETS)}")
        given = dict(
            hidden_dim=hidden_dim, context_dim=context_dim, corr_levels=corr_levels, corr_radius=corr_radius,
            upsample=upsample, context_norm=context_norm,
        )  # fmt: skip
        cfg = replace(PRESETS[preset], dropout=dropout, **{k: v for k, v in given.items() if v is not None})
        if cfg.corr_levels < 1 or cfg.corr_radius < 0:
            raise ValueError(
                f"corr_levels must be >= 1 and corr_radius >= 0; got {cfg.corr_levels}, {cfg.corr_radius}"
            )
        self.preset, self.cfg, self.iters, self.ref_blur = preset, cfg, iters, float(ref_blur)

        # g_theta: features of both images; h_theta: the initial hidden state and the context of image 1
        self.fnet = Encoder(cfg.feature_dim, "instance", cfg.encoder_widths, cfg.encoder_block, dropout)
        self.cnet = Encoder(
            cfg.hidden_dim + cfg.context_dim, cfg.context_norm, cfg.encoder_widths, cfg.encoder_block, dropout
        )
        corr_channels = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        mask_dim = cfg.mask_dim if cfg.upsample == "convex" else 0
        self.update = UpdateBlock(
            corr_channels, cfg.hidden_dim, cfg.context_dim, cfg.motion_corr_dims, cfg.motion_flow_dims,
            cfg.motion_dim, cfg.gru, cfg.head_dim, mask_dim, FACTOR,
        )  # fmt: skip

    @property
    def config(self) -> dict:
        """The constructor arguments that rebuild this network (saved with checkpoints)."""
        c = self.cfg
        return dict(
            preset=self.preset, hidden_dim=c.hidden_dim, context_dim=c.context_dim, corr_levels=c.corr_levels,
            corr_radius=c.corr_radius, dropout=c.dropout, upsample=c.upsample, context_norm=c.context_norm,
            iters=self.iters, ref_blur=self.ref_blur,
        )  # fmt: skip

    def context(self, image1: Tensor) -> tuple[Tensor, Tensor]:
        """Initial hidden state ``tanh`` and context ``relu`` from the context encoder (RAFT, 3.1)."""
        hidden, context = self.cnet(image1).split((self.cfg.hidden_dim, self.cfg.context_dim), dim=1)
        return torch.tanh(hidden), torch.relu(context)

    def upsample_flow(self, flow: Tensor, mask: Tensor | None) -> Tensor:
        """Coarse flow ``(B, 2, H/8, W/8)`` to ``(B, 2, H, W)`` in full-resolution pixels."""
        return bilinear_upsample(flow, FACTOR) if mask is None else convex_upsample(flow, mask, FACTOR)

    def forward(
        self,
        image1: Tensor,
        image2: Tensor,
        iters: int | None = None,
        flow_init: Tensor | None = None,
        test_mode: bool = False,
    ) -> list[Tensor] | Tensor:
        """Estimate the flow from ``image1`` to ``image2`` by ``iters`` recurrent refinements.

        Args:
            image1: ``(B, 3, H, W)`` float in [0, 1], the source grid (``rgb_hsi``).
            image2: ``(B, 3, H, W)`` float in [0, 1], the target (``ref``).
            iters: recurrent updates (default ``self.iters``).
            flow_init: ``(B, 2, H, W)`` a previous estimate to start from, full-resolution pixels.
            test_mode: return only the final flow.

        Returns:
            training: list of ``iters`` flows ``(B, 2, H, W)`` (x then y, pixels), one per update;
            test mode: the last one. Pixel ``p`` of ``image1`` is at ``p + flow[p]`` in ``image2``.
        """
        if image1.ndim != 4 or image1.shape[1] != 3 or image1.shape != image2.shape:
            raise ValueError(
                f"RAFT expects image1 and image2 of the same shape (B, 3, H, W); got {tuple(image1.shape)} and {tuple(image2.shape)}"
            )
        iters = self.iters if iters is None else iters
        if iters < 1:
            raise ValueError(f"iters must be >= 1; got {iters}")
        b, _, h, w = image1.shape
        hp, wp = padded_size(h, w)
        if self.ref_blur > 0:  # compare the sharp reference with the blurred LR side like with like
            image2 = smooth(image2, self.ref_blur)
        image1 = normalise_image(pad_to(image1, hp, wp))
        image2 = normalise_image(pad_to(image2, hp, wp))

        fmap1, fmap2 = encode_pair(self.fnet, image1, image2)
        corr_fn = CorrBlock(fmap1, fmap2, self.cfg.corr_levels, self.cfg.corr_radius)
        hidden, context = self.context(image1)

        coords0 = coords_grid(b, hp // FACTOR, wp // FACTOR, device=image1.device)
        if flow_init is None:
            flow = torch.zeros_like(coords0)
        else:
            if flow_init.shape != (b, 2, h, w):
                raise ValueError(f"flow_init must be {(b, 2, h, w)}; got {tuple(flow_init.shape)}")
            flow = downsample_flow(pad_to(flow_init.float(), hp, wp))

        predictions = []
        for t in range(iters):
            flow = flow.detach()  # as RAFT: no gradient through the lookup positions across updates
            corr = corr_fn(coords0 + flow)  # C(x + F(t)): correlation around the current match
            hidden, mask, delta = self.update(hidden, context, corr, flow)
            flow = flow + delta.float()  # F(t+1) = F(t) + dF(t)
            if test_mode and t < iters - 1:
                continue
            predictions.append(self.upsample_flow(flow, mask)[..., :h, :w])
        return predictions[-1] if test_mode else predictions


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def preset_config(preset: Preset) -> dict:
    """The architecture of a preset as a plain dict (for docs and reports)."""
    return asdict(PRESETS[preset])
