"""The configuration of ``sschsr-train`` and ``sschsr-eval`` checked before anything is built: each bad value
an :class:`~sschsr.errors.InputError` naming the key (as the override that sets it) and what to pass.

The checks read only plain values: a value that needs a run to resolve (``${hydra:...}``) is left to the run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sschsr.checkpoints import MAX_BANDS, SHIPPED_NAMES, SUPPORTED_SCALES, load_checkpoint
from sschsr.cli._common import CONF_DIR
from sschsr.errors import InputError
from sschsr.pipeline import TestTime

MIN_TILE = 16  # HR pixels: sschsr-predict's --tile and sschsr-eval's tile (the flow network's smallest input)
BICUBIC_NAMES = ("bicubic", "none", "null", "")  # sschsr-eval's ckpt_path for the bicubic baseline alone
_UNKNOWN = object()  # a value the checks cannot read without a run (an interpolation of Hydra's runtime)


def _get(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at ``key`` (None when absent), :data:`_UNKNOWN` when it cannot be resolved here."""
    try:
        if OmegaConf.select(cfg, key, throw_on_missing=True) is None:
            return None
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=True, throw_on_missing=True)
    except Exception:  # MissingMandatoryValue (checked apart), interpolation needing Hydra's runtime
        return _UNKNOWN


def _whole(cfg: DictConfig, key: str, low: int, what: str, optional: bool = False) -> int | None:
    """The whole number at ``key``, at least ``low`` (None allowed with ``optional``), else InputError."""
    value = _get(cfg, key)
    if value is _UNKNOWN or (value is None and optional):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{key}={value}: expected {what}")
    return value


def _missing_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """The keys of ``cfg`` set to ``???``, found without resolving any interpolation (which may need a run)."""
    found = []
    for key in cfg.keys():
        if OmegaConf.is_missing(cfg, key):
            found.append(f"{prefix}{key}")
        elif not OmegaConf.is_interpolation(cfg, key) and isinstance(cfg[key], DictConfig):
            found += _missing_keys(cfg[key], f"{prefix}{key}.")
    return found


def check_missing(cfg: DictConfig, skip: tuple[str, ...] = ()) -> None:
    """InputError for the first mandatory value (``???``) left unset, naming the override to pass."""
    for key in _missing_keys(cfg):
        if key.split(".", 1)[0] == "hydra" or key in skip:
            continue
        hint = " (a GeoTIFF or ENVI raster)" if key.endswith("source.path") else ""
        raise InputError(f"{key} is not set: pass {key}=...{hint}")


def check_scale_and_bands(cfg: DictConfig) -> int | None:
    """``scale`` one of 4, 8, 16 (as sschsr-predict), ``n_bands`` a band count. Returns the scale."""
    scale = _get(cfg, "scale")
    if scale is not _UNKNOWN and (isinstance(scale, bool) or scale not in SUPPORTED_SCALES):
        raise InputError(
            f"scale={scale}: expected one of {', '.join(map(str, SUPPORTED_SCALES))} (the scales of sschsr-predict)"
        )
    if _get(cfg, "n_bands") is not None:
        _whole(cfg, "n_bands", 1, f"a band count (1 to {MAX_BANDS})")
        if _get(cfg, "n_bands") > MAX_BANDS:
            raise InputError(f"n_bands={_get(cfg, 'n_bands')}: expected a band count (1 to {MAX_BANDS})")
    return None if scale is _UNKNOWN else scale


def check_data(cfg: DictConfig, scale: int | None) -> None:
    """The data config: batch sizes, crop sizes (multiples of the scale), workers, a raster source's file."""
    if "data" not in cfg or cfg.data is None:
        return
    _whole(cfg, "data.batch_size", 1, "a whole number of at least 1", optional=True)
    _whole(cfg, "data.eval_batch_size", 1, "null or a whole number of at least 1", optional=True)
    _whole(cfg, "data.num_workers", 0, "a whole number of at least 0 (0: no worker processes)", optional=True)
    for key in ("data.crop_size", "data.eval_crop_size"):
        size = _whole(cfg, key, 1, "a positive multiple of the scale", optional=True)
        if size is not None and scale is not None and size % scale:
            raise InputError(f"{key}={size}: expected a positive multiple of the scale {scale}")
    source = cfg.data.get("source")
    if isinstance(source, DictConfig) and str(source.get("_target_", "")).endswith("GeoTIFFTiles"):
        if OmegaConf.is_missing(source, "path") or source.get("path") in (None, ""):
            raise InputError(
                "data.source.path is not set: pass data.source.path=FILE (a GeoTIFF or ENVI raster)"
            )
        path = _get(cfg, "data.source.path")
        if path is not _UNKNOWN and not Path(str(path)).is_file():
            raise InputError(f"data.source.path={path}: no such file")


def check_weights_file(path: Any, key: str) -> None:
    """``key=path`` names a weights file this package reads: a torch checkpoint of plain tensors and values
    (read with ``weights_only=True``) or a readable ``.safetensors``; InputError naming the key otherwise."""
    p = Path(str(path))
    if not p.is_file():
        raise InputError(f"{key}={path}: no such file")
    if p.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as f:
                f.metadata()
        except Exception as e:  # safetensors' own error types for a corrupt header
            raise InputError(f"{key}={path}: not a readable .safetensors file ({type(e).__name__})") from None
    elif p.suffix.lower() in (".ckpt", ".pt", ".pth"):
        try:
            load_checkpoint(p)
        except InputError as e:
            raise InputError(f"{key}={path}: {str(e).removeprefix(f'{p}: ')}") from None
    else:
        raise InputError(f"{key}={path}: expected a Lightning .ckpt or a .safetensors file")


_checked: set[tuple[str, int, int]] = set()  # resume files found good: (path, size, mtime), read once


def check_resume(path: Any) -> None:
    """``ckpt_path=PATH`` of ``sschsr-train``: a training checkpoint, read safely (``weights_only=True``)."""
    p = Path(str(path))
    try:
        stat = p.stat()
        key = (str(p.resolve()), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _checked:
        return
    try:
        ckpt = load_checkpoint(p, "resume checkpoint")
    except InputError as e:  # named by the key that gave it
        raise InputError(f"ckpt_path={path}: {str(e).removeprefix(f'{p}: ')}") from None
    if "optimizer_states" not in ckpt or "loops" not in ckpt:
        raise InputError(
            f"ckpt_path={path}: not a training checkpoint to resume (no optimizer or loop state); "
            "to start from its weights pass model.init_ckpt=PATH instead"
        )
    if key is not None:
        _checked.add(key)


def check_train_config(cfg: DictConfig) -> None:
    """Everything ``sschsr-train`` can check before it builds anything.

    Raises:
        InputError: one line naming the key.
    """
    if cfg.get("model") is None and cfg.get("chain") is None:  # a chain composes each stage's own
        models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
        raise InputError(
            f"task {cfg.get('task_name')!r} has no model config: pass model=<name> or experiment=<name> "
            f"(models in {CONF_DIR / 'model'}: {models or 'none yet'})"
        )
    check_missing(cfg)
    scale = check_scale_and_bands(cfg)
    check_data(cfg, scale)
    max_steps = _get(cfg, "trainer.max_steps")
    if max_steps is not None and max_steps is not _UNKNOWN:
        if (
            isinstance(max_steps, bool)
            or not isinstance(max_steps, int)
            or not (max_steps == -1 or max_steps >= 1)
        ):
            raise InputError(
                f"trainer.max_steps={max_steps}: expected a whole number of at least 1 (-1: no limit)"
            )
    for key in ("model.flow_ckpt", "model.warp_ckpt", "model.init_ckpt"):
        value = _get(cfg, key)
        if value in (None, _UNKNOWN) or str(value).strip().lower() in SHIPPED_NAMES:
            continue
        check_weights_file(value, key)
    resume = _get(cfg, "ckpt_path")
    if resume not in (None, _UNKNOWN):
        check_resume(resume)


def check_eval_config(cfg: DictConfig) -> None:
    """Everything ``sschsr-eval`` can check before it loads or builds anything (the model files are checked
    by :func:`sschsr.cli.eval.load_models`, first thing).

    Raises:
        InputError: one line naming the key.
    """
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise InputError(
            "pass ckpt_path=PATH (a .ckpt of the full model or a .safetensors), ckpt_path=shipped or ckpt_path=bicubic"
        )
    check_missing(cfg)
    scale = check_scale_and_bands(cfg)
    check_data(cfg, scale)
    _whole(cfg, "tile", MIN_TILE, f"null or at least {MIN_TILE} HR pixels", optional=True)
    device = _get(cfg, "device")
    if device not in (None, _UNKNOWN, "cpu", "cuda", "auto"):
        raise InputError(f"device={device}: expected cpu, cuda or auto")
    settings = {k: _get(cfg, k) for k in ("tta", "flow_factor", "flow_refine", "back_project", "psf")}
    TestTime.from_settings(**{k: v for k, v in settings.items() if v is not _UNKNOWN})  # checks each
    for key in ("model", "baselines.single_image"):
        ckpt = _get(cfg, "ckpt_path" if key == "model" else key)
        name = str(ckpt).strip().lower()
        if ckpt is _UNKNOWN or ckpt is None or name in (*SHIPPED_NAMES, *BICUBIC_NAMES):
            continue
        if not Path(str(ckpt)).exists():
            raise InputError(f"{'ckpt_path' if key == 'model' else key}={ckpt}: no such file")
