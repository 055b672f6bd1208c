"""How much alignment still holds the super-resolution back: the network given its own flow, its flow
refined at test time, and the true flow of the synthetic pair.

    .venv/bin/python experiments/true_flow_gain.py --scale 8 [--model shipped|PATH] [--flow-refine 150]
        [--back-project 20] [--out experiments/results/true_flow_gain_x8.json]

On the CAVE test scenes, made as :mod:`eval_sr` makes them (whole 512 x 512 cubes, the reference a synthetic
view by another camera whose exact flow the pair carries), the network runs once per flow (one pass, no
self-ensemble), each output back-projected by ``--back-project`` steps (default 20 at every scale, as
``sschsr-predict`` does at x8; 0: the network's outputs as they are):

- ``own``: the flow network's flow;
- ``refined``: that flow refined by ``--flow-refine`` steps (what ``sschsr-predict --tta 1`` runs);
- ``true``: the pair's exact flow (``batch["flow"]``): the network with perfect alignment, everything
  else unchanged.

For the first two the end-point error over the valid pixels (mean, median, 90th percentile) is recorded
beside the metrics (as
``sschsr-eval``: outputs clamped to [0, 1]); means over scenes, in
``experiments/results/true_flow_gain_x{scale}.json`` with the command, commit, device and date.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from _common import RESULTS, print_table, provenance, test_batches, write_result
from eval_sr import COLUMNS, scores

from sschsr.checkpoints import load_model
from sschsr.cli._common import add_back_project_option, add_flow_refine_option, exit_on_input_error
from sschsr.errors import InputError
from sschsr.inference import resolve_device
from sschsr.losses import endpoint_error, flow_valid_mask
from sschsr.ops.back_projection import back_project
from sschsr.ops.flow_refine import FlowRefiner, refiner_settings
from sschsr.pipeline import BACK_PROJECT_STEPS

FLOWS = ("own", "refined", "true")


def epe_stats(flow: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> dict[str, float]:
    """Mean, median and 90th percentile of the end-point error (px) of ``flow`` ``(B, 2, H, W)`` against
    ``truth`` over its valid pixels: ``{"epe", "epe_median", "epe_p90"}``."""
    e = endpoint_error(flow, truth)[flow_valid_mask(truth, valid)].double()
    return {"epe": e.mean().item(), "epe_median": e.median().item(), "epe_p90": e.quantile(0.9).item()}


def flows(net: torch.nn.Module, batch: dict[str, Any], refine: int, scale: int) -> dict[str, torch.Tensor]:
    """The three flows of :data:`FLOWS` for one batch."""
    with torch.inference_mode():
        own = net.estimate_flow(batch["rgb_hsi"], batch["ref"], refine=False).float()
    refined = FlowRefiner(scale, refine)(own, batch["rgb_hsi"], batch["ref"])
    return {"own": own, "refined": refined, "true": batch["flow"].float()}


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--model", default="shipped", help="a full-model .ckpt / .safetensors, or 'shipped'")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    add_flow_refine_option(p)
    add_back_project_option(p, default=BACK_PROJECT_STEPS)  # at every scale, so the outputs compare alike
    p.add_argument(
        "--overrides", nargs="*", default=[], help="more data config overrides (tests: small data)"
    )
    p.add_argument("--out", default=None, help="default: experiments/results/true_flow_gain_x{scale}.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    net = load_model(args.model, args.scale, 31).to(device).eval()
    if getattr(net, "flow_net", None) is None:
        raise InputError(f"{args.model}: the model estimates no flow (a single-image or bicubic model)")
    rows = []
    for batch in test_batches(args.scale, overrides=["data.eval_batch_size=1", *args.overrides]):
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        hr = batch["hr"].float().cpu()
        row: dict[str, Any] = {"name": batch["name"][0]}
        for name, flow in flows(net, batch, args.flow_refine, args.scale).items():
            with torch.inference_mode():
                sr = net(batch["lr_up"], batch["ref"], batch["rgb_hsi"], flow=flow)["sr"]
            sr = back_project(sr, batch["lr_up"], args.scale, args.back_project).cpu()
            row[name] = scores(sr, hr, args.scale)
            if name != "true":
                row[name] |= epe_stats(flow, batch["flow"].float(), batch["valid"])
        rows.append(row)
        print(
            f"{row['name']}: "
            + ", ".join(
                f"{k} {row[k]['psnr']:.2f} dB" + (f" (EPE {row[k]['epe']:.2f} px)" if "epe" in row[k] else "")
                for k in FLOWS
            )
        )
    means = {k: {m: sum(r[k][m] for r in rows) / len(rows) for m in rows[0][k]} for k in FLOWS}
    record = {
        **provenance(device),
        "scale": args.scale,
        "model": args.model,
        "flow_refine": args.flow_refine,
        "flow_refiner": refiner_settings(args.flow_refine),
        "back_project": args.back_project,
        "data": "conf/data/cave.yaml test split" + (f" with {args.overrides}" if args.overrides else ""),
        "conventions": "as sschsr-eval: PSNR data range 1, mean over bands; SAM degrees; outputs clamped to "
        "[0, 1]; one pass; EPE px over valid pixels; means over scenes",
        "means": means,
        "scenes": rows,
    }
    out = write_result(args.out or RESULTS / f"true_flow_gain_x{args.scale}.json", record)
    print_table(
        f"x{args.scale}, CAVE test scenes (means), one pass",
        COLUMNS,
        [([k], v) for k, v in means.items()],
        labels=("flow",),
    )
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
