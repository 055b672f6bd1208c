"""Progress with an ETA: drawn on a terminal, nothing on a pipe or with --quiet, one summary line at the end."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sschsr import progress
from sschsr.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_counts_its_own_kind_and_estimates_the_rest():
    out = Terminal()
    with Progress(4, "job", unit="pass", stream=out) as p:
        progress.advance("tile")  # another kind: not counted
        assert p.done == 0 and p.eta() is None
        progress.advance("pass", note="pass 1/4")
        assert p.done == 1 and p.eta() is not None and p.eta() >= 0
        assert (
            "job  1/4 passes" in out.getvalue() and "ETA" in out.getvalue() and "pass 1/4" in out.getvalue()
        )
        progress.advance("pass", 10)
        assert p.done == 4 and p.eta() == 0  # never beyond the total
    assert progress.current() is None
    progress.advance("pass")  # outside a progress: nothing happens


def test_progress_draws_nothing_off_a_terminal_or_when_quiet():
    for stream, enabled in ((io.StringIO(), None), (Terminal(), False)):
        with Progress(2, "job", stream=stream, enabled=enabled):
            progress.advance("pass")
        assert stream.getvalue() == ""


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scene")
    rng = np.random.default_rng(0)
    np.save(folder / "lr.npy", rng.random((16, 16, 31), dtype=np.float32))
    Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / "ref.png")
    return folder


def predict(scene: Path, out: Path, stderr, *extra: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "sschsr-predict"
    argv = [str(script), "--lr", str(scene / "lr.npy"), "--ref", str(scene / "ref.png"), "--scale", "4",
            "--out", str(out), "--tta", "2", "--flow-refine", "0", "--back-project", "0", "--psf", "paper", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300, env=env)


def test_predict_shows_progress_on_a_terminal_only(scene, tmp_path):
    main, other = pty.openpty()
    try:
        done = predict(scene, tmp_path / "a.npy", other)
        os.close(other)
        drawn = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(main)
    assert done.returncode == 0
    text = drawn.decode(errors="replace")
    assert "sschsr-predict" in text and "2/2 passes" in text and "ETA" in text

    piped = predict(scene, tmp_path / "b.npy", subprocess.PIPE)
    assert piped.returncode == 0 and "ETA" not in piped.stderr
    summary = piped.stdout.strip().splitlines()
    assert len(summary) == 1 and "2-way self-ensemble" in summary[0] and " s, " in summary[0]

    quiet = predict(scene, tmp_path / "c.npy", subprocess.PIPE, "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "" and len(quiet.stdout.strip().splitlines()) == 1
