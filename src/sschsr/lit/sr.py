"""The full SSC-HSR network (or a baseline) as a LightningModule: train by SmoothL1, score by PSNR/SSIM/SAM/ERGAS.

Per batch (DESIGN.md, "Losses"):

    out  = net(lr_up, ref, rgb_hsi)                          # dict(sr, ref_warp, ref_warp0, flow, ...)
    loss = SmoothL1(sr, hr) + warp_weight * SmoothL1(ref_warp, rgb_hr)

``rgb_hr`` is the HR HSI rendered through the same camera response and colour match as ``rgb_hsi``
(:func:`sschsr.lit.warp.render_target`); the warp term is left out for networks that return no
``ref_warp`` (the baselines). The module holds no architecture: the network, the optimizer and the
scheduler come from the config (``conf/model/full.yaml``, ``single_image.yaml``, ``bicubic.yaml``).

Earlier stages feed in by file: ``flow_ckpt`` (stage 1) loads into ``net.flow_net``, ``warp_ckpt``
(stage 2) into ``net.warpnet``, and into ``net.flow_net`` too when no ``flow_ckpt`` is given (stage 2
stores the flow network it was trained on). Checkpoints carry the network's description
(:data:`sschsr.checkpoints.MODEL_KEY`), so that :func:`sschsr.checkpoints.load_model` rebuilds the network
from the file alone for ``sschsr-predict`` and ``sschsr-eval``.

Batches are dicts (see ``sschsr.data.pair_dataset``): ``lr_up``, ``hr`` ``(B, C, H, W)``; ``ref``,
``rgb_hsi`` ``(B, 3, H, W)`` float32 in [0, 1]; ``rgb_hr`` or (``srf`` ``(B, 3, C)``) for the warp term.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.checkpoints import MODEL_KEY, load_earlier_stages, load_init_weights, model_info, spec_matches
from sschsr.data.spectral import default_wavelengths
from sschsr.lit._optim import step_scheduler
from sschsr.lit.warp import render_target
from sschsr.losses import correspondence_nce, flow_valid_mask, spectral_angle_loss
from sschsr.metrics import HSIMetrics
from sschsr.models.sschsr import pad_to_multiple
from sschsr.ops.flow_refine import checked_settings, refiner_for

log = logging.getLogger(__name__)

SMOOTH_L1_BETA = 1.0  # torch's default: quadratic below 1, i.e. everywhere for data in [0, 1]
N_SPECTRA = 3  # pixels whose spectra are drawn in the validation figure
MATCH_FACTOR = 4  # GAM matches at H/4


def sr_loss(
    sr: Tensor,
    hr: Tensor,
    ref_warp: Tensor | None = None,
    rgb_hr: Tensor | None = None,
    warp_weight: float = 1.0,
    sam_weight: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The full network's loss: ``SmoothL1(sr, hr) + warp_weight * SmoothL1(ref_warp, rgb_hr)``, plus
    ``sam_weight`` times the mean spectral angle of ``sr`` (radians, :func:`sschsr.losses.spectral_angle_loss`)
    when ``sam_weight`` is not 0.

    Args:
        sr, hr: ``(B, C, H, W)``.
        ref_warp, rgb_hr: ``(B, 3, H, W)``; the warp term is skipped when either is None.
        warp_weight: weight of the warp term.
        sam_weight: weight of the spectral-angle term (``sam`` in the metrics when used).

    Returns:
        ``(loss, metrics)``: the scalar loss in float32, and ``sr``/``warp`` terms without gradient.

    Example:
        >>> loss, m = sr_loss(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2, 2), 0.5))  # 0.5 * 0.5^2
        >>> float(loss), sorted(m)
        (0.125, ['sr'])
    """
    loss_sr = F.smooth_l1_loss(sr.float(), hr.float(), beta=SMOOTH_L1_BETA)
    metrics = {"sr": loss_sr.detach()}
    loss = loss_sr
    if sam_weight:
        loss_sam = spectral_angle_loss(sr, hr)
        metrics["sam"] = loss_sam.detach()
        loss = loss + sam_weight * loss_sam
    if ref_warp is not None and rgb_hr is not None and warp_weight:
        loss_warp = F.smooth_l1_loss(ref_warp.float(), rgb_hr.float(), beta=SMOOTH_L1_BETA)
        metrics["warp"] = loss_warp.detach()
        loss = loss + warp_weight * loss_warp
    return loss, metrics


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.05, final_ratio: float = 0.01
) -> torch.optim.lr_scheduler.SequentialLR:
    """Linear warm-up from ``final_ratio * lr`` to ``lr`` over ``warmup`` of the run (a fraction, or a
    number of steps when >= 1), then cosine decay to ``final_ratio * lr`` at ``total_steps``.

    Stepped every optimiser step (``interval: step``).

    Example:
        >>> opt = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> sched = warmup_cosine(opt, total_steps=100, warmup=10)
        >>> lrs = []
        >>> for _ in range(100):
        ...     lrs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
        >>> round(lrs[0], 3), round(lrs[10], 3), round(lrs[-1], 3)
        (0.01, 1.0, 0.01)
    """
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    total_steps = int(total_steps)
    if total_steps < 1:
        raise ValueError(f"warmup_cosine needs total_steps >= 1, got {total_steps}")
    n_warm = int(warmup) if warmup >= 1 else int(round(warmup * total_steps))
    n_warm = min(max(n_warm, 1), max(total_steps - 1, 1))
    base = [g["lr"] for g in optimizer.param_groups]
    warm = LinearLR(optimizer, start_factor=final_ratio, end_factor=1.0, total_iters=n_warm)
    decay = CosineAnnealingLR(
        optimizer, T_max=max(total_steps - n_warm - 1, 1), eta_min=min(base) * final_ratio
    )
    return SequentialLR(optimizer, [warm, decay], milestones=[n_warm])


def level_correspondence(
    flow: Tensor, valid: Tensor | None, factor: int = MATCH_FACTOR
) -> tuple[Tensor, Tensor]:
    """The true flow of a pair at the matching level: ``(B, 2, H, W)`` pixels -> ``(B, 2, h, w)`` pixels of
    the ``1/factor`` grid (the mean over each block, divided by ``factor``; edges padded as the network
    pads them), with ``(B, h, w)`` validity: every pixel of the block valid (``valid`` None: all)."""
    mask = flow_valid_mask(torch.nan_to_num(flow), valid) & torch.isfinite(flow).all(dim=1)
    flow = pad_to_multiple(torch.nan_to_num(flow).float(), factor)
    mask = pad_to_multiple(mask[:, None].float(), factor)
    return F.avg_pool2d(flow, factor) / factor, F.avg_pool2d(mask, factor)[:, 0] > 1 - 1e-6


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _refiner_settings(settings: Any) -> dict[str, Any] | None:
    """``settings`` of the flow refinement as plain Python (a Hydra config's mapping becomes a dict, so
    that checkpoints stay loadable with ``weights_only=True``), checked against ``FlowRefiner``: unknown
    fields, bad values and ``scale`` or ``iters`` (the module's ``scale`` and ``flow_refine``) raise
    ValueError."""
    from omegaconf import OmegaConf

    if settings is None:
        return None
    if OmegaConf.is_config(settings):
        settings = OmegaConf.to_container(settings, resolve=True)
    try:
        return checked_settings(settings, exclude=("scale", "iters"))
    except ValueError as e:
        raise ValueError(f"flow_refiner: {e}") from None


class SRModule(L.LightningModule):
    """Train and evaluate an HSI super-resolution network guided by an unaligned RGB photo.

    Args:
        net: ``net(lr_up, ref, rgb_hsi) -> dict`` with ``sr`` and, for SSC-HSR, ``ref_warp`` (see
            :class:`sschsr.models.sschsr.SSCHSR`, :mod:`sschsr.models.baselines`).
        optimizer: ``partial`` taking ``params`` (AdamW in the configs); None only for inference.
        scheduler: ``partial`` taking ``optimizer`` (e.g. :func:`warmup_cosine`), stepped every optimiser
            step; a missing, None or non-positive ``total_steps`` is filled with the trainer's estimate.
            None: a constant rate.
        scale: the super-resolution factor (ERGAS; stored with the checkpoint as the trained scale).
        warp_weight: weight of the warp term of the loss.
        sam_weight: weight of a spectral-angle term (radians) in the loss; 0: none.
        flow_ckpt, warp_ckpt: earlier stages to load (see :func:`load_earlier_stages`). Resuming a run
            rebuilds the module with them, then the checkpoint's own weights replace them.
        init_ckpt: a trained full model to start every weight from (:func:`load_init_weights`), e.g. the
            shipped one to fine-tune on other data; ``flow_ckpt`` / ``warp_ckpt`` then replace its stages.
        log_images: draw a figure and spectra of the first validation batch to loggers that take images.
        camera: the camera response of ``rgb_hsi`` in the data (recorded for inference).
        match_weight: weight of :func:`sschsr.losses.correspondence_nce` on the matching encoder's
            descriptors of ``rgb_hsi`` and of the unwarped ``ref`` at the true flow of the batch (training
            steps of networks with ``match_descriptors``, on batches with ``flow``); 0: end-to-end only.
        match_points, match_temperature: positions drawn per image, and the softmax temperature.
        flow_refine: steps of the flow's test-time refinement (:class:`sschsr.ops.flow_refine.FlowRefiner`
            at ``scale``) applied in training and evaluation alike, so that the network learns on the flow
            ``sschsr-predict`` gives it; the refined flow carries no gradient to the flow network. 0: the
            flow network's flow.
        flow_refiner: the refinement's other settings (fields of ``FlowRefiner`` but ``scale`` and
            ``iters``, lists for tuples, e.g. ``{"window": 2}``); None: its defaults. Bad ones raise at
            construction.

    A network without trainable parameters (:class:`~sschsr.models.baselines.Bicubic`) trains nothing:
    no optimiser, training steps only log the loss; validation and test score it as usual.

    Logs ``train/loss`` (and ``train/loss_sr``, ``train/loss_warp``); ``val/loss``, ``val/psnr``,
    ``val/ssim``, ``val/sam``, ``val/ergas`` (:class:`sschsr.metrics.HSIMetrics`: means over the images of
    the split, synchronised across processes, ``sr`` clamped to [0, 1], computed in float32 or better
    whatever the training precision); the same under ``test/``.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: partial | None = None,
        scheduler: partial | None = None,
        scale: int = 4,
        warp_weight: float = 1.0,
        flow_ckpt: str | None = None,
        warp_ckpt: str | None = None,
        init_ckpt: str | None = None,
        sam_weight: float = 0.0,
        log_images: bool = True,
        camera: str = "cie1931",
        match_weight: float = 0.0,
        match_points: int = 256,
        match_temperature: float = 0.07,
        flow_refine: int = 0,
        flow_refiner: dict[str, Any] | None = None,
    ):
        super().__init__()
        if flow_refine < 0:
            raise ValueError(f"flow_refine must be >= 0; got {flow_refine}")
        flow_refiner = _refiner_settings(flow_refiner)
        # only plain values go into the checkpoint: Lightning resumes with torch.load(weights_only=True),
        # which refuses pickled partials (the run's Hydra config records the optimiser anyway)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"], logger=False)
        self.net = net
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        if init_ckpt:
            load_init_weights(net, init_ckpt, scale)
        load_earlier_stages(net, flow_ckpt, warp_ckpt)
        self.val_metrics = HSIMetrics(scale, prefix="val/")
        self.test_metrics = HSIMetrics(scale, prefix="test/")
        self._model_info: dict[str, Any] | None = None

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def forward(self, lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor) -> dict[str, Tensor]:
        """The network's outputs (see ``net``), on the refined flow when ``flow_refine`` is set."""
        steps = self.hparams.flow_refine
        if not steps or getattr(self.net, "flow_net", None) is None:
            return self.net(lr_up, ref, rgb_hsi)

        refiner = refiner_for(self.hparams.scale, steps, self.hparams.flow_refiner)
        flow = self.net.estimate_flow(rgb_hsi, ref, refine=False)
        flow = refiner(flow, rgb_hsi, ref).to(flow.dtype)
        return self.net(lr_up, ref, rgb_hsi, flow=flow)

    def _step(self, batch: dict[str, Any]) -> tuple[dict[str, Tensor], Tensor, dict[str, Tensor]]:
        out = self(batch["lr_up"], batch["ref"], batch["rgb_hsi"])
        ref_warp = out.get("ref_warp")
        rgb_hr = None
        if ref_warp is not None and self.hparams.warp_weight:
            rgb_hr = render_target(batch)
        loss, terms = sr_loss(
            out["sr"], batch["hr"], ref_warp, rgb_hr, self.hparams.warp_weight, self.hparams.sam_weight
        )
        if self.training and self.hparams.match_weight and batch.get("flow") is not None:
            match = getattr(self.net, "match_descriptors", None)
            if match is not None:
                flow, valid = level_correspondence(batch["flow"], batch.get("valid"))
                hp = self.hparams
                nce, nce_terms = correspondence_nce(
                    match(batch["rgb_hsi"]),
                    match(batch["ref"]),
                    flow,
                    valid,
                    hp.match_points,
                    hp.match_temperature,
                )
                loss = loss + hp.match_weight * nce
                terms.update(match=nce.detach(), match_accuracy=nce_terms["accuracy"])
        return out, loss, terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        out, loss, terms = self._step(batch)
        bs = batch["hr"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in terms.items():
            self.log(f"train/loss_{name}", value, batch_size=bs)
        # nothing to learn (bicubic): no backward; Lightning then skips the (absent) optimiser
        return loss if loss.requires_grad else None

    def _evaluate(self, batch: dict[str, Any], split: str) -> dict[str, Tensor]:
        out, loss, _ = self._step(batch)
        bs = batch["hr"].shape[0]
        self.log(f"{split}/loss", loss, batch_size=bs, sync_dist=True)
        metrics = self.val_metrics if split == "val" else self.test_metrics
        # the stored output is clamped to the data range; metrics run in full precision (see HSIMetrics)
        metrics.update(out["sr"].detach().float().clamp(0, 1), batch["hr"].float())
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=bs)
        return out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self._evaluate(batch, "val")
        if batch_idx == 0 and self.hparams.log_images:
            self.log_figures(batch, out)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Any], batch_idx: int = 0) -> Tensor:
        """``(B, C, H, W)`` ``sr``, not clamped."""
        return self(batch["lr_up"], batch["ref"], batch["rgb_hsi"])["sr"]

    # ---------------------------------------------------------------------------------------- figures

    def _image_loggers(self) -> list:
        return [
            lg
            for lg in self.loggers
            if hasattr(lg, "log_image") or hasattr(getattr(lg, "experiment", None), "add_image")
        ]

    def log_figures(self, batch: dict[str, Any], out: dict[str, Tensor]) -> None:
        """Images of the first sample to loggers that take them (wandb, TensorBoard); others are skipped.

        ``val/sr``: ``lr_up | ref | ref_warp | sr | hr`` (the cubes in colour: rendered through the batch's
        camera response when it has one, else three bands in false colour); ``val/spectra``: the spectra of
        ``hr``, ``sr`` and ``lr_up`` at a few pixels.
        """
        loggers = self._image_loggers()
        if not loggers:
            return
        figure = sr_figure(batch, out)
        spectra = spectra_figure(batch, out)
        images = {
            "val/sr": (figure, "lr_up | ref | ref_warp | sr | hr"),
            "val/spectra": (spectra, "hr, sr, lr_up"),
        }
        for key, (image, caption) in images.items():
            for lg in loggers:
                if hasattr(lg, "log_image"):  # wandb, and loggers with the same method
                    lg.log_image(key=key, images=[image], step=self.global_step, caption=[caption])
                else:  # TensorBoard
                    lg.experiment.add_image(key, image, self.global_step, dataformats="HWC")

    # ---------------------------------------------------------------------------------------- optimiser

    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            return None  # a network without parameters (bicubic): evaluation only
        if self.optimizer_factory is None:
            raise ValueError(
                "SRModule was built without an optimizer (inference only): pass optimizer=partial(...)"
            )
        optimizer = self.optimizer_factory(params=params)
        return step_scheduler(self, optimizer, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # the network's description, so that sschsr.checkpoints.load_model rebuilds it from the file alone;
        # checked once against the network itself (on the meta device: no memory)
        if self._model_info is None:
            info = model_info(self.net, self.hparams.scale, self.hparams.camera)
            if not spec_matches(self.net, info["net"]):
                log.warning(
                    "%s: its constructor arguments could not be recorded faithfully; checkpoints of this run "
                    "will not load in sschsr-predict / sschsr-eval",
                    type(self.net).__name__,
                )
                info = {}
            self._model_info = info
        if self._model_info:
            checkpoint[MODEL_KEY] = self._model_info
        # the parts' own descriptions too, so that the stage loaders read them from this file
        for key, part in (("flow_net_config", "flow_net"), ("warpnet_config", "warpnet")):
            config = getattr(getattr(self.net, part, None), "config", None)
            if isinstance(config, dict):
                checkpoint[key] = config


# -------------------------------------------------------------------------------------------- figures


def _colour(cube: Tensor, srf: Tensor | None) -> Tensor:
    """``(C, H, W)`` -> ``(3, H, W)``: through the camera response, else bands at 5/6, 1/2, 1/6 of the range."""
    if srf is not None and srf.shape[-1] == cube.shape[0]:
        return torch.einsum("rc,chw->rhw", srf.float(), cube.float())
    c = cube.shape[0]
    idx = [min(c - 1, round(f * (c - 1))) for f in (5 / 6, 1 / 2, 1 / 6)]
    return cube[idx].float()


def _uint8(img: Tensor, white: float) -> np.ndarray:
    """``(3, H, W)`` -> ``(H, W, 3)`` uint8, ``white`` mapped to 255."""
    x = (img.detach().float().cpu() / max(white, 1e-6)).clamp(0, 1)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def sr_figure(batch: dict[str, Any], out: dict[str, Tensor]) -> np.ndarray:
    """``lr_up | ref | ref_warp | sr | hr`` of the first sample as one ``(H, 5W, 3)`` uint8 image.

    The cubes share one brightness scale (the 99th percentile of ``hr``'s colour image).
    """
    srf = batch.get("srf")
    srf = srf[0] if isinstance(srf, Tensor) and srf.ndim == 3 else srf
    hr = _colour(batch["hr"][0], srf)
    white = float(torch.quantile(hr.flatten()[:: max(1, hr.numel() // 100_000)], 0.99))
    ref_warp = out.get("ref_warp", batch["ref"])[0]
    panels = [
        _uint8(_colour(batch["lr_up"][0], srf), white),
        _uint8(batch["ref"][0], 1.0),
        _uint8(ref_warp, 1.0),
        _uint8(_colour(out["sr"][0], srf), white),
        _uint8(hr, white),
    ]
    return np.concatenate(panels, axis=1)


def spectra_figure(
    batch: dict[str, Any], out: dict[str, Tensor], wavelengths: np.ndarray | None = None
) -> np.ndarray:
    """The spectra of ``hr``, ``sr`` and ``lr_up`` at :data:`N_SPECTRA` pixels, drawn with matplotlib (Agg),
    against the wavelength in nm (``wavelengths``; None: the bands spread evenly over 400-700 nm, as the
    datasets' cubes, :func:`sschsr.data.spectral.default_wavelengths`).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hr, sr, lr_up = (t[0].detach().float().cpu() for t in (batch["hr"], out["sr"], batch["lr_up"]))
    c, h, w = hr.shape
    x = default_wavelengths(c) if wavelengths is None else np.asarray(wavelengths)
    pixels = [((i + 1) * h // (N_SPECTRA + 1), (i + 1) * w // (N_SPECTRA + 1)) for i in range(N_SPECTRA)]
    fig = Figure(figsize=(3 * N_SPECTRA, 2.6), dpi=80)
    FigureCanvasAgg(fig)
    for i, (py, px) in enumerate(pixels):
        ax = fig.add_subplot(1, N_SPECTRA, i + 1)
        ax.plot(x, hr[:, py, px].numpy(), "k-", label="hr")
        ax.plot(x, sr[:, py, px].numpy(), "r--", label="sr")
        ax.plot(x, lr_up[:, py, px].numpy(), "b:", label="lr_up")
        ax.set_title(f"pixel ({py}, {px})", fontsize=8)
        ax.set_xlabel("wavelength (nm)", fontsize=7)
        if i == 0:
            ax.set_ylabel("reflectance", fontsize=7)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
