"""What the three LightningModules' ``configure_optimizers`` share: the optimiser, and a scheduler stepped
every optimiser step whose ``total_steps`` defaults to the trainer's estimate of the run."""

from __future__ import annotations

import math
from functools import partial
from inspect import signature
from typing import Any

import lightning as L
from torch.optim import Optimizer


def step_scheduler(module: L.LightningModule, optimizer: Optimizer, scheduler: partial | None) -> Any:
    """``configure_optimizers``' return value: ``optimizer`` alone, or with ``scheduler(optimizer=...)``.

    A scheduler that takes ``total_steps`` and was given none (null or <= 0) gets
    ``trainer.estimated_stepping_batches``; an endless run (no ``max_steps`` or ``max_epochs``) is an error.
    """
    if scheduler is None:
        return optimizer
    kwargs = {}
    if isinstance(scheduler, partial) and "total_steps" in signature(scheduler.func).parameters:
        total = scheduler.keywords.get("total_steps")
        if total is None or total <= 0:
            estimate = module.trainer.estimated_stepping_batches
            if not math.isfinite(estimate):
                raise ValueError("the scheduler needs total_steps: set trainer.max_steps (or max_epochs)")
            kwargs["total_steps"] = int(estimate)
    return {
        "optimizer": optimizer,
        "lr_scheduler": {
            "scheduler": scheduler(optimizer=optimizer, **kwargs),
            "interval": "step",
            "frequency": 1,
        },
    }
