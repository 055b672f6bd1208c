"""The weights shipped in the package (``src/sschsr/weights/``): present for x4 and x8, within the size
budget, small enough a preset, loadable, and usable by ``sschsr-predict`` without ``--ckpt`` on a real
CAVE crop (shapes, range, and better than bicubic there)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sschsr.checkpoints import MODEL_KEY, WEIGHTS_DIR, load_model, shipped_weights
from sschsr.cli.predict import main
from sschsr.data.io import read_cube
from sschsr.data.spectral import camera_srf, default_wavelengths, render
from sschsr.data.synth import procedural_scene
from sschsr.inference import prepare_inputs
from sschsr.ops.degrade import degrade, upsample
from sschsr.pipeline import TestTime

SCALES = (4, 8)
OFFICIAL_PARAMS = 27.45e6  # the official SSC-HSR (DESIGN.md)


def _parts(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()[MODEL_KEY]).get("parts", {})


def test_every_shipped_file_is_there_named_and_within_the_budgets():
    """x4 and x8 models, the part files they name and nothing else; 25 MB in all, 5 MB a file; each scale
    has a flow network of its own (fine-tuned at that scale: docs/training.md)."""
    files = {p.name: p.stat().st_size for p in WEIGHTS_DIR.glob("*.safetensors")}
    models = [f"sschsr_x{s}.safetensors" for s in SCALES]
    parts = {s: _parts(WEIGHTS_DIR / name) for s, name in zip(SCALES, models, strict=True)}
    named = set(models) | {entry["file"] for p in parts.values() for entry in p.values()}
    assert set(files) == named
    assert sum(files.values()) <= 25e6
    assert max(files.values()) <= 5e6
    assert parts[4]["flow_net"] != parts[8]["flow_net"]


@pytest.mark.parametrize("scale", SCALES)
def test_shipped_weights_load_as_the_documented_model(scale):
    from safetensors import safe_open

    with safe_open(str(shipped_weights(scale)), framework="pt") as f:
        info = json.loads(f.metadata()[MODEL_KEY])
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert dtypes == {"F16"}
    assert info["scale"] == scale and info["n_bands"] == 31
    net = load_model(None, scale=scale, n_bands=31)
    assert not net.training
    assert sum(p.numel() for p in net.parameters()) <= OFFICIAL_PARAMS / 4
    assert {"flow_net", "warpnet"} <= {name for name, _ in net.named_children()}


@pytest.mark.parametrize("scale", SCALES)
def test_predict_with_the_shipped_weights_on_a_cave_crop(scale, shared_data, tmp_path):
    """A 128 x 128 crop of a CAVE scene, its reference the HR rendering shifted by 3 px."""
    hr = torch.from_numpy(
        np.ascontiguousarray(read_cube(shared_data / "cave" / "balloons_ms").data[128:256, 192:320])
    ).permute(2, 0, 1)
    hr = hr.float().clamp(0, 1)
    lr = degrade(hr[None], scale)[0]
    np.save(tmp_path / "lr.npy", lr.permute(1, 2, 0).numpy())
    wl = np.linspace(400, 700, 31)
    rgb = np.stack(
        [np.tensordot(np.exp(-0.5 * ((wl - c) / 40) ** 2), hr.numpy(), 1) for c in (600, 540, 460)], -1
    )
    rgb = np.roll(rgb / rgb.max(), (3, -2), (0, 1))
    Image.fromarray((rgb * 255).round().astype(np.uint8)).save(tmp_path / "ref.png")

    out = tmp_path / "sr.npy"
    rc = main(
        [
            "--lr",
            str(tmp_path / "lr.npy"),
            "--ref",
            str(tmp_path / "ref.png"),
            "--scale",
            str(scale),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    sr = np.load(out)
    assert sr.shape == (128, 128, 31) and sr.dtype == np.float32 and np.isfinite(sr).all()
    target = hr.permute(1, 2, 0).numpy()
    bicubic = upsample(lr[None], scale)[0].permute(1, 2, 0).numpy()
    mse = lambda x: float(((np.clip(x, 0, 1) - target) ** 2).mean())  # noqa: E731
    assert mse(sr) < mse(bicubic)


def test_shipped_outputs_are_unchanged():
    """The shipped models with the test-time steps of the fingerprint (the defaults when it was made, with the
    self-ensemble of all eight transforms) give the outputs they gave before the code moves
    (``tests/data/shipped_fingerprint.json``, made at 25d50a5: per-band means and 64 sampled values of a fixed
    procedural scene at x4 and x8; identical on the machine that made them, 1e-5 allowed for other CPUs)."""
    expected = json.loads((Path(__file__).parent / "data" / "shipped_fingerprint.json").read_text())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for scale in (4, 8):
            hr = procedural_scene(96, 31, torch.Generator().manual_seed(7))
            wl = default_wavelengths(31)
            ref = torch.roll(render(hr, camera_srf(wl)).clamp(0, 1), shifts=(2, -3), dims=(1, 2))
            lr_up, ref_hr, rgb_hsi = prepare_inputs(degrade(hr[None], scale)[0], ref, scale, wl)
            model = TestTime(tta=8).build(load_model(None, scale, 31), scale).eval()
            with torch.inference_mode():
                sr = model(lr_up[None], ref_hr[None], rgb_hsi[None])["sr"][0]
            pick = torch.randint(0, sr.numel(), (64,), generator=torch.Generator().manual_seed(0))
            want = expected[f"x{scale}"]
            np.testing.assert_allclose(
                sr.mean(dim=(1, 2)).double().numpy(), want["band_means"], rtol=0, atol=1e-5
            )
            np.testing.assert_allclose(
                sr.flatten()[pick].double().numpy(), want["samples"], rtol=0, atol=1e-5
            )
    finally:
        torch.set_num_threads(threads)


def test_alignment_stages_of_every_kind_of_file(tmp_path):
    """load_alignment_stages reads the flow network (and WarpNet) of a full model file, a stage-1
    .safetensors, and refuses a part file and a missing file."""
    from sschsr.checkpoints import load_alignment_stages, save_flow_net
    from sschsr.errors import InputError
    from sschsr.models.flow import RAFT

    full = load_alignment_stages(WEIGHTS_DIR / "sschsr_x8.safetensors")
    assert full.kind == "full" and full.warpnet is not None and full.iters >= 1
    stage1 = load_alignment_stages(save_flow_net(RAFT("small"), tmp_path / "flow.safetensors"), iters=3)
    assert stage1.kind == "stage1" and stage1.warpnet is None and stage1.iters == 3
    with pytest.raises(InputError, match="part of a model file"):
        load_alignment_stages(next(WEIGHTS_DIR.glob("flow_net-*.safetensors")))
    with pytest.raises(InputError, match="not found"):
        load_alignment_stages(WEIGHTS_DIR / "missing.safetensors")
