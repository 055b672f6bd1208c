"""Synthetic pairs: procedural scenes, occlusion-aware views with exact flow, the camera change."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sschsr.data.spectral import camera_srf, default_wavelengths, render
from sschsr.data.synth import GeometryConfig, PhotometricConfig, SynthConfig, make_pair, procedural_scene
from sschsr.data.synth.filters import _argmax0, _box, guided_filter
from sschsr.data.synth.geometry import (
    Motion,
    apply_homography,
    homography_from_corners,
    intrinsics,
    invert_displacement,
    procedural_depth,
    random_view,
    sample_field,
    synthesize_view,
)
from sschsr.data.synth.pairs import alignment_stats
from sschsr.data.synth.photometric import camera_change, color_correct, jpeg_roundtrip
from sschsr.data.synth.scenes import fbm, numpy_rng, random_spectra
from sschsr.ops.warp import coords_grid, flow_warp

OFF = PhotometricConfig.off()


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grid(h: int, w: int) -> torch.Tensor:
    return coords_grid(1, h, w)[0]


class TestProceduralScene:
    @pytest.mark.parametrize("bands", [1, 5, 31, 48])
    def test_shape_range_any_band_count(self, bands):
        hsi = procedural_scene(48, bands, gen(0))
        assert hsi.shape == (bands, 48, 48) and hsi.dtype == torch.float32
        assert hsi.min() >= 0 and hsi.max() <= 1 and torch.isfinite(hsi).all()

    def test_non_square_and_wavelengths(self):
        wl = np.linspace(380, 1000, 20)  # beyond the visible: a remote-sensing band set
        hsi = procedural_scene((40, 72), 20, gen(1), wavelengths=wl)
        assert hsi.shape == (20, 40, 72)
        with pytest.raises(ValueError, match="wavelengths"):
            procedural_scene(32, 5, gen(1), wavelengths=np.linspace(400, 700, 6))

    def test_deterministic_given_generator(self):
        a = procedural_scene(64, 31, gen(7))
        b = procedural_scene(64, 31, gen(7))
        c = procedural_scene(64, 31, gen(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)

    def test_structure(self):
        # not a flat field: edges, smooth regions and spectral variety
        hsi = procedural_scene(96, 31, gen(3))
        lum = hsi.mean(0)
        assert lum.std() > 0.03
        grad = (lum[:, 1:] - lum[:, :-1]).abs()
        assert (grad > 0.05).float().mean() > 0.005  # sharp edges exist
        assert (grad < 0.01).float().mean() > 0.5  # and smooth regions dominate
        spectra = hsi.flatten(1).T[::97]
        assert torch.linalg.matrix_rank(spectra - spectra.mean(0), atol=1e-3) >= 3

    def test_depth(self):
        hsi, depth = procedural_scene(64, 8, gen(4), return_depth=True)
        assert depth.shape == (64, 64) and depth.dtype == torch.float32
        assert depth.min() >= 1 - 1e-4 and depth.max() <= 4 + 1e-3
        # the scene is the same with or without the depth
        assert torch.equal(hsi, procedural_scene(64, 8, gen(4)))

    def test_spectra_smooth_and_in_range(self):
        wl = default_wavelengths(31)
        s = random_spectra(wl, 50, numpy_rng(gen(0)))
        assert s.shape == (50, 31) and s.min() >= 0.02 - 1e-6 and s.max() <= 0.95 + 1e-6
        # smooth: second differences small compared with the values
        assert np.abs(np.diff(s, 2, axis=1)).max() < 0.25

    def test_fbm_normalised(self):
        f = fbm(64, 80, numpy_rng(gen(0)))
        assert f.shape == (64, 80)
        assert abs(float(f.mean())) < 1e-4 and abs(float(f.std()) - 1) < 1e-3


class TestIdentity:
    def test_zero_motion_zero_flow_all_valid(self):
        hsi = procedural_scene(40, 6, gen(0))
        out = make_pair(hsi, default_wavelengths(6), gen(1), SynthConfig(identity=True))
        assert torch.equal(out["flow"], torch.zeros(2, 40, 40))
        assert out["valid"].all() and out["valid"].dtype == torch.bool
        assert out["ref"].shape == (3, 40, 40) and out["ref"].min() >= 0 and out["ref"].max() <= 1

    def test_identity_without_photometry_is_the_cie_rendering(self):
        wl = default_wavelengths(31)
        hsi = procedural_scene(32, 31, gen(0))
        out = make_pair(hsi, wl, gen(1), SynthConfig(identity=True, photometric=OFF))
        expected = render(hsi, torch.from_numpy(camera_srf(wl))).clamp(0, 1)
        assert torch.allclose(out["ref"], expected, atol=1e-6)


class TestGroundTruthFlow:
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_warping_ref_by_flow_gives_the_source_view(self, seed):
        # known answer: without photometric change the reference is the CIE rendering seen from elsewhere,
        # so pulling it back with the true flow must reproduce the source's rendering where valid
        wl = default_wavelengths(31)
        g = gen(seed)
        hsi, depth = procedural_scene(96, 31, g, return_depth=True)
        out = make_pair(hsi, wl, g, SynthConfig(photometric=OFF), depth=depth)
        src = render(hsi, torch.from_numpy(camera_srf(wl)))
        v = out["valid"]
        warped = flow_warp(out["ref"][None], out["flow"][None])[0]
        err_after = (warped - src).abs().mean(0)[v].mean()
        err_before = (out["ref"] - src).abs().mean(0)[v].mean()
        assert err_after < 0.012
        assert err_after < 0.2 * err_before
        # most valid pixels are reproduced exactly, up to the bilinear resampling of sharp edges and textures
        assert ((warped - src).abs().amax(0)[v] < 0.02).float().mean() > 0.75

    @pytest.mark.parametrize("seed", [3, 4])
    def test_exact_with_depth_made_up_from_the_image(self, seed):
        # real cubes have no depth: make_pair makes one up (procedural_depth, guided filter); the flow it
        # returns must still be the one the reference was rendered with
        wl = default_wavelengths(31)
        g = gen(seed)
        hsi = procedural_scene((80, 112), 31, g)
        out = make_pair(hsi, wl, g, SynthConfig(photometric=OFF))
        src = render(hsi, torch.from_numpy(camera_srf(wl)))
        v = out["valid"]
        assert v.float().mean() >= 0.5 and torch.hypot(*out["flow"]).mean() >= 2
        warped = flow_warp(out["ref"][None], out["flow"][None])[0]
        err_after = (warped - src).abs().mean(0)[v].mean()
        err_before = (out["ref"] - src).abs().mean(0)[v].mean()
        assert err_after < 0.012 and err_after < 0.2 * err_before

    def test_forward_and_backward_maps_agree(self):
        # B(F(p)) = p for visible p: the rendering uses the same geometry as the flow
        g = gen(5)
        hsi, depth = procedural_scene(80, 4, g, return_depth=True)
        view = random_view(hsi.mean(0), g, depth=depth)
        pos = grid(80, 80) + view.flow
        back = pos + sample_field(view.backward, pos)
        err = (back - grid(80, 80)).norm(dim=0)[view.valid]
        assert err.median() < 0.05
        assert (err < 0.5).float().mean() > 0.97

    def test_acceptance_statistics(self):
        wl = default_wavelengths(31)
        for seed in range(3):
            g = gen(seed)
            hsi, depth = procedural_scene(128, 31, g, return_depth=True)
            out = make_pair(hsi, wl, g, depth=depth)
            s = alignment_stats(hsi, wl, out["ref"], out["flow"], out["valid"])
            assert s["rho_warp"] >= 0.9
            assert s["rho_warp"] > s["rho_nowarp"] + 0.05
            assert s["mean_flow"] >= 2 and s["valid_fraction"] >= 0.5


class TestOcclusion:
    H, W, X0 = 32, 64, 40

    def step_scene(self, near: float = 1.0, far: float = 4.0):
        """Far plane on the left of column X0, a near plane from X0 on; the camera moves so that the
        near plane shifts 8 px left and the far one 2 px left: the near one slides over the far one."""
        depth = torch.full((self.H, self.W), far)
        depth[:, self.X0 :] = near
        K = intrinsics(self.H, self.W)
        f = float(K[0, 0])
        motion = Motion(K=K, R=torch.eye(3), t=torch.tensor([-8.0 * near / f, 0.0, 0.0]), G=torch.eye(3))
        return depth, motion

    def test_near_layer_covers_far_one(self):
        depth, motion = self.step_scene()
        view = synthesize_view(depth, motion)
        assert torch.allclose(view.flow[0, :, self.X0 :], torch.tensor(-8.0), atol=1e-4)
        assert torch.allclose(view.flow[0, :, : self.X0], torch.tensor(-2.0), atol=1e-4)
        assert torch.allclose(view.flow[1], torch.tensor(0.0), atol=1e-4)
        v = view.valid
        # far pixels landing where the near plane now is (x - 2 >= X0 - 8) are hidden
        assert not v[:, self.X0 - 6 : self.X0].any()
        # far pixels clear of it, and all near pixels inside the frame, stay valid
        assert v[:, 2 : self.X0 - 8].all()
        assert v[:, self.X0 + 8 :].all()
        # leaving the frame is invalid too
        assert not v[:, :2].any()

    def test_collision_with_nearer_surface_is_invalid(self):
        # independent check: a pixel whose forward position falls in the same pixel as a nearer
        # surface's forward position must be invalid
        depth, motion = self.step_scene()
        view = synthesize_view(depth, motion)
        pos = (grid(self.H, self.W) + view.flow).round().long()
        cells = pos[1] * self.W + pos[0]
        near_cells = set(cells[depth == 1.0].tolist())
        far = depth == 4.0
        collide = torch.tensor([c in near_cells for c in cells.flatten().tolist()]).view(self.H, self.W) & far
        assert collide.any()
        assert not (view.valid & collide).any()

    def test_occlusions_need_a_depth_step_and_motion(self):
        depth, motion = self.step_scene()
        inside = lambda vw: (grid(self.H, self.W) + vw.flow)[0].ge(0)  # noqa: E731 - the only way out here is left
        stepped = synthesize_view(depth, motion)
        occluded = (inside(stepped) & ~stepped.valid).float().mean()
        assert occluded > 0.05
        flat = synthesize_view(torch.full_like(depth, 4.0), motion)
        assert (flat.valid == inside(flat)).all()
        still = synthesize_view(depth, Motion.identity(self.H, self.W))
        assert still.valid.all() and torch.allclose(still.flow, torch.zeros(2, self.H, self.W), atol=1e-4)

    def test_disocclusion_is_filled_with_background(self):
        # a near strip (columns 24-39) moves 8 px left, the far plane around it 2 px: right of the strip the
        # reference sees background the source did not (columns 32-37), and must show background there
        depth, motion = self.step_scene()
        depth[:, 40:] = 4.0
        depth[:, 24:40] = 1.0
        view = synthesize_view(depth, motion)
        img = torch.zeros(1, self.H, self.W)
        img[:, :, 24:40] = 1.0  # near strip white, far plane black
        ref = view.render(img)[0]
        assert (ref[:, 17:31] > 0.99).all()  # the strip, moved 8 px left
        assert (ref[:, 33:37] < 0.01).all()  # the revealed background


class TestHomographyAndElastic:
    def test_homography_from_corners_known_answer(self):
        offsets = torch.tensor([[1.0, -2.0], [3.0, 0.5], [-1.5, 2.0], [0.0, -1.0]])
        G = homography_from_corners(30, 50, offsets)
        corners = torch.tensor([[0.0, 49.0, 49.0, 0.0], [0.0, 0.0, 29.0, 29.0]])
        assert torch.allclose(apply_homography(G, corners), corners + offsets.T, atol=1e-3)
        shift = homography_from_corners(30, 50, torch.tensor([[3.0, -2.0]] * 4))
        assert torch.allclose(shift, torch.tensor([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]]), atol=1e-5)

    def test_homography_only_flow_is_analytic(self):
        cfg = GeometryConfig(camera=False, elastic=False, homography=True, flow_range=(4.0, 6.0))
        view = random_view(torch.rand(48, 64, generator=gen(0)), gen(1), cfg)
        g = grid(48, 64)
        expected = apply_homography(view.motion.G, g) - g
        assert torch.allclose(view.flow, expected, atol=1e-3)
        assert 3.0 < float(view.flow.norm(dim=0).mean()) < 7.0
        # a plane has no occlusions: valid is exactly "lands inside"
        pos = g + view.flow
        inside = (pos[0] >= 0) & (pos[0] <= 63) & (pos[1] >= 0) & (pos[1] <= 47)
        assert torch.equal(view.valid, inside)

    def test_elastic_inversion(self):
        rng = numpy_rng(gen(0))
        e = torch.stack([fbm(64, 64, rng, octaves=2, base_cells=3) for _ in range(2)])
        slope = max(float(e.diff(dim=-1).abs().max()), float(e.diff(dim=-2).abs().max()))
        e = e * (0.2 / slope)  # the steepest field random views use
        assert e.abs().max() > 1.0  # displacements of pixels, not a trivial field
        einv = invert_displacement(e, iters=10)
        g = grid(64, 64)
        r = g + einv
        back = r + sample_field(e, r)
        err = (back - g).norm(dim=0)[4:-4, 4:-4]  # inside: the border clamps the field
        assert err.max() < 0.01

    def test_elastic_only_consistency(self):
        cfg = GeometryConfig(camera=False, homography=False, elastic=True, elastic_weight=(1.0, 1.0))
        view = random_view(torch.rand(64, 64, generator=gen(2)), gen(3), cfg)
        e = view.motion.elastic
        g = grid(64, 64)
        # forward: F(p) = p + e(p) (no projection, no homography)
        assert torch.allclose(view.flow, sample_field(e, g), atol=1e-4)


class TestRanges:
    @pytest.mark.parametrize("size", [96, 160])
    def test_valid_fraction_and_flow_magnitude(self, size):
        means, valids = [], []
        for seed in range(6):
            g = gen(seed)
            hsi, depth = procedural_scene(
                size, 3, g, wavelengths=np.array([450.0, 550.0, 650.0]), return_depth=True
            )
            view = random_view(hsi.mean(0), g, depth=depth)
            means.append(float(view.flow.norm(dim=0).mean()))
            valids.append(float(view.valid.float().mean()))
        assert min(valids) >= 0.5 and np.mean(valids) >= 0.7
        assert min(means) >= 2.0 and max(means) <= 15.0
        assert 4.0 <= np.mean(means) <= 12.0

    def test_min_valid_is_enforced(self):
        cfg = GeometryConfig(flow_range=(30.0, 30.0), min_valid=0.5)
        g = gen(0)
        guide = procedural_scene(48, 3, g).mean(0)
        view = random_view(guide, g, cfg)
        assert float(view.valid.float().mean()) >= 0.5

    def test_image_depth_follows_luminance_layers(self):
        guide = torch.zeros(64, 64)
        guide[16:48, 16:48] = 1.0  # a bright square on a dark background
        cfg = GeometryConfig(depth_layers=(1, 1))
        depth = procedural_depth(guide, gen(0), cfg)
        inside, outside = depth[20:44, 20:44], torch.cat([depth[:, :10].flatten(), depth[:, 54:].flatten()])
        # a depth step at the square's edge, larger than the smooth variation within each region
        assert (inside.median() - outside.median()).abs() > 0.3 * (inside.std() + outside.std() + 0.1)


class TestPhotometric:
    @pytest.mark.parametrize("seed", range(4))
    def test_range_and_shape(self, seed):
        hsi = procedural_scene(40, 31, gen(seed))
        out = camera_change(hsi, default_wavelengths(31), gen(seed + 10))
        assert out.shape == (3, 40, 40) and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1

    def test_switched_off(self):
        wl = default_wavelengths(31)
        hsi = procedural_scene(32, 31, gen(0))
        out = camera_change(hsi, wl, gen(1), OFF)
        assert torch.allclose(out, render(hsi, torch.from_numpy(camera_srf(wl))).clamp(0, 1), atol=1e-6)
        every_step_off = PhotometricConfig(
            other_camera=False,
            white_balance=False,
            exposure=False,
            vignetting=False,
            noise=False,
            gamma=False,
            jpeg=False,
        )
        assert torch.allclose(camera_change(hsi, wl, gen(1), every_step_off), out, atol=1e-6)

    def test_it_changes_the_image(self):
        wl = default_wavelengths(31)
        hsi = procedural_scene(32, 31, gen(0))
        a = camera_change(hsi, wl, gen(1))
        b = camera_change(hsi, wl, gen(1), OFF)
        assert (a - b).abs().mean() > 0.02
        assert torch.equal(a, camera_change(hsi, wl, gen(1)))  # deterministic

    def test_gamma_alone_is_a_power_law(self):
        wl = default_wavelengths(31)
        hsi = procedural_scene(32, 31, gen(0))
        only_gamma = PhotometricConfig(
            other_camera=False,
            white_balance=False,
            exposure=False,
            vignetting=False,
            noise=False,
            jpeg=False,
            gamma_range=(2.0, 2.0),
        )
        lin = render(hsi, torch.from_numpy(camera_srf(wl))).clamp(0, 1)
        assert torch.allclose(camera_change(hsi, wl, gen(1), only_gamma), lin.sqrt(), atol=1e-5)

    def test_jpeg_roundtrip_close(self):
        img = procedural_scene(48, 3, gen(0), wavelengths=np.array([450.0, 550.0, 650.0]))
        out = jpeg_roundtrip(img, 90)
        assert out.shape == img.shape and (out - img).abs().mean() < 0.02

    def test_color_correction_keeps_grey(self):
        wl = default_wavelengths(31)
        srf = color_correct(camera_srf(wl, "gaussian"), camera_srf(wl), 1.0)
        assert np.allclose(srf.sum(1), 1, atol=1e-5)


class TestConfig:
    def test_from_mappings(self):
        cfg = SynthConfig(geometry={"flow_range": [3, 5], "elastic": False}, photometric={"jpeg": False})
        assert cfg.geometry.flow_range == (3, 5) and cfg.geometry.elastic is False
        assert cfg.photometric.jpeg is False
        with pytest.raises(ValueError, match="unknown"):
            SynthConfig(geometry={"flow_rnage": [3, 5]})

    def test_identity_does_not_mutate_the_given_config(self):
        geo = GeometryConfig()
        SynthConfig(geometry=geo, identity=True)
        assert geo.identity is False

    def test_make_pair_checks_inputs(self):
        hsi = procedural_scene(32, 5, gen(0))
        with pytest.raises(ValueError, match="wavelengths"):
            make_pair(hsi, default_wavelengths(6), gen(0))
        with pytest.raises(ValueError, match="hsi"):
            make_pair(hsi[0], default_wavelengths(5), gen(0))

    def test_make_pair_deterministic(self):
        wl = default_wavelengths(8)
        hsi = procedural_scene(48, 8, gen(0))
        a, b = make_pair(hsi, wl, gen(1)), make_pair(hsi, wl, gen(1))
        for k in ("ref", "flow", "valid"):
            assert torch.equal(a[k], b[k])
        assert (
            a["ref"].dtype == torch.float32
            and a["flow"].dtype == torch.float32
            and a["valid"].dtype == torch.bool
        )


class TestFastFilters:
    """The O(1)-per-pixel box filter and the running argmax compute what the direct versions do."""

    @staticmethod
    def box_direct(x: torch.Tensor, r: int) -> torch.Tensor:
        return F.avg_pool2d(x[None], 2 * r + 1, stride=1, padding=r, count_include_pad=False)[0]

    @pytest.mark.parametrize(
        ("shape", "r"),
        [
            ((1, 5, 7), 1),
            ((3, 40, 33), 5),
            ((2, 64, 64), 13),
            ((1, 9, 6), 4),
            ((2, 17, 23), 30),
            ((1, 1, 9), 2),
        ],
    )
    def test_box_matches_average_pooling(self, shape, r):
        x = torch.rand(*shape, generator=gen(0))
        y = _box(x, r)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.allclose(y, self.box_direct(x, r), atol=2e-6)
        # windows cut at the border: a corner is the mean of its (r+1) x (r+1) neighbourhood
        h, w = shape[1:]
        assert torch.allclose(y[:, 0, 0], x[:, : r + 1, : r + 1].mean((1, 2)), atol=2e-6)
        assert torch.allclose(
            y[:, h // 2, w // 2],
            x[:, max(0, h // 2 - r) : h // 2 + r + 1, max(0, w // 2 - r) : w // 2 + r + 1].mean((1, 2)),
            atol=2e-6,
        )

    def test_guided_filter_matches_the_direct_formula(self):
        g = gen(1)
        guide = procedural_scene(72, 3, g).mean(0)
        labels = (guide > guide.median()).long() + (guide > guide.quantile(0.8)).long()
        src = F.one_hot(labels, 3).permute(2, 0, 1).float()
        r, eps = 3, 2e-3
        box = self.box_direct
        mi, mp = box(guide[None], r), box(src, r)
        a = (box(guide[None] * src, r) - mi * mp) / (box(guide[None] ** 2, r) - mi * mi + eps)
        b = mp - a * mi
        expected = box(a, r) * guide[None] + box(b, r)
        assert torch.allclose(guided_filter(guide, src, r, eps), expected, atol=2e-5)

    @pytest.mark.parametrize("n", [1, 2, 4])
    def test_argmax0(self, n):
        x = torch.rand(n, 30, 40, generator=gen(n))
        x[:, :5] = 0.5  # ties: the first maximum wins, as in torch.argmax
        x[0, 5:8] = x[-1, 5:8]
        assert torch.equal(_argmax0(x), x.argmax(0))
