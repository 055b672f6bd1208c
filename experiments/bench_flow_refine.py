"""Cost of the test-time flow refinement on one CPU core (``sschsr.ops.flow_refine``).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_flow_refine.py [--sizes 256 512] [--steps 150]

For each ``--sizes`` S: one ``(1, 2, S, S)`` flow, ``rgb_hsi`` and reference (random, the content does not
change the cost), ``FlowRefiner(--scale, --steps)`` timed ``--repeats`` times after one untimed run; the
median wall clock and process CPU time are recorded per size, with the command, commit, device and date, in
``experiments/results/bench_flow_refine.json``. ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

import torch
from _common import RESULTS, provenance, write_result

from sschsr.ops.flow_refine import FlowRefiner


def time_refiner(refiner: FlowRefiner, size: int, repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``refiner`` on a random ``size x size`` input."""
    g = torch.Generator().manual_seed(0)
    flow = torch.randn(1, 2, size, size, generator=g)
    rgb_hsi, ref = torch.rand(2, 1, 3, size, size, generator=g)
    refiner(flow, rgb_hsi, ref)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        refiner(flow, rgb_hsi, ref)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "bench_flow_refine.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    refiner = FlowRefiner(args.scale, args.steps)
    times = {str(s): time_refiner(refiner, s, args.repeats) for s in args.sizes}
    record = {
        **provenance(torch.device("cpu")),
        "threads": 1,
        "scale": args.scale,
        "steps": args.steps,
        "repeats": args.repeats,
        "seconds": times,
    }
    out = write_result(args.out, record)
    for s, t in times.items():
        print(f"{s} x {s}: {t['wall_s']:.2f} s wall, {t['cpu_s']:.2f} s CPU ({args.steps} steps)")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
