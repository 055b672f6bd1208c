"""Super-resolution on held-out CAVE scenes: trained networks against bicubic, with the right reference and
with another scene's photo.

    .venv/bin/python experiments/eval_sr.py --scale 8 --model sschsr=outputs/shipped/full_x8/checkpoints/last.ckpt \
        [--model single_image=PATH --model no_warpnet=PATH ...] [--out experiments/results/sr_eval_x8.json]

The scenes are the test split of the data config (``conf/data/cave.yaml``: balloons, cloth, feathers),
whole 512 x 512 cubes made by the datamodule exactly as ``sschsr-eval`` makes them: the LR side degraded at
``--scale`` (Gaussian 8 x 8, sigma 3, decimation, bicubic back up), the reference a synthetic view of
the scene by another camera (seeded by the data's ``view_seed``: the same on every machine). Every
``--model NAME=PATH`` (a full-model ``.ckpt`` or ``.safetensors``, or ``shipped``) is scored with its
scene's reference and, to show that the reference is used, with the next test scene's reference instead
(``NAME/wrong_ref``; the LR input and its rendering stay the scene's). Bicubic upsampling is always
scored, as it is (``bicubic``) and moved back onto the HR grid by the degradation's content shift
(``bicubic_registered``: 3 px at x8, 1 px at x4, :func:`sschsr.ops.degrade.content_shift`), the part of
a trained network's gain over bicubic that is registration alone.
``--scenes`` scores other CAVE scenes instead (the validation ones, to choose between models). Each model is
run as ``sschsr-predict`` runs it, self-ensembled over ``--tta`` flips/transpositions (default 8), its flow
refined at test time by ``--flow-refine`` steps and its output back-projected onto the LR input by
``--back-project`` steps (both 0 by default here, so that the records made before they existed stay
reproducible; ``sschsr-predict`` uses 150 and 20), its flow network run on the pair shrunk ``--flow-factor``
times (1 here; ``sschsr-predict`` shrinks pairs of 512 px a side and more by 2, as these whole scenes).

``--noise-std S`` adds Gaussian noise of that standard deviation to the LR cube (before upsampling, as the
datamodules' ``noise_std``): real LR data are noisy, and back-projection, which makes the output agree with
the LR data, must not reproduce their noise (it estimates it, :mod:`sschsr.ops.back_projection`).

``--lr-shift D`` makes the LR side from the scene moved by ``D`` px in x and in y (the HR target stays):
what LR data degraded with the blur centred ``D`` px elsewhere look like (a centred Gaussian: +0.5 px from
the paper's even kernel at x8; OpenCV's anchor for an even kernel: +1), to measure how much a model
trained on one convention loses on another (bicubic is scored on the same shifted LR side). With
``--lr-shift -3`` at x8 (-1 at x4) the LR pixels are centred on their blocks, the ``block`` grid of
``sschsr-predict --lr-grid``, which ``--lr-grid block`` tells the models.

``--lr-made block|gauss`` makes the LR side another way than the paper's (:mod:`sschsr.ops.degradations`):
block means, or a Gaussian of ``--lr-sigma`` HR px sampled at block centres (``--noise-std`` on top), as a
user's file holds it (not moved onto the paper's grid); tell the models with ``--lr-grid block``, and the
test-time steps the PSF with ``--psf`` (default ``paper``, so that earlier records stay reproducible;
``sschsr-predict`` estimates it, ``auto``). ``bicubic_corner`` is cubic upsampling with LR pixel ``i`` at
HR ``s i`` (aligned on the first pixel), ``bicubic`` with it at the block's centre (``align_corners=False``):
the better of the two is the bicubic a target compares with.

Metrics as ``sschsr-eval`` computes them (:func:`sschsr.metrics.sr_metrics`: PSNR with data range 1
averaged over bands, SSIM with data_range=1, SAM in degrees, ERGAS), outputs clamped to [0, 1]; means
over scenes. The record (``--out``) holds the command, commit, device, date, per-scene and mean values.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
from _common import (
    RESULTS,
    add_flow_refiner_option,
    add_lr_shift_option,
    print_table,
    provenance,
    refiner_option,
    shift_lr_side,
    test_batches,
    write_result,
)

from sschsr.checkpoints import load_model
from sschsr.cli._common import (
    add_back_project_option,
    add_flow_factor_option,
    add_flow_refine_option,
    add_tta_option,
    exit_on_input_error,
)
from sschsr.errors import InputError
from sschsr.inference import predict_batch, resolve_device
from sschsr.metrics import SR_METRICS, sr_metrics
from sschsr.models.baselines import Bicubic
from sschsr.ops.back_projection import CORRECTION_STD
from sschsr.ops.degrade import LR_GRIDS, content_shift
from sschsr.ops.flow_refine import refiner_settings
from sschsr.ops.warp import move_content
from sschsr.pipeline import DEFAULT_TTA, PSF_CHOICES, TestTime, psf_estimates

BASELINES = ("bicubic", "bicubic_registered", "bicubic_corner")  # always scored
LR_MADE = ("paper", "block", "gauss")


def lr_made_overrides(kind: str, sigma: float, noise_std: float, phase: str = "block") -> list[str]:
    """Hydra overrides of the data for LR cubes made ``kind``'s way (:data:`LR_MADE`) with Gaussian noise of
    ``noise_std``: the paper's degradation, or a fixed member of the degradation family centred on the
    ``phase`` grid (``block`` or ``paper``) with ``lr_up`` as made (``data.present=false``)."""
    if kind == "paper":
        return [f"degradation.noise_std={noise_std}"]
    if kind not in LR_MADE:
        raise InputError(f"--lr-made {kind}: expected one of {', '.join(LR_MADE)}")
    noise = [f"degradation.noisy={1 if noise_std else 0}", f"degradation.noise=[{noise_std},{noise_std}]"]
    psf = (
        ["degradation.area=1", f"degradation.area_sigma=[{sigma},{sigma}]"]
        if kind == "block"
        else ["degradation.area=0", f"degradation.sigma=[{sigma},{sigma}]"]
    )
    return [
        "degradation=block",
        "degradation.units=hr",
        *psf,
        *noise,
        "degradation.spread=0",
        "degradation.shot=[0,0]",
        "degradation.grids=[0,1,0]" if phase == "block" else "degradation.grids=[1,0,0]",
        "++data.present=false",
    ]


COLUMNS = {
    "psnr": ("PSNR ↑", "{:.2f}"),
    "ssim": ("SSIM ↑", "{:.4f}"),
    "sam": ("SAM (°) ↓", "{:.2f}"),
    "ergas": ("ERGAS ↓", "{:.2f}"),
}


def parse_models(items: list[str]) -> dict[str, str]:
    """``["name=path", ...]`` -> ``{name: path}``, in order."""
    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--model {item!r}: expected NAME=PATH")
        if name in models or name in BASELINES:
            raise InputError(f"--model {item!r}: the name {name!r} is taken")
        models[name] = path
    return models


def wrong_references(batches: list[dict[str, Any]]) -> list[torch.Tensor]:
    """For each single-scene batch, the reference photo of the next one (cyclically), resized if needed."""
    if len(batches) < 2:
        raise InputError("a wrong reference needs at least two test scenes")
    refs = []
    for i, batch in enumerate(batches):
        other = batches[(i + 1) % len(batches)]["ref"]
        if other.shape[-2:] != batch["ref"].shape[-2:]:
            other = torch.nn.functional.interpolate(other, size=batch["ref"].shape[-2:], mode="bilinear")
        refs.append(other)
    return refs


def scores(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, float]:
    """The four metrics of one ``(1, C, H, W)`` output."""
    values = sr_metrics(sr.clamp(0, 1), hr, scale)
    return {m: float(values[m][0]) for m in SR_METRICS}


def evaluate(
    models: dict[str, str],
    scale: int,
    device: torch.device,
    tile: int | None,
    tta: int = DEFAULT_TTA,
    scenes: list[str] | None = None,
    lr_shift: float = 0.0,
    lr_grid: str = "paper",
    flow_refine: int = 0,
    back_project: int = 0,
    noise_std: float = 0.0,
    exact_fit: bool = False,
    flow_factor: int = 1,
    refiner: dict[str, Any] | None = None,
    lr_made: str = "paper",
    lr_sigma: float = 0.0,
    lr_phase: str = "block",
    psf: str = "paper",
    wrong_ref: bool = True,
) -> dict[str, Any]:
    """``{"means": {method: {metric: value}}, "scenes": [{"name", method: {...}}]}``; ``refiner``: fields of
    the flow refinement other than its steps (:func:`sschsr.pipeline.with_flow_refinement`)."""

    test_time = TestTime(
        tta=tta,
        flow_factor=flow_factor,
        flow_refine=flow_refine,
        back_project=back_project,
        psf=psf,
        lr_grid=lr_grid,
        refiner=refiner,
        correction_std=None if exact_fit else CORRECTION_STD,
    )
    nets = {
        name: test_time.build(load_model(path, scale, 31), scale).to(device).eval()
        for name, path in models.items()
    }

    def estimates(net: torch.nn.Module) -> dict[str, list[str]]:
        """The PSF estimates the test-time steps made for the last scene (``--psf auto``)."""
        found = psf_estimates(net, scale, clear=True)
        return {
            **({"from_reference": found["from_reference"]} if found["from_reference"] else {}),
            **({"from_output": [e["psf"] for e in found["from_output"]]} if found["from_output"] else {}),
        }

    overrides = ["data.eval_batch_size=1", *lr_made_overrides(lr_made, lr_sigma, noise_std, lr_phase)]
    if scenes:  # e.g. the validation scenes, to choose between models without looking at the test ones
        overrides += ["data.lists.val=null", f"data.lists.test=[{','.join(scenes)}]"]
    registered = Bicubic(shift=content_shift(scale))  # what the models learn to undo, nothing more
    batches = [shift_lr_side(b, scale, lr_shift) for b in test_batches(scale, overrides=overrides)]
    wrong = wrong_references(batches)
    rows = []
    for batch, ref_other in zip(batches, wrong, strict=True):
        hr = batch["hr"].float()
        lr_up = batch["lr_up"].float()
        row: dict[str, Any] = {
            "name": batch["name"][0],
            "bicubic": scores(lr_up, hr, scale),
            "bicubic_registered": scores(registered(lr_up)["sr"], hr, scale),
            "bicubic_corner": scores(move_content(lr_up, -(scale - 1) / 2, -(scale - 1) / 2), hr, scale),
        }
        for name, net in nets.items():
            row[name] = scores(predict_batch(net, batch, tile, device), hr, scale)
            found = estimates(net)
            if found:
                row[name]["psf_estimates"] = found
            if wrong_ref:
                row[f"{name}/wrong_ref"] = scores(
                    predict_batch(net, {**batch, "ref": ref_other}, tile, device), hr, scale
                )
                estimates(net)
        rows.append(row)
        print(
            f"{row['name']}: " + ", ".join(f"{k} {v['psnr']:.2f} dB" for k, v in row.items() if k != "name")
        )
    methods = [k for k in rows[0] if k != "name"]
    means = {k: {m: sum(r[k][m] for r in rows) / len(rows) for m in SR_METRICS} for k in methods}
    return {"means": means, "scenes": rows}


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument(
        "--model", action="append", default=[], help="NAME=PATH (.ckpt, .safetensors or 'shipped')"
    )
    p.add_argument("--tile", type=int, default=None, help="HR tile size (default: whole scenes)")
    p.add_argument(
        "--scenes", nargs="+", default=None, help="CAVE scenes to score (default: the test split; at least 2)"
    )
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    add_tta_option(p, "self-ensemble of the models over flips/transpositions (as sschsr-predict --tta)")
    add_flow_factor_option(p, default=1)
    add_flow_refine_option(p, default=0)
    add_flow_refiner_option(p)
    add_back_project_option(p, default=0)
    p.add_argument(
        "--noise-std",
        type=float,
        default=0.0,
        help="Gaussian noise added to the LR cube (its values in [0, 1]; seeded by the data's view_seed): default 0",
    )
    p.add_argument(
        "--exact-fit",
        action="store_true",
        help="back-projection fits the LR data exactly, not told their noise (correction_std=None)",
    )
    add_lr_shift_option(p)
    p.add_argument(
        "--lr-grid",
        choices=LR_GRIDS,
        default="paper",
        help="the LR convention the models are told (as sschsr-predict --lr-grid); default paper",
    )
    p.add_argument(
        "--lr-made", choices=LR_MADE, default="paper", help="how the LR cubes are made (default paper)"
    )
    p.add_argument(
        "--lr-sigma", type=float, default=0.0, help="Gaussian PSF std (HR px) of --lr-made block|gauss"
    )
    p.add_argument(
        "--lr-phase",
        choices=("block", "paper"),
        default="block",
        help="where --lr-made block|gauss centres LR pixels",
    )
    p.add_argument(
        "--psf", default="paper", help=f"the PSF the test-time steps assume ({PSF_CHOICES}); default paper"
    )
    p.add_argument("--no-wrong-ref", action="store_true", help="skip the runs with another scene's reference")
    p.add_argument("--out", default=None, help="default: experiments/results/sr_eval_x{scale}.json")
    args = p.parse_args(argv)
    refiner = refiner_option(args)
    device = resolve_device(args.device)
    result = evaluate(
        parse_models(args.model),
        args.scale,
        device,
        args.tile,
        args.tta,
        args.scenes,
        args.lr_shift,
        args.lr_grid,
        args.flow_refine,
        args.back_project,
        args.noise_std,
        args.exact_fit,
        args.flow_factor,
        refiner,
        args.lr_made,
        args.lr_sigma,
        args.lr_phase,
        args.psf,
        not args.no_wrong_ref,
    )
    record = {
        **provenance(device),
        "scale": args.scale,
        "models": dict(parse_models(args.model)),
        "tta": args.tta,
        "flow_factor": args.flow_factor,
        "flow_refine": args.flow_refine,
        "flow_refiner": refiner_settings(args.flow_refine, refiner),
        "back_project": args.back_project,
        "noise_std": args.noise_std,
        "exact_fit": args.exact_fit,
        "lr_shift": args.lr_shift,
        "lr_grid": args.lr_grid,
        "lr_made": args.lr_made,
        "lr_sigma": args.lr_sigma,
        "lr_phase": args.lr_phase,
        "psf": args.psf,
        "data": f"CAVE scenes {args.scenes}" if args.scenes else "conf/data/cave.yaml test split",
        "conventions": "PSNR data range 1, mean over bands; "
        "SSIM data_range=1; SAM degrees; outputs clamped to [0, 1]; means over scenes",
        **result,
    }
    out = write_result(args.out or RESULTS / f"sr_eval_x{args.scale}.json", record)
    rows = [([name], means) for name, means in result["means"].items()]
    where = f"CAVE scenes {', '.join(args.scenes)}" if args.scenes else "CAVE test scenes"
    print_table(f"x{args.scale}, {where} (means)", COLUMNS, rows, labels=("method",))
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main(sys.argv[1:])
