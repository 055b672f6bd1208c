"""``sschsr-train``: compose a run from the Hydra configs in ``conf/`` and train it with Lightning.

    sschsr-train experiment=stage1 scale=8 trainer.max_steps=5000
    sschsr-train -m experiment=full scale=4,8,16

``train(cfg)`` does the work and returns ``(metrics, objects)``; the Hydra entry point returns the metric
named by ``optimized_metric`` (default: the checkpoint monitor) so that sweeps can optimise it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from sschsr.cli._common import CONF_DIR, exit_on_input_error
from sschsr.errors import InputError

log = logging.getLogger("sschsr.train")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that maps names to ``_target_`` configs."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from ``cfg``; fit, then test if asked.

    Returns:
        ``(metrics, objects)``: the trainer's callback metrics as floats, and the instantiated objects.
    """
    if cfg.get("model") is None:
        raise InputError(
            f"task {cfg.task_name!r} has no model config: pass model=<name> "
            f"(available in {CONF_DIR / 'model'}: {sorted(p.stem for p in (CONF_DIR / 'model').glob('*.yaml')) or 'none yet'})"
        )
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.get("train", True):
        trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if cfg.get("test"):
        ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
        trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})

    objects = dict(
        cfg=cfg, datamodule=datamodule, model=model, callbacks=callbacks, loggers=loggers, trainer=trainer
    )
    return metrics, objects


def compose(
    overrides: list[str], output_dir: str | Path | None = None, config_name: str = "train"
) -> DictConfig:
    """Compose a run's config from ``conf/`` as the command line would, outside a Hydra app.

    With ``output_dir`` the run's ``${hydra:runtime.output_dir}`` (checkpoints, logs) is that folder, so
    :func:`train` can be called from Python (the demo, notebooks, tests).
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            config_name=config_name, overrides=overrides, return_hydra_config=output_dir is not None
        )
    if output_dir is not None:
        out = str(Path(output_dir).resolve())
        with open_dict(cfg):
            cfg.paths.output_dir = out
            cfg.hydra.runtime.output_dir = out
            cfg.hydra.job.num = 0
        HydraConfig().set_config(cfg)
    return cfg


def optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweep optimises: ``cfg.optimized_metric`` or the checkpoint monitor."""
    name = cfg.get("optimized_metric") or OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
    return metrics.get(name) if name else None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@exit_on_input_error
def main(cfg: DictConfig) -> float | None:
    metrics, _ = train(cfg)
    return optimized_metric(cfg, metrics)


if __name__ == "__main__":
    main()
