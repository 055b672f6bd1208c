"""Feature encoders of SSC-HSR (DESIGN.md, method step 3).

Three levels, listed **coarse to fine** everywhere in sschsr.models: level 1 at ``H/4`` with ``4c``
channels, level 2 at ``H/2`` with ``2c``, level 3 at ``H`` with ``c``.

- :class:`HSIEncoder`: the upsampled LR HSI to ``F_hsi`` (residual conv blocks per level).
- :class:`MatchingEncoder`: an RGB image to features for correspondence at ``H/4``; applied to both
  ``rgb_hsi`` and ``ref_warp`` with shared weights, so that matching compares like with like.
- :class:`TextureEncoder`: ``ref_warp`` to ``F_ref`` at the three levels (the paper uses VGG-19's relu1_1,
  relu2_1, relu3_1 with pretrained weights; nothing can be downloaded here, so it is a VGG-shaped stack
  trained with the rest).

Inputs need ``H`` and ``W`` divisible by 4 (:class:`sschsr.models.sschsr.SSCHSR` pads).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["HSIEncoder", "MatchingEncoder", "ResBlock", "TextureEncoder", "conv3x3"]

NEGATIVE_SLOPE = 0.1  # LeakyReLU slope used throughout the SR branch (the paper's code)


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


def _check_input(x: Tensor, channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} expects (B, {channels}, H, W); got {tuple(x.shape)}")
    if x.shape[-2] % 4 or x.shape[-1] % 4:
        raise ValueError(f"{name} expects H and W divisible by 4 (three levels); got {tuple(x.shape[-2:])}")


class ResBlock(nn.Module):
    """``x + conv(lrelu(conv(x)))``: (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(channels, channels), nn.LeakyReLU(NEGATIVE_SLOPE), conv3x3(channels, channels)
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class HSIEncoder(nn.Module):
    """``lr_up`` to ``F_hsi`` at three levels.

    Args:
        n_bands: spectral bands ``C`` of the input.
        width: ``c``, channels at full resolution (``2c`` at ``H/2``, ``4c`` at ``H/4``).
        blocks: residual blocks per level, fine to coarse (full resolution first).

    Shape:
        ``forward(lr_up (B, C, H, W))`` -> ``[(B, 4c, H/4, W/4), (B, 2c, H/2, W/2), (B, c, H, W)]``
        (coarse to fine); ``H, W`` divisible by 4.

    Example:
        >>> import torch
        >>> [f.shape[1:] for f in HSIEncoder(31, 8)(torch.rand(1, 31, 16, 16))]
        [torch.Size([32, 4, 4]), torch.Size([16, 8, 8]), torch.Size([8, 16, 16])]
    """

    def __init__(self, n_bands: int, width: int, blocks: Sequence[int] = (2, 2, 2)):
        super().__init__()
        if len(blocks) != 3:
            raise ValueError(f"HSIEncoder has three levels; got blocks={tuple(blocks)}")
        c, s = width, NEGATIVE_SLOPE
        self.n_bands, self.width = n_bands, width
        self.level3 = nn.Sequential(
            conv3x3(n_bands, c), nn.LeakyReLU(s), *(ResBlock(c) for _ in range(blocks[0]))
        )
        self.level2 = nn.Sequential(
            conv3x3(c, 2 * c, 2), nn.LeakyReLU(s), *(ResBlock(2 * c) for _ in range(blocks[1]))
        )
        self.level1 = nn.Sequential(
            conv3x3(2 * c, 4 * c, 2), nn.LeakyReLU(s), *(ResBlock(4 * c) for _ in range(blocks[2]))
        )

    def forward(self, lr_up: Tensor) -> list[Tensor]:
        _check_input(lr_up, self.n_bands, "HSIEncoder")
        f3 = self.level3(lr_up)
        f2 = self.level2(f3)
        f1 = self.level1(f2)
        return [f1, f2, f3]


def _vgg_stage(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        conv3x3(cin, cout, stride),
        nn.LeakyReLU(NEGATIVE_SLOPE),
        conv3x3(cout, cout),
        nn.LeakyReLU(NEGATIVE_SLOPE),
    )


class TextureEncoder(nn.Module):
    """``ref_warp`` to ``F_ref`` at three levels, the widths of :class:`HSIEncoder`.

    Args:
        width: ``c``; levels get ``4c, 2c, c`` channels coarse to fine.
        in_channels: 3 for RGB.

    Shape:
        ``forward(ref_warp (B, 3, H, W))`` -> ``[(B, 4c, H/4, W/4), (B, 2c, H/2, W/2), (B, c, H, W)]``.
    """

    def __init__(self, width: int, in_channels: int = 3):
        super().__init__()
        c = width
        self.in_channels, self.width = in_channels, width
        self.level3 = _vgg_stage(in_channels, c, 1)
        self.level2 = _vgg_stage(c, 2 * c, 2)
        # one conv at the coarsest level, as VGG's relu3_1 (the widest conv costs the most)
        self.level1 = nn.Sequential(conv3x3(2 * c, 4 * c, 2), nn.LeakyReLU(NEGATIVE_SLOPE))

    def forward(self, ref_warp: Tensor) -> list[Tensor]:
        _check_input(ref_warp, self.in_channels, "TextureEncoder")
        f3 = self.level3(ref_warp)
        f2 = self.level2(f3)
        f1 = self.level1(f2)
        return [f1, f2, f3]


class MatchingEncoder(nn.Module):
    """An RGB image to descriptors at ``H/4`` for :class:`sschsr.models.matching.GAM`.

    No activation at the end: signed features use the whole sphere for cosine similarity.

    Args:
        width: output channels ``D`` (``D/4`` and ``D/2`` in the earlier stages).
        in_channels: 3 for RGB.

    Shape:
        ``forward(x (B, 3, H, W))`` -> ``(B, D, H/4, W/4)``.
    """

    def __init__(self, width: int, in_channels: int = 3):
        super().__init__()
        if width % 4:
            raise ValueError(f"MatchingEncoder width must be divisible by 4; got {width}")
        s = NEGATIVE_SLOPE
        self.in_channels, self.width = in_channels, width
        self.body = nn.Sequential(
            _vgg_stage(in_channels, width // 4, 1),
            _vgg_stage(width // 4, width // 2, 2),
            conv3x3(width // 2, width, 2), nn.LeakyReLU(s), conv3x3(width, width),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.in_channels, "MatchingEncoder")
        return self.body(x)
