"""Stage 2 of SSC-HSR as a LightningModule: train WarpNet on top of a (frozen) stage-1 flow network.

Per batch (DESIGN.md, method step 2 and "Losses"):

    flow      = flow_net(rgb_hsi, ref, test_mode=True)           # stage 1, frozen unless finetune_flow
    ref_warp0 = flow_warp(ref, flow, padding_mode="border")      # the photo on the HSI's grid
    ref_warp  = warpnet(rgb_hsi, ref, ref_warp0, warp_cues(flow))
    loss      = L1(ref_warp, rgb_hr)                             # the HR HSI through the same response

The module holds no architecture: both networks, the optimizer and the scheduler come from the config
(``conf/model/warp.yaml``). Its checkpoints store the constructor arguments of both networks, so that
:func:`sschsr.checkpoints.load_warpnet` and :func:`sschsr.checkpoints.load_flow_net` (with
``prefix="flow_net."``) rebuild them from the file alone; :func:`load_stage2` does both.

Batches are dicts (see ``sschsr.data``): ``rgb_hsi``, ``ref``, ``rgb_hr``, each ``(B, 3, H, W)`` float32
in [0, 1]; other keys are ignored. A batch without ``rgb_hr`` but with ``hr`` ``(B, C, H, W)`` and ``srf``
``(B, 3, C)`` gets it made here (:func:`render_target`).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from sschsr.checkpoints import load_flow_weights
from sschsr.data.spectral import render_rgb
from sschsr.lit._optim import step_scheduler
from sschsr.losses import warp_loss
from sschsr.models.flow import CONFIG_KEY as FLOW_CONFIG_KEY
from sschsr.models.warpnet import CONFIG_KEY as WARPNET_CONFIG_KEY
from sschsr.models.warpnet import warp_cues
from sschsr.ops.warp import flow_warp

log = logging.getLogger(__name__)

METRICS = ("psnr_warp0", "psnr", "psnr_gain")


MIN_MSE = 1e-10  # caps PSNR at 100 dB: an exact match must not make a split's mean infinite


def image_psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR of each image, data range 1, after clamping ``pred`` to [0, 1]; at most 100 dB.

    Args:
        pred, target: ``(B, C, H, W)``.

    Returns:
        ``(B,)`` dB, float32, without gradient.

    Example:
        >>> image_psnr(torch.full((1, 3, 2, 2), 0.1), torch.zeros(1, 3, 2, 2))  # MSE 0.01
        tensor([20.])
    """
    mse = (pred.detach().float().clamp(0, 1) - target.detach().float()).square().mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse.clamp_min(MIN_MSE))


def detail_ratio(pred: Tensor, target: Tensor) -> Tensor:
    """How much fine detail ``pred`` keeps: its mean absolute Laplacian over ``target``'s, per image.

    1 for as much high-frequency energy as the target, below 1 for a smoother image (a repair that
    blurs can gain PSNR while losing the texture the SR branch needs), above 1 for a noisier one. The
    3x3 Laplacian with replicated edges, on ``pred`` clamped to [0, 1].

    Args:
        pred, target: ``(B, C, H, W)``.

    Returns:
        ``(B,)`` float32, without gradient (0 where ``target`` is flat: no detail to keep).

    Example:
        >>> x = torch.zeros(1, 1, 8, 8); x[..., ::2, :] = 1  # stripes
        >>> detail_ratio(x, x).item(), detail_ratio(0.5 * x, x).item()
        (1.0, 0.5)
    """
    from kornia.filters import laplacian

    def energy(t: Tensor) -> Tensor:
        return laplacian(t, 3, border_type="replicate").abs().mean(dim=(1, 2, 3))

    pred, target = pred.detach().float().clamp(0, 1), target.detach().float()
    reference = energy(target)
    return torch.where(reference > 0, energy(pred) / reference.clamp_min(1e-12), torch.zeros_like(reference))


def render_target(batch: dict[str, Any]) -> Tensor:
    """Stage 2's target ``rgb_hr`` ``(B, 3, H, W)`` in [0, 1]: the batch's own, or made from ``hr`` and ``srf``.

    The data layer (:class:`sschsr.data.pair_dataset.PairDataset`) provides ``rgb_hr``. Made here, for batches
    from elsewhere, the way it makes it (:func:`sschsr.data.spectral.render_rgb`): ``hr`` rendered
    through the response ``rgb_hsi`` was rendered with, histogram-matched to ``ref`` per image (the
    data's default colour match; data made with ``match="moments"`` carries its own ``rgb_hr``), clamped.
    """
    if "rgb_hr" in batch:
        return batch["rgb_hr"]
    if "hr" not in batch or "srf" not in batch:
        raise KeyError(
            f"stage 2 needs rgb_hr (or hr and srf to render it) in the batch; it has {sorted(batch)}"
        )
    return render_rgb(batch["hr"], batch["srf"], batch["ref"], "histogram")


class WarpModule(L.LightningModule):
    """Train WarpNet with an L1 loss to the rendered HR HSI, on top of a stage-1 flow network.

    Args:
        warpnet: :class:`sschsr.models.warpnet.WarpNet` (``warpnet(rgb_hsi, ref, ref_warp0, extra)``).
        flow_net: ``flow_net(image1, image2, iters=..., test_mode=True) -> (B, 2, H, W)`` as
            :class:`sschsr.models.flow.RAFT`; the same architecture as the stage-1 run.
        optimizer: ``partial`` taking ``params`` (e.g. AdamW); None only for inference.
        scheduler: ``partial`` taking ``optimizer``, stepped every optimiser step; None for a constant
            rate. A ``total_steps`` that is missing, None or <= 0 is filled with the trainer's estimate.
        flow_ckpt: stage-1 weights (a ``FlowModule`` ``.ckpt`` or a ``.safetensors``) loaded into
            ``flow_net`` here, at construction. ``WarpModule.load_from_checkpoint`` restores the flow
            weights from its own checkpoint: pass ``flow_ckpt=None`` there when the file is gone.
        finetune_flow: train the flow network too (end to end); by default it is frozen: no gradient,
            not in the optimizer, and kept in eval mode (batch-norm statistics fixed) while training.
        flow_iters: recurrent updates of the flow network.

    Lightning warns at the start of training that modules are in eval mode: those of the frozen flow
    network, on purpose.

    Logs ``train/loss``; ``val/loss``, ``val/psnr_warp0`` (PSNR of the plain warp ``ref_warp0`` against
    ``rgb_hr``), ``val/psnr`` (of ``ref_warp``, clamped to [0, 1]), ``val/psnr_gain`` (their difference);
    each PSNR is per image with data range 1, averaged over the images of the split and synchronised
    across processes. The same under ``test/``. On the first validation batch, an image
    ``rgb_hsi | ref | ref_warp0 | ref_warp | rgb_hr`` to loggers that take images.
    """

    def __init__(
        self,
        warpnet: nn.Module,
        flow_net: nn.Module,
        optimizer: partial | None = None,
        scheduler: partial | None = None,
        flow_ckpt: str | None = None,
        finetune_flow: bool = False,
        flow_iters: int = 12,
    ):
        super().__init__()
        # only plain values go into the checkpoint: Lightning resumes with torch.load(weights_only=True)
        self.save_hyperparameters(ignore=["warpnet", "flow_net", "optimizer", "scheduler"], logger=False)
        self.warpnet, self.flow_net = warpnet, flow_net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if flow_ckpt:
            load_flow_weights(flow_net, flow_ckpt)
            log.info("stage-1 flow weights from %s", flow_ckpt)
        if not finetune_flow:
            flow_net.requires_grad_(False)
            flow_net.eval()
        self.split_metrics = nn.ModuleDict(
            {split: nn.ModuleDict({name: MeanMetric() for name in METRICS}) for split in ("val", "test")}
        )

    def train(self, mode: bool = True) -> WarpModule:
        # Lightning switches the whole module to train mode at every fit/validation boundary; a frozen flow
        # network stays in eval mode (fixed normalisation statistics, no dropout)
        super().train(mode)
        if not self.hparams.finetune_flow:
            self.flow_net.eval()
        return self

    def estimate_flow(self, rgb_hsi: Tensor, ref: Tensor) -> Tensor:
        """Stage 1: ``(B, 2, H, W)`` flow from the HSI's grid to ``ref``."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.hparams.finetune_flow):
            return self.flow_net(rgb_hsi, ref, iters=self.hparams.flow_iters, test_mode=True)

    def align(self, rgb_hsi: Tensor, ref: Tensor, flow: Tensor | None = None) -> dict[str, Tensor]:
        """Both stages.

        Args:
            rgb_hsi: ``(B, 3, H, W)`` float in [0, 1], the LR HSI upsampled and rendered, colour-matched.
            ref: ``(B, 3, H, W)`` float in [0, 1], the unaligned photo.
            flow: ``(B, 2, H, W)`` a flow to use instead of the stage-1 network's (e.g. a self-ensemble).

        Returns:
            ``flow`` ``(B, 2, H, W)``; ``ref_warp0`` ``(B, 3, H, W)`` the plain backward warp;
            ``ref_warp`` ``(B, 3, H, W)`` WarpNet's repair of it (not clamped).
        """
        if flow is None:
            flow = self.estimate_flow(rgb_hsi, ref)
        ref_warp0 = flow_warp(ref, flow, padding_mode="border")
        extra = warp_cues(flow, ref.shape[-2:]) if getattr(self.warpnet, "extra_channels", 0) else None
        ref_warp = self.warpnet(rgb_hsi, ref, ref_warp0, extra)
        return {"flow": flow, "ref_warp0": ref_warp0, "ref_warp": ref_warp}

    def forward(self, rgb_hsi: Tensor, ref: Tensor) -> Tensor:
        """``ref_warp`` ``(B, 3, H, W)``: ``ref`` aligned to the HSI's grid and repaired."""
        return self.align(rgb_hsi, ref)["ref_warp"]

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        out = self.align(batch["rgb_hsi"], batch["ref"])
        loss, _ = warp_loss(out["ref_warp"], render_target(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["ref"].shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Any], split: str) -> dict[str, Tensor]:
        out = self.align(batch["rgb_hsi"], batch["ref"])
        target = out["rgb_hr"] = render_target(batch)
        bs = target.shape[0]
        loss, _ = warp_loss(out["ref_warp"], target)
        self.log(f"{split}/loss", loss, batch_size=bs, sync_dist=True)
        psnr0, psnr = image_psnr(out["ref_warp0"], target), image_psnr(out["ref_warp"], target)
        metrics = self.split_metrics[split]
        for name, value in zip(METRICS, (psnr0, psnr, psnr - psnr0), strict=True):
            metrics[name].update(value)
            self.log(f"{split}/{name}", metrics[name], on_step=False, on_epoch=True, batch_size=bs)
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self._evaluate(batch, "val")
        if batch_idx == 0:
            self.log_warp_figure(batch, out, "val/warp")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """``(B, 3, H, W)`` ``ref_warp`` clamped to [0, 1]."""
        return self(batch["rgb_hsi"], batch["ref"]).clamp(0, 1)

    def log_warp_figure(self, batch: dict[str, Any], out: dict[str, Tensor], key: str) -> None:
        """``rgb_hsi | ref | ref_warp0 | ref_warp | rgb_hr`` of the first sample, to loggers that take images.

        ``out``: :meth:`align`'s dict plus ``rgb_hr``.
        """
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

        panels = [
            batch["rgb_hsi"][0],
            batch["ref"][0],
            out["ref_warp0"][0],
            out["ref_warp"][0],
            out["rgb_hr"][0],
        ]
        figure = np.concatenate([rgb(p) for p in panels], axis=1)
        caption = "rgb_hsi | ref | ref_warp0 | ref_warp | rgb_hr"
        for lg in loggers:
            if hasattr(lg, "log_image"):  # wandb, and loggers with the same method
                lg.log_image(key=key, images=[figure], step=self.global_step, caption=[caption])
            else:  # TensorBoard
                lg.experiment.add_image(key, figure, self.global_step, dataformats="HWC")

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(
                "WarpModule was built without an optimizer (inference only): pass optimizer=partial(...)"
            )
        # a frozen flow network is left out: it has nothing to learn, and AdamW would keep state for it
        optimizer = self.optimizer_factory(params=[p for p in self.parameters() if p.requires_grad])
        return step_scheduler(self, optimizer, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # both networks' constructor arguments, so that the loaders rebuild them without a config
        for key, net in ((WARPNET_CONFIG_KEY, self.warpnet), (FLOW_CONFIG_KEY, self.flow_net)):
            config = getattr(net, "config", None)
            if isinstance(config, dict):
                checkpoint[key] = config
