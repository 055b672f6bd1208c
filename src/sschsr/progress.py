"""Progress with an ETA on stderr for the long runs of the command lines.

A command opens a :class:`Progress` as a context (``with Progress(8, "sschsr-predict", unit="pass"):``);
the code it runs reports work of a kind as it finishes it with :func:`advance` (``"tile"`` of a scene,
``"pass"`` of the self-ensemble, ``"scene"`` of an evaluation) without knowing who listens: the open
progress counts the kind it was opened for, and outside such a context :func:`advance` does nothing. Lines are drawn only when ``stream`` is a terminal and the command is not
quiet; a log or a pipe gets nothing from here (the command prints its own one-line summary).
"""

from __future__ import annotations

import contextvars
import sys
import time
from typing import TextIO

_CURRENT: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("sschsr_progress", default=None)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Units of work done out of ``total``, drawn as ``label  done/total  elapsed  ETA`` on one line.

    Args:
        total: units of work expected (e.g. tiles x ensemble passes).
        label: what runs.
        unit: the kind of work counted (:func:`advance`'s ``kind``).
        stream: where to draw (default stderr).
        enabled: None: when ``stream`` is a terminal; False: never (``--quiet``).
    """

    def __init__(
        self,
        total: float,
        label: str,
        unit: str = "pass",
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ):
        self.total = max(float(total), 1e-9)
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) if enabled is None else enabled
        self.done = 0.0
        self.start = time.perf_counter()
        self._token: contextvars.Token | None = None
        self._drawn = False

    def __enter__(self) -> Progress:
        self.start = time.perf_counter()
        self._token = _CURRENT.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        if self._drawn:
            self.stream.write("\r\033[K")  # the line goes; the command's summary takes its place
            self.stream.flush()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def eta(self) -> float | None:
        """Seconds left at the pace so far; None before any work is done."""
        if self.done <= 0:
            return None
        return self.elapsed / self.done * max(self.total - self.done, 0.0)

    def line(self, note: str = "") -> str:
        eta = self.eta()
        plural = self.unit + ("es" if self.unit.endswith("s") else "s")
        shown = f"{self.done:g}/{self.total:g} {plural}"
        parts = [
            self.label,
            shown,
            f"{_clock(self.elapsed)} elapsed",
            "ETA " + ("?" if eta is None else _clock(eta)),
        ]
        return "  ".join(parts + ([note] if note else []))

    def advance(self, units: float = 1.0, note: str = "") -> None:
        self.done = min(self.done + units, self.total)
        if self.enabled:
            self.stream.write("\r\033[K" + self.line(note))
            self.stream.flush()
            self._drawn = True


def advance(kind: str, units: float = 1.0, note: str = "") -> None:
    """Report ``units`` of finished work of ``kind`` to the :class:`Progress` open in this context, if it
    counts that kind."""
    current = _CURRENT.get()
    if current is not None and current.unit == kind:
        current.advance(units, note)


def current() -> Progress | None:
    """The :class:`Progress` open in this context, if any."""
    return _CURRENT.get()
