"""Reading and writing weights files: Lightning ``.ckpt`` (read with ``weights_only=True``) and
``.safetensors`` with their metadata, parts stored beside a model by the hash of their weights, float16
storage; and saving/loading a network with its constructor arguments (the flow network, WarpNet).

Every torch checkpoint the package reads goes through :func:`load_checkpoint` (``weights_only=True``,
passed explicitly, so that no environment setting such as ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` turns it
off); the metadata of every file is validated (:func:`sschsr.checkpoints.spec.check_model_info`) before
anything in it is used."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sschsr.checkpoints.spec import (
    MODEL_KEY,
    PART_KEY,
    check_arguments,
    check_model_info,
    check_network_size,
)
from sschsr.errors import InputError

log = logging.getLogger(__name__)

FP16_MAX = 65504.0  # the largest finite float16: tensors beyond it are stored in float32


def _to_float32(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Floating-point tensors (float16 / bfloat16 storage) as float32; others unchanged."""
    return {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()
    }


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint") -> dict[str, Any]:
    """The content of a torch checkpoint file, read safely: ``torch.load(weights_only=True)`` (tensors and
    plain values only: a pickled object in the file is refused, never run), on the CPU.

    Raises:
        InputError: no such file, not a torch file, objects other than tensors and plain values, or not
            a Lightning checkpoint (a mapping with a ``state_dict``).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {what} not found")
    if not path.is_file():
        raise InputError(f"{path}: is not a file (expected a {what} file)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends: arbitrary objects, or not a checkpoint
        raise InputError(
            f"{path}: not a readable {what} of plain tensors and values ({type(e).__name__})"
        ) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
    return ckpt


def _read_lightning(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    # SRModule checkpoints hold only tensors and plain values, so the safe loader reads them
    ckpt = load_checkpoint(path)
    info = ckpt.get(MODEL_KEY)
    if not isinstance(info, dict):
        keys = set(ckpt)
        stage = (
            "a stage-2 (WarpNet) checkpoint: pass it as model.warp_ckpt when training the full model"
            if "warpnet_config" in keys
            else "a stage-1 (flow) checkpoint: pass it as model.flow_ckpt when training the full model"
            if "flow_net_config" in keys
            else "not a checkpoint of the full model (sschsr-train experiment=full)"
        )
        raise InputError(f"{path}: {stage}")
    info = check_model_info(info, f"{path} ({MODEL_KEY})")
    prefix = "net."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return state, info


def _read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device="cpu")
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InputError(f"{path}: not a readable .safetensors file ({type(e).__name__}: {e})") from None
    sidecar = path.with_suffix(".json")
    if MODEL_KEY in meta:
        source = f"{path} (metadata)"
        try:
            info = json.loads(meta[MODEL_KEY])
        except (ValueError, RecursionError) as e:  # JSONDecodeError, or nested beyond reason
            raise InputError(f"{source}: cannot read the model description ({type(e).__name__})") from None
    elif sidecar.is_file():
        source = str(sidecar)
        try:
            if sidecar.stat().st_size > 1 << 20:
                raise ValueError("larger than 1 MB")
            info = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise InputError(f"{sidecar}: cannot read the model description ({e})") from None
    else:
        raise InputError(
            f"{path}: no model description (no {MODEL_KEY!r} metadata, no {sidecar.name} beside it): "
            "not a sschsr model file"
        )
    info = check_model_info(info, source)
    for name, entry in (info.get("parts") or {}).items():
        state.update({f"{name}.{k}": v for k, v in _read_part(path, name, entry).items()})
    return state, info


def _read_part(path: Path, name: str, entry: Any) -> dict[str, Tensor]:
    """The weights of the part ``name`` of the model file ``path`` (see :func:`save_model`'s ``parts``)."""
    from safetensors.torch import load_file

    file = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(file, str) or Path(file).name != file or file.startswith("."):
        raise InputError(f"{path}: its part {name!r} names {file!r}, not a file beside it")
    part = path.parent / file
    if not part.is_file():
        raise InputError(f"{part}: missing (the {name} weights of {path.name}, which must lie beside it)")
    if part.resolve().parent != path.parent.resolve():  # a link out of the model's folder
        raise InputError(f"{part}: leads out of the folder of {path.name}; parts must lie beside it")
    try:
        state = load_file(str(part), device="cpu")
    except Exception as e:
        raise InputError(f"{part}: not a readable .safetensors file ({type(e).__name__}: {e})") from None
    if state_sha256(state) != entry.get("sha256"):
        raise InputError(f"{part}: not the weights {path.name} was written with (their SHA-256 differs)")
    return state


def _storage_state(net: nn.Module, dtype: torch.dtype) -> dict[str, Tensor]:
    """``net``'s state dict on the CPU, floating-point tensors cast to ``dtype`` unless that would overflow
    (those stay float32). Each tensor is its own copy: safetensors refuses tensors that share memory."""
    state = {}
    for k, v in net.state_dict().items():
        v = v.detach().cpu()
        if v.is_floating_point() and dtype != v.dtype:
            if dtype == torch.float16 and v.numel() and float(v.abs().max()) > FP16_MAX:
                log.warning("%s: values beyond the float16 range, stored in float32", k)
                v = v.float()
            else:
                v = v.to(dtype)
        state[k] = v.clone().contiguous()
    return state


def _write_safetensors(state: dict[str, Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write atomically (a temporary file renamed into place), readable like any data file."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file(state, str(tmp), metadata=metadata)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # a plain data file (safetensors creates it owner-only)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def state_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 of a state dict's content: names, dtypes, shapes and bytes, in name order (the bytes of a
    ``.safetensors`` file are not stable: its header's metadata order varies)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def _save_part(state: dict[str, Tensor], folder: Path, name: str) -> dict[str, str]:
    """Write one part of a model (the weights of its child ``name``) as ``{name}-{hash}.safetensors`` in
    ``folder``, named by its content: models that share a part (e.g. one flow network
    for two scales) share the file, and a different part never overwrites it. A file already there with this
    content is left as it is (writing it again would change only its header's order). Returns its entry
    in ``parts``."""
    digest = state_sha256(state)
    file = f"{name}-{digest[:12]}.safetensors"
    if not _holds_state(folder / file, digest):
        _write_safetensors(state, folder / file, {PART_KEY: name, "format": "pt"})
    return {"file": file, "sha256": digest}


def _holds_state(path: Path, digest: str) -> bool:
    """True when ``path`` is a readable ``.safetensors`` file whose content hashes to ``digest``."""
    from safetensors.torch import load_file

    if not path.is_file():
        return False
    try:
        return state_sha256(load_file(str(path), device="cpu")) == digest
    except Exception:  # a corrupt or partial file: written again
        return False


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

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            state = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise InputError(f"{path}: not a readable .safetensors file ({type(e).__name__})") from None
        try:
            stored = json.loads(meta[key]) if key in meta else None
        except (ValueError, RecursionError) as e:
            raise InputError(f"{path}: cannot read its {key} ({type(e).__name__})") from None
        return state, stored
    if path.suffix not in (".ckpt", ".pt", ".pth"):
        raise InputError(f"{path}: expected a Lightning .ckpt or a .safetensors file")
    ckpt = load_checkpoint(path)
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
    if stored is not None:
        check_arguments(cls, stored, f"{path} ({key})")
    kwargs = {**(stored or {}), **overrides}
    try:
        check_network_size(lambda: cls(**kwargs), str(path))
        net = cls(**kwargs)
    except InputError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise InputError(f"{path}: cannot build {cls.__name__}({str(kwargs)[:300]}): {e}") from None
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        hint = "" if stored or overrides else f" (the file stores no architecture: pass {arch_hint})"
        raise InputError(
            f"{path}: weights do not fit {cls.__name__}({kwargs}){hint}: {str(e).splitlines()[0]}"
        ) from None
    return net.eval()
