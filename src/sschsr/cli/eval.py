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
import subprocess
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from sschsr.cli._common import CONF_DIR, exit_on_input_error
from sschsr.errors import InputError
from sschsr.metrics import SR_METRICS, sr_metrics

log = logging.getLogger("sschsr.eval")

BICUBIC_NAMES = ("bicubic", "none", "null", "")
SHIPPED_NAMES = ("shipped", "default")  # the package's own weights for the scale
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


def _load(ckpt: str, scale: int, n_bands: int | None) -> torch.nn.Module:
    from sschsr.inference import check_scale, load_model, missing_weights_message, shipped_weights

    if ckpt.strip().lower() in SHIPPED_NAMES:
        check_scale(scale)
        if not shipped_weights(scale).is_file():
            raise InputError(missing_weights_message(scale, option="ckpt_path=MODEL"))
        return load_model(None, scale, n_bands)
    return load_model(ckpt, scale, n_bands)


def load_models(cfg: DictConfig) -> dict[str, torch.nn.Module | None]:
    """``{"model": net or None (bicubic), "single_image": net}`` (the latter only when configured).

    Raises:
        InputError: a missing or unreadable checkpoint, or one for another scale or band count.
    """
    from sschsr.inference import check_scale

    scale, n_bands = int(cfg.scale), cfg.get("n_bands")
    check_scale(scale)
    ckpt = _ckpt_path(cfg)
    models: dict[str, torch.nn.Module | None] = {
        "model": None if ckpt is None else _load(ckpt, scale, n_bands)
    }
    single = OmegaConf.select(cfg, "baselines.single_image")
    if single:
        models["single_image"] = _load(str(single), scale, n_bands)
    camera = OmegaConf.select(cfg, "data.camera")
    for key, net in models.items():
        trained = getattr(net, "info", {}).get("camera")
        if net is not None and camera and trained and trained != camera:
            log.warning(
                "%s was trained with camera %r, the data renders rgb_hsi with %r", key, trained, camera
            )
    return models


def _commit() -> str | None:
    """The repository's commit (with ``-dirty`` for local changes), when run from a git checkout."""
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():  # an installed copy, not the repository
        return None
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _run(net: torch.nn.Module, batch: dict[str, Any], tile: int | None, device: torch.device) -> torch.Tensor:
    """``sr`` ``(B, C, H, W)`` on the CPU for one batch, whole or in tiles."""
    from sschsr.inference import predict_tiled

    if tile is None:
        with torch.inference_mode():
            out = net(*(batch[k].to(device) for k in ("lr_up", "ref", "rgb_hsi")))
        return out["sr"].float().cpu()
    srs = [
        predict_tiled(net, batch["lr_up"][i], batch["ref"][i], batch["rgb_hsi"][i], tile=tile, device=device)[
            "sr"
        ]
        for i in range(batch["lr_up"].shape[0])
    ]
    return torch.stack(srs)


def _means(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(sum(r[m] for r in rows) / len(rows)) for m in SR_METRICS}


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score the model and baselines on the test split of ``cfg.data``; returns the ``metrics.json`` dict."""
    from sschsr.data.degrade import content_shift
    from sschsr.inference import (
        BACK_PROJECT_STEPS,
        DEFAULT_FLOW_REFINE,
        DEFAULT_TTA,
        check_flow_factor,
        check_steps,
        parse_psf,
        resolve_device,
        with_back_projection,
        with_coarse_flow,
        with_flow_refinement,
        with_tta,
    )
    from sschsr.models.baselines import Bicubic
    from sschsr.ops.flow_refine import refiner_settings

    scale = int(cfg.scale)
    tta = cfg.get("tta")
    tta = DEFAULT_TTA if tta is None else int(tta)
    refine = cfg.get("flow_refine")
    refine = DEFAULT_FLOW_REFINE if refine is None else int(refine)
    check_steps(refine, f"flow_refine={refine}")
    back = cfg.get("back_project")
    back = BACK_PROJECT_STEPS if back is None else int(back)
    check_steps(back, f"back_project={back}")
    factor = cfg.get("flow_factor")
    factor = None if factor is None else int(factor)
    if factor is not None:
        check_flow_factor(factor, f"flow_factor={factor}")
    psf_text = str(cfg.get("psf") or "paper")
    psf = parse_psf(psf_text, scale)
    loaded = load_models(cfg)  # every model file is checked before the data is made
    models = {
        key: None
        if net is None
        else with_back_projection(
            with_tta(
                with_flow_refinement(with_coarse_flow(net, scale, factor), scale, refine, psf=psf), scale, tta
            ),
            scale,
            back,
            psf=psf,
        )
        for key, net in loaded.items()
    }
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
    for batch in datamodule.test_dataloader():
        hr, lr_up = batch["hr"].float(), batch["lr_up"].float()
        outputs = {"bicubic": lr_up, "bicubic_registered": registered(lr_up)["sr"]}
        for key, net in models.items():
            if net is not None:
                outputs[key] = _run(net, batch, tile, device)
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
            "tta": tta,
            "flow_factor": "auto" if factor is None else factor,
            "flow_refine": refine,
            "flow_refiner": refiner_settings(refine),
            "back_project": back,
            "psf": psf_text,
            "conventions": CONVENTIONS,
            "command": shlex.join(["sschsr-eval", *sys.argv[1:]]),
            "commit": _commit(),
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
def main(cfg: DictConfig) -> float:
    result = evaluate(cfg)
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    print_tables(result)
    print(f"wrote {out / 'metrics.json'}")
    return result["model"]["psnr"]


if __name__ == "__main__":
    main()
