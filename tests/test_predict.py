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
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sschsr.cli.predict import main
from sschsr.data.io import GeoInfo, read_rgb, write_geotiff, write_npy, write_png
from sschsr.errors import InputError
from sschsr.inference import (
    MODEL_KEY,
    build_module,
    check_reference,
    export_weights,
    load_model,
    module_spec,
    predict_tiled,
    prepare_inputs,
    resample,
    save_model,
    shipped_weights,
)
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
    torch.manual_seed(0)
    return SSCHSR(BANDS, "lite", flow_net=RAFT("small", iters=2), warpnet=WarpNet(), flow_iters=2)


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


def smooth_cube(h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """``(h, w, c)`` float32 in [0.05, 0.95], smooth in space and along the spectrum."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    bands = np.linspace(0, 1, c)
    a, b = g.uniform(1, 3, size=2)
    cube = 0.5 + 0.3 * np.sin(a * 3 * x[..., None] + bands) * np.cos(b * 3 * y[..., None] - bands)
    return np.clip(cube + 0.02 * g.standard_normal((h, w, c)), 0.05, 0.95).astype(np.float32)


@pytest.fixture()
def inputs(tmp_path) -> dict[str, Path]:
    lr = tmp_path / "lr.npy"
    np.save(lr, smooth_cube(LR_SIZE, LR_SIZE, BANDS))
    ref = tmp_path / "ref.png"
    write_png(ref, smooth_cube(HR_SIZE, HR_SIZE, 3, seed=1))
    (tmp_path / "out").mkdir()
    return {"lr": lr, "ref": ref, "out": tmp_path / "out" / "sr.npy", "dir": tmp_path}


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
        assert captured.err == "" and captured.out.startswith(f"wrote {inputs['out']}")
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
        expected = torch.nn.functional.interpolate(lr, scale_factor=SCALE, mode="bicubic")[0].numpy().transpose(1, 2, 0)
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


# name -> (how to make the arguments from (inputs, models, tmp_path), a word the message must contain)
BAD_INPUTS = {
    "missing LR": (lambda i, m, t: argv(i, m["sschsr"], lr=t / "nope.npy"), "no such file"),
    "corrupt LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "bad.npy", b"\x93NUMPY garbage")), "cannot read"),
    "unsupported LR format": (lambda i, m, t: argv(i, m["sschsr"], lr=_write(t / "lr.txt", b"1 2 3")), "unsupported"),
    "NaN in LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "nan.npy", _nan_cube())), "NaN"),
    "Inf in LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "inf.npy", _inf_cube())), "Inf"),
    "band count": (
        lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "b30.npy", smooth_cube(LR_SIZE, LR_SIZE, 30))),
        "30 bands",
    ),
    "2-D LR": (lambda i, m, t: argv(i, m["sschsr"], lr=_npy(t / "flat.npy", np.zeros((16, 16), np.float32))), "3-D"),
    "missing REF": (lambda i, m, t: argv(i, m["sschsr"], ref=t / "nope.png"), "no such file"),
    "corrupt REF": (lambda i, m, t: argv(i, m["sschsr"], ref=_write(t / "bad.png", b"\x89PNG\r\n\x1a\ngarbage")), "cannot read"),
    "unsupported REF format": (lambda i, m, t: argv(i, m["sschsr"], ref=_write(t / "ref.gif", b"GIF89a")), "unsupported"),
    "REF too small": (lambda i, m, t: argv(i, m["sschsr"], ref=_png(t / "small.png", 8, 8)), "smaller"),
    "REF aspect ratio": (lambda i, m, t: argv(i, m["sschsr"], ref=_png(t / "wide.png", 64, 80)), "aspect ratio"),
    "scale not 4/8/16": (lambda i, m, t: argv(i, m["sschsr"], scale=3), "unsupported scale"),
    "scale not trained": (lambda i, m, t: argv(i, m["sschsr"], scale=8), "trained for x4"),
    "OUT exists": (lambda i, m, t: argv(i, m["sschsr"], out=_write(t / "exists.npy", b"old")), "--overwrite"),
    "OUT extension": (lambda i, m, t: argv(i, m["sschsr"], out=t / "sr.png"), "unsupported output"),
    "OUT folder missing": (lambda i, m, t: argv(i, m["sschsr"], out=t / "no" / "sr.npy"), "does not exist"),
    "missing ckpt": (lambda i, m, t: argv(i, t / "nope.ckpt"), "not found"),
    "corrupt ckpt": (lambda i, m, t: argv(i, _write(t / "bad.ckpt", b"not a checkpoint")), "not a readable"),
    "corrupt safetensors": (lambda i, m, t: argv(i, _write(t / "bad.safetensors", b"\x00" * 16)), "safetensors"),
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
    existed = out.read_bytes() if out.exists() else None
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert word in lines[0]
    assert listing(tmp_path) == before  # nothing written: no OUT, no temporary file, no intermediates folder
    assert (out.read_bytes() if out.exists() else None) == existed


def test_no_shipped_weights(inputs, capsys, monkeypatch):
    import sschsr.inference as inference

    monkeypatch.setattr(inference, "WEIGHTS_DIR", inputs["dir"] / "no_weights")
    assert main(argv(inputs, None)) == 2
    assert capsys.readouterr().err.strip() == "error: no shipped weights for x4 in this version: pass --ckpt"
    assert not inputs["out"].exists()
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
        [str(BIN / "sschsr-predict"), *argv(inputs, models["bicubic"], scale=5)], capture_output=True, text=True, env=env, timeout=120
    )
    assert res.returncode == 2 and res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    res = subprocess.run([str(BIN / "sschsr-predict"), *argv(inputs, models["bicubic"])], capture_output=True, text=True, env=env, timeout=120)
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
    lr_up, ref, rgb = torch.rand(5, 37, 53, generator=generator), torch.rand(3, 37, 53, generator=generator), torch.rand(3, 37, 53, generator=generator)
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
    torch.testing.assert_close(rgb_hsi.flatten(1).sort(1).values, ref_hr.flatten(1).sort(1).values, atol=1e-6, rtol=0)
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
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}
    with pytest.raises(InputError, match="only networks of the sschsr package"):
        build_module({"_target_": "os.system", "command": "echo hi"})
    with pytest.raises(InputError, match="not a network"):
        build_module({"_target_": "sschsr.inference.load_model"})
    loaded = load_model(save_model(net, tmp_path / "m.safetensors", scale=8), scale=8, n_bands=BANDS)
    assert loaded.info["scale"] == 8 and loaded.info["n_bands"] == BANDS
