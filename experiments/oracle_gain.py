"""How much of the missing detail is a gain of the upsampled spectrum: the case for ``head=modulated``.

    .venv/bin/python experiments/oracle_gain.py --scale 8 [--model shipped|PATH] [--out ...]

On the CAVE test scenes (as :mod:`eval_sr` makes them), three outputs that need no training are scored
against the HR cube, and, for ``--model``, two that take the model's output apart:

- ``bicubic``: ``lr_up``;
- ``oracle_gain``: ``lr_up * g*`` with the per-pixel gain ``g* = <hr, lr_up> / <lr_up, lr_up>`` read off the
  HR cube: the best any ``sr = lr_up * (1 + g)`` can do with one channel of detail (its spectral angle is
  bicubic's by construction);
- ``hpm/aligned``: high-pass modulation, the pan-sharpening rule ``lr_up * Y / low(Y)`` with ``Y`` the mean
  of the reference camera's rendering of the HR cube (``rgb_hr``: a reference aligned exactly) and
  ``low`` the LR degradation and bicubic upsampling: what the reference's detail gives with no learning
  when alignment is perfect;
- ``hpm/model``: the same rule with ``Y`` from the model's warped and refined reference (``ref_warp``):
  what it gives with the model's alignment;
- ``model``: ``sr``; ``model/parallel``: ``lr_up + P(sr - lr_up)``, the model's residual projected on
  the upsampled spectrum at each pixel; ``model/orthogonal``: ``lr_up`` plus the rest of the residual
  (what changes spectral shapes).

Metrics as ``sschsr-eval`` (outputs clamped to [0, 1]); the record goes to
``experiments/results/oracle_gain_x{scale}.json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from _common import RESULTS, print_table, provenance, test_batches, write_result
from eval_sr import COLUMNS, scores

from sschsr.checkpoints import load_model
from sschsr.cli._common import exit_on_input_error
from sschsr.inference import resolve_device
from sschsr.metrics import SR_METRICS


def oracle_gain(lr_up: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)``: the least-squares gain of ``lr_up``'s spectrum towards ``hr``'s at each pixel."""
    return (hr * lr_up).sum(1, keepdim=True) / (lr_up * lr_up).sum(1, keepdim=True).clamp_min(1e-12)


def high_pass_modulation(
    lr_up: torch.Tensor, rgb: torch.Tensor, scale: int, eps: float = 1e-3
) -> torch.Tensor:
    """``lr_up * (Y + eps) / (low(Y) + eps)``, ``Y`` the mean of ``rgb (B, 3, H, W)`` and ``low`` the
    paper's degradation followed by bicubic upsampling (what ``lr_up`` went through)."""
    from sschsr.ops.degrade import low_pass

    y = rgb.mean(1, keepdim=True)
    low = low_pass(y, scale)
    return lr_up * (y + eps) / (low + eps)


def split_residual(sr: torch.Tensor, lr_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sr - lr_up`` as its part along ``lr_up``'s spectrum and the rest, each ``(B, C, H, W)``."""
    r = sr - lr_up
    parallel = oracle_gain(lr_up, r) * lr_up
    return parallel, r - parallel


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--model", default=None, help="a full-model .ckpt / .safetensors, or 'shipped'")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--out", default=None, help="default: experiments/results/oracle_gain_x{scale}.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    net = load_model(args.model, args.scale, 31).to(device).eval() if args.model else None
    rows = []
    for batch in test_batches(args.scale, overrides=["data.eval_batch_size=1"]):
        hr, lr_up = batch["hr"].float(), batch["lr_up"].float()
        row: dict[str, Any] = {"name": batch["name"][0], "bicubic": scores(lr_up, hr, args.scale)}
        row["oracle_gain"] = scores(lr_up * oracle_gain(lr_up, hr), hr, args.scale)
        row["hpm/aligned"] = scores(
            high_pass_modulation(lr_up, batch["rgb_hr"].float(), args.scale), hr, args.scale
        )
        if net is not None:
            with torch.inference_mode():
                moved = {k: batch[k].to(device) for k in ("lr_up", "ref", "rgb_hsi")}
                out = net(moved["lr_up"], moved["ref"], moved["rgb_hsi"])
            sr = out["sr"].float().cpu()
            ref_warp = out["ref_warp"].float().cpu()
            row["hpm/model"] = scores(high_pass_modulation(lr_up, ref_warp, args.scale), hr, args.scale)
            parallel, orthogonal = split_residual(sr, lr_up)
            row["model"] = scores(sr, hr, args.scale)
            row["model/parallel"] = scores(lr_up + parallel, hr, args.scale)
            row["model/orthogonal"] = scores(lr_up + orthogonal, hr, args.scale)
        rows.append(row)
        print(
            f"{row['name']}: "
            + ", ".join(f"{k} {v['psnr']:.2f} dB {v['sam']:.2f} deg" for k, v in row.items() if k != "name")
        )
    methods = [k for k in rows[0] if k != "name"]
    means = {k: {m: sum(r[k][m] for r in rows) / len(rows) for m in SR_METRICS} for k in methods}
    record = {
        **provenance(device),
        "scale": args.scale,
        "model": args.model,
        "data": "conf/data/cave.yaml test split",
        "conventions": "as sschsr-eval: PSNR data range 1, mean over bands; SAM degrees; outputs clamped to [0, 1]",
        "means": means,
        "scenes": rows,
    }
    out = write_result(args.out or RESULTS / f"oracle_gain_x{args.scale}.json", record)
    print_table(
        f"x{args.scale}, CAVE test scenes (means)",
        COLUMNS,
        [([k], v) for k, v in means.items()],
        labels=("method",),
    )
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
