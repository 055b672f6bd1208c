"""``sschsr-synth``: write synthetic training pairs (HR, LR, unaligned reference, exact flow) to folders.

One folder per sample, ``OUT/<index>_<source name>/`` (see CONTRACTS.md):
``hr.npy`` (S, S, C) float32 in [0, 1]; ``lr.npy`` (S/s, S/s, C) float32; ``ref.png`` (S, S, 3) 8-bit;
``flow.npy`` (2, S, S) float32, x then y, source pixel p appears in ``ref`` at p + flow; ``valid.npy``
(S, S) bool. ``OUT/index.json`` lists the samples and the settings.

``--source procedural`` draws scenes from the embedded generator; ``--source DIR`` cycles through the
cubes in DIR (any format ``sschsr.data.io`` reads, CAVE folders included) and takes a random S x S crop
of each. Sample ``i`` depends only on ``--seed`` and ``i`` (and the source), not on ``--num``.

OUT is written all at once: the samples go to a hidden folder beside it, renamed to OUT when every one
is done, so a failed or interrupted run leaves nothing behind. An existing OUT that is not empty is kept
(exit status 2) unless ``--overwrite`` is given, and then only if it is an earlier output of this tool
(it holds ``index.json``); the old folder is removed once the new one is in place.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
from pathlib import Path

import numpy as np
import torch

from sschsr.cli._common import fail
from sschsr.data import io
from sschsr.data.io import write_npy, write_png
from sschsr.data.spectral import default_wavelengths
from sschsr.data.synth import SynthConfig, make_pair, procedural_scene
from sschsr.errors import InputError
from sschsr.ops.degrade import degrade

MIN_SIZE = 32  # smaller views leave the camera motion no room (flows of 5-15 px)


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as an InputError (one ``error:`` line) instead of usage + exit."""

    def error(self, message: str):
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="sschsr-synth", description=__doc__.splitlines()[0])
    p.add_argument(
        "--source", default="procedural", help="'procedural' or a folder of cubes (default: procedural)"
    )
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--num", type=int, default=8, help="number of samples (default: 8)")
    p.add_argument("--size", type=int, default=256, help="HR size S in pixels, square (default: 256)")
    p.add_argument(
        "--scale", type=int, default=4, help="scale factor s, S must be divisible by it (default: 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed, >= 0 (default: 0)")
    p.add_argument(
        "--bands",
        type=int,
        default=None,
        help="bands of procedural scenes (default: 31, 400-700 nm); with DIR: the count every cube must have",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing OUT that holds an earlier sschsr-synth output (index.json)",
    )
    return p


def _check_args(args: argparse.Namespace) -> None:
    if args.num < 1:
        raise InputError(f"--num must be at least 1, got {args.num}")
    if args.scale < 1:
        raise InputError(f"--scale must be at least 1, got {args.scale}")
    if args.size < MIN_SIZE:
        raise InputError(f"--size {args.size} is too small: at least {MIN_SIZE} pixels")
    if args.size % args.scale:
        raise InputError(f"--size {args.size} is not divisible by --scale {args.scale}")
    if args.bands is not None and args.bands < 1:
        raise InputError(f"--bands must be at least 1, got {args.bands}")
    if args.seed < 0:
        raise InputError(f"--seed must be at least 0, got {args.seed}")
    if args.source != "procedural" and not Path(args.source).exists():
        raise InputError(f"--source {args.source}: neither 'procedural' nor an existing folder of cubes")
    out = Path(args.out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a folder")
        if any(out.iterdir()):
            if not args.overwrite:
                raise InputError(f"--out {out}: exists and is not empty; pass --overwrite to replace it")
            if not (out / "index.json").is_file():
                raise InputError(
                    f"--out {out}: not an earlier sschsr-synth output (no index.json); "
                    "not replacing it, choose another folder"
                )


def _sample_generator(seed: int, index: int) -> torch.Generator:
    """Independent stream per sample: sample i is the same whatever --num is."""
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "cube"


class _Cubes:
    """The cubes of a folder (or one cube file), read when needed; the last one kept."""

    def __init__(self, source: Path, bands: int | None):
        self.io = io
        self.paths = [source] if source.is_file() else io.find_cubes(source)
        if not self.paths:
            raise InputError(
                f"--source {source}: no cubes found (CAVE folders, .mat, .npy, .npz, .tif, .hdr)"
            )
        self.bands = bands
        self._last: tuple[Path, object] | None = None

    def __getitem__(self, i: int):
        path = self.paths[i % len(self.paths)]
        if self._last is None or self._last[0] != path:
            cube = self.io.read_cube(path)
            if self.bands is not None and cube.n_bands != self.bands:
                raise InputError(f"{path}: {cube.n_bands} bands, but --bands {self.bands} was given")
            self._last = (path, cube)
        return self._last[1]


def _crop(cube, size: int, g: torch.Generator) -> tuple[np.ndarray, tuple[int, int]]:
    """A random ``size x size`` crop ``(S, S, C)``; avoids nodata where the cube marks some."""
    h, w = cube.data.shape[:2]
    if h < size or w < size:
        raise InputError(f"{cube.name or 'cube'}: {h} x {w} pixels is smaller than --size {size}")
    best = None
    for _ in range(10):
        y = int(torch.randint(0, h - size + 1, (1,), generator=g))
        x = int(torch.randint(0, w - size + 1, (1,), generator=g))
        bad = 0 if cube.valid is None else int((~cube.valid[y : y + size, x : x + size]).sum())
        if best is None or bad < best[0]:
            best = (bad, y, x)
        if bad == 0:
            break
    _, y, x = best
    return cube.data[y : y + size, x : x + size], (y, x)


def _write_sample(folder: Path, hr: np.ndarray, lr: np.ndarray, pair: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_npy(folder / "hr.npy", hr.astype(np.float32))
    write_npy(folder / "lr.npy", lr.astype(np.float32))
    write_png(folder / "ref.png", pair["ref"].permute(1, 2, 0).numpy())
    write_npy(folder / "flow.npy", pair["flow"].numpy().astype(np.float32))
    write_npy(folder / "valid.npy", pair["valid"].numpy().astype(bool))


def generate(args: argparse.Namespace, out: Path) -> list[dict]:
    """Write the samples into ``out`` (an existing folder); returns their index entries."""
    procedural = args.source == "procedural"
    cubes = None
    if not procedural:
        cubes = _Cubes(Path(args.source), args.bands)
    cfg = SynthConfig()
    entries = []
    for i in range(args.num):
        g = _sample_generator(args.seed, i)
        depth, crop = None, None
        if procedural:
            bands = args.bands or 31
            wl = default_wavelengths(bands)
            hsi, depth = procedural_scene(args.size, bands, g, wl, return_depth=True)
            name = "procedural"
        else:
            cube = cubes[i]
            data, crop = _crop(cube, args.size, g)
            wl = cube.wavelengths if cube.wavelengths is not None else default_wavelengths(cube.n_bands)
            hsi = torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1).clamp(0, 1).contiguous()
            name = _safe(cube.name)
        pair = make_pair(hsi, wl, g, cfg, depth=depth)
        lr = degrade(hsi[None], args.scale)[0]
        sample_id = f"{i:04d}_{name}"
        _write_sample(out / sample_id, hsi.permute(1, 2, 0).numpy(), lr.permute(1, 2, 0).numpy(), pair)
        entry = {
            "id": sample_id,
            "source": name,
            "crop_yx": list(crop) if crop is not None else None,
            "bands": int(hsi.shape[0]),
            "mean_flow_px": round(float(torch.hypot(*pair["flow"]).mean()), 3),
            "valid_fraction": round(float(pair["valid"].float().mean()), 4),
        }
        entries.append(entry)
        print(
            f"{sample_id}: mean |flow| {entry['mean_flow_px']:.2f} px, valid {100 * entry['valid_fraction']:.1f} %"
        )
    return entries


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


def _missing_ancestor(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist yet (None if ``path`` exists)."""
    first = None
    for p in (path, *path.parents):
        if p.exists():
            break
        first = p
    return first


def _hidden_sibling(out: Path, tag: str) -> Path:
    """A new empty hidden folder beside ``out`` (same file system, so renames are atomic)."""
    while True:
        path = out.with_name(f".{out.name}.{tag}-{secrets.token_hex(4)}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue


def _publish(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``: a rename, replacing an empty or an earlier output."""
    if out.is_dir() and any(out.iterdir()):  # an earlier output, --overwrite checked in _check_args
        old = _hidden_sibling(out, "old")
        os.replace(out, old / out.name)
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old / out.name, out)  # put the earlier output back
            old.rmdir()
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # onto a missing or an empty folder


def main(argv: list[str] | None = None) -> int:
    created = tmp = None
    try:
        args = build_parser().parse_args(argv)
        _check_args(args)
        out = Path(os.path.abspath(args.out))
        created = _missing_ancestor(out.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _hidden_sibling(out, "tmp")
        with torch.no_grad():
            entries = generate(args, tmp)
        index = {
            "source": args.source,
            "size": args.size,
            "scale": args.scale,
            "seed": args.seed,
            "num": args.num,
            "bands": args.bands,
            "files": {
                "hr.npy": "(S, S, C) float32 [0, 1]",
                "lr.npy": "(S/s, S/s, C) float32",
                "ref.png": "(S, S, 3) uint8",
                "flow.npy": "(2, S, S) float32 x, y px",
                "valid.npy": "(S, S) bool",
            },
            "samples": entries,
        }
        _write_json(tmp / "index.json", index)
        _publish(tmp, out)
        tmp = created = None
    except InputError as e:
        return fail(str(e))
    except OSError as e:  # an unwritable --out, a full disk
        return fail(f"cannot write the samples: {e}")
    finally:  # on any failure or interruption: nothing left behind
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    print(f"wrote {args.num} samples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
