"""``sschsr-eval ckpt_path=... data=... scale=...``: per-scene and mean PSNR, SSIM, SAM, ERGAS on the test split.

    sschsr-eval ckpt_path=outputs/full/runs/<run>/checkpoints/last.ckpt scale=4
    sschsr-eval ckpt_path=model.safetensors scale=4              # exported weights (export_weights.py)
    sschsr-eval ckpt_path=shipped data=cave scale=8              # the package's shipped weights for x8
    sschsr-eval ckpt_path=bicubic data=cave                      # the bicubic baseline only
    sschsr-eval ckpt_path=model.ckpt baselines.single_image=single.ckpt tile=256

Scores the model and the baselines (bicubic always, as it is and ``bicubic_registered``: moved back onto
the HR grid by the degradation's content shift, 3 px at x8, which trained networks learn to undo; the
single-image network when ``baselines.single_image=PATH``) on every scene of the data's test split,
prints the tables and writes ``metrics.json`` in the run directory::

    {"model": {"psnr", "ssim", "sam", "ergas"}, "baselines": {"bicubic": {...}, ...},
     "scenes": [{"name", "model": {...}, "baselines": {"bicubic": {...}, ...}}, ...], "meta": {...}}

Conventions (DESIGN.md, "Metrics"): PSNR per band with data range 1, averaged over bands; SSIM per band
with data_range=1; SAM in degrees, mean over pixels; ERGAS = 100/s sqrt(mean_b RMSE_b^2 / mean_b^2).
Outputs are clamped to [0, 1] before scoring; means are over scenes.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sschsr import progress
from sschsr.checkpoints import check_scale, load_model
from sschsr.cli._common import CONF_DIR, exit_on_input_error
from sschsr.cli._config_checks import BICUBIC_NAMES, check_eval_config
from sschsr.cli._hydra import run_app
from sschsr.errors import InputError
from sschsr.inference import predict_batch, resolve_device
from sschsr.metrics import SR_METRICS, sr_metrics
from sschsr.models.baselines import Bicubic
from sschsr.ops.degrade import content_shift
from sschsr.ops.flow_refine import refiner_settings
from sschsr.pipeline import TestTime
from sschsr.progress import Progress
from sschsr.provenance import commit_label

log = logging.getLogger("sschsr.eval")

CONVENTIONS = (
    "PSNR per band (data range 1) averaged over bands; SSIM per band (data_range=1); SAM in degrees, "
    "mean over pixels; ERGAS = 100/s sqrt(mean_b RMSE_b^2 / mean_b^2); outputs clamped to [0, 1]; "
    "means over scenes"
)


def _ckpt_path(cfg: DictConfig) -> str | None:
    """``cfg.ckpt_path``: None (and for ``bicubic``) means the bicubic baseline only."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise InputError(
            "pass ckpt_path=PATH (a .ckpt of the full model or a .safetensors), ckpt_path=shipped or ckpt_path=bicubic"
        )
    ckpt = cfg.get("ckpt_path")
    return None if ckpt is None or str(ckpt).strip().lower() in BICUBIC_NAMES else str(ckpt)


def load_models(cfg: DictConfig) -> dict[str, torch.nn.Module | None]:
    """``{"model": net or None (bicubic), "single_image": net}`` (the latter only when configured).

    Raises:
        InputError: a missing or unreadable checkpoint, or one for another scale or band count.
    """

    scale, n_bands = int(cfg.scale), cfg.get("n_bands")
    check_scale(scale)
    ckpt = _ckpt_path(cfg)
    models: dict[str, torch.nn.Module | None] = {
        "model": None if ckpt is None else load_model(ckpt, scale, n_bands, option="ckpt_path=MODEL")
    }
    single = OmegaConf.select(cfg, "baselines.single_image")
    if single:
        models["single_image"] = load_model(str(single), scale, n_bands)
    camera = OmegaConf.select(cfg, "data.camera")
    for key, net in models.items():
        trained = getattr(net, "info", {}).get("camera")
        if net is not None and camera and trained and trained != camera:
            log.warning(
                "%s was trained with camera %r, the data renders rgb_hsi with %r", key, trained, camera
            )
    return models


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(sum(r[m] for r in rows) / len(rows)) for m in SR_METRICS}


def score_batch(
    batch: dict[str, Any],
    models: dict[str, torch.nn.Module | None],
    registered: torch.nn.Module,
    tile: int | None,
    device: torch.device,
    scale: int,
) -> list[dict[str, Any]]:
    """The scores of one test batch: per scene, the model's (bicubic's when there is none) and the baselines'."""
    scenes: list[dict[str, Any]] = []
    hr, lr_up = batch["hr"].float(), batch["lr_up"].float()
    outputs = {"bicubic": lr_up, "bicubic_registered": registered(lr_up)["sr"]}
    for key, net in models.items():
        if net is not None:
            outputs[key] = predict_batch(net, batch, tile, device)
    values = {key: sr_metrics(sr.clamp(0, 1), hr, scale) for key, sr in outputs.items()}
    for i, name in enumerate(batch["name"]):
        row = {key: {m: float(v[m][i]) for m in SR_METRICS} for key, v in values.items()}
        model_key = "model" if models["model"] is not None else "bicubic"
        scenes.append(
            {
                "name": name,
                "model": row[model_key],
                "baselines": {k: r for k, r in row.items() if k != "model"},
            }
        )
        log.info("%s: PSNR %.2f dB", name, row[model_key]["psnr"])
    return scenes


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score the model and baselines on the test split of ``cfg.data``; returns the ``metrics.json`` dict."""

    check_eval_config(cfg)  # before anything is loaded or built: each bad value one line naming its key
    scale = int(cfg.scale)
    # the LR data of the test split are presented on the paper's grid by the datamodule (lr_grid: paper)
    test_time = TestTime.from_settings(
        **{k: cfg.get(k) for k in ("tta", "flow_factor", "flow_refine", "back_project", "psf")}
    )
    loaded = load_models(cfg)  # every model file is checked before the data is made
    models = {key: None if net is None else test_time.build(net, scale) for key, net in loaded.items()}
    torch.manual_seed(int(cfg.get("seed") or 0))
    device = resolve_device(str(cfg.get("device") or "auto"))
    tile = cfg.get("tile")
    for net in models.values():
        if net is not None:
            net.to(device).eval()

    # bicubic moved back onto the HR grid: the paper's degradation shows the scene 3 px off it at x8
    registered = Bicubic(shift=content_shift(scale))
    log.info("datamodule <%s>", cfg.data._target_)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    scenes: list[dict[str, Any]] = []
    loader = datamodule.test_dataloader()
    with Progress(len(loader.dataset), "sschsr-eval", unit="scene"):
        for batch in loader:
            scenes += score_batch(batch, models, registered, tile, device, scale)
            progress.advance("scene", len(batch["name"]), note=str(batch["name"][-1]))
    if not scenes:
        raise InputError("the test split has no scenes: set data.test (or the dataset's test list)")

    baselines = {k: _means([s["baselines"][k] for s in scenes]) for k in scenes[0]["baselines"]}
    ckpt = _ckpt_path(cfg)
    return {
        "model": _means([s["model"] for s in scenes]),
        "baselines": baselines,
        "scenes": scenes,
        "meta": {
            "model": "bicubic" if ckpt is None else type(loaded["model"]).__name__,
            "ckpt_path": ckpt,
            "weights": None if ckpt is None else loaded["model"].info.get("path"),
            "baselines": {k: OmegaConf.select(cfg, f"baselines.{k}") for k in baselines if k != "bicubic"},
            "scale": scale,
            "n_bands": cfg.get("n_bands"),
            "data": cfg.data._target_ if "_target_" in cfg.data else None,
            "source": OmegaConf.select(cfg, "data.source._target_"),
            "n_scenes": len(scenes),
            "device": device.type,
            "tile": tile,
            "tta": test_time.tta,
            "flow_factor": "auto" if test_time.flow_factor is None else test_time.flow_factor,
            "flow_refine": test_time.flow_refine,
            "flow_refiner": refiner_settings(test_time.flow_refine),
            "back_project": test_time.back_project,
            "psf": test_time.psf,
            "conventions": CONVENTIONS,
            "command": shlex.join(["sschsr-eval", *sys.argv[1:]]),
            "commit": commit_label(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


def print_tables(result: dict[str, Any]) -> None:
    """Per-scene and mean values, as rich tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    heads = {"psnr": "PSNR (dB) ↑", "ssim": "SSIM ↑", "sam": "SAM (°) ↓", "ergas": "ERGAS ↓"}
    fmt = {"psnr": "{:.2f}", "ssim": "{:.4f}", "sam": "{:.3f}", "ergas": "{:.3f}"}
    model_name = result["meta"]["model"]
    baselines = [k for k in result["baselines"] if not (model_name == "bicubic" and k == "bicubic")]
    methods = [("model", model_name)] + [(k, k) for k in baselines]

    def values(d: dict[str, float]) -> list[str]:
        return [fmt[m].format(d[m]) for m in SR_METRICS]

    scenes = Table(title=f"x{result['meta']['scale']}: per scene")
    for col in ("scene", "method", *heads.values()):
        scenes.add_column(col, justify="left" if col in ("scene", "method") else "right")
    for s in result["scenes"]:
        for key, label in methods:
            d = s["model"] if key == "model" else s["baselines"][key]
            scenes.add_row(s["name"], label, *values(d))
    means = Table(title=f"x{result['meta']['scale']}: mean over {result['meta']['n_scenes']} scenes")
    for col in ("method", *heads.values()):
        means.add_column(col, justify="left" if col == "method" else "right")
    for key, label in methods:
        means.add_row(label, *values(result["model"] if key == "model" else result["baselines"][key]))
    console = Console()
    console.print(scenes)
    console.print(means)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON through a temporary file and a rename (no partial file on interruption)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def output_dir(cfg: DictConfig) -> Path:
    out = OmegaConf.select(cfg, "paths.output_dir")
    return Path(out) if out else Path.cwd()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="eval")
@exit_on_input_error
def hydra_main(cfg: DictConfig) -> float:
    result = evaluate(cfg)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    print_tables(result)
    print(f"wrote {out / 'metrics.json'}")
    return result["model"]["psnr"]


def check_config(cfg: DictConfig) -> None:
    """What ``sschsr-eval`` checks before Hydra makes the run folder: the configuration and the model files
    (read, safely, and matched to the scale and band count)."""
    check_eval_config(cfg)
    load_models(cfg)


def main() -> None:
    """``sschsr-eval``: the Hydra app, its configuration checked first and every error one line
    (:func:`sschsr.cli._hydra.run_app`)."""
    run_app(hydra_main, "eval", check_config)


if __name__ == "__main__":
    main()
