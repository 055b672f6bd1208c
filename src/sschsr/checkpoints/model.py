"""The full model's weights: the shipped files, loading any model file for inference, saving and exporting
trained checkpoints, and starting a training run from a trained model (fine-tuning)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from torch import Tensor, nn

from sschsr import __version__
from sschsr.checkpoints.files import (
    _read_lightning,
    _read_safetensors,
    _save_part,
    _storage_state,
    _to_float32,
    _write_safetensors,
    load_checkpoint,
)
from sschsr.checkpoints.spec import (
    DEFAULT_CAMERA,
    MODEL_KEY,
    PART_KEY,
    build_module,
    check_scale,
    model_info,
    spec_matches,
    trained_scales,
)
from sschsr.checkpoints.stages import load_earlier_stages, load_flow_net, load_stage2
from sschsr.errors import InputError
from sschsr.models.flow import CONFIG_KEY as FLOW_KEY
from sschsr.models.warpnet import CONFIG_KEY as WARPNET_KEY

log = logging.getLogger(__name__)

SHIPPED_NAMES = ("shipped", "default")  # names of the package's own weights for a scale
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"  # src/sschsr/weights


def shipped_weights(scale: int) -> Path:
    """Where the package's own weights for ``scale`` live (the file may not exist in this version)."""
    return WEIGHTS_DIR / f"sschsr_x{scale}.safetensors"


def missing_weights_message(scale: int, option: str = "--ckpt MODEL") -> str:
    """The one-line explanation when the shipped weights for ``scale`` are not there (``option``: how the
    command at hand takes a model file instead)."""
    path = shipped_weights(scale)
    return (
        f"no shipped weights for x{scale}: {path} does not exist; pass {option} (a .ckpt of "
        f"'sschsr-train experiment=full scale={scale}' or a .safetensors), or export one with "
        f"'python experiments/export_weights.py --ckpt CKPT --scale {scale} --out {path}'"
    )


def load_model(
    ckpt: str | os.PathLike | None, scale: int, n_bands: int | None = None, option: str = "--ckpt MODEL"
) -> nn.Module:
    """A trained network in eval mode on the CPU, checked against the scale and band count asked for.

    Args:
        ckpt: a Lightning ``.ckpt`` of the full model (:class:`sschsr.lit.sr.SRModule`), a ``.safetensors``
            of :func:`save_model` / :func:`export_weights` (float32 or float16), or None for the shipped
            weights of ``scale`` (so are the names in :data:`SHIPPED_NAMES`, ``"shipped"``).
        scale: the super-resolution factor the caller needs.
        n_bands: the band count of the caller's data (None: no check).
        option: how the caller's user names another model (in the message when no weights are shipped).

    Returns:
        the float32 network (``forward(lr_up, ref, rgb_hsi) -> dict(sr=...)``) on the CPU in eval mode,
        with the model info as its ``info`` attribute (``net``, ``scale``, ``n_bands``, ``camera``) and
        the file it came from as ``info["path"]``.

    Raises:
        InputError: no such file, not a model file, no shipped weights for ``scale``, a scale or band count
            the model does not take, weights that do not fit the description.
    """
    if ckpt is None or str(ckpt).strip().lower() in SHIPPED_NAMES:
        check_scale(scale)
        path = shipped_weights(scale)
        if not path.is_file():
            raise InputError(missing_weights_message(scale, option))
    else:
        path = Path(ckpt)
        if not path.exists():
            raise InputError(f"{path}: checkpoint not found")
        if not path.is_file():
            raise InputError(f"{path}: is not a file (expected a .ckpt or .safetensors)")
    suffix = path.suffix.lower()
    if suffix in (".ckpt", ".pt", ".pth"):
        state, info = _read_lightning(path)
    elif suffix == ".safetensors":
        state, info = _read_safetensors(path)
    else:
        raise InputError(
            f"{path}: unsupported model file {path.suffix!r}: expected a Lightning .ckpt or a .safetensors"
        )

    check_scale(scale, info, source=str(path))
    model_bands = info.get("n_bands")
    if n_bands is not None and model_bands is not None and int(model_bands) != int(n_bands):
        raise InputError(
            f"the data has {n_bands} bands but the model {path.name} takes {model_bands} "
            f"(trained on {model_bands}-band scenes): pass a model trained for {n_bands} bands"
        )
    net = _build_with_weights(info, state, path)
    net.info = {**info, "path": str(path)}  # type: ignore[assignment]
    return net


def _build_with_weights(info: dict[str, Any], state: dict[str, Tensor], path: Path) -> nn.Module:
    """The float32 network ``info["net"]`` describes, in eval mode, with ``state`` (read from ``path``)."""
    try:
        net = build_module(info["net"])
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    try:
        net.load_state_dict(_to_float32(state))
    except RuntimeError as e:
        raise InputError(
            f"{path}: weights do not fit the network it describes: {str(e).splitlines()[0]}"
        ) from None
    return net.float().eval()


def save_model(
    net: nn.Module,
    path: str | os.PathLike,
    scale: int | list[int],
    camera: str = DEFAULT_CAMERA,
    *,
    dtype: torch.dtype = torch.float32,
    sidecar: bool = False,
    metadata: dict[str, str] | None = None,
    parts: Iterable[str] = (),
) -> Path:
    """Write ``net``'s weights to ``path`` (``.safetensors``) with its model info in the file's metadata.

    Args:
        net: a network of this package whose constructor arguments :func:`module_spec` records.
        path: the ``.safetensors`` file to write (atomically: a temporary file renamed into place).
        scale: the scale it was trained for (or a list of scales).
        camera: the camera response ``rgb_hsi`` was rendered with in training.
        dtype: storage type of floating-point tensors: ``torch.float32`` or ``torch.float16`` (half the
            size; :func:`load_model` upcasts to float32).
        sidecar: also write the model info to ``path.with_suffix(".json")`` (for people and tools that do
            not read safetensors metadata; the loader does not need it).
        metadata: more string entries for the file's metadata (e.g. the source checkpoint).
        parts: children of ``net`` (e.g. ``flow_net``, ``warpnet``) whose weights go into files of their
            own beside ``path``, ``{child}-{hash}.safetensors``, named by content; ``path`` lists them
            with their SHA-256 under ``parts`` in the model info, and :func:`load_model` joins them.

    Returns:
        the ``.safetensors`` path.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_model writes .safetensors files, got {path}")
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"save_model stores float32, float16 or bfloat16 weights, not {dtype}")
    info = model_info(net, scale if isinstance(scale, int) else scale[0], camera)
    if not isinstance(scale, int):
        info["scales"] = [int(s) for s in scale]
    if not spec_matches(net, info["net"]):
        raise ValueError(f"{type(net).__name__}: its recorded constructor arguments do not rebuild it")

    meta = {
        **(metadata or {}),
        MODEL_KEY: json.dumps(info),
        "format": "pt",
        "dtype": str(dtype).removeprefix("torch."),
        "sschsr_version": __version__,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    state = _storage_state(net, dtype)
    children = dict(net.named_children())
    for name in parts:
        if children.get(name) is None:
            raise ValueError(f"{type(net).__name__} has no child {name!r} to store as a part")
        prefix = f"{name}."
        part = {k[len(prefix) :]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}
        info.setdefault("parts", {})[name] = _save_part(part, path.parent, name)
    meta[MODEL_KEY] = json.dumps(info)
    _write_safetensors(state, path, meta)
    if sidecar:
        side = path.with_suffix(".json")
        tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, side)
    return path


def read_training_checkpoint(ckpt: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """The float32 network of a full-model training checkpoint (:class:`sschsr.lit.sr.SRModule` ``.ckpt``:
    flow network, WarpNet and SR branch) and its model info, built from the file alone.

    Raises:
        InputError: missing or unreadable file, a checkpoint of another stage, weights that do not fit.
    """
    path = Path(ckpt)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    state, info = _read_lightning(path)
    return _build_with_weights(info, state, path), info


def export_weights(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    scale: int | None = None,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
    parts: Iterable[str] = (),
    flow_ckpt: str | os.PathLike | None = None,
) -> Path:
    """Turn a training checkpoint of the full model into a ``.safetensors`` file (float16
    by default), e.g. the shipped weights: the whole network (flow network, WarpNet, SR branch; the children
    named in ``parts`` in files beside it) with its
    spec, scale, band count and camera in the file's metadata, so :func:`load_model` rebuilds it without
    Hydra.

    Args:
        ckpt: an :class:`sschsr.lit.sr.SRModule` ``.ckpt`` (``sschsr-train experiment=full``).
        out: the ``.safetensors`` file to write.
        scale: the scale the export is for; it must be one the checkpoint was trained for (default: its own).
        dtype: storage type (float16: half the size of float32, within float16 rounding of its outputs).
        metadata: more string entries for the file's metadata.
        parts: children stored in files of their own beside ``out`` (see :func:`save_model`).
        flow_ckpt: stage-1 weights that replace the checkpoint's (frozen) flow network
            (:func:`sschsr.checkpoints.load_earlier_stages`), e.g. a flow network fine-tuned after the SR branch.

    Raises:
        InputError: the checkpoint is missing, not a full-model checkpoint, or trained for another scale;
            a ``flow_ckpt`` that does not fit.

    Example:
        >>> export_weights("outputs/full/runs/<run>/checkpoints/last.ckpt",
        ...                "src/sschsr/weights/sschsr_x4.safetensors", scale=4)  # doctest: +SKIP
    """
    net, info = read_training_checkpoint(ckpt)
    if flow_ckpt is not None:
        load_earlier_stages(net, str(flow_ckpt))
    scales = trained_scales(info) or [scale or 4]
    scale = scales[0] if scale is None else int(scale)
    check_scale(scale, info, source=str(ckpt))
    meta = {"source_checkpoint": Path(ckpt).name, **(metadata or {})}
    if flow_ckpt is not None:
        meta["source_flow_checkpoint"] = Path(flow_ckpt).name
    camera = info.get("camera", DEFAULT_CAMERA)
    return save_model(net, out, scale=scale, camera=camera, dtype=dtype, metadata=meta, parts=parts)


def widen_inputs(source: dict[str, Tensor], target: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """``source`` with each weight that takes fewer input channels than ``target``'s zero-padded to it.

    A weight widens when it has ``target``'s shape but a smaller size along dim 1 (the input channels of
    a convolution or linear layer): ``(O, I, ...)`` becomes ``(O, I', ...)``, ``I' > I``, the added inputs
    with zero weights. Anything else is left as it is (a strict load then reports it).

    Returns:
        the state to load and the names of the widened weights.

    Example:
        >>> state, names = widen_inputs({"w": torch.ones(2, 1)}, {"w": torch.empty(2, 3)})
        >>> state["w"].tolist(), names
        ([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], ['w'])
    """
    out, widened = dict(source), []
    for name, value in source.items():
        want = target.get(name)
        if want is None or want.shape == value.shape or want.ndim != value.ndim or value.ndim < 2:
            continue
        same_other = want.shape[0] == value.shape[0] and want.shape[2:] == value.shape[2:]
        if same_other and want.shape[1] > value.shape[1]:
            pad = value.new_zeros(value.shape[0], want.shape[1] - value.shape[1], *value.shape[2:])
            out[name] = torch.cat([value, pad], dim=1)
            widened.append(name)
    return out, widened


def load_init_weights(net: nn.Module, init_ckpt: str, scale: int) -> None:
    """Start ``net`` from a trained model of the same architecture, in place (fine-tuning).

    ``init_ckpt``: anything :func:`sschsr.checkpoints.load_model` reads (a full-model ``.ckpt``, a
    ``.safetensors`` such as the shipped ``sschsr_x8.safetensors``) trained for ``scale``. A weight of
    ``net`` that takes more input channels than the source's (the texture encoder of
    ``texture_input="both"`` started from a model with ``repair``) gets the source's weights on the first
    inputs and zeros on the added ones (:func:`widen_inputs`): the network starts computing what the
    source did and learns to use the rest.

    Raises:
        InputError: a missing or unreadable file, another scale, or a network that does not fit ``net``.
    """
    source = load_model(init_ckpt, scale)
    state, widened = widen_inputs(source.state_dict(), net.state_dict())
    if widened:
        log.warning("init_ckpt: inputs added with zero weights (the network starts as %s does): %s",
                    init_ckpt, ", ".join(widened))  # fmt: skip
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(
            f"init_ckpt={init_ckpt}: its {type(source).__name__} does not fit this run's "
            f"{type(net).__name__}: {str(e).splitlines()[0]} (build the network the file describes: "
            f"{source.info.get('net')})"
        ) from None
    log.info("all weights from %s", init_ckpt)


class AlignmentStages(NamedTuple):
    """The alignment stages of a checkpoint (:func:`load_alignment_stages`)."""

    flow_net: nn.Module
    warpnet: nn.Module | None
    iters: int
    kind: str


def load_alignment_stages(path: str | os.PathLike, iters: int | None = None) -> AlignmentStages:
    """The flow network and WarpNet (float32, CPU) of any checkpoint that holds them, the flow updates to run
    and the kind of file (``stage1``, ``stage2``, ``full``).

    ``.ckpt``: an :class:`~sschsr.lit.sr.SRModule` (full model: its ``net.flow_net`` / ``net.warpnet``),
    a :class:`~sschsr.lit.warp.WarpModule` (:func:`~sschsr.checkpoints.stages.load_stage2`) or a
    :class:`~sschsr.lit.flow.FlowModule` (:func:`~sschsr.checkpoints.load_flow_net`). ``.safetensors``:
    a flow network (:func:`~sschsr.models.flow.save_flow_net`) or a full model
    (:func:`~sschsr.checkpoints.load_model`, e.g. the shipped weights). ``iters``: flow updates (default:
    the full model's ``flow_iters``, else the flow network's own default, i.e. what its stage trained with).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    net = None
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if FLOW_KEY in meta:
            flow_net, warpnet, kind = load_flow_net(path), None, "stage1"
        elif PART_KEY in meta:  # a part of a model file: its architecture is in the model file
            raise InputError(
                f"{path}: the {meta[PART_KEY]} part of a model file, which holds no architecture: "
                "pass the model file that lists it (e.g. src/sschsr/weights/sschsr_x8.safetensors)"
            )
        else:  # a full model; its description in the metadata or a JSON sidecar
            info = (
                json.loads(meta[MODEL_KEY])
                if MODEL_KEY in meta
                else json.loads(path.with_suffix(".json").read_text())
            )
            net = load_model(path, scale=(trained_scales(info) or [4])[0])
    else:
        keys = load_checkpoint(path).keys()
        if MODEL_KEY in keys:
            net, _ = read_training_checkpoint(path)
        elif WARPNET_KEY in keys:
            (flow_net, warpnet), kind = load_stage2(path), "stage2"
        else:
            flow_net, warpnet, kind = load_flow_net(path), None, "stage1"
    if net is not None:
        flow_net, warpnet, kind = getattr(net, "flow_net", None), getattr(net, "warpnet", None), "full"
        if flow_net is None:
            raise InputError(f"{path}: {type(net).__name__} has no flow network")
        iters = iters or net.flow_iters
    return AlignmentStages(
        flow_net.float(), None if warpnet is None else warpnet.float(), int(iters or flow_net.iters), kind
    )
