"""The recurrent update operator of the RAFT-style flow model (Teed & Deng 2020, section 3.3).

One iteration: encode the correlation features and the current flow (motion features), concatenate the
context features, update the hidden state with a convolutional GRU, and read out a flow residual
``dF`` and, for convex upsampling, the 9-neighbour weights of every fine pixel.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GRU = Literal["sepconv", "conv"]


class MotionEncoder(nn.Module):
    """Correlation features and flow to motion features; the flow itself is appended (RAFT).

    Args:
        corr_channels: channels of the correlation lookup, ``levels * (2r+1)^2``.
        corr_dims: widths of the correlation branch (first conv 1x1, the rest 3x3).
        flow_dims: widths of the flow branch (7x7 then 3x3).
        out_dim: output channels, the last two being the flow.

    Shape:
        ``corr (B, corr_channels, H, W), flow (B, 2, H, W) -> (B, out_dim, H, W)``.
    """

    def __init__(
        self, corr_channels: int, corr_dims: tuple[int, ...], flow_dims: tuple[int, int], out_dim: int
    ):
        super().__init__()
        layers, c = [], corr_channels
        for i, d in enumerate(corr_dims):
            layers += [nn.Conv2d(c, d, 1 if i == 0 else 3, padding=0 if i == 0 else 1), nn.ReLU(inplace=True)]
            c = d
        self.corr = nn.Sequential(*layers)
        f1, f2 = flow_dims
        self.flow = nn.Sequential(
            nn.Conv2d(2, f1, 7, padding=3),
            nn.ReLU(inplace=True),
            nn.Conv2d(f1, f2, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(nn.Conv2d(c + f2, out_dim - 2, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, corr: Tensor, flow: Tensor) -> Tensor:
        motion = self.fuse(torch.cat((self.corr(corr), self.flow(flow)), dim=1))
        return torch.cat((motion, flow), dim=1)


class ConvGRU(nn.Module):
    """Convolutional GRU cell (fully connected layers of a GRU replaced by convolutions).

    ``z = sigmoid(Conv([h, x]))``, ``r = sigmoid(Conv([h, x]))``, ``q = tanh(Conv([r * h, x]))``,
    ``h = (1 - z) * h + z * q``.
    """

    def __init__(self, hidden_dim: int, input_dim: int, kernel: tuple[int, int] = (3, 3)):
        super().__init__()
        pad = (kernel[0] // 2, kernel[1] // 2)
        self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel, padding=pad)
        self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel, padding=pad)
        self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, kernel, padding=pad)

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        hx = torch.cat((h, x), dim=1)
        z = torch.sigmoid(self.convz(hx))
        r = torch.sigmoid(self.convr(hx))
        q = torch.tanh(self.convq(torch.cat((r * h, x), dim=1)))
        return (1 - z) * h + z * q


class SepConvGRU(nn.Module):
    """Two GRU cells, 1x5 then 5x1: a large receptive field at the cost of two small kernels (RAFT)."""

    def __init__(self, hidden_dim: int, input_dim: int):
        super().__init__()
        self.horizontal = ConvGRU(hidden_dim, input_dim, (1, 5))
        self.vertical = ConvGRU(hidden_dim, input_dim, (5, 1))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        return self.vertical(self.horizontal(h, x), x)


class FlowHead(nn.Module):
    """Hidden state to a flow residual ``dF``: two 3x3 convolutions."""

    def __init__(self, hidden_dim: int, mid_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(hidden_dim, mid_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_dim, 2, 3, padding=1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class MaskHead(nn.Module):
    """Hidden state to convex-upsampling weights: ``(B, 9 * factor^2, H, W)`` logits.

    The logits are scaled by 0.25, as in RAFT, to damp their gradients.
    """

    def __init__(self, hidden_dim: int, mid_dim: int, factor: int = 8):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(hidden_dim, mid_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_dim, 9 * factor**2, 1),
        )

    def forward(self, h: Tensor) -> Tensor:
        return 0.25 * self.net(h)


class UpdateBlock(nn.Module):
    """One recurrent update: ``(h, context, corr, F) -> (h', mask, dF)``.

    Args:
        corr_channels: channels of the correlation lookup.
        hidden_dim: GRU state channels.
        context_dim: context feature channels (the GRU's input besides the motion features).
        corr_dims, flow_dims, motion_dim: the :class:`MotionEncoder`.
        gru: ``sepconv`` (1x5 then 5x1, RAFT) or ``conv`` (one 3x3 cell, RAFT-small).
        head_dim: width of the flow head.
        mask_dim: width of the mask head; 0 for no mask (bilinear upsampling).
        factor: upsampling factor of the mask.

    Shape:
        ``h (B, hidden_dim, H, W)``, ``context (B, context_dim, H, W)``, ``corr (B, corr_channels, H, W)``,
        ``flow (B, 2, H, W)`` -> ``h``, ``mask (B, 9 * factor^2, H, W)`` or None, ``delta (B, 2, H, W)``.
    """

    def __init__(
        self,
        corr_channels: int,
        hidden_dim: int,
        context_dim: int,
        corr_dims: tuple[int, ...],
        flow_dims: tuple[int, int],
        motion_dim: int,
        gru: GRU,
        head_dim: int,
        mask_dim: int,
        factor: int = 8,
    ):
        super().__init__()
        self.encoder = MotionEncoder(corr_channels, corr_dims, flow_dims, motion_dim)
        gru_cls = {"sepconv": SepConvGRU, "conv": ConvGRU}[gru]
        self.gru = gru_cls(hidden_dim, context_dim + motion_dim)
        self.flow_head = FlowHead(hidden_dim, head_dim)
        self.mask_head = MaskHead(hidden_dim, mask_dim, factor) if mask_dim > 0 else None

    def forward(
        self, h: Tensor, context: Tensor, corr: Tensor, flow: Tensor
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        motion = self.encoder(corr, flow)
        h = self.gru(h, torch.cat((context, motion), dim=1))
        delta = self.flow_head(h)
        mask = self.mask_head(h) if self.mask_head is not None else None
        return h, mask, delta


def convex_upsample(flow: Tensor, mask: Tensor, factor: int = 8) -> Tensor:
    """Upsample a coarse flow: each fine pixel is a convex combination of its cell's 3x3 coarse neighbours.

    The weights are ``softmax`` over the 9 neighbours of ``mask``; values are multiplied by ``factor``
    (coarse pixels to fine pixels). Unlike RAFT, the coarse flow is padded by replication, not zeros, so
    a constant flow stays constant up to the border.

    Args:
        flow: ``(B, 2, H, W)`` in coarse pixels.
        mask: ``(B, 9 * factor^2, H, W)`` logits, laid out ``(9, factor, factor)``: neighbour, row, column.

    Returns:
        ``(B, 2, factor * H, factor * W)`` in fine pixels.
    """
    b, _, h, w = flow.shape
    weights = mask.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)
    neighbours = F.unfold(F.pad(factor * flow, (1, 1, 1, 1), mode="replicate"), kernel_size=3)
    neighbours = neighbours.view(b, 2, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # (B, 2, factor, factor, H, W)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, 2, factor * h, factor * w)


def bilinear_upsample(flow: Tensor, factor: int = 8) -> Tensor:
    """``(B, 2, H, W)`` coarse flow to ``(B, 2, factor * H, factor * W)`` fine flow, bilinearly."""
    return factor * F.interpolate(flow, scale_factor=factor, mode="bilinear", align_corners=False)
