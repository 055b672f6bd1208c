"""How long the training defaults take here: a few steps and one validation of each stage with its default
config (``sschsr-train experiment=<stage> scale=<s>``, nothing else changed but the step count), timed, and
the full default run extrapolated (steps x the median step + validations x the validation's time).

    python experiments/time_defaults.py --scale 4 --steps 8 --out experiments/results/train_defaults_cpu.json

Records per stage: the median and mean seconds per training step after the first two (data generation and
caches warm up there), one validation's seconds, the default ``max_steps`` and ``val_check_interval``, and
the estimate for the whole default run in minutes.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from omegaconf import open_dict

from sschsr.cli.train import compose, train
from sschsr.data.io import write_json
from sschsr.provenance import source_commit

WARM = 2  # steps left out of the statistics


class StepTimer(L.Callback):
    """Seconds of each training batch (forward, backward, step) and of each validation loop."""

    def __init__(self):
        self.steps: list[float] = []
        self.validations: list[float] = []

    def on_train_batch_start(self, *args, **kwargs):
        self._t = time.perf_counter()

    def on_train_batch_end(self, *args, **kwargs):
        self.steps.append(time.perf_counter() - self._t)

    def on_validation_start(self, trainer, pl_module):
        self._v = time.perf_counter()

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.validations.append(time.perf_counter() - self._v)


def time_stage(stage: str, scale: int, steps: int, folder: Path) -> dict:
    """Train ``stage`` with its defaults for ``steps`` steps, validating once at the end; the timings."""
    defaults = compose([f"experiment={stage}", f"scale={scale}"])
    overrides = [
        f"experiment={stage}",
        f"scale={scale}",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "earlier_stages=untrained",  # the timing does not depend on trained weights
        # the schedule over the default run's length, as the default run has it
        f"model.scheduler.total_steps={defaults.trainer.max_steps}",
    ]
    cfg = compose(overrides, output_dir=folder / stage)
    timer = StepTimer()
    with open_dict(cfg):
        cfg.callbacks.pop("model_summary", None)
    train(cfg, extra_callbacks=[timer])
    timed = timer.steps[WARM:]
    max_steps, interval = int(defaults.trainer.max_steps), int(defaults.trainer.val_check_interval)
    median = statistics.median(timed)
    validation = timer.validations[-1]
    return {
        "stage": stage,
        "steps_timed": len(timed),
        "step_s_median": round(median, 3),
        "step_s_mean": round(statistics.mean(timed), 3),
        "validation_s": round(validation, 2),
        "default_max_steps": max_steps,
        "default_val_check_interval": interval,
        "default_batch_size": int(defaults.data.batch_size),
        "default_crop_size": int(defaults.data.crop_size),
        "estimate_min": round((max_steps * median + (max_steps // interval) * validation) / 60, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=int, default=4)
    p.add_argument(
        "--steps", type=int, default=8, help="training steps timed per stage (the first 2 left out)"
    )
    p.add_argument("--stages", nargs="+", default=["stage1", "stage2", "full"])
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if args.steps <= WARM:
        p.error(f"--steps must be above {WARM}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in args.stages:
            rows.append(time_stage(stage, args.scale, args.steps, Path(tmp)))
            print(rows[-1], file=sys.stderr)
    commit, dirty = source_commit()
    write_json(
        args.out,
        {
            "command": "python experiments/time_defaults.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "device": f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads",
            "torch": torch.__version__,
            "commit": commit,
            "dirty": dirty,
            "scale": args.scale,
            "stages": rows,
            "chain_estimate_min": round(sum(r["estimate_min"] for r in rows), 1),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
