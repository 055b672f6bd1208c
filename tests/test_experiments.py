"""Known answers for the analysis helpers of ``experiments/`` scripts (the scripts' runs are recorded in
``experiments/results``; here only their arithmetic)."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def experiments_module(name: str):
    """A module of ``experiments/`` (scripts import each other from there), imported for one test module."""
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.fixture(scope="module")
def oracle():
    yield from experiments_module("oracle_gain")


def test_oracle_gain_recovers_a_known_gain(oracle):
    lr_up = torch.rand(2, 6, 5, 7) + 0.1
    gain = torch.rand(2, 1, 5, 7) * 3
    torch.testing.assert_close(oracle.oracle_gain(lr_up, lr_up * gain), gain)


def test_split_residual_parts_add_up_and_are_parallel_and_orthogonal(oracle):
    lr_up = torch.rand(1, 6, 4, 4) + 0.1
    sr = lr_up + 0.1 * torch.randn(1, 6, 4, 4)
    parallel, orthogonal = oracle.split_residual(sr, lr_up)
    torch.testing.assert_close(parallel + orthogonal, sr - lr_up)
    torch.testing.assert_close(F.cosine_similarity(parallel, lr_up, dim=1).abs(), torch.ones(1, 4, 4))
    torch.testing.assert_close((orthogonal * lr_up).sum(1), torch.zeros(1, 4, 4), atol=1e-6, rtol=0)


def test_high_pass_modulation_of_a_flat_reference_is_the_identity(oracle):
    lr_up = torch.rand(1, 5, 32, 32)
    flat = torch.full((1, 3, 32, 32), 0.4)
    torch.testing.assert_close(oracle.high_pass_modulation(lr_up, flat, 8), lr_up, atol=1e-5, rtol=1e-4)
    # an edge in the reference sharpens the same edge, blurred, in lr_up
    step = torch.zeros(1, 3, 32, 32)
    step[..., 16:] = 1.0
    from sschsr.ops.degrade import degrade, upsample

    hr = step[:, :1].expand(1, 5, 32, 32) * 0.8 + 0.1
    blurred = upsample(degrade(hr, 8), 8)
    sharpened = oracle.high_pass_modulation(blurred, step, 8)
    assert (sharpened - hr).abs().mean() < (blurred - hr).abs().mean()


@pytest.fixture(scope="module")
def common():
    yield from experiments_module("_common")


def test_alignment_of_the_shipped_model_and_a_refused_part(common):
    from sschsr.checkpoints import WEIGHTS_DIR
    from sschsr.errors import InputError

    alignment = common.load_alignment(WEIGHTS_DIR / "sschsr_x8.safetensors")
    assert alignment.kind == "full" and alignment.warpnet is not None and alignment.iters >= 1
    part = next(WEIGHTS_DIR.glob("flow_net-*.safetensors"))
    with pytest.raises(InputError, match="part of a model file"):
        common.load_alignment(part)
    with pytest.raises(InputError, match="not found"):
        common.load_alignment(WEIGHTS_DIR / "missing.safetensors")


def test_pair_overrides_take_the_options_and_extra_overrides(common):
    args = common.alignment_parser("doc", "x.json").parse_args(
        ["--ckpt", "m.safetensors", "--scenes", "a", "b", "--pairs", "3", "--size", "128",
         "--flow-range", "5", "15", "--override", "+data.synth.geometry.camera=false"]
    )  # fmt: skip
    out = common.pair_overrides(args)
    assert "data.lists.test=[a,b]" in out and "data.eval_pairs_per_scene=3" in out
    assert "data.eval_crop_size=128" in out and "+data.synth.geometry.flow_range=[5.0,15.0]" in out
    assert out[-1] == "+data.synth.geometry.camera=false"


def test_alignment_refines_its_flow_when_asked(common):
    """``Alignment.flow`` with ``refine`` steps: the flow network's (here a stub's zero) flow corrected
    towards the true flow of an observed pair; the option defaults to 0 in the scripts."""
    from sschsr.ops.degrade import degrade, upsample
    from sschsr.ops.warp import flow_warp

    g = torch.Generator().manual_seed(0)
    ref = F.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(96, 96), mode="bicubic").clamp(0, 1)
    truth = torch.tensor([1.5, -1.0]).view(1, 2, 1, 1).expand(1, 2, 96, 96)
    rgb_hsi = upsample(degrade(flow_warp(ref, truth, padding_mode="border"), 4), 4)

    def zero_flow(a, b, iters, test_mode):
        return torch.zeros(a.shape[0], 2, *a.shape[-2:])

    def epe(refine: int) -> float:
        alignment = common.Alignment(zero_flow, None, iters=1, kind="stage1", refine=refine, scale=4)
        return (alignment.flow(rgb_hsi, ref) - truth)[..., 8:-8, 8:-8].norm(dim=1).mean().item()

    assert epe(0) == pytest.approx((1.5**2 + 1) ** 0.5, abs=1e-5)
    assert epe(100) < 0.2
    assert common.alignment_parser("doc", "x.json").parse_args(["--ckpt", "m.ckpt"]).flow_refine == 0


def test_bench_test_time_writes_its_record(tmp_path):
    for bench in experiments_module("bench_test_time"):
        record = bench.main(
            [
                *("--sizes", "32", "--scale", "4", "--flow-refine", "2", "--back-project", "2"),
                *("--bands", "3", "--repeats", "1", "--out", str(tmp_path / "b.json")),
            ]
        )
    for step in ("flow_refine", "back_project"):
        assert set(record["seconds"][step]) == {"32"} and record["seconds"][step]["32"]["wall_s"] > 0
    assert record["steps"] == {"flow_refine": 2, "back_project": 2} and (tmp_path / "b.json").is_file()


def test_true_flow_gain_scores_the_three_flows(tmp_path):
    for script in experiments_module("true_flow_gain"):
        truth = torch.randn(1, 2, 8, 8)
        valid = torch.ones(1, 8, 8, dtype=torch.bool)
        assert script.epe_stats(truth, truth, valid) == {"epe": 0, "epe_median": 0, "epe_p90": 0}
        off = truth.clone()
        off[..., :2, :] += torch.tensor([3.0, 4.0])[:, None, None]  # a quarter of the pixels 5 px off
        stats = script.epe_stats(off, truth, valid)
        assert stats["epe"] == pytest.approx(1.25) and stats["epe_median"] == pytest.approx(0, abs=1e-6)
        assert stats["epe_p90"] == pytest.approx(5)
        record = script.main(
            [
                *(
                    "--scale",
                    "8",
                    "--flow-refine",
                    "3",
                    "--back-project",
                    "3",
                    "--out",
                    str(tmp_path / "t.json"),
                ),
                *(
                    "--overrides",
                    "data.eval_crop_size=64",
                    "data.lists.val=null",
                    "data.lists.test=[balloons]",
                ),
            ]
        )
    assert set(record["means"]) == {"own", "refined", "true"} and (tmp_path / "t.json").is_file()
    assert "epe" in record["means"]["own"] and "epe" not in record["means"]["true"]
    assert all(v["psnr"] > 15 for v in record["means"].values())


def test_shift_lr_side_moves_the_scene_seen_by_the_lr_side(common):
    from sschsr.data.spectral import camera_srf, default_wavelengths
    from sschsr.ops.degrade import degrade, upsample

    scale, slope, shift = 4, 0.004, 1.5
    x = torch.arange(64, dtype=torch.float32)
    hr = (0.2 + slope * x).expand(1, 5, 64, 64).contiguous()  # a ramp along x, the same in every band
    srf = torch.as_tensor(camera_srf(default_wavelengths(5)), dtype=torch.float32)[None]
    batch = {
        "hr": hr,
        "ref": torch.rand(1, 3, 64, 64),
        "srf": srf,
        "lr_up": upsample(degrade(hr, scale), scale),
    }
    assert common.shift_lr_side(batch, scale, 0.0) is batch
    moved = common.shift_lr_side(batch, scale, shift)
    assert moved["hr"] is hr and moved["ref"] is batch["ref"]
    assert moved["lr_up"].shape == hr.shape and moved["rgb_hsi"].shape == (1, 3, 64, 64)
    # the scene moved right by `shift` px: a ramp reads `slope * shift` lower away from the borders
    inner = (..., slice(16, 48), slice(16, 48))
    torch.testing.assert_close(
        (batch["lr_up"] - moved["lr_up"])[inner], torch.full((1, 5, 32, 32), slope * shift), atol=1e-4, rtol=0
    )


def _git(*args: str) -> str:
    """The output of ``git ARGS`` in this checkout."""
    return subprocess.run(
        ["git", *args], cwd=EXPERIMENTS.parent, capture_output=True, text=True, check=True
    ).stdout


def _git_tracks_the_weights() -> bool:
    """True where this checkout is a git repository whose HEAD holds the shipped weights."""
    try:
        return ".safetensors" in _git("ls-tree", "--name-only", "HEAD", "src/sschsr/weights/")
    except (OSError, subprocess.CalledProcessError):
        return False


@pytest.mark.skipif(not _git_tracks_the_weights(), reason="needs a git checkout holding the weights")
def test_weights_at_copies_the_shipped_weights_of_a_commit(tmp_path):
    script = EXPERIMENTS / "weights_at.sh"
    weights = EXPERIMENTS.parent / "src" / "sschsr" / "weights"
    dirty = _git("status", "--porcelain", str(weights))
    done = subprocess.run(["bash", str(script), "HEAD", str(tmp_path / "w")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copied = sorted(p.name for p in (tmp_path / "w").iterdir())
    assert copied == sorted(p.name for p in weights.glob("*.safetensors"))
    if not dirty:  # the working tree's weights are HEAD's
        for name in copied:
            assert (tmp_path / "w" / name).read_bytes() == (weights / name).read_bytes()

    bad = subprocess.run(
        ["bash", str(script), "no-such-commit", str(tmp_path / "x")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "error:" in bad.stderr and not (tmp_path / "x").exists()
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def test_eval_sr_refuses_bad_refiner_settings_before_any_work(tmp_path, capsys):
    for script in experiments_module("eval_sr"):
        for bad in ('{"iters": 3}', '{"scale": 4}', '{"window": -1}', '{"no_such_field": 1}', "[1]", "{"):
            with pytest.raises(SystemExit) as e:
                script.main(["--scale", "8", "--flow-refiner", bad, "--out", str(tmp_path / "r.json")])
            assert e.value.code == 2 and "--flow-refiner" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_eval_flow_refines_with_the_given_settings(tmp_path):
    for script in experiments_module("eval_flow"):
        args = [
            *("--ckpt", str(EXPERIMENTS.parent / "src/sschsr/weights/sschsr_x8.safetensors")),
            *("--scales", "8", "--pairs", "1", "--size", "64", "--scenes", "beads", "--flow-tta", "1"),
            *("--flow-refine", "3", "--out", str(tmp_path / "f.json")),
        ]
        record = script.main([*args, "--flow-refiner", '{"window": [1, 3]}'])  # not the default
        with pytest.raises(SystemExit) as e:
            script.main([*args, "--flow-refiner", '{"iters": 3}'])
        assert e.value.code == 2
    assert record["settings"]["flow_refiner"]["window"] == [1, 3]
    assert record["settings"]["flow_refiner"]["iters"] == 3


def test_eval_flow_splits_the_error_at_motion_edges_and_flat_regions():
    for script in experiments_module("eval_flow"):
        h, w = 16, 20
        flow_gt = torch.zeros(2, h, w)
        flow_gt[0, :, 10:] = 5.0  # a depth edge between columns 9 and 10
        flow_gt[1] += torch.linspace(0, 0.5, w)  # smooth motion is no edge
        edges = script.motion_edges(flow_gt)
        assert edges[:, 8:12].all() and not edges[:, :8].any() and not edges[:, 12:].any()

        ref = torch.full((3, h, w), 0.5)
        ref[:, :, 10:] += 0.2 * torch.rand(3, h, 10, generator=torch.Generator().manual_seed(0))
        flat = script.flat_regions(ref)
        assert flat[:, :6].all() and not flat[:, 10:].any()

        flow = flow_gt.clone()
        flow[0, :, 8:12] += 2.0  # wrong by 2 px at the edge only
        valid = torch.ones(h, w, dtype=torch.bool)
        e = script.flow_errors(flow, flow_gt, valid, ref)
        n = h * w
        assert e["edge"].sum() == 4 * h and torch.allclose(e["edge_epe"].sum() / n, e["epe"].sum() / n)
        assert torch.allclose(e["edge_epe"].sum() / e["edge"].sum(), torch.tensor(2.0))
        assert e["flat_epe"].sum() == 0  # the error is at columns 8-11; flat ends by column 5
        assert set(script.flow_errors(flow, flow_gt, valid)) == {"epe", "1px", "3px", "5px", "zero_epe"}


def test_eval_warp_records_the_gain_and_the_detail_kept(tmp_path):
    for script in experiments_module("eval_warp"):
        record = script.main(
            [
                *("--ckpt", str(EXPERIMENTS.parent / "src/sschsr/weights/sschsr_x8.safetensors")),
                *("--scales", "8", "--pairs", "1", "--size", "64", "--scenes", "beads", "--flow-tta", "1"),
                *("--out", str(tmp_path / "w.json")),
            ]
        )
    row = record["scales"]["8"]["scenes"]["beads"]
    assert row["gain"] == pytest.approx(row["psnr_warp"] - row["psnr_warp0"])
    assert 0.0 < row["detail_warp0"] < 3.0 and 0.0 < row["detail_warp"] < 3.0
    assert record["scales"]["8"]["all"]["count"] == 1


def test_refine_sweep_scores_each_variant_on_the_same_flow(tmp_path):
    for script in experiments_module("refine_sweep"):
        args = [
            *("--ckpt", str(EXPERIMENTS.parent / "src/sschsr/weights/sschsr_x8.safetensors")),
            *("--scales", "8", "--pairs", "1"),
            *("--size", "64", "--scenes", "beads", "--flow-tta", "1", "--out", str(tmp_path / "r.json")),
        ]
        record = script.main([*args, "--variant", '{"iters": 0}', "--variant", '{"iters": 3, "cells": [32]}'])
        for bad in ('{"scale": 4}', '{"window": -1}', '{"no_such_field": 1}', "[1]", "{"):
            with pytest.raises(SystemExit) as e:
                script.main([*args, "--variant", bad])
            assert e.value.code == 2
        for given in (["--flow-refine", "3"], ["--flow-refiner", "{}"], ["--flow-refiner={}"]):
            with pytest.raises(SystemExit) as e:  # the settings belong in the variants
                script.main([*args, *given])
            assert e.value.code == 2
    assert (tmp_path / "r.json").is_file()
    assert record["variants"]["v0"]["iters"] == 0 and record["variants"]["v1"]["cells"] == [32]
    epe = record["scales"]["8"]["all"]
    assert epe["v0"] == pytest.approx(epe["net"])  # no steps: the network's own flow
    assert epe["v1"] != epe["net"] and set(record["scales"]["8"]["scenes"]) == {"beads"}


def test_refine_sweep_can_start_from_the_true_flow(tmp_path):
    for script in experiments_module("refine_sweep"):
        args = [
            *("--ckpt", str(EXPERIMENTS.parent / "src/sschsr/weights/sschsr_x8.safetensors")),
            *("--scales", "8", "--pairs", "1", "--size", "64", "--scenes", "beads", "--flow-tta", "1"),
            *("--variant", '{"iters": 0}', "--variant", '{"iters": 3}', "--out", str(tmp_path / "r.json")),
        ]
        record = script.main([*args, "--start", "true"])
        half = script.main([*args, "--start", "0.5"])
        for bad in ("nowhere", "1.5", "-0.1"):
            with pytest.raises(SystemExit) as e:
                script.main([*args, "--start", bad])
            assert e.value.code == 2
        assert script.start_weight("net") == 1.0 and script.start_weight("true") == 0.0
    epe = record["scales"]["8"]["all"]
    assert record["start"] == "true"
    assert epe["v0"] == pytest.approx(0.0, abs=1e-6)  # no steps: the true flow itself
    assert 0 < epe["v1"] < epe["net"]
    half_epe = half["scales"]["8"]["all"]
    assert half_epe["net"] == pytest.approx(epe["net"])
    assert half_epe["v0"] == pytest.approx(epe["net"] / 2, rel=1e-4)  # no steps: every pixel's error halves


def test_refine_sweep_rewarm_runs_the_network_again_from_each_refined_flow(tmp_path):
    for script in experiments_module("refine_sweep"):
        args = [
            *("--ckpt", str(EXPERIMENTS.parent / "src/sschsr/weights/sschsr_x8.safetensors")),
            *("--scales", "8", "--pairs", "1", "--size", "64", "--scenes", "beads", "--flow-tta", "1"),
            *("--variant", '{"iters": 0}', "--variant", '{"iters": 3}', "--out", str(tmp_path / "r.json")),
        ]
        record = script.main([*args, "--rewarm", "2"])
        plain = script.main(args)
        with pytest.raises(SystemExit) as e:
            script.main([*args, "--rewarm", "-1"])
        assert e.value.code == 2
    epe = record["scales"]["8"]["all"]
    assert record["rewarm"] == 2 and plain["rewarm"] == 0 and "v0w" not in plain["scales"]["8"]["all"]
    assert {"v0w", "v0wr", "v1w", "v1wr"} <= set(epe)
    assert epe["v0wr"] == pytest.approx(epe["v0w"])  # a variant of no steps leaves the second flow as it is
    assert epe["v0w"] != pytest.approx(epe["net"])  # two more updates from the network's flow move it
    assert epe["v1wr"] != pytest.approx(epe["v1w"])


def _options(argv: list[str]) -> list[tuple[str, ...]]:
    """An experiments/*.py command line as its script and sorted (option, values...) groups."""
    groups: list[tuple[str, ...]] = []
    for token in argv[1:]:
        if token.startswith("--"):
            groups.append((token,))
        else:
            groups[-1] = (*groups[-1], token)
    return [(Path(argv[0]).name,), *sorted(groups)]


@pytest.mark.parametrize("scale", [4, 8])
def test_eval_shipped_lists_every_shipped_record_with_its_recorded_command(scale):
    script = EXPERIMENTS / "eval_shipped.sh"
    done = subprocess.run(
        ["bash", str(script), str(scale)],
        capture_output=True,
        text=True,
        env={**os.environ, "DRY_RUN": "1", "PY": "python"},
    )
    assert done.returncode == 0, done.stderr
    results = EXPERIMENTS / "results"
    listed = {}
    for line in done.stdout.splitlines():
        argv = shlex.split(line)[1:]  # without the interpreter
        out = (
            argv[argv.index("--out") + 1]
            if "--out" in argv
            else f"experiments/results/true_flow_gain_x{scale}.json"
        )
        listed[Path(out).name] = _options(argv)
    expected = {p.name for p in results.glob(f"sr_eval_shipped_x{scale}*.json")}
    shipped_file = (
        f"--ckpt src/sschsr/weights/sschsr_x{scale}.safetensors"  # flow records of other networks stay out
    )
    expected |= {
        p.name
        for p in results.glob(f"flow_eval_x{scale}*.json")
        if shipped_file in json.loads(p.read_text())["command"]
    }
    expected |= {
        f"warp_eval_x{scale}.json",
        f"warp_eval_x{scale}_refined.json",
        f"true_flow_gain_x{scale}.json",
    }
    assert set(listed) == expected
    for name, options in listed.items():  # the script reruns each record as it was made
        recorded = shlex.split(json.loads((results / name).read_text())["command"])[1:]
        assert _options(recorded) == options, name

    bad = subprocess.run(["bash", str(script), "5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "usage:" in bad.stderr


@pytest.fixture(scope="module")
def swap():
    yield from experiments_module("swap_flow")


def test_swap_flow_puts_the_other_flow_network_in_and_keeps_the_rest(swap, tmp_path):
    from sschsr.checkpoints import load_model, save_flow_net, save_model
    from sschsr.models.flow import RAFT
    from sschsr.models.sschsr import SSCHSR
    from sschsr.models.warpnet import WarpNet

    torch.manual_seed(0)
    net = SSCHSR(6, "lite", flow_net=RAFT("small", iters=2), warpnet=WarpNet(), flow_iters=2)
    model = save_model(net, tmp_path / "m.safetensors", scale=4, parts=("flow_net", "warpnet"))
    other = RAFT("small", iters=5)  # its own random weights; the updates stay the model's
    flow = save_flow_net(other, tmp_path / "flow.safetensors")

    def run(flow_file, out):
        return swap.main(["--model", str(model), "--scale", "4", "--flow", str(flow_file), "--out", str(out)])

    out = run(flow, tmp_path / "s.safetensors")
    swapped, before = load_model(out, 4), load_model(model, 4)
    for k, v in other.state_dict().items():
        torch.testing.assert_close(swapped.flow_net.state_dict()[k], v)
    k0 = next(iter(other.state_dict()))
    assert not torch.equal(before.flow_net.state_dict()[k0], swapped.flow_net.state_dict()[k0])
    assert swapped.flow_net.iters == before.flow_net.iters == 2
    keep = {k: v for k, v in before.state_dict().items() if not k.startswith("flow_net.")}
    for k, v in swapped.state_dict().items():
        if not k.startswith("flow_net."):
            torch.testing.assert_close(v, keep[k])
    # a flow network built otherwise is refused with an error line, exit 2, nothing written
    save_flow_net(RAFT("small", iters=2, hidden_dim=64), tmp_path / "wide.safetensors")
    with pytest.raises(SystemExit) as e:
        run(tmp_path / "wide.safetensors", tmp_path / "bad.safetensors")
    assert e.value.code == 2 and not (tmp_path / "bad.safetensors").exists()
    from sschsr.checkpoints import WEIGHTS_DIR

    with pytest.raises(SystemExit) as e:  # the package's weights go through export_weights.py
        run(flow, WEIGHTS_DIR / "x.safetensors")
    assert e.value.code == 2 and not (WEIGHTS_DIR / "x.safetensors").exists()


@pytest.fixture(scope="module")
def bench_flow():
    yield from experiments_module("bench_flow")


def test_bench_flow_times_each_variant_and_checks_it_against_float32(bench_flow, tmp_path):
    from sschsr.checkpoints import save_flow_net
    from sschsr.models.flow import RAFT

    torch.manual_seed(0)
    path = save_flow_net(RAFT("small", iters=2), tmp_path / "flow.safetensors")
    out = tmp_path / "bench.json"
    record = bench_flow.main(
        ["--flow", str(path), "--size", "48", "--iters", "2", "--device", "cpu", "--dtypes", "float32",
         "bfloat16", "--warmup", "1", "--repeats", "3", "--out", str(out)]
    )  # fmt: skip
    assert json.loads(out.read_text())["variants"] == record["variants"]
    assert set(record["variants"]) == {"float32", "bfloat16"}
    assert record["variants"]["float32"]["relative_error"] == 0.0  # the same function as the reference
    assert 0.0 < record["variants"]["bfloat16"]["relative_error"] < 0.1
    for v in record["variants"].values():
        assert 0.0 < v["min_ms"] <= v["median_ms"] <= v["p90_ms"]
    assert bench_flow.relative_error(torch.tensor([float("nan"), 1.0]), torch.ones(2)) == float("inf")


@pytest.fixture(scope="module")
def bench_model():
    yield from experiments_module("bench_model")


def test_bench_model_writes_the_contract_fields_for_each_size(bench_model, tmp_path):
    out = tmp_path / "bench.json"
    record = bench_model.main(
        ["--scale", "4", "--sizes", "32", "40", "--device", "cpu", "--warmup", "0", "--repeats", "2",
         "--train-repeats", "1", "--out", str(out)]
    )  # fmt: skip
    on_disk = json.loads(out.read_text())
    for field in ("device", "inference_ms", "peak_mem_mb", "train_step_ms_128_b4", "model", "commit"):
        assert on_disk[field] == record[field]
    assert set(record["inference_ms"]) == {"32", "40"} and min(record["inference_ms"].values()) > 0
    assert record["peak_mem_mb"] == {"32": None, "40": None}  # not tracked on the CPU
    assert record["train_step_ms_128_b4"] > 0 and record["model"] == "shipped x4"
    for bad in (["--sizes", "30"], ["--repeats", "0"], ["--scale", "3"]):  # 30: not a multiple of the scale
        with pytest.raises(SystemExit) as e:
            bench_model.main(["--scale", "4", "--device", "cpu", "--train-repeats", "0", *bad])
        assert e.value.code == 2


def test_bench_model_training_step_updates_the_trainable_weights_only(bench_model):
    from sschsr.checkpoints import load_model

    net = load_model(None, 4).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    step = bench_model.train_step_fn(net, None, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    lr_up, ref, rgb_hsi = bench_model.inputs(net, 32, 2, 4, g)
    loss = step(lr_up, ref, rgb_hsi, torch.rand(lr_up.shape, generator=g), torch.rand(ref.shape, generator=g))
    assert torch.isfinite(loss)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and not any(k.startswith("flow_net.") for k in changed)  # the flow network stays frozen


@pytest.fixture(scope="module")
def tta_subsets():
    yield from experiments_module("tta_subsets")


def test_tta_subset_names_round_trip(tta_subsets):
    """The transforms of tta_subsets.py's records are written as T/H/V and read back; the subset taken as the
    default is the one of that name."""
    from sschsr.models.ensemble import TRANSFORMS

    for g in TRANSFORMS[8]:
        assert tta_subsets.parse(tta_subsets.label(g)) == g
    assert tta_subsets.CANDIDATES["id T H V"] == TRANSFORMS[4]
    assert set(tta_subsets.CANDIDATES["all 8"]) == set(TRANSFORMS[8])
    with pytest.raises(ValueError, match="T, H and V"):
        tta_subsets.parse("R90")


@pytest.fixture(scope="module")
def profile_predict():
    yield from experiments_module("profile_predict")


def test_profile_reads_cumulative_time_by_file_and_function(profile_predict):
    """profile_predict.py's split: a function's cumulative seconds, found by its file and name (summed over
    the places it is defined under that name in the file)."""
    from types import SimpleNamespace

    stats = SimpleNamespace(
        stats={
            ("/x/src/sschsr/models/sschsr.py", 389, "forward"): (4, 4, 0.1, 6.25, {}),
            ("/x/src/sschsr/models/sschsr.py", 500, "forward"): (1, 1, 0.0, 0.5, {}),
            ("/x/src/sschsr/models/other.py", 10, "forward"): (1, 1, 0.0, 9.0, {}),
        }
    )
    assert profile_predict.cumulative(stats, "sschsr/models/sschsr.py", "forward") == 6.75
    assert profile_predict.cumulative(stats, "sschsr/models/sschsr.py", "estimate_flow") == 0
