"""``sschsr-predict --batch LIST.csv --out-dir DIR``: many scenes, spread over processes, GPUs and nodes by
Lightning's ``Trainer.predict``.

``LIST.csv`` has the columns ``lr`` and ``ref``, and optionally ``out`` (relative paths are relative to the
list's folder; a missing ``out`` is ``DIR/<lr's stem>.npy``, ``.tif`` for GeoTIFF input). Each row is one
``sschsr-predict`` of that scene with the command line's other flags (:func:`sschsr.cli.predict.run`: the same
checks, the same atomic writes, the same output), run where Lightning puts it: ``--devices N --accelerator
cpu|gpu --num-nodes M`` start Lightning's own launcher (DDP), each process taking every N-th row. An output
that exists is skipped unless ``--overwrite``; a bad row (a missing file, wrong bands, NaN...) is reported by
its row number and reason while the other rows go on, and the exit status is then 2. ``DIR/summary.csv``
lists each row's status (``written``, ``skipped``, ``failed``), seconds, output and message.
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from sschsr.data.io import write_text
from sschsr.errors import InputError

COLUMNS = ("lr", "ref")
SUMMARY = "summary.csv"
RASTER_INPUTS = (".tif", ".tiff")


def read_list(path: Path, out_dir: Path) -> list[dict[str, str]]:
    """The rows of ``path``: ``lr``, ``ref`` and ``out`` as absolute paths (module docstring).

    Raises:
        InputError: no such file, not a CSV with ``lr`` and ``ref`` columns, or no rows.
    """
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"--batch {path}: cannot read it ({e.strerror or e})") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(
            f"--batch {path}: needs the columns lr and ref (and optionally out); missing {missing}"
        )
    rows = []
    for row in reader:
        lr, ref = (path.parent / row["lr"].strip(), path.parent / row["ref"].strip())
        if row.get("out"):
            out = path.parent / row["out"].strip()
        else:
            out = out_dir / (lr.stem + (".tif" if lr.suffix.lower() in RASTER_INPUTS else ".npy"))
        rows.append({"lr": str(lr), "ref": str(ref), "out": str(out)})
    if not rows:
        raise InputError(f"--batch {path}: no rows")
    return rows


class _Rows(Dataset):
    """The row numbers of one process's share: every ``world``-th row from its ``rank`` (no padding)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> int:
        return self.indices[i]


class ScenePredictor(L.LightningModule):
    """Runs ``run_one`` (one ``sschsr-predict``: :func:`sschsr.cli.predict.run`, which returns its summary
    line) for each row number it is given; collects the rows' statuses."""

    def __init__(
        self,
        args: argparse.Namespace,
        rows: list[dict[str, str]],
        run_one: Callable[[argparse.Namespace], str],
    ):
        super().__init__()
        self.args, self.rows, self.run_one = args, rows, run_one
        self.statuses: list[dict[str, Any]] = []

    def predict_dataloader(self) -> DataLoader:
        rows = _Rows(len(self.rows), self.trainer.global_rank, self.trainer.world_size)
        return DataLoader(rows, batch_size=None, shuffle=False, num_workers=0)

    def predict_step(self, index: int, batch_idx: int = 0) -> dict[str, Any]:
        row = self.rows[int(index)]
        status = {"row": int(index) + 1, "lr": row["lr"], "ref": row["ref"], "out": row["out"]}
        t0 = time.perf_counter()
        if Path(row["out"]).exists() and not self.args.overwrite:
            status.update(status="skipped", message="exists (--overwrite to redo)")
        else:
            args = copy.copy(self.args)
            args.lr, args.ref, args.out, args.quiet = row["lr"], row["ref"], row["out"], True
            args.device = f"cuda:{self.local_rank}" if self.device.type == "cuda" else "cpu"
            try:
                status.update(status="written", message=self.run_one(args))
            except InputError as e:
                status.update(status="failed", message=str(e))
        status["seconds"] = round(time.perf_counter() - t0, 2)
        self.statuses.append(status)
        return status


def run_batch(args: argparse.Namespace, run_one: Callable[[argparse.Namespace], str]) -> int:
    """Every row of ``args.batch`` through ``run_one`` (:class:`ScenePredictor`); ``DIR/summary.csv``;
    returns 0 when every row was written or skipped, else 2."""
    out_dir = Path(args.out_dir)
    if not out_dir.is_dir():
        raise InputError(f"--out-dir {out_dir}: no such folder")
    rows = read_list(Path(args.batch), out_dir)
    devices, nodes = int(args.devices), int(args.num_nodes)
    if devices < 1 or nodes < 1:
        raise InputError(f"--devices {devices} --num-nodes {nodes}: each must be at least 1")
    world = devices * nodes
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners: the rows report
    if args.accelerator == "cpu" and devices > 1:  # the node's threads shared out among its processes
        torch.set_num_threads(max(1, torch.get_num_threads() // devices))
    trainer = L.Trainer(
        accelerator=args.accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if world > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
    )
    module = ScenePredictor(args, rows, run_one)
    trainer.predict(module, return_predictions=False)
    # each process's statuses, then process 0 writes them all
    part = out_dir / f".batch_status.{trainer.global_rank}.json"
    write_text(part, json.dumps(module.statuses))
    trainer.strategy.barrier()
    if trainer.global_rank != 0:
        return 0
    statuses = []
    for rank in range(world):
        file = out_dir / f".batch_status.{rank}.json"
        statuses += json.loads(file.read_text())
        file.unlink()
    statuses.sort(key=lambda s: s["row"])
    buffer = io.StringIO()
    fields = ["row", "status", "seconds", "out", "lr", "ref", "message"]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(statuses)
    write_text(out_dir / SUMMARY, buffer.getvalue())
    failed = [s for s in statuses if s["status"] == "failed"]
    for s in failed:
        print(f"error: row {s['row']} ({s['lr']}): {s['message']}", file=sys.stderr, flush=True)
    counts = {k: sum(s["status"] == k for s in statuses) for k in ("written", "skipped", "failed")}
    print(
        f"batch {args.batch}: {counts['written']} written, {counts['skipped']} skipped, {counts['failed']} failed "
        f"of {len(statuses)} rows on {world} process(es); {out_dir / SUMMARY}"
    )
    return 2 if failed else 0
