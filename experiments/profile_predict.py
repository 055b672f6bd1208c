"""Where the time of ``sschsr-predict`` goes: the default pipeline on validation scenes, split by step.

    python experiments/profile_predict.py --scale 8 --out experiments/results/profile_predict_x8_val.json

For each validation scene (inputs as ``bench_predict.py`` writes them: the LR cube of the paper's degradation,
a synthetic reference), ``sschsr-predict`` with its defaults (plus ``--flags``) runs in this process under
``cProfile``; the record holds the wall time of each step, read as the cumulative time of the function that
does it (Python's profiler times the calls; the arithmetic inside them runs on both cores as usual):

- ``flow_network``: the flow network's passes, the pair shrunk first (``SSCHSR.estimate_flow``);
- ``flow_refinement``: the refinement of the ensemble's flow (``FlowRefiner.__call__``), of which
  ``psf_from_reference`` is its PSF estimate;
- ``sr_network``: the network's passes given the flow: warp, WarpNet and the SR branch (``SSCHSR.forward``);
- ``back_projection``: ``back_project``; ``psf_from_output``: back-projection's PSF estimate
  (``BackProjected.observation``);
- ``read_cube``, ``read_rgb``, ``write``: the input files read, the output written (``sschsr.data.io``);
- ``total``: the whole ``main`` call (imports of the package not included: they happen before).

A first run (``warmup_seconds``, not split) chooses kernels and fills caches, as a fresh process's first
scene does; the profiler adds a little to every Python call, so the record also holds each scene's total
without it (``total_unprofiled``, a second run of the same scene).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shlex
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, provenance, write_result
from bench_predict import SPLITS, write_inputs

from sschsr.cli.predict import main as predict_main

# step -> (file suffix, function name) whose cumulative time it is
STEPS = {
    "flow_network": ("sschsr/models/sschsr.py", "estimate_flow"),
    "flow_refinement": ("sschsr/ops/flow_refine.py", "__call__"),
    "sr_network": ("sschsr/models/sschsr.py", "forward"),
    "back_projection": ("sschsr/ops/back_projection.py", "back_project"),
    "psf_from_output": ("sschsr/models/ensemble.py", "observation"),
    "psf_all": ("sschsr/ops/psf_estimate.py", "estimate_psf"),
    "read_cube": ("sschsr/data/io/cubes.py", "read_cube"),
    "read_rgb": ("sschsr/data/io/images.py", "read_rgb"),
    "write": ("sschsr/data/io/writers.py", "write_npy"),
    "total": ("sschsr/cli/predict.py", "main"),
}


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> float:
    """Seconds spent in the function ``name`` of the file ending in ``suffix`` (0 if it never ran)."""
    return sum(
        ct
        for (path, _line, fn), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
        if fn == name and path.replace("\\", "/").endswith(suffix)
    )


def predict_argv(folder: Path, scale: int, flags: list[str]) -> list[str]:
    return ["--lr", str(folder / "lr.npy"), "--ref", str(folder / "ref.png"), "--scale", str(scale),
            "--out", str(folder / "sr.npy"), "--overwrite", "--quiet", *flags]  # fmt: skip


def profile_scene(folder: Path, scale: int, flags: list[str]) -> dict[str, float]:
    argv = predict_argv(folder, scale, flags)
    profiler = cProfile.Profile()
    profiler.enable()
    code = predict_main(argv)
    profiler.disable()
    if code:
        raise RuntimeError(f"sschsr-predict exited {code}")
    stats = pstats.Stats(profiler)
    steps = {step: round(cumulative(stats, *where), 2) for step, where in STEPS.items()}
    steps["psf_from_reference"] = round(steps.pop("psf_all") - steps["psf_from_output"], 2)
    t0 = time.perf_counter()
    if predict_main(argv):
        raise RuntimeError("sschsr-predict failed on its second run")
    steps["total_unprofiled"] = round(time.perf_counter() - t0, 2)
    named = ("flow_network", "flow_refinement", "sr_network", "back_projection", "psf_from_output")
    named += ("read_cube", "read_rgb", "write")
    steps["other"] = round(steps["total"] - sum(steps[k] for k in named), 2)
    return steps


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--split", choices=list(SPLITS), default="val")
    p.add_argument("--flags", default="", help="more sschsr-predict flags")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="default: experiments/results/profile_predict_x<scale>_<split>.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    flags = shlex.split(args.flags)
    record = {"scale": args.scale, "split": args.split, "flags": flags, "threads": args.threads, "scenes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        scenes = SPLITS[args.split]
        write_inputs(args.scale, scenes, Path(tmp))
        # a first run to warm up (kernels chosen, caches filled): a fresh process pays it once
        t0 = time.perf_counter()
        predict_main(predict_argv(Path(tmp) / scenes[0], args.scale, flags))
        record["warmup_seconds"] = round(time.perf_counter() - t0, 2)
        for scene in scenes:
            record["scenes"][scene] = profile_scene(Path(tmp) / scene, args.scale, flags)
            print(scene, record["scenes"][scene], file=sys.stderr)
    keys = record["scenes"][scenes[0]].keys()
    mean = {k: round(sum(s[k] for s in record["scenes"].values()) / len(scenes), 2) for k in keys}
    record["mean"] = mean
    record["share"] = {
        k: round(mean[k] / mean["total"], 3) for k in keys if k not in ("total", "total_unprofiled")
    }
    record.update(provenance(torch.device("cpu")))
    write_result(args.out or RESULTS / f"profile_predict_x{args.scale}_{args.split}.json", record)


if __name__ == "__main__":
    main()
