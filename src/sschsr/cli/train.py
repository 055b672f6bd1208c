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
from omegaconf import DictConfig, OmegaConf, open_dict

from sschsr.cli._common import CONF_DIR, exit_on_input_error
from sschsr.cli._config_checks import check_train_config
from sschsr.cli._hydra import run_app
from sschsr.errors import InputError
from sschsr.lit.callbacks import RNGStates
from sschsr.lit.runs import (
    EARLIER,
    EarlierStages,
    RunRecord,
    architecture_filter,
    resolve_earlier_stages,
    task_of,
)

log = logging.getLogger("sschsr.train")


def instantiate_group(cfg: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that maps names to ``_target_`` configs."""
    if not cfg:
        return []
    return [hydra.utils.instantiate(c) for c in cfg.values() if isinstance(c, DictConfig) and "_target_" in c]


def hydra_runtime() -> dict[str, Any]:
    """What Hydra knows of the current run: the config groups chosen (``choices``), the command line's
    overrides, whether it is a multirun job and its sweep folder; empty values outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": [], "multirun": False, "sweep_dir": None}
    hc = HydraConfig.get()
    return {
        "choices": dict(hc.runtime.choices),
        "overrides": list(hc.overrides.task),
        "multirun": hc.mode == RunMode.MULTIRUN,
        "sweep_dir": str(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None,
    }


def earlier_stages(cfg: DictConfig, task: str, debug: str | None) -> EarlierStages:
    """The checkpoints of the earlier stages this run loads (:func:`sschsr.lit.runs.resolve_earlier_stages`),
    written into ``cfg.model`` (``flow_ckpt``, ``warp_ckpt``) when found. A model without a flow network (the
    baselines), or started from a trained full model (``init_ckpt``), builds on nothing."""
    has_flow = (
        OmegaConf.select(cfg, "model.flow_net" if task == "stage2" else "model.net.flow_net") is not None
    )
    if task not in EARLIER or not has_flow or OmegaConf.select(cfg, "model.init_ckpt"):
        return EarlierStages(
            OmegaConf.select(cfg, "model.flow_ckpt"), OmegaConf.select(cfg, "model.warp_ckpt")
        )
    stages = resolve_earlier_stages(
        task,
        int(cfg.scale),
        OmegaConf.select(cfg, "model.flow_ckpt"),
        OmegaConf.select(cfg, "model.warp_ckpt"),
        root=cfg.get("chain_from") or cfg.paths.log_dir,
        policy=cfg.get("earlier_stages", "newest"),
        debug=debug,
        needs_warpnet=bool(OmegaConf.select(cfg, "model.net.use_warpnet", default=True)),
        accept=architecture_filter(cfg, task),  # runs of another flow network or WarpNet do not count
    )
    with open_dict(cfg):
        cfg.model.flow_ckpt = stages.flow_ckpt
        if "warp_ckpt" in cfg.model:
            cfg.model.warp_ckpt = stages.warp_ckpt
    return stages


def train(
    cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None
) -> tuple[dict[str, float], dict[str, Any]]:
    """Instantiate datamodule, model, callbacks, loggers and trainer from ``cfg``; fit, then test if asked.
    ``extra_callbacks`` join the config's (e.g. a timer of a benchmark).

    Stage 2 and the full network given no earlier stage take the newest finished run of it
    (:func:`earlier_stages`). The run describes itself in ``<run dir>/run.json`` (:class:`RunRecord`):
    written when training starts, and again when it ends, finished or not.

    Returns:
        ``(metrics, objects)``: the trainer's callback metrics as floats, and the instantiated objects.
    """
    if cfg.get("model") is None:
        raise InputError(
            f"task {cfg.task_name!r} has no model config: pass model=<name> "
            f"(available in {CONF_DIR / 'model'}: {sorted(p.stem for p in (CONF_DIR / 'model').glob('*.yaml')) or 'none yet'})"
        )
    check_train_config(cfg)  # before anything is built: each bad value one line naming its key
    runtime = hydra_runtime()
    debug = runtime["choices"].get("debug")
    task = task_of(cfg.model._target_)
    stages = earlier_stages(cfg, task, debug)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    log.info("datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    log.info("model <%s>", cfg.model._target_)
    model = hydra.utils.instantiate(cfg.model)
    # RNGStates always: a resume continues every random number generator where the checkpoint left it
    callbacks = [*instantiate_group(cfg.get("callbacks")), RNGStates(), *(extra_callbacks or [])]
    if OmegaConf.select(cfg, "logger.wandb") is not None:
        with open_dict(cfg):
            cfg.logger.wandb.group = wandb_group(cfg, runtime)
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    record = RunRecord(
        cfg, task, stages, runtime["overrides"], debug=debug, model=runtime["choices"].get("model")
    )
    record.start(trainer, model)
    fit_metrics: dict[str, float] = {}
    test_metrics: dict[str, float] = {}
    try:
        if cfg.get("train", True):
            # weights_only=True passed, not left to torch's default (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD)
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if cfg.get("test"):
            ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else None
            trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt or None, weights_only=True)
            test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    except BaseException as e:
        record.fail(e, trainer)
        raise
    record.finish(trainer, fit_metrics, test_metrics)
    if record.enabled:
        log.info("run record: %s", record.path)

    metrics = {**fit_metrics, **test_metrics}
    objects = dict(
        cfg=cfg, datamodule=datamodule, model=model, callbacks=callbacks, loggers=loggers, trainer=trainer,
        record=record.record,
    )  # fmt: skip
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


CHAIN = ("stage1", "stage2", "full")


def stage_overrides(overrides: list[str]) -> list[str]:
    """The command line's overrides a chain passes to each of its stages: all but ``experiment``, ``chain.*``
    and Hydra's own."""
    keep = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key == "experiment" or key.split(".", 1)[0] in ("chain", "hydra") or key.startswith("hydra/"):
            continue
        keep.append(o)
    return keep


def train_chain(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """``experiment=chain``: stage 1, stage 2 and the full network in order at ``cfg.scale``, each in its own
    folder of this run's (``stage1/``, ``stage2/``, ``full/``), each built on the one before it there
    (``chain_from`` = this folder). Every stage gets the command line's overrides and its own
    ``chain.<stage>`` list.

    Returns:
        the full network's ``(metrics, objects)``, ``objects["records"]`` the three run records.
    """
    from hydra.core.hydra_config import HydraConfig

    runtime = hydra_runtime()
    job_hydra = HydraConfig.instance().cfg if HydraConfig.initialized() else None
    passed = stage_overrides(runtime["overrides"])
    out = Path(cfg.paths.output_dir)
    group = wandb_group(cfg, runtime) or f"{cfg.task_name}-{out.name}"
    records: dict[str, dict[str, Any]] = {}
    try:
        for stage in CHAIN:
            extra = [str(o) for o in (OmegaConf.select(cfg, f"chain.{stage}") or [])]
            stage_cfg = compose([f"experiment={stage}", *passed, *extra], output_dir=out / stage)
            with open_dict(stage_cfg):
                stage_cfg.chain_from = str(out)
                if OmegaConf.select(stage_cfg, "logger.wandb") is not None:
                    stage_cfg.logger.wandb.group = group
            log.info("chain: %s in %s", stage, out / stage)
            metrics, objects = train(stage_cfg)
            records[stage] = objects["record"]
    finally:
        if job_hydra is not None:
            HydraConfig.instance().set_config(job_hydra)
    objects["records"] = records
    return metrics, objects


def wandb_group(cfg: DictConfig, runtime: dict[str, Any]) -> str | None:
    """The wandb group of a run: ``logger.wandb.group`` when set, else ``<task_name>-<sweep folder>`` for the
    jobs of a multirun; None otherwise."""
    given = OmegaConf.select(cfg, "logger.wandb.group")
    if given:
        return str(given)
    if runtime["multirun"] and runtime["sweep_dir"]:
        return f"{cfg.task_name}-{Path(runtime['sweep_dir']).name}"
    return None


def optimized_metric(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """The value a Hydra sweep optimises: ``cfg.optimized_metric`` or the checkpoint monitor."""
    name = cfg.get("optimized_metric") or OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
    return metrics.get(name) if name else None


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
@exit_on_input_error
def hydra_main(cfg: DictConfig) -> float | None:
    if cfg.get("chain") is not None:
        metrics, objects = train_chain(cfg)
        return optimized_metric(objects["cfg"], metrics)
    metrics, _ = train(cfg)
    return optimized_metric(cfg, metrics)


def main() -> None:
    """``sschsr-train``: the Hydra app, its configuration checked first and every error one line
    (:func:`sschsr.cli._hydra.run_app`)."""
    run_app(hydra_main, "train", check_train_config)


if __name__ == "__main__":
    main()
