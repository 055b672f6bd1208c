"""The LightningDataModule that serves :class:`~sschsr.data.pair_dataset.PairDataset` batches for any source.

Built from Hydra configs (``conf/data/*.yaml``): the scene source is a nested ``_target_`` that Hydra
instantiates first, everything else is plain values, scale and band count interpolated from the top level::

    _target_: sschsr.data.datamodules.HSIDataModule
    source: {_target_: sschsr.data.datasets.CubeFolder, root: ${paths.shared_data}/cave, n_bands: ${n_bands}}
    scale: ${scale}
    n_bands: ${n_bands}

Batches are dicts, see :mod:`sschsr.data.pair_dataset` for the keys; with the batch dimension added: ``lr``
``(B, C, h, w)``, ``lr_up`` / ``hr`` ``(B, C, H, W)``, ``ref`` / ``rgb_hsi`` / ``rgb_hr`` ``(B, 3, H, W)``, ``flow``
``(B, 2, H, W)``, ``valid`` / ``mask`` ``(B, H, W)`` bool, ``srf`` ``(B, 3, C)``, ``has_flow`` ``(B,)`` bool,
``name`` a list of B strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from sschsr.data.datasets import SceneSource, read_list, split_names
from sschsr.data.pair_dataset import PairDataset
from sschsr.data.sampling import ResumableLoader
from sschsr.errors import InputError
from sschsr.ops.degradations import DegradationFamily


def _plain(x: Any) -> Any:
    """OmegaConf containers to plain Python (other values unchanged)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf comes with hydra-core, a dependency
        return x
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig | ListConfig) else x


class HSIDataModule(L.LightningDataModule):
    """Train / val / test / predict loaders over the scenes of one source, split by scene.

    Args:
        source: a :class:`~sschsr.data.datasets.SceneSource` (or a config with ``_target_`` for one).
        scale: super-resolution factor (``${scale}``).
        n_bands: the band count the model takes (``${n_bands}``); checked against the data in
            :meth:`setup`, with an error saying which ``n_bands=`` to pass. None: no check.
        crop_size: training crop side in HR pixels, a multiple of ``scale``.
        eval_crop_size: validation / test crop (central); None: whole scenes trimmed to a multiple of
            ``scale``.
        batch_size: training batch size.
        eval_batch_size: validation / test batch size (default: ``batch_size`` for fixed-size crops,
            1 for whole scenes, which may differ in size).
        num_workers, pin_memory, persistent_workers: DataLoader settings (persistent workers keep their
            caches of scenes and synthetic views from epoch to epoch).
        val, test: scenes drawn for validation and test (counts, or fractions of all scenes), unless
            ``lists`` or the source's own lists name them (:func:`~sschsr.data.datasets.split_names`).
        split_seed: the draw's seed.
        lists: explicit splits, ``{"train"|"val"|"test": [names] or list file}``.
        synth: ``SynthConfig`` fields for synthetic references (mapping or dataclass).
        camera: camera response for ``rgb_hsi``.
        pairs_per_scene: synthetic views per training scene; ``eval_pairs_per_scene`` for val / test.
        samples_per_epoch: training items per epoch (default: scenes x views).
        seed: training randomness (crops, augmentation, noise, shuffling): ``${seed}``.
        view_seed: seeds the synthetic views and evaluation noise; fixed so every run sees the same pairs.
        degradation: the LR degradations (:class:`~sschsr.ops.degradations.DegradationFamily` fields;
            the ``degradation`` config group; None: the paper's).
        present: ``lr_up`` moved onto the paper's grid (True, for training) or as made (False: data as a
            user has them; :class:`~sschsr.data.pair_dataset.PairDataset`).
        match: colour matching of ``rgb_hsi`` to ``ref``.
        cache_pairs: synthetic views cached per worker (None: all).
        shard_workers: each training worker serves its own block of (scene, view) pairs, so it loads and
            generates only its share (:class:`~sschsr.data.pair_dataset.PairDataset`).
    """

    def __init__(
        self,
        source: SceneSource | Mapping[str, Any],
        scale: int = 4,
        n_bands: int | None = None,
        crop_size: int | Sequence[int] = 128,
        eval_crop_size: int | Sequence[int] | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        val: int | float = 0,
        test: int | float = 0,
        split_seed: int = 0,
        lists: Mapping[str, str | Path | Sequence[str]] | None = None,
        synth: Any = None,
        camera: str = "cie1931",
        pairs_per_scene: int = 4,
        eval_pairs_per_scene: int = 1,
        samples_per_epoch: int | None = None,
        seed: int = 0,
        view_seed: int = 0,
        degradation: Any = None,
        present: bool = True,
        match: Literal["histogram", "moments"] = "histogram",
        cache_pairs: int | None = None,
        shard_workers: bool = True,
    ):
        super().__init__()
        if not isinstance(source, SceneSource):
            if isinstance(source, Mapping) or hasattr(source, "_target_"):
                import hydra

                source = hydra.utils.instantiate(source)
            if not isinstance(source, SceneSource):
                raise InputError(f"data source must be a SceneSource, got {type(source).__name__}")
        self.source = source
        self.scale, self.n_bands = int(scale), n_bands
        self.crop_size, self.eval_crop_size = _plain(crop_size), _plain(eval_crop_size)
        self.batch_size = int(batch_size)
        self.eval_batch_size = eval_batch_size or (self.batch_size if eval_crop_size is not None else 1)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.val, self.test, self.split_seed, self.lists = val, test, int(split_seed), _plain(lists)
        self.synth = _plain(synth)
        self.camera, self.match = camera, match
        self.pairs_per_scene, self.eval_pairs_per_scene = int(pairs_per_scene), int(eval_pairs_per_scene)
        self.samples_per_epoch = samples_per_epoch
        self.seed, self.view_seed = int(seed), int(view_seed)
        self.degradation = DegradationFamily.of(_plain(degradation))
        self.present = bool(present)
        self.cache_pairs, self.shard_workers = cache_pairs, bool(shard_workers)
        self.splits: dict[str, list[str]] | None = None
        self.datasets: dict[str, PairDataset] = {}

    # ------------------------------------------------------------------------------------------ setup

    def split(self) -> dict[str, list[str]]:
        """The scene names of each split (computed once).

        The source's training-only scenes (:meth:`~sschsr.data.datasets.SceneSource.train_only_names`,
        e.g. the procedural scenes of a :class:`~sschsr.data.datasets.MixedScenes`) all train: validation
        and test are listed or drawn from the other scenes (fractions are of those), and a list that puts
        a training-only scene in validation or test is refused.
        """
        if self.splits is None:
            lists = self.lists if self.lists else self.source.split_lists()
            names = self.source.names()
            train_only = self.source.train_only_names()
            if train_only:
                extra = set(train_only)
                lists = {
                    k: (read_list(v) if isinstance(v, str | Path) else list(v))
                    for k, v in (lists or {}).items()
                    if v is not None
                }
                for split in ("val", "test"):
                    wrong = sorted(extra & set(lists.get(split, ())))
                    if wrong:
                        raise InputError(f"the {split} list names training-only scenes {wrong[:10]}")
                if "train" in lists:  # they train anyway
                    lists["train"] = [n for n in lists["train"] if n not in extra]
                names = [n for n in names if n not in extra]
            splits = split_names(names, self.val, self.test, self.split_seed, lists or None)
            splits["train"] = sorted(splits["train"] + train_only)
            self.splits = splits
        return self.splits

    def check_bands(self, name: str) -> None:
        """Load one scene and compare its band count with ``n_bands`` (InputError naming the fix)."""
        if self.n_bands is None:
            return
        c = self.source.load(name).hsi.shape[0]
        if c != self.n_bands:
            raise InputError(
                f"the data ({type(self.source).__name__}, scene {name}) has {c} bands but n_bands={self.n_bands}: "
                f"pass n_bands={c} (e.g. `sschsr-train data=... n_bands={c}`)"
            )

    def dataset(self, split: Literal["train", "val", "test"]) -> PairDataset:
        """The :class:`PairDataset` of one split (built once)."""
        if split not in self.datasets:
            names = self.split()[split]
            if not names:
                raise InputError(
                    f"the {split} split has no scenes (splits: { {k: len(v) for k, v in self.split().items()} })"
                )
            self.check_bands(names[0])
            train = split == "train"
            if train:  # the source's order and repeats (MixedScenes: sources interleaved, some repeated)
                names = self.source.train_list(names)
            ds = self.datasets[split] = PairDataset(
                self.source,
                names,
                scale=self.scale,
                crop_size=self.crop_size if train else self.eval_crop_size,
                train=train,
                synth=self.synth,
                camera=self.camera,
                pairs_per_scene=self.pairs_per_scene if train else self.eval_pairs_per_scene,
                samples_per_epoch=self.samples_per_epoch if train else None,
                seed=self.seed,
                degradation=self.degradation,
                present=self.present,
                match=self.match,
                cache_pairs=self.cache_pairs,
                view_seed=self.view_seed,
                shard_workers=self.shard_workers,
            )
            # the camera response once here, before DataLoader workers fork: they inherit it (and the
            # colour-science import behind it) instead of each paying for it
            ds.srf(self.source.load(names[0]).wavelengths)
        return self.datasets[split]

    def setup(self, stage: str | None = None) -> None:
        """Split the scenes and build the datasets the stage needs (fit: train + val; validate: val;
        test / predict: test). Splits that were not requested (size 0, no list) are skipped."""
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage, ("train", "val", "test")):
            if self.split()[split] or split == "train":
                self.dataset(split)

    # ------------------------------------------------------------------------------------- loaders

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        kwargs: dict[str, Any] = dict(
            batch_size=batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )
        if self.num_workers > 0:
            kwargs["prefetch_factor"] = 4  # items are cheap once views are cached: keep workers ahead
        # the loader's own generator: the workers' seeds repeat with ``seed``
        gen = torch.Generator().manual_seed(self.seed + {"train": 0, "val": 1, "test": 2}[split])
        ds = self.dataset(split)
        if not shuffle:
            return DataLoader(ds, shuffle=False, generator=gen, **kwargs)
        # training: the stream of draws (which pair, crop and noise each step sees) is a function of the seed,
        # the epoch and the position alone, and the loader's position is saved in checkpoints: exact resume
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = ds.stream(batch_size, self.num_workers, world, rank)
        return ResumableLoader(ds, sampler=sampler, generator=gen, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        # no validation scenes requested: Lightning skips validation
        return self._loader("val", self.eval_batch_size, shuffle=False) if self.split()["val"] else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
