"""Network specs: a network described by plain values (``{"_target_": class path, **arguments}``), rebuilt
only from classes of the ``sschsr`` package, and the *model info* a weights file carries (spec, scale, band
count, camera)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import torch
from torch import nn

from sschsr.errors import InputError

MODEL_KEY = "sschsr_model"  # where the model info lives in a .ckpt (and the sidecar's layout)


PART_KEY = "sschsr_part"  # in a part file's metadata: which child of the model it holds


SUPPORTED_SCALES = (4, 8, 16)  # the paper's factors; the degradation model is only defined for these


DEFAULT_CAMERA = "cie1931"  # conf/data/*.yaml: camera


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
    if not isinstance(target, str) or not target.startswith("sschsr."):
        raise InputError(f"model description names {target!r}: only networks of the sschsr package are built")
    module_name, _, qualname = target.rpartition(".")
    obj: Any = None
    while module_name:  # the longest importable prefix is the module, the rest the (nested) class name
        try:
            obj = importlib.import_module(module_name)
            break
        except ModuleNotFoundError:
            module_name, _, outer = module_name.rpartition(".")
            qualname = f"{outer}.{qualname}"
    try:
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        obj = None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise InputError(
            f"model description names {target!r}, which is not a network of this version of sschsr"
        )
    return obj


def build_module(spec: dict[str, Any]) -> nn.Module:
    """Build the network a :func:`module_spec` describes (weights freshly initialised).

    Raises:
        InputError: the spec names something other than a network of the ``sschsr`` package, or its
            arguments do not fit the class (a model file from another version).
    """
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise InputError(f"not a network description: {spec!r}")

    def value(v: Any) -> Any:
        if isinstance(v, dict) and "_target_" in v:
            return build_module(v)
        return [value(x) for x in v] if isinstance(v, list) else v

    cls = _resolve(spec["_target_"])
    kwargs = {k: value(v) for k, v in spec.items() if k != "_target_"}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise InputError(f"cannot build {cls.__name__}({kwargs}): {e}") from None


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
