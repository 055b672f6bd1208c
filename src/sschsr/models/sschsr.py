"""SSC-HSR, the composed network (DESIGN.md, "The method, in tensors").

    flow      = flow_net(rgb_hsi, ref)                       stage 1 (zero without a flow net)
    ref_warp0 = flow_warp(ref, flow, border)
    ref_warp  = warpnet(rgb_hsi, ref, ref_warp0)              stage 2 (ref_warp0 without one)
    F_hsi     = HSIEncoder(lr_up)                             3 levels, coarse to fine
    C, S      = GAM(MatchingEncoder(rgb_hsi), MatchingEncoder(ref_warp))      at H/4
    F_ref     = TextureEncoder(ref_warp)                    ([ref_warp, ref_warp0] with texture_input="both")
    for l = 1, 2, 3 (H/4, H/2, H):
        A_ref_l = IDFA_l(F_ref_l, C, S, F_hsi_l, F_sr_(l-1))
        F_sr_l  = FusionLevel_l([F_hsi_l, F_sr_(l-1)], A_ref_l)   (upsampled to the next level)
    sr        = F_sr_3 + lr_up                                 head="residual" (the paper)
    sr        = lr_up * (1 + g) + r,  [g, r] = F_sr_3           head="modulated"

The ``modulated`` head adds a per-pixel gain ``g (B, 1, H, W)`` of the upsampled spectrum to the paper's
residual ``r``: detail proportional to the local spectrum leaves its spectral angle as it is, and the gain
alone (computed from the HR cube) recovers 31-42 dB on the CAVE test scenes at x8 where bicubic has 24-30
(``experiments/oracle_gain.py``), so most of the detail the reference brings is one channel, not ``C``.

Levels are listed coarse to fine. Presets: ``paper`` has the official decoder's widths (256/128/64,
4/3/2 blocks, 8/4/1 heads; the SR branch about 22 M parameters, its decoder 17 M); ``lite`` is about a tenth
of its size for CPU work and quick experiments. ``conf/experiment/paper.yaml`` builds the whole official
network (27.5 M with the base RAFT and the official WarpNet; docs/paper.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.models.aggregation import GUIDES, IDFA, Guide
from sschsr.models.encoders import HSIEncoder, MatchingEncoder, TextureEncoder
from sschsr.models.fusion import RMCA_REPLACEMENTS, FusionLevel, RMCAReplacement
from sschsr.models.matching import GAM, Matching, patch_descriptors
from sschsr.models.warpnet import warp_cues
from sschsr.ops.warp import flow_warp

__all__ = [
    "HEADS", "PRESETS", "SSCHSR", "TEXTURE_INPUTS", "Head", "Preset", "SSCHSRConfig", "TextureInput",
    "build_fusion_levels", "count_parameters", "pad_to_multiple", "reconstruct",
]  # fmt: skip

Preset = Literal["paper", "lite"]
Head = Literal["residual", "modulated"]
TextureInput = Literal["repair", "both"]
TEXTURE_INPUTS: tuple[str, ...] = get_args(TextureInput)
HEADS: dict[str, int] = {"residual": 0, "modulated": 1}  # channels the head needs besides the bands
MULTIPLE = 4  # two stride-2 stages between the finest and the coarsest level


@dataclass(frozen=True)
class SSCHSRConfig:
    """The architecture of the SR branch (the flow net and WarpNet are passed in built)."""

    width: int  # c: channels at full resolution; 2c at H/2, 4c at H/4
    hsi_blocks: tuple[int, int, int]  # residual blocks of the HSI encoder, fine to coarse
    match_width: int  # channels of the matching descriptors at H/4
    blocks: tuple[int, int, int]  # fusion blocks per level, coarse to fine
    heads: tuple[int, int, int]  # attention heads per level, coarse to fine
    expansion: float  # GDFN hidden width over dim
    offset_groups: int  # of the deformable convolutions

    @property
    def dims(self) -> tuple[int, int, int]:
        """Widths per level, coarse to fine."""
        return (4 * self.width, 2 * self.width, self.width)


PRESETS: dict[str, SSCHSRConfig] = {
    # the official decoder (HSIDecoder(256)): 17 M parameters; HSI encoder about 3.4 M; 22 M the SR branch
    "paper": SSCHSRConfig(
        width=64, hsi_blocks=(2, 2, 2), match_width=256, blocks=(4, 3, 2), heads=(8, 4, 1), expansion=2.66,
        offset_groups=8,
    ),
    # about 1.3 M for the SR branch; with a small RAFT (1.2 M) and WarpNet (0.23 M) under 3 M in all
    "lite": SSCHSRConfig(
        width=24, hsi_blocks=(1, 1, 1), match_width=64, blocks=(2, 2, 1), heads=(4, 2, 1), expansion=2.0,
        offset_groups=4,
    ),
}  # fmt: skip


def build_fusion_levels(
    n_bands: int,
    cfg: SSCHSRConfig,
    use_rmca: bool,
    concat_ref: bool,
    head: Head = "residual",
    rmca_replacement: RMCAReplacement = "concat",
) -> nn.ModuleList:
    """The three :class:`FusionLevel` of the decoder, coarse to fine.

    Level ``l`` takes ``[F_hsi_l, F_sr_(l-1)]`` (no ``F_sr`` at the coarsest level), plus ``A_ref_l`` when
    ``concat_ref``; it returns the next level's ``F_sr`` (upsampled x2) or, at the finest, what
    :func:`reconstruct` takes for ``head``: ``n_bands`` channels, plus the gain for ``modulated``.
    ``rmca_replacement``: what the blocks put in R-MCA's place without it (:class:`FusionBlock`).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
    dims = cfg.dims
    levels = []
    for i, dim in enumerate(dims):
        in_channels = dim + (dim if i else 0) + (dim if concat_ref else 0)
        last = i == len(dims) - 1
        out_channels = n_bands + HEADS[head] if last else dims[i + 1]
        levels.append(
            FusionLevel(
                in_channels,
                dim,
                out_channels,
                cfg.blocks[i],
                cfg.heads[i],
                not last,
                use_rmca,
                cfg.expansion,
                rmca_replacement=rmca_replacement,
            )
        )
    # the last conv starts at zero: with the global residual the untrained network is bicubic, and
    # training adds detail from there instead of first unlearning noise
    nn.init.zeros_(levels[-1].out.weight)
    return nn.ModuleList(levels)


def reconstruct(x: Tensor, lr_up: Tensor, head: Head = "residual") -> Tensor:
    """The output from the decoder's last level ``x`` and the upsampled input ``lr_up (B, C, H, W)``.

    ``residual``: ``x (B, C, H, W)``, ``sr = lr_up + x``. ``modulated``: ``x (B, 1 + C, H, W)`` is a gain
    ``g`` and a residual ``r``, ``sr = lr_up * (1 + g) + r``. A zero ``x`` gives ``lr_up`` with either head.

    Example:
        >>> lr_up = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
        >>> reconstruct(torch.tensor([0.5, 0.0, 0.1]).view(1, 3, 1, 1), lr_up, "modulated").flatten().tolist()
        [1.5, 3.0999999046325684]
    """
    if head == "residual":
        return lr_up + x
    if head == "modulated":
        return lr_up * (1 + x[:, :1]) + x[:, 1:]
    raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")


def pad_to_multiple(x: Tensor, multiple: int = MULTIPLE) -> Tensor:
    """Replicate the far (bottom, right) edges up to a multiple; crop back with ``[..., :H, :W]``."""
    ph, pw = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Parameters per direct child, plus ``total`` (all) and ``trainable`` (``requires_grad``).

    Example:
        >>> count_parameters(nn.Sequential(nn.Linear(2, 3)))
        {'0': 9, 'total': 9, 'trainable': 9}
    """
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in module.named_children()}
    counts["total"] = sum(p.numel() for p in module.parameters())
    counts["trainable"] = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return counts


class SSCHSR(nn.Module):
    """Unaligned-RGB-guided HSI super-resolution (SSC-HSR).

    Args:
        n_bands: spectral bands ``C``.
        preset: ``paper`` (the official widths) or ``lite`` (see :data:`PRESETS`).
        flow_net: stage-1 flow network, called as ``flow_net(rgb_hsi, ref, iters=..., test_mode=True)``
            (e.g. :class:`sschsr.models.flow.RAFT`); None: zero flow (an already aligned reference, tests).
        warpnet: stage-2 network ``warpnet(rgb_hsi, ref, ref_warp0, extra)`` (e.g.
            :class:`sschsr.models.warpnet.WarpNet`; ``extra`` is ``warp_cues(flow)`` when it takes extra
            channels); None: ``ref_warp = ref_warp0``.
        use_warpnet: False skips (and does not hold) ``warpnet``: the ablation without stage 2.
        iterative: guide each finer level's offsets with the coarser fusion output (IDFA's "iterative").
        iterative_guide: how (:class:`sschsr.models.aggregation.IDFA`'s ``guide``): ``concat`` (the paper's),
            ``residual`` (added to the HSI features by a zero-initialised conv: starts as the ablation) or
            ``detached`` (``concat`` with no gradient from the offsets into the coarser output).
        use_rmca: False removes the cross-attention, as ``rmca_replacement`` says; either way the ablation
            removes the mechanism, not the reference.
        rmca_replacement: without R-MCA, ``concat`` (the default, and the ablation of the earlier records)
            drops the cross-attention half of every block (attention and its FFN) and concatenates ``A_ref_l``
            to the level's input; ``self_attention`` (the paper's ablation as ``conf/ablation/no_rmca.yaml``
            runs it) puts a spectral self-attention of the same size over ``LN(x) + LN(A_ref_l)`` in the
            cross-attention's place and keeps the rest: the same parameters as the full network.
        matching: ``local`` (window of ``match_radius`` px at H/4 around each position; linear memory) or
            ``global`` (the paper; every position, memory bounded by chunking).
        match_radius: local window half side at H/4.
        flow_iters: recurrent updates of the flow net.
        freeze_flow: no gradient to the flow net, which then stays in eval mode.
        head: ``residual`` (the paper: ``sr = lr_up + r``) or ``modulated`` (``sr = lr_up * (1 + g) + r``;
            see :func:`reconstruct`).
        texture_input: what the texture encoder (the source of the detail IDFA aggregates) sees: ``repair``
            (the paper: WarpNet's output ``ref_warp``) or ``both`` (``[ref_warp, ref_warp0]``, 6 channels:
            the repair and the plain warp, so that where WarpNet replaces texture the SR branch still has
            it). Without WarpNet the two are one image and the encoder takes it once (3 channels). The
            matching encoder sees ``ref_warp`` either way.

    Shape:
        ``forward(lr_up (B, C, H, W), ref (B, 3, H, W), rgb_hsi (B, 3, H, W))`` with float inputs in [0, 1]
        (and optionally ``flow (B, 2, H, W)``: stage 1's flow given, not estimated) returns a dict of
        ``sr (B, C, H, W)``, ``ref_warp (B, 3, H, W)``, ``ref_warp0 (B, 3, H, W)``, ``flow (B, 2, H, W)``
        (x, y pixels; ``rgb_hsi[p] ~ ref[p + flow[p]]``) and the matching result at the padded ``H/4``
        grid: ``match (B, 2, ceil(H/4), ceil(W/4))`` offsets and ``match_score (B, 1, ...)``. Any ``H, W``:
        the SR branch pads the far edges to a multiple of 4 and crops back.

    Example:
        >>> import torch
        >>> net = SSCHSR(8, preset="lite")
        >>> out = net(torch.rand(1, 8, 20, 24), torch.rand(1, 3, 20, 24), torch.rand(1, 3, 20, 24))
        >>> out["sr"].shape, out["flow"].abs().max().item()
        (torch.Size([1, 8, 20, 24]), 0.0)
    """

    def __init__(
        self,
        n_bands: int,
        preset: Preset = "lite",
        flow_net: nn.Module | None = None,
        warpnet: nn.Module | None = None,
        use_warpnet: bool = True,
        iterative: bool = True,
        iterative_guide: Guide = "concat",
        use_rmca: bool = True,
        matching: Matching = "local",
        match_radius: int = 4,
        flow_iters: int = 12,
        freeze_flow: bool = True,
        head: Head = "residual",
        texture_input: TextureInput = "repair",
        rmca_replacement: RMCAReplacement = "concat",
    ):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown SSCHSR preset {preset!r}; expected one of {sorted(PRESETS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
        if texture_input not in TEXTURE_INPUTS:
            raise ValueError(
                f"unknown texture_input {texture_input!r}; expected one of {list(TEXTURE_INPUTS)}"
            )
        if rmca_replacement not in RMCA_REPLACEMENTS:
            raise ValueError(
                f"unknown rmca_replacement {rmca_replacement!r}; expected one of {list(RMCA_REPLACEMENTS)}"
            )
        if iterative_guide not in GUIDES:
            raise ValueError(f"unknown iterative_guide {iterative_guide!r}; expected one of {list(GUIDES)}")
        if n_bands < 1:
            raise ValueError(f"n_bands must be positive; got {n_bands}")
        cfg = PRESETS[preset]
        self.n_bands, self.preset, self.cfg = n_bands, preset, cfg
        self.use_warpnet, self.iterative, self.use_rmca = use_warpnet, iterative, use_rmca
        self.iterative_guide, self.rmca_replacement = iterative_guide, rmca_replacement
        self.flow_iters, self.freeze_flow, self.head = flow_iters, freeze_flow, head
        # test-time refinement of the flow network's output, ``(flow, rgb_hsi, ref) -> flow`` (e.g.
        # :class:`sschsr.ops.flow_refine.FlowRefiner`; set by :func:`sschsr.pipeline.with_flow_refinement`);
        # not a part of the network: no weights, not in ``config``, never applied in training mode
        self.flow_refiner: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None
        # test-time running of the flow network, ``(flow_fn, rgb_hsi, ref) -> flow`` with ``flow_fn(rgb_hsi,
        # ref)`` the flow network's call (e.g. :class:`sschsr.ops.coarse_flow.CoarseFlow`, which runs it on
        # the pair shrunk; set by :func:`sschsr.pipeline.with_coarse_flow`); as ``flow_refiner``, never in
        # training mode
        self.coarse_flow: Callable[[Callable[[Tensor, Tensor], Tensor], Tensor, Tensor], Tensor] | None = None

        self.flow_net = flow_net
        if flow_net is not None and freeze_flow:
            flow_net.requires_grad_(False)
            flow_net.eval()
        self.warpnet = warpnet if use_warpnet else None
        self.texture_input = texture_input

        dims = cfg.dims
        self.hsi_encoder = HSIEncoder(n_bands, cfg.width, cfg.hsi_blocks)
        self.match_encoder = MatchingEncoder(cfg.match_width)
        self.texture_encoder = TextureEncoder(cfg.width, in_channels=6 if self.texture_both else 3)
        self.matching = GAM(matching, radius=match_radius)
        self.aggregation = nn.ModuleList(
            IDFA(dim, dim, dim if i else None, iterative, iterative_guide, offset_groups=cfg.offset_groups)
            for i, dim in enumerate(dims)
        )
        self.fusion = build_fusion_levels(
            n_bands,
            cfg,
            use_rmca=use_rmca,
            concat_ref=self.concat_ref,
            head=head,
            rmca_replacement=rmca_replacement,
        )

    @property
    def config(self) -> dict:
        """The SR branch's constructor arguments and architecture (for checkpoints and reports)."""
        return dict(
            n_bands=self.n_bands, preset=self.preset, use_warpnet=self.use_warpnet, iterative=self.iterative,
            iterative_guide=self.iterative_guide, use_rmca=self.use_rmca, matching=self.matching.matching,
            match_radius=self.matching.radius, flow_iters=self.flow_iters, freeze_flow=self.freeze_flow,
            head=self.head, texture_input=self.texture_input, rmca_replacement=self.rmca_replacement,
            architecture=asdict(self.cfg),
        )  # fmt: skip

    @property
    def concat_ref(self) -> bool:
        """Whether ``A_ref_l`` joins each level's input (the ablation without R-MCA by ``concat``)."""
        return not self.use_rmca and self.rmca_replacement == "concat"

    @property
    def texture_both(self) -> bool:
        """Whether the texture encoder takes both references: only when they can differ (without WarpNet
        ``ref_warp`` is ``ref_warp0``)."""
        return self.texture_input == "both" and self.warpnet is not None

    def train(self, mode: bool = True) -> SSCHSR:
        super().train(mode)
        if self.flow_net is not None and self.freeze_flow:
            self.flow_net.eval()  # a frozen estimator keeps its inference behaviour (norms, dropout)
        return self

    def estimate_flow(self, rgb_hsi: Tensor, ref: Tensor, refine: bool = True) -> Tensor:
        """Stage 1: ``(B, 2, H, W)`` flow from the grid of ``rgb_hsi`` into ``ref`` (zero without a flow net),
        run through ``coarse_flow`` and refined by ``flow_refiner`` in evaluation mode when they are set (the
        latter when ``refine``)."""
        b, _, h, w = rgb_hsi.shape
        if self.flow_net is None:
            return rgb_hsi.new_zeros(b, 2, h, w)

        def flow_fn(image1: Tensor, image2: Tensor) -> Tensor:
            return self.flow_net(image1, image2, iters=self.flow_iters, test_mode=True)

        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_flow):
            if self.coarse_flow is None or self.training:
                flow = flow_fn(rgb_hsi, ref)
            else:
                flow = self.coarse_flow(flow_fn, rgb_hsi, ref)
        return self.refine_flow(flow, rgb_hsi, ref) if refine else flow

    def refine_flow(self, flow: Tensor, rgb_hsi: Tensor, ref: Tensor) -> Tensor:
        """``flow`` refined by ``flow_refiner`` (evaluation mode only), or as it is."""
        if self.flow_refiner is None or self.training:
            return flow
        return self.flow_refiner(flow, rgb_hsi, ref).to(flow.dtype)

    def repair(self, rgb_hsi: Tensor, ref: Tensor, ref_warp0: Tensor, flow: Tensor) -> Tensor:
        """Stage 2: ``ref_warp (B, 3, H, W)``, or ``ref_warp0`` without a WarpNet."""
        if self.warpnet is None:
            return ref_warp0
        extra = None
        if getattr(self.warpnet, "extra_channels", 0):
            extra = warp_cues(flow, tuple(ref.shape[-2:]))
        return self.warpnet(rgb_hsi, ref, ref_warp0, extra)

    def match_descriptors(self, rgb: Tensor) -> Tensor:
        """The unit-norm patch descriptors GAM compares: ``(B, 3, H, W)`` -> ``(B, 9D, ceil(H/4), ceil(W/4))``
        (for a loss on true correspondences, :func:`sschsr.losses.correspondence_nce`)."""
        return patch_descriptors(self.match_encoder(pad_to_multiple(rgb)), self.matching.patch_size)

    def super_resolve(
        self, lr_up: Tensor, rgb_hsi: Tensor, ref_warp: Tensor, ref_warp0: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The SR branch on aligned inputs: ``sr (B, C, H, W)``, match offsets and scores at ``H/4``.

        ``ref_warp0 (B, 3, H, W)``, the plain warp, is required when the texture encoder takes both
        references (``texture_input="both"`` with a WarpNet) and unused otherwise."""
        h, w = lr_up.shape[-2:]
        lr_pad, rgb_pad, ref_pad = (pad_to_multiple(t) for t in (lr_up, rgb_hsi, ref_warp))
        texture = ref_pad
        if self.texture_both:
            if ref_warp0 is None:
                raise ValueError("SSCHSR with texture_input='both' needs ref_warp0 besides ref_warp")
            texture = torch.cat([ref_pad, pad_to_multiple(ref_warp0)], dim=1)

        f_hsi = self.hsi_encoder(lr_pad)
        offset, score = self.matching(self.match_encoder(rgb_pad), self.match_encoder(ref_pad))
        f_ref = self.texture_encoder(texture)

        x = None  # F_sr of the previous (coarser) level, at this level's resolution
        for idfa, level, fh, fr in zip(self.aggregation, self.fusion, f_hsi, f_ref, strict=True):
            a_ref = idfa(fr, offset, score, fh, x)
            inputs = [fh] if x is None else [fh, x]
            if self.concat_ref:
                inputs.append(a_ref)
            x = level(torch.cat(inputs, dim=1), None if self.concat_ref else a_ref)
        sr = reconstruct(x[..., :h, :w], lr_up, self.head)  # the network predicts the detail bicubic lacks
        return sr, offset, score

    def forward(
        self, lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor, flow: Tensor | None = None
    ) -> dict[str, Tensor]:
        if lr_up.ndim != 4 or lr_up.shape[1] != self.n_bands:
            raise ValueError(
                f"SSCHSR({self.n_bands} bands) expects lr_up (B, {self.n_bands}, H, W); got {tuple(lr_up.shape)}"
            )
        expected = (lr_up.shape[0], 3, *lr_up.shape[-2:])
        for name, t in (("ref", ref), ("rgb_hsi", rgb_hsi)):
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"SSCHSR expects {name} {expected} (the grid of lr_up); got {tuple(t.shape)}"
                )
        if flow is None:
            flow = self.estimate_flow(rgb_hsi, ref)
        elif tuple(flow.shape) != (lr_up.shape[0], 2, *lr_up.shape[-2:]):
            raise ValueError(
                f"SSCHSR expects flow (B, 2, H, W) on the grid of lr_up; got {tuple(flow.shape)}"
            )
        ref_warp0 = flow_warp(ref, flow.to(ref.dtype), padding_mode="border")
        ref_warp = self.repair(rgb_hsi, ref, ref_warp0, flow)
        sr, match, match_score = self.super_resolve(lr_up, rgb_hsi, ref_warp, ref_warp0)
        return dict(
            sr=sr, ref_warp=ref_warp, ref_warp0=ref_warp0, flow=flow, match=match, match_score=match_score
        )
