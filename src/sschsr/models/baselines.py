"""Baselines with the forward signature of :class:`sschsr.models.sschsr.SSCHSR`.

- :class:`Bicubic`: ``sr = lr_up``, no parameters (the floor every model must beat); with ``shift`` it is
  moved back onto the HR grid (the paper's degradation shows the scene 3 px off it at x8,
  :func:`sschsr.ops.degrade.content_shift`): the "registered" bicubic, what the trained networks must
  beat to add more than that registration.
- :class:`SingleImageSR`: the SR branch without the reference: HSI encoder and the same fusion levels
  without R-MCA, global residual. It measures what the RGB guidance adds at a similar size.

Both take ``(lr_up, ref, rgb_hsi)`` and ignore the last two; they return ``dict(sr=...)`` only, since
no flow or warped reference exists for them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sschsr.models.encoders import HSIEncoder
from sschsr.models.sschsr import (
    HEADS,
    PRESETS,
    Head,
    Preset,
    build_fusion_levels,
    pad_to_multiple,
    reconstruct,
)
from sschsr.ops.warp import move_content

__all__ = ["Bicubic", "SingleImageSR"]


def _check(lr_up: Tensor, n_bands: int | None, name: str) -> None:
    if lr_up.ndim != 4 or (n_bands is not None and lr_up.shape[1] != n_bands):
        bands = "C" if n_bands is None else n_bands
        raise ValueError(f"{name} expects lr_up (B, {bands}, H, W); got {tuple(lr_up.shape)}")


class Bicubic(nn.Module):
    """``sr = lr_up`` (the input is already the bicubic upsampling of the LR HSI), or, with ``shift``, its
    content moved back by ``(shift, shift)`` px (:func:`sschsr.ops.warp.move_content`, border repeated).

    Args:
        n_bands: the band count to check (None: any).
        shift: how far ``lr_up`` shows the scene from the HR grid (:func:`sschsr.ops.degrade.content_shift`);
            0: plain bicubic.

    Shape:
        ``forward(lr_up (B, C, H, W), ref=None, rgb_hsi=None)`` -> ``dict(sr=(B, C, H, W))`` (the same tensor
        when ``shift`` is 0).
    """

    def __init__(self, n_bands: int | None = None, shift: float = 0.0):
        super().__init__()
        self.n_bands, self.shift = n_bands, shift

    def forward(
        self, lr_up: Tensor, ref: Tensor | None = None, rgb_hsi: Tensor | None = None
    ) -> dict[str, Tensor]:
        _check(lr_up, self.n_bands, "Bicubic")
        return dict(sr=move_content(lr_up, -self.shift, -self.shift))


class SingleImageSR(nn.Module):
    """Single-image HSI super-resolution: SSC-HSR's HSI encoder and fusion levels, no reference branch.

    Args:
        n_bands: spectral bands ``C``.
        preset: the widths of :data:`sschsr.models.sschsr.PRESETS`.
        head: ``residual`` or ``modulated``, as :class:`sschsr.models.sschsr.SSCHSR`.

    Shape:
        ``forward(lr_up (B, C, H, W), ref=None, rgb_hsi=None)`` -> ``dict(sr=(B, C, H, W))``; any ``H, W``.

    Example:
        >>> import torch
        >>> SingleImageSR(5)(torch.rand(2, 5, 18, 22))["sr"].shape
        torch.Size([2, 5, 18, 22])
    """

    def __init__(self, n_bands: int, preset: Preset = "lite", head: Head = "residual"):
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
        cfg = PRESETS[preset]
        self.n_bands, self.preset, self.head = n_bands, preset, head
        self.hsi_encoder = HSIEncoder(n_bands, cfg.width, cfg.hsi_blocks)
        self.fusion = build_fusion_levels(n_bands, cfg, use_rmca=False, concat_ref=False, head=head)

    def forward(
        self, lr_up: Tensor, ref: Tensor | None = None, rgb_hsi: Tensor | None = None
    ) -> dict[str, Tensor]:
        _check(lr_up, self.n_bands, "SingleImageSR")
        h, w = lr_up.shape[-2:]
        x = None
        for level, fh in zip(self.fusion, self.hsi_encoder(pad_to_multiple(lr_up)), strict=True):
            x = level(fh if x is None else torch.cat((fh, x), dim=1))
        return dict(sr=reconstruct(x[..., :h, :w], lr_up, self.head))
