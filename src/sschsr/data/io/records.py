"""What the readers return: :class:`Cube` (a normalised cube) and :class:`GeoInfo` (georeferencing)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS

Layout = Literal["hwc", "chw"]


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
