"""GeoTIFF and ENVI rasters through rasterio: bands first on disk, georeferencing in :class:`GeoInfo`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from sschsr.data.io._checks import (
    _is_numeric,
    _normalise,
    _quiet_rasterio,
    _reading,
    _shape_str,
    _wavelengths_nm,
)
from sschsr.data.io.records import Cube, GeoInfo
from sschsr.errors import InputError

RASTER_SUFFIXES = (".tif", ".tiff", ".img")
# where an ENVI header's binary data may live, next to the header
ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")


def _envi_header(path: Path) -> Path | None:
    """The ENVI header beside a data file (``x.hdr`` or ``x.img.hdr``), if there is one."""
    for hdr in (path.with_suffix(".hdr"), path.with_name(path.name + ".hdr")):
        if hdr.is_file() and hdr != path:
            return hdr
    return None


def _envi_data_file(hdr: Path) -> Path:
    """The binary data file an ENVI header describes (rasterio opens the data file, not the header)."""
    stem = hdr.with_suffix("")
    for suffix in ENVI_DATA_SUFFIXES:
        for cand in (stem.with_name(stem.name + suffix), stem.with_name(stem.name + suffix.upper())):
            if cand.is_file() and cand != hdr:
                return cand
    raise InputError(
        f"{hdr}: ENVI header without its data file (looked for {stem.name} with "
        f"{', '.join(s or 'no extension' for s in ENVI_DATA_SUFFIXES)})"
    )


def _split_list(text: str) -> list[str]:
    return [t.strip() for t in text.strip().strip("{}").split(",") if t.strip()]


_WAVELENGTH_IN_TEXT = re.compile(
    r"(?P<value>\d+(?:\.\d*)?)\s*(?P<unit>nm|nanometers?|um|µm|μm|micrometers?|microns?)\b", re.IGNORECASE
)


def _wavelengths_from_descriptions(descriptions: Sequence[str]) -> np.ndarray | None:
    """``"450.5"``, ``"Band 3 (0.45 Micrometers)"`` or ``"B2 492 nm"`` -> nm; None unless every band parses.

    A bare number counts only with a decimal point or from 100 up: descriptions "1", "2", ... are band
    numbers, not wavelengths.
    """
    values, units = [], None
    for d in descriptions:
        text = (d or "").strip()
        m = _WAVELENGTH_IN_TEXT.search(text)
        if m:
            values.append(float(m["value"]))
            units = m["unit"]
            continue
        try:
            value = float(text)
        except ValueError:
            return None
        if "." not in text and value < 100:
            return None
        values.append(value)
    return _wavelengths_nm(values, units) if values else None


def _raster_wavelengths(src: Any, descriptions: Sequence[str]) -> np.ndarray | None:
    """Band centres from per-band tags, GDAL's IMAGERY domain, ENVI header or band descriptions."""
    n = src.count
    ds_tags = src.tags()
    band_tags = [src.tags(b) for b in range(1, n + 1)]
    if all("wavelength" in t for t in band_tags):
        with _ignore_value_errors():
            units = band_tags[0].get("wavelength_units") or ds_tags.get("wavelength_units")
            return _wavelengths_nm([float(t["wavelength"]) for t in band_tags], units)
    with _ignore_value_errors():
        imagery = [src.tags(b, ns="IMAGERY") for b in range(1, n + 1)]
        if all("CENTRAL_WAVELENGTH_UM" in t for t in imagery):
            return _wavelengths_nm([float(t["CENTRAL_WAVELENGTH_UM"]) for t in imagery], "um")
    with _ignore_value_errors():
        envi = src.tags(ns="ENVI")
        values = _split_list(envi.get("wavelength", ""))
        if len(values) == n:
            return _wavelengths_nm([float(v) for v in values], envi.get("wavelength_units"))
    return _wavelengths_from_descriptions(descriptions)


@contextmanager
def _ignore_value_errors() -> Iterator[None]:
    """Wavelength metadata is optional: a malformed entry means "unknown", not a failed read."""
    try:
        yield
    except (ValueError, KeyError, TypeError):
        pass


def _nodata_mask(raw: np.ndarray, nodatavals: Sequence[float | None]) -> np.ndarray:
    """``(C, H, W)`` bool, True where a band holds its nodata value or NaN."""
    bad = np.zeros(raw.shape, dtype=bool)
    if np.issubdtype(raw.dtype, np.floating):
        bad |= np.isnan(raw)
    for b, nd in enumerate(nodatavals):
        if nd is None:
            continue
        bad[b] |= np.isnan(raw[b]) if np.isnan(nd) else raw[b] == nd
    return bad


def _read_raster(path: Path, data_path: Path) -> Cube:
    """GeoTIFF / ENVI -> Cube with GeoInfo; bands first on disk, returned ``(H, W, C)``.

    Pixels where any band equals its nodata value or is NaN get ``valid = False`` and those values are
    set to 0, so the data stays finite; Inf is an error.
    """
    import rasterio

    with _quiet_rasterio(), _reading(path, "raster"), rasterio.open(data_path) as src:
        raw = src.read()  # (C, H, W)
        descriptions = tuple(d or "" for d in src.descriptions)
        nodatavals = tuple(src.nodatavals)
        # a sensor's bit depth (12-bit data in uint16), as GDAL keeps it: per band, or for the dataset
        nbits = src.tags(1, ns="IMAGE_STRUCTURE").get("NBITS") or src.tags(ns="IMAGE_STRUCTURE").get("NBITS")
        geo = GeoInfo(
            crs=src.crs,
            transform=src.transform,
            nodata=src.nodata,
            band_descriptions=descriptions if any(descriptions) else None,
            wavelengths=_raster_wavelengths(src, descriptions),
        )
    if raw.size == 0:
        raise InputError(f"{path}: raster is empty (shape {_shape_str(raw.shape)})")
    if not _is_numeric(raw.dtype):
        raise InputError(f"{path}: raster values of type {raw.dtype} are not supported")
    bad = _nodata_mask(raw, nodatavals)
    if bad.any():
        raw = raw.copy()
        raw[bad] = 0
    valid = ~bad.any(axis=0) if (bad.any() or any(nd is not None for nd in nodatavals)) else None
    data, scale = _normalise(np.ascontiguousarray(raw.transpose(1, 2, 0)), path)
    meta = {"nbits": int(nbits)} if nbits is not None and str(nbits).isdigit() else {}
    return Cube(
        data=data,
        wavelengths=geo.wavelengths,
        geo=geo,
        valid=valid,
        name=path.stem,
        scale_factor=scale,
        meta=meta,
    )
