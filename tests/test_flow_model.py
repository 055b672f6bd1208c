"""The RAFT-style flow network: shapes at any size, its parts against known answers, and that it learns."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sschsr.checkpoints import load_flow_net, save_flow_net
from sschsr.losses import sequence_loss
from sschsr.models.flow import RAFT, count_parameters
from sschsr.models.flow.corr import CorrBlock, corr_pyramid, lookup, max_pyramid_levels
from sschsr.models.flow.raft import downsample_flow, padded_size
from sschsr.models.flow.update import bilinear_upsample, convex_upsample
from sschsr.ops.warp import coords_grid, in_bounds


def smooth_texture(size: int, generator: torch.Generator, margin: int = 8) -> torch.Tensor:
    """``(1, 3, size + 2 * margin, size + 2 * margin)`` smooth random image in [0, 1]."""
    s = size + 2 * margin
    coarse = torch.rand(1, 3, s // 4, s // 4, generator=generator)
    return F.interpolate(coarse, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)


def translated_pair(size: int, dx: int, dy: int, generator: torch.Generator):
    """``image1``, ``image2`` with ``image1[p]`` at ``p + (dx, dy)`` in ``image2``; the true flow and valid mask."""
    t, m = smooth_texture(size, generator), 8
    image1 = t[..., m : m + size, m : m + size]
    image2 = t[..., m - dy : m - dy + size, m - dx : m - dx + size]  # image2[q] = image1[q - (dx, dy)]
    flow = torch.zeros(1, 2, size, size)
    flow[:, 0], flow[:, 1] = dx, dy
    return image1, image2, flow, in_bounds(flow)


class TestRAFT:
    @pytest.mark.parametrize("preset", ["small", "base"])
    @pytest.mark.parametrize("size", [(37, 53), (16, 16), (64, 96), (5, 7)])
    def test_cardinality_any_size(self, preset, size, generator):
        net = RAFT(preset)
        x1, x2 = torch.rand(2, 2, 3, *size, generator=generator)
        preds = net(x1, x2, iters=2)
        assert len(preds) == 2
        for p in preds:
            assert p.shape == (2, 2, *size) and torch.isfinite(p).all()
        net.eval()
        with torch.no_grad():
            flow = net(x1, x2, iters=2, test_mode=True)
        assert flow.shape == (2, 2, *size) and torch.isfinite(flow).all()

    def test_parameter_counts_match_raft(self):
        # RAFT's published architectures have exactly these counts (the official code gives the same)
        assert count_parameters(RAFT("base")) == 5_257_536
        assert count_parameters(RAFT("small", upsample="bilinear")) == 990_162
        assert 1.0e6 < count_parameters(RAFT("small")) < 1.3e6  # + the convex-upsampling mask head

    def test_overrides_and_default_iters(self):
        net = RAFT("small", corr_levels=2, corr_radius=2, hidden_dim=32, iters=3)
        assert net.config["corr_levels"] == 2 and net.config["hidden_dim"] == 32
        assert len(net(torch.rand(1, 3, 24, 24), torch.rand(1, 3, 24, 24))) == 3

    def test_exceptions(self):
        net = RAFT("small")
        with pytest.raises(ValueError, match="same shape"):
            net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 24))
        with pytest.raises(ValueError, match="flow_init"):
            net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), flow_init=torch.zeros(1, 2, 8, 8))
        with pytest.raises(ValueError, match="preset"):
            RAFT("huge")

    def test_warm_start(self, generator):
        net = RAFT("small").eval()
        x1, x2 = torch.rand(2, 1, 3, 40, 40, generator=generator)
        with torch.no_grad():
            cold = net(x1, x2, iters=2, test_mode=True)
            zero = net(x1, x2, iters=2, flow_init=torch.zeros(1, 2, 40, 40), test_mode=True)
            warm = net(x1, x2, iters=2, flow_init=torch.full((1, 2, 40, 40), 5.0), test_mode=True)
        assert torch.allclose(cold, zero, atol=1e-6)  # a zero start is the default start
        assert (warm - cold).abs().mean() > 1.0

    def test_small_sizes_pad_to_two_coarse_pixels(self):
        assert padded_size(5, 7) == (16, 16)
        assert padded_size(37, 53) == (40, 56)
        assert padded_size(64, 96) == (64, 96)

    @pytest.mark.parametrize("preset", ["small", "base"])
    def test_gradients_reach_every_parameter(self, preset, generator):
        net = RAFT(preset)
        x1, x2 = torch.rand(2, 2, 3, 32, 32, generator=generator)
        loss, _ = sequence_loss(net(x1, x2, iters=2), torch.zeros(2, 2, 32, 32) + 1.5)
        loss.backward()
        missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing
        # a bias right before a (non-affine) instance norm is cancelled by it: its gradient is exactly 0
        zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
        assert all(n.startswith("fnet.") and n.endswith(".bias") for n in zero), zero


class TestConvexUpsample:
    def test_constant_flow_is_kept(self, generator):
        flow = torch.ones(2, 2, 5, 7)
        flow[:, 0], flow[:, 1] = 1.25, -0.5
        mask = 10 * torch.randn(2, 9 * 64, 5, 7, generator=generator)
        up = convex_upsample(flow, mask, factor=8)
        assert up.shape == (2, 2, 40, 56)
        assert torch.allclose(up[:, 0], torch.full_like(up[:, 0], 10.0))  # 8 * 1.25, borders included
        assert torch.allclose(up[:, 1], torch.full_like(up[:, 1], -4.0))

    def test_centre_weight_is_nearest(self, generator):
        flow = torch.randn(1, 2, 3, 4, generator=generator)
        mask = torch.full((1, 9, 8, 8, 3, 4), -1e4)
        mask[:, 4] = 0.0  # all weight on the cell's own coarse pixel
        up = convex_upsample(flow, mask.view(1, 9 * 64, 3, 4))
        assert torch.allclose(up, 8 * F.interpolate(flow, scale_factor=8, mode="nearest"))

    def test_bilinear_constant(self):
        assert torch.allclose(
            bilinear_upsample(torch.full((1, 2, 3, 3), 0.5)), torch.full((1, 2, 24, 24), 4.0)
        )

    def test_downsample_inverts_constant(self):
        assert torch.allclose(downsample_flow(torch.full((1, 2, 16, 24), 8.0)), torch.ones(1, 2, 2, 3))


class TestCorrelation:
    @staticmethod
    def unit_features(generator, b=1, d=16, h=6, w=7):
        return F.normalize(torch.randn(b, d, h, w, generator=generator), dim=1)

    def test_zero_flow_identical_features_peaks_at_centre(self, generator):
        f = self.unit_features(generator)
        radius = 3
        corr = CorrBlock(f, f, num_levels=4, radius=radius)(coords_grid(1, 6, 7))
        k = (2 * radius + 1) ** 2
        assert corr.shape == (1, 4 * k, 6, 7)
        level0 = corr[:, :k]
        assert (level0.argmax(dim=1) == k // 2).all()
        assert torch.allclose(level0[:, k // 2], torch.full((1, 6, 7), 1 / 4.0))  # <f, f> / sqrt(16)

    def test_shift_peaks_at_offset(self, generator):
        # fmap2[q] = fmap1[q - (2, -1)]: pixel p of image 1 matches q = p + (2, -1); x is the fast index
        f1 = self.unit_features(generator, h=8, w=8)
        f2 = torch.roll(f1, shifts=(-1, 2), dims=(2, 3))
        radius = 3
        corr = CorrBlock(f1, f2, num_levels=1, radius=radius)(coords_grid(1, 8, 8))
        inner = corr[0, :, 2:6, 1:5]  # away from the roll's wrap-around
        side = 2 * radius + 1
        assert (inner.argmax(dim=0) == (radius - 1) * side + (radius + 2)).all()

    def test_lookup_follows_coords(self, generator):
        f1, f2 = self.unit_features(generator), self.unit_features(generator)
        block = CorrBlock(f1, f2, num_levels=1, radius=1)
        flow = torch.zeros(1, 2, 6, 7)
        flow[:, 0] = 1.0
        # the window around p + (1, 0) is the window around p shifted one column
        assert torch.allclose(block(coords_grid(1, 6, 7) + flow)[:, 4], block(coords_grid(1, 6, 7))[:, 5])

    def test_levels_clamped_at_small_sizes(self, generator):
        assert [max_pyramid_levels(s, s) for s in (1, 2, 3, 4, 8)] == [1, 2, 2, 3, 4]
        f = self.unit_features(generator, h=2, w=2)
        corr = torch.einsum("bdij,bdkl->bijkl", f, f)
        assert len(corr_pyramid(corr, 4)) == 2
        out = lookup(corr_pyramid(corr, 4), coords_grid(1, 2, 2), radius=2, num_levels=4)
        assert out.shape == (1, 4 * 25, 2, 2) and torch.isfinite(out).all()
        assert (out[:, 50:] == 0).all()  # the levels the size does not allow read as zeros


class TestLearning:
    def test_loss_falls_on_a_translation(self, generator):
        torch.manual_seed(0)
        image1, image2, flow, valid = translated_pair(32, dx=3, dy=2, generator=generator)
        net = RAFT("small")
        opt = torch.optim.Adam(net.parameters(), lr=4e-4)
        losses = []
        for _ in range(30):
            loss, metrics = sequence_loss(net(image1, image2, iters=4), flow, valid)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        assert sum(losses[-3:]) / 3 < 0.3 * losses[0], losses
        assert metrics["epe"] < 1.5

    def test_zero_motion_gives_zero_flow(self, generator):
        torch.manual_seed(0)
        net = RAFT("small")
        opt = torch.optim.Adam(net.parameters(), lr=4e-4)
        test = smooth_texture(32, generator, margin=0)

        def mean_flow() -> float:
            with torch.no_grad():
                return net.eval()(test, test, iters=4, test_mode=True).norm(dim=1).mean().item()

        before = mean_flow()
        net.train()
        for _ in range(25):
            x = smooth_texture(32, generator, margin=0)
            loss, _ = sequence_loss(net(x, x, iters=4), torch.zeros(1, 2, 32, 32))
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = mean_flow()
        assert after < 0.25 and after < before, (before, after)


def test_safetensors_roundtrip(tmp_path, generator):
    net = RAFT("small", corr_radius=2, iters=3).eval()
    path = save_flow_net(net, tmp_path / "flow.safetensors")
    loaded = load_flow_net(path)
    assert loaded.config == net.config and not loaded.training
    x1, x2 = torch.rand(2, 1, 3, 24, 24, generator=generator)
    with torch.no_grad():
        assert torch.equal(loaded(x1, x2, test_mode=True), net(x1, x2, test_mode=True))


def test_ref_blur_is_the_network_on_the_smoothed_reference():
    from sschsr.ops.degrade import smooth

    torch.manual_seed(0)
    plain = RAFT("small", iters=2).eval()
    blurred = RAFT("small", iters=2, ref_blur=2.0).eval()
    blurred.load_state_dict(plain.state_dict())  # no parameters of its own
    a, b = torch.rand(2, 1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(blurred(a, b, test_mode=True), plain(a, smooth(b, 2.0), test_mode=True))
        assert not torch.allclose(blurred(a, b, test_mode=True), plain(a, b, test_mode=True))
    assert blurred.config["ref_blur"] == 2.0 and RAFT(**blurred.config).ref_blur == 2.0
    with pytest.raises(ValueError, match="ref_blur"):
        RAFT("small", ref_blur=-1)
