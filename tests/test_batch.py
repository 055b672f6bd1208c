"""``sschsr-predict --batch``: many scenes through Lightning's Trainer.predict, equal to single runs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAST = ["--scale", "4", "--tta", "2", "--flow-refine", "0", "--back-project", "0", "--psf", "paper"]


@pytest.fixture
def scenes(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = ["lr,ref"]
    for i in range(4):
        np.save(tmp_path / f"s{i}.npy", rng.random((16, 16, 31), dtype=np.float32))
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(tmp_path / f"r{i}.png")
        rows.append(f"s{i}.npy,r{i}.png")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "bad.csv").write_text("\n".join([*rows, "missing.npy,r0.png"]) + "\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def predict(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "sschsr-predict"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def summary(folder: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((folder / "summary.csv").open()))


def check_equal_to_single_runs(scenes: Path) -> None:
    for i in range(4):
        single = scenes / f"single{i}.npy"
        done = predict("--lr", f"s{i}.npy", "--ref", f"r{i}.png", "--out", str(single), *FAST, cwd=scenes)
        assert done.returncode == 0, done.stderr
        np.testing.assert_allclose(np.load(scenes / "out" / f"s{i}.npy"), np.load(single), atol=1e-4, rtol=0)


def test_batch_in_one_process_skips_on_rerun_and_reports_a_bad_row(scenes):
    done = predict("--batch", "list.csv", "--out-dir", "out", *FAST, cwd=scenes)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in summary(scenes / "out")] == ["written"] * 4
    check_equal_to_single_runs(scenes)

    again = predict("--batch", "bad.csv", "--out-dir", "out", *FAST, cwd=scenes)
    assert again.returncode == 2
    rows = summary(scenes / "out")
    assert [r["status"] for r in rows] == ["skipped"] * 4 + ["failed"]
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert (
        errors == [f"error: row 5 (missing.npy): {rows[4]['message']}"]
        and "missing.npy" in rows[4]["message"]
    )


def test_batch_flags_are_checked(scenes):
    for args, message in (
        (["--batch", "list.csv"], "--batch needs --out-dir"),
        (["--batch", "list.csv", "--out-dir", "out", "--lr", "s0.npy"], "give one or the other"),
        (["--batch", "none.csv", "--out-dir", "out"], "cannot read it"),
        (["--batch", "list.csv", "--out-dir", "nowhere"], "no such folder"),
        ([], "required: --lr, --ref, --out"),
    ):
        done = predict(*args, *FAST, cwd=scenes)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (args, done.stderr)


@pytest.mark.slow
def test_batch_over_two_processes_equals_single_runs(scenes):
    """--devices 2: Lightning's launcher (DDP on CPU) splits the rows; each output as a single run makes it."""
    done = predict("--batch", "list.csv", "--out-dir", "out", "--devices", "2", *FAST, cwd=scenes)
    assert done.returncode == 0, done.stderr
    assert "on 2 process(es)" in done.stdout
    assert [r["status"] for r in summary(scenes / "out")] == ["written"] * 4
    check_equal_to_single_runs(scenes)
