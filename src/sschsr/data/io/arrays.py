"""Array files: MATLAB ``.mat`` (v4-v7 through scipy, v7.3 through h5py) and NumPy ``.npy`` / ``.npz``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sschsr.data.io._checks import _is_numeric, _normalise, _reading, _shape_str, _wavelengths_nm
from sschsr.data.io.records import Cube, Layout
from sschsr.errors import InputError

MAT_SUFFIXES = (".mat",)
NUMPY_SUFFIXES = (".npy", ".npz")

_MAT_WAVELENGTH_NAMES = (
    "wl",
    "wavelength",
    "wavelengths",
    "wavelength_nm",
    "wavelengths_nm",
    "wvl",
    "lambda",
)
_MAT_MAXVALUE_NAMES = ("maxvalue", "max_value", "maxval")
_MAT_ROW_NAMES = ("nrow", "nrows", "n_rows", "rows", "lines", "height")
_MAT_COL_NAMES = ("ncol", "ncols", "n_cols", "cols", "columns", "samples", "width")


def _cube_from_hwc(raw: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Check that ``raw`` is a non-empty 3-D array."""
    if raw.ndim != 3:
        raise InputError(f"{path}: {what} has shape {_shape_str(raw.shape)}, expected a 3-D cube (H, W, C)")
    if raw.size == 0:
        raise InputError(f"{path}: {what} is empty (shape {_shape_str(raw.shape)})")
    return raw


def _to_hwc(raw: np.ndarray, layout: Layout) -> np.ndarray:
    return np.ascontiguousarray(raw.transpose(1, 2, 0)) if layout == "chw" else raw


# --- MATLAB ---------------------------------------------------------------------------------------


@dataclass
class _MatVar:
    """A numeric variable in MATLAB's orientation; ``load`` reads it (v7.3 reads lazily)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    load: Callable[[], np.ndarray]


@contextmanager
def _mat_variables(path: Path) -> Iterator[dict[str, _MatVar]]:
    """The numeric variables of a .mat file (v7.3 through h5py, older through scipy)."""
    import h5py

    with _reading(path, "MATLAB file"):
        is_v73 = h5py.is_hdf5(path)
    if not is_v73:
        import scipy.io

        with _reading(path, "MATLAB file"):
            raw = scipy.io.loadmat(path)
        yield {
            k: _MatVar(v.shape, v.dtype, lambda v=v: v)
            for k, v in raw.items()
            if not k.startswith("__") and isinstance(v, np.ndarray) and _is_numeric(v.dtype)
        }
        return
    with _reading(path, "MATLAB v7.3 (HDF5) file"):
        f = h5py.File(path, "r")
    with f:
        with _reading(path, "MATLAB v7.3 (HDF5) file"):
            variables = {k: v for k, v in ((k, _h5_var(f, k, path)) for k in f.keys()) if v is not None}
        yield variables


def _h5_var(f: Any, name: str, path: Path) -> _MatVar | None:
    """A v7.3 variable as MATLAB sees it: HDF5 stores MATLAB's column-major arrays with axes reversed."""
    import h5py

    if name.startswith("#"):  # "#refs#", "#subsystem#": MATLAB's internal groups
        return None
    obj = f.get(name)
    if not isinstance(obj, h5py.Dataset) or not _is_numeric(obj.dtype):
        return None
    cls = obj.attrs.get("MATLAB_class", b"double")
    cls = cls.decode() if isinstance(cls, bytes) else str(cls)
    if cls in ("char", "logical", "cell", "struct", "function_handle") or obj.attrs.get("MATLAB_empty", 0):
        return None

    def load(obj=obj) -> np.ndarray:
        with _reading(path, f"variable {name!r}"):
            return np.ascontiguousarray(obj[()].T)

    return _MatVar(tuple(obj.shape[::-1]), obj.dtype, load)


def _scalar(variables: dict[str, _MatVar], names: Sequence[str]) -> float | None:
    """The value of the first single-number variable whose lower-case name is in ``names``."""
    for k, v in variables.items():
        if k.lower() in names and math.prod(v.shape) == 1:
            return float(np.asarray(v.load()).ravel()[0])
    return None


def _band_axis(shape: Sequence[int], layout: Layout) -> int:
    return shape[0] if layout == "chw" else shape[2]


def _pick_cube_name(shapes: dict[str, tuple[int, ...]], layout: Layout) -> str | None:
    """The largest 3-D array, preferring more than 3 bands.

    Files often ship an RGB companion next to the cube that can hold more values than the cube itself
    (Pavia's ``rgb1`` 500x340x3 vs ``I1`` 80x50x103; Houston's ``rgbImg`` ties with ``hyprImg``).
    """
    cands = [k for k, s in shapes.items() if len(s) == 3]
    if not cands:
        return None
    return max(
        cands,
        key=lambda k: (
            _band_axis(shapes[k], layout) > 3,
            math.prod(shapes[k]),
            _band_axis(shapes[k], layout),
        ),
    )


def _mat_image_size(variables: dict[str, _MatVar]) -> tuple[int | None, int | None]:
    """``(rows, cols)`` from nRow/nCol-style variables; None where absent or not a positive integer."""

    def count(value: float | None) -> int | None:
        ok = value is not None and math.isfinite(value) and value >= 1 and value == int(value)
        return int(value) if ok else None

    return count(_scalar(variables, _MAT_ROW_NAMES)), count(_scalar(variables, _MAT_COL_NAMES))


def _reshape_pixels(name: str, raw: np.ndarray, rows: int | None, cols: int | None, path: Path) -> np.ndarray:
    """A ``bands x pixels`` (or ``pixels x bands``) matrix -> ``(H, W, C)``, MATLAB column-major.

    MATLAB numbers pixels down the columns first: pixel ``(r, c)`` is column ``r + c * H`` of the matrix.
    """
    what = f"variable {name!r} is a 2-D {_shape_str(raw.shape)} matrix"
    if rows is None and cols is None:
        raise InputError(
            f"{path}: {what} (bands x pixels?) and the file has no nRow/nCol (or lines/cols) variables "
            "giving the image size, so it cannot be reshaped into a cube; save it as H x W x C"
        )
    if rows is None or cols is None:
        known = rows or cols
        n_pix = max(raw.shape)  # pixels outnumber bands in any real image
        if n_pix % known:
            raise InputError(f"{path}: {what}; its {n_pix} pixels do not fill whole rows of {known}")
        rows, cols = (known, n_pix // known) if rows else (n_pix // known, known)
    n_pix = rows * cols
    if raw.shape[1] == n_pix and raw.shape[0] != n_pix:
        pixels_by_bands = raw.T
    elif raw.shape[0] == n_pix and raw.shape[1] != n_pix:
        pixels_by_bands = raw
    else:
        raise InputError(
            f"{path}: {what}; neither side matches the image size {rows}x{cols} = {n_pix} pixels"
        )
    return pixels_by_bands.reshape((rows, cols, pixels_by_bands.shape[1]), order="F")


def _mat_wavelengths(variables: dict[str, _MatVar], n_bands: int) -> np.ndarray | None:
    for k, v in variables.items():
        if k.lower() in _MAT_WAVELENGTH_NAMES and math.prod(v.shape) == n_bands:
            return _wavelengths_nm(v.load())
    return None


def _read_mat(path: Path, layout: Layout, key: str | None) -> Cube:
    """MATLAB file -> Cube: ``key`` or the largest 3-D numeric variable (HWC in MATLAB unless chw)."""
    with _mat_variables(path) as variables:
        shapes = {k: v.shape for k, v in variables.items()}
        listing = ", ".join(f"{k} {_shape_str(s)}" for k, s in shapes.items()) or "none"
        rows, cols = _mat_image_size(variables)
        name = key
        if name is None:
            name = _pick_cube_name(shapes, layout)
        if name is None:
            # no 3-D array: the largest 2-D matrix, reshaped if the file says how
            flat = [k for k, s in shapes.items() if len(s) == 2 and min(s) > 1]
            if not flat:
                raise InputError(
                    f"{path}: no 3-D numeric array (cube) in the file; numeric variables: {listing}"
                )
            name = max(flat, key=lambda k: math.prod(shapes[k]))
        if name not in variables:
            raise InputError(f"{path}: no numeric variable {name!r}; numeric variables: {listing}")
        raw = variables[name].load()
        if raw.ndim == 2:
            raw = _reshape_pixels(name, raw, rows, cols, path)
        else:
            raw = _to_hwc(_cube_from_hwc(raw, path, f"variable {name!r}"), layout)
        _cube_from_hwc(raw, path, f"variable {name!r}")
        max_value = _scalar(variables, _MAT_MAXVALUE_NAMES)
        wavelengths = _mat_wavelengths(variables, raw.shape[2])
    data, scale = _normalise(raw, path, max_value if max_value and max_value > 0 else None)
    return Cube(data=data, wavelengths=wavelengths, name=path.stem, scale_factor=scale, meta={"key": name})


# --- NumPy ----------------------------------------------------------------------------------------


def _read_npy(path: Path, layout: Layout) -> Cube:
    """``.npy`` holding one ``(H, W, C)`` array (``(C, H, W)`` with ``layout="chw"``)."""
    with _reading(path, "NumPy file"):
        raw = np.load(path, allow_pickle=False)
    raw = _to_hwc(_cube_from_hwc(raw, path, "the array"), layout)
    data, scale = _normalise(raw, path)
    return Cube(data=data, name=path.stem, scale_factor=scale)


def _read_npz(path: Path, layout: Layout, key: str | None) -> Cube:
    """``.npz``: array ``key``, else the largest 3-D array (preferring more than 3 bands)."""
    with _reading(path, "NumPy archive"), np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    listing = ", ".join(f"{k} {_shape_str(a.shape)}" for k, a in arrays.items()) or "none"
    if key is None:
        key = _pick_cube_name({k: a.shape for k, a in arrays.items() if _is_numeric(a.dtype)}, layout)
        if key is None:
            raise InputError(f"{path}: no 3-D numeric array (cube) in the archive; arrays: {listing}")
    if key not in arrays:
        raise InputError(f"{path}: no array {key!r}; arrays: {listing}")
    raw = _to_hwc(_cube_from_hwc(arrays[key], path, f"array {key!r}"), layout)
    data, scale = _normalise(raw, path)
    return Cube(data=data, name=path.stem, scale_factor=scale, meta={"key": key})
