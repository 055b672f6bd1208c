"""How well ``--psf auto`` finds the PSF of LR data where the truth is known.

    .venv/bin/python experiments/psf_estimate_error.py [--scenes chart_and_stuffed_toy fake_and_real_peppers] \
        [--out experiments/results/psf_estimate_error.json]

Part 1, the estimator's own error: CAVE scenes (the validation ones by default) degraded by known PSFs
(Gaussians of several widths at block centres, block means with and without optics on top, the paper's
kernel; with and without noise), the PSF estimated from the true HR cube (:func:`sschsr.ops.psf_estimate.
estimate_psf`), the error in overall PSF std (HR px; :meth:`sschsr.ops.degradations.Psf.std`).

Part 2, as the pipeline runs it: the estimates the test-time steps logged in the records of
``experiments/eval_lr_variants.sh`` (``psf_estimates`` per scene and model, from the network's output and
from the reference), against the PSF that made those data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from _common import RESULTS, SHARED_DATA, provenance, write_result

from sschsr.data.datasets import CubeFolder
from sschsr.ops.degradations import Observation, grid_phase, named_observation, present
from sschsr.ops.degrade import upsample
from sschsr.ops.psf_estimate import candidates, estimate_psf

CASES = [  # (kind, sigma HR px, noise)
    ("paper", 0.0, 0.0),
    ("block", 0.0, 0.0),
    ("block", 1.0, 0.0),
    ("block", 2.0, 0.01),
    ("gauss", 1.0, 0.0),
    ("gauss", 2.0, 0.005),
    ("gauss", 3.0, 0.0),
    ("gauss", 4.0, 0.01),
]
# how the records of eval_lr_variants.sh made their LR data: (kind, sigma, noise, phase)
VARIANTS = {
    "paper": ("paper", 0.0, 0.0, "paper"),
    "block": ("block", 0.0, 0.0, "block"),
    "gauss2_n0.005": ("gauss", 2.0, 0.005, "block"),
    "gauss4_n0.01": ("gauss", 4.0, 0.01, "paper"),
}


def by_description(scale: int, phase: float) -> dict[str, Observation]:
    return {o.psf.describe(): o for o in candidates(scale, phase)}


def part1(scenes: list[str], scales: list[int]) -> list[dict]:
    source = CubeFolder(str(SHARED_DATA / "cave"), n_bands=31)
    rows = []
    for name in scenes:
        hr = source.load(name).hsi[None].double()
        for scale in scales:
            for kind, sigma, noise in CASES:
                obs = named_observation(kind, scale, sigma, noise)
                lr = obs.observe(hr, scale, torch.Generator().manual_seed(0))
                lr_up = present(upsample(lr, scale), obs.presentation(scale))
                found = estimate_psf(hr, lr_up, scale, obs.phase).observation
                rows.append(
                    {
                        "scene": name,
                        "scale": scale,
                        "truth": obs.describe(scale),
                        "estimate": found.psf.describe(),
                        "true_std": obs.psf.std(),
                        "estimated_std": found.psf.std(),
                        "error_std": found.psf.std() - obs.psf.std(),
                    }
                )
                print(
                    f"{name} x{scale} {obs.describe(scale)}: {found.psf.describe()} ({rows[-1]['error_std']:+.2f} px)"
                )
    return rows


def part2() -> list[dict]:
    rows = []
    for path in sorted(RESULTS.glob("sr_lr_*_x*_*.json")):
        record = json.loads(path.read_text())
        key = next((v for v in VARIANTS if path.stem.endswith(f"_{v}")), None)
        if key is None or record.get("psf") not in ("auto", "auto-reference"):
            continue
        kind, sigma, noise, grid = VARIANTS[key]
        scale = int(record["scale"])
        made = named_observation(kind, scale, sigma, noise)
        truth = Observation(psf=made.psf, phase=grid_phase(scale, grid), noise=noise)
        table = by_description(scale, truth.phase)
        for scene in record["scenes"]:
            for model, values in scene.items():
                found = values.get("psf_estimates") if isinstance(values, dict) else None
                if not found:
                    continue
                for source, described in found.items():
                    psf_text = described[0].split(", phase")[0]
                    estimate = table.get(psf_text)
                    rows.append(
                        {
                            "record": path.name,
                            "scene": scene["name"],
                            "model": model,
                            "from": source,
                            "truth": truth.describe(scale),
                            "estimate": psf_text,
                            "error_std": None if estimate is None else estimate.psf.std() - truth.psf.std(),
                        }
                    )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", nargs="+", default=["chart_and_stuffed_toy", "fake_and_real_peppers"])
    p.add_argument("--scales", nargs="+", type=int, default=[4, 8])
    p.add_argument("--out", default=str(RESULTS / "psf_estimate_error.json"))
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    from_truth = part1(args.scenes, args.scales)
    in_pipeline = part2()
    summary = {}
    for label, rows in (("from_true_hr", from_truth), ("in_pipeline", in_pipeline)):
        errors = [abs(r["error_std"]) for r in rows if r["error_std"] is not None]
        summary[label] = {
            "cases": len(rows),
            "mean_abs_error_std_px": sum(errors) / len(errors) if errors else None,
            "max_abs_error_std_px": max(errors) if errors else None,
        }
    for source in ("from_output", "from_reference"):
        errors = [
            abs(r["error_std"]) for r in in_pipeline if r["from"] == source and r["error_std"] is not None
        ]
        if errors:
            summary[f"in_pipeline_{source}"] = {
                "cases": len(errors),
                "mean_abs_error_std_px": sum(errors) / len(errors),
            }
    record = {
        **provenance(torch.device("cpu")),
        "conventions": "PSF std in HR px, pixel footprint included (Psf.std); error = estimate - truth",
        "summary": summary,
        "from_true_hr": from_truth,
        "in_pipeline": in_pipeline,
    }
    write_result(Path(args.out), record)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    sys.exit(main())
