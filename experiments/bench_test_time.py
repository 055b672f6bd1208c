"""Cost of the test-time steps of ``sschsr-predict`` on one CPU core: the flow refinement
(``sschsr.ops.flow_refine``) and back-projection (``sschsr.ops.back_projection``).

    OMP_NUM_THREADS=1 .venv/bin/python experiments/bench_test_time.py [--sizes 256 512] [--flow-refine 150]
        [--back-project 20] [--bands 31]

For each ``--sizes`` S, on random inputs (the content does not change the cost): ``FlowRefiner(--scale,
--flow-refine)`` on a ``(1, 2, S, S)`` flow with ``(1, 3, S, S)`` images, and ``back_project`` of a
``(1, --bands, S, S)`` cube, each timed ``--repeats`` times after one untimed run; the median wall clock and
process CPU time are recorded per step and size, with the command, commit, device and date, in
``experiments/results/bench_test_time.json``. ``torch.set_num_threads(1)``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from _common import RESULTS, provenance, write_result

from sschsr.ops.back_projection import back_project
from sschsr.ops.flow_refine import FlowRefiner
from sschsr.pipeline import BACK_PROJECT_STEPS, DEFAULT_FLOW_REFINE


def median_seconds(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls after an untimed one."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--scale", type=int, default=8)
    p.add_argument(
        "--flow-refine", type=int, default=DEFAULT_FLOW_REFINE, help="steps of the flow refinement"
    )
    p.add_argument("--back-project", type=int, default=BACK_PROJECT_STEPS, help="steps of back-projection")
    p.add_argument("--bands", type=int, default=31, help="of the back-projected cube")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(RESULTS / "bench_test_time.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    refiner = FlowRefiner(args.scale, args.flow_refine)
    g = torch.Generator().manual_seed(0)
    seconds: dict[str, dict[str, dict[str, float]]] = {"flow_refine": {}, "back_project": {}}
    for s in args.sizes:
        flow = torch.randn(1, 2, s, s, generator=g)
        rgb_hsi, ref = torch.rand(2, 1, 3, s, s, generator=g)
        sr, lr_up = torch.rand(2, 1, args.bands, s, s, generator=g)
        seconds["flow_refine"][str(s)] = median_seconds(partial(refiner, flow, rgb_hsi, ref), args.repeats)
        seconds["back_project"][str(s)] = median_seconds(
            partial(back_project, sr, lr_up, args.scale, args.back_project), args.repeats
        )
    record = {
        **provenance(torch.device("cpu")),
        "threads": 1,
        "scale": args.scale,
        "steps": {"flow_refine": args.flow_refine, "back_project": args.back_project},
        "bands": args.bands,
        "repeats": args.repeats,
        "seconds": seconds,
    }
    out = write_result(args.out, record)
    for step, times in seconds.items():
        for s, t in times.items():
            n = record["steps"][step]
            print(f"{step}, {s} x {s}: {t['wall_s']:.2f} s wall, {t['cpu_s']:.2f} s CPU ({n} steps)")
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
