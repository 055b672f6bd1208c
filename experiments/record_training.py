"""Record how training runs went: their command, data, steps, device and validation curves, as JSON.

    .venv/bin/python experiments/record_training.py outputs/shipped/stage1_x8 outputs/shipped/full_x8 \
        --out experiments/results/training_shipped.json [--note "..."]

Each argument is a run folder of ``sschsr-train`` (its ``.hydra/`` and ``csv/metrics.csv``). Per run:
the ``sschsr-train`` command rebuilt from Hydra's overrides, the model and data targets, the training crop,
batch size and scale, the last step logged, the validation metrics at every validation (the curve) and
the best of each, the checkpoints in ``checkpoints/`` with their sizes. The record also holds the commit,
device and date of this call (the runs' own commit is in the note where it differs).
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, provenance, write_result
from omegaconf import OmegaConf

LOWER_IS_BETTER = ("epe", "loss", "sam", "ergas")


def read_metrics(path: Path) -> tuple[int, dict[str, list[tuple[int, float]]]]:
    """The last logged step and ``{metric: [(step, value), ...]}`` of the ``val/`` columns of a CSV log."""
    last, curves = -1, {}
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(row["step"])
            last = max(last, step)
            for key, value in row.items():
                if key.startswith("val/") and value not in ("", None):
                    curves.setdefault(key, []).append((step, float(value)))
    return last, curves


def best(metric: str, curve: list[tuple[int, float]]) -> dict[str, float]:
    pick = min if any(t in metric for t in LOWER_IS_BETTER) else max
    step, value = pick(curve, key=lambda sv: sv[1])
    return {"step": step + 1, "value": value}  # steps done (Lightning logs the index of the last one)


def describe(run: Path) -> dict[str, Any]:
    """One run folder as a JSON-able record."""
    overrides = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "overrides.yaml"))
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    metrics = run / "csv" / "metrics.csv"
    last, curves = read_metrics(metrics) if metrics.is_file() else (-1, {})
    ckpts = sorted((run / "checkpoints").glob("*.ckpt")) if (run / "checkpoints").is_dir() else []
    return {
        "run": str(run),
        "command": shlex.join(["sschsr-train", *overrides]),
        "model": OmegaConf.select(cfg, "model._target_"),
        "data": {
            "source": OmegaConf.select(cfg, "data.source._target_"),
            "val": OmegaConf.to_container(cfg.data.lists.val)
            if OmegaConf.select(cfg, "data.lists.val")
            else None,
            "test": OmegaConf.to_container(cfg.data.lists.test)
            if OmegaConf.select(cfg, "data.lists.test")
            else None,
            "crop_size": OmegaConf.select(cfg, "data.crop_size"),
            "batch_size": OmegaConf.select(cfg, "data.batch_size"),
            "eval_crop_size": OmegaConf.select(cfg, "data.eval_crop_size"),
        },
        "scale": OmegaConf.select(cfg, "scale"),
        "max_steps": OmegaConf.select(cfg, "trainer.max_steps"),
        "last_logged_step": last + 1,
        "accelerator": OmegaConf.select(cfg, "trainer.accelerator"),
        "validation": {k: [{"step": s + 1, "value": v} for s, v in c] for k, c in curves.items()},
        "best": {k: best(k, c) for k, c in curves.items()},
        "checkpoints": {p.name: p.stat().st_size for p in ckpts},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS / "training_shipped.json")
    p.add_argument("--note", default=None)
    args = p.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / ".hydra" / "overrides.yaml").is_file()]
    if missing:
        print(f"error: not sschsr-train run folders: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    record = {**provenance(torch.device("cpu")), "note": args.note, "runs": [describe(r) for r in args.runs]}
    out = write_result(args.out, record)
    for run in record["runs"]:
        summary = ", ".join(f"{k} {v['value']:.4g} @ {v['step']}" for k, v in run["best"].items())
        print(f"{run['run']}: {run['last_logged_step']} steps; best {summary}")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
