"""Synthetic-pair throughput on one CPU core: procedural 256 x 256 x 31 pairs and a CAVE 512 x 512 pair.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_synth.py [--label after] [--num 10] [--cave-num 5]

Procedural: for ``--num`` seeds (after ``--warmup`` untimed pairs) it times ``procedural_scene(256, 31,
return_depth=True)`` and ``make_pair(hsi, wl, g, depth=depth)`` separately, as ``sschsr-synth --source
procedural`` and the procedural datamodule call them, and reports medians (target: scene + pair under
0.5 s). CAVE: the full 512 x 512 x 31 ``balloons_ms`` scene from ../shared/data/cave (skipped when absent),
``make_pair`` without a depth map, so the depth is made up from the image (``procedural_depth``), as for
any real cube. Each timing is wall clock (``perf_counter``) and CPU time of the process
(``process_time``): on a shared machine the wall clock suffers from other jobs, the CPU time much less.
``torch.set_num_threads(1)``; run with ``OMP_NUM_THREADS=1`` as well.

Results are merged into ``experiments/results/bench_synth.json`` under ``runs[<label>]`` (other labels
are kept, so a ``before`` and an ``after`` run sit side by side), with the command, git commit (and
whether the tree had uncommitted changes), CPU model, date, threads and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_OUT = ROOT / "experiments" / "results" / "bench_synth.json"


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


class Timer:
    """Wall clock and process CPU time of a block, in ms."""

    def __enter__(self) -> Timer:
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = 1e3 * (time.perf_counter() - self.w0)
        self.cpu = 1e3 * (time.process_time() - self.c0)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def bench_procedural(size: int, bands: int, num: int, warmup: int) -> dict:
    from sschsr.data.spectral import default_wavelengths
    from sschsr.data.synth import make_pair, procedural_scene

    wl = default_wavelengths(bands)
    rows = []
    for i in range(warmup + num):
        g = torch.Generator().manual_seed(1000 + i)
        with Timer() as t_scene:
            hsi, depth = procedural_scene(size, bands, g, wl, return_depth=True)
        with Timer() as t_pair:
            pair = make_pair(hsi, wl, g, depth=depth)
        if i >= warmup:
            rows.append(
                (
                    t_scene,
                    t_pair,
                    float(pair["valid"].float().mean()),
                    float(torch.hypot(*pair["flow"]).mean()),
                )
            )
    out = {"size": size, "bands": bands, "pairs": num, "warmup": warmup}
    for kind in ("wall", "cpu"):
        out[f"scene_ms_{kind}"] = summary([getattr(r[0], kind) for r in rows])
        out[f"make_pair_ms_{kind}"] = summary([getattr(r[1], kind) for r in rows])
        out[f"total_ms_{kind}"] = summary([getattr(r[0], kind) + getattr(r[1], kind) for r in rows])
    out["valid_fraction_mean"] = round(float(np.mean([r[2] for r in rows])), 4)
    out["mean_flow_px_mean"] = round(float(np.mean([r[3] for r in rows])), 3)
    return out


def bench_cave(scene: Path, num: int, warmup: int) -> dict:
    from sschsr.data.io import read_cube
    from sschsr.data.synth import make_pair

    with Timer() as t_read:
        cube = read_cube(scene)
    hsi = torch.from_numpy(np.ascontiguousarray(cube.data)).permute(2, 0, 1).clamp(0, 1).contiguous()
    rows = []
    for i in range(warmup + num):
        g = torch.Generator().manual_seed(2000 + i)
        with Timer() as t:
            make_pair(hsi, cube.wavelengths, g)
        if i >= warmup:
            rows.append(t)
    return {
        "scene": scene.name,
        "shape_hwc": list(cube.data.shape),
        "pairs": num,
        "warmup": warmup,
        "read_ms_wall": round(t_read.wall, 1),
        "make_pair_ms_wall": summary([r.wall for r in rows]),
        "make_pair_ms_cpu": summary([r.cpu for r in rows]),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--label", default="current", help="key under 'runs' in the results file (before, after, ...)"
    )
    p.add_argument("--num", type=int, default=10, help="timed procedural pairs (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed pairs first (default 2)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--bands", type=int, default=31)
    p.add_argument("--cave-num", type=int, default=5, help="timed CAVE 512 pairs (default 5, 0: skip)")
    p.add_argument("--cave-scene", default=str(SHARED / "cave" / "balloons_ms"))
    p.add_argument("--note", default=None, help="free text stored with the run (e.g. what else was running)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    load_before = loadavg()
    started = time.perf_counter()
    with torch.no_grad():
        procedural = bench_procedural(args.size, args.bands, args.num, args.warmup)
        scene = Path(args.cave_scene)
        cave = bench_cave(scene, args.cave_num, 1) if args.cave_num > 0 and scene.exists() else None
    run = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--", "src", "experiments")),
        "device": f"CPU: {cpu_model()} ({os.cpu_count()} logical cores on the machine)",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "note": args.note,
        "duration_s": round(time.perf_counter() - started, 1),
        "target": "procedural_scene + make_pair, 256 x 256 x 31, one core: < 500 ms (median)",
        "procedural": procedural,
        "cave_512": cave,
    }
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("runs", {})[args.label] = run
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, out)

    pr = procedural
    print(
        f"[{args.label}] procedural {pr['size']}x{pr['size']}x{pr['bands']}, median of {pr['pairs']}: "
        f"scene {pr['scene_ms_wall']['median']} ms, make_pair {pr['make_pair_ms_wall']['median']} ms, "
        f"total {pr['total_ms_wall']['median']} ms wall ({pr['total_ms_cpu']['median']} ms CPU)"
    )
    if cave is not None:
        print(
            f"[{args.label}] CAVE {cave['scene']} {cave['shape_hwc']}: make_pair "
            f"{cave['make_pair_ms_wall']['median']} ms wall ({cave['make_pair_ms_cpu']['median']} ms CPU)"
        )
    print(f"load average before {load_before}, after {run['loadavg_after']}; written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
