"""Stage 2: the LightningModule on fake batches (frozen and fine-tuned flow), flow weights, checkpoints,
the model config, and the Hydra run."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from helpers import compose_run, quiet_trainer
from sschsr.checkpoints import load_flow_weights, load_stage2, load_warpnet, save_flow_net
from sschsr.cli._common import CONF_DIR
from sschsr.errors import InputError
from sschsr.lit.flow import FlowModule
from sschsr.lit.warp import WarpModule, detail_ratio, image_psnr, render_target
from sschsr.models.flow import RAFT
from sschsr.models.warpnet import WarpNet

SIZE = 24


def fake_sample(i: int, size: int = SIZE) -> dict:
    g = torch.Generator().manual_seed(i)
    coarse = torch.rand(1, 3, size // 4, size // 4, generator=g)
    rgb_hr = F.interpolate(coarse, size=(size, size), mode="bilinear")[0]
    return {
        "rgb_hr": rgb_hr,
        "rgb_hsi": F.avg_pool2d(rgb_hr[None], 3, 1, 1, count_include_pad=False)[0],  # blurrier, as the LR HSI
        "ref": rgb_hr.roll((1, 2), dims=(-2, -1)) * 0.9,  # moved and darker
        "flow": torch.zeros(2, size, size),
        "valid": torch.ones(size, size, dtype=torch.bool),
        "has_flow": torch.tensor(True),
        "name": f"fake{i}",
    }


def fake_loader(n: int = 4, batch_size: int = 2) -> DataLoader:
    return DataLoader([fake_sample(i) for i in range(n)], batch_size=batch_size)


class TinyFlow(torch.nn.Module):
    """A stand-in flow network with RAFT's call signature, a few hundred parameters and a batch norm (whose
    running statistics change in train mode: a test that the frozen network stays in eval mode)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(6, 8, 3, padding=1),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 2, 3, padding=1),
        )

    def forward(self, image1, image2, iters=12, flow_init=None, test_mode=False):
        flow = 2.0 * self.body(torch.cat((image1, image2), dim=1))
        return flow if test_mode else [flow]


def make_module(flow_net: torch.nn.Module | None = None, **kwargs) -> WarpModule:
    torch.manual_seed(0)
    return WarpModule(
        WarpNet(),
        TinyFlow() if flow_net is None else flow_net,
        optimizer=partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=1e-3, total_steps=None, pct_start=0.05),
        **{"flow_iters": 2, **kwargs},
    )


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


class ModeRecorder(L.Callback):
    """The train/eval mode of both networks at every training batch."""

    def __init__(self):
        self.modes = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.modes.append((module.flow_net.training, module.warpnet.training))


class TestWarpModule:
    def test_steps_on_a_batch_dict(self):
        module = make_module()
        batch = next(iter(fake_loader()))
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
        module.eval()
        with torch.no_grad():
            module.validation_step(batch, 1)
            out = module.predict_step(batch, 0)
        assert out.shape == (2, 3, SIZE, SIZE) and 0 <= out.min() and out.max() <= 1
        metrics = module.split_metrics["val"]
        assert metrics["psnr_warp0"].compute() > 0
        # an untrained WarpNet is the identity on the plain warp: no gain yet
        assert metrics["psnr"].compute() == metrics["psnr_warp0"].compute()
        assert metrics["psnr_gain"].compute() == 0

    def test_image_psnr(self):
        target = torch.zeros(2, 3, 4, 4)
        pred = target.clone()
        pred[0] += 0.1  # MSE 0.01: 20 dB
        pred[1] -= 5.0  # clamped to 0: identical
        psnr = image_psnr(pred, target)
        assert psnr[0].item() == pytest.approx(20.0, abs=1e-4)
        assert psnr[1].item() == pytest.approx(100.0)  # capped: a split's mean stays finite

    def test_detail_ratio_falls_with_blur_and_is_one_for_the_target(self):
        torch.manual_seed(0)
        target = torch.rand(1, 3, 32, 32).repeat(3, 1, 1, 1)
        pred = target.clone()
        pred[1] = F.avg_pool2d(target[1:2], 3, stride=1, padding=1, count_include_pad=False)[0]
        pred[2] = 0.5  # flat: no detail kept
        ratio = detail_ratio(pred, target)
        assert ratio[0].item() == pytest.approx(1.0)
        assert 0.0 < ratio[1].item() < 0.6  # a 3x3 box blur removes most of white noise's detail
        assert ratio[2].item() == 0.0
        # a flat target has no detail to keep: 0, not a division by zero
        assert detail_ratio(torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), 0.3)).item() == 0.0

    def test_target_rendered_when_the_batch_has_none(self):
        batch = next(iter(fake_loader()))
        assert render_target(batch) is batch["rgb_hr"]
        del batch["rgb_hr"]
        with pytest.raises(KeyError, match="rgb_hr"):
            render_target(batch)
        batch["hr"] = torch.rand(2, 5, SIZE, SIZE)
        batch["srf"] = torch.full((2, 3, 5), 0.2)  # grey camera: every channel the band mean
        target = render_target(batch)
        assert target.shape == (2, 3, SIZE, SIZE)
        # histogram-matched to ref: the same sorted values per channel
        assert torch.allclose(
            target.flatten(2).sort().values, batch["ref"].clamp(0, 1).flatten(2).sort().values
        )
        loss = make_module().training_step(batch, 0)
        assert torch.isfinite(loss)

    def test_fit_keeps_the_flow_frozen(self, tmp_path):
        module = make_module()
        flow_before, warp_before = snapshot(module.flow_net), snapshot(module.warpnet)
        recorder = ModeRecorder()
        trainer = quiet_trainer(
            tmp_path,
            max_steps=3,  # the shortest run the one-cycle schedule takes (sschsr.lit._optim)
            val_check_interval=3,
            check_val_every_n_epoch=None,
            limit_val_batches=1,
            callbacks=[recorder],
        )
        trainer.fit(module, fake_loader(), fake_loader())
        assert recorder.modes == [(False, True)] * 3
        module.train()  # as older Lightning versions (and users) do: the frozen network stays in eval mode
        assert not module.flow_net.training and module.warpnet.training
        assert all(not p.requires_grad for p in module.flow_net.parameters())
        for k, v in snapshot(module.flow_net).items():
            assert torch.equal(v, flow_before[k]), k
        assert any(not torch.equal(v, warp_before[k]) for k, v in snapshot(module.warpnet).items())
        optimizer = trainer.optimizers[0]
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert trained == {id(p) for p in module.warpnet.parameters()}
        assert trainer.lr_scheduler_configs[0].scheduler.total_steps == 3  # from the trainer
        metrics = trainer.callback_metrics
        for key in ("train/loss", "val/loss", "val/psnr_warp0", "val/psnr", "val/psnr_gain"):
            assert key in metrics and torch.isfinite(metrics[key]), key
        assert metrics["val/psnr_gain"] == pytest.approx(
            (metrics["val/psnr"] - metrics["val/psnr_warp0"]).item(), abs=1e-4
        )
        (test,) = trainer.test(module, fake_loader(), verbose=False)
        assert {"test/loss", "test/psnr_warp0", "test/psnr", "test/psnr_gain"} <= set(test)

    def test_finetune_flow_trains_it(self, tmp_path):
        module = make_module(finetune_flow=True)
        flow_before = snapshot(module.flow_net)
        recorder = ModeRecorder()
        trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0, callbacks=[recorder])
        trainer.fit(module, fake_loader())
        assert recorder.modes[-1] == (True, True)
        module.eval().train()
        assert module.flow_net.training
        assert any(not torch.equal(v, flow_before[k]) for k, v in snapshot(module.flow_net).items())

    def test_warp_figure_goes_to_image_loggers(self, monkeypatch):
        logged = []

        class ImageLogger:
            def log_image(self, key, images, step=None, **kwargs):  # WandbLogger's signature
                logged.append((key, images[0]))

        class Experiment:
            def add_image(self, key, image, step, dataformats):  # TensorBoard's SummaryWriter
                logged.append((key, image))

        class TensorBoardLike:
            experiment = Experiment()

        class Plain:  # e.g. CSV: nothing
            experiment = object()

        monkeypatch.setattr(
            WarpModule, "loggers", property(lambda self: [ImageLogger(), TensorBoardLike(), Plain()])
        )
        module = make_module()
        with torch.no_grad():
            module.validation_step(next(iter(fake_loader())), 0)
        assert [k for k, _ in logged] == ["val/warp", "val/warp"]
        assert logged[0][1].shape == (SIZE, 5 * SIZE, 3) and logged[0][1].dtype.name == "uint8"

    def test_inference_only_module_cannot_train(self):
        with pytest.raises(ValueError, match="optimizer"):
            WarpModule(WarpNet(), RAFT("small")).configure_optimizers()


class TestFlowWeights:
    def test_from_a_flow_module_checkpoint(self, tmp_path):
        torch.manual_seed(1)
        flow_module = FlowModule(RAFT("small"), optimizer=partial(torch.optim.AdamW, lr=1e-3), iters=1)
        trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
        trainer.fit(flow_module, DataLoader([fake_sample(0, size=16)], batch_size=1))
        path = tmp_path / "flow.ckpt"
        trainer.save_checkpoint(path)

        module = make_module(RAFT("small"), flow_ckpt=str(path))
        assert module.hparams.flow_ckpt == str(path)
        for k, v in flow_module.net.state_dict().items():
            assert torch.equal(module.flow_net.state_dict()[k], v), k
        assert not module.flow_net.training and not any(p.requires_grad for p in module.flow_net.parameters())

    def test_from_safetensors(self, tmp_path):
        torch.manual_seed(2)
        net = RAFT("small")
        path = save_flow_net(net, tmp_path / "flow.safetensors")
        target = load_flow_weights(RAFT("small"), path)
        for k, v in net.state_dict().items():
            assert torch.equal(target.state_dict()[k], v), k

    def test_other_architecture_names_the_setting(self, tmp_path):
        path = save_flow_net(RAFT("small", corr_radius=2), tmp_path / "flow.safetensors")
        with pytest.raises(InputError, match="model.flow_net.corr_radius=2"):
            load_flow_weights(RAFT("small"), path)
        with pytest.raises(InputError, match="not found"):
            load_flow_weights(RAFT("small"), tmp_path / "missing.ckpt")
        with pytest.raises(InputError, match="RAFT"):
            load_flow_weights(torch.nn.Conv2d(1, 1, 1), path)


def test_stage2_checkpoint_roundtrip(tmp_path):
    module = make_module(RAFT("small"))
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(module, DataLoader([fake_sample(0, size=16)], batch_size=1))
    path = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(path)

    flow_net, warpnet = load_stage2(path)
    assert isinstance(warpnet, WarpNet) and warpnet.config == module.warpnet.config
    assert flow_net.config == module.flow_net.config
    assert load_warpnet(path).config == warpnet.config
    module.eval()
    batch = next(iter(fake_loader(n=2)))
    with torch.no_grad():
        expected = module(batch["rgb_hsi"], batch["ref"])
        again = WarpModule(warpnet, flow_net, flow_iters=2)
        assert torch.equal(again.eval()(batch["rgb_hsi"], batch["ref"]), expected)
    # plain values only: Lightning's weights-only loader reads it
    restored = WarpModule.load_from_checkpoint(path, warpnet=WarpNet(), flow_net=RAFT("small"))
    assert restored.hparams.flow_iters == 2 and not restored.hparams.finetune_flow


def test_model_config_composes_and_instantiates():
    from hydra.utils import instantiate

    cfg = compose_run(None, ["~data", "model=warp", "trainer.max_steps=50"])
    flow_cfg = compose_run(None, ["~data", "model=flow"])
    assert cfg.model.flow_net._target_ == flow_cfg.model.net._target_
    assert cfg.model.flow_net.preset == flow_cfg.model.net.preset == "small"
    module = instantiate(cfg.model)
    assert (
        isinstance(module, WarpModule)
        and isinstance(module.warpnet, WarpNet)
        and isinstance(module.flow_net, RAFT)
    )
    assert module.flow_net.iters == cfg.model.flow_iters and module.hparams.flow_ckpt is None
    assert module.scheduler_factory.keywords["total_steps"] == 50
    assert module.optimizer_factory.keywords["lr"] == module.scheduler_factory.keywords["max_lr"] == 2e-4
    assert compose_run(None, ["~data", "experiment=stage2"]).model._target_ == "sschsr.lit.warp.WarpModule"


# tiny procedural data: the keys are conf/data/procedural.yaml's (HSIDataModule's arguments)
TINY_DATA = [
    "n_bands=8",
    "data.source.num=4",
    "data.source.size=48",
    "data.crop_size=32",
    "data.eval_crop_size=32",
    "data.batch_size=1",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.val=1",
    "data.test=1",
    "data.pairs_per_scene=1",
]


@pytest.mark.skipif(
    not (CONF_DIR / "data" / "procedural.yaml").is_file(), reason="conf/data/procedural.yaml not written yet"
)
def test_stage2_fast_dev_run_through_hydra(tmp_path):
    from sschsr.cli.train import train

    overrides = [
        "experiment=stage2",
        "logger=none",
        "trainer=cpu",
        "trainer.fast_dev_run=true",
        "model.flow_iters=2",
        "earlier_stages=untrained",
    ]
    cfg = compose_run(tmp_path, [*overrides, *TINY_DATA])
    metrics, objects = train(cfg)
    assert isinstance(objects["model"], WarpModule)
    assert "train/loss" in metrics and math.isfinite(metrics["train/loss"])
    assert "val/psnr" in metrics and math.isfinite(metrics["val/psnr"])
    assert metrics["val/psnr_gain"] == pytest.approx(
        metrics["val/psnr"] - metrics["val/psnr_warp0"], abs=1e-3
    )
