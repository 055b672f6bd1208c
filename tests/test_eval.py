"""``sschsr-eval``: per-scene and mean PSNR / SSIM / SAM / ERGAS for the model and bicubic on the smoke
experiment's data (tiny procedural scenes), from a training ``.ckpt``, an exported float16 ``.safetensors``
and the shipped-weights slot; ``metrics.json`` as CONTRACTS.md describes it; bad model files as one
``error:`` line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

import helpers
import sschsr.checkpoints.model as checkpoints_model
from sschsr.checkpoints import export_weights
from sschsr.cli._common import CONF_DIR
from sschsr.cli.eval import evaluate, load_models
from sschsr.errors import InputError
from sschsr.metrics import SR_METRICS
from sschsr.models.flow import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.models.warpnet import WarpNet
from sschsr.pipeline import BACK_PROJECT_STEPS

BIN = Path(sys.executable).parent
BANDS, SCALE = 31, 4
# the smoke experiment's data (conf/experiment/smoke.yaml): 6 procedural scenes of 64 x 64, one test scene
SMOKE_DATA = [
    "data.source.num=6",
    "data.source.size=64",
    "data.val=1",
    "data.test=1",
    "data.eval_crop_size=32",
    "data.num_workers=0",
    "data.persistent_workers=false",
]


def tiny_sschsr() -> SSCHSR:
    """A small random SSCHSR; its zero-initialised output layers drawn at random too (as after training),
    so that its ``sr`` is not just ``lr_up``."""
    torch.manual_seed(0)
    net = SSCHSR(BANDS, "lite", flow_net=RAFT("small", iters=2), warpnet=WarpNet(), flow_iters=2)
    return helpers.randomise_zero_parameters(net, 0.02)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A training checkpoint of the tiny model (as SRModule saves it) and its float16 export."""
    from sschsr.lit.sr import SRModule

    root = tmp_path_factory.mktemp("eval_models")
    module = SRModule(tiny_sschsr(), scale=SCALE)
    ckpt = {"state_dict": module.state_dict(), "global_step": 0, "epoch": 0}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, root / "full.ckpt")
    fp16 = export_weights(root / "full.ckpt", root / "weights" / f"sschsr_x{SCALE}.safetensors")
    return {"ckpt": root / "full.ckpt", "fp16": fp16}


def eval_cfg(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="eval", overrides=[*SMOKE_DATA, "device=cpu", *overrides])


def check_structure(result: dict, n_scenes: int = 1) -> None:
    """CONTRACTS.md: {"model": {...means}, "baselines": {"bicubic": {...}}, "scenes": [{"name": ..., ...}]}."""
    assert set(SR_METRICS) == {"psnr", "ssim", "sam", "ergas"}
    assert set(result["model"]) == set(SR_METRICS)
    assert "bicubic" in result["baselines"] and set(result["baselines"]["bicubic"]) == set(SR_METRICS)
    assert set(result["baselines"]["bicubic_registered"]) == set(SR_METRICS)
    assert len(result["scenes"]) == n_scenes
    for scene in result["scenes"]:
        assert isinstance(scene["name"], str) and scene["name"]
        assert set(scene["model"]) == set(SR_METRICS) and set(scene["baselines"]["bicubic"]) == set(
            SR_METRICS
        )
        for values in (scene["model"], scene["baselines"]["bicubic"]):
            assert all(math.isfinite(v) for v in values.values())
            assert 0 < values["ssim"] <= 1 and values["sam"] >= 0 and values["ergas"] >= 0
    # the means are over scenes
    for m in SR_METRICS:
        mean = sum(s["model"][m] for s in result["scenes"]) / n_scenes
        assert result["model"][m] == pytest.approx(mean)
    json.dumps(result)  # plain values only


def test_ckpt_and_exported_safetensors(models):
    # psf=paper: an estimated PSF is a discrete choice that float16 rounding may tip (psf=auto is the default)
    from_ckpt = evaluate(eval_cfg(f"ckpt_path={models['ckpt']}", "psf=paper"))
    check_structure(from_ckpt)
    assert from_ckpt["meta"]["model"] == "SSCHSR" and from_ckpt["meta"]["scale"] == SCALE
    assert from_ckpt["meta"]["weights"] == str(models["ckpt"])
    assert from_ckpt["meta"]["flow_refine"] == 150  # the flow's test-time refinement is on by default
    assert from_ckpt["meta"]["back_project"] == BACK_PROJECT_STEPS  # on by default, at every scale
    assert from_ckpt["meta"]["flow_factor"] == "auto"  # by the size of each pair
    for key in ("command", "commit", "date", "device", "conventions"):
        assert key in from_ckpt["meta"]
    # the random model is not bicubic, and its float16 export scores the same within float16 rounding
    assert from_ckpt["model"]["psnr"] != pytest.approx(from_ckpt["baselines"]["bicubic"]["psnr"], abs=1e-3)
    from_fp16 = evaluate(eval_cfg(f"ckpt_path={models['fp16']}", "psf=paper"))
    check_structure(from_fp16)
    assert from_fp16["baselines"] == from_ckpt["baselines"]
    for m in SR_METRICS:
        assert from_fp16["model"][m] == pytest.approx(from_ckpt["model"][m], rel=1e-3, abs=1e-3), m


def test_bicubic_only(models):
    result = evaluate(eval_cfg("ckpt_path=bicubic", "data.test=2"))
    check_structure(result, n_scenes=2)
    assert result["model"] == result["baselines"]["bicubic"] and result["meta"]["model"] == "bicubic"


def test_tiles(models):
    # psf=paper: with auto each tile estimates its own PSF, from 8 LR px here
    whole = evaluate(eval_cfg(f"ckpt_path={models['fp16']}", "data.eval_crop_size=null", "psf=paper"))
    tiled = evaluate(
        eval_cfg(f"ckpt_path={models['fp16']}", "data.eval_crop_size=null", "tile=32", "psf=paper")
    )
    check_structure(tiled)
    assert tiled["meta"]["tile"] == 32
    assert tiled["model"]["psnr"] == pytest.approx(whole["model"]["psnr"], abs=1.0)
    # a pointwise model's tiles, blended, give the whole scene's output exactly: the tiling adds nothing
    whole = evaluate(eval_cfg("ckpt_path=bicubic", "data.eval_crop_size=null"))
    tiled = evaluate(eval_cfg("ckpt_path=bicubic", "data.eval_crop_size=null", "tile=32"))
    for m in SR_METRICS:
        assert tiled["model"][m] == pytest.approx(whole["model"][m], rel=1e-5), m


def test_shipped_weights(models, monkeypatch):
    monkeypatch.setattr(checkpoints_model, "WEIGHTS_DIR", models["fp16"].parent)
    result = evaluate(eval_cfg("ckpt_path=shipped"))
    check_structure(result)
    assert result["meta"]["weights"] == str(models["fp16"])
    monkeypatch.setattr(checkpoints_model, "WEIGHTS_DIR", models["fp16"].parent / "none")
    with pytest.raises(
        InputError,
        match=r"no shipped weights for x4: .*sschsr_x4\.safetensors does not exist; pass ckpt_path=",
    ):
        load_models(eval_cfg("ckpt_path=shipped"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["scale=8"], "trained for x4, not x8"),
        (["n_bands=8", "data.source.n_bands=8"], "8 bands"),
        (["scale=3"], "unsupported scale"),
    ],
)
def test_model_that_does_not_fit(models, overrides, message):
    with pytest.raises(InputError, match=message):
        load_models(eval_cfg(f"ckpt_path={models['fp16']}", *overrides))


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore", "COLUMNS": "120"}
    return subprocess.run(
        [str(BIN / "sschsr-eval"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=300
    )


def test_console_script_writes_metrics_json_and_prints_tables(models, tmp_path):
    run_dir = tmp_path / "run"
    res = _run(
        [f"ckpt_path={models['fp16']}", f"hydra.run.dir={run_dir}", *SMOKE_DATA, "device=cpu"], tmp_path
    )
    assert res.returncode == 0, res.stderr
    result = json.loads((run_dir / "metrics.json").read_text())
    check_structure(result)
    assert (
        "sschsr-eval" in result["meta"]["command"]
        and f"ckpt_path={models['fp16']}" in result["meta"]["command"]
    )
    for word in (
        "per scene",
        "mean over 1 scenes",
        "PSNR",
        "SSIM",
        "SAM",
        "ERGAS",
        "SSCHSR",
        "bicubic",
        result["scenes"][0]["name"],
    ):
        assert word in res.stdout, word
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scale=8", "trained for x4"),
        ("tta=3", "tta must be one of"),
        ("flow_refine=-1", "flow_refine=-1: the number"),
        ("back_project=-1", "back_project=-1: the number"),
        ("flow_factor=0", "flow_factor=0: the flow's shrink factor"),
    ],
    ids=["scale", "tta", "flow_refine", "back_project", "flow_factor"],
)
def test_console_script_bad_input_is_one_error_line(override, message, models, tmp_path):
    run_dir = tmp_path / "run"
    res = _run([f"ckpt_path={models['fp16']}", override, f"hydra.run.dir={run_dir}", *SMOKE_DATA], tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (run_dir / "metrics.json").exists()
