"""Test-time flow refinement: it recovers a known flow from the LR observation, and how the package uses it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import check_flow_hook_in_eval_only
from sschsr.errors import InputError
from sschsr.models.baselines import Bicubic
from sschsr.models.flow import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.ops.degrade import blur, degrade, gaussian_kernel, low_pass, upsample
from sschsr.ops.flow_refine import (
    FlowRefiner,
    checked_settings,
    correction,
    local_normalise,
    observe,
    refine_flow,
)
from sschsr.ops.warp import coords_grid, flow_warp
from sschsr.pipeline import with_flow_refinement

SCALE, SIZE = 4, 96


def observed_pair(generator: torch.Generator):
    """A textured reference ``(1, 3, 96, 96)``, a smooth true flow and ``rgb_hsi``: the reference warped by
    that flow, degraded at x4 and upsampled as the LR side is."""
    ref = F.interpolate(
        torch.rand(1, 3, SIZE // 6, SIZE // 6, generator=generator), size=(SIZE, SIZE), mode="bicubic"
    )
    ref = ref.clamp(0, 1)
    xy = coords_grid(1, SIZE, SIZE)
    flow = torch.stack([1.5 + torch.sin(xy[:, 1] / 15), -1.0 + 0.8 * torch.cos(xy[:, 0] / 20)], 1)
    rgb_hsi = upsample(degrade(flow_warp(ref, flow, padding_mode="border"), SCALE), SCALE)
    return ref, flow, rgb_hsi


def interior_epe(flow: torch.Tensor, truth: torch.Tensor, margin: int = 8) -> float:
    return (flow - truth)[..., margin:-margin, margin:-margin].norm(dim=1).mean().item()


@pytest.mark.parametrize("offset", [(1.5, -1.0), (2.5, 2.5)])
def test_recovers_the_true_flow_from_a_perturbed_one(offset, generator):
    ref, truth, rgb_hsi = observed_pair(generator)
    start = truth + torch.tensor(offset).view(1, 2, 1, 1)
    refined = FlowRefiner(SCALE, iters=100)(start, rgb_hsi, ref)
    assert interior_epe(start, truth) > 1.5
    assert interior_epe(refined, truth) < 0.15


def test_the_true_flow_stays(generator):
    ref, truth, rgb_hsi = observed_pair(generator)
    assert interior_epe(FlowRefiner(SCALE, iters=50)(truth, rgb_hsi, ref), truth) < 0.1


def test_works_under_inference_mode_and_returns_no_graph(generator):
    ref, truth, rgb_hsi = observed_pair(generator)
    with torch.inference_mode():
        out = refine_flow(truth + 1, rgb_hsi, ref, FlowRefiner(SCALE, iters=5))
    assert out.shape == truth.shape and out.dtype == torch.float32 and not out.requires_grad
    assert torch.isfinite(out).all()


def test_zero_steps_and_tiny_images_leave_the_flow_as_it_is(generator):
    flow = torch.randn(2, 2, 24, 40, generator=generator).half()
    rgb, ref = torch.rand(2, 2, 3, 24, 40, generator=generator)
    assert torch.equal(FlowRefiner(4, iters=0)(flow, rgb, ref), flow.float())
    tiny = torch.randn(1, 2, 12, 12, generator=generator)
    assert torch.equal(FlowRefiner(4)(tiny, rgb[:1, :, :12, :12], ref[:1, :, :12, :12]), tiny)


def test_odd_sizes(generator):
    flow = torch.zeros(1, 2, 37, 53)
    out = FlowRefiner(4, iters=3)(
        flow, torch.rand(1, 3, 37, 53, generator=generator), torch.rand(1, 3, 40, 50, generator=generator)
    )
    assert out.shape == (1, 2, 37, 53) and torch.isfinite(out).all()


def test_bad_inputs():
    with pytest.raises(ValueError, match="refine_flow expects"):
        FlowRefiner(4)(torch.zeros(1, 3, 32, 32), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="refine_flow expects"):
        FlowRefiner(4)(torch.zeros(1, 2, 32, 32), torch.rand(1, 3, 16, 32), torch.rand(1, 3, 32, 32))
    for bad in (
        {"scale": 0},
        {"scale": 4, "iters": -1},
        {"scale": 4, "lr": 0.0},
        {"scale": 4, "cells": ()},
        {"scale": 4, "cells": (0,)},
        {"scale": 4, "window": -1},
        {"scale": 4, "window": ()},
        {"scale": 4, "window": (2, -1)},
    ):
        with pytest.raises(ValueError, match="invalid FlowRefiner"):
            FlowRefiner(**bad)


def test_several_windows_average_their_data_terms(generator):
    ref, truth, rgb_hsi = observed_pair(generator)
    start = truth + torch.tensor([1.5, -1.0]).view(1, 2, 1, 1)
    one = FlowRefiner(SCALE, iters=100, window=1)(start, rgb_hsi, ref)
    assert torch.equal(FlowRefiner(SCALE, iters=100, window=(1,))(start, rgb_hsi, ref), one)
    # the mean, not the sum: a window given twice weighs its term as once against the smoothness penalty
    # (20 steps: over many, Adam's normalised steps turn rounding differences into visible ones)
    twice, once = (FlowRefiner(SCALE, iters=20, window=w)(start, rgb_hsi, ref) for w in ((1, 1), 1))
    torch.testing.assert_close(twice, once, atol=1e-3, rtol=0)
    both = FlowRefiner(SCALE, iters=100, window=(1, 3))
    refined = both(start, rgb_hsi, ref)
    assert both.windows == (1, 3) and not torch.equal(refined, one)
    assert interior_epe(refined, truth) < 0.15
    assert FlowRefiner.from_settings(SCALE, both.settings()) == both


def test_observe_is_the_degradation_seen_on_the_lr_grid(generator):
    x = torch.rand(2, 3, 32, 48, generator=generator)
    expected = F.avg_pool2d(upsample(degrade(x, 4), 4), 4)
    assert torch.allclose(observe(x, 4), expected, atol=1e-6)
    # any size, float64, gradients: the block means of low_pass (one matrix per axis computes it)
    for (h, w), s in [((29, 45), 8), ((12, 20), 4), ((6, 9), 3)]:
        z = torch.rand(1, 2, h, w, generator=generator, dtype=torch.float64, requires_grad=True)
        got, want = observe(z, s), F.avg_pool2d(low_pass(z, s), s)
        torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
        seed = torch.rand_like(want)
        (g_got,), (g_want,) = torch.autograd.grad(got, z, seed), torch.autograd.grad(want, z, seed)
        torch.testing.assert_close(g_got, g_want, atol=1e-12, rtol=0)
    # the strided blur degrade uses is the blur, subsampled
    k = gaussian_kernel(8, 3.0)
    assert torch.equal(blur(x, k, stride=3), blur(x, k)[..., ::3, ::3])


def test_local_normalise_removes_gain_and_offset(generator):
    x = torch.rand(1, 3, 20, 20, generator=generator)
    a, b = local_normalise(x, 2, 1e-8), local_normalise(3 * x + 0.2, 2, 1e-8)
    assert torch.allclose(a, b, atol=1e-3)
    assert torch.equal(local_normalise(x, 0, 1e-5), x)


def test_correction_is_bilinear_between_control_points():
    d = torch.zeros(1, 2, 3, 3)
    d[0, 0, 1, 1] = 1.0
    field = correction([d], (4,), (9, 9))
    assert field.shape == (1, 2, 9, 9)
    assert field[0, 0, 4, 4] == 1.0 and field[0, 0, 4, 6] == 0.5 and field[0, 0, 0, 0] == 0.0
    assert torch.equal(field[0, 1], torch.zeros(9, 9))
    # PyTorch's bilinear interpolation (align_corners) of each level, cropped, summed
    gen = torch.Generator().manual_seed(0)
    deltas = [
        torch.rand(2, 2, 4, 6, generator=gen, dtype=torch.float64),
        torch.rand(2, 2, 7, 11, generator=gen, dtype=torch.float64),
    ]
    want = sum(
        F.interpolate(
            d,
            size=((d.shape[-2] - 1) * c + 1, (d.shape[-1] - 1) * c + 1),
            mode="bilinear",
            align_corners=True,
        )[..., :23, :37]
        for d, c in zip(deltas, (8, 4), strict=True)
    )
    torch.testing.assert_close(correction(deltas, (8, 4), (23, 37)), want, atol=1e-12, rtol=0)


class TestInTheNetwork:
    def test_with_flow_refinement_sets_and_clears_the_refiner(self):
        net = SSCHSR(4, flow_net=RAFT("small"))
        assert with_flow_refinement(net, 8, 20) is net and net.flow_refiner == FlowRefiner(8, 20)
        assert with_flow_refinement(net, 8, 0).flow_refiner is None
        given = with_flow_refinement(net, 8, 20, {"window": 2, "iters": 5}).flow_refiner
        assert given == FlowRefiner(8, 20, window=2) != FlowRefiner(8, 20)  # the steps are the argument's
        with pytest.raises(InputError, match="must be >= 0"):
            with_flow_refinement(net, 8, -1)
        bicubic = Bicubic()
        assert with_flow_refinement(bicubic, 8) is bicubic and not hasattr(bicubic, "flow_refiner")
        no_flow = SSCHSR(4)  # an aligned reference: nothing to refine
        assert with_flow_refinement(no_flow, 8).flow_refiner is None

    def test_estimate_flow_refines_in_evaluation_mode_only(self, generator):
        calls = []

        def refiner(flow, rgb_hsi, ref):
            calls.append(flow.shape)
            return flow + 1

        check_flow_hook_in_eval_only("flow_refiner", refiner, generator)
        assert calls == [(1, 2, 32, 32)]

    def test_the_self_ensemble_refines_once_and_passes_the_flow_on(self, generator):
        from sschsr.models.ensemble import SelfEnsemble

        calls = []

        def refiner(flow, rgb_hsi, ref):
            calls.append(flow.shape)
            return flow + 0.5

        net = SSCHSR(4, flow_net=RAFT("small")).eval()
        net.flow_refiner = refiner
        lr_up, rgb, ref = (
            torch.rand(1, 4, 32, 32, generator=generator),
            *torch.rand(2, 1, 3, 32, 32, generator=generator),
        )
        with torch.no_grad():
            out = SelfEnsemble(net, 8, shift=1.0)(lr_up, ref, rgb)
            assert calls == [(1, 2, 32, 32)] and out["flow"].shape == (1, 2, 32, 32)
            given = net(lr_up, ref, rgb, flow=out["flow"])
        torch.testing.assert_close(given["flow"], out["flow"])
        torch.testing.assert_close(given["ref_warp0"], out["ref_warp0"])
        with pytest.raises(ValueError, match="flow"):
            net(lr_up, ref, rgb, flow=torch.zeros(1, 2, 16, 32))


def test_sr_module_trains_on_the_refined_flow(generator):
    """``SRModule(flow_refine=N)`` hands the network the refined flow of its frozen flow network."""
    from sschsr.lit.sr import SRModule

    net = SSCHSR(4, flow_net=RAFT("small"))
    lr_up = torch.rand(1, 4, 64, 64, generator=generator)
    rgb, ref = torch.rand(2, 1, 3, 64, 64, generator=generator)
    plain = SRModule(net, scale=4)(lr_up, ref, rgb)["flow"]
    refined = SRModule(net, scale=4, flow_refine=5)(lr_up, ref, rgb)["flow"]
    expected = FlowRefiner(4, 5)(plain.detach(), rgb, ref)
    torch.testing.assert_close(refined, expected)
    assert (refined - plain).abs().max() > 1e-4
    with pytest.raises(ValueError, match="flow_refine"):
        SRModule(net, scale=4, flow_refine=-1)
    # the refinement's other settings: a window of 2 instead of the default two
    window2 = SRModule(net, scale=4, flow_refine=5, flow_refiner={"window": 2})(lr_up, ref, rgb)["flow"]
    torch.testing.assert_close(window2, FlowRefiner(4, 5, window=2)(plain.detach(), rgb, ref))
    assert (window2 - refined).abs().max() > 1e-4
    for bad in ({"window": -1}, {"no_such_field": 1}, {"iters": "x"}, [2]):
        with pytest.raises(ValueError, match="flow_refiner"):
            SRModule(net, scale=4, flow_refine=5, flow_refiner=bad)


def test_checked_settings_accept_fields_and_refuse_the_rest():
    given = {"window": [1, 3], "smooth": 0.02}
    assert checked_settings(given) is given and checked_settings({"iters": 3}) == {"iters": 3}
    for bad, exclude in (
        ({"iters": 3}, ("scale", "iters")),
        ({"scale": 4}, ("scale",)),
        ({"no_such_field": 1}, ()),  # a TypeError of the dataclass, raised as ValueError
        ({"window": -1}, ()),
        ([1], ()),
    ):
        with pytest.raises(ValueError):
            checked_settings(bad, exclude)


def test_autocast_does_not_lower_its_precision(generator):
    ref, truth, rgb_hsi = observed_pair(generator)
    start = truth + 1.0
    plain = FlowRefiner(SCALE, iters=20)(start, rgb_hsi, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = FlowRefiner(SCALE, iters=20)(start, rgb_hsi, ref)
    torch.testing.assert_close(autocast, plain)


def test_settings_state_every_field_but_the_scale():
    from sschsr.ops.flow_refine import refiner_settings

    settings = FlowRefiner(8, iters=7, cells=(32, 16)).settings()
    assert settings["iters"] == 7 and settings["cells"] == [32, 16] and "scale" not in settings
    assert FlowRefiner.from_settings(8, settings) == FlowRefiner(8, iters=7, cells=(32, 16))
    assert refiner_settings(0) is None and refiner_settings(5) == FlowRefiner(4, 5).settings()
