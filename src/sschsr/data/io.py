"""Readers and writers for hyperspectral cubes and RGB images, one small function per format.

Array contract at file level: a cube is ``(H, W, C)`` float32, an RGB image ``(H, W, 3)`` float32 in
``[0, 1]``. Integer formats are divided by their maximum code value (or by a dataset's own ``maxValue``)
and :attr:`Cube.scale_factor` records the divisor, so ``cube.data * cube.scale_factor`` restores the
stored values; float data is kept as stored (``scale_factor = 1``).

Formats read by :func:`read_cube`:

- CAVE scene folders: ``<scene>_ms_01.png ... <scene>_ms_31.png``, 16-bit grayscale, either flat
  (``balloons_ms/balloons_ms_01.png``) or nested as in the official zips
  (``balloons_ms/balloons_ms/balloons_ms_01.png``). ``watercolors_ms`` ships 8-bit RGBA band images: the
  first channel is used and divided by 255. 31 bands are 400-700 nm in 10 nm steps.
- MATLAB ``.mat``: v4/v5/v7 through scipy, v7.3 (HDF5) through h5py, with the array brought back to
  MATLAB's orientation. A ``bands x pixels`` matrix is reshaped when the file gives the image size
  (``nRow``/``nCol``, ``lines``/``cols``, ...), MATLAB column-major as the data was written.
- NumPy ``.npy`` / ``.npz``: HWC unless ``layout="chw"``.
- GeoTIFF and ENVI through rasterio: bands first on disk, returned HWC, with CRS, transform, nodata,
  band descriptions and wavelengths in :class:`GeoInfo`; pixels at nodata (or NaN) are marked in
  :attr:`Cube.valid` and set to 0 in the data.

Every problem with the user's input raises :class:`~sschsr.errors.InputError` naming the file. Writers
are atomic: they write a hidden temporary file beside the target and rename it, so an interrupted run
never leaves a partial output.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from sschsr.errors import InputError

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS

Layout = Literal["hwc", "chw"]

CAVE_START_NM, CAVE_STEP_NM, CAVE_BANDS = 400.0, 10.0, 31
MAT_SUFFIXES = (".mat",)
NUMPY_SUFFIXES = (".npy", ".npz")
RASTER_SUFFIXES = (".tif", ".tiff", ".img")
CUBE_SUFFIXES = (".mat", ".npy", ".npz", ".tif", ".tiff", ".hdr")
RGB_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# where an ENVI header's binary data may live, next to the header
ENVI_DATA_SUFFIXES = ("", ".img", ".dat", ".raw", ".bsq", ".bil", ".bip", ".bin")

_CAVE_BAND = re.compile(r"^(?P<scene>.+_ms)_(?P<band>\d+)\.png$", re.IGNORECASE)
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


# --------------------------------------------------------------------------------------------------
# Data classes


@dataclass(frozen=True, eq=False)
class GeoInfo:
    """Georeferencing and band metadata of a raster, in rasterio's terms.

    Attributes:
        crs: ``rasterio.crs.CRS`` or None (not georeferenced).
        transform: ``affine.Affine`` from pixel (col, row) to map coordinates, or None.
        nodata: the nodata value in the file's raw units (before normalisation), or None.
        band_descriptions: one string per band ("" where a band has none), or None.
        wavelengths: ``(C,)`` float64 band centres in nm, or None.
    """

    crs: CRS | None = None
    transform: Affine | None = None
    nodata: float | None = None
    band_descriptions: tuple[str, ...] | None = None
    wavelengths: np.ndarray | None = None

    def scaled(self, scale: float) -> GeoInfo:
        """The same georeferencing for a grid ``scale`` times finer: same CRS and origin, pixel size / scale.

        A super-resolved output of ``(s*H, s*W)`` pixels then covers exactly the input's footprint.
        """
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        if self.transform is None:
            return self
        from affine import Affine

        zoom = Affine.scale(1.0 / scale)
        # affine >= 2.4 composes with `@` and deprecates `*`; older releases only have `*`
        fine = self.transform @ zoom if hasattr(Affine, "__matmul__") else self.transform * zoom
        return replace(self, transform=fine)


@dataclass(eq=False)
class Cube:
    """A hyperspectral cube read from a file, normalised.

    Attributes:
        data: ``(H, W, C)`` float32; integer formats divided by ``scale_factor`` (about ``[0, 1]``).
        wavelengths: ``(C,)`` float64 band centres in nm, or None when the file does not say.
        geo: georeferencing of GeoTIFF / ENVI input, else None.
        valid: ``(H, W)`` bool, False at nodata / NaN pixels (rasters only), or None (all valid).
        name: the scene's name (file stem or CAVE folder name).
        scale_factor: what the raw values were divided by (1.0 for float data).
    """

    data: np.ndarray
    wavelengths: np.ndarray | None = None
    geo: GeoInfo | None = None
    valid: np.ndarray | None = None
    name: str = ""
    scale_factor: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_bands(self) -> int:
        return int(self.data.shape[2])


# --------------------------------------------------------------------------------------------------
# Shared checks


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


def _cube_from_hwc(raw: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Check that ``raw`` is a non-empty 3-D array."""
    if raw.ndim != 3:
        raise InputError(f"{path}: {what} has shape {_shape_str(raw.shape)}, expected a 3-D cube (H, W, C)")
    if raw.size == 0:
        raise InputError(f"{path}: {what} is empty (shape {_shape_str(raw.shape)})")
    return raw


def _to_hwc(raw: np.ndarray, layout: Layout) -> np.ndarray:
    return np.ascontiguousarray(raw.transpose(1, 2, 0)) if layout == "chw" else raw


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


# --------------------------------------------------------------------------------------------------
# read_cube


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


# --- CAVE folders ---------------------------------------------------------------------------------


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


# --- GeoTIFF / ENVI (rasterio) --------------------------------------------------------------------


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


@contextmanager
def _quiet_rasterio() -> Iterator[None]:
    """Plain images have no georeferencing: that is fine here, not worth a warning."""
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


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
    return Cube(
        data=data, wavelengths=geo.wavelengths, geo=geo, valid=valid, name=path.stem, scale_factor=scale
    )


# --------------------------------------------------------------------------------------------------
# find_cubes


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


# --------------------------------------------------------------------------------------------------
# read_rgb


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


# --------------------------------------------------------------------------------------------------
# Writers (atomic)


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
