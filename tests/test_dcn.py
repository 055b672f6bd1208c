"""sschsr.ops.dcn: the deformable convolution against known answers, kornia, and torchvision where it loads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sschsr.ops import dcn
from sschsr.ops.dcn import DeformConv2d, ModulatedDeformConv, deform_conv2d, deform_conv2d_torch


def _out_size(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _inputs(b, c, h, w, co, k, s, p, d, groups, offset_groups, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    ho, wo = _out_size(h, kh, s, p, d), _out_size(w, kw, s, p, d)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(co, c // groups, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(co, generator=g, dtype=dtype)
    # offsets away from integers: bilinear interpolation is not differentiable at whole pixels
    offset = (torch.rand(b, 2 * offset_groups * kh * kw, ho, wo, generator=g, dtype=dtype) - 0.5) * 3 + 0.25
    mask = torch.rand(b, offset_groups * kh * kw, ho, wo, generator=g, dtype=dtype)
    return x, offset, weight, bias, mask


class TestDeformConv2d:
    @pytest.mark.parametrize(
        "k, s, p, d, groups, offset_groups",
        [
            (1, 1, 0, 1, 1, 1),
            (3, 1, 1, 1, 1, 1),
            (3, 2, 1, 1, 1, 2),
            (3, 1, 2, 2, 2, 4),
            (5, 1, 2, 1, 1, 2),
            (5, 2, 0, 1, 4, 1),
            ((3, 5), 1, 1, 1, 1, 4),
            ((1, 3), 2, 0, 2, 2, 2),
        ],
    )
    def test_zero_offset_is_conv(self, k, s, p, d, groups, offset_groups):
        x, offset, weight, bias, mask = _inputs(
            2, 8, 11, 9, 6 if groups != 4 else 8, k, s, p, d, groups, offset_groups
        )
        expected = F.conv2d(x, weight, bias, stride=s, padding=p, dilation=d, groups=groups)
        zero = torch.zeros_like(offset)
        out = deform_conv2d(x, zero, weight, bias, stride=s, padding=p, dilation=d)
        torch.testing.assert_close(out, expected)
        out = deform_conv2d(
            x, zero, weight, bias, stride=s, padding=p, dilation=d, mask=torch.ones_like(mask)
        )
        torch.testing.assert_close(out, expected)

    @pytest.mark.parametrize("dy, dx", [(1, -2), (-3, 0), (2, 2)])
    def test_integer_offset_is_shifted_conv(self, dy, dx):
        x, offset, weight, bias, _ = _inputs(1, 4, 10, 12, 5, 3, 1, 1, 1, 1, 2)
        shift = torch.tensor([dy, dx], dtype=x.dtype).repeat(offset.shape[1] // 2).view(1, -1, 1, 1)
        out = deform_conv2d(x, shift.expand_as(offset), weight, bias, padding=1)
        # shifted[y, x] = x[y + dy, x + dx] for y in [-1, H] (the 3x3 kernel's reach), zeros outside x
        r = max(abs(dy), abs(dx)) + 1
        xp = F.pad(x, (r, r, r, r))
        h, w = x.shape[-2:]
        shifted = xp[..., r - 1 + dy : r + 1 + dy + h, r - 1 + dx : r + 1 + dx + w]
        torch.testing.assert_close(out, F.conv2d(shifted, weight, bias))

    def test_fractional_offset_interpolates(self):
        # half a pixel to the right: the average of the two integer shifts (away from the borders)
        x, offset, weight, _, _ = _inputs(1, 3, 8, 8, 2, 3, 1, 1, 1, 1, 1)
        taps = offset.shape[1] // 2

        def run(dx: float):
            off = torch.tensor([0.0, dx], dtype=x.dtype).repeat(taps).view(1, -1, 1, 1).expand_as(offset)
            return deform_conv2d(x, off, weight, padding=1)

        torch.testing.assert_close(run(0.5)[..., 1:-2], 0.5 * (run(0.0) + run(1.0))[..., 1:-2])

    def test_mask_multiplies(self):
        x, offset, weight, bias, mask = _inputs(2, 4, 7, 7, 3, 3, 1, 1, 1, 1, 2)
        plain = deform_conv2d(x, offset, weight, None, padding=1)
        half = deform_conv2d(x, offset, weight, None, padding=1, mask=torch.full_like(mask, 0.5))
        torch.testing.assert_close(half, 0.5 * plain)
        # only the centre tap kept: a 1x1 convolution with the centre weights
        centre = torch.zeros_like(mask).view(2, 2, 9, 7, 7)
        centre[:, :, 4] = 1
        zero = torch.zeros_like(offset)
        out = deform_conv2d(x, zero, weight, bias, padding=1, mask=centre.view_as(mask))
        torch.testing.assert_close(out, F.conv2d(x, weight[..., 1:2, 1:2], bias))
        # the mask is a scalar per (offset group, tap, pixel): scaling one group's mask scales its channels only
        m = torch.ones_like(mask).view(2, 2, 9, 7, 7)
        m[:, 1] = 0
        out = deform_conv2d(x, zero, weight, None, padding=1, mask=m.view_as(mask))
        torch.testing.assert_close(out, F.conv2d(x[:, :2], weight[:, :2], padding=1))

    def test_out_of_bounds_reads_zero(self):
        x, offset, weight, _, _ = _inputs(1, 2, 5, 5, 2, 3, 1, 1, 1, 1, 1)
        far = torch.full_like(offset, 100.0)
        assert deform_conv2d(x, far, weight, padding=1).abs().max() == 0

    def test_gradcheck(self):
        x, offset, weight, bias, mask = _inputs(1, 4, 4, 5, 2, 3, 1, 1, 1, 2, 2)
        args = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]

        def fn(x, offset, weight, bias, mask):
            return deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)

        assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)

    @pytest.mark.parametrize("budget", [1, 2 * 4 * 9 * 7 * 3])  # one output row a band; three rows
    def test_bands_of_rows_give_the_whole_result_and_its_gradients(self, monkeypatch, budget):
        x, offset, weight, bias, mask = _inputs(2, 4, 20, 11, 6, 3, 2, 2, 1, 2, 2, seed=5)  # 11 x 7 output
        args = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
        whole = deform_conv2d_torch(*args[:4], 2, 2, 1, args[4])
        grads = torch.autograd.grad(whole.square().sum(), args)
        monkeypatch.setattr(dcn, "COLUMN_BUDGET", budget)
        banded = deform_conv2d_torch(*args[:4], 2, 2, 1, args[4])
        assert banded.shape == (2, 6, 11, 7)
        torch.testing.assert_close(banded, whole)
        for a, b in zip(torch.autograd.grad(banded.square().sum(), args), grads, strict=True):
            torch.testing.assert_close(a, b)

    def test_matches_kornia(self):
        aliked = pytest.importorskip("kornia.feature.aliked.deform_conv2d")
        for k, s, p, d, groups, og in [(3, 1, 1, 1, 1, 2), (3, 2, 2, 2, 2, 4), ((1, 3), 1, 0, 1, 1, 1)]:
            x, offset, weight, bias, mask = _inputs(2, 8, 9, 10, 4, k, s, p, d, groups, og, seed=3)
            offset = offset * 3  # reach past the borders too
            for m in (None, mask):
                ours = deform_conv2d_torch(x, offset, weight, bias, s, p, d, m)
                ref = aliked.deform_conv2d(x, offset, weight, bias, s, p, d, m)
                torch.testing.assert_close(ours, ref)

    def test_float32(self):
        x, offset, weight, bias, mask = _inputs(1, 4, 6, 6, 4, 3, 1, 1, 1, 1, 1, dtype=torch.float32)
        out = deform_conv2d(x, offset, weight, bias, padding=1, mask=mask)
        ref = deform_conv2d(
            x.double(), offset.double(), weight.double(), bias.double(), padding=1, mask=mask.double()
        )
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)

    def test_exceptions(self):
        x, offset, weight, _, mask = _inputs(1, 4, 6, 6, 4, 3, 1, 1, 1, 1, 1)
        with pytest.raises(ValueError, match="offset has"):
            deform_conv2d(x, offset[:, :5], weight, padding=1)
        with pytest.raises(ValueError, match="offset must be"):
            deform_conv2d(x, offset, weight, padding=0)
        with pytest.raises(ValueError, match="mask must be"):
            deform_conv2d(x, offset, weight, padding=1, mask=mask[:, :3])
        with pytest.raises(ValueError, match="offset groups"):
            deform_conv2d(x, torch.zeros(1, 18 * 3, 6, 6, dtype=x.dtype), weight, padding=1)

    def test_torchvision_dispatch_equals_fallback(self):
        op = dcn._torchvision_deform_conv2d()
        if op is None:
            pytest.skip("torchvision does not import here")
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        for device in devices:
            for k, s, p, d, groups, og in [(3, 1, 1, 1, 1, 2), (3, 2, 2, 2, 2, 4)]:
                x, offset, weight, bias, mask = (
                    t.to(device) for t in _inputs(2, 8, 9, 10, 4, k, s, p, d, groups, og, seed=5)
                )
                offset = offset * 3
                for m in (None, mask):
                    ref = deform_conv2d_torch(x, offset, weight, bias, s, p, d, m)
                    got = op(x, offset, weight, bias, stride=s, padding=p, dilation=d, mask=m)
                    torch.testing.assert_close(got, ref)
                    torch.testing.assert_close(deform_conv2d(x, offset, weight, bias, s, p, d, m), ref)

    def test_cpu_does_not_need_torchvision(self, monkeypatch):
        monkeypatch.setattr(dcn, "_TORCHVISION_OP", False)
        x, offset, weight, bias, mask = _inputs(1, 4, 6, 6, 4, 3, 1, 1, 1, 1, 1)
        torch.testing.assert_close(
            deform_conv2d(x, offset, weight, bias, padding=1, mask=mask),
            deform_conv2d_torch(x, offset, weight, bias, padding=1, mask=mask),
        )


class TestModules:
    def test_deform_conv_module(self):
        m = DeformConv2d(8, 6, 3, padding=1, groups=2, offset_groups=4)
        x = torch.rand(2, 8, 7, 9)
        out = m(x, torch.zeros(2, 2 * 4 * 9, 7, 9))
        torch.testing.assert_close(out, F.conv2d(x, m.weight, m.bias, padding=1, groups=2))
        assert "offset_groups=4" in repr(m)

    def test_modulated_needs_mask(self):
        m = ModulatedDeformConv(4, 4, 3, padding=1, offset_groups=2)
        x = torch.rand(1, 4, 5, 5)
        with pytest.raises(ValueError, match="needs a mask"):
            m(x, torch.zeros(1, 36, 5, 5))
        out = m(x, torch.zeros(1, 36, 5, 5), torch.ones(1, 18, 5, 5))
        out.sum().backward()
        assert m.weight.grad is not None and m.bias.grad is not None

    def test_bad_channels(self):
        with pytest.raises(ValueError, match="divisible"):
            DeformConv2d(6, 4, 3, offset_groups=4)
