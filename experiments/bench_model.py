"""Speed and memory of the whole network, measured as DESIGN.md measures the official model (its "Anchor").

    .venv/bin/python experiments/bench_model.py [--scale 8] [--model shipped|PATH] [--sizes 128 256 512 1024] [--device cuda]
        [--autocast bfloat16] [--repeats 20] [--train-repeats 10] [--out experiments/results/bench_h200.json]

``--model``: the shipped model of ``--scale`` (``shipped``, the default) or a model file of that scale
(:func:`sschsr.checkpoints.load_model` reads it). For each ``--sizes`` entry ``S``: one forward pass of the network at batch 1 on an ``S x S`` output
(``net(lr_up, ref, rgb_hsi)``: the flow network, WarpNet and the SR branch; no self-ensemble, no flow
refinement, no back-projection: the network alone, as the anchor times the official one), under
``torch.inference_mode``, timed as :func:`bench_flow.time_ms` times (``--warmup`` untimed calls, then
``--repeats`` rotating among four random input sets; CUDA events on a GPU, the wall clock on the CPU), the
median going to ``inference_ms``; on a GPU the peak memory of one pass (``torch.cuda.max_memory_allocated``
after a reset) to ``peak_mem_mb`` (null on the CPU, where PyTorch does not track it). Then one training step
at 128 x 128, batch 4 (forward in training mode, :func:`sschsr.lit.sr.sr_loss` on random targets, backward,
gradient clipping at 1.0 as ``conf/trainer/default.yaml``, an AdamW step on the trainable parameters: the
flow network stays frozen as in training), median over ``--train-repeats`` to ``train_step_ms_128_b4``.

``--autocast bfloat16`` runs the passes under autocast (the network's weights stay float32; DESIGN.md's
"knobs any user can turn"); ``--tf32`` allows TF32 matmuls and convolutions and turns cudnn.benchmark on.
The record, written to ``--out`` with the command, commit, device and date, holds CONTRACTS.md's fields
(``device``, ``inference_ms``, ``peak_mem_mb``, ``train_step_ms_128_b4``, ``model``, ``commit``) keyed by the
size as a string, plus the settings. On the H200, ``--out experiments/results/bench_h200.json`` is the file
CONTRACTS.md names.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

import torch
from _common import RESULTS, provenance, resolve_device, write_result
from bench_flow import DTYPES, PAIRS, autocast_to, time_ms
from torch import Tensor, nn

from sschsr.cli._common import exit_on_input_error
from sschsr.errors import InputError

TRAIN_SIZE, TRAIN_BATCH = 128, 4
CLIP = 1.0  # conf/trainer/default.yaml gradient_clip_val


def inputs(
    net: nn.Module, size: int, batch: int, scale: int, generator: torch.Generator
) -> tuple[Tensor, ...]:
    """``(lr_up, ref, rgb_hsi)`` of random content for an ``size x size`` output, ``size`` a multiple of
    ``scale``: the LR cube drawn at ``size / scale`` and upsampled as the pipeline does."""
    from sschsr.ops.degrade import upsample

    lr = torch.rand(batch, net.n_bands, size // scale, size // scale, generator=generator)
    lr_up = upsample(lr, scale).clamp(0, 1)
    ref, rgb_hsi = (torch.rand(batch, 3, size, size, generator=generator) for _ in range(2))
    return lr_up, ref, rgb_hsi


def forward_fn(net: nn.Module, cast: torch.dtype | None, device: torch.device):
    """``(lr_up, ref, rgb_hsi) -> sr`` in inference mode, under autocast to ``cast`` when given."""

    def run(lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor) -> Tensor:
        with torch.inference_mode(), autocast_to(device, cast):
            return net(lr_up, ref, rgb_hsi)["sr"]

    return run


def train_step_fn(net: nn.Module, cast: torch.dtype | None, device: torch.device):
    """One training step on ``(lr_up, ref, rgb_hsi, hr, rgb_hr)``: forward, :func:`sschsr.lit.sr.sr_loss`,
    backward, clipping, AdamW; returns the loss."""
    from sschsr.lit.sr import sr_loss

    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters: nothing to time a training step of")
    opt = torch.optim.AdamW(params, lr=1e-5)

    def step(lr_up: Tensor, ref: Tensor, rgb_hsi: Tensor, hr: Tensor, rgb_hr: Tensor) -> Tensor:
        with autocast_to(device, cast):
            out = net(lr_up, ref, rgb_hsi)
        loss, _ = sr_loss(out["sr"], hr, out.get("ref_warp"), rgb_hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        opt.step()
        return loss.detach()

    return step


def peak_memory_mb(fn, args: tuple[Tensor, ...], device: torch.device) -> float | None:
    """MB allocated at the peak of one call of ``fn(*args)`` on a GPU; None on the CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn(*args)
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--model", default="shipped", help="shipped (the default) or a model file of --scale")
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512, 1024], help="output sides, px")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--autocast", choices=["bfloat16", "float16"], default=None)
    p.add_argument("--tf32", action="store_true", help="TF32 matmuls/convolutions and cudnn.benchmark (GPU)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--train-repeats", type=int, default=10, help="0: no training step")
    p.add_argument("--out", default=None, help="default: experiments/results/bench_model_<device type>.json")
    args = p.parse_args(argv)
    if min(args.sizes) < 1 or args.warmup < 0 or args.repeats < 1 or args.train_repeats < 0:
        raise InputError("--sizes, --repeats must be >= 1; --warmup, --train-repeats >= 0")
    if any(size % args.scale for size in args.sizes):
        raise InputError(
            f"--sizes {' '.join(map(str, args.sizes))}: each must be a multiple of --scale {args.scale}"
        )
    return args


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    device = resolve_device(args.device)
    if args.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    from sschsr.checkpoints import load_model

    scale = args.scale
    net = load_model(None if args.model == "shipped" else args.model, scale).to(device).eval()
    cast = DTYPES[args.autocast] if args.autocast else None
    g = torch.Generator().manual_seed(0)
    run = forward_fn(net, cast, device)
    inference_ms: dict[str, float] = {}
    peak_mem_mb: dict[str, float | None] = {}
    for size in args.sizes:
        sets = [tuple(t.to(device) for t in inputs(net, size, 1, scale, g)) for _ in range(PAIRS)]
        peak_mem_mb[str(size)] = peak_memory_mb(run, sets[0], device)
        inference_ms[str(size)] = statistics.median(time_ms(run, sets, args.warmup, args.repeats, device))
        mem = peak_mem_mb[str(size)]
        print(
            f"{size} x {size}: forward median {inference_ms[str(size)]:.1f} ms"
            + ("" if mem is None else f", peak {mem:.0f} MB")
        )
    train_ms = None
    if args.train_repeats:
        net.train()
        step = train_step_fn(net, cast, device)
        sets = []
        for _ in range(PAIRS):
            lr_up, ref, rgb_hsi = inputs(net, TRAIN_SIZE, TRAIN_BATCH, scale, g)
            hr = torch.rand(lr_up.shape, generator=g)
            rgb_hr = torch.rand(ref.shape, generator=g)
            sets.append(tuple(t.to(device) for t in (lr_up, ref, rgb_hsi, hr, rgb_hr)))
        train_ms = statistics.median(time_ms(step, sets, args.warmup, args.train_repeats, device))
        print(f"training step, {TRAIN_SIZE} x {TRAIN_SIZE}, batch {TRAIN_BATCH}: median {train_ms:.1f} ms")
    record = {
        **provenance(device),
        "model": f"shipped x{scale}" if args.model == "shipped" else args.model,
        "scale": scale,
        "threads": torch.get_num_threads(),
        "autocast": args.autocast,
        "tf32": bool(args.tf32 and device.type == "cuda"),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "train_repeats": args.train_repeats,
        "parameters": sum(p.numel() for p in net.parameters()),
        "inference_ms": inference_ms,
        "peak_mem_mb": peak_mem_mb,
        f"train_step_ms_{TRAIN_SIZE}_b{TRAIN_BATCH}": train_ms,
    }
    out = write_result(args.out or RESULTS / f"bench_model_{device.type}.json", record)
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
