"""Stage 1 of SSC-HSR: a RAFT-style flow network, and loading/saving trained weights.

    >>> from sschsr.models.flow import RAFT, load_flow_net
    >>> net = load_flow_net("outputs/stage1/runs/<run>/checkpoints/last.ckpt")  # doctest: +SKIP
    >>> flow = net(rgb_hsi, ref, iters=12, test_mode=True)  # doctest: +SKIP

Weights are read from a Lightning checkpoint of :class:`sschsr.lit.flow.FlowModule` (``.ckpt``) or from
a ``.safetensors`` file written by :func:`save_flow_net`. Both carry the network's constructor
arguments, so the preset need not be repeated; pass ``preset`` (and other arguments) for files that do not.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from sschsr.errors import InputError
from sschsr.models.flow.raft import PRESETS, RAFT, RAFTConfig, count_parameters

__all__ = ["PRESETS", "RAFT", "RAFTConfig", "count_parameters", "load_flow_net", "save_flow_net"]

CONFIG_KEY = "flow_net_config"  # where the constructor arguments live in a .ckpt and .safetensors metadata


def save_flow_net(net: RAFT, path: str | Path) -> Path:
    """Write a flow network's weights and constructor arguments to a ``.safetensors`` file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: json.dumps(net.config)})
    return path


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _read_ckpt(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    # FlowModule checkpoints hold only tensors and plain values, so the safe loader reads them
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: arbitrary objects, or not a checkpoint
        raise InputError(
            f"{path}: not a checkpoint of plain tensors and values ({type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return ckpt["state_dict"], ckpt.get(CONFIG_KEY)


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return load_file(str(path)), json.loads(meta[CONFIG_KEY]) if CONFIG_KEY in meta else None


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
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: flow weights not found")
    if path.suffix == ".safetensors":
        state, stored = _read_safetensors(path)
    elif path.suffix in (".ckpt", ".pt", ".pth"):
        state, stored = _read_ckpt(path)
    else:
        raise InputError(f"{path}: expected a Lightning .ckpt or a .safetensors file")
    if prefix is None:
        prefix = "net." if any(k.startswith("net.") for k in state) else ""
    state = _strip_prefix(state, prefix)
    if not state:
        raise InputError(f"{path}: no weights under the prefix {prefix!r}")

    kwargs = {**(stored or {}), **overrides}
    net = RAFT(**kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        hint = (
            "" if stored or "preset" in overrides else " (the file stores no architecture: pass preset=...)"
        )
        raise InputError(
            f"{path}: weights do not fit RAFT({kwargs}){hint}: {str(e).splitlines()[0]}"
        ) from None
    return net.eval()
