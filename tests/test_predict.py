"""``sschsr-predict`` and the inference helpers: a real run on small inputs, every input format of
CONTRACTS.md, GeoTIFF georeferencing, tiling, intermediates, --overwrite, atomic writes, every bad input (one
``error:`` line, exit 2, nothing written), and the shipped-weights mechanism (float16 export of a training
checkpoint, loading in float32, the default weights of sschsr-predict)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import helpers
import sschsr.checkpoints
import sschsr.checkpoints.model as checkpoints_model
from sschsr.checkpoints import (
    MODEL_KEY,
    build_module,
    export_weights,
    load_model,
    module_spec,
    save_model,
    shipped_weights,
)
from sschsr.cli.predict import main
from sschsr.data.io import GeoInfo, read_rgb, write_geotiff, write_png
from sschsr.errors import InputError
from sschsr.inference import check_reference, predict_tiled, prepare_inputs, resample
from sschsr.models.baselines import Bicubic
from sschsr.models.flow import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.models.warpnet import WarpNet

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
BANDS, LR_SIZE, SCALE = 31, 16, 4
HR_SIZE = LR_SIZE * SCALE


# ---------------------------------------------------------------------------------------------- fixtures


def tiny_sschsr() -> SSCHSR:
    """A small random SSCHSR whose every weight matters: the parameters initialised to zero (the output
    layers, so that an untrained network returns ``lr_up`` and ``ref_warp0``) are drawn at random too,
    as after training."""
    torch.manual_seed(0)
    net = SSCHSR(BANDS, "lite", flow_net=RAFT("small", iters=2), warpnet=WarpNet(), flow_iters=2)
    return helpers.randomise_zero_parameters(net, 0.05)


def lightning_checkpoint(net: nn.Module, path: Path, scale: int = SCALE) -> Path:
    """What ``sschsr-train experiment=full`` saves, for ``net``: the SRModule's state dict (``net.*``) and
    the model info its ``on_save_checkpoint`` hook adds."""
    from sschsr.lit.sr import SRModule

    module = SRModule(net, scale=scale)
    ckpt = {"state_dict": module.state_dict(), "global_step": 3, "epoch": 0}
    module.on_save_checkpoint(ckpt)
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Model files of a tiny random SSCHSR: float32 .safetensors, a training .ckpt, its float16 export;
    and bicubic."""
    root = tmp_path_factory.mktemp("models")
    net = tiny_sschsr()
    files = {"sschsr": save_model(net, root / "sschsr_x4.safetensors", scale=SCALE)}
    files["bicubic"] = save_model(Bicubic(BANDS), root / "bicubic_x4.safetensors", scale=SCALE)
    files["ckpt"] = lightning_checkpoint(net, root / "sschsr.ckpt")
    files["fp16"] = export_weights(files["ckpt"], root / "fp16" / "sschsr_x4.safetensors", scale=SCALE)
    return files


def smooth_cube(h: int, w: int, c: int, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """``(h, w, c)`` float32 in [0.05, 0.95], smooth in space and along the spectrum, plus Gaussian noise of
    standard deviation ``noise``."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    bands = np.linspace(0, 1, c)
    a, b = g.uniform(1, 3, size=2)
    cube = 0.5 + 0.3 * np.sin(a * 3 * x[..., None] + bands) * np.cos(b * 3 * y[..., None] - bands)
    return np.clip(cube + noise * g.standard_normal((h, w, c)), 0.05, 0.95).astype(np.float32)


def make_inputs(folder: Path) -> dict[str, Path]:
    """One small scene for ``sschsr-predict`` in ``folder``: ``lr`` (.npy), ``ref`` (.png), ``out`` (in an
    empty ``out/``) and the folder itself as ``dir``."""
    lr = folder / "lr.npy"
    np.save(lr, smooth_cube(LR_SIZE, LR_SIZE, BANDS))
    ref = folder / "ref.png"
    write_png(ref, smooth_cube(HR_SIZE, HR_SIZE, 3, seed=1))
    (folder / "out").mkdir()
    return {"lr": lr, "ref": ref, "out": folder / "out" / "sr.npy", "dir": folder}


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    return make_inputs(tmp_path)


def argv(inputs: dict, ckpt: Path | None, *extra: str, **over) -> list[str]:
    a = {"lr": inputs["lr"], "ref": inputs["ref"], "out": inputs["out"], "scale": SCALE, **over}
    args = ["--lr", str(a["lr"]), "--ref", str(a["ref"]), "--scale", str(a["scale"]), "--out", str(a["out"])]
    if ckpt is not None:
        args += ["--ckpt", str(ckpt)]
    return [*args, "--device", "cpu", *extra]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ------------------------------------------------------------------------------------------ good runs


class TestRun:
    def test_npy_output(self, inputs, models, capsys):
        assert main(argv(inputs, models["sschsr"])) == 0
        sr = np.load(inputs["out"])
        assert sr.shape == (HR_SIZE, HR_SIZE, BANDS) and sr.dtype == np.float32 and np.isfinite(sr).all()
        captured = capsys.readouterr()
        assert captured.out.startswith(f"wrote {inputs['out']}")
        # what the test-time steps assumed of the LR data, on stderr: the grid and the estimated PSF
        assert captured.err.startswith("LR grid: paper (the default")
        assert (
            "PSF estimated from the reference:" in captured.err and "back-projection's PSF:" in captured.err
        )
        assert main([*argv(inputs, models["sschsr"]), "--overwrite", "--quiet"]) == 0
        assert capsys.readouterr().err == ""
        assert [p.name for p in inputs["out"].parent.iterdir()] == ["sr.npy"]  # no temporary files left

    def test_lightning_checkpoint_gives_the_same_result(self, inputs, models):
        assert main(argv(inputs, models["sschsr"])) == 0
        a = np.load(inputs["out"])
        assert main(argv(inputs, models["ckpt"], "--overwrite")) == 0
        np.testing.assert_array_equal(np.load(inputs["out"]), a)

    def test_bicubic_is_bicubic_in_the_input_range(self, inputs, models):
        # 16-bit codes: the reader divides by 65535, the output is multiplied back
        codes = (smooth_cube(LR_SIZE, LR_SIZE, BANDS) * 65535).astype(np.uint16)
        np.save(inputs["lr"], codes)
        assert main(argv(inputs, models["bicubic"])) == 0
        sr = np.load(inputs["out"])
        lr = torch.from_numpy(codes.astype(np.float32).transpose(2, 0, 1))[None]
        expected = (
            torch.nn.functional.interpolate(lr, scale_factor=SCALE, mode="bicubic")[0]
            .numpy()
            .transpose(1, 2, 0)
        )
        np.testing.assert_allclose(sr, expected, rtol=1e-5, atol=0.05)

    def test_chw_layout(self, inputs, models):
        np.save(inputs["lr"], smooth_cube(LR_SIZE, LR_SIZE, BANDS).transpose(2, 0, 1))
        assert main(argv(inputs, models["bicubic"], "--layout", "chw")) == 0
        assert np.load(inputs["out"]).shape == (HR_SIZE, HR_SIZE, BANDS)

    def test_geotiff_keeps_georeferencing(self, inputs, models):
        import rasterio
        from affine import Affine
        from rasterio.crs import CRS

        data = smooth_cube(LR_SIZE, LR_SIZE, BANDS) * 10000  # reflectance x 10000, float
        data[0, 0, :] = -9999.0  # one nodata pixel
        geo = GeoInfo(
            crs=CRS.from_epsg(32633),
            transform=Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4000000.0),
            nodata=-9999.0,
            band_descriptions=tuple(f"band {i}" for i in range(BANDS)),
        )
        lr = inputs["dir"] / "lr.tif"
        write_geotiff(lr, data, geo, wavelengths=np.linspace(400, 700, BANDS))
        out = inputs["dir"] / "sr.tif"
        assert main(argv(inputs, models["bicubic"], lr=lr, out=out)) == 0
        with rasterio.open(out) as src:
            assert src.crs == geo.crs
            assert src.transform == Affine(7.5, 0.0, 500000.0, 0.0, -7.5, 4000000.0)  # same origin, pixel / 4
            assert (src.height, src.width, src.count) == (HR_SIZE, HR_SIZE, BANDS)
            assert src.dtypes[0] == "float32" and src.nodata == -9999.0
            assert src.descriptions == geo.band_descriptions
            sr = src.read()
        assert (sr[:, :SCALE, :SCALE] == -9999.0).all()  # the nodata pixel's footprint
        valid = sr[:, SCALE:, SCALE:]
        assert 300 < valid.min() and valid.max() < 9700  # the input's value range, not [0, 1]

    def test_tiled_equals_untiled_for_a_pixelwise_model(self, inputs, models):
        assert main(argv(inputs, models["bicubic"])) == 0
        whole = np.load(inputs["out"])
        assert main(argv(inputs, models["bicubic"], "--tile", "24", "--overwrite")) == 0
        np.testing.assert_allclose(np.load(inputs["out"]), whole, rtol=0, atol=1e-6)

    def test_tiled_sschsr(self, inputs, models):
        assert main(argv(inputs, models["sschsr"])) == 0
        whole = np.load(inputs["out"])
        assert main(argv(inputs, models["sschsr"], "--tile", "32", "--overwrite")) == 0
        tiled = np.load(inputs["out"])
        assert tiled.shape == whole.shape and np.isfinite(tiled).all()
        assert np.abs(tiled - whole).mean() < 0.1 * np.abs(whole).mean()  # same result up to tile borders

    def test_tta(self, inputs, models):
        """The default self-ensembles the network (four passes); --tta 1 is the network alone, --tta 8 all
        eight transforms."""
        inter = inputs["dir"] / "inter"
        flows = {}
        for n in ("1", "4", "8"):
            assert (
                main(
                    argv(
                        inputs,
                        models["sschsr"],
                        "--tta",
                        n,
                        "--save-intermediates",
                        str(inter),
                        "--overwrite",
                    )
                )
                == 0
            )
            flows[n] = np.load(inter / "flow.npy")
        assert main(argv(inputs, models["sschsr"], "--save-intermediates", str(inter), "--overwrite")) == 0
        np.testing.assert_array_equal(np.load(inter / "flow.npy"), flows["4"])
        assert np.abs(flows["4"] - flows["1"]).max() > 1e-3 and np.abs(flows["4"] - flows["8"]).max() > 1e-3

    def test_flow_refine(self, inputs, models):
        """The flow is refined by default; --flow-refine 0 gives the flow network's own, --flow-refine N
        another refinement."""
        inter = inputs["dir"] / "inter"
        flows = {}
        for steps in ("0", "20", None):
            extra = ("--flow-refine", steps) if steps else ()
            args = argv(inputs, models["sschsr"], "--tta", "1", *extra, "--save-intermediates", str(inter))
            assert main([*args, "--overwrite"]) == 0
            flows[steps] = np.load(inter / "flow.npy")
        assert np.abs(flows[None] - flows["0"]).max() > 1e-3
        assert np.abs(flows[None] - flows["20"]).max() > 1e-4 and np.isfinite(flows[None]).all()

    def test_back_project(self, inputs, models):
        """--back-project N makes the output agree with the LR input: for noise-free LR data, seen through the
        paper's degradation it is the input (up to the unconverged part), and so by default; with
        --back-project 0 the network's output is left as it is, which is not. For noisy LR data (the
        fixture's) it moves towards the input without reproducing its noise."""
        from sschsr.ops.degrade import low_pass, upsample

        mismatch: dict[str, dict[str | None, float]] = {}
        for data in ("noisy", "clean"):
            if data == "clean":
                np.save(inputs["lr"], smooth_cube(LR_SIZE, LR_SIZE, BANDS, noise=0.0))
            lr = torch.from_numpy(np.load(inputs["lr"]).transpose(2, 0, 1))[None]
            for steps in ("0", "20", None):
                extra = ("--back-project", steps) if steps else ()
                psf = ("--psf", "paper")  # the fixture's data are the paper's (auto: test_psf_auto)
                assert main(argv(inputs, models["sschsr"], "--tta", "1", *extra, *psf, "--overwrite")) == 0
                sr = torch.from_numpy(np.load(inputs["out"]).transpose(2, 0, 1))[None]
                error = (low_pass(sr, SCALE) - upsample(lr, SCALE)).square().mean().sqrt().item()
                mismatch.setdefault(data, {})[steps] = error
        assert mismatch["clean"]["20"] < 0.1 * mismatch["clean"]["0"]
        assert 0.1 * mismatch["noisy"]["0"] < mismatch["noisy"]["20"] < mismatch["noisy"]["0"]
        for data in ("noisy", "clean"):
            assert mismatch[data][None] == mismatch[data]["20"]  # on by default, at every scale

    def test_lr_grid(self, inputs, models):
        """--lr-grid block moves the LR side by the paper's shift before the network: another result, the
        same shape; for the paper's grid (the default) nothing changes."""
        results = {}
        for grid in ("paper", "block"):
            assert main(argv(inputs, models["sschsr"], "--tta", "1", "--lr-grid", grid, "--overwrite")) == 0
            results[grid] = np.load(inputs["out"])
        assert main(argv(inputs, models["sschsr"], "--tta", "1", "--overwrite")) == 0
        np.testing.assert_array_equal(np.load(inputs["out"]), results["paper"])
        assert results["block"].shape == results["paper"].shape and np.isfinite(results["block"]).all()
        assert np.abs(results["block"] - results["paper"]).max() > 1e-3

    def test_intermediates(self, inputs, models):
        from PIL import Image

        inter = inputs["dir"] / "inter"
        assert main(argv(inputs, models["sschsr"], "--save-intermediates", str(inter))) == 0
        flow = np.load(inter / "flow.npy")
        assert flow.shape == (2, HR_SIZE, HR_SIZE) and flow.dtype == np.float32
        for name in ("ref_warp.png", "ref_refined.png"):
            with Image.open(inter / name) as im:
                assert im.size == (HR_SIZE, HR_SIZE) and im.mode == "RGB"
        # again: existing intermediates are kept unless --overwrite
        assert main(argv(inputs, models["sschsr"], "--save-intermediates", str(inter), "--overwrite")) == 0

    def test_overwrite(self, inputs, models, capsys):
        inputs["out"].write_bytes(b"keep me")
        assert main(argv(inputs, models["bicubic"])) == 2
        assert inputs["out"].read_bytes() == b"keep me"
        assert "--overwrite" in capsys.readouterr().err
        assert main(argv(inputs, models["bicubic"], "--overwrite")) == 0
        assert np.load(inputs["out"]).shape == (HR_SIZE, HR_SIZE, BANDS)


# ------------------------------------------------------------------------------------------ bad input


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def _png(path: Path, h: int, w: int) -> Path:
    write_png(path, np.full((h, w, 3), 0.5, dtype=np.float32))
    return path


def _nan_cube() -> np.ndarray:
    cube = smooth_cube(LR_SIZE, LR_SIZE, BANDS)
    cube[3, 4, 5] = np.nan
    return cube


def _inf_cube() -> np.ndarray:
    cube = smooth_cube(LR_SIZE, LR_SIZE, BANDS)
    cube[3, 4, 5] = np.inf
    return cube


def _nan_ref_tiff(path: Path) -> Path:
    import rasterio

    rgb = np.full((3, HR_SIZE, HR_SIZE), 0.5, np.float32)
    rgb[1, 2, 3] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", width=HR_SIZE, height=HR_SIZE, count=3, dtype="float32"
        ) as dst:
            dst.write(rgb)
    return path


def _no_description(path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    return path


def _stage1_ckpt(path: Path) -> Path:
    torch.save({"state_dict": {}, "flow_net_config": {"preset": "small"}}, path)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


# name -> (how to make the arguments from (inputs, models, tmp_path), a word the message must contain)
BAD_INPUTS = {
    "empty LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "empty.npy", b"")), "empty"),
    "corrupt npz": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "bad.npz", b"PK\x03\x04garbage")),
        "cannot read",
    ),
    "corrupt mat": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "bad.mat", b"MATLAB 5.0 garbage")),
        "cannot read",
    ),
    "corrupt GeoTIFF": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "bad.tif", b"II*\x00garbage")),
        "cannot read",
    ),
    "LR folder without a cube": (lambda i, m, t: argv(i, m["sschsr"], lr=_folder(t / "scene")), "CAVE"),
    "NaN in npz": (
        lambda i, m, t: argv(
            i, m["sschsr"], lr=(np.savez(t / "nan.npz", cube=_nan_cube()), t / "nan.npz")[1]
        ),
        "NaN",
    ),
    "corrupt JPEG REF": (
        lambda i, m, t: argv(i, m["sschsr"], ref=_write(t / "bad.jpg", b"\xff\xd8\xffgarbage")),
        "cannot read",
    ),
    "NaN in REF": (lambda i, m, t: argv(i, m["sschsr"], ref=_nan_ref_tiff(t / "nan.tif")), "NaN"),
    "REF too small, intermediates": (
        lambda i, m, t: argv(
            i, m["sschsr"], "--save-intermediates", str(t / "inter"), ref=_png(t / "small.png", 8, 8)
        ),
        "smaller",
    ),
    "REF taller": (lambda i, m, t: argv(i, m["sschsr"], ref=_png(t / "tall.png", 96, 64)), "aspect ratio"),
    "scale 2": (lambda i, m, t: argv(i, m["sschsr"], scale=2), "unsupported scale"),
    "negative --flow-refine": (
        lambda i, m, t: argv(i, m["sschsr"], "--flow-refine", "-1"),
        "--flow-refine -1",
    ),
    "--flow-factor 0": (
        lambda i, m, t: argv(i, m["sschsr"], "--flow-factor", "0"),
        "--flow-factor 0: the flow's shrink factor",
    ),
    "negative --back-project": (
        lambda i, m, t: argv(i, m["sschsr"], "--back-project", "-2"),
        "--back-project -2",
    ),
    "scale 16 not trained": (lambda i, m, t: argv(i, m["fp16"], scale=16), "trained for x4"),
    "stage-1 ckpt": (lambda i, m, t: argv(i, _stage1_ckpt(t / "flow.ckpt")), "stage-1"),
    "safetensors without description": (
        lambda i, m, t: argv(i, _no_description(t / "w.safetensors")),
        "no model description",
    ),
    "intermediates path is a file": (
        lambda i, m, t: argv(i, m["sschsr"], "--save-intermediates", str(_write(t / "file", b"x"))),
        "not a folder",
    ),
    "intermediates exist": (
        lambda i, m, t: argv(
            i,
            m["sschsr"],
            "--save-intermediates",
            str(_write(_folder(t / "inter") / "flow.npy", b"x").parent),
        ),
        "--overwrite",
    ),
    "OUT is a folder": (lambda i, m, t: argv(i, m["sschsr"], out=_folder(t / "sr.npy")), "is a folder"),
    "missing LR": (lambda i, m, t: argv(i, m["sschsr"], lr=t / "nope.npy"), "no such file"),
    "corrupt LR": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "bad.npy", b"\x93NUMPY garbage")),
        "cannot read",
    ),
    "unsupported LR format": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "lr.txt", b"1 2 3")),
        "unsupported",
    ),
    "NaN in LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "nan.npy", _nan_cube())), "NaN"),
    "Inf in LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "inf.npy", _inf_cube())), "Inf"),
    "band count": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "b30.npy", smooth_cube(LR_SIZE, LR_SIZE, 30))),
        "30 bands",
    ),
    "2-D LR": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "flat.npy", np.zeros((16, 16), np.float32))),
        "3-D",
    ),
    "missing REF": (lambda i, m, t: argv(i, m["sschsr"], ref=t / "nope.png"), "no such file"),
    "corrupt REF": (
        lambda i, m, t: argv(i, m["sschsr"], ref=_write(t / "bad.png", b"\x89PNG\r\n\x1a\ngarbage")),
        "cannot read",
    ),
    "unsupported REF format": (
        lambda i, m, t: argv(i, m["sschsr"], ref=_write(t / "ref.gif", b"GIF89a")),
        "unsupported",
    ),
    "REF too small": (lambda i, m, t: argv(i, m["sschsr"], ref=_png(t / "small.png", 8, 8)), "smaller"),
    "REF aspect ratio": (
        lambda i, m, t: argv(i, m["sschsr"], ref=_png(t / "wide.png", 64, 80)),
        "aspect ratio",
    ),
    "scale not 4/8/16": (lambda i, m, t: argv(i, m["sschsr"], scale=3), "unsupported scale"),
    "tta not 1/2/4/8": (lambda i, m, t: argv(i, m["sschsr"], "--tta", "3"), "invalid choice"),
    "unknown LR grid": (lambda i, m, t: argv(i, m["sschsr"], "--lr-grid", "centre"), "invalid choice"),
    "scale not trained": (lambda i, m, t: argv(i, m["sschsr"], scale=8), "trained for x4"),
    "OUT exists": (lambda i, m, t: argv(i, m["sschsr"], out=_write(t / "exists.npy", b"old")), "--overwrite"),
    "OUT extension": (lambda i, m, t: argv(i, m["sschsr"], out=t / "sr.png"), "unsupported output"),
    "OUT folder missing": (lambda i, m, t: argv(i, m["sschsr"], out=t / "no" / "sr.npy"), "does not exist"),
    "missing ckpt": (lambda i, m, t: argv(i, t / "nope.ckpt"), "not found"),
    "corrupt ckpt": (lambda i, m, t: argv(i, _write(t / "bad.ckpt", b"not a checkpoint")), "not a readable"),
    "corrupt safetensors": (
        lambda i, m, t: argv(i, _write(t / "bad.safetensors", b"\x00" * 16)),
        "safetensors",
    ),
    "unsupported ckpt": (lambda i, m, t: argv(i, _write(t / "model.onnx", b"x")), "unsupported model file"),
    "tile too small": (lambda i, m, t: argv(i, m["sschsr"], "--tile", "4"), "tile"),
    "intermediates without alignment": (
        lambda i, m, t: argv(i, m["bicubic"], "--save-intermediates", str(t / "inter")),
        "no flow",
    ),
    "bad argument": (lambda i, m, t: argv(i, m["sschsr"], scale="four"), "--scale"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input(case, inputs, models, tmp_path, capsys):
    make, word = BAD_INPUTS[case]
    args = make(inputs, models, tmp_path)
    out = Path(args[args.index("--out") + 1])
    before = listing(tmp_path)
    existed = out.read_bytes() if out.is_file() else None
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert word in lines[0]
    assert listing(tmp_path) == before  # nothing written: no OUT, no temporary file, no intermediates folder
    assert (out.read_bytes() if out.is_file() else None) == existed


def test_no_shipped_weights(inputs, capsys, monkeypatch):
    folder = inputs["dir"] / "no_weights"
    monkeypatch.setattr(checkpoints_model, "WEIGHTS_DIR", folder)
    before = listing(inputs["dir"])
    assert main(argv(inputs, None)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no shipped weights for x4: ")
    # names the file, and how to make one
    for word in (
        str(folder / "sschsr_x4.safetensors"),
        "--ckpt",
        "sschsr-train experiment=full scale=4",
        "experiments/export_weights.py",
    ):
        assert word in lines[0]
    assert listing(inputs["dir"]) == before
    assert shipped_weights(8).name == "sschsr_x8.safetensors"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is available here")
def test_cuda_without_a_gpu(inputs, models, capsys):
    args = argv(inputs, models["bicubic"])
    args[args.index("--device") + 1] = "cuda"
    assert main(args) == 2
    assert "CUDA" in capsys.readouterr().err
    assert not inputs["out"].exists()


def test_console_script(inputs, models):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    res = subprocess.run(
        [str(BIN / "sschsr-predict"), *argv(inputs, models["bicubic"], scale=5)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert (
        res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    )
    res = subprocess.run(
        [str(BIN / "sschsr-predict"), *argv(inputs, models["bicubic"])],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    assert inputs["out"].is_file()


# ------------------------------------------------------------------------------------------ helpers


class PixelMix(nn.Module):
    """A per-pixel op (1x1 convolutions): tiling must not change its output at all."""

    def __init__(self, c: int):
        super().__init__()
        self.mix = nn.Conv2d(c + 6, c, 1)

    def forward(self, lr_up, ref, rgb_hsi):
        return {"sr": self.mix(torch.cat((lr_up, ref, rgb_hsi), 1)), "flow": ref[:, :2] * 3}


@pytest.mark.parametrize("tile, overlap", [(16, 4), (20, 0), (32, None), (64, 8)])
def test_predict_tiled_is_exact_for_pixelwise_models(tile, overlap, generator):
    torch.manual_seed(0)
    model = PixelMix(5)
    lr_up, ref, rgb = (
        torch.rand(5, 37, 53, generator=generator),
        torch.rand(3, 37, 53, generator=generator),
        torch.rand(3, 37, 53, generator=generator),
    )
    whole = predict_tiled(model, lr_up, ref, rgb, keys=("sr", "flow", "ref_warp"))
    assert set(whole) == {"sr", "flow"}
    tiled = predict_tiled(model, lr_up, ref, rgb, tile=tile, overlap=overlap, keys=("sr", "flow", "ref_warp"))
    for k in whole:
        torch.testing.assert_close(tiled[k], whole[k], atol=1e-5, rtol=0)


def test_prepare_inputs(generator):
    lr = torch.rand(BANDS, 10, 15, generator=generator)
    ref = torch.rand(3, 81, 121, generator=generator)  # another size, the same aspect ratio within 2 %
    lr_up, ref_hr, rgb_hsi = prepare_inputs(lr, ref, 8, np.linspace(400, 700, BANDS))
    assert lr_up.shape == (BANDS, 80, 120) and ref_hr.shape == rgb_hsi.shape == (3, 80, 120)
    assert 0 <= rgb_hsi.min() and rgb_hsi.max() <= 1
    # histogram-matched: the rendered HSI takes the reference's value distribution per channel
    torch.testing.assert_close(
        rgb_hsi.flatten(1).sort(1).values, ref_hr.flatten(1).sort(1).values, atol=1e-6, rtol=0
    )
    with pytest.raises(InputError, match="aspect ratio"):
        check_reference((80, 130), (10, 15))
    with pytest.raises(InputError, match="smaller"):
        check_reference((9, 15), (10, 15))
    check_reference((10, 15), (10, 15))


def test_model_specs_rebuild_only_sschsr_networks(tmp_path):
    net = tiny_sschsr()
    spec = module_spec(net)
    assert spec["flow_net"]["_target_"].endswith("RAFT") and spec["warpnet"]["_target_"].endswith("WarpNet")
    rebuilt = build_module(spec)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in net.state_dict().items()
    }
    with pytest.raises(InputError, match="only networks of the sschsr package"):
        build_module({"_target_": "os.system", "command": "echo hi"})
    with pytest.raises(InputError, match="not a network"):
        build_module({"_target_": "sschsr.inference.load_model"})
    loaded = load_model(save_model(net, tmp_path / "m.safetensors", scale=8), scale=8, n_bands=BANDS)
    assert loaded.info["scale"] == 8 and loaded.info["n_bands"] == BANDS


# ------------------------------------------------------------------------------------------ input formats


def _write_envi(path: Path, cube: np.ndarray) -> Path:
    """An ENVI raster (binary data + .hdr), bands first on disk; returns the header."""
    import rasterio

    h, w, c = cube.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="ENVI", width=w, height=h, count=c, dtype="float32") as dst:
            dst.write(cube.transpose(2, 0, 1))
    hdr = path.with_suffix(".hdr")
    assert hdr.is_file()
    return hdr


LR_FORMATS = {
    "npz": lambda t, cube: (np.savez(t / "lr.npz", mask=np.ones((2, 2), bool), cube=cube), t / "lr.npz")[1],
    "npz chw": lambda t, cube: (np.savez(t / "lr.npz", cube=cube.transpose(2, 0, 1)), t / "lr.npz")[1],
    "mat": lambda t, cube: (__import__("scipy.io").io.savemat(t / "lr.mat", {"cube": cube}), t / "lr.mat")[1],
    "mat chw": lambda t, cube: (
        __import__("scipy.io").io.savemat(t / "lr.mat", {"cube": cube.transpose(2, 0, 1)}),
        t / "lr.mat",
    )[1],
    "npy chw": lambda t, cube: (np.save(t / "lr_chw.npy", cube.transpose(2, 0, 1)), t / "lr_chw.npy")[1],
    "geotiff": lambda t, cube: (write_geotiff(t / "lr.tif", cube), t / "lr.tif")[1],
    "envi": lambda t, cube: _write_envi(t / "lr.img", cube),
}


@pytest.mark.parametrize("fmt", sorted(LR_FORMATS))
def test_lr_formats_give_the_same_result(fmt, inputs, models):
    """Every LR format of CONTRACTS.md reads to the same cube: the output equals the .npy run's (on one LR
    grid: rasters default to block-centred pixels, test_rasters_default_to_the_block_grid)."""
    grid = ["--lr-grid", "paper"]
    assert main(argv(inputs, models["bicubic"], *grid)) == 0
    expected = np.load(inputs["out"])
    cube = np.load(inputs["lr"])
    lr = LR_FORMATS[fmt](inputs["dir"], cube)
    layout = ["--layout", "chw"] if fmt.endswith("chw") else []
    assert main(argv(inputs, models["bicubic"], "--overwrite", *layout, *grid, lr=lr)) == 0
    np.testing.assert_allclose(np.load(inputs["out"]), expected, rtol=0, atol=1e-6)


def _ref_codes(h: int, w: int, bits: int, alpha: bool, seed: int = 1) -> np.ndarray:
    rgb = smooth_cube(h, w, 3, seed=seed)
    if alpha:
        rgb = np.concatenate([rgb, np.full((h, w, 1), 0.5, np.float32)], axis=2)
    return np.round(rgb * (2**bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)


def _tiff(path: Path, codes: np.ndarray) -> Path:
    import rasterio

    h, w, c = codes.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", width=w, height=h, count=c, dtype=codes.dtype.name
        ) as dst:
            dst.write(codes.transpose(2, 0, 1))
    return path


def _jpeg(path: Path, codes: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(codes).save(path, quality=95)
    return path


def _png_codes(path: Path, codes: np.ndarray) -> Path:
    write_png(path, codes)
    return path


REF_FORMATS = {
    "png 8-bit RGB": lambda t: _png_codes(t / "r.png", _ref_codes(HR_SIZE, HR_SIZE, 8, False)),
    "png 8-bit RGBA": lambda t: _png_codes(t / "r.png", _ref_codes(HR_SIZE, HR_SIZE, 8, True)),
    "png 16-bit RGB": lambda t: _png_codes(t / "r.png", _ref_codes(HR_SIZE, HR_SIZE, 16, False)),
    "png 16-bit RGBA": lambda t: _png_codes(t / "r.png", _ref_codes(HR_SIZE, HR_SIZE, 16, True)),
    "jpeg": lambda t: _jpeg(t / "r.jpg", _ref_codes(HR_SIZE, HR_SIZE, 8, False)),
    "tiff 8-bit RGB": lambda t: _tiff(t / "r.tif", _ref_codes(HR_SIZE, HR_SIZE, 8, False)),
    "tiff 16-bit RGBA": lambda t: _tiff(t / "r.tif", _ref_codes(HR_SIZE, HR_SIZE, 16, True)),
    "larger, same aspect": lambda t: _png_codes(
        t / "r.png", _ref_codes(3 * HR_SIZE, 3 * HR_SIZE + 2, 8, False)
    ),
    "between LR and HR size": lambda t: _png_codes(
        t / "r.png", _ref_codes(2 * LR_SIZE, 2 * LR_SIZE, 8, False)
    ),
}


@pytest.mark.parametrize("fmt", sorted(REF_FORMATS))
def test_ref_formats(fmt, inputs, models):
    ref = REF_FORMATS[fmt](inputs["dir"])
    rgb = read_rgb(ref)
    assert (
        rgb.shape[2] == 3 and 0.04 < rgb.min() and rgb.max() < 0.96
    )  # alpha dropped, codes scaled to [0, 1]
    assert main(argv(inputs, models["bicubic"], ref=ref)) == 0
    assert np.load(inputs["out"]).shape == (HR_SIZE, HR_SIZE, BANDS)


def test_intermediates_follow_the_flow_convention(inputs, models):
    """A 16-bit RGBA reference of another size is resampled to the HR grid; ``flow.npy`` maps the HSI's grid
    to it as sschsr-synth's flow does: ``ref_warp.png`` (stage 1) is the reference sampled at p + flow[p]."""
    from sschsr.ops.warp import flow_warp

    ref = _png_codes(inputs["dir"] / "big.png", _ref_codes(2 * HR_SIZE, 2 * HR_SIZE, 16, True))
    inter = inputs["dir"] / "inter" / "deeper"
    assert main(argv(inputs, models["sschsr"], "--save-intermediates", str(inter), ref=ref)) == 0
    flow = np.load(inter / "flow.npy")
    assert flow.shape == (2, HR_SIZE, HR_SIZE) and flow.dtype == np.float32 and np.isfinite(flow).all()
    ref_hr = resample(torch.from_numpy(read_rgb(ref).transpose(2, 0, 1)), (HR_SIZE, HR_SIZE))
    warped = (
        flow_warp(ref_hr[None], torch.from_numpy(flow)[None], padding_mode="border")[0]
        .numpy()
        .transpose(1, 2, 0)
    )
    saved = read_rgb(inter / "ref_warp.png")
    assert np.abs(saved - warped).max() <= 1.5 / 255  # 8-bit rounding
    refined = read_rgb(inter / "ref_refined.png")
    assert refined.shape == (HR_SIZE, HR_SIZE, 3)


def test_npy_input_to_tiff_output(inputs, models):
    import rasterio

    out = inputs["dir"] / "out" / "sr.tiff"
    assert main(argv(inputs, models["bicubic"], out=out)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        src = rasterio.open(out)
    with src:
        assert (src.count, src.height, src.width, src.dtypes[0]) == (BANDS, HR_SIZE, HR_SIZE, "float32")
        sr = src.read().transpose(1, 2, 0)
    assert main(argv(inputs, models["bicubic"])) == 0
    np.testing.assert_array_equal(sr, np.load(inputs["out"]))


# ------------------------------------------------------------------------------------------ atomic writes


def test_a_failed_write_leaves_nothing(inputs, models, capsys, monkeypatch):
    """OUT fails after the intermediates were written (disk full): they are removed again, with the folder."""
    import sschsr.cli.predict as predict

    def full_disk(path, array, **kwargs):
        raise OSError(28, "No space left on device")

    real = predict.write_npy
    monkeypatch.setattr(
        predict,
        "write_npy",
        lambda path, a, **kw: full_disk(path, a) if Path(path) == inputs["out"] else real(path, a, **kw),
    )
    before = listing(inputs["dir"])
    inter = inputs["dir"] / "new" / "inter"
    assert main(argv(inputs, models["sschsr"], "--save-intermediates", str(inter))) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: cannot write the output") and "No space" in lines[0]
    )
    assert listing(inputs["dir"]) == before


def test_out_of_memory_is_one_error_line(inputs, models, capsys, monkeypatch):
    import sschsr.cli.predict as predict

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(predict, "predict_tiled", oom)
    assert main(argv(inputs, models["bicubic"])) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: out of memory") and "--tile" in lines[0]
    assert not inputs["out"].exists()


# ------------------------------------------------------------------------------------------ shipped weights


def scene_input(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network inputs as prepare_inputs makes them from a smooth scene and a shifted reference."""
    lr = torch.from_numpy(smooth_cube(LR_SIZE, LR_SIZE, BANDS, seed=seed).transpose(2, 0, 1))
    lr_up, _, rgb_hsi = prepare_inputs(lr, torch.rand(3, HR_SIZE, HR_SIZE), SCALE)
    return lr_up[None], torch.roll(rgb_hsi, (2, 3), (1, 2))[None], rgb_hsi[None]


class TestShippedWeights:
    def test_export_is_one_float16_file_with_its_spec(self, models):
        from safetensors import safe_open

        path = models["fp16"]
        assert sorted(p.name for p in path.parent.iterdir()) == ["sschsr_x4.safetensors"]  # no sidecar
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
        assert dtypes == {"F16"} and meta["dtype"] == "float16"
        info = json.loads(meta[MODEL_KEY])
        assert info["scale"] == SCALE and info["n_bands"] == BANDS and info["camera"] == "cie1931"
        assert info["net"] == module_spec(tiny_sschsr())  # the whole network: flow net, WarpNet, SR branch
        assert {"flow_net", "warpnet"} <= set(info["net"])
        # about half the float32 file
        assert 0.45 < path.stat().st_size / models["sschsr"].stat().st_size < 0.55

    def test_reloads_in_float32_and_matches_the_checkpoint(self, models):
        from sschsr.checkpoints import read_training_checkpoint

        net32, _ = read_training_checkpoint(models["ckpt"])
        net16 = load_model(models["fp16"], scale=SCALE, n_bands=BANDS)
        assert isinstance(net16, SSCHSR) and not net16.training
        assert {t.dtype for t in net16.state_dict().values()} == {torch.float32}
        assert {t.device.type for t in net16.state_dict().values()} == {"cpu"}
        for name, t in net32.state_dict().items():  # the weights, rounded to float16
            torch.testing.assert_close(net16.state_dict()[name], t.half().float(), rtol=0, atol=0)
        x = scene_input()
        with torch.inference_mode():
            a, b = net32(*x), net16(*x)
        assert (a["sr"] - x[0]).abs().mean() > 1e-2  # the SR branch's weights shape the output
        for key in ("sr", "ref_warp", "flow"):
            d = (a[key] - b[key]).abs()
            assert d.mean() < 1e-3 and d.max() < 2e-2, (key, float(d.mean()), float(d.max()))

    def test_predict_with_the_exported_file(self, inputs, models):
        assert main(argv(inputs, models["ckpt"])) == 0
        from_ckpt = np.load(inputs["out"])
        assert main(argv(inputs, models["fp16"], "--overwrite")) == 0
        from_fp16 = np.load(inputs["out"])
        assert from_fp16.shape == (HR_SIZE, HR_SIZE, BANDS) and from_fp16.dtype == np.float32
        assert np.abs(from_fp16 - from_ckpt).mean() < 1e-3

    def test_predict_without_ckpt_uses_the_shipped_file(self, inputs, models, monkeypatch):
        monkeypatch.setattr(checkpoints_model, "WEIGHTS_DIR", models["fp16"].parent)
        assert main(argv(inputs, models["fp16"])) == 0
        expected = np.load(inputs["out"])
        assert main(argv(inputs, None, "--overwrite")) == 0
        np.testing.assert_array_equal(np.load(inputs["out"]), expected)
        with pytest.raises(
            InputError, match=r"no shipped weights for x8: .*sschsr_x8\.safetensors does not exist"
        ):
            load_model(None, scale=8)

    def test_sidecar_only_files_still_load(self, models, tmp_path):
        """A .safetensors without the description in its metadata reads it from the JSON beside it."""
        from safetensors.torch import load_file, save_file

        state = load_file(str(models["fp16"]))
        plain = tmp_path / "plain.safetensors"
        save_file(state, str(plain))
        with pytest.raises(InputError, match="no model description"):
            load_model(plain, scale=SCALE)
        net = tiny_sschsr()
        from sschsr.checkpoints import model_info

        plain.with_suffix(".json").write_text(json.dumps(model_info(net, SCALE)))
        assert isinstance(load_model(plain, scale=SCALE, n_bands=BANDS), SSCHSR)
        fp32 = save_model(net, tmp_path / "side.safetensors", scale=SCALE, sidecar=True)
        assert json.loads(fp32.with_suffix(".json").read_text())["n_bands"] == BANDS

    def test_export_refuses_other_scales_and_stages(self, models, tmp_path):
        with pytest.raises(InputError, match="trained for x4, not x8"):
            export_weights(models["ckpt"], tmp_path / "x8.safetensors", scale=8)
        stage1 = tmp_path / "stage1.ckpt"
        torch.save({"state_dict": {}, "flow_net_config": {}}, stage1)
        with pytest.raises(InputError, match="stage-1"):
            export_weights(stage1, tmp_path / "s1.safetensors")
        with pytest.raises(InputError, match="not found"):
            export_weights(tmp_path / "nope.ckpt", tmp_path / "n.safetensors")
        assert not list(tmp_path.glob("*.safetensors"))

    def test_export_with_another_flow_network(self, models, tmp_path):
        """--flow-ckpt: the exported model holds the given flow network, the rest of the checkpoint's."""
        from sschsr.checkpoints import save_flow_net

        torch.manual_seed(1)
        flow_net = RAFT("small", iters=2)
        flow = save_flow_net(flow_net, tmp_path / "flow.safetensors")
        out = export_weights(models["ckpt"], tmp_path / "m.safetensors", dtype=torch.float32, flow_ckpt=flow)
        net, original = load_model(out, SCALE), load_model(models["ckpt"], SCALE)
        for key, value in flow_net.state_dict().items():
            torch.testing.assert_close(net.flow_net.state_dict()[key], value)
        for key, value in original.warpnet.state_dict().items():
            torch.testing.assert_close(net.warpnet.state_dict()[key], value)
        with pytest.raises(InputError):
            export_weights(models["ckpt"], tmp_path / "bad.safetensors", flow_ckpt=tmp_path / "nope.ckpt")


def _export_script():
    spec = importlib.util.spec_from_file_location(
        "export_weights", ROOT / "experiments" / "export_weights.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_export_script(models, tmp_path, capsys, monkeypatch):

    script = _export_script()
    out, record = tmp_path / "sschsr_x4.safetensors", tmp_path / "results" / "weights_x4.json"
    args = ["--ckpt", str(models["ckpt"]), "--scale", "4", "--out", str(out), "--record", str(record)]
    assert script.main(args) == 0
    assert "wrote" in capsys.readouterr().out
    rec = json.loads(record.read_text())
    for key in (
        "source_ckpt",
        "command",
        "commit",
        "date",
        "device",
        "size_bytes",
        "sha256",
        "check",
        "training",
    ):
        assert key in rec, key
    assert rec["source_ckpt"] == str(models["ckpt"]) and rec["size_bytes"] == sum(rec["files"].values())
    assert out.name in rec["files"] and len(rec["files"]) == 3  # the model, flow_net-*, warpnet-*
    assert rec["dtype"] == "float16" and rec["scale"] == 4 and rec["n_bands"] == BANDS
    assert rec["training"]["global_step"] == 3 and rec["check"]["mean_abs_diff"] < 1e-3
    assert "--ckpt" in rec["command"]
    assert isinstance(load_model(out, scale=4, n_bands=BANDS), SSCHSR)

    # into the package's weights folder: the name must say the scale; nothing is written on error
    monkeypatch.setattr(checkpoints_model, "WEIGHTS_DIR", tmp_path / "weights")
    monkeypatch.setattr(sschsr.checkpoints, "WEIGHTS_DIR", tmp_path / "weights")
    (tmp_path / "weights").mkdir()
    bad = [
        "--ckpt",
        str(models["ckpt"]),
        "--scale",
        "4",
        "--out",
        str(tmp_path / "weights" / "model.safetensors"),
        "--record",
        str(record),
    ]
    assert script.main(bad) == 2
    assert "sschsr_x4.safetensors" in capsys.readouterr().err
    assert script.main([*args[:3], "8", *args[4:]]) == 2  # trained for x4
    assert "trained for x4" in capsys.readouterr().err
    assert not list((tmp_path / "weights").iterdir())

    # a shipped export removes the part files no model names any more
    stale = tmp_path / "weights" / "flow_net-000000000000.safetensors"
    stale.write_bytes(b"old")
    shipped = [
        "--ckpt",
        str(models["ckpt"]),
        "--scale",
        "4",
        "--out",
        str(tmp_path / "weights" / "sschsr_x4.safetensors"),
        "--record",
        str(record),
    ]
    assert script.main(shipped) == 0
    assert "removed the unused flow_net-000000000000.safetensors" in capsys.readouterr().out
    assert len(list((tmp_path / "weights").glob("*.safetensors"))) == 3 and not stale.exists()


def test_a_part_already_saved_is_not_written_again_unless_damaged(tmp_path):
    """Saving a model whose part file is already there leaves that file's bytes alone (a content-named file
    written again changes only its header's order); a damaged one is replaced."""
    net = tiny_sschsr()
    save_model(net, tmp_path / "a.safetensors", scale=SCALE, parts=["flow_net"])
    (flow,) = tmp_path.glob("flow_net-*.safetensors")
    before = flow.stat().st_mtime_ns
    save_model(net, tmp_path / "b.safetensors", scale=SCALE, parts=["flow_net"])
    assert flow.stat().st_mtime_ns == before
    flow.write_bytes(flow.read_bytes()[:-8])  # truncated: written again
    save_model(net, tmp_path / "c.safetensors", scale=SCALE, parts=["flow_net"])
    x = (torch.rand(1, BANDS, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with torch.no_grad():
        assert torch.equal(
            load_model(tmp_path / "a.safetensors", scale=SCALE)(*x)["sr"], net.eval()(*x)["sr"]
        )


def test_model_parts_are_shared_checked_and_joined(tmp_path):
    """save_model(parts=...) stores children in content-named files beside the model; load_model joins
    them, and refuses a missing, changed or misnamed part."""
    net = tiny_sschsr()
    x = (torch.rand(1, BANDS, 16, 16), torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    a = save_model(net, tmp_path / "a.safetensors", scale=SCALE, parts=["flow_net", "warpnet"])
    files = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(files) == 3 and files[0].startswith("a") and files[1].startswith("flow_net-")
    with torch.no_grad():
        assert torch.equal(load_model(a, scale=SCALE)(*x)["sr"], net.eval()(*x)["sr"])
    with torch.no_grad():
        net.fusion[-1].out.weight.add_(0.01)  # another SR branch on the same flow network and WarpNet
    save_model(net, tmp_path / "b.safetensors", scale=SCALE, parts=["flow_net", "warpnet"])
    assert len(list(tmp_path.glob("*.safetensors"))) == 4  # the parts are shared, not written twice

    flow = tmp_path / files[1]
    flow.rename(tmp_path / "moved")
    with pytest.raises(InputError, match="missing"):
        load_model(a, scale=SCALE)
    (tmp_path / "moved").rename(flow)
    data = bytearray(flow.read_bytes())
    data[-1] ^= 1
    flow.write_bytes(bytes(data))
    with pytest.raises(InputError, match="SHA-256"):
        load_model(a, scale=SCALE)
    with pytest.raises(ValueError, match="no child 'nothing'"):
        save_model(net, tmp_path / "c.safetensors", scale=SCALE, parts=["nothing"])

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(a), framework="pt") as f:
        meta = f.metadata()
    info = json.loads(meta[MODEL_KEY])
    info["parts"]["flow_net"]["file"] = "../elsewhere.safetensors"
    save_file(
        load_file(str(a)), str(tmp_path / "d.safetensors"), metadata={**meta, MODEL_KEY: json.dumps(info)}
    )
    with pytest.raises(InputError, match="not a file beside it"):
        load_model(tmp_path / "d.safetensors", scale=SCALE)


@pytest.mark.parametrize("grid,expected_off", [(None, 0.0), ("paper", -1.0)])
def test_geotiff_content_lands_where_its_georeference_says(tmp_path, models, grid, expected_off):
    """A GeoTIFF's pixels are areas (block-centred LR data): by default the output's content sits at the
    map coordinates the input's georeference gives it, checked on a blob at a known map position; told the
    paper's grid instead, it lands the paper's shift (1 HR px at x4) off. The model: bicubic that undoes the
    paper's shift, as every trained network learnt to."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    from sschsr.data.io import GeoInfo, write_geotiff
    from sschsr.ops.degrade import content_shift

    size, pixel = HR_SIZE, 2.5  # HR px, map units per HR px (LR: 10)
    x0, y0 = 500_000.0, 4_000_000.0
    centre = np.array([29.5, 37.0])  # HR pixel coordinates (x, y) of the blob, corners at integers
    yy, xx = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    blob = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 3.0**2))
    hr = (0.2 + 0.6 * blob)[..., None] * np.linspace(0.8, 1.2, BANDS)[None, None]
    lr = (
        hr.reshape(LR_SIZE, SCALE, LR_SIZE, SCALE, BANDS).mean((1, 3)).astype(np.float32)
    )  # a sensor's pixels
    geo = GeoInfo(crs=CRS.from_epsg(32633), transform=Affine(pixel * SCALE, 0, x0, 0, -pixel * SCALE, y0))
    write_geotiff(tmp_path / "lr.tif", lr, geo)
    write_png(tmp_path / "ref.png", np.repeat(0.2 + 0.6 * blob[..., None], 3, axis=2))
    out = tmp_path / "sr.tif"
    extra = ("--lr-grid", grid) if grid else ()
    args = ["--lr", str(tmp_path / "lr.tif"), "--ref", str(tmp_path / "ref.png"), "--scale", str(SCALE)]
    model = save_model(
        Bicubic(BANDS, shift=content_shift(SCALE)), tmp_path / "registered_x4.safetensors", scale=SCALE
    )
    assert main([*args, "--out", str(out), "--ckpt", str(model), *extra]) == 0
    with rasterio.open(out) as src:
        sr, transform = src.read(1).astype(np.float64), src.transform
    weight = np.clip(sr - np.median(sr), 0, None)
    col, row = (weight * xx).sum() / weight.sum(), (weight * yy).sum() / weight.sum()
    found = np.array(transform @ (col, row) if hasattr(transform, "__matmul__") else transform * (col, row))
    truth = np.array([x0 + pixel * centre[0], y0 - pixel * centre[1]])
    off = (found - truth) * np.array([1, -1]) / pixel  # HR px, along x and y
    np.testing.assert_allclose(off, expected_off, atol=0.2)
