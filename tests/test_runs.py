"""Run records, the chain of stages, sweep summaries and the experiment workflows (train-all, scale sweeps,
ablations) at debug=tiny on CPU."""

from __future__ import annotations

import csv
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import compose_run
from sschsr.cli._common import CONF_DIR
from sschsr.cli.summarize import main as summarize_main
from sschsr.cli.summarize import summarize
from sschsr.cli.train import stage_overrides, train, train_chain
from sschsr.errors import InputError
from sschsr.lit.runs import find_run, read_run, resolve_earlier_stages

BIN = Path(sys.executable).parent


def fake_run(
    root: Path, name: str, task: str, scale: int, finished: str = "2026-01-01T00:00:00", **extra
) -> Path:
    """A run folder with a run.json and a checkpoint file, as a finished training run leaves it."""
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.write_bytes(b"x")
    record = {
        "status": "finished",
        "task": task,
        "scale": scale,
        "debug": None,
        "finished": finished,
        "run_dir": str(run),
        "best_ckpt": None,
        "last_ckpt": str(ckpt),
        "parents": {"flow_ckpt": None, "warp_ckpt": None},
        **extra,
    }
    (run / "run.json").write_text(json.dumps(record))
    return run


class TestFindRun:
    def test_newest_finished_at_the_scale(self, tmp_path):
        fake_run(tmp_path, "a", "stage1", 4, finished="2026-01-01T00:00:00")
        newest = fake_run(tmp_path, "b", "stage1", 4, finished="2026-01-02T00:00:00")
        fake_run(tmp_path, "c", "stage1", 8, finished="2026-01-03T00:00:00")  # another scale
        fake_run(tmp_path, "d", "stage1", 4, finished="2026-01-04T00:00:00", status="failed")
        fake_run(tmp_path, "e", "stage2", 4, finished="2026-01-05T00:00:00")  # another task
        fake_run(tmp_path, "f", "stage1", 4, finished="2026-01-06T00:00:00", debug="tiny")  # a debug run
        assert find_run(tmp_path, "stage1", 4)["run_dir"] == str(newest)
        assert find_run(tmp_path, "stage1", 4, allow_debug=True)["run_dir"] == str(tmp_path / "f")
        assert find_run(tmp_path, "stage1", 16) is None

    def test_a_run_without_its_checkpoint_is_passed_over(self, tmp_path):
        run = fake_run(tmp_path, "a", "stage1", 4)
        (run / "checkpoints" / "last.ckpt").unlink()
        assert find_run(tmp_path, "stage1", 4) is None

    def test_a_running_record_of_a_dead_process_reads_as_died(self, tmp_path):
        import socket

        done = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
        )
        run = fake_run(
            tmp_path, "a", "stage1", 4, status="running", pid=int(done.stdout), host=socket.gethostname()
        )
        assert read_run(run)["status"] == "died"
        assert find_run(tmp_path, "stage1", 4) is None
        with pytest.raises(InputError, match="not a readable run record"):
            read_run(tmp_path / "nothing")


class TestResolveEarlierStages:
    def test_stage2_takes_the_stage1_checkpoint(self, tmp_path):
        run = fake_run(tmp_path, "s1", "stage1", 4)
        stages = resolve_earlier_stages("stage2", 4, None, None, tmp_path)
        assert stages.flow_ckpt == str(run / "checkpoints" / "last.ckpt") and stages.warp_ckpt is None
        assert stages.chained_from == {"stage1": str(run)}

    def test_full_takes_the_stage2_checkpoint_or_its_flow_without_warpnet(self, tmp_path):
        flow = fake_run(tmp_path, "s1", "stage1", 4) / "checkpoints" / "last.ckpt"
        s2 = fake_run(tmp_path, "s2", "stage2", 4, parents={"flow_ckpt": str(flow), "warp_ckpt": None})
        stages = resolve_earlier_stages("full", 4, None, None, tmp_path)
        assert stages.warp_ckpt == str(s2 / "checkpoints" / "last.ckpt") and stages.flow_ckpt is None
        no_warp = resolve_earlier_stages("full", 4, None, None, tmp_path, needs_warpnet=False)
        assert no_warp.flow_ckpt == str(flow) and no_warp.warp_ckpt is None

    def test_none_there_names_the_command_and_refuses_another_scale(self, tmp_path):
        fake_run(tmp_path, "s1", "stage1", 8)
        with pytest.raises(InputError, match=r"sschsr-train experiment=stage1 scale=4.*") as e:
            resolve_earlier_stages("stage2", 4, None, None, tmp_path)
        assert "x8 finished" in str(e.value)  # says what is there

    def test_debug_runs_do_not_count_for_a_real_run(self, tmp_path):
        fake_run(tmp_path, "s1", "stage1", 4, debug="tiny")
        with pytest.raises(InputError, match="debug preset's runs do not count"):
            resolve_earlier_stages("stage2", 4, None, None, tmp_path)
        assert resolve_earlier_stages("stage2", 4, None, None, tmp_path, debug="fdr").flow_ckpt

    def test_given_files_untrained_and_bad_policy(self, tmp_path, caplog):
        assert resolve_earlier_stages("stage2", 4, "f.ckpt", None, tmp_path).flow_ckpt == "f.ckpt"
        assert resolve_earlier_stages("stage1", 4, None, None, tmp_path).parents() == {
            "flow_ckpt": None,
            "warp_ckpt": None,
        }
        for policy in ("newest_or_untrained", "untrained"):
            caplog.clear()
            assert resolve_earlier_stages("full", 4, None, None, tmp_path, policy=policy).warp_ckpt is None
            assert "untrained" in caplog.text
        with pytest.raises(InputError, match="earlier_stages=sometimes"):
            resolve_earlier_stages("full", 4, None, None, tmp_path, policy="sometimes")


def test_stage_overrides_drop_the_chain_s_own():
    got = stage_overrides(
        ["experiment=chain", "scale=4", "chain.full=[a=1]", "hydra.verbose=true", "debug=tiny"]
    )
    assert got == ["scale=4", "debug=tiny"]


def test_a_real_full_run_with_no_earlier_stage_stops_before_training(tmp_path):
    cfg = compose_run(tmp_path, ["experiment=full", "scale=4", "logger=none"])
    with pytest.raises(InputError, match="run `sschsr-train experiment=stage2 scale=4` first"):
        train(cfg)
    assert not (tmp_path / "run.json").exists()


def test_chain_trains_three_stages_each_on_the_one_before(tmp_path):
    """experiment=chain debug=tiny: three run.json, each stage's parents in the folder before it, the
    checkpoints written, the metrics of each stage recorded."""
    cfg = compose_run(tmp_path, ["experiment=chain", "debug=tiny", "scale=4", "logger=none"])
    metrics, objects = train_chain(cfg)
    records = {s: read_run(tmp_path / s) for s in ("stage1", "stage2", "full")}
    assert [r["status"] for r in records.values()] == ["finished"] * 3
    assert [r["task"] for r in records.values()] == ["stage1", "stage2", "full"]
    s1, s2, full = records.values()
    assert Path(s2["parents"]["flow_ckpt"]).parent.parent == tmp_path / "stage1"
    assert Path(full["parents"]["warp_ckpt"]).parent.parent == tmp_path / "stage2"
    assert full["chained_from"] == {"stage2": str(tmp_path / "stage2")}
    for r in records.values():
        assert r["scale"] == 4 and r["debug"] == "tiny" and r["global_step"] == 4
        assert Path(r["last_ckpt"]).is_file() and Path(r["best_ckpt"]).is_file()
        assert "scale=4" in r["overrides"] and r["started"] <= r["finished"]
        assert r["params"]["trainable"] > 0
    assert "val/epe" in s1["metrics"]["final"] and "val/psnr" in full["metrics"]["final"]
    assert full["metrics"]["best"].keys() == {"val/psnr"}
    assert metrics["val/psnr"] == pytest.approx(full["metrics"]["final"]["val/psnr"])


def test_a_failing_run_says_so(tmp_path, monkeypatch):
    cfg = compose_run(tmp_path, ["experiment=stage1", "debug=tiny", "logger=none"])
    import lightning as L

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory\nmore lines")

    monkeypatch.setattr(L.Trainer, "fit", boom)
    with pytest.raises(RuntimeError):
        train(cfg)
    record = read_run(tmp_path)
    assert record["status"] == "failed" and record["error"] == "RuntimeError: out of memory"
    assert record["finished"] and record["wall_s"] is not None


# ----------------------------------------------------------------------------------------- summaries
def fake_sweep(root: Path) -> Path:
    """A multirun folder: full + one ablation at two seeds, and a job that died before its record."""
    values = {("full", 1): 30.0, ("full", 2): 31.0, ("no_rmca", 1): 29.0, ("no_rmca", 2): 30.5}
    for num, ((variant, seed), psnr) in enumerate(values.items()):
        metrics = {"final": {"val/psnr": psnr, "val/sam": 5.0, "val/loss": 0.1}, "best": {}, "test": {}}
        fake_run(root, f"{num}_x4", "full", 4, variant=variant, seed=seed, metrics=metrics, wall_s=2.0,
                 params={"total": 10, "trainable": 10}, global_step=4)  # fmt: skip
    (root / "4_x4").mkdir()
    return root


def test_summary_rows_statistics_and_differences(tmp_path):
    written = summarize(fake_sweep(tmp_path))
    rows = list(csv.DictReader(written["csv"].open()))
    assert [r["job"] for r in rows] == ["0_x4", "1_x4", "2_x4", "3_x4", "4_x4"]
    assert rows[-1]["status"] == "no run.json"
    assert list(rows[0])[:9] == [
        "job",
        "task",
        "scale",
        "variant",
        "seed",
        "status",
        "val_psnr",
        "val_sam",
        "val_loss",
    ]
    assert {r["variant"] for r in rows[:4]} == {"full", "no_rmca"} and rows[2]["val_psnr"] == "29.0"
    md = written["md"].read_text()
    assert "| 4 | full | 2 | 30.5 ± 0.71 |" in md  # mean and sample std of 30, 31
    assert "| 4 | no_rmca | 2 | -0.75 ± 0.35 |" in md  # -1 and -0.5 from full at the same seeds
    assert written["png"].stat().st_size > 1000


def test_summarize_cli(tmp_path, capsys):
    assert summarize_main([str(fake_sweep(tmp_path))]) == 0
    assert "Difference from the full model" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        summarize_main([str(tmp_path / "none")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a folder" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- the workflows, end to end
def run_make(target: str, log_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """``sschsr-train`` as the Makefile target runs it (the same command line), with SSCHSR_LOG_DIR set."""
    lines = subprocess.run(
        ["make", "-n", "--no-print-directory", target, *args], capture_output=True, text=True,
        cwd=CONF_DIR.parent, check=True,
    ).stdout.replace("\\\n", " ").splitlines()  # fmt: skip
    command = next(line for line in lines if "sschsr-train" in line).replace(".venv/bin/", str(BIN) + "/")
    env = {**os.environ, "SSCHSR_LOG_DIR": str(log_dir), "WANDB_MODE": "offline"}
    done = subprocess.run(
        command, shell=True, capture_output=True, text=True, env=env, cwd=CONF_DIR.parent, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def one(paths: list[Path]) -> Path:
    assert len(paths) == 1, paths
    return paths[0]


@pytest.mark.slow
def test_make_train_all_sweep_and_ablations_at_debug_tiny(tmp_path):
    """The issue's acceptance: train-all leaves a full run whose parents lead to stage 2 and stage 1; a
    2-scale sweep a summary with both scales and a PSNR column and the plot; 2-seed ablations 4 x 2 rows."""
    run_make("train-all", tmp_path, "SCALE=4", "ARGS=debug=tiny")
    full = read_run(one(list(tmp_path.glob("debug/chain/runs/*/full"))))
    stage2 = read_run(Path(full["parents"]["warp_ckpt"]).parent.parent)
    stage1 = read_run(Path(stage2["parents"]["flow_ckpt"]).parent.parent)
    assert (full["task"], stage2["task"], stage1["task"]) == ("full", "stage2", "stage1")

    run_make("sweep-scales", tmp_path, "SCALES=4,8", "ARGS=debug=tiny")
    sweep = one(list(tmp_path.glob("debug/chain/multiruns/*")))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [(r["job"], r["scale"], r["status"]) for r in rows] == [
        ("0_x4", "4", "finished"),
        ("1_x8", "8", "finished"),
    ]
    assert all(float(r["val_psnr"]) > 0 for r in rows)
    assert (sweep / "metrics_vs_scale.png").stat().st_size > 1000

    run_make("ablations", tmp_path, "SCALE=4", "SEEDS=1,2", "ARGS=debug=tiny")
    sweep = one(list(tmp_path.glob("debug/full/multiruns/*")))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert sorted((r["variant"], r["seed"]) for r in rows) == sorted(
        (v, s) for v in ("full", "no_warpnet", "no_iterative", "no_rmca") for s in ("1", "2")
    )
    assert all(r["status"] == "finished" for r in rows)
    parents = {json.dumps(read_run(r["run_dir"])["chained_from"]) for r in rows}
    assert len(parents) == 1  # every variant on the same earlier stages
    assert "Difference from the full model" in (sweep / "summary.md").read_text()


def wandb_records(path: Path) -> list:
    """The records of an offline wandb run file (LevelDB-log framing: 32 KiB blocks of chunks with a
    7-byte header: crc, length, type; a 7-byte file header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


@pytest.mark.slow
def test_offline_wandb_run_is_named_grouped_and_tagged(tmp_path):
    pytest.importorskip("wandb")
    env = {**os.environ, "SSCHSR_LOG_DIR": str(tmp_path), "WANDB_MODE": "offline"}
    command = [str(BIN / "sschsr-train"), "-m", "experiment=full", "debug=tiny", "seed=3", "ablation=no_rmca",
               "logger=wandb", "earlier_stages=untrained"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = one(list(tmp_path.glob("debug/full/multiruns/*")))
    records = wandb_records(one(list(sweep.glob("0_x4/wandb/offline-run-*/*.wandb"))))
    run = one([r.run for r in records if r.WhichOneof("record_type") == "run"])
    assert run.display_name == "full-x4-no_rmca-s3"
    assert run.run_group == f"full-{sweep.name}" and run.job_type == "no_rmca"
    assert {"x4", "no_rmca", "s3"} <= set(run.tags)
    logged = {
        i.key or "/".join(i.nested_key)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for i in r.history.item
    }
    assert {"val/psnr", "val/sam", "val/sr/_type", "val/spectra/_type"} <= logged
    assert any(r.WhichOneof("record_type") == "config" for r in records)


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
DEBUGS = sorted(p.stem for p in (CONF_DIR / "debug").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("debug", DEBUGS)
def test_every_experiment_composes_with_every_debug_preset(experiment, debug, tmp_path):
    cfg = compose_run(tmp_path, [f"experiment={experiment}", f"debug={debug}"])
    assert cfg.data.num_workers == 0 and cfg.earlier_stages in ("newest_or_untrained", "untrained")


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["stage1", "stage2", "full"])
@pytest.mark.parametrize("debug", ["fdr", "limit", "tiny"])
def test_debug_presets_run_for_every_stage(experiment, debug, tmp_path):
    overrides = [f"experiment={experiment}", f"debug={debug}", "logger=none"]
    if debug != "tiny":  # the procedural defaults are 256 px scenes: keep the run small
        overrides += ["data.source.num=6", "data.source.size=64", "data.crop_size=32", "data.eval_crop_size=32",
                      "data.val=1", "data.test=1", "data.batch_size=2"]  # fmt: skip
    metrics, objects = train(compose_run(tmp_path, overrides))
    assert objects["record"]["status"] == "finished"
