"""Stage 2 of SSC-HSR: WarpNet, a small U-Net that repairs the flow-warped reference.

Backward warping by the stage-1 flow (``ref_warp0 = flow_warp(ref, flow)``) puts the photo on the HSI's
grid but damages it: occluded pixels repeat the occluder, pixels whose match lies outside the photo read
its border, bilinear interpolation blurs, and the flow is wrong near motion boundaries. WarpNet looks at
``[rgb_hsi, ref_warp0, ref]`` (plus optional cues about the warp, :func:`warp_cues`) and predicts a
residual, ``ref_warp = ref_warp0 + residual`` (DESIGN.md, method step 2). Its last layer starts at zero,
so an untrained WarpNet returns ``ref_warp0`` unchanged.

``ref`` is *not* on the HSI's grid; the paper feeds it anyway (the convolutions can still read its
textures and colours nearby where the motion is small), and so does WarpNet unless ``use_ref=False``.

    >>> from sschsr.checkpoints import load_warpnet
    >>> net = load_warpnet("outputs/stage2/runs/<run>/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> ref_warp = net(rgb_hsi, ref, ref_warp0, extra=warp_cues(flow))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.ops.warp import flow_warp

__all__ = ["CONFIG_KEY", "WarpNet", "warp_cues"]

CONFIG_KEY = "warpnet_config"  # where the constructor arguments live in a .ckpt and .safetensors metadata
N_CUES = 2  # channels of warp_cues: inside-the-photo fraction, motion discontinuity
DISCONTINUITY_SCALE = 1.0  # px of flow change between neighbours at which the cue reaches tanh(1) = 0.76:
# a smooth camera motion changes the flow by a few hundredths of a pixel per pixel, an occlusion boundary
# by pixels


def warp_cues(flow: Tensor, ref_size: tuple[int, int] | None = None) -> Tensor:
    """Where the backward warp is trustworthy, as two extra input channels for :class:`WarpNet`.

    - ``inside``: the share of the bilinear footprint of ``p + flow[p]`` that falls inside the photo (the
      warp of an all-ones image with zero padding): 1 inside, 0 where the warp read only the border.
    - ``discontinuity``: ``tanh(|grad flow| / s)``, ``s`` = :data:`DISCONTINUITY_SCALE` px; high at motion
      boundaries, where occlusions (two source pixels reading the same photo pixel) and flow errors live.

    Both are computed without gradient: they describe the flow, they are not a path to train it.

    Args:
        flow: ``(B, 2, H, W)`` float, pixels, x then y; the HSI pixel ``p`` is at ``p + flow[p]`` in ``ref``.
        ref_size: ``(Hr, Wr)`` of the photo the flow points into (default: the flow's own ``(H, W)``).

    Returns:
        ``(B, 2, H, W)`` float32 in [0, 1]: ``inside``, ``discontinuity``.

    Example:
        >>> warp_cues(torch.zeros(1, 2, 4, 4)).amax().item()  # no motion: all inside, no discontinuity
        1.0
    """
    if flow.ndim != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp_cues expects a flow (B, 2, H, W); got {tuple(flow.shape)}")
    flow = flow.detach().float()
    b, _, h, w = flow.shape
    hr, wr = ref_size or (h, w)
    inside = flow_warp(flow.new_ones(b, 1, hr, wr), flow, padding_mode="zeros")
    # forward differences, zero at the far edges so that the size is kept
    dx = F.pad(flow[..., :, 1:] - flow[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(flow[..., 1:, :] - flow[..., :-1, :], (0, 0, 0, 1))
    grad = (dx.square() + dy.square()).sum(dim=1, keepdim=True).sqrt()
    return torch.cat((inside.clamp(0, 1), torch.tanh(grad / DISCONTINUITY_SCALE)), dim=1)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class _Down(nn.Module):
    """Halve the resolution (strided conv, no pooling: it learns what to keep), then one more conv."""

    def __init__(self, cin: int, cout: int, slope: float):
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin, cout, 2), nn.LeakyReLU(slope), _conv(cout, cout), nn.LeakyReLU(slope)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class _Up(nn.Module):
    """Bilinear x2 (no transposed conv: no checkerboard), concatenate the skip, two convs."""

    def __init__(self, cin: int, cskip: int, cout: int, slope: float):
        super().__init__()
        self.body = nn.Sequential(
            _conv(cin + cskip, cout), nn.LeakyReLU(slope), _conv(cout, cout), nn.LeakyReLU(slope)
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.body(torch.cat((x, skip), dim=1))


class WarpNet(nn.Module):
    """A small residual U-Net: ``ref_warp = ref_warp0 + U([rgb_hsi, ref_warp0, ref, extra])``.

    Args:
        widths: channels per level, finest first; each further level halves the resolution. The default
            ``(16, 32, 48, 64)`` (three downsamplings, inputs padded to a multiple of 8) has about 0.23 M
            parameters (the paper's WarpNet: 0.14 M) and sees a window of about 75 px around each pixel, enough to
            fill the holes of typical occlusions from their surroundings.
        extra_channels: channels of ``extra`` in :meth:`forward` (default 2, :func:`warp_cues`); 0 for
            none (the paper's input).
        use_ref: also feed the unaligned ``ref`` (the paper does); False drops it (an ablation).
        negative_slope: of the LeakyReLU activations.

    The output is **not clamped**: a clamp would stop the gradient wherever the prediction leaves [0, 1],
    and the L1 loss against a target in [0, 1] keeps it close anyway. Clamp for display and metrics.

    Example:
        >>> net = WarpNet()
        >>> x = torch.rand(1, 3, 37, 53)
        >>> out = net(x, x, x, extra=warp_cues(torch.zeros(1, 2, 37, 53)))
        >>> out.shape, torch.equal(out, x)  # zero-initialised last layer: the identity on ref_warp0
        (torch.Size([1, 3, 37, 53]), True)
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 48, 64),
        extra_channels: int = N_CUES,
        use_ref: bool = True,
        negative_slope: float = 0.1,
    ):
        super().__init__()
        widths = tuple(int(c) for c in widths)
        if not widths or min(widths) < 1 or extra_channels < 0:
            raise ValueError(
                f"WarpNet needs at least one positive width and extra_channels >= 0; got {widths}, {extra_channels}"
            )
        self.widths, self.extra_channels, self.use_ref, self.negative_slope = (
            widths,
            extra_channels,
            use_ref,
            negative_slope,
        )
        self.multiple = 2 ** (len(widths) - 1)
        in_channels = 3 + 3 + (3 if use_ref else 0) + extra_channels
        s = negative_slope
        self.head = nn.Sequential(
            _conv(in_channels, widths[0]), nn.LeakyReLU(s), _conv(widths[0], widths[0]), nn.LeakyReLU(s)
        )
        self.downs = nn.ModuleList(_Down(a, b, s) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.ups = nn.ModuleList(
            _Up(widths[i + 1], widths[i], widths[i], s) for i in reversed(range(len(widths) - 1))
        )
        self.tail = _conv(widths[0], 3)
        # zero residual at initialisation: training starts from the plain warp, never worse than it
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this network (saved with checkpoints)."""
        return dict(
            widths=list(self.widths),
            extra_channels=self.extra_channels,
            use_ref=self.use_ref,
            negative_slope=self.negative_slope,
        )

    def forward(self, rgb_hsi: Tensor, ref: Tensor, ref_warp0: Tensor, extra: Tensor | None = None) -> Tensor:
        """Repair the warped reference.

        Args:
            rgb_hsi: ``(B, 3, H, W)`` float in [0, 1], the (upsampled LR) HSI rendered to RGB, colour-matched
                to ``ref``; defines the grid.
            ref: ``(B, 3, H, W)`` float in [0, 1], the photo, not aligned with the grid.
            ref_warp0: ``(B, 3, H, W)`` float, ``ref`` backward-warped onto the grid by the stage-1 flow.
            extra: ``(B, extra_channels, H, W)`` float, e.g. :func:`warp_cues` of the flow; required when
                ``extra_channels > 0``.

        Returns:
            ``(B, 3, H, W)`` ``ref_warp``, same dtype as ``ref_warp0``, not clamped. Any ``H, W``: inputs
            are padded (replicating the far edges) to a multiple of ``2 ** (len(widths) - 1)`` and the
            output is cropped back.
        """
        shape = ref_warp0.shape
        if ref_warp0.ndim != 4 or shape[1] != 3:
            raise ValueError(f"WarpNet expects ref_warp0 (B, 3, H, W); got {tuple(shape)}")
        for name, x in (("rgb_hsi", rgb_hsi), ("ref", ref)):
            if x.shape != shape:
                raise ValueError(
                    f"WarpNet expects {name} of the shape of ref_warp0 {tuple(shape)}; got {tuple(x.shape)}"
                )
        inputs = [rgb_hsi, ref_warp0] + ([ref] if self.use_ref else [])
        if self.extra_channels:
            expected = (shape[0], self.extra_channels, *shape[-2:])
            if extra is None or tuple(extra.shape) != expected:
                got = None if extra is None else tuple(extra.shape)
                raise ValueError(
                    f"WarpNet(extra_channels={self.extra_channels}) expects extra {expected} (e.g. warp_cues(flow)); got {got}"
                )
            inputs.append(extra)
        elif extra is not None:
            raise ValueError("WarpNet(extra_channels=0) takes no extra input")
        x = torch.cat([t.to(ref_warp0.dtype) for t in inputs], dim=1)

        h, w = shape[-2:]
        m = self.multiple
        ph, pw = -h % m, -w % m
        if ph or pw:  # far edges only: the crop back is a plain slice
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = [self.head(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        residual = self.tail(y)[..., :h, :w]
        return ref_warp0 + residual


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
