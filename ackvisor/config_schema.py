"""Validation machinery: value converters, per-file problem reporting and ``_Table``.

The section parsers in :mod:`ackvisor.config_loader` read each TOML table through a
:class:`_Table`, converting values with the converters defined here and reporting
problems (with file, dotted key and line) through a :class:`_FileCtx`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeAlias

from ackvisor.config import MISSING, SET_FILE, ConfigProblem, ShutdownValue
from ackvisor.config_lines import _format_key, _Locator, _PathT
from ackvisor.durations import (
    DURATION_EXPECTED,
    SHUTDOWN_EXPECTED,
    DurationError,
    parse_duration,
    parse_shutdown,
)

# --------------------------------------------------------------------------- value checks


class _Bad(Exception):
    """A value was rejected; ``expected`` says what would be accepted."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


_Conv: TypeAlias = Callable[[object], Any]


def _string(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    raise _Bad("a non-empty string")


def _identifier(value: object) -> str:
    if isinstance(value, str) and value and not any(c.isspace() for c in value):
        return value
    raise _Bad("a non-empty string without whitespace")


def _choice(*options: str) -> _Conv:
    expected = "one of " + ", ".join(f'"{option}"' for option in options)

    def convert(value: object) -> str:
        if isinstance(value, str) and value in options:
            return value
        raise _Bad(expected)

    return convert


def _integer(minimum: int, maximum: int | None = None) -> _Conv:
    if maximum is not None:
        expected = f"an integer from {minimum} to {maximum}"
    else:
        expected = "an integer > 0" if minimum == 1 else f"an integer >= {minimum}"

    def convert(value: object) -> int:
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= minimum
            and (maximum is None or value <= maximum)
        ):
            return value
        raise _Bad(expected)

    return convert


def _duration(*, positive: bool = False) -> _Conv:
    expected = DURATION_EXPECTED
    if positive:
        expected = DURATION_EXPECTED.replace("a duration:", "a duration > 0:").replace(" >= 0", "")

    def convert(value: object) -> float:
        try:
            seconds = parse_duration(value)
        except DurationError:
            raise _Bad(expected) from None
        if positive and seconds <= 0:
            raise _Bad(expected)
        return seconds

    return convert


def _shutdown(value: object) -> ShutdownValue:
    try:
        return parse_shutdown(value)
    except DurationError:
        raise _Bad(SHUTDOWN_EXPECTED) from None


_TARGET_RE: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
)
_TARGET_EXPECTED: Final = 'an import path "package.module:Attribute" (exactly one ":")'


def _target(value: object) -> str:
    if isinstance(value, str) and _TARGET_RE.fullmatch(value.strip()):
        return value.strip()
    raise _Bad(_TARGET_EXPECTED)


def _endpoint_path(value: object) -> str:
    if (
        isinstance(value, str)
        and value.startswith("/")
        and not value.endswith("/")
        and not any(c.isspace() or c in "?#" for c in value)
    ):
        return value
    raise _Bad('a URL path starting with "/" without a trailing "/" (e.g. "/socket")')


_HOST_LABEL: Final = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ORIGIN_RE: Final = re.compile(
    rf"(?:(?:https?|wss?)://|//)(?:\*\.)?(?:{_HOST_LABEL}(?:\.{_HOST_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::\d{{1,5}})?"
)
_ORIGIN_EXPECTED: Final = (
    'an origin like "https://example.com", "https://example.com:8443", "//example.com" '
    'or "//*.example.com" (no path, no trailing "/")'
)


def _origin(value: object) -> str:
    if isinstance(value, str) and _ORIGIN_RE.fullmatch(value):
        return value
    raise _Bad(_ORIGIN_EXPECTED)


_PATTERN_EXPECTED: Final = (
    'a topic pattern: an exact topic like "room:lobby" or a prefix ending in "*" like "room:*" '
    '("*" only at the end)'
)


def _shadows(earlier: str, later: str) -> bool:
    """Whether route ``earlier`` matches every topic ``later`` matches (routes: first match wins)."""
    if earlier.endswith("*"):
        return later.startswith(earlier[:-1])
    return earlier == later


def _redis_url(value: object) -> str:
    if isinstance(value, str) and re.fullmatch(r"(?:rediss?|unix)://\S*", value):
        return value
    raise _Bad('a Redis URL like "redis://host:6379/0", "rediss://..." or "unix:///path/to/socket"')


def _path_string(value: object) -> str:
    if isinstance(value, str) and value.strip() and not value.endswith(("/", os.sep)):
        return value
    raise _Bad("a file path (relative paths are relative to the config file's directory)")


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- unknown-key hints

_SECTION_HINTS: Final = {
    "include": ' ("include" is a top-level key: put it before the first [table])',
    "supervisors": ' ("supervisors" is top-level: write [[supervisors]])',
}
_UNSUPPORTED_HINTS: Final = {
    key: f' ("{key}" (S-22) is not supported: the runtime has no automatic shutdown)'
    for key in ("auto_shutdown", "significant")
}
_INLINE_ONLY: Final = ("strategy", "max_restarts", "max_seconds", "children")
_WORKER_HINTS: Final = {
    **{key: f' ("{key}" belongs to an inline child with type = "supervisor")' for key in _INLINE_ONLY},
    **_UNSUPPORTED_HINTS,
}
_START_SUPERVISOR_HINTS: Final = {
    **{
        key: f' ("{key}" belongs to an inline supervisor, declared without "start")'
        for key in _INLINE_ONLY
    },
    **_UNSUPPORTED_HINTS,
}


# --------------------------------------------------------------------------- per-file context


class _FileCtx:
    """Reports problems for one file, attributing overridden paths to ``--set``."""

    def __init__(
        self,
        problems: list[ConfigProblem],
        file: str,
        locator: _Locator | None,
        overridden: set[_PathT] | None = None,
    ) -> None:
        self.problems = problems
        self.file = file
        self.locator = locator
        self.overridden = overridden or set()

    def problem(self, path: _PathT, found: object, expected: str) -> None:
        """Record one problem at ``path`` (a key path inside this file)."""
        if any(path[:n] in self.overridden for n in range(1, len(path) + 1)):
            file, line = SET_FILE, None
        else:
            file = self.file
            line = self.locator.line(path) if self.locator is not None else None
        self.problems.append(ConfigProblem(file, _format_key(path), line, found, expected))

    def where(self, path: _PathT) -> str:
        """``file:line`` of ``path`` for cross-references in messages."""
        if any(path[:n] in self.overridden for n in range(1, len(path) + 1)):
            return SET_FILE
        line = self.locator.line(path) if self.locator is not None else None
        return self.file if line is None else f"{self.file}:{line}"


_REQUIRED: Final = object()


class _Table:
    """A TOML table being validated: typed reads, then unknown-key detection."""

    def __init__(self, ctx: _FileCtx, path: _PathT, raw: object, what: str) -> None:
        self.ctx = ctx
        self.path = path
        self.ok = True
        self.seen: set[str] = set()
        if raw is MISSING:
            self.data: dict[str, Any] = {}
        elif isinstance(raw, dict):
            self.data = raw
        else:
            ctx.problem(path, raw, f"a table ({what})")
            self.data = {}
            self.ok = False

    def has(self, key: str) -> bool:
        """Whether the key is present."""
        return key in self.data

    def raw(self, key: str) -> Any:
        """The raw value (or :data:`MISSING`), marking the key as known."""
        self.seen.add(key)
        return self.data.get(key, MISSING)

    def take(self, key: str, convert: _Conv, default: Any = _REQUIRED) -> Any:
        """The converted value, the default when absent; on a bad value a problem and the default."""
        self.seen.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                try:
                    convert(MISSING)
                except _Bad as bad:
                    self.ctx.problem((*self.path, key), MISSING, f"{bad.expected} (required)")
                return None
            return default
        value = self.data[key]
        try:
            return convert(value)
        except _Bad as bad:
            self.ctx.problem((*self.path, key), value, bad.expected)
            return None if default is _REQUIRED else default

    def finish(self, hints: Mapping[str, str] | None = None) -> None:
        """Report every key that was not read as unknown."""
        known = sorted(self.seen)
        for key in self.data:
            if key in self.seen:
                continue
            hint = (hints or {}).get(key) or _did_you_mean(key, known)
            where = f"[{_format_key(self.path)}]" if self.path else "the top level"
            self.ctx.problem(
                (*self.path, key),
                key,
                f"one of the keys of {where}: {', '.join(known)}{hint}",
            )
