"""Stage-1 flow accuracy on synthetic pairs of held-out CAVE scenes, per scale and per scene.

    .venv/bin/python experiments/eval_flow.py --ckpt outputs/stage1/runs/<run>/checkpoints/last.ckpt \
        --scales 4 8 --pairs 4 --size 512 --out experiments/results/flow_eval.json

The pairs are the datamodule's (``conf/data/cave.yaml``, :class:`sschsr.data.pair_dataset.PairDataset`): for
each scene (default: the validation and test scenes) ``--pairs`` synthetic reference views made on the
whole scene, seeded by the data's ``view_seed``, the scene and the view (identical on every machine), with
the data config's motion (camera motion with parallax, a homography and an elastic field; mean |flow|
drawn in 5-12 px; ``--flow-range`` changes it, ``--override +data.synth.geometry.camera=false`` leaves the
homography and the elastic field only) and exact flow;
central ``--size`` crops; the LR side degraded at each scale, upsampled and rendered to ``rgb_hsi``,
colour-matched to the reference, as in training. The flow is predicted from ``rgb_hsi`` to ``ref`` by the
checkpoint's flow network (FlowModule, WarpModule or SRModule ``.ckpt``, flow or full-model
``.safetensors``) with the updates it was trained with (``--iters`` to change).
``--lr-shift D`` makes the LR side from the scene moved by ``D`` px (as LR data degraded with the blur
centred elsewhere look, ``_common.shift_lr_side``): the flow is still scored against the true flow of the
HR grid, so the number says what a user whose LR data follow another convention gets.

Measures over valid pixels (in the reference, not occluded, |flow| <= 400 px, as ``FlowModule``
validates): end-point error (px), the fractions with EPE < 1, 3, 5 px, and the EPE of a zero flow (the mean
true motion) for reference; pooled over all valid pixels of a scene, and of all scenes (``all``). Where the
error sits: ``edge`` is the share of the pixels near a motion edge (the true flow spans more than
``EDGE_SPAN`` px in their 5 x 5 neighbourhood: a depth edge's parallax), ``flat`` the share where the reference
is flat (local standard deviation of its mean channel under ``FLAT_STD`` in a 9 x 9 window), and
``edge_epe`` / ``flat_epe`` what those pixels add to the mean EPE (``edge_epe / edge`` is their own mean).
Written to ``--out`` with the command, commit, device and date; a table is printed.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.nn.functional as F
from _common import Alignment, run_pair_eval
from torch import Tensor

from sschsr.cli._common import exit_on_input_error
from sschsr.losses import endpoint_error, flow_valid_mask
from sschsr.ops.flow_refine import local_moments

THRESHOLDS = (1, 3, 5)  # px: RAFT's accuracy measures
EDGE_SPAN = 1.0  # px of true motion across a 5 x 5 neighbourhood: above it, a motion edge
FLAT_STD = 0.01  # local standard deviation of the reference (values in [0, 1]): below it, flat
COLUMNS = {
    "epe": ("EPE ↓", "{:.3f}"),
    **{f"{t}px": (f"<{t}px ↑", "{:.3f}") for t in THRESHOLDS},
    "zero_epe": ("EPE of 0", "{:.2f}"),
    "edge": ("edge px", "{:.3f}"),
    "edge_epe": ("EPE from edges", "{:.3f}"),
    "flat": ("flat px", "{:.3f}"),
    "flat_epe": ("EPE from flat", "{:.3f}"),
    "count": ("pixels", "{:d}"),
}


def motion_edges(flow_gt: Tensor) -> Tensor:
    """``(H, W)`` bool: the true flow ``(2, H, W)`` spans more than ``EDGE_SPAN`` px (either component) within
    the pixel's 5 x 5 neighbourhood."""
    f = flow_gt[None]
    span = F.max_pool2d(f, 5, 1, 2) + F.max_pool2d(-f, 5, 1, 2)
    return span[0].amax(dim=0) > EDGE_SPAN


def flat_regions(ref: Tensor) -> Tensor:
    """``(H, W)`` bool: the reference ``(C, H, W)``'s mean channel has a standard deviation under ``FLAT_STD``
    in the pixel's 9 x 9 window (:func:`~sschsr.ops.flow_refine.local_moments`)."""
    _, var = local_moments(ref.mean(dim=0, keepdim=True)[None].double(), 4)
    return var[0, 0].sqrt() < FLAT_STD


def flow_errors(flow: Tensor, flow_gt: Tensor, valid: Tensor, ref: Tensor | None = None) -> dict[str, Tensor]:
    """Per valid pixel of one pair: ``epe``, ``<t>px`` (0/1), ``zero_epe`` (``|flow_gt|``), and given the
    reference ``ref`` ``(C, H, W)``, ``edge`` and ``flat`` (0/1) and ``edge_epe`` / ``flat_epe`` (``epe`` there,
    else 0); ``(2, H, W)`` flows."""
    mask = flow_valid_mask(flow_gt[None], valid[None])[0]
    epe = endpoint_error(flow[None], flow_gt[None])[0][mask]
    errors = {
        "epe": epe,
        **{f"{t}px": (epe < t).float() for t in THRESHOLDS},
        "zero_epe": flow_gt.norm(dim=0)[mask],
    }
    if ref is not None:
        edge = motion_edges(flow_gt)[mask].float()
        flat = flat_regions(ref)[mask].float()
        errors.update(edge=edge, edge_epe=epe * edge, flat=flat, flat_epe=epe * flat)
    return errors


def measure(alignment: Alignment, batch: dict[str, Any], device: torch.device) -> list[dict[str, Tensor]]:
    flow = alignment.flow(batch["rgb_hsi"].to(device), batch["ref"].to(device)).float().cpu()
    return [
        flow_errors(f, gt, v, r.float())
        for f, gt, v, r in zip(flow, batch["flow"], batch["valid"], batch["ref"], strict=True)
    ]


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_pair_eval(__doc__, "flow_eval.json", measure, COLUMNS, "flow", argv)


if __name__ == "__main__":
    main(sys.argv[1:])
