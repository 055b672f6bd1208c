"""Seeding and caching for the data layer: stable seeds and generators (the same on every machine and
Python run) and a small LRU cache.

- :func:`stable_seed` / :func:`seeded_generator`: seeds from any printable parts (scene names, indices,
  worker seeds), used by :class:`~sschsr.data.pair_dataset.PairDataset` for synthetic views, noise and
  training crops.
- :class:`LRUCache`: a dict bounded to its most recently used entries (the per-process cache of
  synthetic views).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import torch


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
