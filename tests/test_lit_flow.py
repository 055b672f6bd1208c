"""Stage 1: RAFT's sequence loss against hand-computed values, the LightningModule, and the Hydra run."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import sschsr.lit.flow
from helpers import compose_run, quiet_trainer
from sschsr.checkpoints import load_flow_net
from sschsr.cli._common import CONF_DIR
from sschsr.lit.flow import FlowModule
from sschsr.losses import flow_metrics, flow_valid_mask, sequence_loss
from sschsr.models.flow import RAFT

SIZE = 24


class TestSequenceLoss:
    def test_known_value(self):
        # one row of 3 pixels, true flow 0; the last pixel is not valid
        gt = torch.zeros(1, 2, 1, 3)
        valid = torch.tensor([[[True, True, False]]])
        p1 = torch.tensor([[[[1.0, 0.0, 100.0]], [[0.0, 2.0, 100.0]]]])  # |.|_1 = 1, 2 (, 200)
        p2 = torch.tensor([[[[0.5, 0.0, 9.0]], [[0.5, 0.0, 9.0]]]])  # |.|_1 = 1, 0 (, 18)
        loss, m = sequence_loss([p1, p2], gt, valid, gamma=0.5)
        # 0.5^1 * mean(1, 2) + 0.5^0 * mean(1, 0) = 0.75 + 0.5
        assert loss.item() == pytest.approx(1.25)
        assert m["epe"].item() == pytest.approx(math.sqrt(0.5) / 2)  # (|(0.5, 0.5)| + 0) / 2
        assert m["1px"].item() == 1.0

    def test_gamma_weights(self):
        gt = torch.zeros(1, 2, 2, 2)
        preds = [gt + 1.0 for _ in range(3)]  # each prediction costs |1| + |1| = 2 per pixel
        loss, _ = sequence_loss(preds, gt, gamma=0.8)
        assert loss.item() == pytest.approx(2 * (0.8**2 + 0.8 + 1))

    def test_metrics_exact_on_constructed_errors(self):
        # x errors of 0.5, 2, 4, 6 px on valid pixels; an invalid pixel and one with a > 400 px true
        # flow carry errors that must not count
        gt = torch.zeros(1, 2, 1, 6)
        gt[0, 0, 0, 5] = 500.0
        pred = torch.zeros(1, 2, 1, 6)
        pred[0, 0, 0] = torch.tensor([0.5, 2.0, 4.0, 6.0, 50.0, 0.0])
        valid = torch.tensor([[[True, True, True, True, False, True]]])
        loss, m = sequence_loss([pred], gt, valid)
        assert loss.item() == pytest.approx((0.5 + 2 + 4 + 6) / 4)
        assert m["epe"].item() == pytest.approx(3.125)
        assert (m["1px"].item(), m["3px"].item(), m["5px"].item()) == (0.25, 0.5, 0.75)
        assert flow_valid_mask(gt, valid).sum() == 4

    def test_nan_at_invalid_pixels_is_ignored(self):
        gt = torch.zeros(1, 2, 2, 2)
        gt[0, :, 0, 0] = float("nan")
        valid = torch.ones(1, 2, 2, dtype=torch.bool)
        valid[0, 0, 0] = False
        pred = torch.ones(1, 2, 2, 2, requires_grad=True)
        loss, m = sequence_loss([pred], gt, valid)
        loss.backward()
        assert loss.item() == pytest.approx(2.0) and torch.isfinite(pred.grad).all()
        assert m["epe"].item() == pytest.approx(math.sqrt(2))

    def test_no_valid_pixel(self):
        pred = torch.ones(1, 2, 2, 2, requires_grad=True)
        loss, m = sequence_loss([pred], torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.bool))
        assert loss.item() == 0.0 and m["epe"].item() == 0.0
        assert flow_metrics(pred, pred.detach(), torch.ones(1, 2, 2, dtype=torch.bool))["1px"] == 1.0

    def test_exception(self):
        with pytest.raises(ValueError):
            sequence_loss([], torch.zeros(1, 2, 2, 2))


def fake_sample(i: int, size: int = SIZE) -> dict:
    g = torch.Generator().manual_seed(i)
    valid = torch.ones(size, size, dtype=torch.bool)
    valid[:2] = False
    return {
        "rgb_hsi": torch.rand(3, size, size, generator=g),
        "ref": torch.rand(3, size, size, generator=g),
        "flow": torch.randn(2, size, size, generator=g),
        "valid": valid,
        "has_flow": torch.tensor(True),
        "name": f"fake{i}",
    }


def fake_loader(n: int = 4, batch_size: int = 2) -> DataLoader:
    return DataLoader([fake_sample(i) for i in range(n)], batch_size=batch_size)


def make_module(**kwargs) -> FlowModule:
    torch.manual_seed(0)
    return FlowModule(
        RAFT("small"),
        optimizer=partial(torch.optim.AdamW, lr=4e-4, weight_decay=1e-4),
        scheduler=partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=4e-4, total_steps=None, pct_start=0.05),
        **{"iters": 2, **kwargs},
    )


class TestFlowModule:
    @pytest.mark.filterwarnings("ignore:You are trying to")  # self.log outside a Trainer is a no-op
    def test_steps_on_a_batch_dict(self):
        module = make_module()
        batch = next(iter(fake_loader()))
        loss = module.training_step(batch, 0)
        assert loss.ndim == 0 and torch.isfinite(loss) and loss.requires_grad
        module.eval()
        with torch.no_grad():
            module.validation_step(batch, 1)
            flow = module.predict_step(batch, 0)
        assert flow.shape == (2, 2, SIZE, SIZE)
        assert module.split_metrics["val"]["epe"].compute() > 0

    def test_samples_without_flow_supervise_nothing(self):
        module = make_module()
        batch = next(iter(fake_loader()))
        batch["has_flow"] = torch.tensor([True, False])
        mask = module.supervised(batch)
        assert mask[0].equal(batch["valid"][0]) and not mask[1].any()
        del batch["valid"]
        assert module.supervised(batch).shape == (2, SIZE, SIZE)

    def test_fit_validate_test_predict(self, tmp_path):
        module = make_module(val_iters=3)
        trainer = quiet_trainer(
            tmp_path, max_steps=3, val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=2
        )
        trainer.fit(module, fake_loader(), fake_loader())
        metrics = trainer.callback_metrics
        for key in ("train/loss", "train/epe", "val/loss", "val/epe", "val/1px", "val/3px", "val/5px"):
            assert key in metrics and torch.isfinite(metrics[key]), key
        assert 0 <= metrics["val/1px"] <= metrics["val/3px"] <= metrics["val/5px"] <= 1
        scheduler = trainer.lr_scheduler_configs[0]
        assert scheduler.interval == "step" and scheduler.scheduler.total_steps == 3  # from the trainer
        (test,) = trainer.test(module, fake_loader(), verbose=False)
        assert {"test/epe", "test/1px", "test/3px", "test/5px"} <= set(test)
        flows = trainer.predict(module, fake_loader())
        assert flows[0].shape == (2, 2, SIZE, SIZE)

    def test_val_metrics_are_pixel_means_over_the_split(self, tmp_path):
        # a net that always predicts zero flow: val/epe is the mean true-flow length over valid pixels
        class Zero(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.zeros(()))

            def forward(self, image1, image2, iters=1, test_mode=False):
                flow = self.w * image1[:, :2]
                return flow if test_mode else [flow]

        module = FlowModule(Zero(), optimizer=partial(torch.optim.SGD, lr=0.0))
        loader = fake_loader(n=3, batch_size=2)  # batches of 2 and 1 sample
        (out,) = quiet_trainer(tmp_path).validate(module, loader, verbose=False)
        flows = torch.stack([fake_sample(i)["flow"] for i in range(3)])
        valid = torch.stack([fake_sample(i)["valid"] for i in range(3)])
        epe = flows.norm(dim=1)[valid]
        assert out["val/epe"] == pytest.approx(epe.mean().item(), rel=1e-5)
        assert out["val/3px"] == pytest.approx((epe < 3).float().mean().item(), rel=1e-5)

    def test_checkpoint_roundtrip(self, tmp_path):
        module = make_module()
        trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
        trainer.fit(module, fake_loader())
        path = tmp_path / "flow.ckpt"
        trainer.save_checkpoint(path)
        net = load_flow_net(path)
        assert net.config == module.net.config
        batch = fake_sample(0)
        x1, x2 = batch["rgb_hsi"][None], batch["ref"][None]
        with torch.no_grad():
            assert torch.equal(
                net(x1, x2, iters=2, test_mode=True), module.net.eval()(x1, x2, iters=2, test_mode=True)
            )
        # the checkpoint holds plain values only: Lightning's (weights-only) loader reads it too
        again = FlowModule.load_from_checkpoint(path, net=RAFT("small"))
        assert again.hparams.iters == 2

    def test_init_ckpt_starts_from_trained_weights(self, tmp_path):
        from sschsr.checkpoints import save_flow_net
        from sschsr.errors import InputError

        torch.manual_seed(7)
        trained = RAFT("small", iters=2)
        path = save_flow_net(trained, tmp_path / "flow.safetensors")
        module = make_module(init_ckpt=str(path))
        for k, v in trained.state_dict().items():
            assert torch.equal(module.net.state_dict()[k], v), k
        assert module.net.training  # trains as usual: the weights are loaded into the module's own net
        with pytest.raises(InputError, match="preset"):
            make_module(init_ckpt=str(save_flow_net(RAFT("base"), tmp_path / "base.safetensors")))

    def test_flow_figure_goes_to_image_loggers(self, monkeypatch):
        logged = []

        class ImageLogger:
            def log_image(self, key, images, step=None, **kwargs):  # WandbLogger's signature
                logged.append((key, images[0]))

        def flow_to_color(flow, max_norm=None):
            return np.zeros((*flow.shape[-2:], 3), dtype=np.uint8)

        monkeypatch.setattr(FlowModule, "loggers", property(lambda self: [ImageLogger()]))
        module = make_module()
        batch = next(iter(fake_loader()))
        flow = torch.zeros(2, 2, SIZE, SIZE)

        monkeypatch.setattr(sschsr.lit.flow, "flow_to_color", flow_to_color)
        module.log_flow_figure(batch, flow, "val/flow")
        assert logged[0][0] == "val/flow" and logged[0][1].shape == (SIZE, 4 * SIZE, 3)
        module.log_flow_figure(batch, flow, "val/flow")  # the real colour coding
        assert logged[1][1].shape == (SIZE, 4 * SIZE, 3) and logged[1][1].dtype == np.uint8

    def test_inference_only_module_cannot_train(self):
        with pytest.raises(ValueError, match="optimizer"):
            FlowModule(RAFT("small")).configure_optimizers()


def test_model_config_composes_and_instantiates(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["~data", "model=flow", "trainer.max_steps=50"])
    module = instantiate(cfg.model)
    assert isinstance(module, FlowModule) and isinstance(module.net, RAFT)
    assert module.net.preset == "small" and module.net.iters == cfg.model.iters
    assert module.scheduler_factory.keywords["total_steps"] == 50
    assert module.optimizer_factory.keywords["lr"] == module.scheduler_factory.keywords["max_lr"]


class FakeFlowData(L.LightningDataModule):
    """Batches shaped like the data layer's, for running the stage 1 config without it."""

    def __init__(self, num_workers: int = 0, train_samples: int = 4):
        super().__init__()
        self.train_samples = train_samples

    def train_dataloader(self) -> DataLoader:
        return fake_loader(n=self.train_samples)

    def val_dataloader(self) -> DataLoader:
        return fake_loader(n=2)


STAGE1_FAST = [
    "experiment=stage1",
    "logger=none",
    "trainer=cpu",
    "++trainer.fast_dev_run=true",
    "model.iters=2",
]


def test_stage1_config_runs_through_train(tmp_path):
    # the real stage 1 experiment, model and trainer configs; only the data is a stand-in
    extra = tmp_path / "conf_extra"
    (extra / "data").mkdir(parents=True)
    (extra / "data" / "fake_flow.yaml").write_text(
        f"_target_: {FakeFlowData.__module__}.FakeFlowData\nnum_workers: 0\n"
    )
    cfg = compose_run(tmp_path, [f"hydra.searchpath=[file://{extra}]", *STAGE1_FAST, "data=fake_flow"])
    from sschsr.cli.train import train

    metrics, objects = train(cfg)
    assert isinstance(objects["model"], FlowModule) and objects["model"].net.preset == "small"
    for key in ("train/loss", "val/epe", "val/1px"):
        assert math.isfinite(metrics[key]), key


@pytest.mark.skipif(
    not (CONF_DIR / "data" / "procedural.yaml").is_file(), reason="conf/data/procedural.yaml not written yet"
)
def test_stage1_fast_dev_run_through_hydra(tmp_path):
    from sschsr.cli.train import train

    tiny_data = [
        "data.source.num=6",
        "data.source.size=64",
        "data.val=1",
        "data.test=1",
        "data.crop_size=64",
        "data.eval_crop_size=64",
        "data.batch_size=2",
        "data.pairs_per_scene=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]
    metrics, objects = train(compose_run(tmp_path, [*STAGE1_FAST, *tiny_data]))
    assert isinstance(objects["model"], FlowModule)
    assert math.isfinite(metrics["train/loss"]) and math.isfinite(metrics["val/epe"])


@pytest.mark.parametrize("max_steps", [8, 7])
def test_best_checkpoint_holds_the_weights_that_scored_its_value(tmp_path, max_steps):
    # validation every 3 steps, last.ckpt every 4: the best checkpoint must be written when a validation
    # ends (not at the next save step, with a score another set of weights earned), last.ckpt at the end;
    # one epoch of 10 batches, so that no epoch ends in the run
    extra = tmp_path / "conf_extra"
    (extra / "data").mkdir(parents=True)
    (extra / "data" / "fake_flow.yaml").write_text(
        f"_target_: {FakeFlowData.__module__}.FakeFlowData\nnum_workers: 0\ntrain_samples: 20\n"
    )
    overrides = [
        f"hydra.searchpath=[file://{extra}]",
        "experiment=stage1",
        "logger=none",
        "trainer=cpu",
        "data=fake_flow",
        "model.iters=2",
        "model.optimizer.lr=3e-3",
        f"trainer.max_steps={max_steps}",
        "trainer.val_check_interval=3",
        "trainer.check_val_every_n_epoch=null",
        "callbacks.last_checkpoint.every_n_train_steps=4",
    ]
    from sschsr.cli.train import train

    _, objects = train(compose_run(tmp_path, overrides))
    best = objects["trainer"].checkpoint_callback
    assert best.monitor == "val/epe" and best.best_model_path
    ckpt = torch.load(best.best_model_path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] in (3, 6)  # a validated step
    module = objects["model"]
    module.load_state_dict(ckpt["state_dict"])
    (scored,) = quiet_trainer(tmp_path).validate(module, datamodule=objects["datamodule"], verbose=False)
    assert scored["val/epe"] == pytest.approx(float(best.best_model_score), rel=1e-5)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == max_steps  # 7: not a multiple of the interval, saved at the end
