"""Callbacks the training configs name (``conf/callbacks/``), and :class:`RNGStates`, which
``sschsr-train`` adds to every run."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["LastCheckpoint", "RNGStates", "rng_states", "set_rng_states"]


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps and when training ends, whatever the step count.

    Lightning's :class:`ModelCheckpoint` writes ``last`` at the end of training only when it never wrote it:
    a run whose ``max_steps`` is not a multiple of the interval would end with the weights of the last
    multiple. This one writes it again at the end when the final step is not the one last saved (not in a
    ``fast_dev_run``, as Lightning's checkpointing).
    """

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)


def rng_states() -> dict[str, Any]:
    """This process's random number generators (torch CPU and CUDA, numpy, Python) as plain values that
    ``torch.load(weights_only=True)`` reads back (tensors, lists, numbers)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class RNGStates(Callback):
    """Saves every process's random number generators in each checkpoint and restores them when training
    resumes, just before the first step (after the model, the loaders and their workers have been made, which
    draw from them), so that random operations in training steps (dropout) continue as if never stopped.

    Under DDP each rank's state is gathered into the checkpoint (saving runs on every rank) and each rank
    restores its own; a checkpoint from another world size restores nothing (a warning).
    """

    def __init__(self) -> None:
        self._to_restore: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        mine = rng_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(ranks, mine)
            return {"ranks": ranks}
        return {"ranks": [mine]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = list(state_dict.get("ranks") or []) or None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        ranks, self._to_restore = self._to_restore, None
        if ranks is None:
            return
        if len(ranks) != trainer.world_size:
            rank_zero_warn(
                f"the checkpoint's random states are of {len(ranks)} processes, this run has {trainer.world_size}: "
                "not restored (the run continues, not exactly as it would have)"
            )
            return
        set_rng_states(ranks[trainer.global_rank])
