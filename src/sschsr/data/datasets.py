"""Scene sources and splits: what the training pairs (:mod:`sschsr.data.pair_dataset`) are built from.

- a **scene source** names the scenes of a dataset and loads one on demand (:class:`Scene`: the HSI, its
  wavelengths, a real reference photo where the dataset has one, a nodata mask). Sources:
  :class:`ProceduralScenes` (the embedded default), :class:`CubeFolder` (CAVE folders, .mat, .npy, ...),
  :class:`HSIRefSRFolder` (real captured pairs), :class:`~sschsr.data.geotiff_tiles.GeoTIFFTiles` (a
  remote-sensing scene cut into tiles, in its own module), and :class:`MixedScenes` (several sources
  under one name space, e.g. CAVE plus procedural scenes for training only). Each keeps what it loaded in
  an in-process cache (every DataLoader worker has its own).
- :func:`split_names` splits scene names into train / val / test by scene, with a fixed seed or lists.

:class:`~sschsr.data.pair_dataset.PairDataset` turns scenes into the dict batches every model here
trains on (its module docstring lists the batch keys and how items are seeded).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from sschsr.data.io import find_cubes, read_cube, read_rgb
from sschsr.data.spectral import default_wavelengths
from sschsr.data.synth.scenes import procedural_scene
from sschsr.errors import InputError

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")


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
        """The training scenes in the order (and with the repeats) :class:`~sschsr.data.pair_dataset.PairDataset` gets them: as given here."""
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
        block (what a DataLoader worker serves, :meth:`~sschsr.data.pair_dataset.PairDataset.key`) holds its share of each source,
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
