"""Shared fixtures: the real data beside the repository, a seeded generator, CPU-only settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Busy-waiting OpenMP threads stall when the 2 cores are shared (pytest, dataloader workers): let them sleep.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "offline")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository (CAVE scenes, remote-sensing crops, SRF tables)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture()
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
