"""Callbacks the training configs name (``conf/callbacks/``)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["LastCheckpoint"]


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
