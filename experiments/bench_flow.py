"""Speed of the flow network (stage 1) on one pair: the issue's 512 x 512 with 12 updates, CPU or GPU.

    .venv/bin/python experiments/bench_flow.py [--flow 8|4|PATH] [--size 512] [--iters 12] [--device cuda]
        [--dtypes float32 bfloat16] [--compile] [--repeats 20] [--out experiments/results/bench_flow_cuda.json]

``--flow``: the flow network of the shipped model of that scale (``8``, ``4``) or a file
:func:`sschsr.models.flow.load_flow_net` reads. One ``(1, 3, S, S)`` pair in test mode
(``flow_net(rgb_hsi, ref, iters, test_mode=True)``, as ``sschsr-predict`` calls it once per pass), for each
``--dtypes`` entry: float32 as it is, ``bfloat16``/``float16`` under autocast (the network's weights stay
float32); with ``--compile`` each through ``torch.compile`` as well. Before timing, each variant's flow is
compared with the float32 flow on the same input (relative L2 error, recorded; a flow with a NaN or an
infinity scores inf). Timed after ``--warmup``
untimed calls, over ``--repeats`` calls rotating among four random pairs (not zeros, not one buffer), with
CUDA events on a GPU and the wall clock on the CPU (``torch.get_num_threads()`` recorded); the median, the
fastest and the 90th percentile in milliseconds go to ``--out`` with the command, commit, device and date.
The issue's target is 15 ms at 512 x 512 on an H200 (the official RAFT with 12 updates: 34 ms).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from _common import RESULTS, provenance, resolve_device, write_result
from torch import Tensor

from sschsr.checkpoints import load_flow_net
from sschsr.cli._common import exit_on_input_error
from sschsr.models.flow import RAFT

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PAIRS = 4  # input sets the timed calls rotate among


def flow_network(flow: str) -> RAFT:
    """The flow network of the shipped model of scale ``flow`` (a number) or of the file ``flow``."""
    if flow.isdigit():
        from sschsr.checkpoints import load_model

        return load_model(None, int(flow)).flow_net
    return load_flow_net(flow)


def autocast_to(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to ``dtype`` on ``device``'s type; no autocast for None or float32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def runner(
    net: RAFT, iters: int, dtype: torch.dtype, device: torch.device
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(rgb_hsi, ref) -> flow`` in test mode, under autocast to ``dtype`` unless float32."""

    def run(a: Tensor, b: Tensor) -> Tensor:
        with torch.inference_mode(), autocast_to(device, dtype):
            return net(a, b, iters=iters, test_mode=True)

    return run


def relative_error(flow: Tensor, ref: Tensor) -> float:
    """``||flow - ref|| / ||ref||`` in float64; inf when ``flow`` holds a NaN or an infinity."""
    flow, ref = flow.double(), ref.double()
    if not torch.isfinite(flow).all():
        return float("inf")
    return float((flow - ref).norm() / ref.norm().clamp_min(1e-12))


def time_ms(
    fn: Callable[..., Tensor],
    pairs: list[tuple[Tensor, ...]],
    warmup: int,
    repeats: int,
    device: torch.device,
) -> list[float]:
    """Milliseconds of each of ``repeats`` calls ``fn(*pairs[i])`` (rotating among ``pairs``: input sets of
    any length) after ``warmup`` untimed ones."""
    for i in range(warmup):
        fn(*pairs[i % len(pairs)])
    times = []
    for i in range(repeats):
        args = pairs[i % len(pairs)]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(*args)
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(*args)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(ordered),
        "min_ms": ordered[0],
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flow", default="8", help="a shipped model's scale (8, 4) or a flow network's file")
    p.add_argument("--size", type=int, default=512, help="pair side in pixels")
    p.add_argument("--iters", type=int, default=12, help="recurrent updates")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["float32", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="also time each dtype through torch.compile")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None, help="default: experiments/results/bench_flow_<device type>.json")
    return p.parse_args(argv)


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device = resolve_device(args.device)
    net = flow_network(args.flow).to(device).eval()
    g = torch.Generator().manual_seed(0)
    pairs = [
        tuple(torch.rand(1, 3, args.size, args.size, generator=g).to(device) for _ in range(2))
        for _ in range(PAIRS)
    ]
    reference = runner(net, args.iters, torch.float32, device)(*pairs[0])
    variants: dict[str, dict[str, Any]] = {}
    for name in args.dtypes:
        fns = {name: runner(net, args.iters, DTYPES[name], device)}
        if args.compile:
            fns[f"{name}+compile"] = torch.compile(fns[name])
        for label, fn in fns.items():
            error = relative_error(fn(*pairs[0]), reference)
            times = time_ms(fn, pairs, args.warmup, args.repeats, device)
            variants[label] = {"relative_error": error, **summary(times)}
    record = {
        **provenance(device),
        "threads": torch.get_num_threads(),
        "flow": args.flow,
        "size": args.size,
        "iters": args.iters,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "parameters": sum(p.numel() for p in net.parameters()),
        "variants": variants,
    }
    out = write_result(args.out or RESULTS / f"bench_flow_{device.type}.json", record)
    for label, v in variants.items():
        print(
            f"{label}: {args.size} x {args.size}, {args.iters} updates: median {v['median_ms']:.1f} ms "
            f"(min {v['min_ms']:.1f}, p90 {v['p90_ms']:.1f}), relative error {v['relative_error']:.1e}"
        )
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
