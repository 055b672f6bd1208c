"""The full network's LightningModule: loss, schedule, metrics, figures, earlier stages, checkpoints that
load for inference, the baselines, and the model configs."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import hydra
import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

import helpers
from sschsr.checkpoints import MODEL_KEY, load_earlier_stages, load_model, save_flow_net, widen_inputs
from sschsr.cli._common import CONF_DIR
from sschsr.data.spectral import camera_srf, default_wavelengths
from sschsr.errors import InputError
from sschsr.lit.sr import SRModule, sr_loss, warmup_cosine
from sschsr.metrics import psnr
from sschsr.models.baselines import Bicubic, SingleImageSR
from sschsr.models.flow import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.models.warpnet import WarpNet

BANDS, SIZE = 8, 32


def fake_sample(i: int) -> dict:
    g = torch.Generator().manual_seed(i)
    hr = F.interpolate(
        torch.rand(1, BANDS, SIZE // 4, SIZE // 4, generator=g), size=(SIZE, SIZE), mode="bilinear"
    )[0]
    lr_up = F.avg_pool2d(hr[None], 5, 1, 2, count_include_pad=False)[0]  # blurrier, as bicubic of the LR
    srf = torch.from_numpy(camera_srf(default_wavelengths(BANDS)))
    rgb = torch.einsum("rc,chw->rhw", srf, hr)
    return {
        "hr": hr,
        "lr_up": lr_up,
        "ref": rgb.roll((1, 2), dims=(-2, -1)),
        "rgb_hsi": torch.einsum("rc,chw->rhw", srf, lr_up),
        "rgb_hr": rgb,
        "srf": srf,
        "name": f"fake{i}",
    }


def fake_loader(n: int = 4, batch_size: int = 2) -> DataLoader:
    return DataLoader([fake_sample(i) for i in range(n)], batch_size=batch_size)


def tiny_sschsr(seed: int = 0) -> SSCHSR:
    torch.manual_seed(seed)
    return SSCHSR(BANDS, "lite", flow_net=RAFT("small", iters=2), warpnet=WarpNet(), flow_iters=2)


def make_module(net=None, **kwargs) -> SRModule:
    return SRModule(
        net if net is not None else tiny_sschsr(),
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
        scheduler=partial(warmup_cosine, total_steps=None, warmup=0.25),
        scale=4,
        **kwargs,
    )


def quiet_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return helpers.quiet_trainer(tmp_path, **{"num_sanity_val_steps": 0, **kwargs})


class TestLossAndSchedule:
    def test_sr_loss_hand_value_and_warp_term(self):
        sr, hr = torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 0.5)
        loss, terms = sr_loss(sr, hr)
        assert loss.item() == pytest.approx(0.5 * 0.5**2) and set(terms) == {"sr"}
        warp, target = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 2.0)  # |d| > 1: linear part, 2 - 0.5
        loss, terms = sr_loss(sr, hr, warp, target, warp_weight=0.5)
        assert terms["warp"].item() == pytest.approx(1.5)
        assert loss.item() == pytest.approx(0.125 + 0.5 * 1.5)
        assert set(sr_loss(sr, hr, warp, None)[1]) == {"sr"}  # no target: no warp term

    def test_warmup_then_cosine(self):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
        sched = warmup_cosine(opt, total_steps=200, warmup=0.1, final_ratio=0.01)
        lrs = []
        for _ in range(200):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert lrs[0] == pytest.approx(2e-6)
        assert np.all(np.diff(lrs[:21]) > 0) and max(lrs) == pytest.approx(2e-4) and np.argmax(lrs) == 20
        assert np.all(np.diff(lrs[20:]) <= 1e-12)
        assert lrs[-1] == pytest.approx(2e-6, rel=1e-3)
        assert lrs[110] == pytest.approx(
            2e-6 + (2e-4 - 2e-6) * 0.5 * (1 + math.cos(math.pi * 90 / 179)), rel=1e-3
        )


class TestSRModule:
    def test_fit_logs_metrics_and_checkpoint_loads_for_inference(self, tmp_path):
        module = make_module()
        trainer = quiet_trainer(tmp_path, max_steps=2, val_check_interval=2, check_val_every_n_epoch=None)
        trainer.fit(module, fake_loader(), fake_loader(2))
        metrics = trainer.callback_metrics
        for name in (
            "train/loss",
            "train/loss_sr",
            "train/loss_warp",
            "val/loss",
            "val/psnr",
            "val/ssim",
            "val/sam",
            "val/ergas",
        ):
            assert name in metrics and torch.isfinite(metrics[name]), name
        assert 0 < metrics["val/ssim"] <= 1 and metrics["val/sam"] >= 0

        ckpt = tmp_path / "m.ckpt"
        trainer.save_checkpoint(ckpt)
        raw = torch.load(ckpt, map_location="cpu", weights_only=True)  # plain values only: resumable safely
        assert raw[MODEL_KEY]["scale"] == 4 and raw[MODEL_KEY]["n_bands"] == BANDS
        assert "net" not in raw["hyper_parameters"]
        net = load_model(ckpt, scale=4, n_bands=BANDS)
        assert isinstance(net, SSCHSR) and not net.training
        batch = next(iter(fake_loader(2)))
        module.eval()
        with torch.no_grad():
            expected = module(batch["lr_up"], batch["ref"], batch["rgb_hsi"])["sr"]
            got = net(batch["lr_up"], batch["ref"], batch["rgb_hsi"])["sr"]
        torch.testing.assert_close(got, expected)
        assert torch.equal(module.predict_step(batch), expected)
        with pytest.raises(InputError, match="trained for x4"):
            load_model(ckpt, scale=8, n_bands=BANDS)
        with pytest.raises(InputError, match="9 bands"):
            load_model(ckpt, scale=4, n_bands=9)

    def test_bicubic_trains_nothing_and_scores_lr_up(self, tmp_path):
        module = SRModule(Bicubic(BANDS), scale=4)
        trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
        trainer.fit(module, fake_loader())  # no optimiser: steps still count, nothing is learnt
        assert trainer.global_step == 2
        (result,) = quiet_trainer(tmp_path).validate(module, fake_loader(4), verbose=False)
        batches = list(fake_loader(4))
        expected = torch.cat([psnr(b["lr_up"].clamp(0, 1), b["hr"]) for b in batches]).mean()
        assert result["val/psnr"] == pytest.approx(expected.item(), rel=1e-5)

    def test_single_image_has_no_warp_term(self, tmp_path):
        torch.manual_seed(0)
        module = make_module(SingleImageSR(BANDS), warp_weight=0.0)
        trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
        trainer.fit(module, fake_loader())
        assert (
            "train/loss_sr" in trainer.callback_metrics and "train/loss_warp" not in trainer.callback_metrics
        )

    def test_metrics_in_full_precision_under_bf16(self, tmp_path):
        module = SRModule(Bicubic(BANDS), scale=4)
        (fp32,) = quiet_trainer(tmp_path).validate(module, fake_loader(), verbose=False)
        (bf16,) = quiet_trainer(tmp_path, precision="bf16-mixed").validate(
            module, fake_loader(), verbose=False
        )
        for name in ("val/psnr", "val/ssim", "val/sam", "val/ergas"):
            assert bf16[name] == pytest.approx(fp32[name], rel=1e-5), name


class ImageLogger(Logger):
    """A logger that takes images, as wandb's does."""

    def __init__(self):
        super().__init__()
        self.images: dict[str, list[np.ndarray]] = {}

    @property
    def name(self) -> str:
        return "images"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        pass

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        self.images.setdefault(key, []).extend(images)


def test_figures_go_to_loggers_that_take_images(tmp_path):
    logger = ImageLogger()
    module = SRModule(Bicubic(BANDS), scale=4)
    quiet_trainer(tmp_path, logger=logger).validate(module, fake_loader(4), verbose=False)
    assert set(logger.images) == {"val/sr", "val/spectra"}
    assert len(logger.images["val/sr"]) == 1  # the first batch only
    figure = logger.images["val/sr"][0]
    assert figure.shape == (SIZE, 5 * SIZE, 3) and figure.dtype == np.uint8
    spectra = logger.images["val/spectra"][0]
    assert spectra.ndim == 3 and spectra.shape[2] == 3 and spectra.dtype == np.uint8 and spectra.std() > 0
    # log_images=False, or a logger without images: nothing, no error
    logger = ImageLogger()
    quiet_trainer(tmp_path, logger=logger).validate(
        SRModule(Bicubic(BANDS), scale=4, log_images=False), fake_loader(2), verbose=False
    )
    assert not logger.images


class TestEarlierStages:
    def test_flow_safetensors_and_warp_checkpoint(self, tmp_path):
        torch.manual_seed(1)
        flow = RAFT("small", iters=2)
        flow_file = save_flow_net(flow, tmp_path / "flow.safetensors")
        net = tiny_sschsr()
        load_earlier_stages(net, flow_ckpt=str(flow_file))
        for k, v in flow.state_dict().items():
            assert torch.equal(net.flow_net.state_dict()[k], v), k

        # a stage-2 checkpoint brings its WarpNet and the flow it was trained on
        torch.manual_seed(2)
        warp, flow2 = WarpNet(), RAFT("small", iters=2)
        for p in warp.parameters():
            torch.nn.init.normal_(p)
        state = {
            **{f"warpnet.{k}": v for k, v in warp.state_dict().items()},
            **{f"flow_net.{k}": v for k, v in flow2.state_dict().items()},
        }
        ckpt = tmp_path / "stage2.ckpt"
        torch.save(
            {"state_dict": state, "warpnet_config": warp.config, "flow_net_config": flow2.config}, ckpt
        )
        net = tiny_sschsr()
        load_earlier_stages(net, warp_ckpt=str(ckpt))
        assert all(torch.equal(net.warpnet.state_dict()[k], v) for k, v in warp.state_dict().items())
        assert all(torch.equal(net.flow_net.state_dict()[k], v) for k, v in flow2.state_dict().items())
        # with flow_ckpt too, the flow comes from flow_ckpt
        net = tiny_sschsr()
        module = make_module(net, flow_ckpt=str(flow_file), warp_ckpt=str(ckpt))
        assert all(torch.equal(module.net.flow_net.state_dict()[k], v) for k, v in flow.state_dict().items())

    def test_errors(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            load_earlier_stages(tiny_sschsr(), flow_ckpt=str(tmp_path / "missing.ckpt"))
        with pytest.raises(InputError, match="no flow network"):
            load_earlier_stages(SingleImageSR(BANDS), flow_ckpt=str(tmp_path / "x.ckpt"))
        other = save_flow_net(RAFT("base"), tmp_path / "base.safetensors")
        with pytest.raises(InputError, match="preset"):
            load_earlier_stages(tiny_sschsr(), flow_ckpt=str(other))


class TestInitWeights:
    def test_starts_from_a_saved_model_then_earlier_stages_replace_theirs(self, tmp_path):
        from sschsr.checkpoints import save_model

        trained = tiny_sschsr(seed=3)
        model_file = save_model(trained, tmp_path / "m.safetensors", scale=4)
        module = make_module(tiny_sschsr(seed=4), init_ckpt=str(model_file))
        for k, v in trained.state_dict().items():
            assert torch.equal(module.net.state_dict()[k], v), k
        # flow_ckpt is loaded after init_ckpt: the flow comes from it
        torch.manual_seed(5)
        flow = RAFT("small", iters=2)
        flow_file = save_flow_net(flow, tmp_path / "flow.safetensors")
        module = make_module(tiny_sschsr(seed=4), init_ckpt=str(model_file), flow_ckpt=str(flow_file))
        assert all(torch.equal(module.net.flow_net.state_dict()[k], v) for k, v in flow.state_dict().items())
        # ... the rest still from init_ckpt
        for k, v in trained.warpnet.state_dict().items():
            assert torch.equal(module.net.warpnet.state_dict()[k], v), k

    def test_widened_texture_encoder_starts_as_the_source(self, tmp_path):
        """A model with ``texture_input="both"`` started from one with ``repair``: the added inputs get zero
        weights, so it computes what the source did, and the added weights learn (they get gradients)."""
        from sschsr.checkpoints import save_model

        trained = helpers.randomise_zero_parameters(tiny_sschsr(seed=3), 0.05)
        model_file = save_model(trained, tmp_path / "m.safetensors", scale=4)
        torch.manual_seed(4)
        wide = SSCHSR(
            BANDS,
            "lite",
            flow_net=RAFT("small", iters=2),
            warpnet=WarpNet(),
            flow_iters=2,
            texture_input="both",
        )
        module = make_module(wide, init_ckpt=str(model_file))
        weight = module.net.texture_encoder.level3[0].weight
        assert weight.shape[1] == 6 and not weight[:, 3:].any()
        torch.testing.assert_close(weight[:, :3], trained.texture_encoder.level3[0].weight)
        inputs = (torch.rand(1, BANDS, 32, 32), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
        trained.eval(), module.net.eval()
        out = module.net(*inputs)["sr"]
        torch.testing.assert_close(out, trained(*inputs)["sr"])
        out.mean().backward()
        assert weight.grad[:, 3:].abs().sum() > 0

    def test_widen_inputs_leaves_other_mismatches(self):
        source = {"a": torch.ones(2, 3), "b": torch.ones(2, 3), "c": torch.ones(4)}
        target = {"a": torch.empty(3, 3), "b": torch.empty(2, 1), "c": torch.empty(5)}
        state, widened = widen_inputs(source, target)
        assert widened == [] and all(torch.equal(state[k], source[k]) for k in source)

    def test_errors(self, tmp_path):
        from sschsr.checkpoints import save_model

        model_file = save_model(tiny_sschsr(), tmp_path / "m.safetensors", scale=4)
        with pytest.raises(InputError, match="not found"):
            make_module(tiny_sschsr(), init_ckpt=str(tmp_path / "missing.safetensors"))
        with pytest.raises(InputError, match="does not fit"):
            make_module(SingleImageSR(BANDS), init_ckpt=str(model_file))
        with pytest.raises(InputError, match="scale"):
            SRModule(tiny_sschsr(), scale=8, init_ckpt=str(model_file))


def compose_model(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.parametrize(
    "overrides, net_type",
    [
        (["experiment=full"], SSCHSR),
        (["experiment=smoke"], SSCHSR),
        (["experiment=full", "model=single_image"], SingleImageSR),
        (["experiment=full", "model=bicubic"], Bicubic),
    ],
)
def test_model_configs_instantiate(overrides, net_type):
    cfg = compose_model([*overrides, f"n_bands={BANDS}", "scale=8"])
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module, SRModule) and isinstance(module.net, net_type)
    assert module.hparams.scale == 8 and module.net.n_bands == BANDS
    assert (
        cfg.callbacks.model_checkpoint.monitor == "val/psnr" and cfg.callbacks.model_checkpoint.mode == "max"
    )
    if net_type is SSCHSR:
        assert isinstance(module.net.flow_net, RAFT) and isinstance(module.net.warpnet, WarpNet)
        assert (
            module.net.flow_net.config
            == hydra.utils.instantiate(compose_model(["experiment=stage1"]).model.net).config
        )
        assert module.scheduler_factory.func is warmup_cosine
        assert module.scheduler_factory.keywords["total_steps"] == cfg.trainer.max_steps
        assert module.optimizer_factory.keywords == {"lr": 2e-4, "weight_decay": 1e-4}
    if net_type is Bicubic:
        assert module.configure_optimizers() is None


@pytest.mark.slow
def test_smoke_experiment_trains(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from sschsr.cli.train import train

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["experiment=smoke", "logger=none", "trainer.max_steps=10"],
            return_hydra_config=True,
        )
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    metrics, _ = train(cfg)
    assert math.isfinite(metrics["val/psnr"])
    net = load_model(tmp_path / "checkpoints" / "last.ckpt", scale=cfg.scale, n_bands=cfg.n_bands)
    assert isinstance(net, SSCHSR)


class TestCorrespondenceLoss:
    """The contrastive loss on true matches (``match_weight``) for the matching encoder."""

    def test_known_answers(self):
        from sschsr.losses import correspondence_nce

        g = torch.Generator().manual_seed(0)
        src = F.normalize(torch.randn(2, 16, 10, 12, generator=g), dim=1)
        ref = src.roll((1, -2), dims=(-2, -1))  # src[p] is at ref[p + (dx, dy)] = p + (-2, 1)
        flow = torch.tensor([-2.0, 1.0]).view(1, 2, 1, 1).expand(2, 2, 10, 12)
        valid = torch.ones(2, 10, 12, dtype=torch.bool)
        right, m_right = correspondence_nce(src, ref, flow, valid, points=64, generator=g)
        wrong, m_wrong = correspondence_nce(src, ref, torch.zeros_like(flow), valid, points=64, generator=g)
        assert float(m_right["accuracy"]) == 1.0 and float(m_wrong["accuracy"]) < 0.2
        assert float(right) < 0.1 < float(wrong)
        # no usable position (all invalid): zero, still connected to the graph
        src.requires_grad_(True)
        none, _ = correspondence_nce(src, ref, flow, torch.zeros_like(valid))
        assert float(none.detach()) == 0.0 and none.requires_grad
        with pytest.raises(ValueError, match="correspondence_nce"):
            correspondence_nce(src, ref[:, :8], flow, valid)

    def test_level_correspondence(self):
        from sschsr.lit.sr import level_correspondence

        flow = torch.tensor([8.0, -4.0]).view(1, 2, 1, 1).expand(1, 2, 18, 16).clone()
        valid = torch.ones(1, 18, 16, dtype=torch.bool)
        valid[0, 5, 6] = False  # one invalid pixel invalidates its 4 x 4 block
        flow[0, :, 17, 0] = float("nan")  # a NaN in the true flow too
        level, ok = level_correspondence(flow, valid)
        assert level.shape == (1, 2, 5, 4) and ok.shape == (1, 5, 4)
        torch.testing.assert_close(level[0, :, 0, 0], torch.tensor([2.0, -1.0]))
        assert not ok[0, 1, 1] and not ok[0, 4, 0] and int(ok.sum()) == 18

    def test_training_step_adds_the_term_and_it_trains_the_matching_encoder(self):
        torch.manual_seed(0)
        module = make_module(match_weight=1.0, match_points=64)
        batch = next(iter(fake_loader(2, 2)))
        batch["flow"] = torch.tensor([2.0, 1.0]).view(1, 2, 1, 1).expand(2, 2, SIZE, SIZE).clone()
        batch["valid"] = torch.ones(2, SIZE, SIZE, dtype=torch.bool)
        module.train()
        _, _, terms = module._step(batch)
        assert {"sr", "warp", "match", "match_accuracy"} <= set(terms)
        module.eval()
        assert "match" not in module._step(batch)[2]  # a training term only

        from sschsr.lit.sr import level_correspondence
        from sschsr.losses import correspondence_nce

        net = module.net
        flow, valid = level_correspondence(batch["flow"], batch["valid"])
        opt = torch.optim.Adam(net.match_encoder.parameters(), lr=1e-3)
        losses = []
        for _ in range(15):
            g = torch.Generator().manual_seed(1)  # the same positions each step
            loss, _ = correspondence_nce(
                net.match_descriptors(batch["rgb_hsi"]),
                net.match_descriptors(batch["ref"]),
                flow,
                valid,
                64,
                generator=g,
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        assert losses[-1] < 0.8 * losses[0]


def test_sam_term_of_the_loss():
    from sschsr.losses import spectral_angle_loss

    hr = torch.rand(2, 5, 6, 6) + 0.1
    assert float(spectral_angle_loss(3.0 * hr, hr)) < 0.02  # a scaled spectrum: no angle (but the clip)
    sr = hr.clone().requires_grad_(True)
    noisy = hr + 0.2 * torch.randn_like(hr)
    angle = spectral_angle_loss(noisy, hr)
    loss, terms = sr_loss(noisy, hr, sam_weight=0.5)
    plain, _ = sr_loss(noisy, hr)
    assert set(terms) == {"sr", "sam"} and torch.allclose(loss, plain + 0.5 * angle)
    spectral_angle_loss(sr * torch.linspace(0.5, 1.5, 5).view(1, 5, 1, 1), hr).backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
