"""The degradation family (sschsr.ops.degradations): each member against a hand computation, the draws,
the presentation on the paper's grid, and the config group."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sschsr.errors import InputError
from sschsr.ops.degradations import (
    DegradationFamily,
    Observation,
    Psf,
    grid_phase,
    low_pass_as,
    named_observation,
    pixel_weights,
    present,
    psf_matrix,
)
from sschsr.ops.degrade import blur_decimate, content_shift, upsample


def test_grid_phases_match_the_content_shifts():
    for s in (2, 4, 8, 16):
        assert grid_phase(s, "paper") == pytest.approx((s - 1) / 2 - content_shift(s))
        assert grid_phase(s, "block") == (s - 1) / 2
    assert grid_phase(8, "paper") == 0.5


def test_the_paper_member_is_the_papers_degradation_bit_for_bit():
    hr = torch.rand(2, 3, 32, 40)
    torch.testing.assert_close(Observation().observe(hr, 8), blur_decimate(hr, 8), atol=0, rtol=0)
    # and draws nothing from the generator (the evaluation pairs of earlier records stay as they were)
    g = torch.Generator().manual_seed(5)
    DegradationFamily().draw(8, g)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("scale", [4, 8])
def test_block_means_by_hand(scale):
    hr = torch.rand(1, 2, 4 * scale, 3 * scale, dtype=torch.float64)
    lr = named_observation("block", scale).observe(hr, scale)
    by_hand = hr.reshape(1, 2, 4, scale, 3, scale).mean((3, 5))
    torch.testing.assert_close(lr, by_hand, atol=1e-12, rtol=0)


def test_gaussian_at_block_centres_by_hand():
    # LR pixel i at HR (s i + (s - 1) / 2): each HR pixel weighted by the Gaussian integrated over it
    s, sigma, n = 8, 2.0, 64
    row = np.random.default_rng(0).random(n)
    m = psf_matrix(n, s, grid_phase(s, "block"), sigma, 0.0).numpy()
    for i in (3, 4):  # away from the borders
        c = s * i + (s - 1) / 2
        j = np.arange(n)
        w = norm.cdf((j - c + 0.5) / sigma) - norm.cdf((j - c - 0.5) / sigma)
        assert m[i] @ row == pytest.approx((w / w.sum()) @ row, abs=1e-6)  # truncated beyond 4 sigma
    # centred: the weights are symmetric about the block's centre
    i = 4
    centre = s * i + (s - 1) / 2
    left, right = m[i, int(centre - 0.5) :: -1][:8], m[i, int(centre + 0.5) :][:8]
    np.testing.assert_allclose(left, right, atol=1e-14)


def test_pixel_weights_sum_to_one_and_have_the_expected_variance():
    offsets = torch.arange(-60, 61, dtype=torch.float64) + 0.3
    for sigma, area in [(0.0, 8.0), (2.0, 0.0), (1.5, 4.0), (0.0, 0.0)]:
        w = pixel_weights(offsets, sigma, area)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-9)
        mean = float((w * offsets).sum())
        var = float((w * (offsets - mean) ** 2).sum())
        # Gaussian + box of the area + the pixel's own footprint (variance 1/12 each box), the pixel grid
        # sampling adds nothing for a smooth kernel
        if sigma > 0:
            assert mean == pytest.approx(0.0, abs=1e-6)
            assert var == pytest.approx(sigma**2 + area**2 / 12 + 1 / 12, rel=2e-3)


def test_psf_matrix_rows_sum_to_one_at_the_borders():
    m = psf_matrix(20, 4, 1.5, 3.0, 4.0)
    torch.testing.assert_close(m.sum(1), torch.ones(5, dtype=torch.float64))
    assert (m >= 0).all()


def test_noise_statistics():
    obs = Observation(psf=Psf(sigma=0.0, area=4.0), phase=1.5, noise=0.01, spread=0.0, shot=4e-4)
    hr = torch.full((1, 4, 256, 256), 0.25)
    lr = obs.observe(hr, 4, torch.Generator().manual_seed(0))
    std = float((lr - 0.25).std())
    assert std == pytest.approx(math.sqrt(0.01**2 + 4e-4 * 0.25), rel=0.03)
    spread = Observation(psf=Psf(sigma=0.0, area=4.0), phase=1.5, noise=0.01, spread=0.5)
    per_band = (spread.observe(torch.zeros(1, 64, 128, 128), 4, torch.Generator().manual_seed(1))).std(
        (0, 2, 3)
    )
    assert 0.005 * 0.97 < float(per_band.min()) and float(per_band.max()) < 0.015 * 1.03
    assert float(per_band.max() / per_band.min()) > 1.8  # they do differ per band


def test_draws_cover_the_family_and_repeat_with_the_seed():
    fam = DegradationFamily.of(paper=0.2)
    draws = [fam.draw(8, torch.Generator().manual_seed(i)) for i in range(400)]
    assert draws[7] == fam.draw(8, torch.Generator().manual_seed(7))
    papers = sum(d.psf.paper for d in draws)
    assert 50 < papers < 110  # about 80
    others = [d for d in draws if not d.psf.paper]
    phases = {d.phase for d in others}
    assert 0.5 in phases and 3.5 in phases and any(0.5 < p < 3.5 for p in phases)
    blocks = [d for d in others if d.psf.area == 8.0]
    assert 0.35 < len(blocks) / len(others) < 0.65
    sigmas = [d.psf.sigma for d in others if d.psf.area == 0]
    assert min(sigmas) >= 1.6 - 1e-9 and max(sigmas) <= 4.8 + 1e-9
    ratios = [d.psf.widths()[1] / d.psf.widths()[0] for d in others if d.psf.sigma > 0]
    assert min(ratios) >= 1 / 1.25 - 1e-9 and max(ratios) <= 1.25 + 1e-9
    assert any(d.noise > 0 for d in others) and any(d.noise == 0 for d in others)


def test_presenting_on_the_paper_grid_aligns_block_data_with_paper_data():
    # a smooth scene: block data moved by phase - 0.5 px show the scene where paper data do (within the
    # difference of the two PSFs, small on a smooth scene), and 3 px off without the move
    s = 8
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    hr = (0.5 + 0.4 * torch.sin(xx / 9) * torch.cos(yy / 11))[None, None]
    paper = upsample(Observation().observe(hr, s), s)
    obs = named_observation("block", s)
    block_up = upsample(obs.observe(hr, s), s)
    inner = (..., slice(24, -24), slice(24, -24))

    def off(shift):
        return float((present(block_up, shift) - paper)[inner].abs().mean())

    assert obs.presentation(s) == 3.0
    assert off(3.0) < min(off(2.5), off(3.5), off(2.0), off(4.0))  # the best move is the presentation's
    assert off(0.0) > 5 * off(3.0)


def test_bad_fields_are_refused():
    with pytest.raises(InputError, match="probability"):
        DegradationFamily.of(paper=1.5)
    with pytest.raises(InputError, match="unknown degradation field"):
        DegradationFamily.of({"sigmaa": [1, 2]})
    with pytest.raises(InputError, match="range"):
        DegradationFamily.of(sigma=[0.5, 0.2])
    with pytest.raises(InputError, match="phase 0.5"):
        Observation(phase=3.5)
    with pytest.raises(InputError, match="unknown degradation"):
        named_observation("box", 8)


@pytest.mark.parametrize("data", ["cave", "cave_procedural", "geotiff", "hsirefsr", "procedural"])
@pytest.mark.parametrize("degradation", ["paper", "family", "block"])
def test_the_degradation_group_composes_with_every_data_config(data, degradation):
    from helpers import compose_run

    cfg = compose_run(None, [f"data={data}", f"degradation={degradation}", "experiment=full"])
    fam = DegradationFamily.of(dict(cfg.data.degradation))
    assert fam.always_paper == (degradation == "paper")
    if degradation == "block":
        d = fam.draw(4, torch.Generator().manual_seed(0))
        assert d.psf.area == 4.0 and d.phase == 1.5 and d.noise == 0


# ------------------------------------------------------------------------------- test-time PSF


def _scene(size: int = 128, bands: int = 8, seed: int = 0) -> torch.Tensor:
    """A textured smooth cube ``(1, bands, size, size)`` float64 in about [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    from sschsr.ops.degrade import smooth

    x = smooth(torch.rand(1, bands, size, size, generator=g, dtype=torch.float64), 1.5)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return 0.1 + 0.8 * x


@pytest.mark.parametrize("scale", [4, 8])
@pytest.mark.parametrize(
    "kind,sigma,noise",
    [("paper", 0, 0), ("block", 0, 0), ("gauss", 2.0, 0.005), ("gauss", 0.5, 0), ("block", 1.0, 0.01)],
)
def test_the_psf_estimate_recovers_known_psfs(scale, kind, sigma, noise):
    """From the true scene, the PSF of the data is found: the same kind, its std within 0.05 LR px (the
    candidates' spacing), whatever the noise (stated error: at most one candidate step)."""
    from sschsr.ops.psf_estimate import estimate_psf

    if kind == "gauss":
        sigma = sigma * scale / 4  # 0.5 and 0.125 LR px
    hr = _scene()
    obs = named_observation(kind, scale, sigma, noise)
    lr_up = present(
        upsample(obs.observe(hr, scale, torch.Generator().manual_seed(1)), scale), obs.presentation(scale)
    )
    found = estimate_psf(hr, lr_up, scale, obs.phase).observation
    assert found.psf.paper == obs.psf.paper and found.psf.area == obs.psf.area
    assert abs(found.psf.sigma - obs.psf.sigma) <= 0.05 * scale + 1e-9


def test_the_psf_estimate_fits_gains_for_another_images_colours():
    from sschsr.ops.psf_estimate import estimate_psf

    hr = _scene(bands=3)
    obs = named_observation("gauss", 8, 3.2)
    lr_up = present(upsample(obs.observe(hr, 8), 8), obs.presentation(8))
    other_colours = 0.3 + 0.5 * hr.flip(1)  # channels permuted and scaled, as a photo's
    assert estimate_psf(
        other_colours, lr_up.flip(1), 8, obs.phase, affine=True
    ).observation.psf.sigma == pytest.approx(3.2)


@pytest.mark.parametrize("kind,sigma", [("block", 0.0), ("gauss", 2.0)])
def test_back_projection_with_the_datas_psf_explains_them(kind, sigma):
    """Back-projection told the data's PSF makes a blurred estimate agree with the data through that PSF and
    gets nearer the truth than told the paper's; the truth is its fixed point."""
    from sschsr.ops.back_projection import back_project
    from sschsr.ops.degrade import smooth

    s = 8
    hr = _scene().float()
    obs = named_observation(kind, s, sigma)
    lr_up = present(upsample(obs.observe(hr, s), s), obs.presentation(s)).float()
    guess = smooth(hr, 2.0)
    told = back_project(guess, lr_up, s, 60, correction_std=None, observation=obs)
    paper = back_project(guess, lr_up, s, 60, correction_std=None)
    inner = (..., slice(16, -16), slice(16, -16))

    def rmse(a, b):
        return float((a - b)[inner].square().mean().sqrt())

    assert rmse(low_pass_as(told, s, obs), lr_up) < 0.1 * rmse(low_pass_as(guess, s, obs), lr_up)
    assert rmse(told, hr) < rmse(paper, hr) and rmse(told, hr) < rmse(guess, hr)
    torch.testing.assert_close(
        back_project(hr, lr_up, s, 20, correction_std=None, observation=obs)[inner],
        hr[inner],
        atol=2e-3,
        rtol=0,
    )  # the borders differ: the move repeats them


def test_flow_refinement_takes_the_psf_and_logs_its_estimate():
    from sschsr.ops.flow_refine import FlowRefiner, observe, refine_flow

    s = 4
    hr = _scene(64, 3)
    obs = named_observation("block", s)
    lr_up = present(upsample(obs.observe(hr, s), s), obs.presentation(s)).float()
    # observe() of the presented observation: the block means of its low pass
    torch.testing.assert_close(
        observe(hr, s, obs), torch.nn.functional.avg_pool2d(low_pass_as(hr, s, obs), s), atol=1e-12, rtol=0
    )
    refiner = FlowRefiner(s, iters=2, psf="auto", phase=obs.phase)
    refine_flow(torch.zeros(1, 2, 64, 64), lr_up, hr.float(), refiner)
    assert len(refiner.log) == 1 and refiner.log[0].observation.psf.area == s
    assert refiner.settings()["psf"] == "auto" and "log" not in refiner.settings()
    assert "psf" not in FlowRefiner(s).settings()  # the paper's: records as before


def test_back_projection_auto_takes_its_psf_from_the_output_or_the_refinement():
    """BackProjected with psf auto estimates from the model's output; auto-reference takes the estimate the
    model's flow refinement logged during the same call."""
    from torch import nn

    from sschsr.models.ensemble import BackProjected
    from sschsr.ops.flow_refine import FlowRefiner
    from sschsr.ops.psf_estimate import PsfEstimate

    s = 4
    hr = _scene(64, 8).float()
    obs = named_observation("block", s)
    lr_up = present(upsample(obs.observe(hr, s), s), obs.presentation(s)).float()
    logged = PsfEstimate(named_observation("gauss", s, 3.0), ())

    class Oracle(nn.Module):  # returns the truth; its "refinement" logs a made-up estimate
        def __init__(self):
            super().__init__()
            self.flow_refiner = FlowRefiner(s, psf="auto", phase=obs.phase)
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, lr_up, ref, rgb_hsi):
            self.flow_refiner.log.append(logged)
            return {"sr": hr.clone()}

    auto = BackProjected(Oracle(), s, 5, psf="auto", phase=obs.phase)
    auto(lr_up, hr[:, :3], lr_up[:, :3])
    assert (
        auto.estimates[-1]["source"] == "output" and auto.estimates[-1]["estimate"].observation.psf.area == s
    )
    ref = BackProjected(Oracle(), s, 5, psf="auto-reference", phase=obs.phase)
    ref(lr_up, hr[:, :3], lr_up[:, :3])
    assert ref.estimates[-1]["source"] == "reference" and ref.estimates[-1]["estimate"] is logged
    with pytest.raises(ValueError, match="psf must be"):
        BackProjected(Oracle(), s, 5, psf="guess")
