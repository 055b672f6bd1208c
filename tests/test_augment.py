"""Known answers for the geometric augmentation: crops and dihedral transforms keep the flow exact."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from sschsr.data.augment import center_crop, crop, flip_rot, random_crop, random_flip_rot, spatial_size
from sschsr.ops.warp import flow_warp, in_bounds

H, W = 24, 32  # not square, so a quarter turn has to swap the axes


def smooth_flow(generator: torch.Generator, h: int = H, w: int = W, amp: float = 4.0) -> torch.Tensor:
    coarse = torch.randn(1, 2, 4, 5, generator=generator) * amp
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0]


def make_sample(generator: torch.Generator) -> dict:
    flow = smooth_flow(generator)
    valid = in_bounds(flow[None])[0] & (torch.rand(H, W, generator=generator) > 0.1)
    return {
        "hr": torch.rand(5, H, W, generator=generator),
        "ref": torch.rand(3, H, W, generator=generator),
        "flow": flow,
        "valid": valid,
        "mask": torch.rand(H, W, generator=generator) > 0.2,
        "name": "scene",
        "has_flow": True,
    }


def dihedral(x: torch.Tensor, hflip: bool, vflip: bool, k: int) -> torch.Tensor:
    """The reference transform of a plain image, written independently of the module."""
    if hflip:
        x = torch.flip(x, dims=[-1])
    if vflip:
        x = torch.flip(x, dims=[-2])
    return torch.rot90(x, k, dims=[-2, -1])


DIHEDRAL = list(itertools.product([False, True], [False, True], range(4)))


class TestFlipRot:
    @pytest.mark.parametrize("hflip,vflip,k", DIHEDRAL)
    def test_warp_commutes(self, hflip, vflip, k, generator):
        s = make_sample(generator)
        t = flip_rot(s, hflip, vflip, k)
        warped_then_transformed = dihedral(flow_warp(s["ref"][None], s["flow"][None])[0], hflip, vflip, k)
        transformed_then_warped = flow_warp(t["ref"][None], t["flow"][None])[0]
        torch.testing.assert_close(transformed_then_warped, warped_then_transformed, atol=1e-5, rtol=0)
        # validity moves with the pixels and stays in bounds
        assert torch.equal(t["valid"], dihedral(s["valid"], hflip, vflip, k))
        assert bool(in_bounds(t["flow"][None], *t["ref"].shape[-2:])[0][t["valid"]].all())

    @pytest.mark.parametrize("hflip,vflip,k", DIHEDRAL)
    def test_shapes_and_passthrough(self, hflip, vflip, k, generator):
        s = make_sample(generator)
        t = flip_rot(s, hflip, vflip, k)
        expected = (W, H) if k % 2 else (H, W)
        assert spatial_size(t) == expected
        assert t["name"] == "scene" and t["has_flow"] is True
        assert t["valid"].dtype == torch.bool and t["hr"].dtype == torch.float32
        assert torch.equal(t["hr"], dihedral(s["hr"], hflip, vflip, k))

    def test_input_untouched(self, generator):
        s = make_sample(generator)
        before = {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
        flip_rot(s, True, True, 1)
        for k, v in before.items():
            assert torch.equal(s[k], v)

    def test_group_identities(self, generator):
        s = make_sample(generator)
        # four quarter turns, two flips, and hflip+vflip == half turn
        for key in ("ref", "flow", "valid"):
            assert torch.equal(flip_rot(flip_rot(s, k=2), k=2)[key], s[key])
            assert torch.equal(flip_rot(flip_rot(s, hflip=True), hflip=True)[key], s[key])
            torch.testing.assert_close(flip_rot(s, True, True, 0)[key], flip_rot(s, k=2)[key])

    def test_random_covers_all_eight(self, generator):
        s = {"x": torch.arange(4.0).reshape(1, 2, 2)}
        seen = {tuple(random_flip_rot(s, generator)["x"].flatten().tolist()) for _ in range(200)}
        assert len(seen) == 8


class TestCrop:
    def test_alignment_kept(self, generator):
        s = make_sample(generator)
        c = crop(s, 5, 7, 16, 20)
        full = flow_warp(s["ref"][None], s["flow"][None])[0][:, 5:21, 7:27]
        part = flow_warp(c["ref"][None], c["flow"][None])[0]
        v = c["valid"]
        assert v.any()
        torch.testing.assert_close(part[:, v], full[:, v], atol=1e-5, rtol=0)
        assert torch.equal(c["flow"], s["flow"][:, 5:21, 7:27])
        # valid is the old valid restricted to targets inside the window
        assert torch.equal(c["valid"], s["valid"][5:21, 7:27] & in_bounds(c["flow"][None])[0])

    def test_random_crop_multiple_and_deterministic(self, generator):
        s = make_sample(generator)
        a = random_crop(s, (16, 20), torch.Generator().manual_seed(3), multiple_of=4)
        b = random_crop(s, (16, 20), torch.Generator().manual_seed(3), multiple_of=4)
        assert spatial_size(a) == (16, 20)
        for k in ("hr", "ref", "flow", "valid", "mask"):
            assert torch.equal(a[k], b[k])
        with pytest.raises(ValueError):
            random_crop(s, 18, generator, multiple_of=4)
        with pytest.raises(ValueError):
            random_crop(s, 28, generator)

    def test_random_crop_covers_offsets(self, generator):
        s = {"x": torch.arange(H * W, dtype=torch.float32).reshape(1, H, W)}
        corners = {float(random_crop(s, 20, generator)["x"][0, 0, 0]) for _ in range(300)}
        assert len(corners) == (H - 20 + 1) * (W - 20 + 1)

    def test_center_crop(self, generator):
        s = make_sample(generator)
        c = center_crop(s, 8)
        assert torch.equal(c["hr"], s["hr"][:, 8:16, 12:20])
        whole = center_crop(s, None, multiple_of=5)
        assert spatial_size(whole) == (20, 30)
        assert torch.equal(whole["hr"], s["hr"][:, 2:22, 1:31])

    def test_mismatched_grids_rejected(self):
        with pytest.raises(ValueError, match="grid"):
            crop({"a": torch.zeros(1, 4, 4), "b": torch.zeros(1, 4, 5)}, 0, 0, 2, 2)
