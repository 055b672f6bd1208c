"""What every command-line tool shares: where the configs are, turning InputError into exit 2, and the
self-ensemble option."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sschsr.errors import InputError
from sschsr.models.ensemble import TRANSFORMS
from sschsr.pipeline import BACK_PROJECT_STEPS, DEFAULT_FLOW_REFINE, DEFAULT_TTA

# conf/ sits at the repository root (src layout, editable install); see docs/training.md.
CONF_DIR = Path(__file__).resolve().parents[3] / "conf"

T = TypeVar("T")


def fail(message: str) -> int:
    """Print one ``error: ...`` line for the user and return the exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def input_error_in(error: BaseException) -> InputError | None:
    """The :class:`InputError` ``error`` is or wraps (``hydra.utils.instantiate`` raises an
    ``InstantiationException`` from the error of the constructor it called), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def exit_on_input_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn``; an :class:`InputError`, raised or wrapped (:func:`input_error_in`), becomes one ``error:``
    line and exit status 2, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            found = input_error_in(e)
            if found is None:
                raise
            raise SystemExit(fail(str(found))) from None

    return wrapper


def add_tta_option(parser: argparse.ArgumentParser, help: str, flag: str = "--tta") -> None:
    """``flag``: how many flips/transpositions (1, 2, 4 or 8) a self-ensemble runs, default
    :data:`sschsr.pipeline.DEFAULT_TTA` (``sschsr-predict``, ``eval_sr.py``, ``eval_flow.py``)."""
    parser.add_argument(
        flag,
        type=int,
        choices=sorted(TRANSFORMS),
        default=DEFAULT_TTA,
        help=f"{help} (default {DEFAULT_TTA})",
    )


def _add_steps_option(
    parser: argparse.ArgumentParser,
    flag: str,
    default: int | None,
    package_default: str,
    what: str,
    off: str,
) -> None:
    """``flag``: a number of steps of a test-time procedure, ``default`` here (None: ``package_default``,
    which describes what ``sschsr-predict`` uses); the help names ``package_default`` where that differs."""
    here = package_default if default is None else str(default)
    parser.add_argument(
        flag,
        type=int,
        default=default,
        metavar="STEPS",
        help=f"{what} (default {here}; 0: {off}"
        + ("" if here == package_default else f"; sschsr-predict: {package_default}")
        + ")",
    )


def add_flow_refine_option(
    parser: argparse.ArgumentParser, flag: str = "--flow-refine", default: int | None = None
) -> None:
    """``flag``: steps of the flow's test-time refinement (:func:`sschsr.pipeline.with_flow_refinement`),
    default :data:`sschsr.pipeline.DEFAULT_FLOW_REFINE` (``sschsr-predict``) or ``default`` (the
    experiment scripts: 0, so that their records made before the refinement existed stay reproducible);
    0 turns it off."""
    _add_steps_option(
        parser,
        flag,
        DEFAULT_FLOW_REFINE if default is None else default,
        str(DEFAULT_FLOW_REFINE),
        "steps of the test-time refinement of the flow against the LR side",
        "the flow network's flow as it is",
    )


def add_flow_factor_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--flow-factor``: the shrink factor of the pair the flow network runs on
    (:func:`sschsr.pipeline.with_coarse_flow`), default :func:`sschsr.ops.coarse_flow.auto_factor` of each
    pair (``sschsr-predict``; None here) or ``default`` (the experiment scripts: 1, so that their records made
    before it existed stay reproducible)."""
    here = "2 for pairs of at least 512 px a side, else 1" if default is None else str(default)
    parser.add_argument(
        "--flow-factor",
        type=int,
        default=default,
        metavar="N",
        help=f"run the flow network on the pair shrunk N times, its flow enlarged back before the refinement "
        f"(default {here}; 1: at full size)",
    )


def add_back_project_option(
    parser: argparse.ArgumentParser, flag: str = "--back-project", default: int | None = None
) -> None:
    """``flag``: conjugate-gradient steps of back-projection (:func:`sschsr.pipeline.with_back_projection`),
    default :data:`sschsr.pipeline.BACK_PROJECT_STEPS` (``sschsr-predict``) or ``default`` (the experiment
    scripts: 0, so that their older records stay reproducible); 0 turns it off."""
    _add_steps_option(
        parser,
        flag,
        BACK_PROJECT_STEPS if default is None else default,
        str(BACK_PROJECT_STEPS),
        "steps of back-projection: the output made to agree with the LR input under the paper's degradation",
        "the network's output as it is",
    )
