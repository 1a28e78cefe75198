"""Dotted TOML key paths and the best-effort key-path -> line-number locator.

Used by :mod:`ackvisor.config_schema` to attach line numbers to problems and by
:mod:`ackvisor.config_overrides` to parse the keys of ``--set`` overrides.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final, TypeAlias

# --------------------------------------------------------------------------- dotted keys

_BARE_KEY: Final = re.compile(r"[A-Za-z0-9_-]+")
_PathT: TypeAlias = tuple["str | int", ...]


def _format_key(path: Iterable[str | int]) -> str:
    """``("channels", "routes", "room:*")`` -> ``channels.routes."room:*"``."""
    parts: list[str] = []
    for part in path:
        if isinstance(part, int) or _BARE_KEY.fullmatch(part):
            parts.append(str(part))
        else:
            parts.append(json.dumps(part, ensure_ascii=False))
    return ".".join(parts)


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def _parse_key(text: str, i: int) -> tuple[list[str], int] | None:
    """Parse a (dotted) TOML key starting at ``text[i]``; return ``(parts, end)`` or None."""
    parts: list[str] = []
    while True:
        i = _skip_ws(text, i)
        if i >= len(text):
            return None
        if text[i] == '"':
            j = i + 1
            while j < len(text) and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= len(text):
                return None
            raw = text[i + 1 : j]
            try:
                parts.append(json.loads(f'"{raw}"'))
            except ValueError:
                parts.append(raw)
            i = j + 1
        elif text[i] == "'":
            j = text.find("'", i + 1)
            if j < 0:
                return None
            parts.append(text[i + 1 : j])
            i = j + 1
        else:
            match = _BARE_KEY.match(text, i)
            if match is None:
                return None
            parts.append(match.group())
            i = match.end()
        i = _skip_ws(text, i)
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        return parts, i


# --------------------------------------------------------------------------- line locator


class _ScanState:
    __slots__ = ("depth", "multiline")

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None


def _scan_value(text: str, i: int, state: _ScanState) -> None:
    """Advance through a value on one line, tracking brackets and multi-line strings."""
    n = len(text)
    while i < n:
        if state.multiline is not None:
            j = text.find(state.multiline, i)
            if j < 0:
                return
            i = j + 3
            while i < n and text[i] == state.multiline[0]:  # """a"""" ends with quotes in content
                i += 1
            state.multiline = None
            continue
        char = text[i]
        if char == "#":
            return
        if text.startswith('"""', i) or text.startswith("'''", i):
            state.multiline = text[i : i + 3]
            i += 3
        elif char == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        elif char == "'":
            j = text.find("'", i + 1)
            i = n if j < 0 else j + 1
        else:
            if char in "[{":
                state.depth += 1
            elif char in "]}":
                state.depth = max(0, state.depth - 1)
            i += 1


class _Locator:
    """Best-effort map from TOML key paths to 1-based line numbers.

    Understands table headers, array-of-tables headers (with element indexes, nested
    arrays included), dotted keys, multi-line arrays/inline tables and multi-line
    strings. Keys inside inline tables are not indexed; :meth:`line` then falls back
    to the nearest located ancestor.
    """

    def __init__(self, text: str) -> None:
        self._lines: dict[_PathT, int] = {}
        self._aot_counts: dict[_PathT, int] = {}
        self._scan(text)

    def line(self, path: _PathT) -> int | None:
        """Line of ``path``, else of its nearest located ancestor, else None."""
        for n in range(len(path), 0, -1):
            found = self._lines.get(path[:n])
            if found is not None:
                return found
        return None

    def _record(self, path: _PathT, lineno: int) -> None:
        for n in range(1, len(path) + 1):
            self._lines.setdefault(path[:n], lineno)

    def _concrete(self, keys: list[str]) -> list[str | int]:
        concrete: list[str | int] = []
        for key in keys:
            concrete.append(key)
            count = self._aot_counts.get(tuple(concrete))
            if count:
                concrete.append(count - 1)
        return concrete

    def _scan(self, text: str) -> None:
        state = _ScanState()
        table: _PathT = ()
        for lineno, line in enumerate(text.split("\n"), start=1):
            if state.multiline is not None or state.depth:
                _scan_value(line, 0, state)
                continue
            i = _skip_ws(line, 0)
            if line.startswith("[[", i):
                parsed = _parse_key(line, i + 2)
                if parsed is None:
                    continue
                keys, _ = parsed
                parent = self._concrete(keys[:-1])
                array = (*parent, keys[-1])
                index = self._aot_counts.get(array, 0)
                self._aot_counts[array] = index + 1
                table = (*array, index)
                self._record(table, lineno)
            elif line.startswith("[", i):
                parsed = _parse_key(line, i + 1)
                if parsed is None:
                    continue
                table = tuple(self._concrete(parsed[0]))
                self._record(table, lineno)
            elif i < len(line) and line[i] != "#":
                parsed = _parse_key(line, i)
                if parsed is None:
                    continue
                keys, end = parsed
                if not line.startswith("=", end):
                    continue
                self._record((*table, *keys), lineno)
                _scan_value(line, end + 1, state)
