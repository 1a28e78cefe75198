"""Logging set-up: structlog events with stable keys, JSON in production, pretty on a terminal.

Every report of the runtime (``child_started``, ``child_terminated``,
``max_restart_intensity_reached`` ...) and of the channels layer is one
structlog event.  :func:`configure_logging` picks the renderer:

* ``"json"`` - one JSON object per line (``event``, ``level``, ``timestamp``,
  ``logger`` and the event's own keys);
* ``"console"`` - structlog's pretty renderer;
* ``"auto"`` - console when stderr is a TTY, JSON otherwise.

Secrets never reach the output: values of keys that name tokens, passwords or
auth params are replaced by ``"[redacted]"`` (also inside nested dicts such
as socket params).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, MutableMapping, TextIO

import structlog

__all__ = ["configure_logging", "redact", "SECRET_KEYS"]

LogFormat = Literal["auto", "console", "json"]

#: Key names (case-insensitive, substring match) whose values are never logged.
SECRET_KEYS = ("token", "password", "secret", "authorization", "auth", "cookie", "api_key")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _is_secret(key: str) -> bool:
    k = key.lower()
    return any(s in k for s in SECRET_KEYS)


def redact(value: Any, _depth: int = 0) -> Any:
    """Return ``value`` with every secret-named key's value replaced by ``"[redacted]"``."""
    if _depth > 6:
        return value
    if isinstance(value, dict):
        return {k: ("[redacted]" if isinstance(k, str) and _is_secret(k) else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, _depth + 1) for v in value)
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return "infinity" if value > 0 else str(value)
    return value


def _plain_numbers(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """JSON has no Infinity/NaN: render them as strings (e.g. ``shutdown="infinity"``)."""
    for key, value in event_dict.items():
        if isinstance(value, float):
            event_dict[key] = _finite(value)
    return event_dict


def _redact_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in ("event", "level", "timestamp", "logger"):
            continue
        if _is_secret(key):
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], (dict, list, tuple)):
            event_dict[key] = redact(event_dict[key])
    return event_dict


def configure_logging(format: LogFormat = "auto", level: str = "info", *, stream: TextIO | None = None) -> None:
    """Configure structlog process-wide for the daemon (a library user may keep their own set-up)."""
    if level not in _LEVELS:
        raise ValueError(f"log level must be one of {sorted(_LEVELS)}, not {level!r}")
    out = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "console" if out.isatty() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_processor,
        _plain_numbers,
    ]
    if format == "json":
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer(default=repr)]
    elif format == "console":
        processors += [structlog.dev.ConsoleRenderer(colors=out.isatty())]
    else:
        raise ValueError(f"log format must be auto, console or json, not {format!r}")
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
