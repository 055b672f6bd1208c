"""Which of the eight flips and transpositions carry the self-ensemble's gain: the default pipeline with the
ensemble (of the flow network and of the network) over subsets of them, on the validation scenes.

    python experiments/tta_subsets.py --scale 8 --out experiments/results/tta_subsets_x8_val.json

Every candidate is the shipped model with ``sschsr-predict``'s default test-time steps (:class:`TestTime`),
only the ensemble's transforms changed; one process, the machine's threads. A transform is written as the
operations it applies: ``T`` transpose, ``H`` mirror the columns, ``V`` mirror the rows (``id``: none).
Records per scene PSNR, SAM and seconds, and their means.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from _common import RESULTS, provenance, scene_batches, write_result

from sschsr.checkpoints import load_model
from sschsr.metrics import sr_metrics
from sschsr.models.ensemble import TRANSFORMS, SelfEnsemble, Transform
from sschsr.pipeline import TestTime

SCENES = ["chart_and_stuffed_toy", "fake_and_real_peppers"]  # the validation scenes


def parse(name: str) -> Transform:
    """``"TH"`` -> ``(True, True, False)``; ``"id"`` -> no operation."""
    ops = "" if name == "id" else name
    if set(ops) - set("THV"):
        raise ValueError(f"a transform is written with T, H and V (or id), got {name!r}")
    return ("T" in ops, "H" in ops, "V" in ops)


def label(g: Transform) -> str:
    return "".join(op for op, on in zip("THV", g, strict=True) if on) or "id"


CANDIDATES = {
    "all 8": TRANSFORMS[8],
    "id T H V": tuple(map(parse, ("id", "T", "H", "V"))),
    "id T HV THV": tuple(map(parse, ("id", "T", "HV", "THV"))),
    "id TH TV HV (rotations)": tuple(map(parse, ("id", "TH", "TV", "HV"))),
    "id T": TRANSFORMS[2],
    "id": TRANSFORMS[1],
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--out", help="default: experiments/results/tta_subsets_x<scale>_val.json")
    args = p.parse_args(argv)
    batches = scene_batches(args.scale, SCENES)
    record = {"scale": args.scale, "scenes": SCENES, "pipeline": TestTime().describe(), "candidates": {}}
    for name, group in CANDIDATES.items():
        scenes = {}
        for batch in batches:
            model = TestTime().build(load_model(None, args.scale, batch["lr_up"].shape[1]), args.scale).eval()
            for module in model.modules():
                if isinstance(module, SelfEnsemble):
                    module.transforms = group
            t0 = time.perf_counter()
            with torch.inference_mode():
                sr = model(batch["lr_up"], batch["ref"], batch["rgb_hsi"])["sr"]
            seconds = time.perf_counter() - t0
            values = sr_metrics(sr.clamp(0, 1), batch["hr"], args.scale)
            scenes[batch["name"][0]] = {
                "psnr": round(float(values["psnr"][0]), 3),
                "sam": round(float(values["sam"][0]), 3),
                "seconds": round(seconds, 2),
            }
        mean = {
            k: round(sum(s[k] for s in scenes.values()) / len(scenes), 3) for k in ("psnr", "sam", "seconds")
        }
        record["candidates"][name] = {"transforms": [label(g) for g in group], "scenes": scenes, "mean": mean}
        print(name, mean, file=sys.stderr, flush=True)
    base = record["candidates"]["all 8"]["mean"]
    for c in record["candidates"].values():
        c["mean"]["psnr_vs_all_8"] = round(c["mean"]["psnr"] - base["psnr"], 3)
        c["mean"]["speedup_vs_all_8"] = round(base["seconds"] / c["mean"]["seconds"], 2)
    record["threads"] = torch.get_num_threads()
    record.update(provenance(torch.device("cpu")))
    write_result(args.out or RESULTS / f"tta_subsets_x{args.scale}_val.json", record)


if __name__ == "__main__":
    main()
