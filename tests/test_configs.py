"""Every config composes, and every group instantiates (CPU, tiny sizes)."""

from __future__ import annotations

import io
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from helpers import compose_run
from sschsr.cli._common import CONF_DIR
from sschsr.cli.train import instantiate_group


def group_names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_groups_exist():
    for group, expected in {
        "trainer": {"cpu", "gpu", "ddp", "ddp_cpu"},
        "logger": {"csv", "wandb", "none"},
        "experiment": {"stage1", "stage2", "full", "paper", "smoke", "chain"},
        "ablation": {"full", "no_warpnet", "no_iterative", "no_rmca"},
        "data": {"procedural", "cave"},
    }.items():
        assert expected <= set(group_names(group)), group


@pytest.mark.parametrize("experiment", group_names("experiment"))
def test_experiment_composes(experiment, tmp_path):
    cfg = compose_run(tmp_path, [f"experiment={experiment}", "scale=8"])
    assert cfg.task_name == experiment
    assert cfg.scale == 8
    assert cfg.callbacks.model_checkpoint.monitor.startswith("val/")
    assert cfg.callbacks.model_checkpoint.dirpath == str(tmp_path / "checkpoints")


@pytest.mark.parametrize("trainer", group_names("trainer"))
def test_trainer_instantiates(trainer, tmp_path):
    # GPU configs are checked on CPU: same keys, only the accelerator swapped
    cpu = (
        ["trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=1"]
        if trainer in ("gpu", "ddp")
        else []
    )
    cfg = compose_run(tmp_path, [f"trainer={trainer}", *cpu, "trainer.max_steps=7"])
    tr = hydra.utils.instantiate(cfg.trainer)
    assert isinstance(tr, L.Trainer)
    assert tr.max_steps == 7 and tr.default_root_dir == str(tmp_path)
    assert tr.val_check_interval == cfg.trainer.val_check_interval
    assert tr.gradient_clip_val == cfg.trainer.gradient_clip_val


def test_gpu_trainer_settings(tmp_path):
    cfg = compose_run(tmp_path, ["trainer=gpu"])
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    cfg = compose_run(tmp_path, ["trainer=ddp", "trainer.devices=2", "trainer.num_nodes=3"])
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.num_nodes == 3


@pytest.mark.parametrize("logger", group_names("logger"))
def test_logger_instantiates(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = compose_run(tmp_path, [f"logger={logger}"])
    loggers = instantiate_group(cfg.get("logger"))
    assert len(loggers) == (0 if logger == "none" else 1)
    for lg in loggers:  # each writes into the run folder
        assert Path(lg.save_dir).resolve() == tmp_path.resolve()


def test_wandb_is_offline_without_credentials(tmp_path, monkeypatch):
    from sschsr.loggers import wandb_logged_in, wandb_logger

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert not wandb_logged_in()
    lg = wandb_logger(project="t", save_dir=str(tmp_path))
    assert lg._offline


@pytest.mark.parametrize("callbacks", group_names("callbacks"))
def test_callbacks_instantiate(callbacks, tmp_path):
    cfg = compose_run(tmp_path, [f"callbacks={callbacks}"])
    built = instantiate_group(cfg.get("callbacks"))
    for cb in built:
        assert isinstance(cb, L.Callback)
    for cb in (c for c in built if isinstance(c, L.pytorch.callbacks.ModelCheckpoint)):
        assert Path(cb.dirpath) == tmp_path / "checkpoints"  # checkpoints in the run folder
    assert len(built) == len([c for c in cfg.get("callbacks") or {}])


@pytest.mark.parametrize("debug", group_names("debug"))
def test_debug_composes(debug, tmp_path):
    cfg = compose_run(tmp_path, [f"debug={debug}"])
    assert cfg.data.num_workers == 0


def test_scale_and_bands_interpolate_everywhere(tmp_path):
    cfg = compose_run(tmp_path, ["scale=16", "n_bands=48"])
    assert cfg.data.scale == 16
    cfg = compose_run(tmp_path, ["scale=8"], name="eval")
    assert cfg.data.scale == 8


@pytest.mark.parametrize("data", ["procedural", "cave"])
def test_data_instantiates(data, tmp_path, shared_data):
    """The data config builds a datamodule at the run's scale and band count, with disjoint splits (CAVE's
    listed), whose training batches have the shapes the models take."""
    overrides = ["scale=8", "data.crop_size=64", "data.batch_size=2", "data.num_workers=0"]
    cfg = compose_run(tmp_path, [f"data={data}", f"paths.shared_data={shared_data}", *overrides])
    dm = hydra.utils.instantiate(cfg.data)
    assert isinstance(dm, L.LightningDataModule) and dm.scale == 8 and dm.n_bands == 31
    splits = dm.split()
    assert splits["train"] and not set(splits["train"]) & (set(splits["val"]) | set(splits["test"]))
    if data == "cave":
        assert splits["val"] == ["chart_and_stuffed_toy", "fake_and_real_peppers"]
        assert splits["test"] == ["balloons", "cloth", "feathers"]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["hr"].shape == (2, 31, 64, 64) and batch["lr"].shape == (2, 31, 8, 8)
    assert batch["ref"].shape == (2, 3, 64, 64) and batch["flow"].shape == (2, 2, 64, 64)
    assert 0 <= float(batch["ref"].min()) and float(batch["ref"].max()) <= 1


@pytest.mark.parametrize("name", group_names("model"))
def test_model_instantiates(name, tmp_path):
    cfg = compose_run(tmp_path, [f"model={name}", "trainer.max_steps=10", "scale=8"])
    module = hydra.utils.instantiate(cfg.model)
    assert isinstance(module, L.LightningModule)
    if "scale" in cfg.model:  # the top-level scale reaches the module (and its checkpoints)
        assert module.hparams.scale == 8


def test_flow_refiner_settings_come_from_the_config(tmp_path):
    """``model.flow_refiner={window:2}`` reaches the module as a plain dict (checkpoints load with
    ``weights_only=True``); a field FlowRefiner lacks fails at instantiation."""
    overrides = ["model=full", "trainer.max_steps=10", "model.flow_refine=3"]
    cfg = compose_run(tmp_path, [*overrides, "model.flow_refiner={window:2}"])
    module = hydra.utils.instantiate(cfg.model)
    assert module.hparams.flow_refiner == {"window": 2} and type(module.hparams.flow_refiner) is dict
    saved = io.BytesIO()
    torch.save(dict(module.hparams), saved)
    saved.seek(0)
    assert torch.load(saved, weights_only=True)["flow_refiner"] == {"window": 2}
    assert hydra.utils.instantiate(compose_run(tmp_path, overrides).model).hparams.flow_refiner is None
    with pytest.raises(Exception, match="no_such_field"):
        hydra.utils.instantiate(
            compose_run(tmp_path, [*overrides, "model.flow_refiner={no_such_field:1}"]).model
        )


@pytest.mark.parametrize("flag", ["use_warpnet", "iterative", "use_rmca"])
def test_ablations_are_config_flags(flag, tmp_path):
    """The paper's ablations (docs/training.md, experiments/train_shipped.sh) are overrides of conf/model/full.yaml."""
    cfg = compose_run(tmp_path, ["model=full", "trainer.max_steps=10", f"model.net.{flag}=false"])
    net = hydra.utils.instantiate(cfg.model).net
    assert getattr(net, flag) is False
    assert (net.warpnet is None) == (flag == "use_warpnet")


@pytest.mark.parametrize(
    "app, expected",
    [
        (
            "sschsr-train",
            [
                "sschsr-train: train SSC-HSR",
                "experiment: chain, full, paper, smoke, stage1, stage2",
                "ablation: full, no_iterative, no_rmca, no_warpnet",
                "stage2   WarpNet",
                "degradation=family",
            ],
        ),
        (
            "sschsr-eval",
            ["sschsr-eval: score a trained model", "degradation: block, family, paper", "ckpt_path=shipped"],
        ),
    ],
)
def test_help_of_both_hydra_apps_says_what_they_do(app, expected):
    """--help shows the app's own text (conf/hydra/help/): what it does, its config groups, examples."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / app
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for text in expected:
        assert text in done.stdout, text
    assert "Powered by Hydra" not in done.stdout  # not Hydra's generic text
