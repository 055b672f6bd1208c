"""Faster paths for the default test-time pipeline, tried in one process on the validation scenes: the shipped
model with the default steps in float32, under bfloat16 autocast (the whole model: the flow network too), with
two passes of the self-ensemble under bfloat16, and in channels-last memory format. PSNR per scene against
the HR cube and seconds per scene (CPU, the machine's threads).

    python experiments/speed_candidates.py --scale 8 --out experiments/results/speed_candidates_x8_val.json
"""

import argparse
import time

import torch
from _common import provenance, scene_batches, write_result

from sschsr.checkpoints import load_model
from sschsr.metrics import sr_metrics
from sschsr.pipeline import TestTime

SCENES = ["chart_and_stuffed_toy", "fake_and_real_peppers"]  # the validation scenes
CANDIDATES = {  # name: (tta, bfloat16 autocast, channels-last)
    "float32_tta8": (8, False, False),
    "bfloat16_tta8": (8, True, False),
    "bfloat16_tta2": (2, True, False),
    "float32_tta8_channels_last": (8, False, True),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    batches = scene_batches(args.scale, SCENES)
    results = {}
    for name, (tta, bf16, channels_last) in CANDIDATES.items():
        net = load_model(None, args.scale, 31)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        model = TestTime(tta=tta).build(net, args.scale).eval()
        rows = {}
        for b in batches:
            t0 = time.perf_counter()
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                sr = model(b["lr_up"], b["ref"], b["rgb_hsi"])["sr"].float()
            seconds = time.perf_counter() - t0
            psnr = float(sr_metrics(sr.clamp(0, 1), b["hr"].float(), args.scale)["psnr"][0])
            rows[b["name"][0]] = {"psnr": round(psnr, 3), "seconds": round(seconds, 2)}
        mean = {k: round(sum(r[k] for r in rows.values()) / len(rows), 3) for k in ("psnr", "seconds")}
        results[name] = {"scenes": rows, "mean": mean}
        print(name, mean, flush=True)
    base = results["float32_tta8"]["mean"]
    for r in results.values():
        r["mean"]["speedup"] = round(base["seconds"] / r["mean"]["seconds"], 2)
        r["mean"]["psnr_vs_float32_tta8"] = round(r["mean"]["psnr"] - base["psnr"], 3)
    write_result(args.out, {"scale": args.scale, "scenes": SCENES, "candidates": results,
                            "threads": torch.get_num_threads(), **provenance(torch.device("cpu"))})  # fmt: skip


if __name__ == "__main__":
    main()
