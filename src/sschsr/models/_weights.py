"""Saving a network with its constructor arguments, and rebuilding it from a file: what the flow network
and WarpNet (and any module with a ``config`` dict of constructor arguments) share.

A file is a ``.safetensors`` (weights, the arguments as JSON in the metadata under ``key``) or a Lightning
``.ckpt`` (``state_dict``, the arguments under ``key`` at the top level, put there by the
LightningModule's ``on_save_checkpoint``). Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sschsr.errors import InputError


def save_net(net: nn.Module, path: str | Path, key: str) -> Path:
    """Write ``net``'s weights and ``net.config`` (under ``key`` in the metadata) to a ``.safetensors`` file."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={key: json.dumps(net.config)})
    return path


def read_weights(path: Path, key: str) -> tuple[dict[str, Tensor], dict | None]:
    """``(state_dict, stored constructor arguments or None)`` of a ``.safetensors`` or ``.ckpt`` file.

    Raises:
        InputError: another kind of file, or a checkpoint that is not a plain Lightning one.
    """
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), json.loads(meta[key]) if key in meta else None
    if path.suffix not in (".ckpt", ".pt", ".pth"):
        raise InputError(f"{path}: expected a Lightning .ckpt or a .safetensors file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: arbitrary objects, or not a checkpoint
        raise InputError(
            f"{path}: not a checkpoint of plain tensors and values ({type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return ckpt["state_dict"], ckpt.get(key)


def load_net(
    cls: type[nn.Module],
    path: str | Path,
    key: str,
    module_prefix: str,
    prefix: str | None,
    overrides: dict[str, Any],
    what: str,
    arch_hint: str,
) -> nn.Module:
    """Build ``cls`` from the arguments stored in ``path`` (``overrides`` win) and load its weights.

    Args:
        module_prefix: the attribute the network has in its LightningModule (``"net."``); the default
            ``prefix`` when the file's keys start with it, else none.
        what: the network's name in messages; arch_hint: which arguments to pass for a file that stores none.

    Returns:
        The network in eval mode on the CPU.

    Raises:
        InputError: the file is missing, of an unknown kind, or its weights do not fit the network.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} weights not found")
    state, stored = read_weights(path, key)
    if prefix is None:
        prefix = module_prefix if any(k.startswith(module_prefix) for k in state) else ""
    state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not state:
        raise InputError(f"{path}: no weights under the prefix {prefix!r}")
    kwargs = {**(stored or {}), **overrides}
    net = cls(**kwargs)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        hint = "" if stored or overrides else f" (the file stores no architecture: pass {arch_hint})"
        raise InputError(
            f"{path}: weights do not fit {cls.__name__}({kwargs}){hint}: {str(e).splitlines()[0]}"
        ) from None
    return net.eval()
