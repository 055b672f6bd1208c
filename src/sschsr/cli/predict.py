"""``sschsr-predict``: super-resolve an LR HSI with an unaligned RGB reference (see CONTRACTS.md).

    sschsr-predict --lr scene.tif --ref photo.jpg --scale 4 --out scene_x4.tif [--ckpt model.ckpt]
                   [--tile 512] [--device auto] [--tta 4] [--flow-factor N] [--flow-refine 150]
                   [--back-project 20] [--lr-grid paper|block] [--psf auto|paper|block|SIGMA|FILE]
                   [--save-intermediates DIR] [--bit-depth N] [--no-clamp] [--overwrite]

Every input is checked before the network runs; a problem prints one ``error: ...`` line and exits with
status 2, writing nothing. OUT is reserved before the compute (a second run on it stops at once) and never
replaced without ``--overwrite``, not even by a file that appeared meanwhile. Outputs are written to a
temporary file (named with this process's id: a later run removes those of killed runs) and renamed; should
writing fail part-way (a full disk), the files this run already wrote are removed again. Integer data are
read at their bit depth (``--bit-depth``, the file's metadata, or the data's largest value), outputs
clamped to the input's range (``--no-clamp``). Without ``--ckpt`` the shipped weights for ``--scale`` are
used (``src/sschsr/weights/sschsr_x{s}.safetensors``).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from sschsr.checkpoints import check_scale, load_model
from sschsr.cli._common import (
    add_back_project_option,
    add_flow_factor_option,
    add_flow_refine_option,
    add_tta_option,
    fail,
)
from sschsr.cli._config_checks import MIN_TILE  # the flow network's smallest input (RAFT pads smaller ones)
from sschsr.cli.batch import run_batch
from sschsr.data.io import Cube, read_cube, read_rgb, reserve, write_geotiff, write_json, write_npy, write_png
from sschsr.errors import InputError
from sschsr.inference import check_reference, predict_tiled, prepare_inputs, resolve_device, tile_count
from sschsr.ops.degrade import LR_GRIDS
from sschsr.pipeline import TestTime, check_flow_factor, check_steps, parse_psf, psf_estimates
from sschsr.progress import Progress

OUT_SUFFIXES = (".npy", ".tif", ".tiff")
INTERMEDIATES = {"flow": "flow.npy", "ref_warp0": "ref_warp.png", "ref_warp": "ref_refined.png"}
# in --save-intermediates: the grid, the PSF used or estimated, the noise
DEGRADATION_RECORD = "degradation.json"


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as the one ``error: ...`` line every other bad input gets."""

    def error(self, message: str):  # type: ignore[override]
        raise SystemExit(fail(f"{message} (see {self.prog} --help)"))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="sschsr-predict",
        description=__doc__.splitlines()[0],
        epilog="Bad input: one line 'error: ...' on stderr, exit status 2, nothing written.",
    )
    p.add_argument("--lr", help="LR HSI: .npy/.npz/.mat (HWC unless --layout chw), GeoTIFF, ENVI")
    p.add_argument("--ref", help="RGB reference photo: PNG/JPEG/TIFF, 8 or 16 bit, RGB or RGBA")
    p.add_argument("--scale", required=True, type=int, help="scale factor (4, 8 or 16)")
    p.add_argument("--out", help="output: .npy (HWC float32) or .tif/.tiff (GeoTIFF)")
    many = p.add_argument_group(
        "many scenes", "instead of --lr/--ref/--out: a list of scenes, spread over processes by Lightning"
    )
    many.add_argument(
        "--batch", metavar="LIST.csv", help="columns lr, ref and optionally out (paths relative to the list)"
    )
    many.add_argument(
        "--out-dir", metavar="DIR", help="where outputs without an out column and summary.csv go"
    )
    many.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs per node (default 1)")
    many.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="default cpu")
    many.add_argument("--num-nodes", type=int, default=1, help="nodes (Lightning's launcher; default 1)")
    p.add_argument(
        "--ckpt", help="checkpoint (.ckpt) or .safetensors weights (default: the shipped weights for --scale)"
    )
    p.add_argument("--tile", type=int, help=f"tile size in HR pixels, at least {MIN_TILE} (bounded memory)")
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    add_tta_option(
        p,
        "self-ensemble: run the network on this many flips/transpositions of the inputs and average; 1 is "
        "the fastest",
    )
    add_flow_factor_option(p)
    add_flow_refine_option(p)
    add_back_project_option(p)
    p.add_argument(
        "--lr-grid",
        choices=LR_GRIDS,
        default=None,
        help="how LR pixels sit on the HR grid: 'paper', every s-th pixel from the first, as the paper's "
        "degradation; 'block', each pixel centred on its s x s block (a camera's pixels, block averaging, "
        "area resizing). Default: 'block' for GeoTIFF and ENVI input (their pixels are areas: the output "
        "then sits where its georeference says), 'paper' otherwise",
    )
    p.add_argument(
        "--psf",
        default="auto",
        help="the LR data's point spread, for the flow refinement and back-projection: 'auto' (estimated "
        "from the data, the default: by the flow refinement from the reference, by back-projection from the "
        "network's output), 'auto-reference' (back-projection takes the refinement's estimate), 'paper' (8 x 8 Gaussian, sigma 3), 'block' (block means), a number "
        "(a Gaussian of that std in HR px), or a JSON file of fields sigma, sigma_y, area (HR px)",
    )
    p.add_argument(
        "--layout", choices=["hwc", "chw"], default="hwc", help="axis order of .npy/.npz/.mat input"
    )
    p.add_argument(
        "--save-intermediates", metavar="DIR", help="write flow.npy, ref_warp.png, ref_refined.png to DIR"
    )
    p.add_argument(
        "--bit-depth",
        type=int,
        metavar="N",
        help="integer LR data are N-bit codes, divided by 2^N - 1 for the network (default: from the file's "
        "metadata, else the smallest of 8, 10, 12, 14, 16 bits that holds the data's largest value)",
    )
    p.add_argument(
        "--no-clamp",
        action="store_true",
        help="keep the network's raw output (default: clamped to [0, the input's range]: 2^N - 1 for N-bit "
        "data, 1 for float data in [0, 1], no upper bound for float data in other units)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT (and intermediates)")
    p.add_argument("--quiet", action="store_true", help="print only the summary line (no notes on stderr)")
    return p


def check_output(path: Path, overwrite: bool) -> None:
    """InputError for an unsupported extension, a missing folder, or an existing file without --overwrite."""
    if path.suffix.lower() not in OUT_SUFFIXES:
        raise InputError(
            f"{path}: unsupported output type {path.suffix or '(no extension)'!r}; expected .npy or .tif/.tiff"
        )
    if path.is_dir():
        raise InputError(f"{path}: is a folder; pass a file name for --out")
    if path.exists() and not overwrite:
        raise InputError(f"{path} exists: pass --overwrite to replace it")
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")


def check_intermediates(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--save-intermediates {folder}: exists and is not a folder")
    existing = [name for name in (*INTERMEDIATES.values(), DEGRADATION_RECORD) if (folder / name).exists()]
    if existing and not overwrite:
        raise InputError(
            f"--save-intermediates {folder}: {', '.join(existing)} exist: pass --overwrite to replace them"
        )


def fill_nodata(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Nodata pixels take their band's mean over valid pixels (0 where none), so that they do not pull
    their neighbours towards 0 through the network's convolutions."""
    if valid is None or valid.all():
        return data
    out = data.copy()
    if valid.any():
        out[~valid] = data[valid].mean(axis=0)
    else:
        out[~valid] = 0.0
    return out


def _first_missing(folder: Path) -> Path | None:
    """The outermost folder of ``folder``'s path that does not exist yet (what ``mkdir -p`` creates)."""
    missing = None
    while not folder.exists():
        missing, folder = folder, folder.parent
        if folder == missing:  # the root
            break
    return missing


def _remove(paths: list[Path], folder: Path | None) -> None:
    """Undo a partial write: the files written, then ``folder`` and what is below it if it was made here."""
    for path in paths:
        path.unlink(missing_ok=True)
    if folder is not None and folder.is_dir():
        for sub in sorted(folder.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            if sub.is_dir():
                sub.rmdir()
        folder.rmdir()


def run(args: argparse.Namespace) -> str:
    """Check everything, run the model, write the outputs. Returns the summary line.

    OUT is reserved for this process (:func:`sschsr.data.io.reserve`) before anything is read or computed:
    a second run on the same OUT stops at once with an error, and without ``--overwrite`` OUT is published
    so that a file which appeared meanwhile is never replaced.

    Raises:
        InputError: any problem with the user's input, before anything is written.
    """
    out = Path(args.out)
    check_output(out, args.overwrite)
    with reserve(out, args.overwrite):
        return _run(args, out)


def _run(args: argparse.Namespace, out: Path) -> str:
    """:func:`run` once OUT is held."""
    started = time.perf_counter()
    # 1. arguments and outputs, cheapest first
    check_scale(args.scale)
    check_steps(args.flow_refine, f"--flow-refine {args.flow_refine}")
    check_steps(args.back_project, f"--back-project {args.back_project}")
    if args.flow_factor is not None:
        check_flow_factor(args.flow_factor, f"--flow-factor {args.flow_factor}")
    if args.tile is not None and args.tile < MIN_TILE:
        raise InputError(f"--tile {args.tile}: tiles must be at least {MIN_TILE} HR pixels")
    parse_psf(args.psf, args.scale)  # checked before the data are read
    device = resolve_device(args.device)
    inter = Path(args.save_intermediates) if args.save_intermediates else None
    if inter is not None:
        check_intermediates(inter, args.overwrite)

    if args.bit_depth is not None and not 1 <= args.bit_depth <= 32:
        raise InputError(f"--bit-depth {args.bit_depth}: expected 1 to 32 bits")

    # 2. the inputs
    cube = read_cube(args.lr, layout=args.layout)
    value_notes = check_values(cube, str(args.lr))
    data = fill_nodata(cube.data, cube.valid)
    norm, top, scaling_notes = input_scaling(cube, data, args.bit_depth, str(args.lr))
    value_notes += scaling_notes
    h, w, c = cube.data.shape
    rgb = read_rgb(args.ref)
    check_reference(rgb.shape[:2], (h, w), name=str(args.ref))
    lr_grid = args.lr_grid or ("block" if cube.geo is not None else "paper")

    # 3. the model: scale and band count
    net = load_model(args.ckpt, args.scale, n_bands=c)
    if inter is not None and getattr(net, "flow_net", None) is None and not hasattr(net, "warpnet"):
        raise InputError(
            f"--save-intermediates: the model ({type(net).__name__}) aligns no reference: it has no flow or warp to save"
        )

    # 4. run: normalise as in training (nominally [0, 1]), super-resolve, restore the input's range
    lr = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1))) / norm
    ref = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    camera = getattr(net, "info", {}).get("camera", "cie1931")
    lr_up, ref_hr, rgb_hsi = prepare_inputs(lr, ref, args.scale, cube.wavelengths, camera=camera)
    keys = ("sr", *INTERMEDIATES) if inter is not None else ("sr",)
    test_time = TestTime(
        tta=args.tta,
        flow_factor=args.flow_factor,
        flow_refine=args.flow_refine,
        back_project=args.back_project,
        psf=args.psf,
        lr_grid=lr_grid,
    )
    model = test_time.build(net, args.scale)
    n_tiles = tile_count(*lr_up.shape[-2:], args.tile)
    ensemble = args.tta > 1 and next(net.parameters(), None) is not None
    units = ("pass", n_tiles * args.tta) if ensemble else ("tile", n_tiles)
    with Progress(units[1], "sschsr-predict", unit=units[0], enabled=False if args.quiet else None):
        outputs = predict_tiled(model, lr_up, ref_hr, rgb_hsi, tile=args.tile, device=device, keys=keys)
    degradation = degradation_record(args, lr_grid, psf_estimates(model, args.scale))

    sr = outputs["sr"].numpy().transpose(1, 2, 0) * np.float32(norm * cube.scale_factor)
    sr = np.ascontiguousarray(sr, dtype=np.float32)
    if not args.no_clamp:  # the input's range: no negative radiance, nothing beyond the data's full scale
        np.clip(sr, 0.0, top, out=sr)
    if cube.valid is not None and not cube.valid.all():
        fill = cube.geo.nodata if cube.geo is not None and cube.geo.nodata is not None else np.nan
        hr_valid = cube.valid.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
        sr[~hr_valid] = fill

    # 5. write: intermediates, then OUT, each atomically; a failure part-way removes what was written
    written: list[Path] = []
    made = _first_missing(inter) if inter is not None else None
    excl = not args.overwrite  # never replace a file that appeared while this run computed
    try:
        if inter is not None:
            inter.mkdir(parents=True, exist_ok=True)
            if "flow" in outputs:
                write_npy(
                    inter / INTERMEDIATES["flow"], outputs["flow"].numpy().astype(np.float32), exclusive=excl
                )
                written.append(inter / INTERMEDIATES["flow"])
            for key in ("ref_warp0", "ref_warp"):
                if key in outputs:
                    image = outputs[key].clamp(0, 1).numpy().transpose(1, 2, 0)
                    write_png(inter / INTERMEDIATES[key], image, exclusive=excl)
                    written.append(inter / INTERMEDIATES[key])
            record = {k: v for k, v in degradation.items() if k != "notes"}
            write_json(inter / DEGRADATION_RECORD, record, exclusive=excl)
            written.append(inter / DEGRADATION_RECORD)
        if out.suffix.lower() == ".npy":
            write_npy(out, sr, exclusive=excl)
        else:
            geo = cube.geo.scaled(args.scale) if cube.geo is not None else None
            write_geotiff(out, sr, geo, wavelengths=cube.wavelengths, exclusive=excl)
    except BaseException:
        _remove(written, made)
        raise
    for line in [*degradation["notes"], *value_notes] if not args.quiet else ():  # after the writes: errors
        print(line, file=sys.stderr)  # stay one line
    tiles = f"tiles of {args.tile}" if args.tile else "whole scene"
    passes = f"{args.tta}-way self-ensemble" if args.tta > 1 else "one pass"
    return (
        f"wrote {out}: {sr.shape[0]}x{sr.shape[1]}x{sr.shape[2]} float32 (x{args.scale}, {passes}, {tiles}, "
        f"{time.perf_counter() - started:.1f} s, "
        f"{lr_grid} grid, {device.type})"
    )


INTEGER_MAXES = {float(np.iinfo(t).max): np.dtype(t).name for t in (np.uint8, np.int8, np.uint16, np.int16,
                                                                  np.uint32, np.int32)}  # fmt: skip
BIT_DEPTHS = (8, 10, 12, 14, 16)  # the depths detected: cameras' and spectrometers' usual ones


def check_values(cube: Cube, name: str) -> list[str]:
    """InputError for LR data with nothing to super-resolve (every pixel nodata, every value the same, zero
    included); a note for negative values (accepted: the output is clamped at 0 unless ``--no-clamp``)."""
    if cube.valid is not None and not cube.valid.any():
        raise InputError(f"{name}: every pixel is nodata: nothing to super-resolve")
    values = cube.data[cube.valid] if cube.valid is not None else cube.data
    low, high = float(values.min()), float(values.max())
    if low == high:
        what = "zero" if high == 0 else f"the same ({high * cube.scale_factor:g})"
        raise InputError(
            f"{name}: every value is {what}: nothing to super-resolve (an empty or blank scene?)"
        )
    notes = []
    if low < 0:
        n = int((values < 0).sum())
        notes.append(
            f"note: {name}: {n} negative values (down to {low * cube.scale_factor:g}) read as they are; the output "
            "is clamped at 0 (--no-clamp keeps negative values)"
        )
    return notes


def input_scaling(
    cube: Cube, data: np.ndarray, bit_depth: int | None, name: str
) -> tuple[float, float | None, list[str]]:
    """How the read data (``cube.data``: integer codes already divided by their type's maximum) are scaled for
    the network, nominally to [0, 1] as in training: ``(norm, top, notes)``, the data divided by ``norm``;
    ``top`` the upper end of the input's range in output units (None: unknown).

    Integer data: N-bit codes divided by 2^N - 1, N from ``bit_depth`` (``--bit-depth``), else the file's
    metadata (a GeoTIFF's NBITS, a .mat's maxValue), else the smallest of :data:`BIT_DEPTHS` that holds the
    largest value (12-bit data in uint16 files are divided by 4095, not 65535), with a note when that is less
    than the type's. Float data: as they are when within [0, 1], else divided by their largest value (other
    units, e.g. reflectance x 10000).
    """
    factor = cube.scale_factor
    peak = float(data.max()) * factor  # the largest value as stored
    type_name = INTEGER_MAXES.get(factor)
    nbits = cube.meta.get("nbits") if isinstance(cube.meta, dict) else None
    if bit_depth is not None:
        full = 2.0**bit_depth - 1
        if peak > full + 0.5:
            raise InputError(
                f"{name}: values up to {peak:g} exceed --bit-depth {bit_depth} (at most {full:g})"
            )
        return full / factor, full, []
    if type_name is not None and isinstance(nbits, int) and 0 < nbits and peak <= 2.0**nbits - 0.5:
        full = 2.0**nbits - 1
        return full / factor, full, []
    if type_name is not None:  # integer codes, divided by their type's maximum by the reader
        type_bits = round(np.log2(factor + 1))
        depths = [b for b in BIT_DEPTHS if b < type_bits] + [type_bits]
        bits = next(b for b in depths if peak <= 2.0**b - 0.5)
        full = 2.0**bits - 1
        notes = []
        if bits < type_bits:
            notes.append(
                f"note: {name}: {type_name} data with values up to {peak:g}, read as {bits}-bit (divided by "
                f"{full:g}, not {factor:g}); --bit-depth N to state the depth"
            )
        return full / factor, full, notes
    if factor != 1.0:  # the data's own full scale, as the file states it (a .mat's maxValue)
        return 1.0, factor, []
    if peak > 1.0:  # float data in other units: their range is not known
        return peak, None, []
    return 1.0, 1.0, []


def degradation_record(args: argparse.Namespace, lr_grid: str, estimates: dict[str, list]) -> dict:
    """What the test-time steps assumed of the LR data: the grid, the PSF given or estimated (per tile,
    by the flow refinement from the reference and by back-projection from the output:
    :func:`sschsr.pipeline.psf_estimates`) and the noise, with ``notes``: the lines printed on stderr."""
    record: dict = {"scale": args.scale, "lr_grid": lr_grid, "psf": args.psf}
    if args.lr_grid:
        how = "as stated"
    elif lr_grid == "block":
        how = "the file's pixels are areas; --lr-grid paper to change"
    else:
        how = "the default; --lr-grid block for pixels centred on their blocks"
    notes = [f"LR grid: {lr_grid} ({how})"]
    if args.psf in ("auto", "auto-reference"):
        from_ref, from_out = estimates["from_reference"], estimates["from_output"]
        record["estimated_from_reference"] = from_ref
        record["back_projection_psf"] = [{"psf": e["psf"], "from": e["source"]} for e in from_out]
        record["noise_std_mean"] = [e["noise_mean"] for e in from_out]
        if from_ref:
            notes.append(
                f"PSF estimated from the reference: {from_ref[0]}"
                + (f" (+{len(from_ref) - 1} tiles)" if len(from_ref) > 1 else "")
            )
        if from_out:
            notes.append(
                f"back-projection's PSF: {from_out[0]['psf']} (from the {from_out[0]['source']}); "
                f"noise std {from_out[0]['noise_mean']:.4f}"
                + (f" (+{len(from_out) - 1} tiles)" if len(from_out) > 1 else "")
            )
    return {**record, "notes": notes}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2, already reported in one line)
        return int(e.code or 0)
    single, many = (args.lr, args.ref, args.out), (args.batch, args.out_dir)
    if any(many) and any(single):
        return fail("--batch/--out-dir replace --lr, --ref and --out: give one or the other")
    if any(many):
        if not all(many):
            return fail("--batch needs --out-dir (and --out-dir --batch)")
        try:
            return run_batch(args, run)
        except InputError as e:
            return fail(str(e))
    if not all(single):
        missing = [f for f, v in zip(("--lr", "--ref", "--out"), single, strict=True) if not v]
        return fail(
            f"the following arguments are required: {', '.join(missing)} (or --batch LIST --out-dir DIR)"
        )
    try:
        # warnings (numpy's RuntimeWarnings and the like) are printed after the run, as notes: an error stays
        # one line
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = run(args)
    except InputError as e:
        return fail(str(e))
    except OSError as e:  # writing failed (permissions, disk full): the atomic writers left nothing behind
        return fail(f"cannot write the output: {e}")
    except (MemoryError, torch.cuda.OutOfMemoryError) as e:
        return fail(f"out of memory ({type(e).__name__}): pass --tile N (e.g. --tile 256) to bound memory")
    except RuntimeError as e:
        if "out of memory" in str(e) or "can't allocate memory" in str(e):
            return fail("out of memory: pass --tile N (e.g. --tile 256) to bound memory")
        raise
    if not args.quiet:
        for line in dict.fromkeys(
            f"note: {w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught
        ):
            print(line, file=sys.stderr)
    print(summary, file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
