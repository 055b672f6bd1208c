"""Stage 1 of SSC-HSR as a LightningModule: train the flow network on pairs with exact flow.

The module holds no architecture: ``net`` (e.g. :class:`sschsr.models.flow.RAFT`), the optimizer and the
scheduler come from the config (``conf/model/flow.yaml``). To use the trained network elsewhere, load it
without Lightning: ``sschsr.checkpoints.load_flow_net("last.ckpt")``.

Batches are dicts (see ``sschsr.data``): ``rgb_hsi`` ``(B, 3, H, W)`` the LR HSI rendered to RGB on the
HSI grid, ``ref`` ``(B, 3, H, W)`` the unaligned photo, both in [0, 1]; ``flow`` ``(B, 2, H, W)`` the true
flow from the HSI grid to ``ref``; ``valid`` ``(B, H, W)`` bool; optional ``has_flow`` ``(B,)`` bool (samples
without a true flow, e.g. real captured pairs, supervise nothing).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import lightning as L
import numpy as np
from torch import Tensor, nn
from torchmetrics import MeanMetric

from sschsr.checkpoints import load_flow_weights
from sschsr.lit._optim import step_scheduler
from sschsr.losses import MAX_FLOW, SEQUENCE_GAMMA, endpoint_error, flow_valid_mask, sequence_loss
from sschsr.models.flow import CONFIG_KEY
from sschsr.viz import flow_to_color

METRICS = ("epe", "1px", "3px", "5px")
THRESHOLDS = {"1px": 1.0, "3px": 3.0, "5px": 5.0}


class FlowModule(L.LightningModule):
    """Train a flow network with RAFT's sequence loss; validate and test by end-point error.

    Args:
        net: ``net(image1, image2, iters, test_mode=...)`` returning a list of flows (training) or the
            last flow (``test_mode=True``), as :class:`sschsr.models.flow.RAFT`.
        optimizer: ``partial`` taking ``params`` (e.g. AdamW, as RAFT); None only for inference, e.g.
            ``FlowModule.load_from_checkpoint(path, net=RAFT(...))``.
        scheduler: ``partial`` taking ``optimizer`` (e.g. OneCycleLR, as RAFT), stepped every optimiser
            step; None for a constant rate. A ``total_steps`` that is missing, None or <= 0 is filled
            with the trainer's estimate of its optimiser steps.
        iters: recurrent updates while training.
        gamma: sequence-loss decay.
        val_iters: recurrent updates in validation, test and prediction (default: ``iters``).
        max_flow: pixels with a longer true flow are left out of loss and metrics.
        init_ckpt: trained flow weights to start from (a ``FlowModule`` ``.ckpt`` or a flow
            ``.safetensors``, e.g. the shipped ``flow_net-*.safetensors``): fine-tuning. The architecture
            is ``net``'s; a file of another one is refused with the setting to change.

    Logs ``train/loss``, ``train/epe``; ``val/loss``, ``val/epe``, ``val/1px``, ``val/3px``, ``val/5px``
    (means over all valid pixels of the split, synchronised across processes), the same under ``test/``;
    and on the first validation batch a figure ``val/flow`` when a logger can take images and
    ``sschsr.viz`` is installed.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: partial | None = None,
        scheduler: partial | None = None,
        iters: int = 12,
        gamma: float = SEQUENCE_GAMMA,
        val_iters: int | None = None,
        max_flow: float = MAX_FLOW,
        init_ckpt: str | None = None,
    ):
        super().__init__()
        # only plain values go into the checkpoint: torch.load(weights_only=True), which Lightning uses
        # to resume, refuses pickled partials (the run's Hydra config records the optimiser anyway)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        if init_ckpt:
            load_flow_weights(net, init_ckpt)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        # one MeanMetric per split and name: Lightning computes, syncs and resets them per epoch
        self.split_metrics = nn.ModuleDict(
            {split: nn.ModuleDict({name: MeanMetric() for name in METRICS}) for split in ("val", "test")}
        )

    @property
    def eval_iters(self) -> int:
        return self.hparams.val_iters or self.hparams.iters

    def forward(self, rgb_hsi: Tensor, ref: Tensor, iters: int | None = None, test_mode: bool = True):
        """The network's flow from ``rgb_hsi`` to ``ref`` (see the net's ``forward``)."""
        return self.net(rgb_hsi, ref, iters=iters or self.eval_iters, test_mode=test_mode)

    def supervised(self, batch: dict[str, Any]) -> Tensor | None:
        """``(B, H, W)`` bool: ``valid`` of the samples that have a true flow (None: everywhere)."""
        valid = batch.get("valid")
        has_flow = batch.get("has_flow")
        if has_flow is None:
            return valid
        has_flow = has_flow.bool().view(-1, 1, 1)
        return has_flow.expand(-1, *batch["flow"].shape[-2:]) if valid is None else valid.bool() & has_flow

    def _predict(self, batch: dict[str, Any], iters: int) -> tuple[list[Tensor], Tensor, dict[str, Tensor]]:
        """The flow after each of ``iters`` updates, and their sequence loss and metrics on ``batch``."""
        preds = self.net(batch["rgb_hsi"], batch["ref"], iters=iters)
        hp = self.hparams
        loss, metrics = sequence_loss(
            preds, batch["flow"], self.supervised(batch), gamma=hp.gamma, max_flow=hp.max_flow
        )
        return preds, loss, metrics

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        _, loss, metrics = self._predict(batch, self.hparams.iters)
        bs = batch["ref"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/epe", metrics["epe"], prog_bar=True, batch_size=bs)
        return loss

    def _evaluate(self, batch: dict[str, Any], split: str) -> Tensor:
        preds, loss, _ = self._predict(batch, self.eval_iters)
        bs = batch["ref"].shape[0]
        self.log(f"{split}/loss", loss, batch_size=bs, sync_dist=True)
        # every valid pixel of the split counts once: update with the per-pixel values
        mask = flow_valid_mask(batch["flow"], self.supervised(batch), self.hparams.max_flow)
        epe = endpoint_error(preds[-1], batch["flow"])[mask]
        if epe.numel() > 0:
            metrics = self.split_metrics[split]
            metrics["epe"].update(epe)
            for name, t in THRESHOLDS.items():
                metrics[name].update((epe < t).float())
            for name in METRICS:
                self.log(f"{split}/{name}", metrics[name], on_step=False, on_epoch=True, batch_size=bs)
        return preds[-1]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        flow = self._evaluate(batch, "val")
        if batch_idx == 0:
            self.log_flow_figure(batch, flow, "val/flow")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """``(B, 2, H, W)`` flow from ``batch["rgb_hsi"]`` to ``batch["ref"]``."""
        return self(batch["rgb_hsi"], batch["ref"])

    def log_flow_figure(self, batch: dict[str, Any], flow: Tensor, key: str) -> None:
        """``rgb_hsi | ref | predicted flow | true flow`` of the first sample, to loggers that take images."""
        loggers = [
            lg
            for lg in self.loggers
            if hasattr(lg, "log_image") or hasattr(getattr(lg, "experiment", None), "add_image")
        ]
        if not loggers:
            return

        def rgb(x: Tensor) -> np.ndarray:  # (3, H, W) [0, 1] -> (H, W, 3) uint8
            return (
                (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            )

        true = batch["flow"][0].detach().float().cpu()
        max_norm = max(float(true.norm(dim=0).max()), 1e-3)  # one colour scale for both flows
        panels = [
            rgb(batch["rgb_hsi"][0]),
            rgb(batch["ref"][0]),
            np.asarray(flow_to_color(flow[0].detach().float().cpu(), max_norm=max_norm)),
            np.asarray(flow_to_color(true, max_norm=max_norm)),
        ]
        figure = np.concatenate(panels, axis=1)
        for lg in loggers:
            if hasattr(lg, "log_image"):  # wandb, and loggers with the same method
                lg.log_image(
                    key=key,
                    images=[figure],
                    step=self.global_step,
                    caption=["rgb_hsi | ref | flow | true flow"],
                )
            else:  # TensorBoard
                lg.experiment.add_image(key, figure, self.global_step, dataformats="HWC")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(
                "FlowModule was built without an optimizer (inference only): pass optimizer=partial(...)"
            )
        optimizer = self.optimizer_factory(params=self.parameters())
        return step_scheduler(self, optimizer, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the net's constructor arguments, so that load_flow_net(path) rebuilds it without a config
        config = getattr(self.net, "config", None)
        if isinstance(config, dict):
            checkpoint[CONFIG_KEY] = config
