"""Feature and context encoders of the RAFT-style flow model (Teed & Deng 2020, section 3.1).

Both encoders map an image to a feature map at 1/8 resolution: a 7x7 stride-2 stem, three stages of
residual blocks (stride 1, 2, 2) and a 1x1 projection. The feature encoder ``g_theta`` uses instance
normalisation (features are compared across two images, so per-image statistics are removed); the
context encoder ``h_theta`` sees only the first image and uses batch normalisation or none.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Norm = Literal["instance", "batch", "group", "none"]
Block = Literal["residual", "bottleneck"]


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """A 2-D normalisation layer by name (``group``: 8 channels per group, as RAFT)."""
    if kind == "instance":
        return nn.InstanceNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(max(1, channels // 8), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; expected instance, batch, group or none")


def _projection(in_dim: int, out_dim: int, norm: Norm, stride: int) -> nn.Module | None:
    """A block's skip path: None (identity) when it keeps the shape, else a strided 1x1 conv and norm."""
    if stride == 1 and in_dim == out_dim:
        return None
    return nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride), norm_layer(norm, out_dim))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (1x1 projection when the stride is not 1)."""

    def __init__(self, in_dim: int, out_dim: int, norm: Norm, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        self.norm1, self.norm2 = norm_layer(norm, out_dim), norm_layer(norm, out_dim)
        self.relu = nn.ReLU(inplace=True)
        self.skip = _projection(in_dim, out_dim, norm, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        return self.relu((x if self.skip is None else self.skip(x)) + y)


class BottleneckBlock(nn.Module):
    """1x1 reduce to a quarter of the channels, 3x3, 1x1 expand; a skip connection (RAFT-small)."""

    def __init__(self, in_dim: int, out_dim: int, norm: Norm, stride: int = 1):
        super().__init__()
        mid = out_dim // 4
        self.conv1 = nn.Conv2d(in_dim, mid, 1)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1)
        self.conv3 = nn.Conv2d(mid, out_dim, 1)
        self.norm1, self.norm2, self.norm3 = (norm_layer(norm, c) for c in (mid, mid, out_dim))
        self.relu = nn.ReLU(inplace=True)
        self.skip = _projection(in_dim, out_dim, norm, stride)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.relu(self.norm3(self.conv3(y)))
        return self.relu((x if self.skip is None else self.skip(x)) + y)


class Encoder(nn.Module):
    """Image to features at 1/8 resolution.

    Args:
        out_dim: channels of the output.
        norm: normalisation in every block.
        widths: channels of the stem and the three stages, e.g. ``(64, 64, 96, 128)`` (RAFT) or
            ``(32, 32, 64, 96)`` (RAFT-small).
        block: ``residual`` (two 3x3 convolutions) or ``bottleneck`` (1x1-3x3-1x1).
        dropout: channel dropout on the output while training.

    Shape:
        ``(B, 3, H, W)`` -> ``(B, out_dim, ceil(H/8), ceil(W/8))``.
    """

    def __init__(
        self,
        out_dim: int,
        norm: Norm = "instance",
        widths: tuple[int, int, int, int] = (64, 64, 96, 128),
        block: Block = "residual",
        dropout: float = 0.0,
    ):
        super().__init__()
        make = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}[block]
        stem, *stages = widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, stem, 7, stride=2, padding=3), norm_layer(norm, stem), nn.ReLU(inplace=True)
        )
        layers, in_dim = [], stem
        for width, stride in zip(stages, (1, 2, 2), strict=True):
            layers.append(nn.Sequential(make(in_dim, width, norm, stride), make(width, width, norm, 1)))
            in_dim = width
        self.stages = nn.Sequential(*layers)
        self.proj = nn.Conv2d(in_dim, out_dim, 1)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.stages(self.stem(x))))


def init_weights(module: nn.Module) -> None:
    """RAFT's initialisation: Kaiming (fan-out, ReLU) convolutions, unit-scale norms."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def encode_pair(encoder: nn.Module, image1: Tensor, image2: Tensor) -> tuple[Tensor, Tensor]:
    """Run one encoder on both images in a single batch (instance norm keeps them independent)."""
    f = encoder(torch.cat((image1, image2), dim=0))
    return f.chunk(2, dim=0)
