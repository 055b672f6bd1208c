"""``sschsr-synth`` end to end: the files of CONTRACTS.md, an independent alignment check, bad input.

The acceptance check here does not use ``alignment_stats``: it reads the written files, warps ``ref.png``
by ``flow.npy`` with its own bilinear sampling (``scipy.ndimage.map_coordinates``), and compares the
luminance of the warped reference with a luminance of ``hr.npy`` (bands weighted by a Gaussian stand-in
for the eye's V(lambda)) by Spearman rank correlation over the valid pixels.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.stats import spearmanr

from sschsr.cli import synth as cli
from sschsr.errors import InputError

SCRIPT = Path(sys.executable).parent / "sschsr-synth"
SAMPLE_FILES = {"hr.npy", "lr.npy", "ref.png", "flow.npy", "valid.npy"}


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` in this process -> (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def run_script(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The installed console script, one thread (the machine is shared)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    return subprocess.run([str(SCRIPT), *argv], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden ones included) with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------
# Successful runs: procedural and CAVE, scales 4 and 8

RUNS = {
    # id: (source, size, scale, seed, num, via the console script?)
    "procedural-x4": ("procedural", 64, 4, 0, 2, False),
    "procedural-x8": ("procedural", 64, 8, 1, 2, True),
    "cave-x4": ("cave", 128, 4, 0, 2, False),
    "cave-x8": ("cave", 128, 8, 1, 2, False),
}


@pytest.fixture(scope="module", params=list(RUNS))
def synth_run(request, tmp_path_factory) -> dict:
    source, size, scale, seed, num, via_script = RUNS[request.param]
    if source == "cave":
        cave = request.getfixturevalue("shared_data") / "cave"
        if not cave.is_dir():
            pytest.skip(f"no CAVE scenes at {cave}")
        source = str(cave)
    work = tmp_path_factory.mktemp(request.param)
    out = work / "pairs"
    argv = [
        "--source",
        source,
        "--out",
        str(out),
        "--num",
        str(num),
        "--size",
        str(size),
        "--scale",
        str(scale),
        "--seed",
        str(seed),
    ]
    if via_script:
        res = run_script(argv, work)
        rc, stdout, stderr = res.returncode, res.stdout, res.stderr
    else:
        rc, stdout, stderr = run_main(argv)
    assert rc == 0, stderr
    assert stderr == ""
    return {
        "out": out,
        "work": work,
        "size": size,
        "scale": scale,
        "num": num,
        "seed": seed,
        "stdout": stdout,
    }


def samples(run: dict) -> list[Path]:
    return sorted(p for p in run["out"].iterdir() if p.is_dir())


def test_exactly_the_contract_files(synth_run):
    out = synth_run["out"]
    dirs = samples(synth_run)
    assert len(dirs) == synth_run["num"]
    assert [d.name[:5] for d in dirs] == [f"{i:04d}_" for i in range(synth_run["num"])]
    # OUT holds the sample folders and the index, nothing else (no temporary leftovers, here or beside it)
    assert {p.name for p in out.iterdir()} == {d.name for d in dirs} | {"index.json"}
    assert [p.name for p in synth_run["work"].iterdir()] == ["pairs"]
    for d in dirs:
        assert {p.name for p in d.iterdir()} == SAMPLE_FILES, d
    index = json.loads((out / "index.json").read_text())
    assert [s["id"] for s in index["samples"]] == [d.name for d in dirs]
    assert index["size"] == synth_run["size"] and index["scale"] == synth_run["scale"]
    assert f"wrote {synth_run['num']} samples" in synth_run["stdout"]


def test_shapes_dtypes_ranges(synth_run):
    S, s = synth_run["size"], synth_run["scale"]
    for d in samples(synth_run):
        hr = np.load(d / "hr.npy")
        assert hr.ndim == 3 and hr.shape[:2] == (S, S) and hr.dtype == np.float32
        C = hr.shape[2]
        assert C == 31  # procedural default and CAVE
        assert np.isfinite(hr).all() and hr.min() >= 0 and hr.max() <= 1 and hr.std() > 0.01

        lr = np.load(d / "lr.npy")
        assert lr.shape == (S // s, S // s, C) and lr.dtype == np.float32 and np.isfinite(lr).all()
        assert lr.min() >= -1e-6 and lr.max() <= 1 + 1e-6
        # the degraded source: hr blurred by a Gaussian of sigma 3 (scipy, independently), every s-th pixel
        expected = gaussian_filter(hr, sigma=(3.0, 3.0, 0.0), mode="reflect")[::s, ::s]
        assert np.corrcoef(lr.ravel(), expected.ravel())[0, 1] > 0.95

        with Image.open(d / "ref.png") as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (S, S)
            ref = np.asarray(im)
        assert ref.shape == (S, S, 3) and ref.dtype == np.uint8 and ref.std() > 2

        flow = np.load(d / "flow.npy")
        assert flow.shape == (2, S, S) and flow.dtype == np.float32 and np.isfinite(flow).all()
        valid = np.load(d / "valid.npy")
        assert valid.shape == (S, S) and valid.dtype == np.bool_
        # valid: p + flow lies inside ref (x first, then y)
        yy, xx = np.mgrid[0:S, 0:S]
        x, y = xx + flow[0], yy + flow[1]
        assert (x[valid] >= -1e-3).all() and (x[valid] <= S - 1 + 1e-3).all()
        assert (y[valid] >= -1e-3).all() and (y[valid] <= S - 1 + 1e-3).all()


def luminance_hsi(hr: np.ndarray) -> np.ndarray:
    """Bands (400-700 nm, evenly) weighted by a Gaussian approximation of the photopic V(lambda)."""
    wl = np.linspace(400.0, 700.0, hr.shape[-1])
    v = np.exp(-0.5 * ((wl - 555.0) / 45.0) ** 2)
    return hr.astype(np.float64) @ (v / v.sum())


def luminance_rgb(rgb: np.ndarray) -> np.ndarray:
    """Rec. 709 luminance of an 8-bit-encoded image in [0, 1], linearised with gamma 2.2."""
    return (rgb**2.2) @ np.array([0.2126, 0.7152, 0.0722])


def warp_bilinear(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``out[p] = img[p + flow[p]]``, bilinear: ``img`` (H, W, 3), ``flow`` (2, H, W) x then y."""
    h, w = flow.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = np.stack([yy + flow[1], xx + flow[0]])
    return np.stack(
        [map_coordinates(img[..., c], coords, order=1, mode="nearest") for c in range(img.shape[-1])], axis=-1
    )


def test_acceptance_warped_reference_matches_source(synth_run):
    for d in samples(synth_run):
        hr = np.load(d / "hr.npy")
        flow = np.load(d / "flow.npy").astype(np.float64)
        valid = np.load(d / "valid.npy")
        with Image.open(d / "ref.png") as im:
            ref = np.asarray(im.convert("RGB"), dtype=np.float64) / 255.0

        assert valid.mean() >= 0.5, d
        assert np.hypot(flow[0], flow[1]).mean() >= 2.0, d
        src = luminance_hsi(hr)[valid]
        rho_warp = spearmanr(luminance_rgb(warp_bilinear(ref, flow))[valid], src)[0]
        rho_nowarp = spearmanr(luminance_rgb(ref)[valid], src)[0]
        assert rho_warp >= 0.9, (d, rho_warp)
        # clearly better than no warp: the rank disagreement at least halves (a smooth crop of a CAVE
        # scene can correlate at 0.99 unwarped; then 0.995 or more is asked)
        assert 1 - rho_warp <= 0.5 * (1 - rho_nowarp), (d, rho_warp, rho_nowarp)


def test_a_sample_does_not_depend_on_num(synth_run, tmp_path):
    if synth_run["size"] != 64:
        pytest.skip("checked on the procedural runs")
    out = tmp_path / "one"
    rc, _, err = run_main(
        [
            "--out",
            str(out),
            "--num",
            "1",
            "--size",
            "64",
            "--scale",
            str(synth_run["scale"]),
            "--seed",
            str(synth_run["seed"]),
        ]
    )
    assert rc == 0, err
    first = samples(synth_run)[0]
    for name in SAMPLE_FILES - {"ref.png"}:
        assert np.array_equal(np.load(out / first.name / name), np.load(first / name)), name
    assert (out / first.name / "ref.png").read_bytes() == (first / "ref.png").read_bytes()


# ----------------------------------------------------------------------------------------------------
# Bad input: one `error:` line, exit status 2, nothing written


def assert_one_error_line(rc: int, stderr: str, *words: str) -> None:
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


BAD = {
    "missing source folder": (["--source", "{tmp}/no_such_folder"], ["no_such_folder"]),
    "size not divisible by scale": (["--size", "64", "--scale", "5"], ["divisible"]),
    "size not divisible by scale 3": (["--size", "100", "--scale", "3"], ["--scale 3"]),
    "scale zero": (["--scale", "0"], ["--scale"]),
    "scale not a number": (["--scale", "four"], ["--scale"]),
    "size too small": (["--size", "8", "--scale", "4"], ["--size"]),
    "num zero": (["--num", "0"], ["--num"]),
    "negative seed": (["--seed", "-3"], ["--seed"]),
    "unknown option": (["--colour", "red"], ["--colour"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_arguments(case, tmp_path):
    extra, words = BAD[case]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    out = tmp_path / "sub" / "pairs"
    argv = ["--out", str(out), "--num", "1", "--size", "64"]
    rc, _, err = run_main(argv + extra)  # later options win over the defaults given first
    assert_one_error_line(rc, err, *words)
    assert list(tmp_path.iterdir()) == []  # not even the parent folder


def test_missing_out_is_an_error(tmp_path):
    rc, _, err = run_main(["--size", "64"])
    assert_one_error_line(rc, err, "--out")


def test_out_is_a_file(tmp_path):
    f = tmp_path / "pairs"
    f.write_text("mine")
    rc, _, err = run_main(["--out", str(f), "--num", "1", "--size", "64"])
    assert_one_error_line(rc, err, "not a folder")
    assert tree(tmp_path) == {"pairs": b"mine"}


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "pairs"
    assert run_main(["--out", str(out), "--num", "2", "--size", "64", "--seed", "3"])[0] == 0
    before = tree(tmp_path)
    rc, _, err = run_main(["--out", str(out), "--num", "1", "--size", "64", "--seed", "4"])
    assert_one_error_line(rc, err, "--overwrite")
    assert tree(tmp_path) == before

    # with --overwrite an earlier output is replaced as a whole: stale samples do not linger
    rc, _, err = run_main(["--out", str(out), "--num", "1", "--size", "64", "--seed", "4", "--overwrite"])
    assert rc == 0, err
    assert [p.name for p in tmp_path.iterdir()] == ["pairs"]  # no hidden old or temporary folder left
    assert sorted(p.name for p in out.iterdir()) == ["0000_procedural", "index.json"]
    assert json.loads((out / "index.json").read_text())["seed"] == 4
    assert (out / "0000_procedural" / "hr.npy").read_bytes() != before["pairs/0000_procedural/hr.npy"]


def test_overwrite_refuses_a_folder_that_is_not_an_earlier_output(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"not yours")
    for extra in ([], ["--overwrite"]):
        rc, _, err = run_main(["--out", str(out), "--num", "1", "--size", "64", *extra])
        assert_one_error_line(rc, err, str(out))
        assert tree(tmp_path) == {"photos/holiday.jpg": b"not yours"}


def test_an_empty_existing_folder_is_used(tmp_path):
    out = tmp_path / "pairs"
    out.mkdir()
    rc, _, err = run_main(["--out", str(out), "--num", "1", "--size", "64"])
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["0000_procedural", "index.json"]


@pytest.mark.parametrize("error", [InputError("sample 1: something is wrong"), KeyboardInterrupt()])
def test_a_failure_half_way_leaves_nothing(error, tmp_path, monkeypatch):
    # the first sample is written, the second fails: the run must not leave the first one behind
    written = []
    real = cli._write_sample

    def write_then_fail(folder, *a, **k):
        if written:
            raise error
        written.append(folder)
        real(folder, *a, **k)

    monkeypatch.setattr(cli, "_write_sample", write_then_fail)
    out = tmp_path / "new" / "pairs"
    argv = ["--out", str(out), "--num", "3", "--size", "64"]
    if isinstance(error, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt), contextlib.redirect_stdout(io.StringIO()):
            cli.main(argv)
    else:
        rc, _, err = run_main(argv)
        assert_one_error_line(rc, err, "something is wrong")
    assert written  # the first sample was really written (to the temporary folder) before the failure
    assert list(tmp_path.iterdir()) == []


def test_cave_crop_larger_than_the_scenes(shared_data, tmp_path):
    cave = shared_data / "cave"
    if not cave.is_dir():
        pytest.skip(f"no CAVE scenes at {cave}")
    rc, _, err = run_main(
        ["--source", str(cave), "--out", str(tmp_path / "pairs"), "--num", "1", "--size", "1024"]
    )
    assert_one_error_line(rc, err, "1024")
    assert list(tmp_path.iterdir()) == []


def test_empty_source_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    rc, _, err = run_main(
        ["--source", str(tmp_path / "empty"), "--out", str(tmp_path / "pairs"), "--num", "1", "--size", "64"]
    )
    assert_one_error_line(rc, err, "no cubes")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"]


def test_console_script_reports_one_line(tmp_path):
    res = run_script(["--source", str(tmp_path / "missing"), "--out", "pairs", "--size", "64"], tmp_path)
    assert_one_error_line(res.returncode, res.stderr, "missing")
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []
