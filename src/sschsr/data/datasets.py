"""Scenes, splits and the training pairs built from them.

Three layers:

- a **scene source** names the scenes of a dataset and loads one on demand (:class:`Scene`: the HSI, its
  wavelengths, a real reference photo where the dataset has one, a nodata mask). Sources:
  :class:`ProceduralScenes` (the embedded default), :class:`CubeFolder` (CAVE folders, .mat, .npy, ...),
  :class:`HSIRefSRFolder` (real captured pairs), :class:`GeoTIFFTiles` (a remote-sensing scene cut into
  tiles), and :class:`MixedScenes` (several sources under one name space, e.g. CAVE plus procedural
  scenes for training only). Each keeps what it loaded in an in-process cache (every DataLoader worker
  has its own).
- :func:`split_names` splits scene names into train / val / test by scene, with a fixed seed or lists.
- :class:`PairDataset` turns scenes into the dict batches every model here trains on.

Batch keys of :class:`PairDataset` (one item; the DataLoader adds the batch dimension):

==========  =============  =======  ==============================================================
key         shape          dtype    content
==========  =============  =======  ==============================================================
``hr``      (C, H, W)      float32  ground-truth HSI, the source's normalised values (nominally [0, 1])
``lr``      (C, h, w)      float32  ``hr`` degraded by a draw of the degradation family (the paper's
                                    by default: blur (kernel 8, sigma 3), every s-th pixel)
``lr_up``   (C, H, W)      float32  bicubic ``lr`` back to the HR grid, not clamped, moved onto the
                                    paper's grid when drawn on another (``present``)
``ref``     (3, H, W)      float32  the unaligned RGB reference in [0, 1]
``rgb_hsi`` (3, H, W)      float32  ``lr_up`` rendered through the camera response, colour-matched
                                    to ``ref`` (histogram or moments), clamped to [0, 1]
``rgb_hr``  (3, H, W)      float32  ``hr`` rendered and colour-matched the same way (same response,
                                    same match to the same ``ref``): stage 2's and the full network's
                                    target for ``ref_warp``
``flow``    (2, H, W)      float32  x then y, HR pixels: hr pixel p appears in ``ref`` at p + flow[p]
``valid``   (H, W)         bool     p + flow inside ``ref``, not occluded, on valid data
``mask``    (H, W)         bool     False at the source's nodata pixels (all True without nodata)
``srf``     (3, C)         float32  the camera response ``rgb_hsi`` was rendered with (rows sum to 1)
``has_flow`` ()            bool     False for real references: their flow is unknown (zeros, valid
                                    all False)
``name``    str                     ``<scene>`` or ``<scene>#<variant>`` for synthetic views
==========  =============  =======  ==============================================================

H and W are multiples of the scale s, and h = H / s, w = W / s.

Reproducibility. Synthetic reference views are generated on the whole scene from a generator seeded by
``(view_seed, scene name, variant)`` (a stable hash, the same on every machine; the scene's own name,
:meth:`SceneSource.seed_name`, also inside a :class:`MixedScenes`), so evaluation pairs are identical
everywhere; evaluation crops are central and evaluation noise is seeded the same way. Training
crops, dihedral augmentation and noise come from a generator seeded by ``(seed, index, stream, count)``:
``stream`` is the DataLoader worker's seed (itself drawn from the loader's generator, so runs with the
same seed repeat) or a constant without workers, and ``count`` the number of items this process has made,
so that an index seen again in a later epoch gets another crop.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from sschsr.data.augment import center_crop, random_crop, random_flip_rot
from sschsr.data.degradations import DegradationFamily, present
from sschsr.data.degrade import upsample
from sschsr.data.spectral import camera_srf, default_wavelengths, match_histograms, match_moments
from sschsr.errors import InputError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


def stable_seed(*parts: Any) -> int:
    """A 63-bit seed from any printable parts, the same on every machine and Python run.

    (Python's ``hash`` of a string changes from run to run; this does not.)
    """
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def seeded_generator(*parts: Any) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`stable_seed` of ``parts``."""
    return torch.Generator().manual_seed(stable_seed(*parts))


class LRUCache(OrderedDict):
    """A dict that forgets its least recently used entry beyond ``maxsize`` entries (None: unbounded)."""

    def __init__(self, maxsize: int | None = None):
        super().__init__()
        self.maxsize = maxsize

    def get_or_make(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        if self.maxsize != 0:
            self[key] = value
            if self.maxsize is not None and len(self) > self.maxsize:
                self.popitem(last=False)
        return value


# --------------------------------------------------------------------------------------------- scenes


@dataclass
class Scene:
    """One scene of a dataset.

    Attributes:
        name: unique within its source.
        hsi: ``(C, H, W)`` float32, normalised (nominally [0, 1]); zeros at nodata.
        wavelengths: ``(C,)`` band centres in nm (evenly spread over 400-700 nm when the file has none).
        ref: ``(3, H, W)`` float32 in [0, 1], a real photo of the scene resampled to the HSI grid, or None
            (a synthetic reference is made).
        mask: ``(H, W)`` bool, False at nodata, or None (all data valid).
    """

    name: str
    hsi: Tensor
    wavelengths: np.ndarray
    ref: Tensor | None = None
    mask: Tensor | None = None

    def __post_init__(self):
        if self.hsi.ndim != 3:
            raise InputError(f"scene {self.name}: HSI must be (C, H, W), got {tuple(self.hsi.shape)}")
        c, h, w = self.hsi.shape
        if len(self.wavelengths) != c:
            raise InputError(f"scene {self.name}: {len(self.wavelengths)} wavelengths for {c} bands")
        if self.ref is not None and tuple(self.ref.shape) != (3, h, w):
            raise InputError(
                f"scene {self.name}: reference must be (3, {h}, {w}), got {tuple(self.ref.shape)}"
            )
        if self.mask is not None and tuple(self.mask.shape) != (h, w):
            raise InputError(f"scene {self.name}: mask must be ({h}, {w}), got {tuple(self.mask.shape)}")


def resize_to(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Resample ``(C, H', W')`` to ``(C, *size)`` bilinearly (antialiased when shrinking); no-op if equal."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    shrink = img.shape[-2] > size[0] or img.shape[-1] > size[1]
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out[0].clamp(0, 1)


def _check_bands(what: str, n: int, n_bands: int | None) -> None:
    if n_bands is not None and n != n_bands:
        raise InputError(
            f"{what} has {n} bands but the configuration says n_bands={n_bands}: pass n_bands={n} "
            f"(e.g. `sschsr-train ... n_bands={n}`)"
        )


def _cube_to_scene(cube, name: str, n_bands: int | None = None) -> Scene:
    """An ``io.Cube`` (HWC numpy) as a :class:`Scene` (CHW torch), nodata set to 0."""
    data = np.asarray(cube.data, dtype=np.float32)
    if data.ndim != 3:
        raise InputError(f"{name}: expected an (H, W, C) cube, got shape {data.shape}")
    _check_bands(f"scene {name}", data.shape[-1], n_bands)
    valid = None if cube.valid is None else np.asarray(cube.valid, dtype=bool)
    if valid is not None:
        data = np.where(valid[..., None], data, 0.0).astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise InputError(f"{name}: the cube holds NaN or Inf values outside its nodata mask")
    wl = cube.wavelengths
    wl = default_wavelengths(data.shape[-1]) if wl is None else np.asarray(wl, dtype=np.float64)
    hsi = torch.from_numpy(np.ascontiguousarray(data.transpose(2, 0, 1)))
    mask = None if valid is None or valid.all() else torch.from_numpy(valid)
    return Scene(name=name, hsi=hsi, wavelengths=wl, mask=mask)


class SceneSource:
    """Names the scenes of a dataset and loads one on demand, caching it in this process.

    Subclasses implement ``names()`` and ``_load(name)``. ``has_real_ref`` says whether scenes carry a real
    reference photo (then no synthetic views are made). ``split_lists()`` returns the dataset's own
    train/val/test lists where it has them.
    """

    has_real_ref: bool = False

    def __init__(self, cache: bool = True):
        self.cache = cache
        self._cache: dict[str, Scene] = {}

    def names(self) -> list[str]:
        raise NotImplementedError

    def _load(self, name: str) -> Scene:
        raise NotImplementedError

    def load(self, name: str) -> Scene:
        """The scene ``name`` (from the cache after the first call)."""
        if name in self._cache:
            return self._cache[name]
        if name not in self._name_set():
            raise InputError(f"{type(self).__name__}: no scene named {name!r} (scenes: {self.names()[:20]})")
        scene = self._load(name)
        if self.cache:
            self._cache[name] = scene
        return scene

    def _name_set(self) -> set[str]:
        if getattr(self, "_names_cached", None) is None:
            self._names_cached = set(self.names())
        return self._names_cached

    def split_lists(self) -> dict[str, list[str]] | None:
        return None

    def train_only_names(self) -> list[str]:
        """Scenes that only ever train: never drawn or listed for validation or test (none here)."""
        return []

    def train_list(self, names: Sequence[str]) -> list[str]:
        """The training scenes in the order (and with the repeats) :class:`PairDataset` gets them: as given here."""
        return list(names)

    def seed_name(self, name: str) -> str:
        """The name that seeds the synthetic views and evaluation noise of scene ``name`` (itself here)."""
        return name

    def __getstate__(self):
        # workers started by spawn get the settings, not the loaded scenes
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state


class ProceduralScenes(SceneSource):
    """The embedded default: procedural scenes, scene ``i`` generated from ``seed + i``.

    Args:
        num: number of scenes, named ``procedural_0000`` ...
        size: side (or ``(H, W)``) in pixels.
        n_bands: bands, spread evenly over 400-700 nm unless ``wavelengths`` is given.
        seed: base seed; the same seed gives the same scenes on every machine.
    """

    def __init__(
        self,
        num: int = 64,
        size: int | Sequence[int] = 256,
        n_bands: int = 31,
        seed: int = 0,
        wavelengths: Sequence[float] | None = None,
        cache: bool = True,
    ):
        super().__init__(cache)
        if num < 1:
            raise InputError(f"ProceduralScenes needs num >= 1, got {num}")
        self.num, self.n_bands, self.seed = int(num), int(n_bands), int(seed)
        self.size = int(size) if isinstance(size, int) else tuple(int(s) for s in size)
        wl = (
            default_wavelengths(n_bands) if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
        )
        _check_bands("the wavelengths list", len(wl), n_bands)
        self.wavelengths = wl

    def names(self) -> list[str]:
        return [f"procedural_{i:04d}" for i in range(self.num)]

    def _load(self, name: str) -> Scene:
        from sschsr.data.synth.scenes import procedural_scene

        i = int(name.rsplit("_", 1)[1])
        g = torch.Generator().manual_seed(self.seed + i)
        hsi = procedural_scene(self.size, self.n_bands, g, wavelengths=self.wavelengths)
        return Scene(name=name, hsi=hsi.float().contiguous(), wavelengths=self.wavelengths)


def _cube_name(path: Path) -> str:
    """Scene name of a cube path: the file stem; CAVE folders lose their ``_ms`` suffix."""
    name = path.name if path.is_dir() else path.stem
    return name[:-3] if path.is_dir() and name.endswith("_ms") else name


class CubeFolder(SceneSource):
    """Every cube in a folder that :func:`sschsr.data.io.find_cubes` finds (CAVE scene folders, .mat, .npy,
    .npz, GeoTIFF, ENVI), one scene each, named by :func:`_cube_name` (``balloons_ms`` -> ``balloons``).

    Args:
        root: the folder.
        names: keep only these scenes (names with or without CAVE's ``_ms`` suffix).
        n_bands: expected band count; a cube with another count raises an InputError that says which
            ``n_bands=`` to pass. None: no check.
        key: variable name for .mat / .npz files (None: the reader's choice).
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str] | None = None,
        n_bands: int | None = None,
        key: str | None = None,
        cache: bool = True,
    ):
        super().__init__(cache)
        from sschsr.data.io import find_cubes

        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"dataset folder {self.root} does not exist")
        self.paths = {_cube_name(p): p for p in find_cubes(self.root)}
        if not self.paths:
            raise InputError(f"no hyperspectral cubes found in {self.root}")
        if names is not None:
            wanted = [n[:-3] if n.endswith("_ms") and n[:-3] in self.paths else n for n in names]
            missing = sorted(set(wanted) - set(self.paths))
            if missing:
                raise InputError(f"{self.root}: no scenes named {missing} (found {sorted(self.paths)})")
            self.paths = {n: self.paths[n] for n in wanted}
        self.n_bands, self.key = n_bands, key

    def names(self) -> list[str]:
        return sorted(self.paths)

    def _load(self, name: str) -> Scene:
        from sschsr.data.io import read_cube

        cube = read_cube(self.paths[name], key=self.key) if self.key else read_cube(self.paths[name])
        return _cube_to_scene(cube, name, self.n_bands)


def read_list(path: str | Path) -> list[str]:
    """Scene names from a text file: one per line, blank lines and ``#`` comments skipped; a file
    extension on a name is dropped (``a.mat`` -> ``a``)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise InputError(f"cannot read split list {path}: {e}") from e
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(Path(line).stem if Path(line).suffix in (".mat", ".png", ".npy") else line)
    return out


class HSIRefSRFolder(SceneSource):
    """Real captured pairs in the HSI-RefSR layout (Lai, Fu, Zhang):

        root/img1_hsi/HR/<name>.mat     the HSI (variable ``gt``, HWC)
        root/img2_cmatch/HR/<name>.png  the reference photo from the second camera, colour-matched
        root/train.txt, root/test.txt   optional lists of names (``val.txt`` too)

    References are used as they are (``has_flow`` False); they are resampled to the HSI grid when their
    size differs. The HSI is min-max normalised per scene as in the dataset's own code
    (``normalize="minmax"``), or kept (``"none"``).
    """

    has_real_ref = True

    def __init__(
        self,
        root: str | Path,
        hsi_dir: str = "img1_hsi/HR",
        ref_dir: str = "img2_cmatch/HR",
        key: str | None = "gt",
        n_bands: int | None = None,
        normalize: Literal["minmax", "none"] = "minmax",
        cache: bool = True,
    ):
        super().__init__(cache)
        self.root = Path(root)
        self.hsi_dir, self.ref_dir = self.root / hsi_dir, self.root / ref_dir
        for d in (self.hsi_dir, self.ref_dir):
            if not d.is_dir():
                raise InputError(f"HSI-RefSR folder {self.root}: missing {d.relative_to(self.root)}/")
        self.key, self.n_bands, self.normalize = key, n_bands, normalize
        self._names = sorted(p.stem for p in self.hsi_dir.glob("*.mat"))
        if not self._names:
            raise InputError(f"HSI-RefSR folder {self.root}: no .mat cubes in {self.hsi_dir}")
        missing = [n for n in self._names if self._ref_path(n) is None]
        if missing:
            raise InputError(
                f"HSI-RefSR folder {self.root}: no reference image in {self.ref_dir} for {missing[:10]}"
            )

    def _ref_path(self, name: str) -> Path | None:
        for ext in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
            p = self.ref_dir / f"{name}{ext}"
            if p.is_file():
                return p
        return None

    def names(self) -> list[str]:
        return list(self._names)

    def split_lists(self) -> dict[str, list[str]] | None:
        lists = {s: read_list(self.root / f"{s}.txt") for s in SPLITS if (self.root / f"{s}.txt").is_file()}
        return lists or None

    def _load(self, name: str) -> Scene:
        from sschsr.data.io import read_cube, read_rgb

        path = self.hsi_dir / f"{name}.mat"
        try:
            cube = read_cube(path, key=self.key)
        except InputError:
            cube = read_cube(path)  # another variable name: the reader's choice (largest 3-D array)
        scene = _cube_to_scene(cube, name, self.n_bands)
        if self.normalize == "minmax":
            lo, hi = scene.hsi.min(), scene.hsi.max()
            scene.hsi = ((scene.hsi - lo) / (hi - lo).clamp_min(1e-12)).float()
        rgb = torch.from_numpy(
            np.ascontiguousarray(read_rgb(self._ref_path(name)).transpose(2, 0, 1))
        ).float()
        scene.ref = resize_to(rgb, tuple(scene.hsi.shape[-2:]))
        return scene


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
        """The whole raster as one :class:`Scene` (read once)."""
        if self._full is None:
            from sschsr.data.io import read_cube

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
        from sschsr.data.io import read_cube, read_rgb

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


class MixedScenes(SceneSource):
    """Several sources as one: scene ``<key>/<name>`` is scene ``name`` of ``sources[key]``.

    For training on more than one dataset, e.g. the CAVE training scenes plus procedural scenes, with
    validation and test on the listed CAVE scenes only (``conf/data/cave_procedural.yaml``):

    - ``train_only`` names sources whose scenes only ever train: :class:`~sschsr.data.datamodules.HSIDataModule`
      adds them to the training split and keeps them out of the validation and test draws and lists;
    - ``repeat`` maps a source to the whole number of times each of its training scenes stands in the
      training list (default 1), to balance a source of few scenes against one of many; the sources are
      interleaved in that list (:meth:`train_list`), so batches mix them;
    - a scene is seeded by its own name (:meth:`seed_name`), so its synthetic views and evaluation noise
      are those it has in its own dataset: ``cave/balloons`` is evaluated on the very pair that
      ``data=cave`` evaluates ``balloons`` on.

    The sources' own split lists (:meth:`SceneSource.split_lists`, e.g. HSI-RefSR's ``train.txt``) come
    through with the prefix, for the sources that are not train-only. Each source keeps its own cache.
    A source with real references next to synthetic ones gets the dataset's ``pairs_per_scene`` identical
    items per scene.

    Args:
        sources: ``{key: SceneSource}`` (from Hydra: a mapping of ``_target_`` configs); keys without '/'.
        train_only: keys of the training-only sources.
        repeat: ``{key: int >= 1}``.

    Example:
        >>> mix = MixedScenes({"a": ProceduralScenes(num=2, size=32), "b": ProceduralScenes(num=1, size=32)},
        ...                   train_only=["b"])
        >>> mix.names(), mix.train_only_names()
        (['a/procedural_0000', 'a/procedural_0001', 'b/procedural_0000'], ['b/procedural_0000'])
    """

    SEP = "/"

    def __init__(
        self,
        sources: Mapping[str, SceneSource],
        train_only: Sequence[str] = (),
        repeat: Mapping[str, int] | None = None,
    ):
        super().__init__(cache=False)  # the sources cache their own scenes
        if not sources:
            raise InputError("MixedScenes needs at least one source")
        self.sources: dict[str, SceneSource] = {}
        for key, src in dict(sources).items():
            if not isinstance(src, SceneSource):
                raise InputError(
                    f"MixedScenes source {key!r} must be a SceneSource, got {type(src).__name__}"
                )
            if not key or self.SEP in key:
                raise InputError(
                    f"MixedScenes source keys must be non-empty and without {self.SEP!r}, got {key!r}"
                )
            self.sources[str(key)] = src
        self.train_only = [str(k) for k in train_only or ()]
        self.repeat = {str(k): int(v) for k, v in dict(repeat or {}).items()}
        for what, keys in (("train_only", self.train_only), ("repeat", list(self.repeat))):
            unknown = sorted(set(keys) - set(self.sources))
            if unknown:
                raise InputError(
                    f"MixedScenes {what} names unknown sources {unknown} (sources: {sorted(self.sources)})"
                )
        if set(self.train_only) == set(self.sources):
            raise InputError(
                "MixedScenes: every source is train_only, nothing is left to validate or test on"
            )
        bad = {k: v for k, v in self.repeat.items() if v < 1}
        if bad:
            raise InputError(f"MixedScenes repeat counts must be whole numbers >= 1, got {bad}")

    @property
    def has_real_ref(self) -> bool:  # type: ignore[override]
        return all(src.has_real_ref for src in self.sources.values())

    def _parts(self, name: str) -> tuple[str, str]:
        key, sep, sub = name.partition(self.SEP)
        if not sep or key not in self.sources:
            raise InputError(
                f"MixedScenes: no scene named {name!r}: names are <source>{self.SEP}<scene>, sources {sorted(self.sources)}"
            )
        return key, sub

    def names(self) -> list[str]:
        return sorted(f"{key}{self.SEP}{n}" for key, src in self.sources.items() for n in src.names())

    def load(self, name: str) -> Scene:
        key, sub = self._parts(name)
        return self.sources[key].load(sub)

    def split_lists(self) -> dict[str, list[str]] | None:
        out: dict[str, list[str]] = {}
        for key, src in self.sources.items():
            if key in self.train_only:
                continue
            for split, names in (src.split_lists() or {}).items():
                out.setdefault(split, []).extend(f"{key}{self.SEP}{n}" for n in names)
        return out or None

    def train_only_names(self) -> list[str]:
        return sorted(f"{key}{self.SEP}{n}" for key in self.train_only for n in self.sources[key].names())

    def train_list(self, names: Sequence[str]) -> list[str]:
        """Each scene ``repeat`` times in a row, the sources interleaved in proportion: every contiguous
        block (what a DataLoader worker serves, :meth:`PairDataset.key`) holds its share of each source,
        so batches mix the sources, and a repeated scene still lives in one worker."""
        groups: dict[str, list[str]] = {}
        for n in names:
            groups.setdefault(self._parts(n)[0], []).append(n)
        order = [
            ((i + 0.5) / len(group), key, n)
            for key, group in groups.items()
            for i, n in enumerate(group)
            for _ in range(self.repeat.get(key, 1))
        ]
        return [n for _, _, n in sorted(order)]

    def seed_name(self, name: str) -> str:
        key, sub = self._parts(name)
        return self.sources[key].seed_name(sub)


# --------------------------------------------------------------------------------------------- splits


def _count(spec: int | float, n: int) -> int:
    """An int count, or a fraction in (0, 1) of ``n`` rounded (at least 1)."""
    if isinstance(spec, float) and 0 < spec < 1:
        return max(1, round(spec * n))
    if spec < 0 or int(spec) != spec:
        raise InputError(f"split sizes must be counts >= 0 or fractions in (0, 1), got {spec}")
    return int(spec)


def split_names(
    names: Sequence[str],
    val: int | float = 0,
    test: int | float = 0,
    seed: int = 0,
    lists: Mapping[str, str | Path | Sequence[str]] | None = None,
) -> dict[str, list[str]]:
    """Split scene names into train / val / test, by scene, the same way on every machine.

    Explicit lists win: ``lists`` maps ``"train"``, ``"val"``, ``"test"`` to a list of names or a text
    file of names (:func:`read_list`). A split without a list is drawn with ``seed``: test first, from the
    names in no list; then val, from the train list when one is given, else from what is left; train is
    the rest (or its list minus val). The test draw does not depend on ``val``, so changing the validation
    size leaves the test set alone.

    Args:
        names: every scene name.
        val, test: sizes of the drawn splits (counts, or fractions of ``names``); ignored for listed splits.
        seed: the draw's seed.
        lists: optional explicit splits.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted, pairwise disjoint.

    Raises:
        InputError: unknown names in a list, overlapping lists, or a requested split that would be empty.
    """
    all_names = sorted(set(names))
    known = set(all_names)
    given: dict[str, list[str]] = {}
    for split, spec in (lists or {}).items():
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r} in split lists (expected {SPLITS})")
        if spec is None:
            continue
        listed = read_list(spec) if isinstance(spec, str | Path) else [str(s) for s in spec]
        unknown = sorted(set(listed) - known)
        if unknown:
            raise InputError(
                f"split list {split} ({spec if isinstance(spec, str | Path) else 'inline'}) names unknown scenes {unknown[:10]}"
            )
        given[split] = sorted(set(listed))
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        both = set(given.get(a, ())) & set(given.get(b, ()))
        if both:
            raise InputError(f"split lists {a} and {b} share scenes {sorted(both)[:10]}")

    g = torch.Generator().manual_seed(int(seed))

    def draw(pool: list[str], k: int, what: str) -> list[str]:
        if k > len(pool):
            raise InputError(
                f"cannot draw {k} {what} scene(s): only {len(pool)} available ({len(all_names)} in all)"
            )
        perm = torch.randperm(len(pool), generator=g).tolist()
        return sorted(pool[i] for i in perm[:k])

    free = [n for n in all_names if not any(n in v for v in given.values())]
    out: dict[str, list[str]] = {}
    out["test"] = given["test"] if "test" in given else draw(free, _count(test, len(all_names)), "test")
    free = [n for n in free if n not in set(out["test"])]
    pool = given["train"] if "train" in given else free
    out["val"] = given["val"] if "val" in given else draw(pool, _count(val, len(all_names)), "validation")
    taken = set(out["val"]) | set(out["test"])
    out["train"] = sorted(n for n in (given["train"] if "train" in given else free) if n not in taken)
    for split, spec in (("val", val), ("test", test)):
        if not out[split] and (split in given or spec):
            raise InputError(f"the {split} split is empty")
    return {s: out[s] for s in SPLITS}


# ----------------------------------------------------------------------------------------------- pairs


def _synth_config(synth: Any):
    from sschsr.data.synth.pairs import SynthConfig

    if synth is None:
        return SynthConfig()
    if isinstance(synth, SynthConfig):
        return synth
    if isinstance(synth, Mapping) or hasattr(synth, "items"):
        return SynthConfig(**{k: v for k, v in dict(synth).items() if k != "_target_"})
    if is_dataclass(synth):
        return SynthConfig(**asdict(synth))
    raise InputError(f"synth must be a SynthConfig or a mapping of its fields, got {type(synth).__name__}")


class PairDataset(Dataset):
    """Training / evaluation items (module docstring for the keys) built from the scenes of a source.

    Items: index ``i`` stands for scene ``names[(i // V) % N]`` and view ``i % V``, where ``N`` is the
    number of scenes and ``V`` the views per scene (``pairs_per_scene`` for synthetic references, 1 for
    real ones). Length: ``samples_per_epoch`` (training; default ``N * V``) or ``N * V`` (evaluation).

    Training: a random crop of ``crop_size`` (a multiple of ``scale``) and a random dihedral transform
    (flow vectors transformed with it). Evaluation: the central crop of ``crop_size``, or the whole scene
    trimmed to a multiple of ``scale`` when ``crop_size`` is None (then scenes may differ in size: batch
    size 1). Then a degradation drawn from ``degradation`` and the rendering of ``lr_up`` to RGB.

    Synthetic views are generated once per (scene, view) on the whole scene and kept in a per-process
    cache (``cache_pairs`` entries at most; None: all), so later crops of the same view cost no
    generation. With ``shard_workers`` (training only), DataLoader worker ``w`` of ``W`` serves only the
    ``w``-th block of the (scene, view) pairs, so each worker loads and generates ``1 / W`` of the data
    instead of all of it (a batch, made by one worker, then draws from that worker's block; over an epoch
    every pair is drawn about equally often).

    Args:
        source: a :class:`SceneSource`.
        names: the scenes of this split.
        scale: integer super-resolution factor.
        crop_size: HR crop side (or ``(H, W)``); None: whole scenes (evaluation only).
        train: random crops and augmentation (True) or deterministic central crops (False).
        synth: ``SynthConfig`` (or a mapping of its fields) for synthetic references.
        camera: camera response for ``rgb_hsi`` (see :func:`sschsr.data.spectral.camera_srf`).
        pairs_per_scene: synthetic views per scene.
        samples_per_epoch: training length (default: one item per scene and view).
        seed: seeds training crops, augmentation and noise (module docstring).
        degradation: the LR degradations drawn from, one per item
            (:class:`~sschsr.data.degradations.DegradationFamily` or a mapping of its fields; None: the
            paper's); evaluation items draw theirs from the scene's seeded generator, so they repeat.
        present: ``lr_up`` moved onto the paper's grid when the draw's phase is another
            (:func:`~sschsr.data.degradations.present`, what every network here trains on); False:
            ``upsample(lr)`` as the data were made, as a user's file gives it (the test-time pipeline is
            then told the grid, :func:`sschsr.inference.on_lr_grid`).
        match: colour matching of ``rgb_hsi`` to ``ref``.
        cache_pairs: most synthetic views kept per process (None: no limit, 0: none).
        view_seed: seeds the synthetic views and the evaluation noise (default: ``seed``); keep it fixed
            across runs so that every run is evaluated on the same pairs.
        shard_workers: split the training pairs between DataLoader workers (above).
    """

    def __init__(
        self,
        source: SceneSource,
        names: Sequence[str],
        scale: int,
        crop_size: int | Sequence[int] | None,
        train: bool,
        synth: Any = None,
        camera: str = "cie1931",
        pairs_per_scene: int = 4,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        degradation: Any = None,
        present: bool = True,
        match: Literal["histogram", "moments"] = "histogram",
        cache_pairs: int | None = None,
        view_seed: int | None = None,
        shard_workers: bool = True,
    ):
        self.source, self.names = source, list(names)
        if not self.names:
            raise InputError("PairDataset needs at least one scene")
        if int(scale) < 1:
            raise InputError(f"scale must be a positive integer, got {scale}")
        self.scale, self.train = int(scale), bool(train)
        if crop_size is None:
            if train:
                raise InputError("training needs a crop_size (batches need one size)")
            self.crop_size = None
        else:
            cs = (
                (int(crop_size), int(crop_size))
                if isinstance(crop_size, int)
                else tuple(int(c) for c in crop_size)
            )
            if cs[0] % self.scale or cs[1] % self.scale or min(cs) < self.scale:
                raise InputError(f"crop_size {cs} must be a positive multiple of the scale {self.scale}")
            self.crop_size = cs
        if match not in ("histogram", "moments"):
            raise InputError(f"match must be 'histogram' or 'moments', got {match!r}")
        self.synth = None if source.has_real_ref else _synth_config(synth)
        self.camera, self.match = camera, match
        self.views = 1 if source.has_real_ref else max(1, int(pairs_per_scene))
        self.samples_per_epoch = samples_per_epoch
        self.seed = int(seed)
        self.degradation, self.present = DegradationFamily.of(degradation), bool(present)
        self.view_seed = self.seed if view_seed is None else int(view_seed)
        self.cache_pairs, self.shard_workers = cache_pairs, bool(shard_workers)
        self._pairs = LRUCache(cache_pairs)
        self._srf: dict[bytes, Tensor] = {}
        self._stream: Any = None
        self._count = 0

    def __len__(self) -> int:
        n = len(self.names) * self.views
        return int(self.samples_per_epoch) if self.train and self.samples_per_epoch else n

    def key(self, index: int) -> tuple[str, int]:
        """``(scene name, view)`` of item ``index`` (in a training worker: within the worker's shard)."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        n = len(self.names) * self.views
        combo = index % n
        worker = get_worker_info() if self.train and self.shard_workers else None
        if worker is not None and worker.num_workers > 1 and n >= worker.num_workers:
            # worker w serves the w-th contiguous block of (scene, view) pairs, scene-major: each worker
            # loads and generates only its share, and the blocks differ in size by at most one pair
            lo, hi = worker.id * n // worker.num_workers, (worker.id + 1) * n // worker.num_workers
            combo = lo + index % (hi - lo)
        return self.names[combo // self.views], combo % self.views

    def pair(self, name: str, view: int) -> dict[str, Any]:
        """The whole-scene sample of one view on the scene's grid (synthetic views cached): ``hr``, ``ref``,
        ``flow``, ``valid``, ``mask`` tensors, ``has_flow`` and ``wavelengths`` (numpy ``(C,)``)."""
        scene = self.source.load(name)
        c, h, w = scene.hsi.shape
        mask = scene.mask if scene.mask is not None else torch.ones(h, w, dtype=torch.bool)
        if scene.ref is not None:
            return dict(
                hr=scene.hsi,
                ref=scene.ref,
                flow=torch.zeros(2, h, w),
                valid=torch.zeros(h, w, dtype=torch.bool),
                mask=mask,
                has_flow=False,
                wavelengths=scene.wavelengths,
            )

        def make():
            from sschsr.data.synth.pairs import make_pair

            g = seeded_generator(self.view_seed, self.source.seed_name(name), view, "view")
            p = make_pair(scene.hsi, scene.wavelengths, g, self.synth)
            valid = p["valid"].bool() & mask & _lands_on(mask, p["flow"])
            return dict(ref=p["ref"].float().contiguous(), flow=p["flow"].float().contiguous(), valid=valid)

        p = self._pairs.get_or_make((name, view), make)
        return dict(
            hr=scene.hsi,
            ref=p["ref"],
            flow=p["flow"],
            valid=p["valid"],
            mask=mask,
            has_flow=True,
            wavelengths=scene.wavelengths,
        )

    def srf(self, wavelengths: np.ndarray) -> Tensor:
        """``(3, C)`` camera response for these band centres (cached)."""
        key = np.asarray(wavelengths, dtype=np.float64).tobytes()
        if key not in self._srf:
            self._srf[key] = torch.from_numpy(camera_srf(wavelengths, self.camera))
        return self._srf[key]

    def _item_generator(self, index: int) -> torch.Generator:
        worker = get_worker_info()
        stream = ("worker", worker.seed) if worker is not None else ("main",)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stream = (*stream, "rank", torch.distributed.get_rank())
        if stream != self._stream:  # a new worker process (or epoch with new workers): restart the count
            self._stream, self._count = stream, 0
        self._count += 1
        return seeded_generator(self.seed, "item", *stream, index, self._count)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, view = self.key(index)
        sample = self.pair(name, view)
        label = name if self.views == 1 else f"{name}#{view}"
        if self.train:
            g = self._item_generator(index)
            h, w = sample["hr"].shape[-2:]
            if self.crop_size[0] > h or self.crop_size[1] > w:
                raise InputError(f"scene {name} is {h}x{w}, smaller than the training crop {self.crop_size}")
            sample = random_flip_rot(random_crop(sample, self.crop_size, g, multiple_of=self.scale), g)
        else:
            g = seeded_generator(self.view_seed, self.source.seed_name(name), view, "noise")
            try:
                sample = center_crop(sample, self.crop_size, multiple_of=self.scale)
            except ValueError as e:
                raise InputError(f"scene {name}: {e}") from e
        return self.finish(sample, label, g)

    def finish(self, sample: Mapping[str, Any], name: str, generator: torch.Generator) -> dict[str, Any]:
        """Degrade, upsample and render a cropped HR sample into the batch dict."""
        hr = sample["hr"].float().contiguous()
        observation = self.degradation.draw(self.scale, generator)
        lr = observation.observe(hr[None], self.scale, generator)[0]
        lr_up = upsample(lr, self.scale)
        if self.present:
            lr_up = present(lr_up[None], observation.presentation(self.scale))[0]
        ref = sample["ref"].float().contiguous()
        srf = self.srf(sample["wavelengths"])
        # lr_up and hr through the same response and the same match to ref (render_rgb, ref sorted once)
        rgb = torch.stack((render_linear(lr_up, srf), render_linear(hr, srf)))
        rgb_hsi, rgb_hr = colour_match(rgb, ref, self.match).clamp(0, 1).unbind(0)
        return dict(
            lr=lr.contiguous(),
            lr_up=lr_up.contiguous(),
            hr=hr,
            ref=ref,
            rgb_hsi=rgb_hsi.contiguous(),
            rgb_hr=rgb_hr.contiguous(),
            flow=sample["flow"].float().contiguous(),
            valid=sample["valid"].bool().contiguous(),
            mask=sample["mask"].bool().contiguous(),
            srf=srf,
            has_flow=bool(sample["has_flow"]),
            name=name,
        )

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pairs"] = LRUCache(self.cache_pairs)
        return state


def argsort_rows(a: np.ndarray) -> np.ndarray:
    """Stable argsort of each row of a float array (last axis), as one sort of 64-bit keys.

    Key = the value's float32 bits mapped to an unsigned integer of the same order, shifted up 32 bits,
    plus the index. Sorting keys uses numpy's vectorised integer sort, 2-3x faster than ``np.argsort`` on
    CPUs without a vectorised argsort (AVX2): the same permutation as ``np.argsort(kind="stable")``
    (ties in index order; -0.0 before +0.0).

    Args:
        a: ``(..., n)``, cast to float32; n < 2**32.

    Returns:
        ``(..., n)`` intp indices.
    """
    n = a.shape[-1]
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    u = np.where(u >> 31, ~u, u | np.uint32(0x80000000))  # negative: all bits flipped; positive: sign set
    keys = (u.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    keys.sort(axis=-1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def fast_match_histograms(src: Tensor, ref: Tensor) -> Tensor:
    """:func:`sschsr.data.spectral.match_histograms` for images of equal size, through numpy's sorts
    (several times faster than torch's on CPU). Ties in ``src`` are broken in pixel order
    (:func:`argsort_rows`), torch's sort may break them in another.

    ``ref`` is sorted once for every image of ``src`` it serves: ``(C, H, W)`` for all of them, or one per
    image. Tensors that need a gradient, live off the CPU or differ in size take the torch path.

    Args:
        src: ``(..., C, H, W)``.
        ref: ``(C, H, W)`` or ``(..., C, H, W)`` with the leading dimensions of ``src``.

    Returns:
        the shape of ``src``: each value replaced by the ``ref`` value of the same rank, per image and channel.
    """
    if src.ndim < 3 or ref.ndim < 3:
        raise ValueError(f"expected (..., C, H, W) images, got {tuple(src.shape)} and {tuple(ref.shape)}")
    if (
        ref.shape[-3:] != src.shape[-3:]
        or src.requires_grad
        or src.device.type != "cpu"
        or ref.device.type != "cpu"
    ):
        return match_histograms(src, ref.expand(*src.shape[:-3], *ref.shape[-3:]))
    c, n = src.shape[-3], src.shape[-2] * src.shape[-1]
    s = src.detach().reshape(-1, c, n).float().numpy()
    r = np.sort(ref.detach().reshape(-1, c, n).float().numpy(), axis=-1)
    if r.shape[0] not in (1, s.shape[0]):
        raise ValueError(f"ref {tuple(ref.shape)} does not match the images of src {tuple(src.shape)}")
    rows = s.shape[0] * c
    order = argsort_rows(s.reshape(rows, n))
    order += np.arange(0, rows * n, n, dtype=np.intp)[:, None]  # flat indices (put_along_axis is slower)
    out = np.empty(rows * n, dtype=np.float32)
    out[order.reshape(-1)] = np.broadcast_to(r, s.shape).reshape(-1)
    return torch.from_numpy(out).reshape(src.shape).to(src.dtype)


def colour_match(src: Tensor, ref: Tensor, match: Literal["histogram", "moments"] = "histogram") -> Tensor:
    """Give each image of ``src`` the colours of ``ref``, per channel: ``"histogram"`` (each value takes the
    ``ref`` value of the same rank, :func:`fast_match_histograms`) or ``"moments"`` (mean and standard
    deviation, :func:`sschsr.data.spectral.match_moments`).

    Args:
        src: ``(..., 3, H, W)``; ref: ``(3, H, W)`` (for every image) or ``(..., 3, H, W)``.
    """
    if match == "histogram":
        return fast_match_histograms(src, ref)
    if match == "moments":
        return match_moments(src, ref)
    raise InputError(f"match must be 'histogram' or 'moments', got {match!r}")


def render_rgb(
    cube: Tensor, srf: Tensor | np.ndarray, ref: Tensor, match: Literal["histogram", "moments"] = "histogram"
) -> Tensor:
    """An HSI seen as ``rgb_hsi`` and ``rgb_hr`` are: through the camera response, colour-matched to the
    reference (:func:`colour_match`), clamped to [0, 1].

    :class:`PairDataset` makes ``rgb_hsi`` from ``lr_up`` and ``rgb_hr`` from ``hr`` with it, and
    :func:`sschsr.lit.warp.render_target` makes ``rgb_hr`` for batches that lack it.

    Args:
        cube: ``(..., C, H, W)``.
        srf: ``(3, C)``, or ``(..., 3, C)`` one per image.
        ref: ``(3, H, W)`` or ``(..., 3, H, W)``.
        match: ``"histogram"`` or ``"moments"``.

    Returns:
        ``(..., 3, H, W)`` in [0, 1], the dtype of ``cube``.
    """
    rgb = render_linear(cube, srf)
    return colour_match(rgb, ref.to(rgb.dtype), match).clamp(0, 1)


def render_linear(cube: Tensor, srf: Tensor | np.ndarray) -> Tensor:
    """``(..., C, H, W)`` through ``srf`` ``(3, C)`` (or ``(..., 3, C)``) -> ``(..., 3, H, W)``, in linear light:
    :func:`sschsr.data.spectral.render` as one matrix product over the pixels (no copy of the cube)."""
    srf = torch.as_tensor(srf).to(device=cube.device, dtype=cube.dtype)
    c, h, w = cube.shape[-3:]
    if srf.shape[-2:] != (3, c):
        raise ValueError(f"srf must be (3, {c}) for an HSI with {c} bands, got {tuple(srf.shape)}")
    return (srf @ cube.reshape(*cube.shape[:-2], h * w)).reshape(*cube.shape[:-3], 3, h, w)


def _lands_on(mask: Tensor, flow: Tensor) -> Tensor:
    """``(H, W)`` bool: ``p + flow[p]`` (rounded) falls on a True pixel of ``mask`` (False outside)."""
    if bool(mask.all()):
        return torch.ones_like(mask)
    h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    tx = (xs + flow[0]).round().long()
    ty = (ys + flow[1]).round().long()
    inside = (tx >= 0) & (tx < w) & (ty >= 0) & (ty < h)
    out = torch.zeros_like(mask)
    out[inside] = mask[ty[inside], tx[inside]]
    return out
