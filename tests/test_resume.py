"""Exact resume (issue 36): the training stream is a function of (seed, epoch, position), the loader's
position and every random generator travel in the checkpoint, and a run killed after a checkpoint and
resumed ends with the weights of the run never stopped."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from sschsr.data.datamodules import HSIDataModule
from sschsr.data.datasets import ProceduralScenes
from sschsr.data.pair_dataset import PairDataset
from sschsr.data.sampling import Draw, ResumableLoader, TrainingStream
from sschsr.errors import InputError
from sschsr.lit.callbacks import RNGStates, rng_states, set_rng_states
from test_safety import BIN, ENV

# ------------------------------------------------------------------------------------------ the stream


def test_stream_numbers_each_item_once_and_splits_batches_between_ranks():
    """Ranks take alternate global batches; together they draw every position of the epoch's order once."""
    single = list(TrainingStream(24, 6, batch_size=3, seed=5).draws(epoch=2))
    assert [d.number for d in single] == list(range(24)) and {d.epoch for d in single} == {2}
    ranks = [
        list(TrainingStream(24, 6, batch_size=3, seed=5, num_replicas=2, rank=r).draws(2)) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == 12  # lockstep: the same number of batches on every rank
    assert [d.number for d in ranks[0][:6]] == [0, 1, 2, 6, 7, 8]
    assert [d.number for d in ranks[1][:3]] == [3, 4, 5]
    # without sharding a rank's draws are the single process's at the same numbers
    unsharded = [list(TrainingStream(24, 6, 3, 5, 2, r, shard=False).draws(2)) for r in (0, 1)]
    assert sorted(unsharded[0] + unsharded[1], key=lambda d: d.number) == single


def test_stream_changes_with_epoch_and_seed_and_repeats_otherwise():
    s = TrainingStream(40, 8, batch_size=4, seed=1)
    pairs = [[d.pair for d in s.draws(e)] for e in (0, 1, 0)]
    assert pairs[0] == pairs[2] and pairs[0] != pairs[1]
    assert [d.pair for d in TrainingStream(40, 8, 4, seed=2).draws(0)] != pairs[0]
    # every pair drawn equally often over an epoch of whole multiples
    assert np.bincount(pairs[0], minlength=8).tolist() == [5] * 8


def test_stream_shards_pairs_by_worker_and_rank():
    """Local batch j of rank r draws from block r * workers + j % workers of the pairs."""
    s = TrainingStream(48, 8, batch_size=2, seed=0, num_replicas=2, rank=1, num_workers=2)
    draws = list(s.draws(0))
    for j in range(s.batches):
        batch = draws[j * 2 : (j + 1) * 2]
        block = 2 + j % 2  # rank 1's blocks are 2 and 3 of 4: pairs 4-5 and 6-7
        assert all(block * 2 <= d.pair < block * 2 + 2 for d in batch), (j, batch)
    # fewer pairs than blocks: no sharding
    assert TrainingStream(48, 3, 2, 0, 2, 1, num_workers=2).blocks == 1


def test_stream_length_and_bad_settings():
    assert len(TrainingStream(10, 5, batch_size=4, seed=0)) == 8  # the last partial batch dropped
    assert len(TrainingStream(3, 3, batch_size=4, seed=0)) == 4  # shorter than a batch: one batch, wrapped
    assert len(TrainingStream(40, 5, 4, 0, num_replicas=3, rank=2)) == 12  # 10 global batches, 3 per rank
    with pytest.raises(InputError, match="rank"):
        TrainingStream(10, 5, 2, 0, num_replicas=2, rank=2)
    with pytest.raises(InputError, match="batch size"):
        TrainingStream(10, 5, 0, 0)


# ------------------------------------------------------------------------------------------ the items


@pytest.fixture(scope="module")
def dataset() -> PairDataset:
    src = ProceduralScenes(num=3, size=48, n_bands=6, seed=0)
    return PairDataset(src, src.names(), scale=4, crop_size=32, train=True, pairs_per_scene=2, seed=3)


def test_a_draw_is_the_same_item_in_any_process_and_another_in_another_epoch(dataset):
    a, b = dataset[Draw(3, 1, 17)], dataset[Draw(3, 1, 17)]
    assert a["name"] == b["name"] == "procedural_0001#1"
    assert all(torch.equal(a[k], b[k]) for k in ("hr", "lr", "ref", "flow"))
    later = dataset[Draw(3, 2, 17)]
    assert later["name"] == a["name"] and not torch.equal(later["hr"], a["hr"])
    assert torch.equal(dataset[5]["hr"], dataset[Draw(5, 0, 5)]["hr"])  # an integer index is epoch 0's draw
    with pytest.raises(IndexError):
        dataset[Draw(6, 0, 0)]


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_where_it_stopped(dataset, workers):
    """A loader restored from another's state yields the rest of the epoch, then the next epochs, as the
    loader never stopped would."""

    def loader() -> ResumableLoader:
        return ResumableLoader(dataset, batch_size=2, sampler=dataset.stream(2, workers), num_workers=workers)

    def names(batches):
        return [b["name"] for b in batches]

    whole = loader()
    epoch0 = list(whole)
    whole.sampler.set_epoch(1)
    epoch1 = list(whole)
    assert len(epoch0) == 3 and names(epoch0) != names(epoch1)

    first = loader()
    it = iter(first)
    seen = [next(it), next(it)]
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 2}
    resumed = loader()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert names(seen + rest) == names(epoch0)
    assert torch.equal(rest[0]["hr"], epoch0[2]["hr"]) and torch.equal(rest[0]["lr"], epoch0[2]["lr"])
    # a state saved at the end of an epoch resumes at the start of the next
    end = loader()
    end.load_state_dict({"epoch": 0, "batches": 3})
    assert end.sampler.epoch == 1 and names(list(end)) == names(epoch1)
    # an epoch cut short (limit_train_batches): the trainer sets the next epoch, which starts at its start
    cut = loader()
    cut.load_state_dict({"epoch": 0, "batches": 2})
    cut.sampler.set_epoch(1)
    assert names(list(cut)) == names(epoch1)
    # and the resume applies to one iterator only
    assert names(list(resumed)) == names(epoch0)


def test_datamodule_trains_from_a_resumable_stream():
    src = ProceduralScenes(num=6, size=48, n_bands=6, seed=0)
    dm = HSIDataModule(src, scale=4, crop_size=32, batch_size=2, num_workers=0, val=1, test=1, seed=4)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, TrainingStream)
    batch = next(iter(loader))
    items = default_collate([dm.dataset("train")[d] for d in list(loader.sampler.draws(0))[:2]])
    assert torch.equal(batch["hr"], items["hr"]) and batch["name"] == items["name"]


# -------------------------------------------------------------------------------------- random states


def test_rng_states_round_trip_through_a_safe_load(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    callback = RNGStates()
    torch.save({"state": callback.state_dict()}, tmp_path / "c.pt")
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    restored = RNGStates()
    restored.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=True)["state"])

    class Trainer:
        world_size, global_rank = 1, 0

    restored.on_train_start(Trainer(), None)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    # restored once: a later on_train_start (another fit) changes nothing
    state = rng_states()
    restored.on_train_start(Trainer(), None)
    assert (
        torch.equal(torch.get_rng_state(), state["torch"]) and np.random.get_state()[2] == state["numpy"][2]
    )
    set_rng_states(state)


# ----------------------------------------------------------------------------------------- the CLI


def _train(run_dir: Path, *extra: str, kill_at_checkpoint: bool = False) -> int | None:
    """``sschsr-train`` (the smoke experiment unless ``extra`` names another); with ``kill_at_checkpoint``
    SIGKILLed as soon as its first ``last.ckpt`` can be read, returning that checkpoint's step."""
    args = [
        str(BIN / "sschsr-train"), "experiment=smoke", "logger=none", "trainer.enable_progress_bar=false",
        *extra, f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    if not kill_at_checkpoint:
        res = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=600, cwd=run_dir.parent)
        assert res.returncode == 0, res.stderr[-3000:]
        return None
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
        cwd=run_dir.parent,
        start_new_session=True,
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                step = torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"]
            except (FileNotFoundError, EOFError, RuntimeError):  # not there yet, or half written
                time.sleep(0.01)
                continue
            os.killpg(proc.pid, signal.SIGKILL)  # the run and any processes it started (DDP)
            proc.wait()
            return int(step)
        raise AssertionError(f"no checkpoint before the run ended (exit {proc.poll()})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _weights(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["global_step"], ckpt["state_dict"]


def check_resume_is_exact(tmp_path: Path, *extra: str) -> None:
    whole, killed, resumed = tmp_path / "whole", tmp_path / "killed", tmp_path / "resumed"
    _train(whole, *extra)
    step = _train(killed, *extra, kill_at_checkpoint=True)
    assert step == 10  # the smoke experiment writes last.ckpt every 10 of its 30 steps
    _train(resumed, *extra, f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}")
    (n_whole, a), (n_resumed, b) = _weights(whole), _weights(resumed)
    assert n_whole == n_resumed == 30
    diff = max((a[k].float() - b[k].float()).abs().max().item() for k in a)
    assert diff == 0.0, f"resumed weights differ from the uninterrupted run's by up to {diff}"


def test_killed_and_resumed_run_ends_with_the_uninterrupted_weights(tmp_path):
    """SIGKILL after the step-10 checkpoint, resume: the weights at step 30 are bit-identical. Two loader
    workers and 3 batches per epoch, so the kill falls mid-epoch and workers serve shards."""
    check_resume_is_exact(tmp_path, "data.num_workers=2", "data.samples_per_epoch=6")


@pytest.mark.slow
def test_killed_and_resumed_ddp_run_ends_with_the_uninterrupted_weights(tmp_path):
    """The same with two DDP processes (``trainer=ddp_cpu``): each rank's stream and random states resume."""
    check_resume_is_exact(tmp_path, "trainer=ddp_cpu", "trainer.devices=2", "data.samples_per_epoch=12")


# stage 1 at the smoke experiment's sizes, with dropout: random numbers drawn inside the training steps
STAGE1_DROPOUT = [
    "experiment=stage1", "data.source.num=6", "data.source.size=64", "data.crop_size=32", "data.batch_size=2",
    "data.eval_crop_size=32", "data.val=1", "data.test=1", "data.pairs_per_scene=1", "data.num_workers=0",
    "trainer.max_steps=30", "trainer.val_check_interval=10", "trainer.limit_val_batches=1",
    "callbacks.last_checkpoint.every_n_train_steps=10", "model.iters=2", "model.net.dropout=0.2",
]  # fmt: skip


@pytest.mark.slow
def test_killed_and_resumed_run_with_dropout_continues_its_random_numbers(tmp_path):
    """Dropout in the training steps draws from torch's generator: restored from the checkpoint
    (``RNGStates``; without it the weights at step 30 differed by 2.5e-3 in this setting)."""
    check_resume_is_exact(tmp_path, *STAGE1_DROPOUT)
