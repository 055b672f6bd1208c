import pytest
import torch
import torch.nn.functional as F

from sschsr.ops.degrade import Degradation, blur, degrade, gaussian_kernel, upsample


class TestGaussianKernel:
    @pytest.mark.parametrize("size,sigma", [(8, 3.0), (7, 1.5), (1, 1.0)])
    def test_normalised_symmetric(self, size, sigma):
        k = gaussian_kernel(size, sigma)
        assert k.shape == (size, size)
        assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)

    def test_bad_args(self):
        with pytest.raises(ValueError):
            gaussian_kernel(0, 3.0)
        with pytest.raises(ValueError):
            gaussian_kernel(8, 0.0)


class TestDegrade:
    @pytest.mark.parametrize("scale", [2, 4, 8, 16])
    def test_shapes(self, scale):
        hr = torch.rand(2, 5, 32, 48)
        lr = degrade(hr, scale)
        assert lr.shape == (2, 5, 32 // scale, 48 // scale)
        assert upsample(lr, scale).shape == hr.shape

    @pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
    def test_upsample_is_pytorchs_bicubic(self, scale):
        # values and gradients of F.interpolate(bicubic, align_corners=False), odd and 1-pixel sizes too
        for h, w in [(7, 5), (1, 3), (2, 2), (16, 9)]:
            lr = torch.rand(2, 3, h, w, dtype=torch.float64, requires_grad=True)
            got, want = upsample(lr, scale), F.interpolate(lr, scale_factor=scale, mode="bicubic")
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
            seed = torch.rand_like(want)
            (g_got,) = torch.autograd.grad(got, lr, seed)
            (g_want,) = torch.autograd.grad(want, lr, seed)
            torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)

    def test_matrices_first_made_under_inference_mode_serve_gradients(self):
        # sschsr-predict upsamples its LR data under inference_mode; back-projection later differentiates
        # through the same (cached) matrix
        with torch.inference_mode():
            upsample(torch.rand(1, 1, 37, 41), 3)
        lr = torch.rand(1, 1, 37, 41, requires_grad=True)
        upsample(lr, 3).sum().backward()
        assert lr.grad is not None and lr.grad.shape == lr.shape

    def test_upsample_keeps_the_dtype_and_ignores_autocast(self):
        lr = torch.rand(1, 2, 6, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = upsample(lr, 4)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, F.interpolate(lr, scale_factor=4, mode="bicubic"), atol=2e-6, rtol=0)
        assert upsample(lr.double(), 2).dtype == torch.float64
        assert upsample(lr[0, 0], 2).shape == (12, 12)  # any leading dimensions
        with pytest.raises(ValueError, match="bicubic_matrix"):
            upsample(lr, 0)

    def test_blur_decimate_is_the_strided_convolution(self):
        # values and gradients of blur(x, gaussian_kernel(k, sigma), stride=s): odd sizes, sizes not
        # divisible by s, odd kernels, grids too small to reflect (replicated)
        from sschsr.ops.degrade import blur_decimate

        gen = torch.Generator().manual_seed(0)
        for h, w, s, k, sigma in [
            (32, 40, 4, 8, 3.0),
            (16, 16, 8, 8, 3.0),
            (29, 45, 8, 8, 3.0),
            (30, 21, 3, 5, 1.5),
            (4, 9, 2, 8, 3.0),
            (1, 3, 1, 8, 3.0),
        ]:
            x = torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
            got = blur_decimate(x, s, k, sigma)
            want = blur(x, gaussian_kernel(k, sigma, dtype=torch.float64), stride=s)
            torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
            seed = torch.rand_like(want)
            (g_got,), (g_want,) = torch.autograd.grad(got, x, seed), torch.autograd.grad(want, x, seed)
            torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert blur_decimate(torch.rand(1, 2, 16, 16), 4).dtype == torch.float32

    def test_noise_is_drawn_from_the_generator(self):
        hr = torch.rand(1, 3, 16, 16)
        a = degrade(hr, 4, noise_std=0.01, generator=torch.Generator().manual_seed(0))
        b = degrade(hr, 4, noise_std=0.01, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and not torch.equal(a, degrade(hr, 4))
        noise = a - degrade(hr, 4)
        assert 0.005 < float(noise.std()) < 0.015

    def test_constant_is_kept(self):
        hr = torch.full((1, 3, 32, 32), 0.42)
        assert torch.allclose(degrade(hr, 4), torch.full((1, 3, 8, 8), 0.42), atol=1e-6)
        assert torch.allclose(upsample(degrade(hr, 4), 4), hr, atol=1e-5)

    def test_even_kernel_shifts_half_a_pixel_and_decimation_keeps_first(self):
        # blurring a ramp x = column with the size-8 kernel gives column + 0.5 away from the borders;
        # decimation keeps columns 0, s, 2s, ...
        ramp = torch.arange(64.0).expand(1, 1, 64, 64).contiguous()
        blurred = blur(ramp, gaussian_kernel(8, 3.0))
        assert torch.allclose(blurred[0, 0, 10, 8:56], torch.arange(8.0, 56.0) + 0.5, atol=1e-3)
        lr = degrade(ramp, 8)
        assert torch.allclose(lr[0, 0, 3, 1:7], torch.arange(8.0, 56.0, 8.0) + 0.5, atol=1e-3)

    def test_blur_acts_per_band(self):
        hr = torch.zeros(1, 2, 16, 16)
        hr[0, 0, 8, 8] = 1.0
        out = blur(hr, gaussian_kernel(8, 3.0))
        assert out[0, 1].abs().max() == 0
        assert out[0, 0].sum().item() == pytest.approx(1.0, abs=1e-5)

    @pytest.mark.parametrize("size", [(16, 16), (13, 21), (5, 7)])
    @pytest.mark.parametrize("stride", [1, 3, 8])
    def test_separable_blur_equals_the_2d_kernel(self, size, stride):
        x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(0))
        for k in (gaussian_kernel(8, 3.0), gaussian_kernel(13, 2.0)):
            g = k.sum(0)
            torch.testing.assert_close(torch.outer(g, g), k)
            torch.testing.assert_close(blur(x, g, stride), blur(x, k, stride), rtol=0, atol=1e-6)

    def test_noise_is_seeded(self):
        hr = torch.rand(1, 3, 16, 16)
        a = degrade(hr, 4, noise_std=0.01, generator=torch.Generator().manual_seed(0))
        b = degrade(hr, 4, noise_std=0.01, generator=torch.Generator().manual_seed(0))
        clean = degrade(hr, 4)
        assert torch.equal(a, b)
        assert 0.005 < (a - clean).std().item() < 0.02

    def test_not_divisible(self):
        with pytest.raises(ValueError, match="divisible"):
            degrade(torch.rand(1, 3, 30, 32), 4)

    def test_module(self):
        d = Degradation(scale=8, noise_std=0.0)
        hr = torch.rand(1, 4, 64, 64)
        assert torch.equal(d(hr), degrade(hr, 8))

    def test_gradient(self):
        hr = torch.rand(1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: degrade(x, 2), (hr,))


def test_low_pass_is_the_degradation_upsampled_at_any_size():
    from sschsr.ops.degrade import low_pass

    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(low_pass(x, 8), upsample(degrade(x, 8), 8))
    odd = low_pass(x[..., :29, :45], 4)
    assert odd.shape == (2, 3, 29, 45) and torch.isfinite(odd).all()


def test_long_inputs_take_the_convolution_path_with_the_same_result(monkeypatch):
    # beyond MATRIX_MAX_SIZE the separable maps run as convolutions / PyTorch's interpolation
    from sschsr.ops import degrade as module
    from sschsr.ops.back_projection import smoothed_low_pass
    from sschsr.ops.flow_refine import correction, observe

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 40, 56, generator=gen, dtype=torch.float64)
    lr = torch.rand(2, 3, 5, 7, generator=gen, dtype=torch.float64)
    deltas = [torch.rand(2, 2, 6, 8, generator=gen, dtype=torch.float64)]

    def run():
        return (
            module.upsample(lr, 8),
            module.blur_decimate(x, 8),
            module.low_pass(x, 4),
            smoothed_low_pass(x, 8, 2.0),
            observe(x, 8),
            correction(deltas, (8,), (40, 56)),
        )

    dense = run()
    monkeypatch.setattr(module, "MATRIX_MAX_SIZE", 4)
    assert not module.use_matrices(5, 7)
    for got, want in zip(run(), dense, strict=True):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
