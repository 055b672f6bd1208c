"""The console scripts: installed, helpful, and failing with one `error:` line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_MODE": "offline"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("script", ["sschsr-train", "sschsr-eval", "sschsr-predict", "sschsr-synth"])
def test_installed_with_help(script, tmp_path):
    res = run([str(BIN / script), "--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip()


def test_predict_missing_input_is_one_error_line(tmp_path):
    res = run(
        [str(BIN / "sschsr-predict"), "--lr", "a.npy", "--ref", "b.png", "--scale", "4", "--out", "o.npy"],
        tmp_path,
    )
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.npy").exists()


def test_eval_missing_checkpoint_is_an_error(tmp_path):
    res = run([str(BIN / "sschsr-eval"), "ckpt_path=x.ckpt"], tmp_path)
    assert res.returncode == 2 and res.stderr.startswith("error: ")


def test_train_without_model_is_a_clear_error(tmp_path):
    res = run([str(BIN / "sschsr-train"), f"hydra.run.dir={tmp_path / 'run'}", "logger=none"], tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "model" in res.stderr


def test_python_dash_m_train_is_the_same(tmp_path):
    res = run([sys.executable, "-m", "sschsr.train", "--help"], tmp_path)
    assert res.returncode == 0 and "experiment" in res.stdout
