"""Attention fusion of HSI and aggregated reference features (DESIGN.md, method step 5).

Restormer-style blocks working across channels ("transposed" attention, a ``C_h x C_h`` map per head), so
cost is linear in the number of pixels:

- :class:`LayerNorm2d`: LayerNorm over channels, per pixel.
- :class:`SMSA`: spectral-wise multi-head self-attention. Q, K, V from 1x1 then depthwise 3x3 convs;
  Q and K L2-normalised over pixels; ``softmax(t * Q K^T) V`` with a learned temperature ``t`` per head;
  plus the paper's positional branch (two depthwise 3x3 convs on V).
- :class:`RMCA`: reference-guided multi-head cross-attention. Q, K and V from the HSI features, V multiplied
  elementwise by ``A_ref_l`` before the attention.
- :class:`GDFN`: gated depthwise feed-forward network.
- :class:`FusionBlock`: ``[LN, S-MSA, LN, GDFN, LN, R-MCA, LN, GDFN]``, each with a residual connection.
  Without R-MCA (the ablation) the cross-attention half is dropped (``rmca_replacement="concat"``, ``A_ref``
  then joins the level's input) or the cross-attention alone becomes a self-attention of the same size over
  ``LN(x) + LN(A_ref)`` (``"self_attention"``: the mechanism removed, the reference and every parameter kept).
- :class:`FusionLevel`: embedding conv, N blocks, then (except at the finest level) a x2 pixel-shuffle
  upsampling, and an output conv to the next level's width (or to the bands).

The attention map is only ``C_h x C_h``; ``F.scaled_dot_product_attention`` would treat the pixels as its
head dimension (thousands), beyond its fused kernels' limits, so the core is two matrix products.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "GDFN", "RMCA", "RMCA_REPLACEMENTS", "SMSA", "FusionBlock", "FusionLevel", "LayerNorm2d", "RMCAReplacement",
    "transposed_attention",
]  # fmt: skip

# what takes R-MCA's place in the ablation without it (``use_rmca=False``): ``concat`` drops the cross-attention
# half of each block (attention, norms and its FFN) and concatenates ``A_ref`` to the level's input (the
# ablation of the records before ``self_attention`` existed); ``self_attention`` replaces the cross-attention
# alone by a spectral self-attention of the same size over ``LN(x) + LN(A_ref)``, keeping its FFN
RMCAReplacement = Literal["concat", "self_attention"]
RMCA_REPLACEMENTS: tuple[str, ...] = get_args(RMCAReplacement)


def transposed_attention(q: Tensor, k: Tensor, v: Tensor, temperature: Tensor) -> Tensor:
    """Attention across channels: ``softmax(t * norm(Q) norm(K)^T) V`` with a ``C_h x C_h`` map.

    Args:
        q, k, v: ``(B, heads, C_h, N)``, ``N`` pixels.
        temperature: broadcastable to ``(B, heads, 1, 1)``, e.g. ``(heads, 1, 1)``.

    Returns:
        ``(B, heads, C_h, N)``. Permuting the pixels of ``q, k, v`` permutes the output the same way.
    """
    q = F.normalize(q, dim=-1)
    k = F.normalize(k, dim=-1)
    attn = (q @ k.transpose(-2, -1)) * temperature
    return attn.softmax(dim=-1) @ v


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``(B, C, H, W)``, per pixel (Restormer's WithBias variant)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _heads(x: Tensor, heads: int) -> Tensor:
    return rearrange(x, "b (head c) h w -> b head c (h w)", head=heads)


def _positional(dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
        nn.GELU(),
        nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
    )


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.dim, self.heads = dim, heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.pos_emb = _positional(dim)

    def qkv_maps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(B, dim, H, W)`` -> Q, K, V each ``(B, dim, H, W)``."""
        return self.qkv_dw(self.qkv(x)).chunk(3, dim=1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        h, w = q.shape[-2:]
        out = transposed_attention(
            _heads(q, self.heads), _heads(k, self.heads), _heads(v, self.heads), self.temperature
        )
        return self.project_out(rearrange(out, "b head c (h w) -> b (head c) h w", h=h, w=w))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.heads}"


class SMSA(_Attention):
    """Spectral-wise multi-head self-attention.

    Args:
        dim: channels; heads: attention heads (``dim`` divisible by it); bias: of the convs.

    Shape:
        ``(B, dim, H, W) -> (B, dim, H, W)``.
    """

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__(dim, heads, bias)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv_maps(x)
        return self.attend(q, k, v) + self.pos_emb(v)


class RMCA(_Attention):
    """Reference-guided multi-head cross-attention: ``V <- V * A_ref`` then transposed attention.

    Shape:
        ``forward(x (B, dim, H, W), a_ref (B, dim, H, W)) -> (B, dim, H, W)``. With ``a_ref = 0`` only the
        positional branch (on the HSI's V) remains.
    """

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__(dim, heads, bias)

    def forward(self, x: Tensor, a_ref: Tensor) -> Tensor:
        if a_ref.shape != x.shape:
            raise ValueError(
                f"RMCA expects a_ref of the shape of x {tuple(x.shape)}; got {tuple(a_ref.shape)}"
            )
        q, k, v = self.qkv_maps(x)
        return self.attend(q, k, v * a_ref) + self.pos_emb(v)


class GDFN(nn.Module):
    """Gated depthwise feed-forward: ``W_out(gelu(dw(W_1 x)) * dw(W_2 x))``; ``(B, dim, H, W)`` to the same."""

    def __init__(self, dim: int, expansion: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dw(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class FusionBlock(nn.Module):
    """``[LN, S-MSA, LN, GDFN, LN, R-MCA, LN, GDFN]`` with residual connections.

    Args:
        dim, heads: width and attention heads.
        expansion: GDFN hidden width over ``dim`` (Restormer: 2.66).
        use_rmca: False removes the reference-guided cross-attention, as ``rmca_replacement`` says.
        rmca_replacement: without R-MCA, ``concat`` drops the cross-attention half (``a_ref`` is then
            ignored: the caller concatenates it to the level's input); ``self_attention`` keeps the block's
            layout and parameter count, with ``x + S-MSA(LN(x) + LN(a_ref))`` in the cross-attention's place.

    Shape:
        ``forward(x (B, dim, H, W), a_ref (B, dim, H, W) | None) -> (B, dim, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        expansion: float = 2.66,
        use_rmca: bool = True,
        bias: bool = False,
        rmca_replacement: RMCAReplacement = "concat",
    ):
        super().__init__()
        if rmca_replacement not in RMCA_REPLACEMENTS:
            raise ValueError(
                f"unknown rmca_replacement {rmca_replacement!r}; expected one of {list(RMCA_REPLACEMENTS)}"
            )
        self.use_rmca = use_rmca
        self.ref_self_attention = not use_rmca and rmca_replacement == "self_attention"
        self.norm1, self.smsa = LayerNorm2d(dim), SMSA(dim, heads, bias)
        self.norm2, self.ffn1 = LayerNorm2d(dim), GDFN(dim, expansion, bias)
        if use_rmca or self.ref_self_attention:
            self.norm3, self.norm_ref = LayerNorm2d(dim), LayerNorm2d(dim)
            if use_rmca:
                self.rmca = RMCA(dim, heads, bias)
            else:  # the same parameters as RMCA: Q, K, V, projection and positional branch
                self.ref_smsa = SMSA(dim, heads, bias)
            self.norm4, self.ffn2 = LayerNorm2d(dim), GDFN(dim, expansion, bias)

    @property
    def takes_reference(self) -> bool:
        """Whether ``forward`` reads ``a_ref``."""
        return self.use_rmca or self.ref_self_attention

    def forward(self, x: Tensor, a_ref: Tensor | None = None) -> Tensor:
        x = x + self.smsa(self.norm1(x))
        x = x + self.ffn1(self.norm2(x))
        if self.takes_reference:
            if a_ref is None:
                raise ValueError("FusionBlock with R-MCA (or its self-attention replacement) needs a_ref")
            if self.use_rmca:
                x = x + self.rmca(self.norm3(x), self.norm_ref(a_ref))
            else:
                x = x + self.ref_smsa(self.norm3(x) + self.norm_ref(a_ref))
            x = x + self.ffn2(self.norm4(x))
        return x


class FusionLevel(nn.Module):
    """One level of the decoder: embed, N fusion blocks, optional x2 upsampling, output conv.

    Args:
        in_channels: channels of the input (``[F_hsi_l, F_sr_(l-1)]`` and whatever else is concatenated).
        dim: working width (the width of ``A_ref_l``).
        out_channels: width of the output (the next level's ``F_sr`` or the bands).
        blocks, heads: number of :class:`FusionBlock` and their heads.
        upsample: x2 by conv + pixel shuffle before the output conv (all levels but the finest).
        use_rmca, expansion, rmca_replacement: see :class:`FusionBlock`.

    Shape:
        ``forward(x (B, in_channels, H, W), a_ref (B, dim, H, W) | None)`` -> ``(B, out_channels, sH, sW)``,
        ``s = 2`` with ``upsample`` else 1.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        out_channels: int,
        blocks: int,
        heads: int,
        upsample: bool,
        use_rmca: bool = True,
        expansion: float = 2.66,
        rmca_replacement: RMCAReplacement = "concat",
    ):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList(
            FusionBlock(dim, heads, expansion, use_rmca, rmca_replacement=rmca_replacement)
            for _ in range(blocks)
        )
        self.up = (
            nn.Sequential(nn.Conv2d(dim, 4 * dim, 3, padding=1, bias=False), nn.PixelShuffle(2))
            if upsample
            else None
        )
        self.out = nn.Conv2d(dim, out_channels, 3, padding=1, bias=False)

    def forward(self, x: Tensor, a_ref: Tensor | None = None) -> Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x, a_ref)
        if self.up is not None:
            x = self.up(x)
        return self.out(x)
