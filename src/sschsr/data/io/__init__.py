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

from sschsr.data.io.arrays import MAT_SUFFIXES, NUMPY_SUFFIXES
from sschsr.data.io.cave import CAVE_BANDS, CAVE_START_NM, CAVE_STEP_NM
from sschsr.data.io.cubes import CUBE_SUFFIXES, find_cubes, read_cube
from sschsr.data.io.images import RGB_SUFFIXES, read_rgb
from sschsr.data.io.raster import ENVI_DATA_SUFFIXES, RASTER_SUFFIXES
from sschsr.data.io.records import Cube, GeoInfo, Layout
from sschsr.data.io.writers import (
    clean_stale,
    process_alive,
    reserve,
    write_geotiff,
    write_json,
    write_npy,
    write_png,
    write_text,
)

__all__ = [
    "CAVE_BANDS",
    "CAVE_START_NM",
    "CAVE_STEP_NM",
    "CUBE_SUFFIXES",
    "ENVI_DATA_SUFFIXES",
    "MAT_SUFFIXES",
    "NUMPY_SUFFIXES",
    "RASTER_SUFFIXES",
    "RGB_SUFFIXES",
    "Cube",
    "GeoInfo",
    "Layout",
    "clean_stale",
    "process_alive",
    "find_cubes",
    "read_cube",
    "read_rgb",
    "reserve",
    "write_geotiff",
    "write_json",
    "write_npy",
    "write_png",
    "write_text",
]
