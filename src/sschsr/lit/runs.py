"""Run records and the chain of stages: each training run describes itself in ``<run dir>/run.json``, and
stage 2 and the full network find the earlier stages they build on from those records.

``run.json`` (written atomically when the run starts, again when it ends)::

    status      running | finished | failed | interrupted   (a "running" record whose process is gone
                reads as "died": :func:`read_run`)
    task        stage1 | stage2 | full (the LightningModule trained), task_name (the run folder's task)
    model, variant, scale, seed, debug (the debug preset or null), overrides (the command line's)
    commit, dirty                          the source the run was trained from (null outside a git checkout)
    started, finished, wall_s, pid, host, run_dir
    best_ckpt, last_ckpt                   absolute paths (null when not written)
    monitor, mode                          the best checkpoint's metric
    metrics     {final: {val/...: x}, best: {metric: x}, test: {test/...: x}}
    params      trainable and total parameter counts
    parents     {flow_ckpt, warp_ckpt}: the earlier stages' checkpoints the run was built from
    chained_from {stage1|stage2: run dir}: runs found by :func:`find_run` (empty when the files were given)
    error       the exception's one line, when the run failed

The chain (:func:`resolve_earlier_stages`): a stage-2 run given no ``model.flow_ckpt`` takes the newest
finished stage-1 run at the same scale under ``paths.log_dir`` (or under ``chain_from``); a full run given
neither ``model.warp_ckpt`` nor ``model.flow_ckpt`` takes the newest finished stage-2 run (its WarpNet, and
the flow network it was trained on). Only runs whose checkpoint holds the networks the config builds count
(:func:`architecture_filter`: a run of the default small flow network is not taken by ``experiment=paper``,
whose flow network is RAFT's base one). ``earlier_stages`` says what happens when there is none:
``newest`` stops with the command to run first; ``newest_or_untrained`` (the debug presets) and
``untrained`` go on with untrained earlier stages, with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from sschsr.checkpoints import load_checkpoint
from sschsr.data.io import process_alive, write_json
from sschsr.errors import InputError
from sschsr.models.flow import CONFIG_KEY as FLOW_KEY
from sschsr.models.warpnet import CONFIG_KEY as WARPNET_KEY
from sschsr.provenance import source_commit

log = logging.getLogger("sschsr.train")

RUN_FILE = "run.json"
TASKS = {"FlowModule": "stage1", "WarpModule": "stage2", "SRModule": "full"}
EARLIER = {"stage2": "stage1", "full": "stage2"}  # the stage each one builds on
EARLIER_STAGES = ("newest", "newest_or_untrained", "untrained")


def task_of(model: L.LightningModule | str) -> str:
    """``stage1`` / ``stage2`` / ``full`` for a FlowModule / WarpModule / SRModule (or its ``_target_``)."""
    name = model if isinstance(model, str) else type(model).__name__
    name = name.rsplit(".", 1)[-1]
    if name not in TASKS:
        raise ValueError(f"no task for {name!r}: one of {sorted(TASKS)}")
    return TASKS[name]


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def read_run(path: str | Path) -> dict[str, Any]:
    """A run's record from its folder or its ``run.json``; a ``running`` record of this host whose process
    is gone comes back with ``status: died``.

    Raises:
        InputError: no record there, or not JSON.
    """
    path = Path(path)
    file = path / RUN_FILE if path.is_dir() else path
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{file}: not a readable run record ({e})") from None
    if not isinstance(record, dict):
        raise InputError(f"{file}: not a run record")
    if (
        record.get("status") == "running"
        and record.get("host") == socket.gethostname()
        and isinstance(record.get("pid"), int)
        and record["pid"] != os.getpid()
        and not process_alive(record["pid"])
    ):
        record["status"] = "died"
    return record


def run_checkpoint(record: dict[str, Any]) -> str | None:
    """The checkpoint a later stage takes from a run: its best, else its last (None when neither exists)."""
    for key in ("best", "last"):
        path = record.get(f"{key}_ckpt")
        if path and Path(path).is_file():
            return path
    return None


def iter_runs(root: str | Path) -> list[dict[str, Any]]:
    """The readable run records under ``root`` (its own and every folder below)."""
    root = Path(root)
    if not root.is_dir():
        return []
    records = []
    for file in sorted(root.rglob(RUN_FILE)):
        try:
            records.append(read_run(file))
        except InputError:
            continue
    return records


def find_run(
    root: str | Path,
    task: str,
    scale: int,
    allow_debug: bool = False,
    accept: Callable[[str], bool] | None = None,
) -> dict[str, Any] | None:
    """The newest finished ``task`` run at ``scale`` under ``root`` that left a checkpoint (by end time).

    Runs of a debug preset are taken only with ``allow_debug`` (a debug run may build on anything; a real
    run never builds on a debug one). ``accept``: a test of the checkpoint (e.g. :func:`architecture_filter`),
    run on the candidates newest first until one passes.
    """
    candidates = [
        r
        for r in iter_runs(root)
        if r.get("task") == task
        and r.get("status") == "finished"
        and r.get("scale") == scale
        and (allow_debug or not r.get("debug"))
        and run_checkpoint(r)
    ]
    candidates.sort(key=lambda r: r.get("finished") or "", reverse=True)
    return next((r for r in candidates if accept is None or accept(run_checkpoint(r))), None)


FLOW_FREE = ("iters", "dropout")  # RAFT settings that weights of any value fit (as load_flow_weights)
WARPNET_SHAPE = ("widths", "extra_channels", "use_ref")  # WarpNet settings that decide its weights


def architecture_filter(cfg: DictConfig, task: str) -> Callable[[str], bool] | None:
    """A test of an earlier stage's checkpoint: whether the networks it stores (their constructor arguments,
    which stage 1 and 2 save under ``flow_net_config`` / ``warpnet_config``) are the ones ``cfg`` builds, so
    that the search for the stage before (:func:`find_run`) passes over runs of another architecture.
    Checkpoints that store no arguments pass (loading decides); None when the config builds neither part.
    """
    net = "model" if task == "stage2" else "model.net"
    wanted: dict[str, dict[str, Any]] = {}
    for key, part, fields in ((FLOW_KEY, "flow_net", None), (WARPNET_KEY, "warpnet", WARPNET_SHAPE)):
        node = OmegaConf.select(cfg, f"{net}.{part}")
        if node is None or (part == "warpnet" and (task == "stage2" or not _uses_warpnet(cfg))):
            continue
        with torch.device("meta"):  # the constructor's arguments, defaults filled in; no memory
            config = getattr(hydra.utils.instantiate(node), "config", None)
        if isinstance(config, dict):
            wanted[key] = {k: v for k, v in config.items() if (k in fields if fields else k not in FLOW_FREE)}
    if not wanted:
        return None

    def accept(path: str) -> bool:
        if not str(path).endswith(".ckpt"):
            return True
        try:
            ckpt = load_checkpoint(path)
        except InputError:  # unreadable here: loading it says why
            return True
        for key, config in wanted.items():
            stored = ckpt.get(key) if isinstance(ckpt, dict) else None
            if isinstance(stored, dict) and any(_norm(stored.get(k)) != _norm(v) for k, v in config.items()):
                log.info("passing over %s: its %s is %s, the config builds %s", path, key, stored, config)
                return False
        return True

    return accept


def _norm(value: Any) -> Any:
    value = _plain(value)
    return [_norm(v) for v in value] if isinstance(value, (list, tuple)) else value


def _uses_warpnet(cfg: DictConfig) -> bool:
    return bool(OmegaConf.select(cfg, "model.net.use_warpnet", default=True))


@dataclass
class EarlierStages:
    """What a run is built from: the checkpoints it loads and the runs they were found in."""

    flow_ckpt: str | None = None
    warp_ckpt: str | None = None
    chained_from: dict[str, str] | None = None

    def parents(self) -> dict[str, str | None]:
        return {"flow_ckpt": self.flow_ckpt, "warp_ckpt": self.warp_ckpt}


def _command_for(task: str, scale: int) -> str:
    return f"sschsr-train experiment={task} scale={scale}"


def resolve_earlier_stages(
    task: str,
    scale: int,
    flow_ckpt: str | None,
    warp_ckpt: str | None,
    root: str | Path,
    policy: str = "newest",
    debug: str | None = None,
    needs_warpnet: bool = True,
    accept: Callable[[str], bool] | None = None,
) -> EarlierStages:
    """The earlier stages of a ``task`` run at ``scale``: the given files, else the newest run under ``root``.

    Args:
        task: ``stage1`` (builds on nothing), ``stage2`` or ``full``.
        flow_ckpt, warp_ckpt: the files the config names; any given one stops the search.
        root: where to search (``paths.log_dir`` or ``chain_from``).
        policy: one of :data:`EARLIER_STAGES`.
        debug: the debug preset of this run (it may build on debug runs), None for a real run.
        needs_warpnet: False for a full network without WarpNet: it takes the stage-2 run's flow only.
        accept: a test of a candidate's checkpoint (:func:`architecture_filter`): runs failing it are passed
            over.

    Raises:
        InputError: an unknown policy, or ``newest`` with no run to build on (the message names the command
            to run first, and runs found at other scales).
    """
    if policy not in EARLIER_STAGES:
        raise InputError(f"earlier_stages={policy}: one of {', '.join(EARLIER_STAGES)}")
    given = EarlierStages(flow_ckpt or None, warp_ckpt or None)
    if task not in EARLIER or given.flow_ckpt or given.warp_ckpt or policy == "untrained":
        if task in EARLIER and not (given.flow_ckpt or given.warp_ckpt):
            log.warning("%s with untrained earlier stages (earlier_stages=untrained)", task)
        return given
    need = EARLIER[task]
    found = find_run(root, need, scale, allow_debug=debug is not None, accept=accept)
    if found is None:
        others = sorted(
            {
                f"x{r.get('scale')} {r.get('status')}{' debug' if r.get('debug') else ''}"
                for r in iter_runs(root)
                if r.get("task") == need
            }
        )
        elsewhere = f" (there: {need} runs {', '.join(others)})" if others else ""
        if accept is not None and find_run(root, need, scale, allow_debug=debug is not None) is not None:
            elsewhere += (
                f"; the {need} runs at x{scale} hold networks of another architecture than the config's"
            )
        if policy == "newest":
            skipped = "" if debug or " debug" not in elsewhere else "; a debug preset's runs do not count"
            raise InputError(
                f"{task} at x{scale} builds on a {need} run and none has finished at x{scale} under {root}"
                f"{elsewhere}{skipped}: run `{_command_for(need, scale)}` first, or name the file "
                f"(model.{'flow' if need == 'stage1' else 'warp'}_ckpt=...), or set earlier_stages=untrained"
            )
        log.warning("no finished %s run at x%d under %s%s: %s goes on with untrained earlier stages",
                    need, scale, root, elsewhere, task)  # fmt: skip
        return given
    ckpt = run_checkpoint(found)
    chained = {need: found.get("run_dir")}
    if task == "stage2":
        stages = EarlierStages(flow_ckpt=ckpt, chained_from=chained)
    elif needs_warpnet:  # the stage-2 checkpoint brings the flow network it was trained on
        stages = EarlierStages(warp_ckpt=ckpt, chained_from=chained)
    else:
        flow = (found.get("parents") or {}).get("flow_ckpt")
        if not flow or not Path(flow).is_file():
            raise InputError(
                f"{task} without WarpNet takes the flow of stage-2 run {found.get('run_dir')}, whose flow "
                f"checkpoint {flow} is not there: name one (model.flow_ckpt=...)"
            )
        stages = EarlierStages(flow_ckpt=flow, chained_from=chained)
    log.info("%s builds on %s run %s (%s)", task, need, found.get("run_dir"), ckpt)
    return stages


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value


class RunRecord:
    """Writes ``run.json`` in a run's folder: :meth:`start` when training begins, :meth:`finish` or
    :meth:`fail` when it ends (only process 0 of a multi-process run writes).

    Args:
        cfg: the run's composed config (``paths.output_dir`` is the run folder).
        task: the task (:func:`task_of`).
        stages: what the run builds on.
        overrides: the command line's overrides.
        debug: the debug preset, if any.
    """

    def __init__(
        self,
        cfg: DictConfig,
        task: str,
        stages: EarlierStages,
        overrides: list[str],
        debug: str | None = None,
        model: str | None = None,
    ):
        self.path = Path(cfg.paths.output_dir) / RUN_FILE
        self.t0 = time.perf_counter()
        commit, dirty = source_commit()
        self.record: dict[str, Any] = {
            "status": "running",
            "task": task,
            "task_name": cfg.get("task_name"),
            "model": model,
            "variant": cfg.get("variant"),
            "scale": _plain(cfg.get("scale")),
            "seed": _plain(cfg.get("seed")),
            "debug": debug,
            "overrides": list(overrides),
            "commit": commit,
            "dirty": dirty,
            "started": _now(),
            "finished": None,
            "wall_s": None,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_dir": str(self.path.parent.resolve()),
            "best_ckpt": None,
            "last_ckpt": None,
            "monitor": _plain(OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")),
            "mode": _plain(OmegaConf.select(cfg, "callbacks.model_checkpoint.mode")),
            "metrics": {"final": {}, "best": {}, "test": {}},
            "params": None,
            "parents": stages.parents(),
            "chained_from": stages.chained_from or {},
            "error": None,
        }
        self.enabled = True

    def write(self) -> None:
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json(self.path, self.record)

    def start(self, trainer: L.Trainer, model: L.LightningModule) -> None:
        """Record the run as started (process 0 only), with the model's parameter counts."""
        self.enabled = trainer.is_global_zero
        params = list(model.parameters())
        self.record["params"] = {
            "total": sum(p.numel() for p in params),
            "trainable": sum(p.numel() for p in params if p.requires_grad),
        }
        self.write()

    def _end(self, status: str, trainer: L.Trainer | None) -> None:
        self.record.update(status=status, finished=_now(), wall_s=round(time.perf_counter() - self.t0, 3))
        if trainer is not None:
            self.record["global_step"] = trainer.global_step
            self.record.update(checkpoints_of(trainer))
            best = getattr(trainer.checkpoint_callback, "best_model_score", None)
            monitor = self.record.get("monitor")
            if best is not None and monitor:
                self.record["metrics"]["best"] = {monitor: float(best)}
        self.write()

    def finish(
        self, trainer: L.Trainer, fit_metrics: dict[str, float], test_metrics: dict[str, float]
    ) -> None:
        """Record the end of a run: checkpoints, the last validation's and the test's metrics."""
        self.record["metrics"]["final"] = {
            k: v for k, v in sorted(fit_metrics.items()) if k.startswith("val/")
        }
        self.record["metrics"]["test"] = {
            k: v for k, v in sorted(test_metrics.items()) if k.startswith("test/")
        }
        self._end("interrupted" if trainer.interrupted else "finished", trainer)

    def fail(self, error: BaseException, trainer: L.Trainer | None = None) -> None:
        """Record a run that ended with ``error``."""
        text = str(error).strip().splitlines()
        self.record["error"] = f"{type(error).__name__}: {text[0] if text else ''}"
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        self._end(status, trainer)


def checkpoints_of(trainer: L.Trainer) -> dict[str, str | None]:
    """``best_ckpt`` and ``last_ckpt``: what the trainer's checkpoint callbacks wrote (absolute paths or None)."""
    best = last = None
    for cb in trainer.checkpoint_callbacks:
        if getattr(cb, "best_model_path", "") and cb.save_top_k != 0:
            best = best or cb.best_model_path
        if getattr(cb, "last_model_path", ""):
            last = last or cb.last_model_path
    return {
        "best_ckpt": str(Path(best).resolve()) if best and Path(best).is_file() else None,
        "last_ckpt": str(Path(last).resolve()) if last and Path(last).is_file() else None,
    }
