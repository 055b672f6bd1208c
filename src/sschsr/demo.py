"""``make demo``: the whole method, end to end, on data that needs no download.

1. Synthetic pairs (procedural scenes, and a CAVE scene when ``../shared/data`` is beside the repository):
   the HSI, the unaligned reference another camera would take, the exact flow and its validity mask.
2. Stage 1: the flow network trained briefly on procedural pairs (validation end-point error against
   the zero flow's).
3. Stage 2: WarpNet on the frozen flow (PSNR of the warped reference before and after it).
4. The full network (``lite`` preset) on both stages, tested on held-out procedural scenes against
   bicubic upsampling, and one scene super-resolved with figures.

Every stage runs through the same Hydra configs and ``train()`` as ``sschsr-train``; the runs (configs,
CSV logs, checkpoints) are in ``OUT/stage1``, ``OUT/stage2``, ``OUT/full``. The budgets are tiny (minutes
on 2 CPU cores), so the numbers show that everything is wired and learns, not what trained models reach
(``experiments/results/`` has those).

    python -m sschsr.demo --out outputs/demo [--steps 1.0]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sschsr.cli.train import compose, train
from sschsr.data.io import find_cubes, read_cube, write_png
from sschsr.data.spectral import camera_srf, default_wavelengths, render
from sschsr.data.synth import make_pair, procedural_scene
from sschsr.data.synth.pairs import alignment_stats
from sschsr.lit.sr import spectra_figure, sr_figure
from sschsr.metrics import HSIMetrics
from sschsr.ops.degrade import degrade, upsample
from sschsr.ops.warp import flow_warp
from sschsr.viz import pair_figure

N_BANDS = 31

# Procedural scenes small enough for CPU minutes: 20 scenes of 96 x 96 (16 train, 2 val, 2 test).
DEMO_DATA = [
    f"n_bands={N_BANDS}",
    "data=procedural",
    "data.source.num=20",
    "data.source.size=96",
    "data.val=2",
    "data.test=2",
    "data.crop_size=64",
    "data.batch_size=4",
    "data.pairs_per_scene=2",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "logger=csv",
    "trainer=cpu",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "callbacks.model_summary=null",
    "trainer.enable_model_summary=false",
]


def _shared_data() -> Path:
    return Path(os.environ.get("SSCHSR_SHARED_DATA", "../shared/data"))


# ---------------------------------------------------------------------------------------------- pairs
def demo_sources(size: int, num: int, seed: int, n_cave: int) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """The scenes of the pair figures: ``num`` procedural ones and up to ``n_cave`` CAVE crops, ``(C, S, S)``."""
    out = []
    wl = default_wavelengths(N_BANDS)
    for i in range(num):
        g = torch.Generator().manual_seed(seed + i)
        out.append((f"procedural_{i}", procedural_scene(size, N_BANDS, g, wavelengths=wl), wl))
    cave = _shared_data() / "cave"
    if cave.is_dir():
        for path in find_cubes(cave)[:n_cave]:
            cube = read_cube(path)
            h, w = cube.data.shape[:2]
            y, x = (h - size) // 2, (w - size) // 2
            hsi = torch.from_numpy(
                np.ascontiguousarray(cube.data[y : y + size, x : x + size].transpose(2, 0, 1))
            )
            out.append((cube.name, hsi, cube.wavelengths if cube.wavelengths is not None else wl))
    return out


def pairs(out: Path, size: int, num: int, scale: int, seed: int, n_cave: int) -> list[dict]:
    """Make the pairs, write a figure per pair and ``pairs.json``; one row of statistics per pair."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (name, hsi, wl) in enumerate(demo_sources(size, num, seed, n_cave)):
        t0 = time.perf_counter()
        pair = make_pair(hsi, wl, torch.Generator().manual_seed(seed + 1000 + k))
        seconds = time.perf_counter() - t0
        stats = alignment_stats(hsi, wl, pair["ref"], pair["flow"], pair["valid"])
        hsi_rgb = render(hsi, torch.from_numpy(camera_srf(wl))).clamp(0, 1).pow(1 / 2.2)
        lr_up = upsample(degrade(hsi[None], scale), scale)[0]
        warped = flow_warp(pair["ref"][None], pair["flow"][None])[0]
        pair_figure(
            hsi_rgb,
            pair["ref"],
            pair["flow"],
            pair["valid"],
            warped,
            out / f"pair_{name}.png",
            title=f"{name}: {hsi.shape[0]} bands, {size} px, x{scale} LR "
            f"(bicubic PSNR {_psnr(lr_up, hsi):.1f} dB)",
        )
        keep = ("mean_flow", "valid_fraction", "rho_nowarp", "rho_warp")
        rows.append({"name": name, "seconds": seconds, **{key: stats[key] for key in keep}})
    (out / "pairs.json").write_text(json.dumps(rows, indent=2))
    return rows


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = ((x.clamp(0, 1) - y) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


# --------------------------------------------------------------------------------------------- stages
def _run(overrides: list[str], out: Path) -> tuple[dict[str, float], dict[str, Any]]:
    cfg = compose([*DEMO_DATA, *overrides], output_dir=out)
    return train(cfg)


def _last(out: Path) -> str:
    return str(out / "checkpoints" / "last.ckpt")


def _steps(n: int, factor: float) -> int:
    return max(2, round(n * factor))


def stage1(out: Path, scale: int, factor: float) -> dict[str, float]:
    """Train the flow briefly; validation EPE next to the zero flow's (the mean true |flow| in valid px)."""
    steps = _steps(300, factor)
    metrics, objs = _run(
        [
            "experiment=stage1",
            f"scale={scale}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            "model.iters=6",
            "model.val_iters=12",
        ],
        out,
    )
    total, count = 0.0, 0
    for batch in objs["datamodule"].val_dataloader():
        v = batch["valid"]
        total += float(torch.linalg.vector_norm(batch["flow"], dim=1)[v].sum())
        count += int(v.sum())
    return {"steps": steps, "epe": metrics["val/epe"], "zero_flow_epe": total / max(count, 1)}


def stage2(out: Path, scale: int, factor: float, flow_ckpt: str) -> dict[str, float]:
    """Train WarpNet on the frozen flow; PSNR of the warped reference before and after it."""
    steps = _steps(150, factor)
    metrics, _ = _run(
        [
            "experiment=stage2",
            f"scale={scale}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            "model.flow_iters=12",
            f"model.flow_ckpt={flow_ckpt}",
        ],
        out,
    )
    return {"steps": steps, "psnr_warp0": metrics["val/psnr_warp0"], "psnr": metrics["val/psnr"]}


def full(out: Path, scale: int, factor: float, warp_ckpt: str) -> dict[str, Any]:
    """Train the full network (lite) on both stages, test it, compare with bicubic; write the figures."""
    steps = _steps(300, factor)
    metrics, objs = _run(
        [
            "experiment=full",
            f"scale={scale}",
            f"trainer.max_steps={steps}",
            f"trainer.val_check_interval={steps}",
            "model.net.flow_iters=12",
            f"model.warp_ckpt={warp_ckpt}",
            "test=true",
        ],
        out,
    )
    model, dm = objs["model"].eval(), objs["datamodule"]
    bicubic = HSIMetrics(scale)
    for k, batch in enumerate(dm.test_dataloader()):
        bicubic.update(batch["lr_up"].clamp(0, 1), batch["hr"])
        if k == 0:
            with torch.no_grad():
                pred = model(batch["lr_up"], batch["ref"], batch["rgb_hsi"])
            write_png(out.parent / "sr_scene.png", sr_figure(batch, pred))
            wl = batch.get("wavelengths")
            wl = wl[0].numpy() if isinstance(wl, torch.Tensor) and wl.ndim == 2 else wl
            write_png(out.parent / "sr_spectra.png", spectra_figure(batch, pred, wl))
            name = batch["name"][0] if isinstance(batch["name"], (list, tuple)) else str(batch["name"])
    bic = {k.split("/")[-1]: float(v) for k, v in bicubic.compute().items()}
    model_m = {k.split("/")[-1]: v for k, v in metrics.items() if k.startswith("test/") and k != "test/loss"}
    return {"steps": steps, "model": model_m, "bicubic": bic, "scene": name}


# ---------------------------------------------------------------------------------------------- table
def print_tables(rows: list[dict], results: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="synthetic pairs (rank correlation of luminance with the source view, valid pixels)")
    for col in ("pair", "make_pair (s)", "mean |flow| (px)", "valid (%)", "unwarped", "warped by true flow"):
        t.add_column(col, justify="left" if col == "pair" else "right")
    for r in rows:
        t.add_row(
            r["name"],
            f"{r['seconds']:.2f}",
            f"{r['mean_flow']:.1f}",
            f"{100 * r['valid_fraction']:.0f}",
            f"{r['rho_nowarp']:.3f}",
            f"{r['rho_warp']:.3f}",
        )
    console.print(t)

    if "full" not in results:
        return
    s1, s2, f = results["stage1"], results["stage2"], results["full"]
    t = Table(
        title=f"x{results['scale']}, {N_BANDS} bands, procedural validation/test scenes "
        f"(brief CPU training; figures and runs in {out})"
    )
    for col in ("stage", "steps", "metric", "before / baseline", "after / model"):
        t.add_column(col, justify="left" if col in ("stage", "metric") else "right")
    t.add_row(
        "1 flow",
        str(s1["steps"]),
        "EPE (px), val",
        f"{s1['zero_flow_epe']:.2f} (zero flow)",
        f"{s1['epe']:.2f}",
    )
    t.add_row(
        "2 WarpNet",
        str(s2["steps"]),
        "PSNR of warped ref (dB), val",
        f"{s2['psnr_warp0']:.2f} (warp only)",
        f"{s2['psnr']:.2f}",
    )
    for key, label, fmt in (
        ("psnr", "PSNR (dB)", "{:.2f}"),
        ("ssim", "SSIM", "{:.3f}"),
        ("sam", "SAM (deg)", "{:.2f}"),
        ("ergas", "ERGAS", "{:.2f}"),
    ):
        t.add_row(
            "3 full" if key == "psnr" else "",
            str(f["steps"]) if key == "psnr" else "",
            f"{label}, test",
            fmt.format(f["bicubic"][key]) + " (bicubic)",
            fmt.format(f["model"][key]),
        )
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sschsr.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=float, default=1.0, help="multiplies every stage's training steps")
    p.add_argument("--pairs-only", action="store_true", help="only the synthetic pair figures (seconds)")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    for name in ("lightning", "lightning.pytorch", "sschsr"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")

    t0 = time.perf_counter()
    out = a.out.resolve()
    rows = pairs(out, size=256, num=2, scale=a.scale, seed=a.seed, n_cave=1)
    results: dict[str, Any] = {"scale": a.scale, "pairs": rows}
    if not a.pairs_only:
        results["stage1"] = stage1(out / "stage1", a.scale, a.steps)
        results["stage2"] = stage2(out / "stage2", a.scale, a.steps, _last(out / "stage1"))
        results["full"] = full(out / "full", a.scale, a.steps, _last(out / "stage2"))
    results["seconds"] = time.perf_counter() - t0
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_tables(rows, results, out)
    print(f"demo finished in {results['seconds'] / 60:.1f} min; results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
