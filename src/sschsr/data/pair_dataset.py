"""The training pairs: :class:`PairDataset` turns the scenes of a source
(:class:`~sschsr.data.datasets.SceneSource`, split by :func:`~sschsr.data.datasets.split_names`) into the
dict batches every model here trains on.

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
``(view_seed, scene name, variant)`` (a stable hash, :func:`~sschsr.data.seeding.stable_seed`, the same
on every machine; the scene's own name, :meth:`~sschsr.data.datasets.SceneSource.seed_name`, also inside a
:class:`~sschsr.data.datasets.MixedScenes`), so evaluation pairs are identical everywhere; evaluation
crops are central and evaluation noise is seeded the same way. Training
crops, dihedral augmentation and noise come from a generator seeded by ``(seed, "item", epoch, number)``
of the :class:`~sschsr.data.sampling.Draw` the training sampler names
(:class:`~sschsr.data.sampling.TrainingStream`): the same in every process and after a resume, and another
in every epoch. An integer index ``i`` in training is the draw ``(i % pairs, 0, i)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from sschsr.data.augment import center_crop, random_crop, random_flip_rot
from sschsr.data.datasets import SceneSource
from sschsr.data.sampling import Draw, TrainingStream
from sschsr.data.seeding import LRUCache, seeded_generator
from sschsr.data.spectral import camera_srf, colour_match, render_linear
from sschsr.data.synth.pairs import SynthConfig, make_pair
from sschsr.errors import InputError
from sschsr.ops.degradations import DegradationFamily, present
from sschsr.ops.degrade import upsample


def _synth_config(synth: Any):
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
    generation. Training items are usually :class:`~sschsr.data.sampling.Draw` s from the training sampler,
    which also shards the pairs between DataLoader workers and DDP ranks
    (:class:`~sschsr.data.sampling.TrainingStream`; ``shard_workers`` is its switch).

    Args:
        source: a :class:`~sschsr.data.datasets.SceneSource`.
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
            (:class:`~sschsr.ops.degradations.DegradationFamily` or a mapping of its fields; None: the
            paper's); evaluation items draw theirs from the scene's seeded generator, so they repeat.
        present: ``lr_up`` moved onto the paper's grid when the draw's phase is another
            (:func:`~sschsr.ops.degradations.present`, what every network here trains on); False:
            ``upsample(lr)`` as the data were made, as a user's file gives it (the test-time pipeline is
            then told the grid, :func:`sschsr.pipeline.on_lr_grid`).
        match: colour matching of ``rgb_hsi`` to ``ref``.
        cache_pairs: most synthetic views kept per process (None: no limit, 0: none).
        view_seed: seeds the synthetic views and the evaluation noise (default: ``seed``); keep it fixed
            across runs so that every run is evaluated on the same pairs.
        shard_workers: the training sampler splits the pairs between DataLoader workers and ranks
            (:meth:`stream`).
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

    def __len__(self) -> int:
        return int(self.samples_per_epoch) if self.train and self.samples_per_epoch else self.n_pairs

    @property
    def n_pairs(self) -> int:
        """The (scene, view) pairs: scenes x views."""
        return len(self.names) * self.views

    def key(self, index: int | Draw) -> tuple[str, int]:
        """``(scene name, view)`` of item ``index`` (pair ``index % n_pairs``) or of a draw's pair."""
        if isinstance(index, Draw):
            combo = index.pair
            if not 0 <= combo < self.n_pairs:
                raise IndexError(index)
        else:
            if index < 0:
                index += len(self)
            if not 0 <= index < len(self):
                raise IndexError(index)
            combo = index % self.n_pairs
        return self.names[combo // self.views], combo % self.views

    def stream(
        self, batch_size: int, num_workers: int = 0, num_replicas: int = 1, rank: int = 0
    ) -> TrainingStream:
        """The training sampler over this dataset (:class:`~sschsr.data.sampling.TrainingStream`)."""
        return TrainingStream(
            len(self),
            self.n_pairs,
            batch_size,
            self.seed,
            num_replicas,
            rank,
            num_workers,
            self.shard_workers,
        )

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

    def __getitem__(self, index: int | Draw) -> dict[str, Any]:
        name, view = self.key(index)
        sample = self.pair(name, view)
        label = name if self.views == 1 else f"{name}#{view}"
        if self.train:
            draw = index if isinstance(index, Draw) else Draw(index % self.n_pairs, 0, index)
            g = seeded_generator(self.seed, "item", draw.epoch, draw.number)
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
