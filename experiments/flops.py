"""The shipped network's arithmetic: floating-point operations per output pixel of one pass, the rate one pass
achieves on this CPU, and that CPU's attainable peak (float32 matrix products of 4096 x 4096, the best of a
few runs: what PyTorch's own kernels reach here, not a datasheet number).

    python experiments/flops.py --size 256 --out experiments/results/flops_cpu.json

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions, 2 per
multiply-add; elementwise work, interpolation and grid sampling are not counted), for the network alone (flow
network, WarpNet, SR branch; no test-time steps) at x4 and x8 on a ``--size`` square output.
"""

from __future__ import annotations

import argparse
import time

import torch
from _common import provenance, write_result
from torch.utils.flop_counter import FlopCounterMode

from sschsr.checkpoints import load_model


def peak_gflops(n: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def network(scale: int, size: int) -> dict[str, float]:
    net = load_model(None, scale, 31).eval()
    g = torch.Generator().manual_seed(0)
    inputs = (
        torch.rand(1, 31, size, size, generator=g),
        torch.rand(1, 3, size, size, generator=g),
        torch.rand(1, 3, size, size, generator=g),
    )
    with torch.inference_mode():
        net(*inputs)  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            net(*inputs)
        flops = counter.get_total_flops()
        seconds = min(_timed(lambda: net(*inputs)) for _ in range(3))
    return {
        "flops": float(flops),
        "flops_per_output_pixel": round(flops / size**2),
        "seconds": round(seconds, 3),
        "gflops_per_s": round(flops / seconds / 1e9, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    peak = peak_gflops()
    record = {"size": args.size, "threads": torch.get_num_threads(), "peak_gflops_matmul": round(peak, 1)}
    for scale in (4, 8):
        row = network(scale, args.size)
        row["fraction_of_peak"] = round(row["gflops_per_s"] / peak, 3)
        record[f"x{scale}"] = row
        print(scale, row)
    record.update(provenance(torch.device("cpu")))
    write_result(args.out, record)


if __name__ == "__main__":
    main()
