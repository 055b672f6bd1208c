"""Where tiled and whole-scene outputs part: ``sschsr-predict --tile`` against one pass over the whole scene,
with each test-time step switched off or fixed in turn.

    python experiments/tile_seams.py --scale 8 --tile 256 --out experiments/results/tile_seams_x8.json

On a validation CAVE scene (chart_and_stuffed_toy, 512 px; inputs as in ``tiled_memory.py``), each variant
(flags added to ``--tta 1``) runs twice, whole and in tiles of ``--tile``; the record holds the PSNR between
the two outputs (peak 1) and each one's PSNR against the HR cube. A step whose variant closes the gap is
where tiles and the whole scene part.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, provenance, write_result
from tiled_memory import SCENE, make_inputs, predict, psnr

from sschsr.data.io import read_cube

VARIANTS = {
    "default": "",
    "psf_paper": "--psf paper",
    "flow_factor_1": "--flow-factor 1",
    "no_refine": "--flow-refine 0",
    "no_back_project": "--back-project 0",
    "network_alone": "--flow-factor 1 --flow-refine 0 --back-project 0",
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, default=8)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    p.add_argument("--out", help="default: experiments/results/tile_seams_x<scale>.json")
    args = p.parse_args(argv)
    hr = read_cube(args.shared / "cave" / f"{SCENE}_ms").data.astype(np.float32)
    record = {
        "scene": SCENE,
        "scale": args.scale,
        "size": hr.shape[0],
        "tile": args.tile,
        "base": ["--tta", "1"],
    }
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(hr, args.scale, folder)
        for name in args.variants:
            flags = ["--tta", "1", *shlex.split(VARIANTS[name])]
            whole_s, _ = predict(folder, folder / "whole.npy", args.scale, flags)
            tiled_s, _ = predict(folder, folder / "tiled.npy", args.scale, ["--tile", str(args.tile), *flags])
            whole, tiled = np.load(folder / "whole.npy"), np.load(folder / "tiled.npy")
            rows[name] = {
                "flags": VARIANTS[name],
                "psnr_between": round(psnr(tiled, whole, args.scale), 2),
                "whole_psnr": round(psnr(whole, hr, args.scale), 3),
                "tiled_psnr": round(psnr(tiled, hr, args.scale), 3),
                "whole_seconds": round(whole_s, 1),
                "tiled_seconds": round(tiled_s, 1),
            }
            print(name, rows[name], file=sys.stderr)
    record["variants"] = rows
    record.update(provenance(torch.device("cpu")))
    write_result(args.out or RESULTS / f"tile_seams_x{args.scale}.json", record)


if __name__ == "__main__":
    main()
