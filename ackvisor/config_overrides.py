"""Command-line ``--set key=value`` overrides, applied to a parsed node file's tree."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from typing import Any, Final

from ackvisor.config import SET_FILE, ConfigProblem
from ackvisor.config_lines import _format_key, _parse_key, _PathT

# --------------------------------------------------------------------------- overrides


def _split_override(text: str) -> tuple[str, str] | None:
    """Split ``key=value`` at the first ``=`` outside quotes."""
    quote: str | None = None
    for i, char in enumerate(text):
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "=":
            return text[:i], text[i + 1 :]
    return None


def _parse_override_value(text: str) -> object:
    """A TOML value if ``text`` is one (``5``, ``true``, ``"x"``, ``[1, 2]``), else the string."""
    stripped = text.strip()
    try:
        return tomllib.loads(f"value = {stripped}")["value"]
    except tomllib.TOMLDecodeError:
        return stripped


_OVERRIDE_EXPECTED: Final = 'key=value: a dotted key, "=", then a TOML value or a plain string'


def _apply_overrides(
    tree: dict[str, Any], overrides: Sequence[str], problems: list[ConfigProblem]
) -> set[_PathT]:
    """Apply ``--set`` overrides to ``tree`` in place; return the paths they set or created."""
    touched: set[_PathT] = set()
    for text in overrides:
        split = _split_override(text)
        parsed = _parse_key(split[0], 0) if split is not None else None
        if split is None or parsed is None or split[0][parsed[1] :].strip():
            problems.append(ConfigProblem(SET_FILE, "", None, text, _OVERRIDE_EXPECTED))
            continue
        keys, _ = parsed
        value = _parse_override_value(split[1])
        node: Any = tree
        path: list[str | int] = []
        for position, key in enumerate(keys):
            last = position == len(keys) - 1
            if isinstance(node, dict):
                path.append(key)
                if last:
                    node[key] = value
                elif key not in node:
                    node[key] = {}
                    touched.add(tuple(path))
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                path.append(int(key))
                if last:
                    node[int(key)] = value
                node = node[int(key)]
            else:
                where = _format_key(path)
                expected = (
                    f"an index below {len(node)} into the array {where}"
                    if isinstance(node, list)
                    else f"a table at {where} (it is a {type(node).__name__}) to set {key!r} in"
                )
                problems.append(ConfigProblem(SET_FILE, _format_key((*path, key)), None, text, expected))
                break
        else:
            touched.add(tuple(path))
    return touched
