""":func:`read_cube`, which picks the reader by file type, and :func:`find_cubes`, which lists a folder's cubes."""

from __future__ import annotations

import os
from pathlib import Path

from sschsr.data.io._checks import _check_path
from sschsr.data.io.arrays import MAT_SUFFIXES, _read_mat, _read_npy, _read_npz
from sschsr.data.io.cave import _CAVE_BAND, _read_cave
from sschsr.data.io.raster import RASTER_SUFFIXES, _envi_data_file, _envi_header, _read_raster
from sschsr.data.io.records import Cube, Layout
from sschsr.errors import InputError

CUBE_SUFFIXES = (".mat", ".npy", ".npz", ".tif", ".tiff", ".hdr")


def read_cube(path: str | os.PathLike, *, layout: Layout = "hwc", key: str | None = None) -> Cube:
    """Read a hyperspectral cube from any supported file or CAVE scene folder.

    Args:
        path: a CAVE scene folder, ``.mat``, ``.npy``, ``.npz``, GeoTIFF (``.tif``/``.tiff``) or ENVI
            (the ``.hdr`` or its data file).
        layout: axis order of ``.npy``/``.npz``/``.mat`` arrays: ``"hwc"`` or ``"chw"`` (bands first).
            GeoTIFF/ENVI are bands first on disk by definition and CAVE folders are one file per band.
        key: the variable to take from a ``.mat``/``.npz``; default: the largest 3-D array.

    Returns:
        a :class:`Cube`, ``data`` ``(H, W, C)`` float32.

    Raises:
        InputError: missing, empty, corrupt or unsupported file; no cube inside; NaN/Inf values.
    """
    if layout not in ("hwc", "chw"):
        raise ValueError(f"layout must be 'hwc' or 'chw', got {layout!r}")
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        return _read_cave(path)
    suffix = path.suffix.lower()
    if suffix in MAT_SUFFIXES:
        return _read_mat(path, layout, key)
    if suffix == ".npy":
        return _read_npy(path, layout)
    if suffix == ".npz":
        return _read_npz(path, layout, key)
    if suffix == ".hdr":
        return _read_raster(path, _envi_data_file(path))
    if suffix in RASTER_SUFFIXES or _envi_header(path) is not None:
        return _read_raster(path, path)
    raise InputError(
        f"{path}: unsupported file type {path.suffix or '(no extension)'!r}; expected a CAVE scene folder, "
        ".mat, .npy, .npz, GeoTIFF (.tif/.tiff) or ENVI (.hdr with its data file)"
    )


def find_cubes(root: str | os.PathLike) -> list[Path]:
    """Every cube under ``root``: CAVE scene folders (once each, not their band files), ``.mat``,
    ``.npy``, ``.npz``, ``.tif``/``.tiff`` and ENVI ``.hdr`` files; hidden files are skipped.

    Returns:
        paths sorted by name (then by full path), each one :func:`read_cube` accepts. For the nested
        CAVE layout the inner folder (the one holding the band images) is returned.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(_CAVE_BAND.match(f) for f in filenames):
            found.append(folder)
        found.extend(
            folder / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in CUBE_SUFFIXES
        )
    return sorted(found, key=lambda p: (p.name.lower(), str(p)))
