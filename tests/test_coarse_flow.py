"""The flow network on a shrunk pair: block means, the content shift carried over, the flow enlarged back,
and how the package sets it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from helpers import check_flow_hook_in_eval_only
from sschsr.errors import InputError
from sschsr.models.baselines import Bicubic
from sschsr.models.ensemble import dihedral_flow
from sschsr.models.flow import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.ops.coarse_flow import AUTO_SIDE, MIN_SIDE, CoarseFlow, auto_factor, coarse_flow, shrink
from sschsr.ops.degrade import content_shift
from sschsr.ops.warp import move_content
from sschsr.pipeline import with_coarse_flow


def test_shrink_takes_block_means_and_repeats_the_far_edges():
    x = torch.arange(2 * 5 * 7, dtype=torch.float64).view(1, 2, 5, 7)
    small = shrink(x, 2)
    assert small.shape == (1, 2, 3, 4)
    assert small[0, 0, 0, 0] == x[0, 0, :2, :2].mean()
    assert small[0, 1, 2, 3] == x[0, 1, 4, 6]  # the corner pixel repeated into its 2 x 2 block
    assert small[0, 0, 1, 3] == x[0, 0, 2:4, 6].mean()
    assert torch.equal(shrink(x, 1), x)


def test_factor_one_and_small_pairs_call_the_flow_function_as_they_are(generator):
    calls = []

    def flow_fn(a, b):
        calls.append(tuple(a.shape))
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])

    a, b = torch.rand(2, 1, 3, 2 * MIN_SIDE - 8, 200, generator=generator)
    coarse_flow(flow_fn, a, b, 1, 3.0)
    coarse_flow(flow_fn, a, b, 2, 3.0)  # would shrink below MIN_SIDE
    a, b = torch.rand(2, 1, 3, 2 * MIN_SIDE + 1, 2 * MIN_SIDE + 3, generator=generator)
    out = coarse_flow(flow_fn, a, b, 2, 3.0)
    assert calls == [(1, 3, 120, 200), (1, 3, 120, 200), (1, 3, MIN_SIDE + 1, MIN_SIDE + 2)]
    assert out.shape == (1, 2, 2 * MIN_SIDE + 1, 2 * MIN_SIDE + 3)


def test_a_constant_flow_is_enlarged_by_the_factor(generator):
    a, b = torch.rand(2, 2, 3, 150, 130, generator=generator)
    flow_fn = lambda x, y: torch.tensor([1.25, -0.5]).view(1, 2, 1, 1).expand(2, 2, *x.shape[-2:])  # noqa: E731
    out = coarse_flow(flow_fn, a, b, 2)
    assert out.shape == (2, 2, 150, 130)
    torch.testing.assert_close(out, torch.tensor([2.5, -1.0]).view(1, 2, 1, 1).expand_as(out))


def best_translation(a: torch.Tensor, b: torch.Tensor, radius: int = 6) -> tuple[int, int]:
    """The whole-pixel ``v`` with ``b(p + v) ~ a(p)`` (brute force over ``|v| <= radius``, interior)."""
    r = radius
    best, arg = float("inf"), (0, 0)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            err = a[..., r:-r, r:-r] - b[..., r + dy : b.shape[-2] - r + dy, r + dx : b.shape[-1] - r + dx]
            e = err.square().mean().item()
            if e < best:
                best, arg = e, (dx, dy)
    return arg


def test_the_content_shift_is_carried_over_so_a_shifted_estimator_finds_the_true_flow(generator):
    """An estimator that learnt the content shift ``s`` (it adds ``s`` to the motion it sees between its
    inputs, as the flow networks do for ``rgb_hsi``) finds the true flow on the full pair and, through
    :func:`coarse_flow` with that shift, on the shrunk one; told no shift, it is off by ``s``."""
    s, t = 2.0, (4.0, 6.0)
    scene = F.interpolate(torch.rand(1, 3, 40, 40, generator=generator), size=(160, 160), mode="bicubic")
    image1 = move_content(scene, s, s)  # rgb_hsi: the scene s px from its grid
    image2 = move_content(scene, *t)  # the reference: moved by the true flow t

    def learnt(a, b):
        dx, dy = best_translation(a, b)
        return torch.tensor([dx + s, dy + s]).view(1, 2, 1, 1).expand(1, 2, *a.shape[-2:])

    truth = torch.tensor(t).view(1, 2, 1, 1).expand(1, 2, 160, 160)
    torch.testing.assert_close(learnt(image1, image2), truth)
    torch.testing.assert_close(CoarseFlow(2, s)(learnt, image1, image2), truth)
    torch.testing.assert_close(coarse_flow(learnt, image1, image2, 2, 0.0), truth + s)
    # inside the self-ensemble, each flipped/transposed pass shrunk (as SelfEnsemble runs estimate_flow)
    ensembled = dihedral_flow(lambda a, b: coarse_flow(learnt, a, b, 2, s), image1, image2, 8, s)
    torch.testing.assert_close(ensembled[..., 8:-8, 8:-8], truth[..., 8:-8, 8:-8])


def test_the_automatic_factor_shrinks_large_pairs_only(generator):
    assert auto_factor(AUTO_SIDE, AUTO_SIDE + 7) == 2 and auto_factor(AUTO_SIDE - 1, 4000) == 1
    sizes = []

    def flow_fn(a, b):
        sizes.append(tuple(a.shape[-2:]))
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])

    for side in (AUTO_SIDE - 8, AUTO_SIDE):
        CoarseFlow(None, 3.0)(flow_fn, *torch.rand(2, 1, 3, side, side, generator=generator))
    assert sizes == [(AUTO_SIDE - 8,) * 2, (AUTO_SIDE // 2,) * 2]


def test_bad_factor():
    with pytest.raises(ValueError, match=">= 1"):
        CoarseFlow(0)


class TestInTheNetwork:
    def test_with_coarse_flow_sets_and_clears_it(self):
        net = SSCHSR(4, flow_net=RAFT("small"))
        assert with_coarse_flow(net, 8, 2) is net and net.coarse_flow == CoarseFlow(2, content_shift(8))
        assert with_coarse_flow(net, 8, 1).coarse_flow is None
        assert with_coarse_flow(net, 4).coarse_flow == CoarseFlow(None, content_shift(4))  # by size
        with pytest.raises(InputError, match="must be >= 1"):
            with_coarse_flow(net, 8, 0)
        bicubic = Bicubic()
        assert with_coarse_flow(bicubic, 8, 2) is bicubic and not hasattr(bicubic, "coarse_flow")
        assert with_coarse_flow(SSCHSR(4), 8, 2).coarse_flow is None  # no flow network

    def test_estimate_flow_runs_it_in_evaluation_mode_only(self, generator):
        calls = []

        def coarse(flow_fn, rgb_hsi, ref):
            calls.append(tuple(rgb_hsi.shape))
            return flow_fn(rgb_hsi, ref) + 1

        check_flow_hook_in_eval_only("coarse_flow", coarse, generator)
        assert calls == [(1, 3, 32, 32)]
