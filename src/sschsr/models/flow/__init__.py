"""Stage 1 of SSC-HSR: a RAFT-style flow network, and loading/saving trained weights.

    >>> from sschsr.models.flow import RAFT, load_flow_net
    >>> net = load_flow_net("outputs/stage1/runs/<run>/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> flow = net(rgb_hsi, ref, iters=12, test_mode=True)  # doctest: +SKIP

Weights are read from a Lightning checkpoint of :class:`sschsr.lit.flow.FlowModule` (``.ckpt``) or from
a ``.safetensors`` file written by :func:`save_flow_net`. Both carry the network's constructor
arguments, so the preset need not be repeated; pass ``preset`` (and other arguments) for files that do not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sschsr.models._weights import load_net, save_net
from sschsr.models.flow.raft import PRESETS, RAFT, RAFTConfig, count_parameters

__all__ = ["PRESETS", "RAFT", "RAFTConfig", "count_parameters", "load_flow_net", "save_flow_net"]

CONFIG_KEY = "flow_net_config"  # where the constructor arguments live in a .ckpt and .safetensors metadata


def save_flow_net(net: RAFT, path: str | Path) -> Path:
    """Write a flow network's weights and constructor arguments to a ``.safetensors`` file."""
    return save_net(net, path, CONFIG_KEY)


def load_flow_net(path: str | Path, prefix: str | None = None, **overrides: Any) -> RAFT:
    """Build a :class:`RAFT` and load trained weights into it; returned in eval mode on the CPU.

    Args:
        path: a Lightning ``.ckpt`` (of :class:`sschsr.lit.flow.FlowModule` or any module holding the
            flow net) or a ``.safetensors`` file.
        prefix: the key prefix of the flow net in the state dict; default: ``net.`` when the keys
            start with it (a ``FlowModule``), else none.
        **overrides: constructor arguments of :class:`RAFT` (e.g. ``preset="base"``, ``iters=24``); they
            take precedence over those stored in the file, and are needed for files that store none.

    Raises:
        InputError: the file is missing, of an unknown kind, or its weights do not fit the network.
    """
    return load_net(RAFT, path, CONFIG_KEY, "net.", prefix, overrides, what="flow", arch_hint="preset=...")
