"""The flow self-ensemble (sschsr.models.ensemble) and the content shift of the LR input it corrects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sschsr.errors import InputError
from sschsr.models.baselines import Bicubic
from sschsr.models.ensemble import (
    TRANSFORMS,
    SelfEnsemble,
    ShiftedInputs,
    dihedral_flow,
    transform_flow,
    transform_image,
    transform_set,
    untransform_flow,
    untransform_image,
)
from sschsr.models.sschsr import SSCHSR
from sschsr.ops.degrade import content_shift, degrade, lr_grid_shift, upsample
from sschsr.ops.warp import flow_warp, move_content
from sschsr.pipeline import on_lr_grid, with_tta

SEARCH = 6  # px: the brute-force matcher's search radius


@pytest.mark.parametrize(
    ("scale", "kernel", "expected"), [(8, 8, 3.0), (4, 8, 1.0), (16, 8, 7.0), (4, 7, 1.5)]
)
def test_content_shift_is_where_the_upsampled_lr_shows_a_ramp(scale, kernel, expected):
    """A linear ramp survives the blur and bicubic interpolation but for the shift, away from the borders:
    ``lr_up(x) = x - shift`` on average over each LR pixel (PyTorch's bicubic, a = -0.75, adds a ripple
    that is odd about the LR samples: up to 0.05 scale px, mean 0)."""
    assert content_shift(scale, kernel) == expected
    w = 32 * scale
    x = torch.arange(w, dtype=torch.float64)
    ramp = x.expand(1, 1, w, w).clone()  # hr(x, y) = x
    lr_up = upsample(degrade(ramp, scale, kernel_size=kernel), scale)[0, 0]
    inner = slice(4 * scale, -4 * scale)
    error = lr_up[inner, inner] - x[inner]
    assert error.mean().item() == pytest.approx(-expected, abs=1e-4)  # the kernel is float32
    assert (error + expected).abs().max() < 0.1 * scale


def test_content_shift_rejects_bad_arguments():
    with pytest.raises(ValueError):
        content_shift(0)


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(1, 3, h, w)`` smooth random texture in [0, 1] with no repeating pattern."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4 + 2, w // 4 + 2, generator=g)
    x = F.interpolate(x, size=(h + 8, w + 8), mode="bicubic", align_corners=False)[..., 4:-4, 4:-4]
    return x.clamp(0, 1)


def match(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The integer translation ``m`` with ``a(p) = b(p + m)`` (least squares over the interior), as a
    constant ``(B, 2, H, W)`` field: a flow estimator that commutes with every flip and transposition."""
    h, w = a.shape[-2:]
    r = SEARCH
    inner = a[..., r : h - r, r : w - r]
    best, best_err = (0, 0), float("inf")
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            err = (inner - b[..., r + dy : h - r + dy, r + dx : w - r + dx]).square().mean().item()
            if err < best_err:
                best, best_err = (dx, dy), err
    return a.new_tensor(best).view(1, 2, 1, 1).expand(a.shape[0], 2, h, w)


@pytest.mark.parametrize("transforms", sorted(TRANSFORMS))
def test_an_equivariant_estimator_is_unchanged(transforms):
    """An estimator that commutes with the symmetries gives the same flow in every transformed frame,
    mapped back: the ensemble is the true translation (non-square, to catch a transposition error)."""
    scene = texture(40, 48)
    t = (3, -2)
    ref = move_content(scene, *t)  # ref(p + t) = scene(p): the flow is t everywhere
    flow = dihedral_flow(match, scene, ref, transforms)
    assert flow.shape == (1, 2, 40, 48)
    torch.testing.assert_close(flow, torch.tensor(t, dtype=flow.dtype).view(1, 2, 1, 1).expand_as(flow))


@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_the_shift_of_the_lr_side_is_corrected(shift):
    """A trained flow network sees ``image1`` shifted by ``(d, d)`` and adds ``d`` to its answer; the
    ensemble gives the true flow only when it moves the mirrored ``image1`` back."""
    scene = texture(40, 48, seed=1)
    t = (2, -3)
    image1 = move_content(scene, shift, shift)  # as rgb_hsi shows the scene
    ref = move_content(scene, *t)

    def trained(a, b):  # finds a(p) = b(p + t - d), answers t
        return match(a, b) + shift

    expected = torch.tensor(t, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 40, 48)
    torch.testing.assert_close(trained(image1, ref), expected)
    torch.testing.assert_close(dihedral_flow(trained, image1, ref, 8, shift=shift), expected)
    uncorrected = dihedral_flow(trained, image1, ref, 8, shift=0.0)
    assert (uncorrected - expected).abs().max() >= shift  # mirrored frames are off by 2d without it
    torch.testing.assert_close(dihedral_flow(trained, image1, ref, 2, shift=0.0), expected)  # no mirror


def test_pixelwise_fields_return_to_their_pixels():
    """A per-pixel function of the images is moved like an image but, unlike a flow, its values are not
    rotated with the frame: mapped back as vectors, the eight frames cancel (the mean of the linear parts
    is 0) and the pair {identity, transposition} averages x and y, each at its own pixel."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 3, 5, 7, generator=g), torch.rand(2, 3, 5, 7, generator=g)

    def fn(x, y):
        return (y - x)[:, :2]

    torch.testing.assert_close(dihedral_flow(fn, a, b, 8), torch.zeros(2, 2, 5, 7))
    v = fn(a, b)
    torch.testing.assert_close(dihedral_flow(fn, a, b, 2), v.mean(1, keepdim=True).expand_as(v))
    torch.testing.assert_close(dihedral_flow(fn, a, b, 1), v)


def test_transform_round_trip():
    x = torch.rand(1, 2, 4, 6)
    for g in TRANSFORMS[8]:
        y = transform_image(x, g)
        assert y.shape[-2:] == ((6, 4) if g[0] else (4, 6))
        back = untransform_flow(y, g)  # as a field: moved back; as vectors: A^-1 applied
        assert back.shape == x.shape
        torch.testing.assert_close(untransform_image(y, g), x)


def test_transform_flow_is_what_an_exact_estimator_finds_in_the_moved_frame():
    """For a translated pair, the flow of the moved pair is ``transform_flow`` of the pair's flow, and
    ``untransform_flow`` takes it back."""
    scene = texture(40, 48, seed=3)
    ref = move_content(scene, 2, -3)
    flow = match(scene, ref)
    for g in TRANSFORMS[8]:
        moved = transform_flow(flow, g)
        torch.testing.assert_close(moved, match(transform_image(scene, g), transform_image(ref, g)))
        torch.testing.assert_close(untransform_flow(moved, g), flow)
    field = torch.rand(1, 2, 5, 7)
    for g in TRANSFORMS[8]:
        torch.testing.assert_close(untransform_flow(transform_flow(field, g), g), field)


def test_bad_transform_count():
    for bad in (3, (), [(True, False)], [(1, 0, 0)]):
        with pytest.raises(ValueError, match="transforms"):
            dihedral_flow(match, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), bad)


def test_transform_sets_by_count_or_given():
    """A count names a set of TRANSFORMS; the four-pass default is the input, its transposition and its two
    mirror images; a set given explicitly is used as it is."""
    assert transform_set(4) == (
        (False, False, False),
        (True, False, False),
        (False, True, False),
        (False, False, True),
    )
    assert all(
        transform_set(n)[0] == (False, False, False) and len(transform_set(n)) == n for n in TRANSFORMS
    )
    given = [(False, False, False), (False, True, True)]
    assert transform_set(given) == tuple(given)
    scene = texture(24, 32, seed=5)
    ref = move_content(scene, 2, -1)
    flow = match(scene, ref)
    # an exact estimator: every transformed pair, mapped back, gives the same flow, so any set does too
    torch.testing.assert_close(dihedral_flow(match, scene, ref, given), flow)


def test_move_content_whole_pixels():
    x = torch.arange(20.0).view(1, 1, 4, 5)
    moved = move_content(x, 1, 0)
    torch.testing.assert_close(moved[..., 1:], x[..., :-1])
    torch.testing.assert_close(moved[..., 0], x[..., 0])  # the border repeats


@pytest.mark.parametrize("transforms", sorted(TRANSFORMS))
def test_self_ensemble_of_a_network_that_learnt_the_shift(transforms):
    """A stand-in for a trained SR network: it moves ``lr_up`` back by the shift ``d`` it was trained
    with (``sr`` on the HR grid) and finds the flow as a trained flow network does. Its self-ensemble gives
    the scene and the true flow in every frame; the dropped outputs are not averaged."""
    d, t = 3.0, (2, -3)
    scene = texture(40, 48, seed=2)
    lr_up = move_content(scene, d, d)
    ref = move_content(scene, *t)

    def model(lr_up, ref, rgb_hsi):
        flow = match(rgb_hsi, ref) + d
        return {
            "sr": move_content(lr_up, -d, -d),
            "flow": flow,
            "ref_warp0": flow_warp(ref, flow, padding_mode="border"),
            "match": torch.zeros(1),
        }

    out = SelfEnsemble(model_module(model), transforms, shift=d)(lr_up, ref, lr_up)
    assert set(out) == {"sr", "flow", "ref_warp0"}
    inner = (..., slice(8, -8), slice(8, -8))  # the replicated borders of the moved inputs aside
    torch.testing.assert_close(out["sr"][inner], scene[inner])
    torch.testing.assert_close(
        out["flow"], torch.tensor(t, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 40, 48)
    )
    torch.testing.assert_close(out["ref_warp0"][inner], scene[inner])  # the aligned reference


class SharedFlowModel(torch.nn.Module):
    """A stand-in for SSCHSR with a flow network: ``estimate_flow`` as a trained flow network (the shift
    ``d`` added), ``refine_flow`` counted, and ``forward`` warping ``ref`` by the flow it is given."""

    def __init__(self, d: float):
        super().__init__()
        self.d, self.flow_net, self.calls = d, torch.nn.Identity(), {"estimate": 0, "refine": 0, "given": 0}

    def estimate_flow(self, rgb_hsi, ref, refine=True):
        assert not refine
        self.calls["estimate"] += 1
        return match(rgb_hsi, ref) + self.d

    def refine_flow(self, flow, rgb_hsi, ref):
        self.calls["refine"] += 1
        return flow

    def forward(self, lr_up, ref, rgb_hsi, flow=None):
        assert flow is not None
        self.calls["given"] += 1
        return {
            "sr": move_content(lr_up, -self.d, -self.d),
            "ref_warp": flow_warp(ref, flow, padding_mode="border"),
        }


@pytest.mark.parametrize("transforms", sorted(TRANSFORMS))
def test_self_ensemble_aligns_once_for_all_passes(transforms):
    """A model with a flow network: the ensemble's flow is estimated over the symmetries, refined once, and
    each pass, given it moved into its frame, warps the reference onto the scene."""
    d, t = 3.0, (2, -3)
    scene = texture(40, 48, seed=2)
    lr_up = move_content(scene, d, d)
    ref = move_content(scene, *t)
    model = SharedFlowModel(d)
    out = SelfEnsemble(model, transforms, shift=d)(lr_up, ref, lr_up)
    assert model.calls == {"estimate": transforms, "refine": 1, "given": transforms}
    assert set(out) == {"sr", "ref_warp", "flow", "ref_warp0"}
    inner = (..., slice(8, -8), slice(8, -8))
    torch.testing.assert_close(
        out["flow"], torch.tensor(t, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 40, 48)
    )
    torch.testing.assert_close(out["ref_warp"][inner], scene[inner])
    torch.testing.assert_close(out["ref_warp0"][inner], scene[inner])
    torch.testing.assert_close(out["sr"][inner], scene[inner])


def model_module(fn):
    class Wrapped(torch.nn.Module):
        def forward(self, *args):
            return fn(*args)

    return Wrapped()


def test_with_tta():
    net = SSCHSR(4, "lite")
    assert with_tta(net, 8, 1) is net
    assert with_tta(Bicubic(), 8, 8).__class__ is Bicubic  # nothing to ensemble in a fixed interpolation
    wrapped = with_tta(net, 8, 8)
    assert isinstance(wrapped, SelfEnsemble) and (wrapped.transforms, wrapped.shift) == (8, 3.0)
    with pytest.raises(InputError, match="tta"):
        with_tta(net, 8, 3)
    with pytest.raises(ValueError, match="transforms"):
        SelfEnsemble(net, 3)
    lr_up, ref = torch.rand(1, 4, 24, 32), torch.rand(1, 3, 24, 32)
    with torch.no_grad():
        out = with_tta(net.eval(), 4, 8)(lr_up, ref, ref)
    assert out["sr"].shape == (1, 4, 24, 32) and out["flow"].shape == (1, 2, 24, 32)


def test_lr_grid_shift():
    assert lr_grid_shift(8, "paper") == content_shift(8) == 3.0
    assert lr_grid_shift(4, "block") == 0.0
    with pytest.raises(ValueError, match="LR grid"):
        lr_grid_shift(8, "centre")


def test_block_lr_through_a_network_that_learnt_the_paper_shift():
    """LR data whose pixels are centred on their blocks (``block``: ``lr_up`` shows the scene where it is)
    given to the stand-in trained network of the test above: alone it answers the scene off by the
    paper's shift and a flow off by it; behind :func:`on_lr_grid` it answers the scene and the true flow,
    with the self-ensemble too."""
    d, t = content_shift(8), (2, -3)
    scene = texture(40, 48, seed=3)
    ref = move_content(scene, *t)

    def model(lr_up, ref, rgb_hsi):
        return {"sr": move_content(lr_up, -d, -d), "flow": match(rgb_hsi, ref) + d}

    net = model_module(model)
    true_flow = torch.tensor(t, dtype=torch.float32).view(1, 2, 1, 1).expand(1, 2, 40, 48)
    inner = (..., slice(8, -8), slice(8, -8))
    plain = net(scene, ref, scene)
    assert (plain["sr"] - scene)[inner].abs().mean() > 0.01
    torch.testing.assert_close(plain["flow"], true_flow + d)
    assert on_lr_grid(net, 8, "paper") is net
    for wrapped in (on_lr_grid(net, 8, "block"), on_lr_grid(SelfEnsemble(net, 8, shift=d), 8, "block")):
        assert isinstance(wrapped, ShiftedInputs) and wrapped.shift == d
        out = wrapped(scene, ref, scene)
        torch.testing.assert_close(out["sr"][inner], scene[inner])
        torch.testing.assert_close(out["flow"], true_flow)
    with pytest.raises(InputError, match="LR grid"):
        on_lr_grid(net, 8, "centre")
