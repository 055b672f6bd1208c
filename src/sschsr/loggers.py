"""Logger factories that need more than a `_target_` (optional dependencies, online/offline choice)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from lightning_utilities.core.imports import RequirementCache

_WANDB = RequirementCache("wandb>=0.17")


def wandb_logged_in() -> bool:
    """Whether wandb has credentials here (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(
    mode: Literal["auto", "online", "offline", "disabled"] = "auto",
    tags: list[str] | None = None,
    run_tags: list[str] | None = None,
    **kwargs: Any,
):
    """A Lightning ``WandbLogger`` that runs offline unless the user is logged in.

    Args:
        mode: ``"auto"``: online when :func:`wandb_logged_in`, else offline (``wandb sync`` uploads
            later); the other values are passed to wandb as they are. ``WANDB_MODE`` in the environment wins.
        tags, run_tags: the run's tags, ``run_tags`` (scale, variant, seed) appended, each once.
        **kwargs: passed to ``lightning.pytorch.loggers.WandbLogger`` (``name``, ``group``, ``job_type``...).
    """
    if not _WANDB:
        raise ImportError(f"logger=wandb needs wandb: pip install 'sschsr[wandb]' ({_WANDB.message})")
    from lightning.pytorch.loggers import WandbLogger

    if "WANDB_MODE" in os.environ:
        mode = os.environ["WANDB_MODE"]  # type: ignore[assignment]
    elif mode == "auto":
        mode = "online" if wandb_logged_in() else "offline"
    Path(kwargs.get("save_dir", ".")).mkdir(parents=True, exist_ok=True)
    all_tags = list(dict.fromkeys(str(t) for t in [*(tags or []), *(run_tags or [])]))
    return WandbLogger(mode=mode, offline=(mode == "offline"), tags=all_tags or None, **kwargs)
