"""Checks and conversions every reader shares: error wrapping, path and value checks, normalisation."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from sschsr.errors import InputError


@contextmanager
def _reading(path: Path, what: str) -> Iterator[None]:
    """Turn any reader library's exception into an InputError naming the file.

    scipy, h5py, rasterio, PIL and numpy each raise their own zoo of types (ValueError, OSError,
    KeyError, zipfile.BadZipFile, RasterioIOError, ...) for a corrupt file; the user needs one message.
    """
    try:
        yield
    except (InputError, MemoryError):
        raise
    except Exception as e:  # broad on purpose, see docstring
        raise InputError(f"{path}: cannot read {what} ({type(e).__name__}: {e})") from e


def _check_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")


def _shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _check_finite(data: np.ndarray, path: Path) -> None:
    """InputError if ``data`` holds NaN or Inf, with the counts."""
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.all():
            n_nan = int(np.isnan(data).sum())
            n_inf = int(data.size - finite.sum()) - n_nan
            raise InputError(
                f"{path}: contains {n_nan} NaN and {n_inf} Inf values out of {data.size}; "
                "replace them (e.g. by interpolation) before use"
            )


def _is_numeric(dtype: np.dtype) -> bool:
    """Real numbers only: not bool (masks), complex, strings, structs or objects."""
    return np.issubdtype(dtype, np.number) and not np.issubdtype(dtype, np.complexfloating)


def _normalise(raw: np.ndarray, path: Path, max_value: float | None = None) -> tuple[np.ndarray, float]:
    """Raw values -> float32: integers divided by ``max_value`` (else the dtype max), floats kept.

    Returns:
        ``(data float32, scale_factor)``.
    """
    if not _is_numeric(raw.dtype):
        raise InputError(f"{path}: values of type {raw.dtype} are not numeric image data")
    if np.issubdtype(raw.dtype, np.integer):
        scale = float(max_value) if max_value else float(np.iinfo(raw.dtype).max)
        data = raw.astype(np.float32)
        data /= np.float32(scale)
        return data, scale
    data = raw.astype(np.float32, copy=False)
    _check_finite(data, path)  # also catches float64 values beyond float32's range
    return data, 1.0


def _wavelengths_nm(values: Sequence[float] | np.ndarray, units: str | None = None) -> np.ndarray | None:
    """Band centres in nm: micrometres converted by ``units``, or when every value is below 10."""
    wl = np.asarray(values, dtype=np.float64).ravel()
    if wl.size == 0 or not np.isfinite(wl).all() or (wl <= 0).any():
        return None
    u = (units or "").strip().lower()
    micro = "micro" in u or u in ("um", "µm", "μm", "microns")
    nano = "nano" in u or u == "nm"
    if micro or (not nano and wl.max() < 10):  # no spectrometer band lies below 10 nm: those are um
        wl = wl * 1000.0
    return wl


@contextmanager
def _quiet_rasterio() -> Iterator[None]:
    """Plain images have no georeferencing: that is fine here, not worth a warning."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield
