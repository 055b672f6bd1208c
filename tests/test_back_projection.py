"""Back-projection: the output is made to agree with the LR data, by the smallest change, and how the package
uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sschsr.errors import InputError
from sschsr.models.baselines import Bicubic
from sschsr.models.ensemble import BackProjected
from sschsr.ops.back_projection import (
    CORRECTION_STD,
    MIN_NOISE_BANDS,
    back_project,
    band_noise,
    spectral_denoise,
    spectral_filter,
)
from sschsr.ops.degrade import degrade, low_pass, upsample
from sschsr.pipeline import with_back_projection


def scene(generator: torch.Generator, size: tuple[int, int] = (48, 64), bands: int = 3) -> torch.Tensor:
    """A textured ``(2, bands, H, W)`` cube in [0, 1]."""
    coarse = torch.rand(2, bands, size[0] // 4, size[1] // 4, generator=generator)
    fine = 0.2 * torch.rand(2, bands, *size, generator=generator)
    return (0.8 * F.interpolate(coarse, size=size, mode="bicubic") + fine).clamp(0, 1)


def distance(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).norm().item()


@pytest.mark.parametrize("sigma", [None, 0.0])
@pytest.mark.parametrize("scale", [4, 8])
def test_the_output_explains_the_lr_data(scale, sigma, generator):
    hr = scene(generator)
    lr_up = low_pass(hr, scale)
    sr = hr + 0.1 * torch.randn(hr.shape, generator=generator)
    out = back_project(sr, lr_up, scale, iters=200, sigma=sigma)  # converged (a noise-like error, x4: slow)
    assert (low_pass(sr, scale) - lr_up).abs().max() > 1e-2
    assert (low_pass(out, scale) - lr_up).abs().max() < 1e-4
    # consistent cubes are left as they are: projecting again, or the scene itself
    assert distance(back_project(out, lr_up, scale, iters=200, sigma=sigma), out) < 1e-3 * distance(out, sr)
    torch.testing.assert_close(back_project(hr, lr_up, scale, iters=20, sigma=sigma), hr, atol=1e-5, rtol=0)


@pytest.mark.parametrize("scale", [4, 8])
def test_without_smoothing_it_is_the_euclidean_projection(scale, generator):
    """The consistent set holds ``hr``: the projection moves ``sr`` towards it and changes ``sr`` less than
    replacing it by ``hr`` would (it is the nearest consistent cube)."""
    hr = scene(generator)
    sr = hr + 0.1 * torch.randn(hr.shape, generator=generator)
    out = back_project(sr, low_pass(hr, scale), scale, iters=200, sigma=0)
    assert distance(out, hr) < distance(sr, hr)
    assert distance(out, sr) < distance(hr, sr)


def test_a_smooth_error_is_removed(generator):
    """What the degradation keeps is known from the data: most of a smooth error in brightness and spectral
    slope (what the networks leave) is taken out at x8, more with the smoothed correction than with the
    Euclidean projection, whose correction is a pattern of blur kernels."""
    hr = scene(generator)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
    bias = 0.05 * torch.stack([x, y, x * y]) + torch.tensor([0.03, -0.02, 0.01])[:, None, None]
    sr = hr + bias
    inner = (..., slice(8, -8), slice(8, -8))  # away from the borders, where the padding is a guess
    left = {
        sigma: distance(back_project(sr, low_pass(hr, 8), 8, 20, sigma)[inner], hr[inner])
        / distance(sr[inner], hr[inner])
        for sigma in (None, 0.0)
    }
    assert left[None] < 0.1 and left[None] < 0.5 * left[0.0]


def test_bands_and_samples_are_independent(generator):
    hr = scene(generator)
    lr_up = low_pass(hr, 8)
    sr = hr + 0.1 * torch.randn(hr.shape, generator=generator)
    out = back_project(sr, lr_up, 8, iters=20)
    changed = sr.clone()
    changed[1, 2] += 0.3 * torch.randn(changed[1, 2].shape, generator=generator)
    again = back_project(changed, lr_up, 8, iters=20)
    torch.testing.assert_close(again[0], out[0])
    torch.testing.assert_close(again[1, :2], out[1, :2])
    assert (again[1, 2] - out[1, 2]).abs().max() > 1e-3


def test_zero_steps_bad_inputs_and_modes(generator):
    hr = scene(generator)
    lr_up = low_pass(hr, 4)
    assert torch.equal(back_project(hr.half(), lr_up, 4, 0), hr.half().float())
    with pytest.raises(ValueError, match="one shape"):
        back_project(hr, lr_up[..., :-4], 4, 5)
    for bad in ({"iters": -1}, {"iters": 5, "sigma": -1.0}):
        with pytest.raises(ValueError, match="must be >= 0"):
            back_project(hr, lr_up, 4, **bad)
    sr = hr + 0.05
    expected = back_project(sr, lr_up, 4, 10)
    with torch.inference_mode():  # as sschsr-predict runs it
        inside = back_project(sr, lr_up, 4, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # computed in float32 all the same
        autocast = back_project(sr, lr_up, 4, 10)
    for out in (inside, autocast):
        assert out.dtype == torch.float32 and not out.requires_grad
        torch.testing.assert_close(out, expected)


class _Noisy(torch.nn.Module):
    """A network that returns ``lr_up`` plus a fixed error, and an extra output."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.05))

    def forward(self, lr_up, ref, rgb_hsi):
        return {"sr": lr_up + self.weight, "flow": torch.zeros(lr_up.shape[0], 2, *lr_up.shape[-2:])}


def test_the_wrapper_back_projects_sr_only(generator):
    hr = scene(generator)
    lr_up = low_pass(hr, 8)
    net = _Noisy()
    wrapped = with_back_projection(net, 8, 20)
    assert isinstance(wrapped, BackProjected)
    with torch.inference_mode():
        out = wrapped(lr_up, hr, hr)
    assert set(out) == {"sr", "flow"} and torch.equal(out["flow"], torch.zeros(2, 2, 48, 64))
    assert (low_pass(out["sr"], 8) - lr_up).abs().max() < 1e-4
    assert with_back_projection(net, 8, 0) is net
    assert (
        wrapped.correction_std == CORRECTION_STD
        and with_back_projection(net, 8, 20, None).correction_std is None
    )
    bicubic = Bicubic()
    assert with_back_projection(bicubic, 8, 20) is bicubic  # a method without weights stays what it is
    with pytest.raises(InputError, match="must be >= 0"):
        with_back_projection(net, 8, -1)


def spectral_scene(
    generator: torch.Generator, bands: int = 16, size: tuple[int, int] = (48, 64)
) -> torch.Tensor:
    """A ``(2, bands, H, W)`` cube in [0, 1] mixed from 3 smooth spectra (a rank-3 spectral structure, as
    natural scenes have few)."""
    abundance = scene(generator, size, 3)
    wl = torch.linspace(0, 1, bands)
    spectra = torch.stack([0.2 + 0.6 * wl, 0.8 - 0.5 * wl, 0.3 + 0.4 * torch.exp(-(((wl - 0.5) / 0.2) ** 2))])
    return torch.einsum("bkhw,kc->bchw", abundance, spectra / spectra.sum(0, keepdim=True))


def test_band_noise_is_the_noise_the_bands_do_not_share(generator):
    """Known answer, within what the other bands' noise leaks into the regression (a few percent high)."""
    hr = spectral_scene(generator, bands=31)
    std = torch.linspace(0.005, 0.02, 31).view(1, 31, 1, 1)
    noisy = hr + std * torch.randn(hr.shape, generator=generator)
    ratio = band_noise(noisy) / std
    assert ratio.shape == (2, 31, 1, 1) and 0.95 < ratio.min() and ratio.max() < 1.25 and ratio.mean() < 1.1
    assert band_noise(hr).max() < 1e-2 * std.min()  # noise-free: the bands explain each other
    # too few bands (or pixels) to tell noise from signal: none estimated
    assert torch.equal(band_noise(noisy[:, : MIN_NOISE_BANDS - 1]), torch.zeros(2, MIN_NOISE_BANDS - 1, 1, 1))
    assert torch.equal(band_noise(noisy[..., :8, :8]), torch.zeros(2, 31, 1, 1))
    with pytest.raises(ValueError, match="expects"):
        band_noise(noisy[0])


def test_the_spectral_filter_keeps_the_spectra_and_removes_noise(generator):
    hr = spectral_scene(generator)
    noisy = hr + 0.01 * torch.randn(hr.shape, generator=generator)
    noise = band_noise(noisy)
    gain = spectral_filter(noisy, noise)
    assert gain.shape == (2, 16, 16)
    torch.testing.assert_close(gain, gain.transpose(1, 2))
    values = torch.linalg.eigvalsh(gain)
    assert values.min() > -1e-5 and values.max() < 1 + 1e-5
    torch.testing.assert_close(values.sum(-1), torch.tensor([3.0, 3.0]), atol=0.2, rtol=0)  # the 3 spectra
    centred = (hr - hr.mean((-2, -1), keepdim=True)).flatten(2)
    assert (gain @ centred - centred).norm() < 0.05 * centred.norm()  # the scene's own spectra pass
    white = torch.randn(2, 16, 1000, generator=generator)
    assert (gain @ white).norm() < 0.5 * white.norm()  # white noise mostly does not
    assert distance(spectral_denoise(noisy, noise), hr) < 0.6 * distance(noisy, hr)
    assert torch.equal(spectral_denoise(hr, torch.zeros(2, 16, 1, 1)), hr)  # noise-free: as it is


@pytest.mark.parametrize("scale", [4, 8])
def test_noisy_lr_data_are_not_reproduced_noise_and_all(scale, generator):
    """With noise in the LR data, the exact fit reproduces it (amplified where the blur left the LR
    frequencies weak, x4); fitted to the spectrally filtered data with a damped correction, the output
    stays near the scene and still loses most of a smooth error. Told the data are noise-free, it is the exact fit."""
    hr = spectral_scene(generator)
    lr = degrade(hr, scale, noise_std=0.01, generator=generator)
    lr_up = upsample(lr, scale)
    y, x = torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 64), indexing="ij")
    sr = hr + 0.03 * x + 0.02 * y
    exact = back_project(sr, lr_up, scale, 20, correction_std=None)
    damped = back_project(sr, lr_up, scale, 20)
    inner = (..., slice(8, -8), slice(8, -8))
    error = {
        name: distance(out[inner], hr[inner])
        for name, out in [("sr", sr), ("exact", exact), ("damped", damped)]
    }
    assert error["damped"] < 0.5 * error["sr"] and error["damped"] < 0.8 * error["exact"]
    torch.testing.assert_close(back_project(sr, lr_up, scale, 20, noise=0.0), exact)
    with pytest.raises(ValueError, match="correction_std > 0"):
        back_project(sr, lr_up, scale, 20, correction_std=0.0)


def test_smoothed_low_pass_is_the_smoothing_then_the_degradation():
    # one matrix per axis for the smoothing and the paper's blur-and-decimate: equal to the convolutions
    from sschsr.ops.back_projection import smoothed_low_pass
    from sschsr.ops.degrade import blur, gaussian_kernel

    gen = torch.Generator().manual_seed(0)
    for (h, w), scale, sigma in [
        ((32, 48), 8, 2.0),
        ((29, 45), 4, 1.0),
        ((12, 20), 4, 2.5),
        ((6, 9), 2, 0.5),
    ]:
        z = torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
        kernel = gaussian_kernel(2 * round(3 * sigma) + 1, sigma, dtype=torch.float64).sum(0)
        want = low_pass(blur(z, kernel), scale)
        got = smoothed_low_pass(z, scale, sigma)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        seed = torch.rand_like(want)
        (g_got,), (g_want,) = torch.autograd.grad(got, z, seed), torch.autograd.grad(want, z, seed)
        torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)
    z = torch.rand(1, 2, 16, 16, generator=gen)
    assert torch.equal(smoothed_low_pass(z, 4, 0.0), low_pass(z, 4))
