"""The training stream: which item, crop and noise each training step sees, as a pure function of
``(seed, epoch, position)``, so that a run resumed from a checkpoint sees exactly what the uninterrupted run
would have seen.

- :class:`Draw`: one training item as the sampler names it: the (scene, view) pair, the epoch and the
  item's number in the epoch's stream. :class:`~sschsr.data.pair_dataset.PairDataset` seeds the item's
  crop, augmentation and degradation from ``(seed, "item", epoch, number)``, whatever process makes it.
- :class:`TrainingStream`: the sampler. Epoch ``e`` shuffles the ``n_items`` item indices with a generator
  seeded by ``(seed, "order", e)``; global batch ``g`` holds positions ``g * B .. g * B + B - 1`` of that
  order, and process ``r`` of ``W`` (DDP ranks) takes global batches ``r, r + W, r + 2W, ...``. With
  sharding, local batch ``j`` of rank ``r`` draws its pairs from block ``r * nw + j % nw`` of the (scene,
  view) pairs: DataLoader worker ``j % nw`` makes that batch, so each worker loads and generates only its
  block. It is a :class:`~torch.utils.data.DistributedSampler` so that Lightning does not wrap it under DDP
  (it splits the stream between ranks itself).
- :class:`ResumableLoader`: a DataLoader with ``state_dict`` / ``load_state_dict`` (Lightning saves them
  in every checkpoint and restores them on resume): the epoch and the number of batches of it already
  trained on; the restored loader's first iterator starts at the next batch.

After a resume in the middle of an epoch the DataLoader hands the first remaining batch to worker 0, not
to the worker whose block it draws from: for the rest of that epoch workers may make pairs outside their
block (slower, the same items).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from sschsr.data.seeding import seeded_generator
from sschsr.errors import InputError

__all__ = ["Draw", "ResumableLoader", "TrainingStream"]


class Draw(NamedTuple):
    """One training item: ``pair`` in ``[0, scenes x views)`` (scene-major), the ``epoch`` and the item's
    ``number`` in that epoch's stream (unique within the epoch, over all processes)."""

    pair: int
    epoch: int
    number: int


class TrainingStream(DistributedSampler):
    """Yields :class:`Draw` items for the training batches of one process (module docstring).

    Args:
        n_items: items per epoch (the dataset's length, ``samples_per_epoch``).
        n_pairs: (scene, view) pairs of the split; item index ``i`` stands for pair ``i % n_pairs``
            (within the batch's block when sharding).
        batch_size: ``B``, items per batch and process.
        seed: the run's training seed.
        num_replicas, rank: DDP world size and this process's rank.
        num_workers: the DataLoader's worker processes (0: the main process makes the items).
        shard: split the pairs into one block per (rank, worker) when there are at least as many pairs as
            blocks.

    Length: ``max(1, G // W) * B`` with ``G = max(1, n_items // B)`` global batches (a last partial batch
    dropped; an epoch shorter than one batch wraps around its order).
    """

    def __init__(
        self,
        n_items: int,
        n_pairs: int,
        batch_size: int,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        num_workers: int = 0,
        shard: bool = True,
    ):
        # not DistributedSampler.__init__, which wants a dataset and an initialised process group
        Sampler.__init__(self)
        if n_items < 1 or n_pairs < 1 or batch_size < 1:
            raise InputError(
                f"a training stream needs items, pairs and a batch size >= 1, got {n_items, n_pairs, batch_size}"
            )
        if not 0 <= rank < num_replicas:
            raise InputError(f"rank {rank} is not in a world of {num_replicas}")
        self.n_items, self.n_pairs, self.batch_size = int(n_items), int(n_pairs), int(batch_size)
        self.seed, self.num_replicas, self.rank = int(seed), int(num_replicas), int(rank)
        self.num_workers = max(1, int(num_workers))
        blocks = self.num_replicas * self.num_workers
        self.blocks = blocks if shard and self.n_pairs >= blocks else 1
        self.epoch = 0
        self.start = 0  # batches of the current epoch already trained on (set on resume, used once)

    @property
    def batches(self) -> int:
        """Batches per epoch of this process (the same on every rank)."""
        return max(1, max(1, self.n_items // self.batch_size) // self.num_replicas)

    def __len__(self) -> int:
        return self.batches * self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def block(self, j: int) -> tuple[int, int]:
        """``[lo, hi)`` of the pairs local batch ``j`` draws from."""
        if self.blocks == 1:
            return 0, self.n_pairs
        b = self.rank * self.num_workers + j % self.num_workers
        return b * self.n_pairs // self.blocks, (b + 1) * self.n_pairs // self.blocks

    def draws(self, epoch: int, start: int = 0) -> Iterator[Draw]:
        """The draws of local batches ``start, start + 1, ...`` of ``epoch``."""
        order = torch.randperm(self.n_items, generator=seeded_generator(self.seed, "order", epoch)).tolist()
        for j in range(start, self.batches):
            g = j * self.num_replicas + self.rank
            lo, hi = self.block(j)
            for k in range(g * self.batch_size, (g + 1) * self.batch_size):
                yield Draw(lo + order[k % self.n_items] % (hi - lo), epoch, k)

    def __iter__(self) -> Iterator[Draw]:
        start, self.start = self.start, 0
        return self.draws(self.epoch, start)


class ResumableLoader(DataLoader):
    """A DataLoader over a :class:`TrainingStream` that remembers how far into the epoch training got.

    ``state_dict()``: ``{"epoch", "batches"}``, the batches yielded by the current iterator (Lightning
    takes no batch ahead of the step when the loader has a length, so these are the batches trained on).
    After ``load_state_dict`` the next iterator starts after them if it is of that epoch (at the next epoch
    when the saved one was complete); an iterator of another epoch (the trainer moved on, e.g. an epoch cut
    short by ``limit_train_batches``) starts at its beginning. The iterator's work starts at its first
    batch, after the trainer has set the sampler's epoch.
    """

    sampler: TrainingStream

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, TrainingStream):
            raise InputError("ResumableLoader needs a TrainingStream sampler")
        self._served = 0
        self._resume: tuple[int, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        epoch, batches = self._resume or (None, 0)
        self._resume = None
        self.sampler.start = self._served = batches if self.sampler.epoch == epoch else 0
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= self.sampler.batches:
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self._resume = (epoch, batches)
        self._served = batches
