"""The SR network: encoders, GAM matching, IDFA, attention fusion, the composed SSCHSR, baselines."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import helpers
from sschsr.models.aggregation import IDFA, expand_offsets, scale_correspondence
from sschsr.models.baselines import Bicubic, SingleImageSR
from sschsr.models.encoders import HSIEncoder, MatchingEncoder, TextureEncoder
from sschsr.models.fusion import (
    GDFN,
    RMCA,
    SMSA,
    FusionBlock,
    FusionLevel,
    LayerNorm2d,
    transposed_attention,
)
from sschsr.models.matching import GAM, global_match, index_to_offset, local_match, patch_descriptors
from sschsr.models.sschsr import PRESETS, SSCHSR, count_parameters, pad_to_multiple, reconstruct
from sschsr.ops.warp import flow_warp

OFFICIAL_TOTAL = 27.45e6  # official SSC-HSR parameters, RAFT included (DESIGN.md, anchor)
OFFICIAL_DECODER = 17.03e6
OFFICIAL_HSI_ENCODER = 3.36e6


def _rand(*shape, seed=0, dtype=torch.float32):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``out[y, x] = x[y - dy, x - dx]`` (content moves by ``(dx, dy)``), zeros where nothing moved in."""
    h, w = x.shape[-2:]
    r = max(abs(dy), abs(dx))
    xp = F.pad(x, (r, r, r, r))
    return xp[..., r - dy : r - dy + h, r - dx : r - dx + w]


# --------------------------------------------------------------------------------------------- encoders


class TestEncoders:
    @pytest.mark.parametrize("bands, h, w", [(5, 16, 16), (31, 24, 40), (8, 48, 20)])
    def test_shapes(self, bands, h, w):
        c = 8
        f_hsi = HSIEncoder(bands, c, (1, 1, 1))(_rand(2, bands, h, w))
        f_ref = TextureEncoder(c)(_rand(2, 3, h, w))
        expected = [(2, 4 * c, h // 4, w // 4), (2, 2 * c, h // 2, w // 2), (2, c, h, w)]
        assert [tuple(f.shape) for f in f_hsi] == expected
        assert [tuple(f.shape) for f in f_ref] == expected
        assert MatchingEncoder(16)(_rand(2, 3, h, w)).shape == (2, 16, h // 4, w // 4)

    def test_exceptions(self):
        with pytest.raises(ValueError, match="divisible by 4"):
            HSIEncoder(5, 8)(_rand(1, 5, 18, 16))
        with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
            HSIEncoder(5, 8)(_rand(1, 6, 16, 16))
        with pytest.raises(ValueError, match="three levels"):
            HSIEncoder(5, 8, (1, 1))


# --------------------------------------------------------------------------------------------- matching


class TestMatching:
    @pytest.mark.parametrize("matching", ["local", "global"])
    @pytest.mark.parametrize("dy, dx", [(1, -2), (0, 3), (-3, -1)])
    def test_shift_is_found(self, matching, dy, dx):
        feat = _randn(2, 16, 20, 24)
        ref = _shift(feat, dy, dx)  # src[p] = ref[p + (dx, dy)]
        offset, score = GAM(matching, radius=4)(feat, ref)
        assert offset.shape == (2, 2, 20, 24) and score.shape == (2, 1, 20, 24)
        m = 4  # interior: the shifted patch is whole in the reference
        inner = (..., slice(m, -m), slice(m, -m))
        assert torch.all(offset[:, 0][inner] == dx) and torch.all(offset[:, 1][inner] == dy)
        torch.testing.assert_close(score[inner], torch.ones_like(score[inner]))
        # the matched reference features, warped back, are the source's
        torch.testing.assert_close(flow_warp(ref, offset)[inner], feat[inner])

    def test_local_equals_global_when_the_window_covers_the_image(self):
        src, ref = (
            _randn(2, 6, 9, 11, seed=1, dtype=torch.float64),
            _randn(2, 6, 9, 11, seed=2, dtype=torch.float64),
        )
        c_global, s_global = global_match(src, ref)
        c_local, s_local = local_match(src, ref, radius=10)
        torch.testing.assert_close(c_local, c_global)
        torch.testing.assert_close(s_local, s_global)
        # a smaller window: never a better score, and the offsets stay inside it
        c_small, s_small = local_match(src, ref, radius=2)
        assert c_small.abs().max() <= 2 and torch.all(s_small <= s_global + 1e-12)

    @pytest.mark.parametrize("matching", ["local", "global"])
    def test_flat_regions_match_in_place(self, matching):
        # equal features everywhere: every candidate ties, and the nearest (no offset) wins
        feat = torch.ones(1, 4, 12, 12)
        offset, score = GAM(matching, radius=3)(feat, feat.clone())
        assert offset.abs().max() == 0
        torch.testing.assert_close(score, torch.ones_like(score))

    def test_chunking_does_not_change_results(self):
        src, ref = _randn(2, 8, 12, 10, seed=3), _randn(2, 8, 12, 10, seed=4)
        full = global_match(src, ref, chunk_size=2**30)
        for chunk in (1, 150, 10 * 120 * 5):
            for a, b in zip(global_match(src, ref, chunk_size=chunk), full, strict=True):
                torch.testing.assert_close(a, b)

    @pytest.mark.parametrize("matching", ["local", "global"])
    def test_score_carries_gradient(self, matching):
        src, ref = _randn(1, 4, 8, 8).requires_grad_(), _randn(1, 4, 8, 8, seed=1).requires_grad_()
        offset, score = GAM(matching, radius=2)(src, ref)
        assert not offset.requires_grad
        score.sum().backward()
        assert src.grad.abs().sum() > 0 and ref.grad.abs().sum() > 0

    def test_descriptors_and_offsets(self):
        d = patch_descriptors(_randn(2, 3, 5, 6))
        assert d.shape == (2, 27, 5, 6)
        torch.testing.assert_close(d.norm(dim=1), torch.ones(2, 5, 6))
        index = torch.tensor([[[0, 5], [3, 4]]])  # on a 2 x 3 reference grid
        assert index_to_offset(index, 3)[0].tolist() == [[[0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]]

    def test_exceptions(self):
        with pytest.raises(ValueError, match="'local' or 'global'"):
            GAM("nearest")
        with pytest.raises(ValueError, match="one shape"):
            local_match(_randn(1, 4, 8, 8), _randn(1, 4, 8, 6))
        with pytest.raises(ValueError, match="odd"):
            global_match(_randn(1, 4, 8, 8), _randn(1, 4, 8, 8), patch_size=2)


# ------------------------------------------------------------------------------------------ aggregation


class TestAggregation:
    def test_scale_correspondence(self):
        offset = torch.tensor([[[[1.0, -2.0]], [[0.5, 3.0]]]])  # (1, 2, 1, 2)
        score = torch.tensor([[[[0.9, 0.1]]]])
        up, s = scale_correspondence(offset, score, (4, 8))
        assert up.shape == (1, 2, 4, 8) and s.shape == (1, 1, 4, 8)
        assert up[0, 0, 3, 0] == 4.0 and up[0, 0, 0, 7] == -8.0 and up[0, 1, 2, 5] == 12.0
        assert s[0, 0, 1, 6] == pytest.approx(0.1)
        with pytest.raises(ValueError, match="integer multiple"):
            scale_correspondence(offset, score, (4, 6))

    def test_expand_offsets_layout(self):
        base = torch.stack((torch.full((1, 3, 3), 2.0), torch.full((1, 3, 3), -1.0)), dim=1)  # x = 2, y = -1
        out = expand_offsets(base, taps=9, groups=2)
        assert out.shape == (1, 36, 3, 3)
        assert torch.all(out[:, 0::2] == -1.0) and torch.all(out[:, 1::2] == 2.0)  # (dy, dx) pairs

    @pytest.mark.parametrize("factor", [1, 2, 4])
    def test_initial_idfa_reads_at_the_match(self, factor):
        # zero-initialised head: offsets = C scaled to the level, mask = 0.5
        torch.manual_seed(0)
        idfa = IDFA(8, 6, None, offset_groups=4)
        h = w = 6
        f_ref, f_hsi = _randn(1, 8, h * factor, w * factor), _randn(1, 6, h * factor, w * factor, seed=1)
        offset = torch.zeros(1, 2, h, w)
        offset[:, 0], offset[:, 1] = 1.0, -1.0  # x + 1, y - 1 at H/4: x + f, y - f at this level
        out = idfa(f_ref, offset, torch.rand(1, 1, h, w), f_hsi)
        shifted = _shift(f_ref, factor, -factor)  # shifted[p] = f_ref[p + (f, -f)]
        dcn = idfa.dcn
        expected = F.leaky_relu(
            0.5 * F.conv2d(shifted, dcn.weight, padding=1) + dcn.bias.view(1, -1, 1, 1), 0.1
        )
        inner = (..., slice(factor + 1, -factor - 1), slice(factor + 1, -factor - 1))
        torch.testing.assert_close(out[inner], expected[inner])

    def test_iterative_needs_prev(self):
        idfa = IDFA(8, 8, 8, iterative=True, offset_groups=8)
        args = (_randn(1, 8, 8, 8), torch.zeros(1, 2, 4, 4), torch.ones(1, 1, 4, 4), _randn(1, 8, 8, 8))
        with pytest.raises(ValueError, match="needs prev"):
            idfa(*args)
        assert idfa(*args, prev=_randn(1, 8, 8, 8)).shape == (1, 8, 8, 8)
        assert IDFA(8, 8, 8, iterative=False).guide is None
        assert IDFA(6, 8, None, offset_groups=4).offset_groups == 2  # largest divisor of 6 not above 4


# ----------------------------------------------------------------------------------------------- fusion


class TestFusion:
    def test_transposed_attention_is_pixel_permutation_equivariant(self):
        q, k, v = (_randn(2, 3, 4, 50, seed=s) for s in range(3))
        t = torch.rand(3, 1, 1) + 0.5
        perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
        out = transposed_attention(q, k, v, t)
        assert out.shape == (2, 3, 4, 50)
        torch.testing.assert_close(
            transposed_attention(q[..., perm], k[..., perm], v[..., perm], t), out[..., perm]
        )

    def test_transposed_attention_mixes_channels_with_a_stochastic_map(self):
        q, k = _randn(1, 2, 4, 30), _randn(1, 2, 4, 30, seed=1)
        v = torch.ones(1, 2, 4, 30)  # rows of the map sum to one: ones stay ones
        torch.testing.assert_close(transposed_attention(q, k, v, torch.ones(2, 1, 1)), v)

    def test_smsa_and_gdfn_shapes(self):
        x = _randn(2, 16, 9, 7)
        assert SMSA(16, 4)(x).shape == x.shape
        assert GDFN(16)(x).shape == x.shape
        with pytest.raises(ValueError, match="divisible by heads"):
            SMSA(10, 4)

    def test_rmca_with_zero_reference_keeps_only_the_positional_branch(self):
        rmca = RMCA(8, 2)
        x = _randn(1, 8, 6, 6)
        _, _, v = rmca.qkv_maps(x)
        torch.testing.assert_close(rmca(x, torch.zeros_like(x)), rmca.pos_emb(v))
        assert not torch.allclose(rmca(x, torch.ones_like(x)), rmca.pos_emb(v))

    def test_layer_norm_is_per_pixel_over_channels(self):
        x = _randn(2, 5, 3, 4)
        ln = LayerNorm2d(5)
        expected = F.layer_norm(x.permute(0, 2, 3, 1), (5,)).permute(0, 3, 1, 2)
        torch.testing.assert_close(ln(x), expected)

    def test_block_and_level(self):
        x, a = _randn(1, 8, 8, 8), _randn(1, 8, 8, 8, seed=1)
        block = FusionBlock(8, 2, use_rmca=True)
        assert block(x, a).shape == x.shape
        with pytest.raises(ValueError, match="needs a_ref"):
            block(x)
        plain = FusionBlock(8, 2, use_rmca=False)
        torch.testing.assert_close(plain(x, a), plain(x))  # a_ref ignored
        assert not hasattr(plain, "rmca")
        level = FusionLevel(12, 8, 4, blocks=2, heads=2, upsample=True)
        assert level(_randn(1, 12, 8, 8), a).shape == (1, 4, 16, 16)
        assert FusionLevel(12, 8, 5, 1, 1, upsample=False)(_randn(1, 12, 8, 8), a).shape == (1, 5, 8, 8)


# ------------------------------------------------------------------------------------------------ SSCHSR


class ConstantFlow(nn.Module):
    """A stand-in flow net: the same flow everywhere, learnable (so freezing has something to freeze)."""

    def __init__(self, dx: float, dy: float):
        super().__init__()
        self.flow = nn.Parameter(torch.tensor([dx, dy]))

    def forward(self, image1, image2, iters=None, flow_init=None, test_mode=False):
        b, _, h, w = image1.shape
        return self.flow.view(1, 2, 1, 1).expand(b, 2, h, w)


def _inputs(bands, h, w, batch=1, seed=0):
    return (
        _rand(batch, bands, h, w, seed=seed),
        _rand(batch, 3, h, w, seed=seed + 1),
        _rand(batch, 3, h, w, seed=seed + 2),
    )


def _randomise_offset_heads(net: nn.Module, seed: int = 0) -> None:
    """The IDFA heads start at zero (offsets = C), and so does the last conv (sr = lr_up): give them
    weights, as training would, so that their inputs matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last = net.fusion[-1].out.weight
        last.copy_(torch.randn(last.shape, generator=g) * 0.02)
        for idfa in net.aggregation:
            idfa.offset_head.weight.copy_(torch.randn(idfa.offset_head.weight.shape, generator=g) * 0.05)


class TestSSCHSR:
    @pytest.mark.parametrize("bands, h, w", [(5, 32, 32), (31, 36, 44), (7, 30, 42)])
    def test_forward_shapes(self, bands, h, w):
        net = SSCHSR(bands, "lite")
        out = net(*_inputs(bands, h, w, batch=2))
        assert out["sr"].shape == (2, bands, h, w)
        for key in ("ref_warp", "ref_warp0"):
            assert out[key].shape == (2, 3, h, w)
        assert out["flow"].shape == (2, 2, h, w) and out["flow"].abs().max() == 0
        hm, wm = -(-h // 4), -(-w // 4)
        assert out["match"].shape == (2, 2, hm, wm) and out["match_score"].shape == (2, 1, hm, wm)
        assert torch.isfinite(out["sr"]).all()

    def test_paper_preset_parameter_count(self):
        net = SSCHSR(31, "paper")
        counts = count_parameters(net)
        decoder = counts["aggregation"] + counts["fusion"]
        assert abs(decoder - OFFICIAL_DECODER) / OFFICIAL_DECODER < 0.05
        assert abs(counts["hsi_encoder"] - OFFICIAL_HSI_ENCODER) / OFFICIAL_HSI_ENCODER < 0.1
        assert PRESETS["paper"].blocks == (4, 3, 2) and PRESETS["paper"].heads == (8, 4, 1)

    def test_lite_is_at_most_a_quarter_of_the_official_model(self):
        extra = 0
        try:
            from sschsr.models.flow import RAFT

            extra += sum(p.numel() for p in RAFT(preset="small").parameters())
        except ImportError:
            pass
        try:
            from sschsr.models.warpnet import WarpNet

            extra += sum(p.numel() for p in WarpNet().parameters())
        except ImportError:
            pass
        lite = count_parameters(SSCHSR(31, "lite"))["total"]
        assert lite + extra <= OFFICIAL_TOTAL / 4
        assert lite < 3e6

    def test_gradients_reach_every_trainable_part(self):
        net = SSCHSR(5, "lite")
        # the last conv starts at zero (the untrained net is bicubic): after one step it is not
        nn.init.normal_(net.fusion[-1].out.weight, std=0.02)
        lr_up, ref, rgb = _inputs(5, 32, 32)
        out = net(lr_up, ref, rgb)
        (out["sr"].square().mean()).backward()
        for name in ("hsi_encoder", "texture_encoder", "aggregation", "fusion"):
            params = list(getattr(net, name).parameters())
            assert all(p.grad is not None for p in params), name
            assert sum(p.grad.abs().sum() for p in params) > 0, name
        # the offset heads start at zero, yet they learn
        assert all(idfa.offset_head.weight.grad.abs().sum() > 0 for idfa in net.aggregation)
        # the matching encoder learns through the mask sigmoid(m * S), once the heads give m != 0
        assert sum(p.grad.abs().sum() for p in net.match_encoder.parameters()) == 0
        net.zero_grad()
        _randomise_offset_heads(net)
        net(lr_up, ref, rgb)["sr"].square().mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.match_encoder.parameters())

    def test_untrained_network_is_bicubic(self):
        net = SSCHSR(5, "lite")  # the last conv starts at zero; the global residual passes lr_up through
        lr_up, ref, rgb = _inputs(5, 28, 36)
        torch.testing.assert_close(net(lr_up, ref, rgb)["sr"], lr_up)

    def test_iterative_ablation(self):
        torch.manual_seed(0)
        full = SSCHSR(5, "lite", iterative=True)
        _randomise_offset_heads(full)
        ablated = SSCHSR(5, "lite", iterative=False)
        result = ablated.load_state_dict(full.state_dict(), strict=False)
        assert not result.missing_keys and all(".guide." in k for k in result.unexpected_keys)
        assert result.unexpected_keys  # the guide convs exist only with iterative offsets
        args = _inputs(5, 32, 32)
        assert not torch.allclose(full(*args)["sr"], ablated(*args)["sr"])

    def test_residual_guide_starts_as_the_ablation(self):
        """``iterative_guide="residual"``: with the ablation's weights (the guide convs at their zero
        initialisation) the network is the one without iterative offsets; it differs once they learn."""
        torch.manual_seed(0)
        ablated = SSCHSR(5, "lite", iterative=False)
        _randomise_offset_heads(ablated)
        residual = SSCHSR(5, "lite", iterative=True, iterative_guide="residual")
        result = residual.load_state_dict(ablated.state_dict(), strict=False)
        assert not result.unexpected_keys and all(".guide." in k for k in result.missing_keys)
        assert residual.config["iterative_guide"] == "residual"
        args = _inputs(5, 32, 32)
        torch.testing.assert_close(residual(*args)["sr"], ablated(*args)["sr"])
        residual(*args)["sr"].square().mean().backward()
        guide = residual.aggregation[1].guide
        assert guide.weight.grad is not None and guide.weight.grad.abs().sum() > 0  # it can learn
        with torch.no_grad():
            guide.weight.normal_(0, 0.1)
        assert not torch.allclose(residual(*args)["sr"], ablated(*args)["sr"])
        with pytest.raises(ValueError, match="iterative_guide 'add'"):
            SSCHSR(5, "lite", iterative_guide="add")

    def test_detached_guide_stops_the_offsets_gradient_into_the_coarser_level(self):
        """``iterative_guide="detached"``: the paper's network, forward unchanged, but the offsets no longer
        send a gradient into ``F_sr_(l-1)``; the guide conv itself still learns."""
        torch.manual_seed(0)
        concat = SSCHSR(5, "lite", iterative_guide="concat")
        _randomise_offset_heads(concat)
        detached = SSCHSR(5, "lite", iterative_guide="detached")
        detached.load_state_dict(concat.state_dict())
        assert detached.config["iterative_guide"] == "detached"
        args = _inputs(5, 32, 32)
        torch.testing.assert_close(detached(*args)["sr"], concat(*args)["sr"])

        def grad_of_prev(idfa: IDFA) -> Tensor:
            g = torch.Generator().manual_seed(1)
            f_ref, f_hsi, prev = (torch.randn(1, idfa.channels, 16, 16, generator=g) for _ in range(3))
            prev.requires_grad_(True)
            offset, score = torch.randn(1, 2, 8, 8, generator=g), torch.rand(1, 1, 8, 8, generator=g)
            out = idfa(f_ref, offset, score, f_hsi, prev)
            out.square().mean().backward()
            assert idfa.guide.weight.grad is not None and idfa.guide.weight.grad.abs().sum() > 0
            return prev.grad

        assert grad_of_prev(concat.aggregation[1]).abs().sum() > 0
        assert grad_of_prev(detached.aggregation[1]) is None

    def test_rmca_ablation(self):
        net = SSCHSR(5, "lite", use_rmca=False)
        assert not any(hasattr(b, "rmca") for level in net.fusion for b in level.blocks)
        args = _inputs(5, 32, 32)
        out = net(*args)["sr"]
        out.mean().backward()  # A_ref still reaches the output, by concatenation
        assert all(idfa.dcn.weight.grad is not None for idfa in net.aggregation)
        assert net.fusion[0].embed.in_channels == 2 * PRESETS["lite"].dims[0]

    def test_matching_variants(self):
        torch.manual_seed(0)
        local = SSCHSR(5, "lite", matching="local", match_radius=2)
        glob = SSCHSR(5, "lite", matching="global")
        glob.load_state_dict(local.state_dict())
        lr_up, ref, rgb = _inputs(5, 32, 32)
        ref = rgb = _rand(1, 3, 32, 32, seed=9)  # identical images: both find the identity everywhere
        out_l, out_g = local(lr_up, ref, rgb), glob(lr_up, ref, rgb)
        assert out_l["match"].abs().max() == 0 and out_g["match"].abs().max() == 0
        torch.testing.assert_close(out_l["sr"], out_g["sr"])
        assert "radius=2" in repr(local.matching)

    def test_flow_net_and_freezing(self):
        flow_net = ConstantFlow(2.0, -1.0)
        net = SSCHSR(5, "lite", flow_net=flow_net, freeze_flow=True)
        assert not any(p.requires_grad for p in net.flow_net.parameters())
        net.train()
        assert not net.flow_net.training and net.hsi_encoder.training
        lr_up, ref, rgb = _inputs(5, 24, 24)
        out = net(lr_up, ref, rgb)
        torch.testing.assert_close(out["flow"][0, :, 0, 0], torch.tensor([2.0, -1.0]))
        torch.testing.assert_close(out["ref_warp0"], flow_warp(ref, out["flow"], padding_mode="border"))
        assert out["ref_warp"] is out["ref_warp0"]  # no WarpNet
        counts = count_parameters(net)
        assert counts["flow_net"] == 2 and counts["trainable"] == counts["total"] - 2

        trainable = SSCHSR(5, "lite", flow_net=ConstantFlow(1.0, 0.0), freeze_flow=False)
        trainable(lr_up, ref, rgb)["sr"].mean().backward()
        assert trainable.flow_net.flow.grad is not None

    def test_warpnet_path(self):
        warpnet_mod = pytest.importorskip("sschsr.models.warpnet")
        warpnet = warpnet_mod.WarpNet()
        with torch.no_grad():
            warpnet.tail.weight.normal_(0, 0.01)  # leave the identity it starts from
        lr_up, ref, rgb = _inputs(5, 24, 24)
        net = SSCHSR(5, "lite", flow_net=ConstantFlow(1.0, 1.0), warpnet=warpnet)
        _randomise_offset_heads(net)
        out = net(lr_up, ref, rgb)
        assert out["ref_warp"].shape == (1, 3, 24, 24) and not torch.allclose(
            out["ref_warp"], out["ref_warp0"]
        )
        off = SSCHSR(5, "lite", flow_net=ConstantFlow(1.0, 1.0), warpnet=warpnet, use_warpnet=False)
        assert off.warpnet is None
        off.load_state_dict(net.state_dict(), strict=False)
        out_off = off(lr_up, ref, rgb)
        assert out_off["ref_warp"] is out_off["ref_warp0"]
        assert not torch.allclose(out_off["sr"], out["sr"])

    def test_texture_input_both(self):
        """``both``: the texture encoder takes [ref_warp, ref_warp0]; the plain warp then reaches sr, which
        it cannot with ``repair`` (WarpNet's output alone)."""
        warpnet_mod = pytest.importorskip("sschsr.models.warpnet")
        lr_up, ref, rgb = _inputs(5, 24, 24)
        torch.manual_seed(0)
        both = SSCHSR(5, "lite", warpnet=warpnet_mod.WarpNet(), texture_input="both")
        _randomise_offset_heads(both)
        helpers.randomise_zero_parameters(both.fusion, 0.05)
        assert both.texture_encoder.in_channels == 6 and both.config["texture_input"] == "both"
        out = both(lr_up, ref, rgb)
        assert out["sr"].shape == (1, 5, 24, 24) and torch.isfinite(out["sr"]).all()
        # sr depends on ref_warp0 given apart from ref_warp: a different plain warp changes it
        ref_warp = out["ref_warp"]
        sr_a, _, _ = both.super_resolve(lr_up, rgb, ref_warp, out["ref_warp0"])
        sr_b, _, _ = both.super_resolve(lr_up, rgb, ref_warp, torch.zeros_like(ref_warp))
        torch.testing.assert_close(sr_a, out["sr"])
        assert not torch.allclose(sr_a, sr_b)
        with pytest.raises(ValueError, match="ref_warp0"):
            both.super_resolve(lr_up, rgb, ref_warp)
        # without WarpNet the two references are one image: taken once
        alone = SSCHSR(5, "lite", warpnet=warpnet_mod.WarpNet(), use_warpnet=False, texture_input="both")
        assert alone.texture_encoder.in_channels == 3 and alone(lr_up, ref, rgb)["sr"].shape == (1, 5, 24, 24)
        with pytest.raises(ValueError, match="texture_input"):
            SSCHSR(5, "lite", texture_input="plain")

    def test_with_raft(self):
        flow = pytest.importorskip("sschsr.models.flow")
        net = SSCHSR(5, "lite", flow_net=flow.RAFT(preset="small"), flow_iters=2)
        out = net(*_inputs(5, 32, 40))
        assert out["flow"].shape == (1, 2, 32, 40) and out["sr"].shape == (1, 5, 32, 40)

    def test_exceptions(self):
        net = SSCHSR(5, "lite")
        lr_up, ref, rgb = _inputs(5, 16, 16)
        with pytest.raises(ValueError, match="5 bands"):
            net(_rand(1, 6, 16, 16), ref, rgb)
        with pytest.raises(ValueError, match="ref"):
            net(lr_up, ref[..., :12], rgb)
        with pytest.raises(ValueError, match="unknown SSCHSR preset"):
            SSCHSR(5, "huge")

    def test_config_and_padding(self):
        net = SSCHSR(5, "lite", matching="global")
        assert (
            net.config["matching"] == "global"
            and net.config["architecture"]["width"] == PRESETS["lite"].width
        )
        x = _rand(1, 2, 5, 7)
        padded = pad_to_multiple(x)
        assert padded.shape == (1, 2, 8, 8) and torch.equal(padded[..., :5, :7], x)
        assert pad_to_multiple(_rand(1, 2, 8, 4)).shape == (1, 2, 8, 4)


# --------------------------------------------------------------------------------------------- baselines


class TestHeads:
    """``residual``: sr = lr_up + r; ``modulated``: sr = lr_up * (1 + g) + r (a gain of the local spectrum)."""

    def test_reconstruct_known_answers(self):
        lr_up = torch.rand(2, 4, 3, 5) + 0.1
        r = torch.randn(2, 4, 3, 5)
        g = torch.rand(2, 1, 3, 5)
        torch.testing.assert_close(reconstruct(r, lr_up, "residual"), lr_up + r)
        torch.testing.assert_close(reconstruct(torch.cat((g, r), 1), lr_up, "modulated"), lr_up * (1 + g) + r)
        # the gain alone keeps each pixel's spectral angle: the spectra stay parallel to lr_up's
        gained = reconstruct(torch.cat((g, torch.zeros_like(r)), 1), lr_up, "modulated")
        torch.testing.assert_close(F.cosine_similarity(gained, lr_up, dim=1), torch.ones(2, 3, 5))
        with pytest.raises(ValueError, match="unknown head"):
            reconstruct(r, lr_up, "additive")

    @pytest.mark.parametrize("net_cls", [SSCHSR, SingleImageSR])
    def test_untrained_networks_are_bicubic_with_either_head(self, net_cls):
        lr_up, ref, rgb = _inputs(5, 20, 24)
        for head in ("residual", "modulated"):
            net = net_cls(5, "lite", head=head).eval()
            with torch.no_grad():
                torch.testing.assert_close(net(lr_up, ref, rgb)["sr"], lr_up)
            assert net.fusion[-1].out.out_channels == 5 + (head == "modulated")
        with pytest.raises(ValueError, match="unknown head"):
            net_cls(5, "lite", head="additive")

    def test_modulated_head_is_recorded_and_trains(self):
        from sschsr.checkpoints import build_module, module_spec

        net = SSCHSR(5, "lite", head="modulated")
        assert module_spec(net)["head"] == "modulated" and build_module(module_spec(net)).head == "modulated"
        lr_up, ref, rgb = _inputs(5, 16, 16)
        net(lr_up, ref, rgb)["sr"].square().mean().backward()
        assert net.fusion[-1].out.weight.grad[0].abs().sum() > 0  # the gain channel gets a gradient


class TestBaselines:
    def test_bicubic(self):
        lr_up, ref, rgb = _inputs(5, 16, 20)
        out = Bicubic()(lr_up, ref, rgb)
        assert list(out) == ["sr"] and out["sr"] is lr_up
        assert sum(p.numel() for p in Bicubic().parameters()) == 0
        with pytest.raises(ValueError, match="Bicubic"):
            Bicubic(4)(lr_up)

    def test_registered_bicubic_is_on_the_hr_grid(self):
        """A ramp through the paper's degradation and bicubic back up reads ``content_shift`` px behind;
        the registered bicubic reads it where it is (away from the borders, within the bicubic ripple)."""
        from sschsr.ops.degrade import content_shift, degrade, upsample

        scale, w = 8, 256
        x = torch.arange(w, dtype=torch.float32)
        ramp = x.expand(1, 1, w, w).contiguous()
        lr_up = upsample(degrade(ramp, scale), scale)
        inner = (0, 0, slice(32, -32), slice(32, -32))
        assert (lr_up[inner] - ramp[inner]).mean().item() == pytest.approx(-content_shift(scale), abs=1e-3)
        registered = Bicubic(shift=content_shift(scale))(lr_up)["sr"]
        assert (registered[inner] - ramp[inner]).mean().item() == pytest.approx(0.0, abs=1e-3)
        assert (registered[inner] - ramp[inner]).abs().max() < 0.5

    def test_single_image_sr(self):
        net = SingleImageSR(5, "lite")
        lr_up, ref, rgb = _inputs(5, 30, 42)
        out = net(lr_up, ref, rgb)
        assert list(out) == ["sr"] and out["sr"].shape == lr_up.shape
        out["sr"].mean().backward()
        assert all(p.grad is not None for p in net.parameters())
        torch.testing.assert_close(net(lr_up)["sr"], out["sr"])  # the reference is ignored
        n = sum(p.numel() for p in net.parameters())
        assert 0.2 < n / count_parameters(SSCHSR(5, "lite"))["total"] < 1
