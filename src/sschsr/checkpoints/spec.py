"""Network specs: a network described by plain values (``{"_target_": class path, **arguments}``), rebuilt
only from classes of the ``sschsr`` package, and the *model info* a weights file carries (spec, scale, band
count, camera)."""

from __future__ import annotations

import inspect
import math
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from sschsr.errors import InputError
from sschsr.models.baselines import Bicubic, SingleImageSR
from sschsr.models.flow.raft import RAFT
from sschsr.models.sschsr import SSCHSR
from sschsr.models.warpnet import WarpNet

MODEL_KEY = "sschsr_model"  # where the model info lives in a .ckpt (and the sidecar's layout)


PART_KEY = "sschsr_part"  # in a part file's metadata: which child of the model it holds


SUPPORTED_SCALES = (4, 8, 16)  # the paper's factors; the degradation model is only defined for these


DEFAULT_CAMERA = "cie1931"  # conf/data/*.yaml: camera

# What a model file may ask for (its metadata is data from anywhere: nothing in it is followed further).
# The networks a model file may describe, by exact name: nothing else is built (no attribute walking).
NETWORKS: dict[str, type[nn.Module]] = {
    f"{cls.__module__}.{cls.__qualname__}": cls for cls in (SSCHSR, RAFT, WarpNet, Bicubic, SingleImageSR)
}
CAMERAS = ("cie1931", "gaussian")  # the package's own camera responses (sschsr.data.spectral), by name
MAX_BANDS = 1024  # more than any imaging spectrometer's band count
MAX_PARAMETERS = 200_000_000  # parameters and buffers of the network a file may ask for (the shipped: ~2 M)
MAX_SPEC_INT = 1 << 16  # any whole number among a network's arguments (channels, iterations, radii)
MAX_SPEC_DEPTH = 8  # networks within networks
MAX_PARTS = 8


def _plain(value: Any) -> Any:
    """A constructor argument as JSON-compatible values (networks as nested specs)."""
    if isinstance(value, nn.Module):
        return module_spec(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"constructor argument of type {type(value).__name__} cannot be recorded")


def module_spec(module: nn.Module) -> dict[str, Any]:
    """``{"_target_": "module.Class", **constructor arguments}`` that rebuilds ``module``'s architecture.

    Each argument of the class's ``__init__`` is read from ``module.config`` (a dict, as the networks of
    this package provide) or else from the attribute of the same name; arguments found in neither keep
    their defaults. Networks passed as arguments (SSCHSR's ``flow_net``, ``warpnet``) become nested specs.

    Raises:
        TypeError: a required argument cannot be found, or a value is not a plain value or a network.
    """
    cls = type(module)
    config = getattr(module, "config", None)
    config = config if isinstance(config, dict) else {}
    spec: dict[str, Any] = {"_target_": f"{cls.__module__}.{cls.__qualname__}"}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if name in config:
            value = config[name]
        elif hasattr(module, name):
            value = getattr(module, name)
        elif p.default is not p.empty:
            continue
        else:
            raise TypeError(f"{cls.__name__}: cannot record the constructor argument {name!r}")
        spec[name] = _plain(value)
    return spec


def _resolve(target: str) -> type:
    """The network class named ``target``, looked up by exact name in :data:`NETWORKS`."""
    if not isinstance(target, str) or not target.startswith("sschsr."):
        raise InputError(f"model description names {target!r}: only networks of the sschsr package are built")
    cls = NETWORKS.get(target)
    if cls is None:
        raise InputError(
            f"model description names {target[:200]!r}, which is not a network of this version of sschsr "
            f"(one of: {', '.join(sorted(NETWORKS))})"
        )
    return cls


def _check_value(value: Any, where: str) -> None:
    """InputError unless ``value`` is a plain argument: a bounded whole number, a finite float, a short
    string, None, or a list / dict of those (networks: nested specs, checked by :func:`check_arguments`)."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SPEC_INT:
            raise InputError(f"{where} = {value}: out of range (at most {MAX_SPEC_INT} in size)")
        return
    if isinstance(value, float):
        if not math.isfinite(value) or abs(value) > MAX_SPEC_INT:
            raise InputError(f"{where} = {value}: out of range")
        return
    if isinstance(value, str):
        if len(value) > 200:
            raise InputError(f"{where}: a string of {len(value)} characters")
        return
    if isinstance(value, list):
        if len(value) > 64:
            raise InputError(f"{where}: a list of {len(value)} entries")
        for i, v in enumerate(value):
            _check_value(v, f"{where}[{i}]")
        return
    if isinstance(value, dict) and "_target_" not in value:
        if len(value) > 64:
            raise InputError(f"{where}: a mapping of {len(value)} entries")
        for k, v in value.items():
            if not isinstance(k, str):
                raise InputError(f"{where}: key {k!r} is not a name")
            _check_value(v, f"{where}.{k}")
        return
    raise InputError(f"{where}: {type(value).__name__} is not a plain argument")


def check_arguments(cls: type, kwargs: Any, where: str) -> None:
    """InputError unless ``kwargs`` are plain arguments (:func:`_check_value`) that ``cls.__init__`` names."""
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: the arguments of {cls.__name__} are not a mapping")
    params = inspect.signature(cls.__init__).parameters
    open_ended = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for k, v in kwargs.items():
        if not isinstance(k, str) or not k.isidentifier() or k == "self":
            raise InputError(f"{where}: {k!r} is not an argument name")
        if k not in params and not open_ended:
            raise InputError(
                f"{where}: {cls.__name__} takes no argument {k!r} (a model file of another version?)"
            )
        if not (isinstance(v, dict) and "_target_" in v):
            _check_value(v, f"{where}.{k}")


def _build(spec: Any, depth: int = 0) -> nn.Module:
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise InputError(f"not a network description: {str(spec)[:200]}")
    if depth > MAX_SPEC_DEPTH:
        raise InputError(f"network description nested more than {MAX_SPEC_DEPTH} deep")
    cls = _resolve(spec["_target_"])
    kwargs = {k: v for k, v in spec.items() if k != "_target_"}
    check_arguments(cls, kwargs, cls.__name__)

    def value(v: Any) -> Any:
        if isinstance(v, dict) and "_target_" in v:
            return _build(v, depth + 1)
        return [value(x) for x in v] if isinstance(v, list) else v

    built = {k: value(v) for k, v in kwargs.items()}
    try:
        return cls(**built)
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise InputError(f"cannot build {cls.__name__}({str(kwargs)[:300]}): {e}") from None


def count_parameters(module: nn.Module) -> int:
    """Parameters and buffers, in elements."""
    return sum(t.numel() for t in (*module.parameters(), *module.buffers()))


def check_network_size(build: Any, what: str, limit: int = MAX_PARAMETERS) -> None:
    """InputError when the network ``build()`` makes holds more than ``limit`` parameters and buffers.
    Built on the meta device: no memory, no initialisation cost."""
    with torch.device("meta"):
        n = count_parameters(build())
    if n > limit:
        raise InputError(
            f"{what} asks for a network of {n:,} parameters, more than the {limit:,} this version builds"
        )


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Build the network a :func:`module_spec` describes (weights freshly initialised).

    Only the classes of :data:`NETWORKS` are built, by exact name; their arguments must be plain values
    the class takes, whole numbers within :data:`MAX_SPEC_INT`; the network at most
    :data:`MAX_PARAMETERS` large (measured on the meta device before anything is allocated).

    Raises:
        InputError: the spec names something other than a network of the ``sschsr`` package, or its
            arguments do not fit the class (a model file from another version), or it is too large.
    """
    if torch.empty(0).device.type != "meta":  # on the meta device already (spec_matches): nothing to bound
        check_network_size(lambda: _build(spec), "the model description")
    return _build(spec)


def spec_matches(module: nn.Module, spec: dict[str, Any]) -> bool:
    """Whether :func:`build_module` of ``spec`` has ``module``'s parameters and buffers (names and shapes).

    Built on the meta device: no memory, no initialisation cost.
    """
    try:
        with torch.device("meta"):
            rebuilt = build_module(spec)
    except Exception:  # any failure to rebuild means the spec is not usable
        return False
    mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    return mine == theirs


def model_info(net: nn.Module, scale: int, camera: str = DEFAULT_CAMERA) -> dict[str, Any]:
    """The model info stored with weights: spec, trained scale, band count (None: any), camera."""
    spec = module_spec(net)
    n_bands = getattr(net, "n_bands", None)
    return {
        "net": spec,
        "scale": int(scale),
        "n_bands": None if n_bands is None else int(n_bands),
        "camera": camera,
    }


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _whole(value: Any, key: str, source: str) -> int:
    """``value`` as a whole number (JSON numbers; an integral float too), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InputError(f"{source}: {key} = {repr(value)[:50]} is not a whole number")
    return int(value)


def check_model_info(info: Any, source: str) -> dict[str, Any]:
    """Validate the model info read from a file (``source`` in messages) before anything in it is used.

    ``net``: a spec (built only by :func:`build_module`); ``scale`` / ``scales``: of
    :data:`SUPPORTED_SCALES`; ``n_bands``: None or 1 to :data:`MAX_BANDS`; ``camera``: a name of
    :data:`CAMERAS` (never a path); ``parts``: at most :data:`MAX_PARTS`, each a child name with a plain
    ``.safetensors`` file name and a SHA-256.

    Returns:
        ``info`` with the numbers as ints.

    Raises:
        InputError: one line naming the entry and what is wrong with it.
    """
    if not isinstance(info, dict):
        raise InputError(f"{source}: the model description is not a mapping")
    if "net" not in info:
        raise InputError(f"{source}: not a sschsr model description (no 'net')")
    if not isinstance(info["net"], dict) or "_target_" not in info["net"]:
        raise InputError(f"{source}: its 'net' is not a network description")
    out = dict(info)
    scales = []
    for key in ("scale", "scales"):
        if info.get(key) is None:
            continue
        values = info[key] if key == "scales" else [info[key]]
        if not isinstance(values, list) or not values or len(values) > len(SUPPORTED_SCALES):
            raise InputError(f"{source}: {key} = {repr(info[key])[:50]} is not a list of scales")
        values = [_whole(v, key, source) for v in values]
        bad = [v for v in values if v not in SUPPORTED_SCALES]
        if bad:
            raise InputError(
                f"{source}: {key} = {bad[0]} is not a supported scale "
                f"({', '.join(map(str, SUPPORTED_SCALES))})"
            )
        out[key] = values if key == "scales" else values[0]
        scales += values
    if info.get("n_bands") is not None:
        n_bands = _whole(info["n_bands"], "n_bands", source)
        if not 1 <= n_bands <= MAX_BANDS:
            raise InputError(f"{source}: n_bands = {n_bands} is not a band count (1 to {MAX_BANDS})")
        out["n_bands"] = n_bands
    camera = info.get("camera", DEFAULT_CAMERA)
    if camera is not None and camera not in CAMERAS:
        raise InputError(
            f"{source}: camera = {str(camera)[:80]!r} is not one of the package's cameras "
            f"({', '.join(CAMERAS)})"
        )
    parts = info.get("parts")
    if parts is not None:
        if not isinstance(parts, dict) or len(parts) > MAX_PARTS:
            raise InputError(f"{source}: 'parts' is not a mapping of at most {MAX_PARTS} parts")
        for name, entry in parts.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise InputError(f"{source}: part name {str(name)[:50]!r} is not a child's name")
            file = entry.get("file") if isinstance(entry, dict) else None
            if (
                not isinstance(file, str)
                or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,200}\.safetensors", file)
                or ".." in file
            ):
                raise InputError(
                    f"{source}: its part {name!r} names {str(file)[:80]!r}, not a file beside it (a plain .safetensors name)"
                )
            if not isinstance(entry.get("sha256"), str) or not _SHA256.fullmatch(entry["sha256"]):
                raise InputError(f"{source}: its part {name!r} has no SHA-256 of its weights")
    return out


def trained_scales(info: dict[str, Any]) -> list[int] | None:
    """The scales a model was trained for (None: any, e.g. bicubic)."""
    scales = info.get("scales", info.get("scale"))
    if scales is None:
        return None
    return [int(s) for s in (scales if isinstance(scales, list) else [scales])]


def check_scale(scale: int, info: dict[str, Any] | None = None, source: str = "the model") -> None:
    """InputError unless ``scale`` is one of 4, 8, 16 and one the model was trained for."""
    if scale not in SUPPORTED_SCALES:
        raise InputError(
            f"unsupported scale x{scale}: expected one of {', '.join(map(str, SUPPORTED_SCALES))}"
        )
    scales = trained_scales(info or {})
    if scales is not None and scale not in scales:
        trained = ", ".join(f"x{s}" for s in scales)
        raise InputError(
            f"{source} was trained for {trained}, not x{scale}: pass --scale {scales[0]} or a model trained for x{scale}"
        )
