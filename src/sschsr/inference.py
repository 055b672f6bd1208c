"""Inference shared by ``sschsr-predict`` and ``sschsr-eval``: load a trained model, prepare a user's
inputs the way training prepared them, and run the network on scenes of any size in tiles.

    >>> from sschsr.inference import load_model, prepare_inputs, predict_tiled  # doctest: +SKIP
    >>> net = load_model("outputs/full/runs/<run>/checkpoints/last.ckpt", scale=4, n_bands=31)  # doctest: +SKIP
    >>> lr_up, ref_hr, rgb_hsi = prepare_inputs(lr, ref, 4, wavelengths)  # doctest: +SKIP
    >>> sr = predict_tiled(net, lr_up, ref_hr, rgb_hsi, tile=512)["sr"]  # doctest: +SKIP

Model files. A network is described by a *spec*: ``{"_target_": "sschsr.models....Class", **constructor
arguments}``, nested for networks built from networks (SSCHSR holds its flow network and WarpNet), made by
:func:`module_spec` from the built network and rebuilt by :func:`build_module` (only classes of the
``sschsr`` package: a checkpoint cannot name arbitrary code to run). The spec, the scale the model was
trained for, its band count and the camera response ``rgb_hsi`` was rendered with form the *model info*:

- in a Lightning ``.ckpt`` of :class:`sschsr.lit.sr.SRModule`, under :data:`MODEL_KEY` (written by the
  module at every save), with the weights under ``net.``;
- in a ``.safetensors`` file's own metadata, under :data:`MODEL_KEY` as JSON (written by
  :func:`save_model` / :func:`export_weights`), rebuilt without Hydra. A JSON sidecar of the same stem
  (``m.safetensors`` + ``m.json``) is read for files whose metadata lacks it. Children of the network may
  be stored as *parts*, files of their own beside it named by a hash of their weights
  (``flow_net-<hash>.safetensors``), listed with that hash in the model info and checked at load: models
  that share a part share its file.

Weights may be stored in float16 (:func:`export_weights` does: half the size); :func:`load_model` always
returns a float32 network on the CPU. The weights the package ships live in
``src/sschsr/weights/sschsr_x{s}.safetensors`` (31 bands, x4 and x8) with their parts (a flow network and a
WarpNet each), made from trained checkpoints by ``experiments/export_weights.py``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sschsr.data.degradations import Psf
from sschsr.data.degradations import grid_phase as _grid_phase
from sschsr.data.degrade import content_shift, lr_grid_shift, upsample
from sschsr.data.spectral import camera_srf, render
from sschsr.errors import InputError
from sschsr.ops.back_projection import CORRECTION_STD

log = logging.getLogger(__name__)

MODEL_KEY = "sschsr_model"  # where the model info lives in a .ckpt (and the sidecar's layout)
PART_KEY = "sschsr_part"  # in a part file's metadata: which child of the model it holds
SUPPORTED_SCALES = (4, 8, 16)  # the paper's factors; the degradation model is only defined for these
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
ASPECT_TOLERANCE = 0.02  # relative difference of height/width ratios between reference and HSI
DEFAULT_CAMERA = "cie1931"  # conf/data/*.yaml: camera
FP16_MAX = 65504.0  # the largest finite float16: tensors beyond it are stored in float32


# --------------------------------------------------------------------------------------------------
# Network specs: rebuild a network from plain values


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


# --------------------------------------------------------------------------------------------------
# Loading and saving


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


def _to_float32(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Floating-point tensors (float16 / bfloat16 storage) as float32; others unchanged."""
    return {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()
    }


def _read_lightning(path: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    # SRModule checkpoints hold only tensors and plain values, so the safe loader reads them
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, not a torch file at all
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise InputError(f"{path}: not a Lightning checkpoint (no 'state_dict')")
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
        except json.JSONDecodeError as e:
            raise InputError(f"{source}: cannot read the model description ({e})") from None
    elif sidecar.is_file():
        source = str(sidecar)
        try:
            info = json.loads(sidecar.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{sidecar}: cannot read the model description ({e})") from None
    else:
        raise InputError(
            f"{path}: no model description (no {MODEL_KEY!r} metadata, no {sidecar.name} beside it): "
            "not a sschsr model file"
        )
    if not isinstance(info, dict) or "net" not in info:
        raise InputError(f"{source}: not a sschsr model description (no 'net')")
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
    try:
        state = load_file(str(part), device="cpu")
    except Exception as e:
        raise InputError(f"{part}: not a readable .safetensors file ({type(e).__name__}: {e})") from None
    if state_sha256(state) != entry.get("sha256"):
        raise InputError(f"{part}: not the weights {path.name} was written with (their SHA-256 differs)")
    return state


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


# the self-ensemble of sschsr-predict and sschsr-eval (eight passes; docs/measured.md for its gain)
DEFAULT_TTA = 8


def with_tta(net: nn.Module, scale: int, tta: int = DEFAULT_TTA) -> nn.Module:
    """``net`` run on ``tta`` (1, 2 or 8) flips/transpositions of its inputs, outputs mapped back and
    averaged (:class:`sschsr.models.ensemble.SelfEnsemble`, corrected for the content shift of ``lr_up``
    at ``scale``). ``tta=1`` and networks without weights (bicubic, whose ensemble would only change its
    borders) are returned as they are.

    Raises:
        InputError: ``tta`` not 1, 2 or 8.
    """
    from sschsr.models.ensemble import TRANSFORMS, SelfEnsemble

    if tta not in TRANSFORMS:
        raise InputError(f"tta must be one of {sorted(TRANSFORMS)}; got {tta}")
    if tta == 1 or next(net.parameters(), None) is None:
        return net
    return SelfEnsemble(net, tta, content_shift(scale))


DEFAULT_FLOW_REFINE = 150  # steps of the flow's test-time refinement in sschsr-predict and sschsr-eval


def check_steps(steps: int, given: str | None = None) -> None:
    """Raise :class:`InputError` unless ``steps`` (of the flow refinement, of back-projection) is a count
    (>= 0); the message starts with ``given``, how the user wrote it (e.g. ``--flow-refine -1``)."""
    if steps < 0:
        raise InputError(f"{given or f'steps {steps}'}: the number of steps must be >= 0")


def grid_phase(scale: int, lr_grid: str) -> float:
    """:func:`sschsr.data.degradations.grid_phase`, an unknown grid an :class:`InputError`."""
    try:
        return _grid_phase(scale, lr_grid)
    except ValueError as e:
        raise InputError(str(e)) from None


PSF_CHOICES = "auto | auto-reference | paper | block | SIGMA | FILE.json"


def parse_psf(text: str | None, scale: int) -> Psf | str | None:
    """The PSF a user states (``--psf``): ``auto`` (estimated from the data: by the flow refinement from
    the reference, by back-projection from the network's output), ``auto-reference`` (back-projection
    takes the refinement's estimate), ``paper`` (the paper's
    kernel; None), ``block`` (block means at ``scale``), a number (a Gaussian of that std, HR px), or a
    JSON file of :class:`~sschsr.data.degradations.Psf` fields (``{"sigma": 2.5, "area": 8}``).

    Raises:
        InputError: anything else, or a file that does not hold PSF fields.
    """
    if text is None or text == "paper":
        return None
    if text in ("auto", "auto-reference"):
        return text
    if text == "block":
        return Psf(sigma=0.0, area=float(scale))
    try:
        return Psf(sigma=float(text))
    except ValueError:
        pass
    path = Path(text)
    if not path.is_file():
        raise InputError(f"--psf {text}: expected {PSF_CHOICES} (no such file)")
    try:
        fields = json.loads(path.read_text())
        psf = Psf(**{k: float(v) for k, v in fields.items() if k in ("sigma", "sigma_y", "area")})
        if set(fields) - {"sigma", "sigma_y", "area"}:
            raise ValueError(f"unknown fields {sorted(set(fields) - {'sigma', 'sigma_y', 'area'})}")
    except (ValueError, TypeError, AttributeError) as e:
        raise InputError(
            f'--psf {text}: not a PSF file ({e}); expected JSON like {{"sigma": 2.5, "area": 8}}'
        ) from None
    return psf


def with_flow_refinement(
    net: nn.Module,
    scale: int,
    iters: int = DEFAULT_FLOW_REFINE,
    settings: dict[str, object] | None = None,
    psf: Psf | str | None = None,
    lr_grid: str = "paper",
) -> nn.Module:
    """``net`` with its flow refined at test time by ``iters`` steps of
    :class:`sschsr.ops.flow_refine.FlowRefiner` for LR data degraded at ``scale`` (0: the flow network's
    flow as it is), its other fields from ``settings`` where given (:meth:`FlowRefiner.from_settings`; the
    defaults otherwise). Sets ``net.flow_refiner`` on a network that estimates a flow and returns ``net``;
    networks without one (bicubic, single-image) are returned untouched. Apply it to the loaded network,
    before :func:`with_tta` and :func:`on_lr_grid` (which present the data as the refinement expects).
    ``psf``: the LR data's PSF (:func:`parse_psf`; None: the paper's, ``"auto"``: estimated per image) on
    the grid ``lr_grid`` (:class:`~sschsr.ops.flow_refine.FlowRefiner`'s ``psf`` and ``phase``).

    Raises:
        InputError: ``iters`` negative.
    """
    from sschsr.ops.flow_refine import refiner_for

    check_steps(iters)
    if getattr(net, "flow_net", None) is not None and hasattr(net, "flow_refiner"):
        refiner = refiner_for(scale, iters, settings)
        if refiner is not None and psf is not None:
            told = "auto" if psf == "auto-reference" else psf  # the refinement estimates from the reference
            refiner = dataclasses.replace(refiner, psf=told, phase=grid_phase(scale, lr_grid))
        net.flow_refiner = refiner
    return net


def check_flow_factor(factor: int, given: str | None = None) -> None:
    """Raise :class:`InputError` unless ``factor`` (the flow's shrink factor) is at least 1; the message
    starts with ``given``, how the user wrote it (e.g. ``--flow-factor 0``)."""
    if factor < 1:
        raise InputError(f"{given or f'flow factor {factor}'}: the flow's shrink factor must be >= 1")


def with_coarse_flow(net: nn.Module, scale: int, factor: int | None = None) -> nn.Module:
    """``net`` with its flow network run at test time on the pair shrunk by ``factor``
    (:class:`sschsr.ops.coarse_flow.CoarseFlow`, corrected for the content shift of ``rgb_hsi`` at
    ``scale``; None: :func:`~sschsr.ops.coarse_flow.auto_factor` of each pair, the default of
    ``sschsr-predict`` and ``sschsr-eval``; 1: the pair as it is). Sets ``net.coarse_flow`` on a network that
    estimates a flow and returns ``net``; networks without one are returned untouched. Apply it to the loaded
    network, before :func:`with_tta`.

    Raises:
        InputError: ``factor`` below 1.
    """
    from sschsr.ops.coarse_flow import CoarseFlow

    if factor is not None:
        check_flow_factor(factor)
    if getattr(net, "flow_net", None) is not None and hasattr(net, "coarse_flow"):
        net.coarse_flow = None if factor == 1 else CoarseFlow(factor, content_shift(scale))
    return net


# conjugate-gradient steps of back-projection in sschsr-predict and sschsr-eval unless told otherwise, at
# every scale: the correction is damped by the noise it estimates in the LR data
# (sschsr.ops.back_projection.back_project; docs/usage.md, "Back-projection")
BACK_PROJECT_STEPS = 20


def with_back_projection(
    net: nn.Module,
    scale: int,
    iters: int,
    correction_std: float | None = CORRECTION_STD,
    psf: Psf | str | None = None,
    lr_grid: str = "paper",
) -> nn.Module:
    """``net`` with its ``sr`` back-projected onto its LR input by ``iters`` steps
    (:func:`sschsr.ops.back_projection.back_project` for LR data degraded at ``scale``;
    :class:`~sschsr.models.ensemble.BackProjected`); ``net`` itself for 0 and for networks without weights
    (bicubic stays bicubic, as in :func:`with_tta`). Apply it outside :func:`with_tta`
    (once, on the ensemble's mean) and inside :func:`on_lr_grid` (which presents the data as the degradation
    model expects). ``correction_std``: as ``back_project``'s (None: the exact fit, not told the noise).
    ``psf``: the LR data's PSF on the grid ``lr_grid`` (:func:`parse_psf`; None: the paper's; ``"auto"``:
    estimated per image from the network's output, :class:`~sschsr.models.ensemble.BackProjected`).

    Raises:
        InputError: ``iters`` negative.
    """
    from sschsr.models.ensemble import BackProjected

    check_steps(iters)
    return (
        BackProjected(net, scale, iters, correction_std, psf, grid_phase(scale, lr_grid))
        if iters and next(net.parameters(), None) is not None
        else net
    )


def on_lr_grid(net: nn.Module, scale: int, lr_grid: str = "paper") -> nn.Module:
    """``net`` (trained on the paper's degradation, as every network here) for LR data of ``lr_grid``
    (:data:`sschsr.data.degrade.LR_GRIDS`): ``lr_up`` and ``rgb_hsi`` moved by the difference of the two
    conventions' :func:`~sschsr.data.degrade.lr_grid_shift` (:class:`~sschsr.models.ensemble.ShiftedInputs`,
    3 px at x8 for ``block`` data); ``net`` itself for ``paper`` data. Apply it outside :func:`with_tta` and
    :func:`with_back_projection`.

    Raises:
        InputError: an unknown ``lr_grid``.
    """
    from sschsr.models.ensemble import ShiftedInputs

    try:
        shift = lr_grid_shift(scale, "paper") - lr_grid_shift(scale, lr_grid)
    except ValueError as e:  # an unknown grid: the user's input
        raise InputError(str(e)) from None
    return net if shift == 0 else ShiftedInputs(net, shift)


def load_model(ckpt: str | os.PathLike | None, scale: int, n_bands: int | None = None) -> nn.Module:
    """A trained network in eval mode on the CPU, checked against the scale and band count asked for.

    Args:
        ckpt: a Lightning ``.ckpt`` of the full model (:class:`sschsr.lit.sr.SRModule`), a ``.safetensors``
            of :func:`save_model` / :func:`export_weights` (float32 or float16), or None for the shipped
            weights of ``scale``.
        scale: the super-resolution factor the caller needs.
        n_bands: the band count of the caller's data (None: no check).

    Returns:
        the float32 network (``forward(lr_up, ref, rgb_hsi) -> dict(sr=...)``) on the CPU in eval mode,
        with the model info as its ``info`` attribute (``net``, ``scale``, ``n_bands``, ``camera``) and
        the file it came from as ``info["path"]``.

    Raises:
        InputError: no such file, not a model file, no shipped weights for ``scale``, a scale or band count
            the model does not take, weights that do not fit the description.
    """
    if ckpt is None:
        check_scale(scale)
        path = shipped_weights(scale)
        if not path.is_file():
            raise InputError(missing_weights_message(scale))
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
    net = build_module(info["net"])
    try:
        net.load_state_dict(_to_float32(state))
    except RuntimeError as e:
        raise InputError(
            f"{path}: weights do not fit the network it describes: {str(e).splitlines()[0]}"
        ) from None
    return net.float().eval()


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
    from sschsr import __version__

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
            (:func:`sschsr.lit.sr.load_earlier_stages`), e.g. a flow network fine-tuned after the SR branch.

    Raises:
        InputError: the checkpoint is missing, not a full-model checkpoint, or trained for another scale;
            a ``flow_ckpt`` that does not fit.

    Example:
        >>> export_weights("outputs/full/runs/<run>/checkpoints/last.ckpt",
        ...                "src/sschsr/weights/sschsr_x4.safetensors", scale=4)  # doctest: +SKIP
    """
    net, info = read_training_checkpoint(ckpt)
    if flow_ckpt is not None:
        from sschsr.lit.sr import load_earlier_stages

        load_earlier_stages(net, str(flow_ckpt))
    scales = trained_scales(info) or [scale or 4]
    scale = scales[0] if scale is None else int(scale)
    check_scale(scale, info, source=str(ckpt))
    meta = {"source_checkpoint": Path(ckpt).name, **(metadata or {})}
    if flow_ckpt is not None:
        meta["source_flow_checkpoint"] = Path(flow_ckpt).name
    camera = info.get("camera", DEFAULT_CAMERA)
    return save_model(net, out, scale=scale, camera=camera, dtype=dtype, metadata=meta, parts=parts)


# --------------------------------------------------------------------------------------------------
# Inputs


def check_reference(ref_hw: tuple[int, int], lr_hw: tuple[int, int], name: str = "the reference") -> None:
    """InputError when the reference is smaller than the LR grid or of another aspect ratio (2 %)."""
    (rh, rw), (h, w) = ref_hw, lr_hw
    if rh < h or rw < w:
        raise InputError(
            f"{name} is {rh}x{rw} pixels, smaller than the LR HSI ({h}x{w}): it must be at least as large"
        )
    ratio_ref, ratio_hsi = rh / rw, h / w
    if abs(ratio_ref / ratio_hsi - 1) > ASPECT_TOLERANCE:
        raise InputError(
            f"{name} has aspect ratio {rh}x{rw} ({rw / rh:.3f}:1) but the LR HSI {h}x{w} ({w / h:.3f}:1): "
            "crop the reference to the HSI's field of view"
        )


def resample(img: Tensor, size: tuple[int, int]) -> Tensor:
    """``(C, H', W')`` to ``(C, *size)``: antialiased bilinear when shrinking, bicubic when enlarging,
    clamped to [0, 1]; returned as is when the size already fits."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img.float()
    shrink = img.shape[-2] > size[0] or img.shape[-1] > size[1]
    mode = "bilinear" if shrink else "bicubic"
    out = F.interpolate(img[None].float(), size=size, mode=mode, align_corners=False, antialias=shrink)
    return out[0].clamp(0, 1)


def prepare_inputs(
    lr: Tensor,
    ref: Tensor,
    scale: int,
    wavelengths: np.ndarray | None = None,
    camera: str = DEFAULT_CAMERA,
) -> tuple[Tensor, Tensor, Tensor]:
    """The network's three inputs from an LR HSI and a photo, as the data pipeline made them in training.

    ``lr_up`` = bicubic(``lr``); ``ref`` resampled to the HR grid ``(s*h, s*w)``; ``rgb_hsi`` = ``lr_up``
    rendered through the camera response of ``wavelengths``, histogram-matched to ``ref`` per channel.

    Args:
        lr: ``(C, h, w)`` float32, normalised (nominally [0, 1]).
        ref: ``(3, H', W')`` float32 in [0, 1], at least ``h x w`` with the HSI's aspect ratio (2 %).
        scale: the factor ``s``.
        wavelengths: ``(C,)`` band centres in nm; None: evenly over 400-700 nm.
        camera: the camera response the model was trained with (``info["camera"]``).

    Returns:
        ``lr_up (C, H, W)``, ``ref (3, H, W)``, ``rgb_hsi (3, H, W)``, float32 on the CPU.

    Raises:
        InputError: reference too small or of another aspect ratio; wavelengths that do not fit.
    """
    from sschsr.data.datasets import fast_match_histograms
    from sschsr.data.spectral import default_wavelengths

    if lr.ndim != 3 or ref.ndim != 3 or ref.shape[0] != 3:
        raise ValueError(
            f"prepare_inputs expects lr (C, h, w) and ref (3, H, W); got {tuple(lr.shape)}, {tuple(ref.shape)}"
        )
    c, h, w = lr.shape
    check_reference(tuple(ref.shape[-2:]), (h, w))
    wl = default_wavelengths(c) if wavelengths is None else np.asarray(wavelengths, dtype=np.float64)
    if wl.shape != (c,):
        raise InputError(f"{len(wl)} wavelengths for an HSI of {c} bands")
    size = (h * scale, w * scale)
    lr_up = upsample(lr[None].float(), scale)[0]
    ref_hr = resample(ref, size)
    rgb = render(lr_up, camera_srf(wl, camera))
    rgb_hsi = fast_match_histograms(rgb, ref_hr).clamp(0, 1)
    return lr_up.contiguous(), ref_hr.contiguous(), rgb_hsi.contiguous()


# --------------------------------------------------------------------------------------------------
# Running


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: every ``tile - overlap`` pixels, the last one flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _ramp(n: int, start: int, end: int, length: int, overlap: int) -> Tensor:
    """Blending weights of a tile along one axis: a raised-cosine rise over ``overlap`` pixels at each side
    that touches another tile, 1 elsewhere (and at the scene's own borders). Always > 0."""
    w = torch.ones(n)
    k = min(overlap, n)
    if k > 0:
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(k) + 0.5) / k)
        if start > 0:
            w[:k] = torch.minimum(w[:k], rise)
        if end < length:
            w[-k:] = torch.minimum(w[-k:], rise.flip(0))
    return w


def default_overlap(tile: int) -> int:
    """Overlap between tiles: a quarter of the tile, at most 32 HR pixels (wider than the fusion's 3x3
    convolutions and attention windows reach at the finest level, and than typical residual flows)."""
    return max(0, min(32, tile // 4))


def predict_tiled(
    model: nn.Module,
    lr_up: Tensor,
    ref: Tensor,
    rgb_hsi: Tensor,
    tile: int | None = None,
    overlap: int | None = None,
    device: str | torch.device = "cpu",
    keys: Iterable[str] = ("sr",),
) -> dict[str, Tensor]:
    """Run ``model`` on a whole scene, in one pass or in overlapping tiles blended smoothly.

    Tiles of ``tile x tile`` HR pixels, ``overlap`` pixels shared with each neighbour, are sent to
    ``device`` one at a time; their outputs are weighted by a raised-cosine window (1 inside, falling to 0
    across the overlap, 1 at the scene's borders) and averaged on the CPU. Device memory is bounded by the
    tile; the CPU holds the inputs and the outputs of the whole scene. A tile sees only its own part of the
    reference: motion larger than the overlap is matched less well near tile borders.

    Args:
        model: ``model(lr_up, ref, rgb_hsi) -> dict`` with at least ``sr``.
        lr_up: ``(C, H, W)``; ref, rgb_hsi: ``(3, H, W)`` (a leading batch dimension of 1 is accepted).
        tile: tile side in HR pixels; None: the whole scene at once.
        overlap: pixels shared by neighbouring tiles (default :func:`default_overlap`).
        device: where the model runs (it is moved there).
        keys: the outputs to return, those the model produces (``sr``, ``flow``, ``ref_warp0``, ``ref_warp``).

    Returns:
        ``{key: (K, H, W) float32 CPU tensor}`` for each requested key the model returned.
    """
    lr_up, ref, rgb_hsi = (t[0] if t.ndim == 4 else t for t in (lr_up, ref, rgb_hsi))
    _, h, w = lr_up.shape
    device = torch.device(device)
    model = model.to(device).eval()
    keys = tuple(keys)
    if tile is not None and tile < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    if tile is None or (tile >= h and tile >= w):
        with torch.inference_mode():
            out = model(lr_up[None].to(device), ref[None].to(device), rgb_hsi[None].to(device))
        return {k: out[k][0].float().cpu() for k in keys if k in out}

    overlap = default_overlap(tile) if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    acc: dict[str, Tensor] = {}
    weight = torch.zeros(1, h, w)
    for y0 in _starts(h, tile, overlap):
        for x0 in _starts(w, tile, overlap):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            crop = (slice(None), slice(y0, y1), slice(x0, x1))
            with torch.inference_mode():
                out = model(*(t[crop][None].to(device) for t in (lr_up, ref, rgb_hsi)))
            win = _ramp(y1 - y0, y0, y1, h, overlap)[:, None] * _ramp(x1 - x0, x0, x1, w, overlap)[None, :]
            for k in keys:
                if k not in out:
                    continue
                pred = out[k][0].float().cpu()
                if k not in acc:
                    acc[k] = torch.zeros(pred.shape[0], h, w)
                acc[k][crop] += pred * win
            weight[0, y0:y1, x0:x1] += win
    return {k: v / weight for k, v in acc.items()}


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; ``"cuda"`` when none is available: InputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(device)
