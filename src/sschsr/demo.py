"""``make demo``: what the package does, end to end, on data that needs no download.

Synthetic pairs from the embedded procedural scenes (and from CAVE scenes when ``../shared/data`` is
beside the repository): the HSI, the unaligned reference another camera would take, the exact flow and
its validity mask; figures of each pair and a table of how well the flow aligns the reference.

    python -m sschsr.demo --out outputs/demo
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from sschsr.data.degrade import degrade, upsample
from sschsr.data.io import find_cubes, read_cube
from sschsr.data.spectral import camera_srf, default_wavelengths, render
from sschsr.data.synth import make_pair, procedural_scene
from sschsr.data.synth.pairs import alignment_stats
from sschsr.ops.warp import flow_warp
from sschsr.viz import pair_figure


def _shared_data() -> Path:
    return Path(os.environ.get("SSCHSR_SHARED_DATA", "../shared/data"))


def demo_sources(size: int, num: int, seed: int, n_cave: int) -> list[tuple[str, torch.Tensor, np.ndarray]]:
    """The scenes of the demo: ``num`` procedural ones and up to ``n_cave`` CAVE crops, ``(C, S, S)`` each."""
    out = []
    wl = default_wavelengths(31)
    for i in range(num):
        g = torch.Generator().manual_seed(seed + i)
        out.append((f"procedural_{i}", procedural_scene(size, 31, g, wavelengths=wl), wl))
    cave = _shared_data() / "cave"
    if cave.is_dir():
        for path in find_cubes(cave)[:n_cave]:
            cube = read_cube(path)
            h, w = cube.data.shape[:2]
            y, x = (h - size) // 2, (w - size) // 2
            hsi = torch.from_numpy(np.ascontiguousarray(cube.data[y : y + size, x : x + size].transpose(2, 0, 1)))
            out.append((cube.name, hsi, cube.wavelengths if cube.wavelengths is not None else wl))
    return out


def run(out: Path, size: int = 256, num: int = 3, scale: int = 4, seed: int = 0, n_cave: int = 2) -> list[dict]:
    """Make the pairs, write a figure per pair and ``pairs.json``; return one row of statistics per pair."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (name, hsi, wl) in enumerate(demo_sources(size, num, seed, n_cave)):
        t0 = time.perf_counter()
        pair = make_pair(hsi, wl, torch.Generator().manual_seed(seed + 1000 + k))
        seconds = time.perf_counter() - t0
        stats = alignment_stats(hsi, wl, pair["ref"], pair["flow"], pair["valid"])
        srf = torch.from_numpy(camera_srf(wl))
        hsi_rgb = render(hsi, srf).clamp(0, 1).pow(1 / 2.2)
        lr_up = upsample(degrade(hsi[None], scale), scale)[0]
        warped = flow_warp(pair["ref"][None], pair["flow"][None])[0]
        pair_figure(hsi_rgb, pair["ref"], pair["flow"], pair["valid"], warped, out / f"{name}.png",
                    title=f"{name}: {hsi.shape[0]} bands, {size} px, x{scale} LR "
                          f"(bicubic PSNR {_psnr(lr_up, hsi):.1f} dB)")
        rows.append({"name": name, "seconds": seconds, **{k: stats[k] for k in ("mean_flow", "valid_fraction", "rho_nowarp", "rho_warp")}})
    (out / "pairs.json").write_text(json.dumps(rows, indent=2))
    return rows


def _psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    mse = ((x.clamp(0, 1) - y) ** 2).mean(dim=(-2, -1)).clamp_min(1e-12)
    return float((10 * torch.log10(1 / mse)).mean())


def print_table(rows: list[dict], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"synthetic pairs (figures in {out})")
    for col in ("pair", "make_pair (s)", "mean |flow| (px)", "valid (%)", "rank corr. unwarped", "rank corr. warped"):
        table.add_column(col, justify="right" if col != "pair" else "left", no_wrap=col == "pair")
    for r in rows:
        table.add_row(r["name"], f"{r['seconds']:.2f}", f"{r['mean_flow']:.1f}", f"{100 * r['valid_fraction']:.0f}",
                      f"{r['rho_nowarp']:.3f}", f"{r['rho_warp']:.3f}")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sschsr.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--num", type=int, default=3, help="procedural scenes")
    p.add_argument("--cave", type=int, default=2, help="CAVE scenes, when ../shared/data is there")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = run(a.out, a.size, a.num, a.scale, a.seed, a.cave)
    print_table(rows, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
