"""What goes to the terminal besides the answer: the status line (spinner), colours, TTY detection, log lines
and error lines on stderr — every message scrubbed of the secrets seen so far.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO

_log = logging.getLogger("polychat")

# Secrets seen so far (config keys, proxy passwords); scrubbed from every message we print.
_secrets: list[str] = []


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _color(stream: IO[str]) -> bool:
    return _isatty(stream) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def _dim(text: str, stream: IO[str]) -> str:
    return f"\033[2m{text}\033[0m" if _color(stream) else text


def _scrub(text: str) -> str:
    from .._redact import redact_text

    return redact_text(text, _secrets)


class _Status:
    """A transient line on stderr while waiting (a spinner and the seconds so far); only on a terminal."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self) -> None:
        self.enabled = False
        self._text = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False
        self._t0 = 0.0

    def show(self, text: str) -> None:
        self.clear()
        if not self.enabled:
            return
        self._text = text
        self._t0 = time.monotonic()
        self._stop.clear()
        self._draw(0)
        self._thread = threading.Thread(target=self._tick, name="polychat-status", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):  # animation pace, not synchronisation
            frame += 1
            self._draw(frame)

    def _draw(self, frame: int) -> None:
        with self._lock:
            if self._stop.is_set() and frame:
                return
            elapsed = time.monotonic() - self._t0
            spin = self.FRAMES[frame % len(self.FRAMES)]
            secs = f" {elapsed:.0f}s" if elapsed >= 2 else ""
            sys.stderr.write(f"\r\033[2m{spin} {self._text}{secs}\033[0m\033[K")
            sys.stderr.flush()
            self._shown = True

    def clear(self) -> None:
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        with self._lock:
            if self._shown:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()
                self._shown = False


_status = _Status()


class _StderrHandler(logging.Handler):
    """Log records on stderr, one line each, after clearing the status line; secrets scrubbed.

    While a call runs, its warnings can be held (:func:`_held_warnings`): a failover that ended in an answer is
    shown (the user learns that their first provider failed), one that ended in an error is not — the error's
    own line says it, so each failure is printed once.
    """

    held: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = _scrub(self.format(record))
            if self.held is not None and record.levelno < logging.ERROR:
                self.held.append(msg)
                return
            _write_line(msg)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def _write_line(msg: str) -> None:
    _status.clear()
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


_handler = _StderrHandler()


class _Held:
    """Warnings held during one call: :meth:`show` prints them (once), :meth:`drop` forgets them."""

    def __init__(self, active: bool) -> None:
        self.active = active
        if active:
            _handler.held = []

    def show(self) -> None:
        if self.active and _handler.held is not None:
            lines, _handler.held = _handler.held, None
            for line in lines:
                _write_line(line)

    def drop(self) -> None:
        if self.active:
            _handler.held = None


def _held_warnings(debug: bool) -> _Held:
    """Hold the failover warnings of the call about to run (not with ``--debug``: then everything shows live)."""
    return _Held(not debug)


def _setup_logging(debug: bool) -> None:
    handler = _handler
    handler.held = None
    if debug:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        root = logging.getLogger()
        root.handlers[:] = [handler]
        root.setLevel(logging.DEBUG)
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.handlers[:] = [handler]
        _log.setLevel(logging.WARNING)
        _log.propagate = False


def _error(message: str) -> None:
    _status.clear()
    sys.stderr.write(f"polychat: error: {_scrub(message)}\n")
    sys.stderr.flush()
