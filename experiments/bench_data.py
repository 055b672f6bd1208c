"""Data-loading throughput: 128 x 128 training crops per second from the datamodule, as training sees them.

    .venv/bin/python experiments/bench_data.py [--workers 2] [--batch-size 8] [--crop 128] [--out PATH]

For each dataset config (``conf/data/procedural.yaml``, and ``conf/data/cave.yaml`` when ../shared/data is
there) it composes the real Hydra config, builds the datamodule with the given workers and batch size and
iterates its training loader for whole epochs (persistent workers, as in training). The first epochs are
the warm-up: every worker loads its scenes and generates its synthetic views once, then only crops,
augments, degrades and renders. Epochs run until one is within 10 % of the previous one's throughput
(at most ``--max-warmup`` epochs); the next ``--epochs`` epochs are measured. Reported: crops/s after the
warm-up, crops/s including it (from the loader's creation), the warm-up time, the time to the first
batch, the CPU time per crop (main process and workers) and the machine's load average (other processes
on a shared machine slow the wall-clock numbers; the CPU time per crop does not depend on them). Results go to ``experiments/results/bench_data.json`` with the command, commit, device and date.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared" / "data"


def commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build(data: str, workers: int, batch_size: int, crop: int, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                f"data={data}",
                f"paths.shared_data={SHARED}",
                f"data.num_workers={workers}",
                f"data.batch_size={batch_size}",
                f"data.crop_size={crop}",
                "data.persistent_workers=true",
                *overrides,
            ],
        )
    dm = hydra.utils.instantiate(cfg.data)
    dm.setup("fit")
    return dm, cfg


def worker_cpu_s(loader) -> float:
    """CPU seconds (user + system) used so far by the loader's live worker processes (Linux /proc)."""
    it = getattr(loader, "_iterator", None)
    total = 0.0
    for w in getattr(it, "_workers", []) if it is not None else []:
        try:
            fields = Path(f"/proc/{w.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def epoch(it_factory) -> tuple[int, float, float]:
    """(crops, seconds, seconds to the first batch) of one pass over the loader."""
    t0 = time.perf_counter()
    first, crops = None, 0
    for batch in it_factory():
        if first is None:
            first = time.perf_counter() - t0
        crops += batch["hr"].shape[0]
    return crops, time.perf_counter() - t0, first or 0.0


def bench(data: str, args) -> dict:
    dm, cfg = build(data, args.workers, args.batch_size, args.crop, args.override)
    loader = dm.train_dataloader()
    shape = tuple(dm.dataset("train")[0]["hr"].shape)
    t_start = time.perf_counter()
    history = []
    prev, first_batch_s = None, None
    for _ in range(args.max_warmup):
        crops, secs, first = epoch(lambda: loader)
        first_batch_s = first if first_batch_s is None else first_batch_s
        history.append({"crops": crops, "seconds": round(secs, 3), "crops_per_s": round(crops / secs, 1)})
        rate = crops / secs
        if prev is not None and abs(rate - prev) <= 0.1 * prev:
            break
        prev = rate
    warm_secs = time.perf_counter() - t_start
    warm_crops = sum(h["crops"] for h in history)
    measured_crops, measured_secs = 0, 0.0
    load_before = os.getloadavg()[0]
    cpu0 = worker_cpu_s(loader) + time.process_time()
    for _ in range(args.epochs):
        crops, secs, _ = epoch(lambda: loader)
        measured_crops += crops
        measured_secs += secs
    cpu = worker_cpu_s(loader) + time.process_time() - cpu0
    total_secs = time.perf_counter() - t_start
    return {
        "config": f"conf/data/{data}.yaml",
        "crop_shape_chw": list(shape),
        "scale": int(cfg.scale),
        "train_scenes": len(dm.split()["train"]),
        "pairs_per_scene": int(cfg.data.pairs_per_scene),
        "items_per_epoch": len(dm.dataset("train")),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "first_batch_s": round(first_batch_s, 3),
        "warmup_epochs": history,
        "warmup_s": round(warm_secs, 2),
        "crops_per_s_after_warmup": round(measured_crops / measured_secs, 1),
        "crops_per_s_including_warmup": round((warm_crops + measured_crops) / total_secs, 1),
        "measured_crops": measured_crops,
        # CPU time of the main process and the workers per crop while measuring: what a crop costs,
        # independent of other load on the machine
        "cpu_ms_per_crop": round(1000 * cpu / measured_crops, 2),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="measured epochs after the warm-up")
    ap.add_argument("--max-warmup", type=int, default=8, help="most warm-up epochs")
    ap.add_argument(
        "--data", nargs="*", default=None, help="data configs (default: procedural, and cave if present)"
    )
    ap.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides")
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "bench_data.json")
    args = ap.parse_args(argv)
    datas = args.data or (["procedural", "cave"] if (SHARED / "cave").is_dir() else ["procedural"])
    results = {}
    for data in datas:
        print(f"[bench_data] {data} ...", flush=True)
        results[data] = bench(data, args)
        print(json.dumps(results[data], indent=1), flush=True)
    record = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if argv is None else " ".join(argv),
        "commit": commit(),
        "device": f"cpu, {os.cpu_count()} cores",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "target": ">= 100 crops/s of 128x128x31 training crops with 2 workers, batch size 8",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"[bench_data] wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
