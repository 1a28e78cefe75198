"""Durations in configuration files.

Every duration in ackvisor is a ``float`` number of **seconds** (Trio's unit, see
OTP_SEMANTICS 9.7), not OTP's milliseconds. In TOML a duration is written either as
a number of seconds (``5``, ``1.5``) or as a string with a unit::

    "500ms"   "5s"   "1.5s"   "2m"   "1h"

Only the shutdown field of a child spec (S-3/S-5) also accepts the words
``"brutal_kill"`` and ``"infinity"``; that is what :func:`parse_shutdown` is for.
"""

from __future__ import annotations

import math
import re
from typing import Final, Literal

__all__ = [
    "DURATION_EXPECTED",
    "SHUTDOWN_EXPECTED",
    "DurationError",
    "format_duration",
    "parse_duration",
    "parse_shutdown",
]

DURATION_EXPECTED: Final = (
    "a duration: a number of seconds >= 0 or a string like \"500ms\", \"5s\", \"1.5s\", \"2m\", \"1h\""
)
"""What a duration looks like; used as the *expected* text of errors."""

SHUTDOWN_EXPECTED: Final = (
    "a shutdown: \"brutal_kill\", \"infinity\", or a duration "
    "(a number of seconds >= 0 or a string like \"500ms\", \"5s\", \"2m\")"
)
"""What a shutdown value looks like; used as the *expected* text of errors."""

_UNITS: Final[dict[str, float]] = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")


class DurationError(ValueError):
    """A value that is not a duration (or not a shutdown value).

    ``expected`` says what would have been accepted and ``found`` is the rejected
    value, so callers (the config loader) can build their own messages.
    """

    def __init__(self, found: object, expected: str) -> None:
        super().__init__(f"expected {expected}, found {found!r}")
        self.found: object = found
        self.expected: str = expected


def parse_duration(value: object) -> float:
    """Parse a duration and return it as float seconds (>= 0, finite).

    Accepts an ``int``/``float`` >= 0 (seconds; ``bool`` is rejected) or a string
    ``<number><unit>`` with unit ``ms``, ``s``, ``m`` or ``h`` and a decimal number
    (``"500ms"``, ``"1.5s"``, ``"2m"``). Surrounding whitespace is ignored; unitless
    strings, negative numbers, ``nan`` and ``"infinity"`` are rejected.

    Raises:
        DurationError: (a ``ValueError``) saying what was expected.
    """
    if isinstance(value, bool):
        raise DurationError(value, DURATION_EXPECTED)
    if isinstance(value, (int, float)):
        seconds = float(value)
        if not math.isfinite(seconds) or seconds < 0:
            raise DurationError(value, DURATION_EXPECTED)
        return seconds
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if match is not None:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
            if math.isfinite(seconds):
                return seconds
    raise DurationError(value, DURATION_EXPECTED)


def parse_shutdown(value: object) -> float | Literal["brutal_kill", "infinity"]:
    """Parse a child's ``shutdown`` value (S-5).

    Returns ``"brutal_kill"`` (kill without running ``terminate``), ``"infinity"``
    (ask to stop and wait forever; the normal choice for supervisors), or float seconds
    to wait after asking the child to stop before killing it.

    Raises:
        DurationError: (a ``ValueError``) saying what was expected.
    """
    if isinstance(value, str):
        word = value.strip()
        if word == "brutal_kill":
            return "brutal_kill"
        if word == "infinity":
            return "infinity"
    try:
        return parse_duration(value)
    except DurationError:
        raise DurationError(value, SHUTDOWN_EXPECTED) from None


def format_duration(seconds: float | str) -> str:
    """Render seconds the way a config file would write them (``0.5`` -> ``"500ms"``).

    Strings (``"infinity"``, ``"brutal_kill"``) are returned unchanged; whole hours and
    minutes use ``h``/``m``, sub-second values use ``ms``, everything else ``s``.
    """
    if isinstance(seconds, str):
        return seconds
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if 0 < seconds < 1:
        ms = seconds * 1000
        return f"{int(ms)}ms" if ms == int(ms) else f"{ms:g}ms"
    return f"{int(seconds)}s" if seconds == int(seconds) else f"{seconds:g}s"
