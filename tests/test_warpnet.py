"""Stage 2 network: WarpNet's shapes, identity at initialisation, training signal; warp cues; loading."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from sschsr.checkpoints import load_warpnet, save_warpnet
from sschsr.errors import InputError
from sschsr.losses import warp_loss
from sschsr.models.warpnet import CONFIG_KEY, WarpNet, count_parameters, warp_cues


def smooth_images(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """``(b, 3, h, w)`` in [0, 1] with structure at a few scales (noise alone teaches nothing)."""
    g = torch.Generator().manual_seed(seed)
    coarse = F.interpolate(
        torch.rand(b, 3, max(h // 8, 2), max(w // 8, 2), generator=g), size=(h, w), mode="bilinear"
    )
    return (0.8 * coarse + 0.2 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def inputs(b: int = 2, h: int = 24, w: int = 24, seed: int = 0, extra_channels: int = 2):
    img = smooth_images(b, h, w, seed)
    flow = torch.randn(b, 2, h, w, generator=torch.Generator().manual_seed(seed))
    extra = warp_cues(flow) if extra_channels else None
    return img, img.roll(1, dims=-1), img * 0.9, extra


class TestWarpNet:
    @pytest.mark.parametrize("size", [(1, 1), (7, 13), (8, 8), (37, 53)])
    def test_cardinality_any_size(self, size):
        net = WarpNet()
        rgb_hsi, ref, ref_warp0, extra = inputs(2, *size)
        out = net(rgb_hsi, ref, ref_warp0, extra)
        assert out.shape == (2, 3, *size) and out.dtype == torch.float32

    @pytest.mark.parametrize(
        "kwargs", [dict(widths=(8,)), dict(extra_channels=0), dict(use_ref=False, widths=(8, 16))]
    )
    def test_variants(self, kwargs):
        net = WarpNet(**kwargs)
        rgb_hsi, ref, ref_warp0, extra = inputs(1, 11, 9, extra_channels=net.extra_channels)
        assert net(rgb_hsi, ref, ref_warp0, extra).shape == (1, 3, 11, 9)
        assert net.multiple == 2 ** (len(net.widths) - 1)

    def test_identity_at_init(self):
        net = WarpNet()
        rgb_hsi, ref, ref_warp0, extra = inputs(2, 19, 30)
        assert torch.equal(net(rgb_hsi, ref, ref_warp0, extra), ref_warp0)

    def test_parameter_count(self):
        n = count_parameters(WarpNet())
        assert 100_000 <= n <= 300_000, n  # the paper's WarpNet: 0.14 M

    def test_float64(self):
        net = WarpNet(widths=(4, 8)).double()
        rgb_hsi, ref, ref_warp0, extra = (t.double() for t in inputs(1, 6, 6))
        assert net(rgb_hsi, ref, ref_warp0, extra).dtype == torch.float64

    def test_gradients_reach_all_parameters(self):
        torch.manual_seed(0)
        net = WarpNet()
        rgb_hsi, ref, ref_warp0, extra = inputs(2, 16, 16)
        target = smooth_images(2, 16, 16, seed=1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        # at initialisation only the (zero) last layer gets a gradient; one step opens the path to the rest
        for _ in range(2):
            opt.zero_grad()
            warp_loss(net(rgb_hsi, ref, ref_warp0, extra), target)[0].backward()
            opt.step()
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name

    def test_learns_to_undo_a_colour_shift(self):
        torch.manual_seed(0)
        net = WarpNet()
        target = smooth_images(2, 24, 24, seed=2)
        ref_warp0 = 0.7 * target + 0.2 * torch.tensor([1.0, 0.5, 0.0]).view(
            1, 3, 1, 1
        )  # exposure + white balance
        rgb_hsi, ref = target.mean(1, keepdim=True).expand(-1, 3, -1, -1), ref_warp0.roll(2, dims=-2)
        extra = warp_cues(torch.zeros(2, 2, 24, 24))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        losses = []
        for _ in range(20):
            opt.zero_grad()
            loss, _ = warp_loss(net(rgb_hsi, ref, ref_warp0, extra), target)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], losses[::10]

    def test_exceptions(self):
        net = WarpNet()
        rgb_hsi, ref, ref_warp0, extra = inputs(1, 8, 8)
        with pytest.raises(ValueError, match="extra"):
            net(rgb_hsi, ref, ref_warp0)
        with pytest.raises(ValueError, match="extra"):
            net(rgb_hsi, ref, ref_warp0, extra[:, :1])
        with pytest.raises(ValueError, match="ref"):
            net(rgb_hsi, ref[..., :7], ref_warp0, extra)
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            net(rgb_hsi, ref, ref_warp0[:, :2], extra)
        with pytest.raises(ValueError, match="extra"):
            WarpNet(extra_channels=0)(rgb_hsi, ref, ref_warp0, extra)
        with pytest.raises(ValueError):
            WarpNet(widths=())


class TestWarpCues:
    def test_no_motion(self):
        cues = warp_cues(torch.zeros(2, 2, 5, 7))
        assert cues.shape == (2, 2, 5, 7)
        assert torch.equal(cues[:, 0], torch.ones(2, 5, 7)) and torch.equal(cues[:, 1], torch.zeros(2, 5, 7))

    def test_inside_fraction(self):
        flow = torch.zeros(1, 2, 4, 6)
        flow[:, 0] = -0.5  # half a pixel to the left: column 0 reads half outside the photo
        inside = warp_cues(flow)[0, 0]
        assert torch.allclose(inside[:, 0], torch.full((4,), 0.5)) and torch.allclose(
            inside[:, 1:], torch.ones(4, 5)
        )
        flow[:, 0] = 100.0  # everything out of view
        assert warp_cues(flow)[0, 0].max() == 0
        # a photo larger than the grid: the same motion lands inside it
        assert warp_cues(flow, ref_size=(4, 200))[0, 0].min() == 1

    def test_discontinuity_marks_motion_boundaries(self):
        flow = torch.zeros(1, 2, 6, 6)
        flow[:, 0, :, 3:] = 3.0  # a foreground moving 3 px: a boundary between columns 2 and 3
        disc = warp_cues(flow)[0, 1]
        assert disc[:, 2].min() > 0.99 and disc[:, [0, 1, 3, 4, 5]].max() == 0
        smooth = torch.linspace(0, 0.3, 6).expand(1, 2, 6, 6)  # a slow zoom-like ramp
        assert warp_cues(smooth)[0, 1].max() < 0.1

    def test_no_gradient(self):
        flow = torch.randn(1, 2, 4, 4, requires_grad=True)
        assert not warp_cues(flow).requires_grad

    def test_exception(self):
        with pytest.raises(ValueError):
            warp_cues(torch.zeros(1, 3, 4, 4))


class TestWarpLoss:
    def test_values(self):
        pred, target = torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
        target[0, :, 0, 0] = 1.0
        loss, m = warp_loss(pred, target)
        assert loss.item() == pytest.approx(0.25) and m["l1"].item() == pytest.approx(0.25)
        mask = torch.tensor([[[False, True], [True, True]]])
        assert warp_loss(pred, target, mask)[0].item() == 0.0
        target[0, :, 0, 0] = float("nan")
        assert warp_loss(pred, target, mask)[0].item() == 0.0


class TestLoading:
    def test_safetensors_roundtrip(self, tmp_path):
        net = WarpNet(widths=(8, 16, 24), extra_channels=0)
        for p in net.parameters():
            torch.nn.init.normal_(p)
        path = save_warpnet(net, tmp_path / "w" / "warpnet.safetensors")
        again = load_warpnet(path)
        assert again.config == net.config and not again.training
        rgb_hsi, ref, ref_warp0, _ = inputs(1, 9, 9, extra_channels=0)
        with torch.no_grad():
            assert torch.equal(again(rgb_hsi, ref, ref_warp0), net(rgb_hsi, ref, ref_warp0))

    def test_lightning_style_checkpoint(self, tmp_path):
        net = WarpNet(widths=(8, 16))
        state = {f"warpnet.{k}": v for k, v in net.state_dict().items()}
        state["flow_net.w"] = torch.zeros(1)
        path = tmp_path / "stage2.ckpt"
        torch.save({"state_dict": state, CONFIG_KEY: net.config}, path)
        assert load_warpnet(path).config == net.config
        # no stored architecture: say so
        torch.save({"state_dict": state}, path)
        with pytest.raises(InputError, match="stores no architecture"):
            load_warpnet(path)
        assert load_warpnet(path, widths=[8, 16]).widths == (8, 16)

    def test_errors(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            load_warpnet(tmp_path / "missing.ckpt")
        (tmp_path / "w.bin").write_bytes(b"x")
        with pytest.raises(InputError, match="expected"):
            load_warpnet(tmp_path / "w.bin")
        (tmp_path / "w.ckpt").write_bytes(b"not a checkpoint")
        with pytest.raises(InputError, match="not a readable checkpoint"):
            load_warpnet(tmp_path / "w.ckpt")
        torch.save({"state_dict": {"other.w": torch.zeros(1)}}, tmp_path / "o.ckpt")
        with pytest.raises(InputError, match="prefix"):
            load_warpnet(tmp_path / "o.ckpt", prefix="warpnet.")

    def test_config_is_json(self):
        assert json.loads(json.dumps(WarpNet().config))["widths"] == [16, 32, 48, 64]
