"""RGB photos (PNG, JPEG, TIFF, BMP; 8 or 16 bit) read as ``(H, W, 3)`` float32 in ``[0, 1]``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from sschsr.data.io._checks import _check_finite, _check_path, _quiet_rasterio, _reading, _shape_str
from sschsr.errors import InputError

RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as ``(H, W, 3)`` float32 in ``[0, 1]``.

    PNG / JPEG / TIFF / BMP, 8 or 16 bit (divided by 255 or 65535), float TIFF already in [0, 1];
    RGBA drops alpha, grayscale is repeated to 3 channels, palettes are expanded.
    """
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, expected an image file")
    suffix = path.suffix.lower()
    if suffix not in RGB_SUFFIXES:
        raise InputError(
            f"{path}: unsupported image type {path.suffix or '(no extension)'!r}; expected PNG, JPEG, TIFF or BMP"
        )
    # Pillow reduces 16-bit colour PNGs to 8 bits and cannot open many 16-bit TIFFs: GDAL reads both.
    if suffix in (".tif", ".tiff") or (suffix == ".png" and _png_is_16bit_colour(path)):
        try:
            arr = _read_rgb_rasterio(path)
        except InputError:
            arr = _read_rgb_pil_quietly(path) if suffix != ".png" else None
            if arr is None:
                raise
    else:
        arr = _read_rgb_pil(path)
    return _rgb01(arr, path)


def _png_is_16bit_colour(path: Path) -> bool:
    """IHDR says bit depth 16 with colour type 2 (RGB) or 6 (RGBA)."""
    with open(path, "rb") as f:
        head = f.read(26)
    return len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[24] == 16 and head[25] in (2, 6)


def _read_rgb_pil(path: Path) -> np.ndarray:
    """Pillow -> ``(H, W)`` or ``(H, W, C)`` raw values (uint8, uint16 or float32)."""
    with _reading(path, "image"), Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("P", "PA"):
            im = im.convert("RGBA")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if mode == "I":  # 16-bit grayscale on some Pillow builds
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise InputError(f"{path}: 32-bit integer images are not supported; save it as 8 or 16 bit")
        arr = arr.astype(np.uint16)
    elif mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr


def _read_rgb_pil_quietly(path: Path) -> np.ndarray | None:
    """A TIFF flavour GDAL refuses (rare) may still open in Pillow; None if it does not."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corruption GDAL already reported
        try:
            return _read_rgb_pil(path)
        except InputError:
            return None


def _read_rgb_rasterio(path: Path) -> np.ndarray:
    """GDAL -> ``(H, W, C)`` raw values; a paletted single band is expanded through its colour map."""
    import rasterio
    from rasterio.enums import ColorInterp

    with _quiet_rasterio(), _reading(path, "image"), rasterio.open(path) as src:
        raw = src.read()
        if src.count == 1 and src.colorinterp[0] == ColorInterp.palette:
            cmap = src.colormap(1)
            lut = np.zeros((max(256, max(cmap) + 1), 4), dtype=np.uint8)
            for i, rgba in cmap.items():
                lut[i] = rgba
            return lut[raw[0]]
    return raw.transpose(1, 2, 0)


def _rgb01(arr: np.ndarray, path: Path) -> np.ndarray:
    """Raw image values -> ``(H, W, 3)`` float32 in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{path}: image of shape {_shape_str(arr.shape)} is not grayscale, RGB or RGBA")
    if arr.size == 0:
        raise InputError(f"{path}: image is empty ({_shape_str(arr.shape)})")
    arr = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]  # drop alpha
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / np.float32(65535)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        _check_finite(out, path)
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(f"{path}: float image values must lie in [0, 1], found {lo:.4g}..{hi:.4g}")
        out = np.clip(out, 0.0, 1.0)
    else:
        raise InputError(f"{path}: {arr.dtype} images are not supported; use 8 or 16 bit")
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)
