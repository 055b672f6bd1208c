"""The console entry of a Hydra app (``sschsr-train``, ``sschsr-eval``) that answers like ``sschsr-predict``: a bad
override, an unknown config group option or a bad value is one line ``error: ...`` and exit status 2, no
traceback, and (for a single run) no run folder.

How: for a plain command line (overrides only, no flags such as ``-m`` or ``--cfg``) the config is composed
here first with Hydra's compose API and checked (``check``); then the app runs as ever. Hydra prints its own
errors (composition, a multirun's sweep) as several lines and exits 1 unless ``HYDRA_FULL_ERROR=1``, in which
case it raises them: that variable is set for the app's run, and what it raises is condensed here to one line.
A user's own ``HYDRA_FULL_ERROR=1`` keeps Hydra's full report (and is what the processes this one starts,
e.g. DDP's, see: :data:`USER_FULL_ERROR`).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from sschsr.cli._common import CONF_DIR, fail
from sschsr.errors import InputError

FULL_ERROR = "HYDRA_FULL_ERROR"
USER_FULL_ERROR = "SSCHSR_USER_HYDRA_FULL_ERROR"  # the user's HYDRA_FULL_ERROR, for child processes


def user_wants_full_errors() -> bool:
    """Whether the user set ``HYDRA_FULL_ERROR=1`` (Hydra's own test: the value ``1``)."""
    return os.environ.get(USER_FULL_ERROR, os.environ.get(FULL_ERROR, "")) == "1"


def one_line(error: BaseException) -> str:
    """Hydra's multi-line report of a composition error as one line: the search path left out, the
    available options of a group listed after a comma each."""
    parts: list[str] = []
    options: list[str] = []
    see = ""
    for raw in str(error).splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Config search path"):
            break
        m = re.fullmatch(r"See (https?://\S+) for details", line)
        if m:
            see = m.group(1)
        elif raw.startswith("\t") and parts and parts[-1].startswith("Available options"):
            options.append(line)
        elif options:
            parts[-1] += " " + ", ".join(options)
            options = []
            parts.append(line)
        else:
            parts.append(line)
    if options:
        parts[-1] += " " + ", ".join(options)
    cause = error.__cause__
    if cause is not None and str(cause).strip():
        parts.append(str(cause).strip().splitlines()[0])
    text = "; ".join(p.rstrip(".") for p in parts) or type(error).__name__
    return text + (f" (see {see})" if see else "")


def _is_config_error(error: BaseException) -> bool:
    """A composition or override error of Hydra or OmegaConf (not an error of the job's own code)."""
    from hydra.errors import HydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    return isinstance(error, (HydraException, OmegaConfBaseException)) and not isinstance(
        error, InstantiationException
    )


def _plain(argv: list[str]) -> bool:
    """Overrides only: no flag (``-m``, ``--cfg``, ``--help``, ``-cn``, ...)."""
    return all(not a.startswith("-") for a in argv)


def compose_job(config_name: str, overrides: list[str]) -> DictConfig:
    """The job's config for ``overrides`` as the app would compose it (Hydra's part left out)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name=config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def check_arguments(argv: list[str]) -> None:
    """Hydra's command-line parser run on ``argv`` first, so that its usage errors (an unknown flag, an
    override after a flag's value) are one line too (argparse prints the usage and the error otherwise)."""
    try:
        from hydra._internal.utils import get_args_parser
    except ImportError:  # another Hydra: its own report
        return
    parser = get_args_parser()
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else parser.prog

    def error(message: str):
        raise SystemExit(fail(f"{message} (see {prog} --help; flags such as -m go before the overrides)"))

    parser.error = error  # type: ignore[method-assign]
    if not any(a in ("-h", "--help", "--hydra-help", "--version") for a in argv):
        parser.parse_args(argv)


def run_app(app: Callable[[], Any], config_name: str, check: Callable[[DictConfig], None]) -> None:
    """Run the ``@hydra.main`` function ``app`` of ``config_name`` as a console script (see the module)."""
    argv = sys.argv[1:]
    full = user_wants_full_errors()
    check_arguments(argv)
    if _plain(argv):
        try:
            cfg = compose_job(config_name, argv)
        except Exception as e:
            if full or not _is_config_error(e):
                raise
            raise SystemExit(fail(one_line(e))) from None
        try:
            check(cfg)
        except InputError as e:
            raise SystemExit(fail(str(e))) from None
    before = {k: os.environ.get(k) for k in (FULL_ERROR, USER_FULL_ERROR)}
    os.environ[USER_FULL_ERROR] = "1" if full else "0"
    os.environ[FULL_ERROR] = "1"  # Hydra raises its errors instead of printing them: condensed below
    try:
        app()
    except Exception as e:
        if full or not _is_config_error(e):
            raise
        raise SystemExit(fail(one_line(e))) from None
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
