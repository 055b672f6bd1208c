"""A remote-sensing scene cut into tiles: :class:`GeoTIFFTiles`, a
:class:`~sschsr.data.datasets.SceneSource` over one raster (GeoTIFF, ENVI, or any cube the reader takes),
with an optional real RGB reference resampled onto the HSI grid (by georeferencing where both rasters
have it, :func:`_reproject_rgb`, through rasterio).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from sschsr.data.datasets import Scene, SceneSource, _cube_to_scene, resize_to
from sschsr.data.io import read_cube, read_rgb
from sschsr.errors import InputError


class GeoTIFFTiles(SceneSource):
    """A remote-sensing scene (GeoTIFF, ENVI, or any cube the reader takes) cut into square tiles.

    Args:
        path: the scene.
        tile: tile side in pixels.
        stride: step between tiles (default ``tile``: no overlap). The last row and column of tiles is
            moved to end flush with the scene, so every pixel is covered.
        ref: optional RGB raster of the same area (e.g. a sharper camera): resampled to the HSI grid (by
            georeferencing when both rasters have it, else assuming the same extent) and used as a real
            reference; without it references are synthesised.
        min_valid: tiles with a smaller fraction of valid (not nodata) pixels are dropped.
        n_bands: expected band count (None: no check).
        normalize: ``"none"`` keeps the reader's values; ``"max"`` divides by the maximum over valid
            pixels of the whole scene, for float rasters stored in other units.

    Tiles are named ``<stem>_r<row>_c<col>`` with the pixel offsets of their top-left corner.
    """

    def __init__(
        self,
        path: str | Path,
        tile: int = 256,
        stride: int | None = None,
        ref: str | Path | None = None,
        min_valid: float = 0.9,
        n_bands: int | None = None,
        normalize: Literal["none", "max"] = "none",
        cache: bool = True,
    ):
        super().__init__(cache)
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"raster {self.path} does not exist")
        self.ref_path = None if ref is None else Path(ref)
        if self.ref_path is not None and not self.ref_path.exists():
            raise InputError(f"reference raster {self.ref_path} does not exist")
        self.has_real_ref = self.ref_path is not None
        if tile < 1 or (stride is not None and stride < 1):
            raise InputError(f"tile and stride must be >= 1, got {tile}, {stride}")
        self.tile, self.stride = int(tile), int(stride or tile)
        self.min_valid, self.n_bands, self.normalize = float(min_valid), n_bands, normalize
        self._full: Scene | None = None
        self._tiles: dict[str, tuple[int, int]] | None = None

    def full_scene(self) -> Scene:
        """The whole raster as one :class:`~sschsr.data.datasets.Scene` (read once)."""
        if self._full is None:
            cube = read_cube(self.path)
            scene = _cube_to_scene(cube, self.path.stem, self.n_bands)
            if self.normalize == "max":
                valid = (
                    scene.mask
                    if scene.mask is not None
                    else torch.ones(scene.hsi.shape[-2:], dtype=torch.bool)
                )
                peak = scene.hsi[:, valid].max() if valid.any() else torch.tensor(1.0)
                scene.hsi = scene.hsi / peak.clamp_min(1e-12)
            if self.ref_path is not None:
                scene.ref = self._read_ref(cube, tuple(scene.hsi.shape[-2:]))
            self._full = scene
        return self._full

    def _read_ref(self, cube, size: tuple[int, int]) -> Tensor:
        geo = getattr(cube, "geo", None)
        if self.ref_path.suffix.lower() in (".tif", ".tiff", ".hdr", ".img"):
            ref_cube = read_cube(self.ref_path)
            rgb = np.asarray(ref_cube.data, dtype=np.float32)
            if rgb.shape[-1] < 3:
                raise InputError(f"reference raster {self.ref_path} has {rgb.shape[-1]} bands, need 3 (RGB)")
            rgb = rgb[..., :3]
            ref_geo = getattr(ref_cube, "geo", None)
            if _has_georef(geo) and _has_georef(ref_geo):
                return torch.from_numpy(_reproject_rgb(rgb, ref_geo, geo, size)).clamp(0, 1)
        else:
            rgb = read_rgb(self.ref_path)
        ref = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()
        return resize_to(ref, size)

    def _tile_grid(self) -> dict[str, tuple[int, int]]:
        if self._tiles is None:
            scene = self.full_scene()
            h, w = scene.hsi.shape[-2:]
            if h < self.tile or w < self.tile:
                raise InputError(f"raster {self.path} is {h}x{w}, smaller than one {self.tile} px tile")
            tiles = {}
            for r in _starts(h, self.tile, self.stride):
                for c in _starts(w, self.tile, self.stride):
                    if scene.mask is not None:
                        frac = scene.mask[r : r + self.tile, c : c + self.tile].float().mean().item()
                        if frac < self.min_valid:
                            continue
                    tiles[f"{self.path.stem}_r{r}_c{c}"] = (r, c)
            if not tiles:
                raise InputError(
                    f"raster {self.path}: no {self.tile} px tile has at least {self.min_valid:.0%} valid pixels"
                )
            self._tiles = tiles
        return self._tiles

    def names(self) -> list[str]:
        return list(self._tile_grid())

    def _load(self, name: str) -> Scene:
        r, c = self._tile_grid()[name]
        full, t = self.full_scene(), self.tile

        def cut(x):
            return None if x is None else x[..., r : r + t, c : c + t].clone()

        return Scene(
            name=name, hsi=cut(full.hsi), wavelengths=full.wavelengths, ref=cut(full.ref), mask=cut(full.mask)
        )

    def __getstate__(self):
        state = super().__getstate__()
        state["_full"] = None
        return state


def _starts(n: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] != n - tile:
        starts.append(n - tile)
    return starts


def _has_georef(geo) -> bool:
    return (
        geo is not None
        and getattr(geo, "crs", None) is not None
        and getattr(geo, "transform", None) is not None
    )


def _reproject_rgb(rgb: np.ndarray, src_geo, dst_geo, size: tuple[int, int]) -> np.ndarray:
    """Resample an ``(H', W', 3)`` raster onto the destination grid by georeferencing -> ``(3, H, W)``."""
    from rasterio.warp import Resampling, reproject

    out = np.zeros((3, *size), dtype=np.float32)
    reproject(
        source=np.ascontiguousarray(rgb.transpose(2, 0, 1)),
        destination=out,
        src_transform=src_geo.transform,
        src_crs=src_geo.crs,
        dst_transform=dst_geo.transform,
        dst_crs=dst_geo.crs,
        resampling=Resampling.average,  # the photo is usually finer than the HSI: average, don't alias
    )
    return out
