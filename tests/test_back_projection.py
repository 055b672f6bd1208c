"""Back-projection: the output is made to agree with the LR data, by the smallest change, and how the package
uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sschsr.data.degrade import low_pass
from sschsr.errors import InputError
from sschsr.inference import default_back_project, with_back_projection
from sschsr.models.baselines import Bicubic
from sschsr.models.ensemble import BackProjected
from sschsr.ops.back_projection import back_project


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
    bicubic = Bicubic()
    assert with_back_projection(bicubic, 8, 20) is bicubic  # a method without weights stays what it is
    with pytest.raises(InputError, match="must be >= 0"):
        with_back_projection(net, 8, -1)


def test_default_steps_by_scale():
    """On by default where it is robust to noise in the LR data (x8, x16), off at x4."""
    assert default_back_project(8) == default_back_project(16) == 20
    assert default_back_project(4) == 0
