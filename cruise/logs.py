"""Logging setup: structlog, human-readable on a console or one JSON object per line.

Theory of operation
-------------------
:func:`configure` sets structlog's global configuration; :func:`get_logger` returns a logger
with fields bound (``get_logger(node="n1")``). Levels are filtered by the class that
``structlog.make_filtering_bound_logger`` builds, so a call below the level is a no-op method
and costs about as much as a function call.

``configure`` may be called any number of times, and loggers made before a call follow the
new format and stream: the processor chain is one list updated in place and the output goes
through one sink whose stream is swapped. Only the *level* of a logger is fixed when it is
first used (the filtering class is chosen then), so configure the level before logging.

Logs go to stderr by default: stdout is for command output (``cruise status --json``).
Only ``cruise run`` and ``cruise up`` call ``configure``: a library leaves its host alone, so an
embedded ``Node`` (and ``Client``) logs through whatever structlog configuration the host
program has, or structlog's own defaults.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

__all__ = ["FORMATS", "LEVELS", "configure", "get_logger"]

FORMATS = ("auto", "console", "json")
LEVELS = ("debug", "info", "warning", "error", "critical")

# The one processor list every logger holds a reference to; configure() replaces its contents.
_PROCESSORS: list[Any] = []


class _Sink:
    """Where every logger writes: one stream, swapped by configure(), one line per event."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            stream = self.stream
            stream.write(line + "\n")
            stream.flush()


_SINK = _Sink()


class _SinkLogger:
    """The wrapped logger structlog calls with the rendered line, whatever the level."""

    __slots__ = ()

    def msg(self, message: str) -> None:
        _SINK.write(message)

    log = debug = info = warn = warning = error = err = critical = fatal = exception = failure = msg


def _logger_factory(*args: Any) -> _SinkLogger:
    return _SinkLogger()


def _order_keys(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Put timestamp, level and event first, so JSON lines read well in a terminal too."""
    head: dict[str, Any] = {k: event_dict.pop(k) for k in ("timestamp", "level", "event") if k in event_dict}
    head.update(event_dict)
    return head


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set the log format, level and stream for the whole process.

    Args:
        fmt: ``"console"`` (structlog's ConsoleRenderer; colors only when ``stream`` is a TTY),
            ``"json"`` (one JSON object per line with ``timestamp`` (ISO 8601, UTC), ``level``,
            ``event`` and the bound fields), or ``"auto"``, which means console (the CLI
            passes ``--log-format json`` for JSON).
        level: ``debug``, ``info``, ``warning`` (or ``warn``), ``error`` or ``critical``.
        stream: where lines go; ``sys.stderr`` (as it is at call time) by default.

    Raises:
        ValueError: an unknown ``fmt`` or ``level``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (expected one of: {', '.join(FORMATS)})")
    name = "warning" if level.lower() == "warn" else level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (expected one of: {', '.join(LEVELS)})")
    if stream is None:
        stream = sys.stderr

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        renderers: list[Any] = [
            structlog.processors.format_exc_info,
            _order_keys,
            # Non-JSON values (bytes, objects) are rendered with repr() by structlog's fallback.
            structlog.processors.JSONRenderer(),
        ]
    else:
        isatty = getattr(stream, "isatty", None)
        colors = bool(isatty and isatty())
        renderers = [structlog.dev.ConsoleRenderer(colors=colors)]

    _SINK.stream = stream
    _PROCESSORS[:] = shared + renderers
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, name.upper())),
        logger_factory=_logger_factory,
        cache_logger_on_first_use=True,
    )


def get_logger(**binds: Any) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``binds`` attached to every event, e.g. ``get_logger(node="n1")``.

    The logger is assembled on first use, so it may be made at import time.
    """
    return structlog.get_logger(**binds)
