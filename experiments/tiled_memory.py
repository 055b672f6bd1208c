"""Whole scenes in bounded memory: ``sschsr-predict --tile`` on a large scene, its peak memory and quality, and
tiles against the whole scene on a small one.

    python experiments/tiled_memory.py --scale 8 --size 2048 --tile 256 --out experiments/results/tiled_memory_x8.json

The large scene is a validation CAVE scene (chart_and_stuffed_toy, 512 px) mirrored into a ``--size`` square
(HR), its LR cube made by the paper's degradation, the reference its own rendering moved by a few pixels.
Records: the peak resident memory of the ``sschsr-predict`` process (``ru_maxrss`` of the child), its wall
time, the output's PSNR and that of bicubic (the better of centre- and corner-aligned) against the HR cube;
then on the 512 px scene the PSNR between the tiled and the whole-scene outputs. ``--flags`` are passed to
every run (e.g. ``--tta 1`` to keep the time down); the record says which.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import provenance, write_result

from sschsr.data.io import read_cube, write_npy, write_png
from sschsr.data.spectral import camera_srf, default_wavelengths, render
from sschsr.metrics import sr_metrics
from sschsr.ops.degrade import degrade, upsample
from sschsr.ops.warp import move_content

SCENE = "chart_and_stuffed_toy"  # a validation scene
RUN = "import sys; from sschsr.cli.predict import main; sys.exit(main(sys.argv[1:]))"


def mirrored(hr: np.ndarray, size: int) -> np.ndarray:
    """``hr`` (H, W, C) tiled with mirror images up to ``size x size``."""
    h, w = hr.shape[:2]
    row = np.concatenate([hr if i % 2 == 0 else hr[:, ::-1] for i in range(-(-size // w))], axis=1)
    out = np.concatenate([row if i % 2 == 0 else row[::-1] for i in range(-(-size // h))], axis=0)
    return np.ascontiguousarray(out[:size, :size])


def make_inputs(hr: np.ndarray, scale: int, folder: Path) -> None:
    cube = torch.from_numpy(hr.transpose(2, 0, 1).copy())[None]
    write_npy(folder / "lr.npy", degrade(cube, scale)[0].numpy().transpose(1, 2, 0).astype(np.float32))
    rgb = render(cube[0], camera_srf(default_wavelengths(cube.shape[1]))).clamp(0, 1)
    write_png(folder / "ref.png", torch.roll(rgb, (3, -5), (1, 2)).numpy().transpose(1, 2, 0))


def predict(folder: Path, out: Path, scale: int, flags: list[str]) -> tuple[float, float]:
    """Seconds and peak resident memory (GB) of one ``sschsr-predict`` process."""
    argv = ["--lr", str(folder / "lr.npy"), "--ref", str(folder / "ref.png"), "--scale", str(scale),
            "--out", str(out), "--overwrite", "--quiet", *flags]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
    if peak < before:
        raise RuntimeError("ru_maxrss went down")
    return seconds, peak / 2**20


def psnr(a: np.ndarray, b: np.ndarray, scale: int) -> float:
    t = [torch.from_numpy(x.transpose(2, 0, 1).copy())[None].clamp(0, 1) for x in (a, b)]
    return float(sr_metrics(t[0], t[1], scale)["psnr"][0])


def bicubic_psnr(hr: np.ndarray, scale: int) -> float:
    cube = torch.from_numpy(hr.transpose(2, 0, 1).copy())[None]
    lr_up = upsample(degrade(cube, scale), scale)
    corner = move_content(lr_up, -(scale - 1) / 2, -(scale - 1) / 2)
    return max(float(sr_metrics(x.clamp(0, 1), cube, scale)["psnr"][0]) for x in (lr_up, corner))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--flags", default="", help="more sschsr-predict flags for every run")
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    flags = shlex.split(args.flags)
    hr = read_cube(args.shared / "cave" / f"{SCENE}_ms").data.astype(np.float32)
    record = {"scene": SCENE, "scale": args.scale, "size": args.size, "tile": args.tile, "flags": flags}
    with tempfile.TemporaryDirectory() as tmp:
        big, small = Path(tmp) / "big", Path(tmp) / "small"
        big.mkdir(), small.mkdir()
        large = mirrored(hr, args.size)
        make_inputs(large, args.scale, big)
        seconds, gb = predict(big, big / "sr.npy", args.scale, ["--tile", str(args.tile), *flags])
        record["large"] = {
            "seconds": round(seconds, 1),
            "peak_rss_gb": round(gb, 3),
            "psnr": round(psnr(np.load(big / "sr.npy"), large, args.scale), 3),
            "bicubic_psnr": round(bicubic_psnr(large, args.scale), 3),
        }
        print("large", record["large"], file=sys.stderr)
        make_inputs(hr, args.scale, small)
        whole_s, whole_gb = predict(small, small / "whole.npy", args.scale, flags)
        tiled_s, _ = predict(small, small / "tiled.npy", args.scale, ["--tile", str(args.tile), *flags])
        whole, tiled = np.load(small / "whole.npy"), np.load(small / "tiled.npy")
        record["tiled_vs_whole"] = {
            "size": hr.shape[0],
            "psnr_between": round(psnr(tiled, whole, args.scale), 2),
            "whole_psnr": round(psnr(whole, hr, args.scale), 3),
            "tiled_psnr": round(psnr(tiled, hr, args.scale), 3),
            "whole_seconds": round(whole_s, 1),
            "tiled_seconds": round(tiled_s, 1),
        }
        print("tiled vs whole", record["tiled_vs_whole"], file=sys.stderr)
    record.update(provenance(torch.device("cpu")))
    write_result(args.out, record)


if __name__ == "__main__":
    main()
