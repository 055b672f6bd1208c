"""``sschsr-summarize DIR``: the summary of a multirun (a scale sweep, the ablations, any sweep) from the
``run.json`` of its jobs, also written by Hydra when a ``sschsr-train -m`` multirun ends (:class:`SweepSummary`).

Writes into ``DIR``:

- ``summary.csv``: one row per job (its folder, task, scale, variant, seed, status, the last validation's
  metrics as ``val_<name>``, the test's as ``test_<name>`` when the run was tested, parameters, steps, wall
  time of all its stages, run folder). A job of ``experiment=chain`` is its full network's row, its wall time
  that of the three stages.
- ``summary.md``: that table, then per scale and variant the mean +- std over seeds, and each variant's
  difference from ``full`` at the same scale and seed (mean +- std over the seeds both have).
- ``metrics_vs_scale.png``: each headline metric against the scale, one line per variant.

    sschsr-summarize outputs/full/multiruns/2026-12-07_10-00-00
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sschsr.cli._common import exit_on_input_error
from sschsr.data.io import write_text
from sschsr.errors import InputError
from sschsr.lit.runs import iter_runs

log = logging.getLogger("sschsr.summarize")

HEADLINE = ("psnr", "ssim", "sam", "ergas", "epe")  # first among the metric columns, in this order
STAGE_ORDER = {"stage1": 0, "stage2": 1, "full": 2}
LOWER_IS_BETTER = {"sam", "ergas", "epe", "loss"}
UNITS = {"psnr": " (dB)", "sam": " (degrees)", "epe": " (px)"}


def _job_key(path: Path) -> tuple[int, str]:
    head = path.name.split("_", 1)[0]
    return (int(head), path.name) if head.isdigit() else (sys.maxsize, path.name)


def job_row(job: Path) -> dict[str, Any]:
    """The summary row of one job folder: its last stage's record, the wall time of all its records."""
    records = iter_runs(job)
    if not records:
        return {"job": job.name, "status": "no run.json", "run_dir": str(job)}
    last = max(records, key=lambda r: (STAGE_ORDER.get(r.get("task"), -1), r.get("started") or ""))
    row: dict[str, Any] = {
        "job": job.name,
        "task": last.get("task"),
        "scale": last.get("scale"),
        "variant": last.get("variant"),
        "seed": last.get("seed"),
        "status": last.get("status"),
    }
    metrics = last.get("metrics") or {}
    for split, key in (("val", "final"), ("test", "test")):
        for name, value in (metrics.get(key) or {}).items():
            if name.startswith(f"{split}/"):
                row[f"{split}_{name.split('/', 1)[1]}"] = value
    row["params"] = (last.get("params") or {}).get("total")
    row["steps"] = last.get("global_step")
    walls = [r.get("wall_s") for r in records if isinstance(r.get("wall_s"), (int, float))]
    row["wall_s"] = round(sum(walls), 1) if walls else None
    row["run_dir"] = last.get("run_dir")
    if last.get("chained_from") and len(records) == 1:  # a run built on a run outside its job folder
        row["built_on"] = ", ".join(f"{k} {v}" for k, v in sorted(last["chained_from"].items()))
    return row


def sweep_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a multirun (its folders that hold a ``run.json``, at any depth, or Hydra's
    numbered job folders), in job order.

    Raises:
        InputError: ``sweep_dir`` is not a folder or holds no job.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    jobs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    jobs = [p for p in jobs if _job_key(p)[0] != sys.maxsize or any(p.rglob("run.json"))]
    if not jobs:
        raise InputError(f"{root}: no job folders with a run.json (is it a multirun folder?)")
    return [job_row(p) for p in sorted(jobs, key=_job_key)]


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The ``val_*`` / ``test_*`` columns present in ``rows``: headline metrics first, then the rest sorted."""
    present = {k for r in rows for k in r if k.startswith(("val_", "test_"))}

    def key(name: str) -> tuple[int, int, str]:
        split, metric = name.split("_", 1)
        rank = HEADLINE.index(metric) if metric in HEADLINE else len(HEADLINE)
        return (split != "val", rank, metric)

    return sorted(present, key=key)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


def _pm(values: list[float], sign: bool = False) -> str:
    if not values:
        return ""
    mean, std = _mean_std(values)
    text = f"{mean:+.4g}" if sign else f"{mean:.4g}"
    return text if std is None else f"{text} ± {std:.2g}"


def group_stats(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Per (scale, variant) of the finished rows: ``n`` and each column's values over seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "finished":
            groups[(r.get("scale"), r.get("variant"))].append(r)
    out = []
    for (scale, variant), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1] != "full", str(kv[0][1]))
    ):
        values = {c: [float(m[c]) for m in members if isinstance(m.get(c), (int, float))] for c in columns}
        out.append({"scale": scale, "variant": variant, "n": len(members), "values": values})
    return out


def differences(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Each non-``full`` variant minus ``full`` at the same scale and seed, per column (finished rows)."""
    full = {
        (r.get("scale"), r.get("seed")): r
        for r in rows
        if r.get("variant") == "full" and r.get("status") == "finished"
    }
    diffs: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        base = full.get((r.get("scale"), r.get("seed")))
        if r.get("variant") == "full" or r.get("status") != "finished" or base is None:
            continue
        for c in columns:
            if isinstance(r.get(c), (int, float)) and isinstance(base.get(c), (int, float)):
                diffs[(r.get("scale"), r.get("variant"))][c].append(float(r[c]) - float(base[c]))
    return [
        {"scale": s, "variant": v, "n": max((len(x) for x in d.values()), default=0), "values": dict(d)}
        for (s, v), d in sorted(diffs.items(), key=lambda kv: (kv[0][0] or 0, str(kv[0][1])))
    ]


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def summary_markdown(sweep_dir: Path, rows: list[dict[str, Any]], columns: list[str]) -> str:
    """``summary.md``: the runs, the per-variant statistics and the differences from the full model."""
    finished = sum(r.get("status") == "finished" for r in rows)
    parts = [f"# Summary of {sweep_dir}", "", f"{len(rows)} jobs, {finished} finished."]
    built_on = sorted({str(r["built_on"]) for r in rows if r.get("built_on")})
    if built_on:
        parts.append(
            f"Built on the earlier stages of {built_on[0]}." if len(built_on) == 1
            else "Built on different earlier stages: " + "; ".join(built_on) + "."
        )  # fmt: skip
    parts += ["", "## Runs", ""]
    run_cols = ["job", "task", "scale", "variant", "seed", "status", *columns, "params", "steps", "wall_s"]
    parts.append(_md_table(run_cols, [[_fmt(r.get(c)) for c in run_cols] for r in rows]))
    stats = group_stats(rows, columns)
    if stats:
        parts += ["", "## Per scale and variant (mean ± std over seeds)", ""]
        body = [
            [_fmt(g["scale"]), _fmt(g["variant"]), str(g["n"]), *(_pm(g["values"][c]) for c in columns)]
            for g in stats
        ]
        parts.append(_md_table(["scale", "variant", "n", *columns], body))
    diffs = differences(rows, columns)
    if diffs:
        parts += ["", "## Difference from the full model (same scale and seed; mean ± std over seeds)", ""]
        body = [
            [
                _fmt(d["scale"]),
                _fmt(d["variant"]),
                str(d["n"]),
                *(_pm(d["values"].get(c, []), sign=True) for c in columns),
            ]
            for d in diffs
        ]
        parts.append(_md_table(["scale", "variant", "pairs", *(f"Δ{c}" for c in columns)], body))
    return "\n".join(parts) + "\n"


def plot_vs_scale(rows: list[dict[str, Any]], columns: list[str], path: Path) -> Path | None:
    """``path`` (PNG): each validation headline metric against the scale, one line per variant, error bars
    the std over seeds. None (nothing written) when no finished row has one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [c for c in columns if c.startswith("val_") and c.split("_", 1)[1] in HEADLINE]
    stats = group_stats(rows, metrics)
    metrics = [c for c in metrics if any(g["values"][c] for g in stats)]
    if not metrics:
        return None
    fig = Figure(figsize=(3.2 * len(metrics), 3.0), dpi=100)
    FigureCanvasAgg(fig)
    for i, c in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        for variant in dict.fromkeys(g["variant"] for g in stats):
            pts = [
                (g["scale"], *_mean_std(g["values"][c]))
                for g in stats
                if g["variant"] == variant and g["values"][c]
            ]
            if not pts:
                continue
            xs, means, stds = zip(*pts, strict=True)
            ax.errorbar(xs, means, yerr=[s or 0.0 for s in stds], marker="o", capsize=3, label=str(variant))
        name = c.split("_", 1)[1]
        ax.set_xlabel("scale factor")
        ax.set_ylabel(
            f"validation {name.upper()}" + (" (lower is better)" if name in LOWER_IS_BETTER else "")
        )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({g["scale"] for g in stats}))
        ax.set_xticklabels([f"x{s}" for s in sorted({g["scale"] for g in stats})])
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def summarize(sweep_dir: str | Path) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and ``metrics_vs_scale.png`` (when there is something to plot)
    into ``sweep_dir``; returns the paths written.

    Raises:
        InputError: not a multirun folder.
    """
    root = Path(sweep_dir)
    rows = sweep_rows(root)
    columns = metric_columns(rows)
    fields = [
        "job",
        "task",
        "scale",
        "variant",
        "seed",
        "status",
        *columns,
        "params",
        "steps",
        "wall_s",
        "run_dir",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    written = {"csv": root / "summary.csv", "md": root / "summary.md"}
    write_text(written["csv"], buffer.getvalue())
    write_text(written["md"], summary_markdown(root, rows, columns))
    plot = plot_vs_scale(rows, columns, root / "metrics_vs_scale.png")
    if plot is not None:
        written["png"] = plot
    return written


class SweepSummary(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): when a multirun ends, :func:`summarize` its folder."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            written = summarize(sweep_dir)
        except InputError as e:
            log.warning("no sweep summary: %s", e)
            return
        log.info("sweep summary: %s", ", ".join(str(p) for p in written.values()))
        print(f"summary: {written['md']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sschsr-summarize",
        description="Summarise a finished sschsr-train multirun (a scale sweep, the ablations) from its "
        "jobs' run.json: summary.csv, summary.md and metrics_vs_scale.png in its folder.",
    )
    p.add_argument(
        "sweep_dir", metavar="DIR", help="the multirun's folder (e.g. outputs/full/multiruns/<date>)"
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    return p


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    written = summarize(args.sweep_dir)
    if not args.quiet:
        print(written["md"].read_text())
        print("wrote " + ", ".join(str(p) for p in written.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
