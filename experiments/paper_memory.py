"""Peak memory of the paper's network (``experiment=paper``) on the CPU, and what the paper's crop needs.

    .venv/bin/python experiments/paper_memory.py [--sizes 128 256 384] [--grad-sizes 128 192 256] [--threads 2]
        [--out experiments/results/paper_memory_cpu.json] [--write]

For each output size ``S`` (square, batch 1, 31 bands, x4) and each mode, a fresh process builds the network
``sschsr-train experiment=paper scale=4`` builds (:func:`paper_params.paper_network`, untrained) and random
inputs, resets the kernel's high-water mark of its resident memory (``/proc/self/clear_refs``), runs once
and reads the peak (``VmHWM``); the record holds the peak less the resident memory just before the pass:

- ``no_grad``: one forward pass in evaluation mode under ``torch.no_grad`` (inference), at ``--sizes``;
- ``grad``: one forward pass in training mode with autograd recording (the activations a backward needs);
- ``train_step``: that forward pass, the loss of the training (:func:`sschsr.lit.sr.sr_loss` on random
  targets) and its backward (every parameter trainable, the flow network's included, as in the paper's run).

The last two run at ``--grad-sizes``: they need about 31 MB per thousand pixels (8 GB at 256 px), so 384 px
(18 GB) is left out by default on a machine of 24 GB shared with other work.

``--write`` also fills the table of docs/paper.md between ``<!-- table:paper_memory -->`` and
``<!-- /table -->`` from the record (``tests/test_paper.py`` checks that it equals what the record gives).

Then, per mode, the least-squares line ``peak = a + b * pixels`` through the sizes, and its prediction for
the paper's training crop (320 x 512, batch 1): with the weights, their gradients and AdamW's two moments
(4 x 4 bytes per parameter) added, what a GPU needs for one training step in float32. Activations grow
with the pixel count (global matching here is chunked, so its memory is linear too, unlike the official
code's); a CPU's peak is a fair proxy for the memory PyTorch allocates on a GPU in float32 (the same tensors;
cuDNN's workspaces and the CUDA context, about 0.5 GB, come on top).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, fill_doc, provenance, write_result

DOC = ROOT / "docs" / "paper.md"
MARKER = re.compile(r"<!-- table:paper_memory -->\n.*?<!-- /table -->", re.S)

MODES = ("no_grad", "grad", "train_step")
PAPER_CROP = (320, 512)  # DESIGN.md, "Published settings": batch 1, crops of 320 x 512
SCALE, BANDS = 4, 31
MB = 2**20


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(size: int, mode: str, threads: int) -> dict[str, Any]:
    """One measurement, in this process (run by :func:`measure` in a fresh one)."""
    import torch
    from paper_params import paper_network

    from sschsr.lit.sr import sr_loss
    from sschsr.ops.degrade import upsample

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = paper_network()
    net.train(mode != "no_grad")
    g = torch.Generator().manual_seed(0)
    lr_up = upsample(torch.rand(1, BANDS, size // SCALE, size // SCALE, generator=g), SCALE).clamp(0, 1)
    ref, rgb_hsi, rgb_hr = (torch.rand(1, 3, size, size, generator=g) for _ in range(3))
    hr = torch.rand(1, BANDS, size, size, generator=g)

    before = _kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    t0 = time.perf_counter()
    with torch.set_grad_enabled(mode != "no_grad"):
        out = net(lr_up, ref, rgb_hsi)
        if mode == "train_step":
            loss, _ = sr_loss(out["sr"], hr, out["ref_warp"], rgb_hr)
            loss.backward()
    seconds = time.perf_counter() - t0
    peak = _kb("VmHWM")
    return {
        "size": size,
        "mode": mode,
        "peak_mb": round((peak - before) / 1024, 1),
        "rss_before_mb": round(before / 1024, 1),
        "seconds": round(seconds, 2),
    }


def measure(size: int, mode: str, threads: int) -> dict[str, Any]:
    """:func:`child` in a fresh process: nothing of one measurement stays resident in the next."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(size), mode, "--threads", str(threads)],
        capture_output=True, text=True, check=False, cwd=Path(__file__).parent,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"measuring {mode} at {size}: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``: ``(a, b, largest |residual|)``.

    Example:
        >>> line_fit([1, 2, 3], [3, 5, 7])
        (1.0, 2.0, 0.0)
    """
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    a = my - b * mx
    return a, b, max(abs(y - (a + b * x)) for x, y in zip(xs, ys, strict=True))


def table(record: dict[str, Any]) -> str:
    """The markdown table of a record of :func:`main`: peak per size and mode, the fit, the paper's crop."""
    sizes = sorted({r["size"] for r in record["rows"]})
    peak = {(r["mode"], r["size"]): r["peak_mb"] for r in record["rows"]}
    h, w = record["paper_crop"]
    lines = [
        "| pass | " + " | ".join(f"{s} px" for s in sizes) + f" | MB per megapixel | fit at {h} x {w} |",
        "|---|" + "---|" * (len(sizes) + 2),
    ]
    for mode in MODES:
        fit = record["fits"][mode]
        cells = [f"{peak[mode, s] / 1024:.2f} GB" if (mode, s) in peak else "-" for s in sizes]
        lines.append(
            f"| {mode} | " + " | ".join(cells)
            + f" | {fit['mb_per_megapixel']:.0f} | {fit['paper_crop_mb'] / 1024:.1f} GB |"
        )  # fmt: skip
    return "\n".join(lines)


def fill(text: str, record: dict[str, Any]) -> str:
    """``text`` with its table between the markers made from ``record``."""
    return MARKER.sub(lambda _: f"<!-- table:paper_memory -->\n{table(record)}\n<!-- /table -->", text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 384], help="of the no_grad pass")
    p.add_argument("--grad-sizes", type=int, nargs="+", default=[128, 192, 256], help="of the other two")
    p.add_argument("--write", action="store_true", help=f"also fill the table of {DOC.relative_to(ROOT)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "paper_memory_cpu.json")
    p.add_argument("--child", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.threads)))
        return

    import torch
    from paper_params import paper_network

    params = sum(p.numel() for p in paper_network().parameters())
    rows = []
    for mode in MODES:
        for size in args.sizes if mode == "no_grad" else args.grad_sizes:
            rows.append(measure(size, mode, args.threads))
            print(json.dumps(rows[-1]), file=sys.stderr)
    crop_pixels = PAPER_CROP[0] * PAPER_CROP[1]
    state_mb = 4 * 4 * params / MB  # fp32 weights, gradients, AdamW's exp_avg and exp_avg_sq
    fits = {}
    for mode in MODES:
        xs = [r["size"] ** 2 for r in rows if r["mode"] == mode]
        ys = [r["peak_mb"] for r in rows if r["mode"] == mode]
        a, b, worst = line_fit(xs, ys)
        fits[mode] = {
            "intercept_mb": round(a, 1),
            "mb_per_megapixel": round(b * 1e6, 1),
            "max_residual_mb": round(worst, 1),
            "paper_crop_mb": round(a + b * crop_pixels, 1),
        }
    record = {
        **provenance(torch.device("cpu")),
        "network": "sschsr-train experiment=paper scale=4: model.net, untrained, float32, batch 1",
        "parameters": params,
        "threads": args.threads,
        "method": "peak resident memory (VmHWM, reset before the pass) less the resident memory before it",
        "rows": rows,
        "fit": "peak_mb = intercept_mb + mb_per_megapixel * pixels / 1e6, least squares over the sizes",
        "fits": fits,
        "paper_crop": list(PAPER_CROP),
        "paper_crop_train_gpu_mb": round(fits["train_step"]["paper_crop_mb"] + state_mb, 1),
        "weights_grads_adamw_mb": round(state_mb, 1),
    }
    write_result(args.out, record)
    print(table(record))
    print(f"wrote {args.out.resolve().relative_to(ROOT)}", file=sys.stderr)
    if args.write:
        fill_doc(DOC, MARKER, lambda text: fill(text, record))


if __name__ == "__main__":
    main()
