"""Deformable convolution (DCNv1, and modulated DCNv2 when a mask is given) without compiled extensions.

One function, :func:`deform_conv2d`, with the signature and semantics of
``torchvision.ops.deform_conv2d``. It dispatches to torchvision's kernel when the input is on CUDA and
``torchvision`` imports (tried once, the result cached), else to a pure-PyTorch implementation: the input
is bilinearly sampled (``grid_sample``) at the ``kh * kw`` deformed positions of every output pixel, and the
samples are contracted with the weight by one matrix product (an im2col convolution).

Offset layout (torchvision's): ``offset`` is ``(B, 2 * offset_groups * kh * kw, Ho, Wo)``; for offset group
``g`` and kernel tap ``k = i * kw + j`` (row ``i``, column ``j``) channel ``2 * (g * kh * kw + k)`` holds the
row displacement ``dy`` and the next channel the column displacement ``dx``, in input pixels. Tap ``k`` of
output pixel ``(y, x)`` reads the input at ``(y * sh - ph + i * dh + dy, x * sw - pw + j * dw + dx)``;
positions outside the input read zeros (per bilinear corner, as torchvision does).

kornia 0.9 ships a pure-PyTorch ``deform_conv2d`` with the same semantics (``kornia.feature.aliked``); the
fallback here is not that one because it is 5 to 13 times slower on CPU (gathers of every corner, then an
einsum): 0.23 s against 0.03 s for one 64-channel 3x3 DCN at 32 x 32, 1.3 s against 0.26 s at 128 x 128
with 16 channels (2 CPU threads). The tests check both agree to float64 precision.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DeformConv2d", "ModulatedDeformConv", "deform_conv2d", "deform_conv2d_torch"]

IntPair = int | tuple[int, int]

_TORCHVISION_OP: object = None  # not tried yet; then the op, or False when torchvision does not import


def _torchvision_deform_conv2d():
    """``torchvision.ops.deform_conv2d`` or None; the import is attempted once per process."""
    global _TORCHVISION_OP
    if _TORCHVISION_OP is None:
        try:  # any failure counts: the CPU build of torch here raises RuntimeError, not ImportError
            from torchvision.ops import deform_conv2d as op

            _TORCHVISION_OP = op
        except Exception:
            _TORCHVISION_OP = False
    return _TORCHVISION_OP or None


def _pair(v: IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _check(x: Tensor, offset: Tensor, weight: Tensor, mask: Tensor | None, out_hw: tuple[int, int]) -> int:
    """Validate shapes; return the number of offset groups."""
    if x.ndim != 4 or offset.ndim != 4 or weight.ndim != 4:
        raise ValueError(
            f"deform_conv2d expects x (B, C, H, W), offset (B, 2*G*kh*kw, Ho, Wo) and weight (Co, C/groups, kh, kw); "
            f"got {tuple(x.shape)}, {tuple(offset.shape)}, {tuple(weight.shape)}"
        )
    b, c = x.shape[:2]
    taps = weight.shape[2] * weight.shape[3]
    if c % weight.shape[1]:
        raise ValueError(f"input channels {c} are not a multiple of the weight's {weight.shape[1]} per group")
    if weight.shape[0] % (c // weight.shape[1]):
        raise ValueError(
            f"output channels {weight.shape[0]} are not a multiple of the groups {c // weight.shape[1]}"
        )
    if offset.shape[1] % (2 * taps) or offset.shape[1] == 0:
        raise ValueError(
            f"offset has {offset.shape[1]} channels; expected a positive multiple of 2*kh*kw = {2 * taps}"
        )
    groups = offset.shape[1] // (2 * taps)
    if c % groups:
        raise ValueError(f"input channels {c} are not divisible by the {groups} offset groups")
    if offset.shape[0] != b or tuple(offset.shape[-2:]) != out_hw:
        raise ValueError(
            f"offset must be {(b, offset.shape[1], *out_hw)} for this input and kernel; got {tuple(offset.shape)}"
        )
    if mask is not None and tuple(mask.shape) != (b, groups * taps, *out_hw):
        raise ValueError(f"mask must be {(b, groups * taps, *out_hw)}; got {tuple(mask.shape)}")
    return groups


COLUMN_BUDGET = 2**22
"""Sampled values (``B * C * kh * kw`` per output pixel) :func:`deform_conv2d_torch` holds at once: the output
is computed in bands of rows that fit (16 MB of float32). All columns at once grow with the image (at 1024 x
1024, 32 channels and 3 x 3 taps, 1.2 GB of float32) and fall out of the CPU's caches. Measured on this
project's 2-core CPU, the shipped x8 network's forward pass at 1024 x 1024 went from 28.3 s to 23.3 s, at
512 x 512 from 4.7 to 3.9 s (``experiments/results/bench_model_cpu_columns_whole.json`` against
``bench_model_cpu.json``; runs of one command differ by up to about 10% there)."""


def deform_conv2d_torch(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """The pure-PyTorch deformable convolution (any device, differentiable in every input).

    Same contract as :func:`deform_conv2d`. Memory: the sampled columns of a band of output rows, at most
    :data:`COLUMN_BUDGET` values (at least one row).
    """
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    b, c, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    taps = kh * kw
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    n_off = _check(x, offset, weight, mask, (ho, wo))

    # sampling positions in input pixels: the regular grid plus each tap's displacement
    ys = torch.arange(ho, device=x.device, dtype=x.dtype) * sh - ph
    xs = torch.arange(wo, device=x.device, dtype=x.dtype) * sw - pw
    tap_y = (torch.arange(kh, device=x.device, dtype=x.dtype) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=x.device, dtype=x.dtype) * dw).repeat(kh)
    off = offset.to(x.dtype).reshape(b, n_off, taps, 2, ho, wo)
    mask = None if mask is None else mask.to(x.dtype).reshape(b, n_off, 1, taps, ho, wo)
    source = x.reshape(b * n_off, c // n_off, h, w)
    groups = c // c_per_group
    w_mat = weight.reshape(groups, c_out // groups, c_per_group * taps)
    rows = max(1, COLUMN_BUDGET // max(1, b * c * taps * wo))
    bands = []
    for r0 in range(0, ho, rows):
        r1 = min(ho, r0 + rows)
        n = r1 - r0
        pos_y = ys[r0:r1].view(1, 1, 1, n, 1) + tap_y.view(1, 1, taps, 1, 1) + off[:, :, :, 0, r0:r1]
        pos_x = xs.view(1, 1, 1, 1, wo) + tap_x.view(1, 1, taps, 1, 1) + off[:, :, :, 1, r0:r1]
        # align_corners=False: pixel p is at (2p + 1) / size - 1, valid for inputs one pixel wide too;
        # zero padding per bilinear corner is torchvision's out-of-bounds rule
        grid = torch.stack(((2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1), dim=-1)
        # the taps stacked along the rows: one call samples all
        grid = grid.reshape(b * n_off, taps * n, wo, 2)
        cols = F.grid_sample(
            source, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        ).reshape(b, n_off, c // n_off, taps, n, wo)
        if mask is not None:  # DCNv2 modulation, one scalar per offset group, tap and pixel
            cols = cols * mask[..., r0:r1, :]
        # rows ordered (channel, tap): the weight's order
        cols = cols.reshape(b, groups, c_per_group * taps, n * wo)
        bands.append(torch.matmul(w_mat, cols).reshape(b, c_out, n, wo))
    out = bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
    return out if bias is None else out + bias.view(1, -1, 1, 1)


def deform_conv2d(
    x: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable 2-D convolution; modulated (DCNv2) when ``mask`` is given.

    ``out[o, y, x] = bias[o] + sum_{c, k} weight[o, c, k] * mask[k, y, x] * x[c, p_k(y, x) + offset_k(y, x)]``
    with bilinear reads, ``p_k`` the regular position of tap ``k`` (see the module docstring for the layout).

    Args:
        x: ``(B, C, H, W)`` float input.
        offset: ``(B, 2 * G * kh * kw, Ho, Wo)``, ``(dy, dx)`` per offset group ``G`` and tap, input pixels.
        weight: ``(Co, C / groups, kh, kw)``; ``groups`` (the convolution's) is ``C / weight.shape[1]``.
        bias: ``(Co,)`` or None.
        stride, padding, dilation: as for ``F.conv2d``.
        mask: ``(B, G * kh * kw, Ho, Wo)`` modulation (usually in [0, 1]) or None.

    Returns:
        ``(B, Co, Ho, Wo)``, the dtype of ``x``.

    Example:
        >>> x, w = torch.rand(1, 4, 8, 8), torch.rand(6, 4, 3, 3)
        >>> out = deform_conv2d(x, torch.zeros(1, 18, 8, 8), w, padding=1)
        >>> torch.allclose(out, F.conv2d(x, w, padding=1), atol=1e-5)
        True
    """
    if x.is_cuda:
        op = _torchvision_deform_conv2d()
        if op is not None:
            dtype = x.dtype
            # torchvision's kernels cover float16/32/64, not bfloat16 (its autocast wrapper casts to float32)
            cast = (lambda t: t.float()) if dtype == torch.bfloat16 else (lambda t: t.to(dtype))
            out = op(
                cast(x), cast(offset), cast(weight), None if bias is None else cast(bias),
                stride=_pair(stride), padding=_pair(padding), dilation=_pair(dilation),
                mask=None if mask is None else cast(mask),
            )  # fmt: skip
            return out.to(dtype)
    return deform_conv2d_torch(x, offset, weight, bias, stride, padding, dilation, mask)


class DeformConv2d(nn.Module):
    """A deformable convolution whose offsets (and optional mask) come from the caller.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias: as ``nn.Conv2d``.
        offset_groups: groups of input channels that share one offset field (``G``).

    Shape:
        ``forward(x (B, Ci, H, W), offset (B, 2*G*kh*kw, Ho, Wo), mask (B, G*kh*kw, Ho, Wo) | None)``
        ``-> (B, Co, Ho, Wo)``.

    Example:
        >>> dcn = DeformConv2d(8, 8, 3, padding=1, offset_groups=2)
        >>> dcn(torch.rand(1, 8, 5, 5), torch.zeros(1, 36, 5, 5)).shape
        torch.Size([1, 8, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % offset_groups:
            raise ValueError(
                f"channels in={in_channels}, out={out_channels} must be divisible by groups={groups}, "
                f"and in by offset_groups={offset_groups}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = (
            _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
        )  # fmt: skip
        self.groups, self.offset_groups = groups, offset_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *self.kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    @property
    def taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        # nn.Conv2d's initialisation
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.taps
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, offset_groups={self.offset_groups}"
        )


class ModulatedDeformConv(DeformConv2d):
    """DCNv2: :class:`DeformConv2d` whose ``mask`` is required.

    Shape:
        ``forward(x (B, Ci, H, W), offset (B, 2*G*kh*kw, Ho, Wo), mask (B, G*kh*kw, Ho, Wo)) -> (B, Co, Ho, Wo)``.
    """

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is None:
            raise ValueError(
                "ModulatedDeformConv needs a mask (B, G*kh*kw, Ho, Wo); use DeformConv2d for DCNv1"
            )
        return super().forward(x, offset, mask)
