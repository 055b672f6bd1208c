"""Atomic writers (``.npy``, text, JSON, PNG, GeoTIFF): a hidden temporary file beside the target, renamed."""

from __future__ import annotations

import json
import os
import secrets
import struct
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sschsr.data.io._checks import _quiet_rasterio
from sschsr.data.io.records import GeoInfo
from sschsr.errors import InputError


@contextmanager
def _atomic(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any failure (or interruption) the temporary file is removed and an existing ``path`` is untouched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: cannot write, folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{path}: cannot write, a folder of that name exists")
    # same folder, so os.replace is a rename within one file system (atomic); keep the suffix for drivers
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}")
    side = tmp.with_name(tmp.name + ".aux.xml")  # GDAL's side-car metadata, should a driver write one
    try:
        yield tmp
        os.replace(tmp, path)
        if side.exists():
            os.replace(side, path.with_name(path.name + ".aux.xml"))
    except BaseException:
        tmp.unlink(missing_ok=True)
        side.unlink(missing_ok=True)
        raise


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` atomically (any shape and dtype; cubes are HWC float32 by convention)."""
    array = np.asarray(array)
    with _atomic(path) as tmp, open(tmp, "xb") as f:
        np.save(f, array, allow_pickle=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Save ``text`` atomically (a reader sees the old file or the new one, never a part)."""
    with _atomic(path) as tmp, open(tmp, "x") as f:
        f.write(text)


def write_json(path: str | os.PathLike, record: Any) -> None:
    """Save ``record`` as indented JSON atomically."""
    write_text(path, json.dumps(record, indent=2, default=str) + "\n")


def _to_image_codes(rgb: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 (rounded, clipped); uint8 / uint16 as given; shape checked."""
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[..., 0]
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] in (3, 4))) or rgb.size == 0:
        raise ValueError(f"write_png expects (H, W), (H, W, 3) or (H, W, 4), got {rgb.shape}")
    if rgb.dtype in (np.uint8, np.uint16):
        return rgb
    if np.issubdtype(rgb.dtype, np.floating):
        if not np.isfinite(rgb).all():
            raise ValueError("write_png: image holds NaN or Inf values")
        return np.round(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"write_png expects float in [0, 1], uint8 or uint16, got {rgb.dtype}")


def _png16_bytes(codes: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, RGB or RGBA), which Pillow cannot write for colour images."""
    h, w = codes.shape[:2]
    c = 1 if codes.ndim == 2 else codes.shape[2]
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.zeros((h, 1 + 2 * w * c), dtype=np.uint8)  # leading 0 per row: filter type "None"
    rows[:, 1:] = codes.astype(">u2").reshape(h, w * c).view(np.uint8)

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    header = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Save an image as PNG atomically.

    Args:
        rgb: ``(H, W, 3)`` (or ``(H, W)``, ``(H, W, 4)``): float in [0, 1] -> 8 bit (clipped, rounded);
            uint8 or uint16 written as given (16-bit PNG).
    """
    codes = _to_image_codes(rgb)
    with _atomic(path) as tmp:
        if codes.dtype == np.uint16:
            with open(tmp, "xb") as f:
                f.write(_png16_bytes(codes))
        else:
            Image.fromarray(codes).save(tmp, format="PNG")


def write_geotiff(
    path: str | os.PathLike,
    array: np.ndarray,
    geo: GeoInfo | None = None,
    band_descriptions: Sequence[str] | None = None,
    *,
    wavelengths: Sequence[float] | np.ndarray | None = None,
) -> None:
    """Save a cube as a float32 GeoTIFF atomically, bands first on disk.

    Args:
        array: ``(H, W, C)`` (or ``(H, W)``), written as float32.
        geo: CRS, transform, nodata, band descriptions and wavelengths to keep (e.g. ``geo.scaled(s)``
            for a super-resolved output); None writes a plain, non-georeferenced TIFF.
        band_descriptions: one per band, overriding ``geo.band_descriptions``.
        wavelengths: ``(C,)`` nm, overriding ``geo.wavelengths``; stored as per-band ``wavelength`` tags.
    """
    import rasterio

    data = np.asarray(array, dtype=np.float32)
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3 or data.size == 0:
        raise ValueError(f"write_geotiff expects (H, W, C), got {np.shape(array)}")
    h, w, c = data.shape
    geo = geo or GeoInfo()
    descriptions = band_descriptions if band_descriptions is not None else geo.band_descriptions
    if descriptions is not None and len(descriptions) != c:
        raise ValueError(f"write_geotiff: {len(descriptions)} band descriptions for {c} bands")
    wl = wavelengths if wavelengths is not None else geo.wavelengths
    if wl is not None and len(wl) != c:
        if wavelengths is not None:
            raise ValueError(f"write_geotiff: {len(wl)} wavelengths for {c} bands")
        wl = None  # geo from another band set (e.g. a model with other outputs): drop, do not mislabel
    profile = dict(
        driver="GTiff", width=w, height=h, count=c, dtype="float32", crs=geo.crs, transform=geo.transform,
        nodata=geo.nodata, compress="deflate", predictor=3, interleave="band", BIGTIFF="IF_SAFER",
    )  # fmt: skip
    if geo.transform is None:
        profile.pop("transform")
    with _atomic(path) as tmp, _quiet_rasterio(), rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data.transpose(2, 0, 1))
        for b in range(c):
            if descriptions is not None:
                dst.set_band_description(b + 1, str(descriptions[b]))
            if wl is not None:
                dst.update_tags(b + 1, wavelength=repr(float(wl[b])), wavelength_units="Nanometers")
