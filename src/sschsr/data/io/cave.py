"""CAVE scene folders: one 8- or 16-bit PNG per band, ``<scene>_ms_01.png ... <scene>_ms_31.png``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from sschsr.data.io._checks import _reading, _shape_str
from sschsr.data.io.records import Cube
from sschsr.errors import InputError

CAVE_START_NM, CAVE_STEP_NM, CAVE_BANDS = 400.0, 10.0, 31

_CAVE_BAND = re.compile(r"^(?P<scene>.+_ms)_(?P<band>\d+)\.png$", re.IGNORECASE)


def _cave_band_files(folder: Path) -> list[Path]:
    """The ``<scene>_ms_<NN>.png`` files directly in ``folder`` (empty when it is not a CAVE folder)."""
    try:
        return [p for p in folder.iterdir() if _CAVE_BAND.match(p.name) and p.is_file()]
    except OSError:
        return []


def _cave_folder(path: Path) -> Path:
    """The folder that holds the band PNGs: ``path`` itself, or the nested ``<scene>/<scene>/``."""
    if _cave_band_files(path):
        return path
    subs = [p for p in sorted(path.iterdir()) if p.is_dir() and _cave_band_files(p)]
    same_name = [p for p in subs if p.name == path.name]
    if same_name:
        return same_name[0]
    if len(subs) == 1:
        return subs[0]
    if subs:
        names = ", ".join(p.name for p in subs)
        raise InputError(f"{path}: holds several CAVE scene folders ({names}); pass one of them")
    raise InputError(f"{path}: folder holds no CAVE band images (<scene>_ms_01.png ... <scene>_ms_31.png)")


def _cave_bands_in_order(folder: Path) -> list[Path]:
    """Band files sorted by their number (``_2`` before ``_10``), checked to run 1..N without gaps."""
    by_band: dict[int, Path] = {}
    scenes = set()
    for p in _cave_band_files(folder):
        m = _CAVE_BAND.match(p.name)
        band = int(m["band"])
        scenes.add(m["scene"])
        if band in by_band:
            raise InputError(f"{folder}: band {band} appears twice ({by_band[band].name}, {p.name})")
        by_band[band] = p
    if len(scenes) > 1:
        raise InputError(
            f"{folder}: band images of several scenes in one folder: {', '.join(sorted(scenes))}"
        )
    n = max(by_band)
    missing = sorted(set(range(1, n + 1)) - set(by_band))
    if missing or min(by_band) != 1:
        raise InputError(f"{folder}: CAVE band numbers must run 1..{n}; missing {missing}")
    return [by_band[b] for b in range(1, n + 1)]


def _read_band_png(path: Path) -> tuple[np.ndarray, int]:
    """One CAVE band image -> ``(H, W)`` codes and its maximum code value (65535 or 255).

    16-bit grayscale is the norm; 8-bit gray / RGB / RGBA (watercolors_ms) take the first channel.
    """
    with _reading(path, "band image"), Image.open(path) as im:
        mode = im.mode
        if mode == "P":
            im = im.convert("L")
            mode = "L"
        arr = np.asarray(im)
    if mode.startswith("I;16") or mode == "I":  # "I": 16-bit PNGs on some Pillow builds
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(f"{path}: band values outside the 16-bit range")
        return arr, 65535
    if mode in ("L", "LA", "RGB", "RGBA"):
        return (arr if arr.ndim == 2 else arr[..., 0]), 255
    raise InputError(f"{path}: unsupported band image mode {mode!r} (expected 8- or 16-bit grayscale)")


def _read_cave(path: Path) -> Cube:
    """CAVE scene folder -> ``(H, W, N)`` float32 in [0, 1], 400-700 nm for 31 bands."""
    folder = _cave_folder(path)
    files = _cave_bands_in_order(folder)
    data: np.ndarray | None = None
    max_code = None
    for i, f in enumerate(files):
        band, code = _read_band_png(f)
        if data is None:
            data = np.empty((*band.shape, len(files)), dtype=np.float32)
            max_code, first = code, f
        if band.shape != data.shape[:2]:
            raise InputError(
                f"{folder}: band images differ in size: {first.name} is {_shape_str(data.shape[:2])}, "
                f"{f.name} is {_shape_str(band.shape)}"
            )
        if code != max_code:
            raise InputError(f"{folder}: band images mix bit depths ({first.name} vs {f.name})")
        data[..., i] = band
    if data.size == 0:
        raise InputError(f"{folder}: band images are empty")
    data /= np.float32(max_code)
    n = data.shape[2]
    wl = CAVE_START_NM + CAVE_STEP_NM * np.arange(n) if n == CAVE_BANDS else None
    return Cube(data=data, wavelengths=wl, name=path.name, scale_factor=float(max_code))
