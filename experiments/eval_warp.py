"""Stage-2 gain: how much closer WarpNet's repair brings the warped reference to the source view.

    .venv/bin/python experiments/eval_warp.py --ckpt outputs/stage2/runs/<run>/checkpoints/last.ckpt \
        --scales 4 8 --pairs 4 --size 512 --out experiments/results/warp_eval.json

The pairs of ``eval_flow.py`` (same options, same seeds: the same views, crops and degradations). Per pair,
with the checkpoint's flow network and WarpNet (WarpModule or SRModule ``.ckpt``, full-model
``.safetensors``), as stage 2 validates (:meth:`sschsr.lit.warp.WarpModule.align`,
:func:`sschsr.lit.warp.image_psnr`: the whole image, clamped, data range 1, at most 100 dB):

- ``psnr_ref``: the unaligned reference as it is (for scale);
- ``psnr_warp0``: the reference backward-warped by the predicted flow;
- ``psnr_warp``: WarpNet's repair of it;
- ``gain`` = ``psnr_warp - psnr_warp0``;
- ``detail_warp0``, ``detail_warp``: the fine detail each keeps, its mean absolute Laplacian over the
  target's (:func:`sschsr.lit.warp.detail_ratio`; 1: as much as the HR view, below 1: smoother);

each against ``rgb_hr``, the HR source view rendered through the same camera response and colour match to
the reference as ``rgb_hsi`` (the datamodule's, :func:`sschsr.lit.warp.render_target`). Means over the
pairs of a scene and of all scenes (``all``). Written to ``--out`` with the command, commit, device and
date; a table is printed.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from _common import Alignment, run_pair_eval
from torch import Tensor

from sschsr.cli._common import exit_on_input_error
from sschsr.lit.warp import detail_ratio, image_psnr, render_target

COLUMNS = {
    "psnr_ref": ("ref (dB)", "{:.2f}"),
    "psnr_warp0": ("warped (dB)", "{:.2f}"),
    "psnr_warp": ("WarpNet (dB)", "{:.2f}"),
    "gain": ("gain (dB) ↑", "{:+.2f}"),
    "detail_warp0": ("warped detail", "{:.3f}"),
    "detail_warp": ("WarpNet detail", "{:.3f}"),
    "count": ("pairs", "{:d}"),
}


def measure(alignment: Alignment, batch: dict[str, Any], device: torch.device) -> list[dict[str, Tensor]]:
    out = alignment.align(batch["rgb_hsi"].to(device), batch["ref"].to(device))
    target = render_target(batch)
    scores = {
        "psnr_ref": image_psnr(batch["ref"], target),
        "psnr_warp0": image_psnr(out["ref_warp0"].cpu(), target),
        "psnr_warp": image_psnr(out["ref_warp"].cpu(), target),
    }
    scores["gain"] = scores["psnr_warp"] - scores["psnr_warp0"]
    scores["detail_warp0"] = detail_ratio(out["ref_warp0"].cpu(), target)
    scores["detail_warp"] = detail_ratio(out["ref_warp"].cpu(), target)
    return [{k: v[i : i + 1] for k, v in scores.items()} for i in range(target.shape[0])]


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    return run_pair_eval(
        __doc__, "warp_eval.json", measure, COLUMNS, "PSNR to rgb_hr", argv, needs_warpnet=True
    )


if __name__ == "__main__":
    main(sys.argv[1:])
