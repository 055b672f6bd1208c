"""What the three LightningModules' ``configure_optimizers`` share: the optimiser, and a scheduler stepped
every optimiser step whose ``total_steps`` defaults to the trainer's estimate of the run."""

from __future__ import annotations

import logging
import math
from functools import partial
from inspect import signature
from typing import Any

import lightning as L
from torch.optim import Optimizer

log = logging.getLogger(__name__)


def step_scheduler(module: L.LightningModule, optimizer: Optimizer, scheduler: partial | None) -> Any:
    """``configure_optimizers``' return value: ``optimizer`` alone, or with ``scheduler(optimizer=...)``.

    A scheduler that takes ``total_steps`` and was given none (null or <= 0) gets
    ``trainer.estimated_stepping_batches``; an endless run (no ``max_steps`` or ``max_epochs``) is an error.
    A warm-up of ``pct_start`` (OneCycleLR) needs two steps at least: a shorter one (a debug run of a few
    steps) is lengthened to two, and a run of fewer than three steps keeps the learning rate constant (no
    scheduler), each with a warning.
    """
    if scheduler is None:
        return optimizer
    kwargs: dict[str, Any] = {}
    parameters = signature(scheduler.func).parameters if isinstance(scheduler, partial) else {}
    if "total_steps" in parameters:
        total = scheduler.keywords.get("total_steps")
        if total is None or total <= 0:
            estimate = module.trainer.estimated_stepping_batches
            if not math.isfinite(estimate):
                raise ValueError("the scheduler needs total_steps: set trainer.max_steps (or max_epochs)")
            total = kwargs["total_steps"] = int(estimate)
        if "pct_start" in parameters:
            pct = scheduler.keywords.get("pct_start", parameters["pct_start"].default)
            if total < 3:
                log.warning(
                    "a run of %d steps is too short for %s: constant learning rate",
                    total,
                    scheduler.func.__name__,
                )
                return optimizer
            if pct * total < 2:
                kwargs["pct_start"] = 2 / total
                log.warning("warm-up of %.3g x %d steps lengthened to 2 steps", pct, total)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": scheduler(optimizer=optimizer, **kwargs),
            "interval": "step",
            "frequency": 1,
        },
    }
