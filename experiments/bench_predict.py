"""``sschsr-predict`` as a user runs it, timed side by side with an older commit's, and scored.

    python experiments/bench_predict.py --scale 8 --split val --baseline a5dbe92 \
        --variant default= --variant tta2="--tta 2" --out experiments/results/bench_predict_x8_val.json

For each scene of ``--split`` (CAVE, the data config's lists; the LR cube made by the paper's degradation, the
reference a synthetic view of the scene as in every evaluation here), the inputs are written once (``lr.npy``,
``ref.png``); then, interleaved per scene and repeated ``--repeats`` times, the baseline commit's
``sschsr-predict`` (a git worktree of ``--baseline`` with its own shipped weights, run from its own source) and
this checkout's with each ``--variant``'s extra flags, each in a fresh process as a user starts it, with its
defaults otherwise. Records per scene and run: the wall time of the whole command (imports, reading, the
model, writing), the output's PSNR and SAM against the true HR cube; means, and each variant's speed-up over
the baseline (the ratio of the summed median times). ``--device cuda`` runs every command on the GPU (the
record then defaults to ``bench_predict_x<scale>_<split>_gpu.json``; torchvision's deformable convolution is
used when it imports there).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import RESULTS, provenance, scene_batches, write_result

from sschsr.data.io import write_npy, write_png
from sschsr.metrics import sr_metrics

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {
    "val": ["chart_and_stuffed_toy", "fake_and_real_peppers"],
    "test": ["balloons", "cloth", "feathers"],
}
RUN = "import sys; from sschsr.cli.predict import main; sys.exit(main(sys.argv[1:]))"


def write_inputs(scale: int, scenes: list[str], folder: Path) -> dict[str, np.ndarray]:
    """``<folder>/<scene>/lr.npy`` (HWC float32) and ``ref.png`` per scene; returns the HR cubes (C, H, W)."""
    hr = {}
    for batch in scene_batches(scale, scenes):
        name = batch["name"][0]
        (folder / name).mkdir(parents=True)
        write_npy(folder / name / "lr.npy", batch["lr"][0].numpy().transpose(1, 2, 0).astype(np.float32))
        write_png(folder / name / "ref.png", batch["ref"][0].numpy().transpose(1, 2, 0))
        hr[name] = batch["hr"][0].numpy()
    return hr


def run_predict(source: Path | None, args: list[str]) -> float:
    """Seconds of one ``sschsr-predict`` process (``source``: a worktree's ``src`` to import from)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"sschsr-predict {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return seconds


def score(out: Path, hr: np.ndarray, scale: int) -> dict[str, float]:
    sr = torch.from_numpy(np.load(out).transpose(2, 0, 1).copy())[None].clamp(0, 1)
    values = sr_metrics(sr, torch.from_numpy(hr)[None], scale)
    return {"psnr": float(values["psnr"][0]), "sam": float(values["sam"][0])}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--split", choices=sorted(SPLITS), default="val")
    p.add_argument("--scenes", nargs="+", help="instead of the split's scenes")
    p.add_argument("--baseline", default="a5dbe92", help="the commit to compare with ('' for none)")
    p.add_argument(
        "--variant", action="append", default=[], metavar="NAME=FLAGS", help="this checkout with FLAGS added"
    )
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="passed to every run (the baseline's too)"
    )
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    variants = dict(v.split("=", 1) for v in (args.variant or ["default="]))
    scenes = args.scenes or SPLITS[args.split]
    record: dict[str, Any] = {"scale": args.scale, "scenes": scenes, "baseline": args.baseline, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        hr = write_inputs(args.scale, scenes, folder / "inputs")
        runners: dict[str, tuple[Path | None, list[str]]] = {}
        if args.baseline:
            tree = folder / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=ROOT, check=True,
                           capture_output=True)  # fmt: skip
            runners[f"baseline_{args.baseline}"] = (tree / "src", [])
        for name, flags in variants.items():
            runners[name] = (None, shlex.split(flags))
        try:
            for scene in hr:
                for repeat in range(args.repeats):
                    for name, (source, flags) in runners.items():
                        out = folder / "out" / name / scene / "sr.npy"
                        out.parent.mkdir(parents=True, exist_ok=True)
                        inputs = folder / "inputs" / scene
                        cli = ["--lr", str(inputs / "lr.npy"), "--ref", str(inputs / "ref.png"),
                               "--scale", str(args.scale), "--out", str(out), "--overwrite",
                               "--device", args.device, *flags]  # fmt: skip
                        seconds = run_predict(source, cli)
                        entry = record["runs"].setdefault(name, {}).setdefault(scene, {"seconds": []})
                        entry["seconds"].append(round(seconds, 2))
                        if repeat == 0:
                            entry.update(score(out, hr[scene], args.scale))
                        print(f"{scene} {name}: {seconds:.1f} s, {entry['psnr']:.2f} dB", file=sys.stderr)
        finally:
            if args.baseline:
                subprocess.run(["git", "worktree", "remove", "--force", str(folder / "baseline")], cwd=ROOT,
                               capture_output=True)  # fmt: skip
    means = {}
    for name, per_scene in record["runs"].items():
        med = [statistics.median(s["seconds"]) for s in per_scene.values()]
        means[name] = {
            "seconds": round(sum(med) / len(med), 2),
            "psnr": round(statistics.mean(s["psnr"] for s in per_scene.values()), 3),
            "sam": round(statistics.mean(s["sam"] for s in per_scene.values()), 3),
        }
    base = means.get(f"baseline_{args.baseline}")
    for m in means.values():
        if base:
            m["speedup"] = round(base["seconds"] / m["seconds"], 2)
            m["psnr_vs_baseline"] = round(m["psnr"] - base["psnr"], 3)
    record["means"] = means
    record.update(provenance(torch.device(args.device)))
    record["threads"] = torch.get_num_threads()
    suffix = "_gpu" if args.device == "cuda" else ""
    out = args.out or RESULTS / f"bench_predict_x{args.scale}_{args.split}{suffix}.json"
    write_result(out, record)
    for name, m in means.items():
        print(f"{name}: {m}")
    return record


if __name__ == "__main__":
    main()
