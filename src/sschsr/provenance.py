"""Where a result came from: the git commit of the source a run or a record was made with."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the repository root of a source checkout (src layout)


def source_commit() -> tuple[str | None, bool | None]:
    """The commit of the repository this package is imported from and whether tracked files have changes;
    ``(None, None)`` for an installed copy (no ``.git`` above it) or without git."""
    if not (REPO / ".git").exists():
        return None, None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()

    try:
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None


def commit_label() -> str | None:
    """The commit as a record states it: the hash, with ``-dirty`` for local changes; None outside git."""
    commit, dirty = source_commit()
    return None if commit is None else commit + ("-dirty" if dirty else "")
