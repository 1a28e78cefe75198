"""TOML configuration of an ackvisor node: parsing and validation, nothing else.

``load_config("config.toml")`` reads the node file, applies ``--set key=value``
overrides, reads the subtree files matched by ``include`` and returns a frozen
:class:`NodeConfig`. Nothing is started and Trio is not imported: this is the
"validate before anything starts" step of OTP_SEMANTICS S-2 / 9.7, shared by
``ackvisor run``, ``ackvisor check`` and SIGHUP reloads.

Every problem found is collected (the loader does not stop at the first one) and
raised together as one :class:`ConfigError`; each :class:`ConfigProblem` names the
file, the dotted key, the line when it can be located, the value found and what was
expected. Unknown keys are errors at every level, so typos cannot pass silently.

Units and defaults (OTP_SEMANTICS 9.7): durations are float **seconds** (written as
numbers or strings such as ``"500ms"``, ``"5s"``, ``"2m"``); supervisor defaults are
Elixir's (``max_restarts = 3`` within ``max_seconds = 5``, S-1); a child's
``shutdown`` defaults to 5 s for workers and ``"infinity"`` for supervisors (S-3).

Layout of the node file (all tables optional; defaults shown)::

    include = ["supervisors/*.toml"]   # top-level key, before the first [table]

    [node]
    name = "ackvisor"
    shutdown_timeout = "30s"           # whole-node drain + stop bound
    drain_window = "2s"                # spread 1001 closes over this window on SIGTERM
    pid_file = "ackvisor.pid"          # relative to the config file's directory

    [logging]
    format = "auto"                    # auto | console | json
    level = "info"                     # debug | info | warning | error

    [endpoint]
    host = "127.0.0.1"
    port = 4000                        # 0..65535, 0 = ephemeral
    path = "/socket"                   # starts with "/", no trailing "/"
    check_origin = []                  # e.g. ["https://example.com", "//*.example.com"]
    max_frame_bytes = 1048576
    heartbeat_timeout = "60s"
    max_channels_per_socket = 100

    [channels]
    ack_timeout = "5s"
    on_no_ack = "close_connection"     # close_connection | error_channel

    [channels.routes]                  # topic pattern -> "pkg.module:ChannelClass"
    "superheroes:*" = "ackvisor.examples.superheroes:SuperheroChannel"

    [pubsub]
    adapter = "local"                  # local | redis
    url = "redis://127.0.0.1:6379/0"

    [history]
    size = 10000                       # messages kept per topic
    max_age = "5m"

    [root]
    strategy = "one_for_one"           # one_for_one | one_for_all | rest_for_one
    max_restarts = 3
    max_seconds = 5

    [[supervisors]]                    # optional: subtrees declared inline, same
    id = "..."                         # schema as a subtree file's [supervisor]

A subtree file (matched by ``include``) declares exactly one supervisor::

    [supervisor]
    id = "superheroes"                 # unique among all subtrees
    strategy = "one_for_one"
    max_restarts = 3
    max_seconds = "5s"
    restart = "permanent"              # how the root restarts this subtree
    # shutdown = "infinity"            # how the root stops it
    # name = "superheroes_sup"         # optional registered name

    [[supervisor.children]]
    id = "store"                       # unique within its supervisor
    start = "ackvisor.examples.superheroes:SuperheroStore"  # Actor subclass or async function
    args = []
    kwargs = {}
    restart = "permanent"              # permanent | transient | temporary
    shutdown = "5s"                    # "brutal_kill" | duration | "infinity"
    type = "worker"
    name = "superheroes_store"         # optional registered name

    [[supervisor.children]]            # a child supervisor is declared inline
    id = "rooms"                       # (the documented form): no "start"; its own
    type = "supervisor"                # strategy, max_restarts, max_seconds, children
    [[supervisor.children.children]]
    id = "room"
    start = "myapp.rooms:Room"

    [[supervisor.children]]            # a supervisor *class* (e.g. a DynamicSupervisor)
    id = "sessions"                    # is a start-form child: type = "supervisor"
    type = "supervisor"                # plus start/args/kwargs; it has no inline
    start = "ackvisor:DynamicSupervisor"   # children (it builds or gets them itself)
    kwargs = { max_children = 1000 }

A worker's ``start`` must be an ``Actor`` subclass (not a supervisor class) or an
async function. ``auto_shutdown`` and ``significant`` (S-22) are not accepted:
the runtime does not implement them, and a silently ignored key is worse than an
error. The config stores ``shutdown = "infinity"`` as the string ``"infinity"``;
the runtime's ``ChildSpec`` spells it ``math.inf``.

Start order of the root's subtrees: the inline ``[[supervisors]]`` first, then the
included files, pattern by pattern, each pattern's matches sorted by path.
"""

from __future__ import annotations

import difflib
import glob
import importlib
import inspect
import json
import os
import re
import reprlib
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Final, Literal, TypeAlias

from ackvisor.durations import (
    DURATION_EXPECTED,
    SHUTDOWN_EXPECTED,
    DurationError,
    format_duration,
    parse_duration,
    parse_shutdown,
)

__all__ = [
    "MISSING",
    "ChannelsSection",
    "ChildConfig",
    "ConfigError",
    "ConfigProblem",
    "EndpointSection",
    "FrozenMapping",
    "HistorySection",
    "LoggingSection",
    "NodeConfig",
    "NodeSection",
    "PubSubSection",
    "RESERVED_ROOT_CHILD_IDS",
    "RestartType",
    "RootSection",
    "RouteConfig",
    "SET_FILE",
    "ShutdownValue",
    "Strategy",
    "SupervisorConfig",
    "load_config",
]

Strategy: TypeAlias = Literal["one_for_one", "one_for_all", "rest_for_one"]
"""Supervisor restart strategies (S-7..S-9)."""

RestartType: TypeAlias = Literal["permanent", "transient", "temporary"]
"""Child restart types (S-4)."""

ShutdownValue: TypeAlias = float | Literal["brutal_kill", "infinity"]
"""A child's shutdown (S-5): float seconds, ``"brutal_kill"`` or ``"infinity"``."""

SET_FILE: Final = "--set"
"""The ``file`` of problems caused by a command-line override."""

RESERVED_ROOT_CHILD_IDS: Final = frozenset({"pubsub", "endpoint"})
"""Ids of the root's built-in children (DESIGN.md, default tree); subtrees cannot use them."""

_STRATEGIES: Final = ("one_for_one", "one_for_all", "rest_for_one")
_RESTARTS: Final = ("permanent", "transient", "temporary")
_DEFAULT_INCLUDE: Final = ("supervisors/*.toml",)


# --------------------------------------------------------------------------- problems


class _Missing:
    """Type of :data:`MISSING`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "nothing"

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""The ``found`` of a problem about a required key that is absent (its repr is ``nothing``)."""

_REPR = reprlib.Repr()
_REPR.maxstring = 160
_REPR.maxother = 160
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 8
_REPR.maxlevel = 3


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    ``file`` is the path of the file (``"--set"`` for a command-line override), ``key``
    the dotted key inside that file (``"supervisor.children.1.restart"``,
    ``"channels.ack_timeout"``; empty for whole-file problems such as a syntax error),
    ``line`` the 1-based line when it could be located, ``found`` the offending value
    (:data:`MISSING` for an absent required key) and ``expected`` what would be accepted.
    """

    file: str
    key: str
    line: int | None
    found: object
    expected: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} expected {self.expected}, found {_REPR.repr(self.found)}"


class ConfigError(Exception):
    """A configuration that cannot be used. Carries ALL problems found.

    ``problems`` lists them in the order they were found (file by file, top to
    bottom); ``str()`` gives one problem per line.
    """

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems: list[ConfigProblem] = list(problems)
        super().__init__(self.problems)

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


# --------------------------------------------------------------------------- frozen values


class FrozenMapping(Mapping[str, Any]):
    """A read-only, hashable mapping (used for ``ChildConfig.kwargs``).

    Compares equal to any mapping with the same items, so config objects can be
    compared and hashed by value (SIGHUP reload diffing).
    """

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, Any] | Iterable[tuple[str, Any]] = ()) -> None:
        self._data: dict[str, Any] = dict(items)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(frozenset(self._data.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMapping):
            return self._data == other._data
        if isinstance(other, Mapping):
            return self._data == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"


def _freeze(value: Any) -> Any:
    """TOML value -> hashable value (list -> tuple, table -> FrozenMapping), recursively."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    if isinstance(value, dict):
        return FrozenMapping((key, _freeze(item)) for key, item in value.items())
    return value


def _thaw(value: Any) -> Any:
    """Inverse of :func:`_freeze`: fresh, mutable lists and dicts."""
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    if isinstance(value, FrozenMapping):
        return {key: _thaw(item) for key, item in value.items()}
    return value


# --------------------------------------------------------------------------- config objects


@dataclass(frozen=True, slots=True)
class NodeSection:
    """``[node]``: identity and process life of the daemon."""

    name: str = "ackvisor"
    """Node name (logs, control socket greeting)."""
    shutdown_timeout: float = 30.0
    """Seconds bounding the whole drain + stop on SIGTERM (APP-3 ``shutdown_time``)."""
    drain_window: float = 2.0
    """Seconds over which open sockets are closed with 1001 on SIGTERM (<= shutdown_timeout)."""
    pid_file: Path = Path("ackvisor.pid")
    """PID file; resolved against the config file's directory by :func:`load_config`."""

    @property
    def control_socket(self) -> Path:
        """The control socket: ``<pid_file stem>.sock`` next to the PID file."""
        return self.pid_file.with_name(self.pid_file.stem + ".sock")


@dataclass(frozen=True, slots=True)
class LoggingSection:
    """``[logging]``: structlog set-up."""

    format: Literal["auto", "console", "json"] = "auto"
    """``auto`` = console on a TTY, JSON otherwise."""
    level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level written."""


@dataclass(frozen=True, slots=True)
class EndpointSection:
    """``[endpoint]``: the Phoenix Channels WebSocket listener."""

    host: str = "127.0.0.1"
    """Address to bind."""
    port: int = 4000
    """TCP port, 0..65535 (0 = ephemeral)."""
    path: str = "/socket"
    """Socket mount path: starts with ``/``, no trailing ``/``."""
    check_origin: tuple[str, ...] = ()
    """Allowed origins (``"https://example.com"``, ``"//*.example.com"``); empty = allow all."""
    max_frame_bytes: int = 1_048_576
    """Largest accepted WebSocket message, in bytes (> 0)."""
    heartbeat_timeout: float = 60.0
    """Seconds without a client heartbeat before the socket is closed (> 0)."""
    max_channels_per_socket: int = 100
    """Joined topics allowed per socket (> 0)."""


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """One ``[channels.routes]`` entry: topic pattern -> channel class.

    ``target`` is the import path (``"pkg.module:ChannelClass"``); ``cls`` is the
    imported class when targets were imported, else ``None`` (not part of equality).
    """

    pattern: str
    """An exact topic (``"room:lobby"``) or a prefix ending in ``*`` (``"room:*"``)."""
    target: str
    """Import path of the :class:`ackvisor.channels.channel.Channel` subclass."""
    cls: type[Any] | None = field(default=None, compare=False)
    """The imported class, or ``None`` when ``import_targets=False``."""

    def matches(self, topic: str) -> bool:
        """Whether ``topic`` is routed by this entry (exact match, or prefix for ``*``)."""
        if self.pattern.endswith("*"):
            return topic.startswith(self.pattern[:-1])
        return topic == self.pattern


@dataclass(frozen=True, slots=True)
class ChannelsSection:
    """``[channels]``: acknowledgement policy and topic routes."""

    ack_timeout: float = 5.0
    """Seconds to wait for a ``message_ack`` before ``no_ack_received`` (> 0)."""
    on_no_ack: Literal["close_connection", "error_channel"] = "close_connection"
    """What a missing ack does: exit the connection (socket closed) or only the channel."""
    routes: tuple[RouteConfig, ...] = ()
    """Routes in file order; the first matching route wins (a route shadowed by an earlier one
    is a config error)."""
    max_unacked: int = 1000
    """Per channel: more messages awaiting ack than this ends the channel with ``too_many_unacked``."""
    max_unacked_bytes: int = 8_388_608
    """Per channel: more bytes awaiting ack than this ends the channel with ``too_many_unacked``."""


@dataclass(frozen=True, slots=True)
class PubSubSection:
    """``[pubsub]``: broadcast adapter."""

    adapter: Literal["local", "redis"] = "local"
    """``local`` (one node) or ``redis`` (many nodes)."""
    url: str = "redis://127.0.0.1:6379/0"
    """Redis URL (``redis://``, ``rediss://`` or ``unix://``); only used by the redis adapter."""


@dataclass(frozen=True, slots=True)
class HistorySection:
    """``[history]``: per-topic message history kept for rejoining clients."""

    size: int = 10_000
    """Messages kept per topic (>= 0; 0 disables history)."""
    max_age: float = 300.0
    """Seconds a message is kept."""


@dataclass(frozen=True, slots=True)
class RootSection:
    """``[root]``: flags of the node's root supervisor (S-1)."""

    strategy: Strategy = "one_for_one"
    """Restart strategy."""
    max_restarts: int = 3
    """Restart intensity: more than this many restarts ..."""
    max_seconds: float = 5.0
    """... within this many seconds makes the root give up (S-14)."""


@dataclass(frozen=True, slots=True)
class ChildConfig:
    """A child spec with a ``start`` target (S-3), compared by value.

    Equality and hashing use every field except ``target`` (the imported object), so
    two loads of an unchanged file give equal specs whether or not targets were
    imported: a reload restarts only children whose spec changed.
    """

    id: str
    """Unique within its supervisor."""
    start: str
    """Import path ``"pkg.module:Attr"``: an ``Actor`` subclass or an async function for a
    worker; a ``Supervisor``/``DynamicSupervisor`` subclass for ``type = "supervisor"``."""
    target: object | None = field(default=None, compare=False)
    """The imported object, or ``None`` when ``import_targets=False``."""
    args: tuple[Any, ...] = ()
    """Positional start arguments, deep-frozen (TOML arrays are tuples, tables FrozenMappings)."""
    kwargs: FrozenMapping = field(default_factory=FrozenMapping)
    """Keyword start arguments, deep-frozen."""
    restart: RestartType = "permanent"
    """Restart type (S-4)."""
    shutdown: ShutdownValue = 5.0
    """Seconds, ``"brutal_kill"`` or ``"infinity"`` (S-5); default 5 s for workers, ``"infinity"``
    for supervisors."""
    type: Literal["worker", "supervisor"] = "worker"
    """``"worker"``, or ``"supervisor"`` for a start-form supervisor class (inline supervisors
    are :class:`SupervisorConfig`)."""
    name: str | None = None
    """Registered name (unique in the node), or ``None``."""

    def start_arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """Fresh mutable copies ``(args, kwargs)`` for one (re)start of the child.

        A restarted child never sees what an earlier incarnation did to its arguments.
        """
        return _thaw(self.args), _thaw(self.kwargs)


@dataclass(frozen=True, slots=True)
class SupervisorConfig:
    """A supervisor: a root subtree (one per subtree file) or a nested supervisor child.

    Compared by value, ignoring ``source_file``.
    """

    id: str
    """Unique among the root's subtrees, or within its parent supervisor."""
    strategy: Strategy = "one_for_one"
    """Restart strategy (S-7..S-9)."""
    max_restarts: int = 3
    """Restart intensity (S-14)."""
    max_seconds: float = 5.0
    """Restart period in seconds (S-14)."""
    restart: RestartType = "permanent"
    """How the parent restarts this supervisor (S-4, S-18)."""
    children: tuple[ChildConfig | SupervisorConfig, ...] = ()
    """Children in start order."""
    source_file: str = field(default="", compare=False)
    """The file that declared it."""
    shutdown: ShutdownValue = "infinity"
    """How the parent stops it (S-5); ``"infinity"`` by default."""
    name: str | None = None
    """Registered name, or ``None``."""

    @property
    def type(self) -> Literal["supervisor"]:
        """Always ``"supervisor"`` (mirrors :attr:`ChildConfig.type`)."""
        return "supervisor"

    def walk(self) -> Iterator[tuple[int, ChildConfig | SupervisorConfig]]:
        """Yield ``(depth, spec)`` for this supervisor (depth 0) and all descendants, in start order."""
        yield 0, self
        for child in self.children:
            if isinstance(child, SupervisorConfig):
                for depth, spec in child.walk():
                    yield depth + 1, spec
            else:
                yield 1, child


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """The whole validated configuration of a node."""

    path: Path
    """Absolute path of the node config file."""
    node: NodeSection = field(default_factory=NodeSection)
    """``[node]``."""
    logging: LoggingSection = field(default_factory=LoggingSection)
    """``[logging]``."""
    endpoint: EndpointSection = field(default_factory=EndpointSection)
    """``[endpoint]``."""
    channels: ChannelsSection = field(default_factory=ChannelsSection)
    """``[channels]`` and its routes."""
    pubsub: PubSubSection = field(default_factory=PubSubSection)
    """``[pubsub]``."""
    history: HistorySection = field(default_factory=HistorySection)
    """``[history]``."""
    root: RootSection = field(default_factory=RootSection)
    """``[root]``."""
    subtrees: tuple[SupervisorConfig, ...] = ()
    """The root's subtrees in start order (inline ``[[supervisors]]``, then included files)."""
    include: tuple[str, ...] = _DEFAULT_INCLUDE
    """The ``include`` glob patterns, as written."""


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


# --------------------------------------------------------------------------- loader


def _supervisor_classes() -> tuple[type[Any], ...]:
    """The runtime's supervisor classes, or () while ``ackvisor.supervisor`` is not importable."""
    try:
        from ackvisor.supervisor import DynamicSupervisor, Supervisor
    except ImportError:
        return ()
    return (Supervisor, DynamicSupervisor)


def _syntax_error_position(message: str, text: str) -> tuple[str, int | None]:
    """Split tomllib's ``"... (at line N, column M)"`` into a message and line N."""
    match = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if match:
        return f"{message[: match.start()]} (column {match.group(2)})", int(match.group(1))
    match = re.search(r"\s*\(at end of document\)$", message)
    if match:
        return f"{message[: match.start()]} (at end of document)", max(1, len(text.rstrip("\n").split("\n")))
    return message, None


_GLOB_MAGIC: Final = re.compile(r"[*?[]")
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


class _Loader:
    """One run of :func:`load_config`; collects problems."""

    def __init__(self, path: str | os.PathLike[str], overrides: Sequence[str], import_targets: bool) -> None:
        self.file = os.fspath(path)
        self.config_dir = os.path.dirname(self.file)
        self.overrides = overrides
        self.import_targets = import_targets
        self.problems: list[ConfigProblem] = []
        self.modules: dict[str, ModuleType | Exception] = {}
        self.subtree_ids: dict[str, str] = {}
        self.names: dict[str, str] = {}
        self.include_positions: list[int] = []

    # -- files

    def read(self, file: str) -> tuple[str, dict[str, Any]] | None:
        """Read and parse one TOML file; on failure record a problem and return None."""
        try:
            with open(file, "rb") as handle:
                text = handle.read().decode("utf-8")
        except OSError as exc:
            found = f"{type(exc).__name__}: {exc.strerror or exc}"
            self.problems.append(ConfigProblem(file, "", None, found, "a readable TOML file"))
            return None
        except UnicodeDecodeError as exc:
            self.problems.append(ConfigProblem(file, "", None, str(exc), "a UTF-8 encoded TOML file"))
            return None
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            message, line = _syntax_error_position(str(exc), text)
            self.problems.append(ConfigProblem(file, "", line, message, "valid TOML"))
            return None

    # -- main

    def load(self) -> NodeConfig:
        parsed = self.read(self.file)
        if parsed is None:
            raise ConfigError(self.problems)
        text, tree = parsed
        overridden = _apply_overrides(tree, self.overrides, self.problems)
        ctx = _FileCtx(self.problems, self.file, _Locator(text), overridden)
        top = _Table(ctx, (), tree, "the node configuration")

        include = self.include(ctx, top.raw("include"))
        node = self.node_section(ctx, top.raw("node"))
        logging = self.logging_section(ctx, top.raw("logging"))
        endpoint = self.endpoint_section(ctx, top.raw("endpoint"))
        channels = self.channels_section(ctx, top.raw("channels"))
        pubsub = self.pubsub_section(ctx, top.raw("pubsub"))
        history = self.history_section(ctx, top.raw("history"))
        root = self.root_section(ctx, top.raw("root"))

        subtrees: list[SupervisorConfig] = []
        inline = top.raw("supervisors")
        if inline is not MISSING:
            if not isinstance(inline, list):
                ctx.problem(("supervisors",), inline, "an array of tables [[supervisors]]")
            else:
                for index, raw in enumerate(inline):
                    sup = self.supervisor(ctx, ("supervisors", index), raw, self.file, root_level=True)
                    if sup is not None:
                        subtrees.append(sup)

        top.finish()
        for file in self.included_files(ctx, include):
            sup = self.subtree_file(file)
            if sup is not None:
                subtrees.append(sup)

        if self.problems:
            raise ConfigError(self.problems)
        return NodeConfig(
            path=Path(os.path.abspath(self.file)),
            node=node,
            logging=logging,
            endpoint=endpoint,
            channels=channels,
            pubsub=pubsub,
            history=history,
            root=root,
            subtrees=tuple(subtrees),
            include=include,
        )

    # -- include

    def include(self, ctx: _FileCtx, raw: object) -> tuple[str, ...]:
        """The valid ``include`` patterns (their positions go to ``include_positions``)."""
        if raw is MISSING:
            self.include_positions = list(range(len(_DEFAULT_INCLUDE)))
            return _DEFAULT_INCLUDE
        if not isinstance(raw, list):
            ctx.problem(("include",), raw, 'a list of glob patterns, e.g. ["supervisors/*.toml"]')
            return ()
        patterns: list[str] = []
        self.include_positions = []
        for index, item in enumerate(raw):
            if isinstance(item, str) and item.strip():
                patterns.append(item)
                self.include_positions.append(index)
            else:
                ctx.problem(("include", index), item, "a glob pattern (a non-empty string)")
        return tuple(patterns)

    def included_files(self, ctx: _FileCtx, patterns: tuple[str, ...]) -> list[str]:
        """Files matched by ``include``, in order, without duplicates or the node file itself."""
        seen = {os.path.realpath(self.file)}
        files: list[str] = []
        root_dir = self.config_dir or None
        for index, pattern in zip(self.include_positions, patterns, strict=True):
            if _GLOB_MAGIC.search(pattern):
                matches = sorted(glob.glob(pattern, root_dir=root_dir, recursive=True))
                matches = [m for m in matches if os.path.isfile(os.path.join(self.config_dir, m))]
            else:
                full = os.path.join(self.config_dir, pattern)
                if not os.path.isfile(full):
                    ctx.problem(
                        ("include", index),
                        pattern,
                        "an existing file relative to the config file's directory "
                        "(a literal path must exist; use a glob pattern to make it optional)",
                    )
                    continue
                matches = [pattern]
            for match in matches:
                full = os.path.join(self.config_dir, match)
                real = os.path.realpath(full)
                if real not in seen:
                    seen.add(real)
                    files.append(full)
        return files

    def subtree_file(self, file: str) -> SupervisorConfig | None:
        """Read one included file and validate its single ``[supervisor]``."""
        parsed = self.read(file)
        if parsed is None:
            return None
        text, tree = parsed
        ctx = _FileCtx(self.problems, file, _Locator(text))
        top = _Table(ctx, (), tree, "a subtree file")
        raw = top.raw("supervisor")
        sup = None
        if raw is MISSING:
            ctx.problem(("supervisor",), MISSING, "a [supervisor] table (each included file declares one supervisor)")
        else:
            sup = self.supervisor(ctx, ("supervisor",), raw, file, root_level=True)
        top.finish()
        return sup

    # -- sections

    def node_section(self, ctx: _FileCtx, raw: object) -> NodeSection:
        default = NodeSection()
        t = _Table(ctx, ("node",), raw, "[node]")
        name = t.take("name", _string, default.name)
        shutdown_timeout = t.take("shutdown_timeout", _duration(), default.shutdown_timeout)
        drain_window = t.take("drain_window", _duration(), default.drain_window)
        pid_file = t.take("pid_file", _path_string, str(default.pid_file))
        t.finish(_SECTION_HINTS)
        if drain_window > shutdown_timeout:
            ctx.problem(
                ("node", "drain_window"),
                t.data.get("drain_window", drain_window),
                f"a duration not longer than node.shutdown_timeout ({format_duration(shutdown_timeout)})",
            )
        pid_path = Path(pid_file)
        if not pid_path.is_absolute():
            pid_path = Path(os.path.abspath(os.path.join(self.config_dir, pid_file)))
        return NodeSection(name, shutdown_timeout, drain_window, pid_path)

    def logging_section(self, ctx: _FileCtx, raw: object) -> LoggingSection:
        default = LoggingSection()
        t = _Table(ctx, ("logging",), raw, "[logging]")
        fmt = t.take("format", _choice("auto", "console", "json"), default.format)
        level = t.take("level", _choice("debug", "info", "warning", "error"), default.level)
        t.finish(_SECTION_HINTS)
        return LoggingSection(fmt, level)

    def endpoint_section(self, ctx: _FileCtx, raw: object) -> EndpointSection:
        default = EndpointSection()
        t = _Table(ctx, ("endpoint",), raw, "[endpoint]")
        host = t.take("host", _string, default.host)
        port = t.take("port", _integer(0, 65535), default.port)
        path = t.take("path", _endpoint_path, default.path)
        origins: list[str] = []
        raw_origins = t.raw("check_origin")
        if raw_origins is not MISSING:
            if not isinstance(raw_origins, list):
                ctx.problem(("endpoint", "check_origin"), raw_origins, "a list of origins (empty = allow all)")
            else:
                for index, item in enumerate(raw_origins):
                    try:
                        origins.append(_origin(item))
                    except _Bad as bad:
                        ctx.problem(("endpoint", "check_origin", index), item, bad.expected)
        max_frame_bytes = t.take("max_frame_bytes", _integer(1), default.max_frame_bytes)
        heartbeat_timeout = t.take("heartbeat_timeout", _duration(positive=True), default.heartbeat_timeout)
        max_channels = t.take("max_channels_per_socket", _integer(1), default.max_channels_per_socket)
        t.finish(_SECTION_HINTS)
        return EndpointSection(
            host, port, path, tuple(origins), max_frame_bytes, heartbeat_timeout, max_channels
        )

    def channels_section(self, ctx: _FileCtx, raw: object) -> ChannelsSection:
        default = ChannelsSection()
        t = _Table(ctx, ("channels",), raw, "[channels]")
        ack_timeout = t.take("ack_timeout", _duration(positive=True), default.ack_timeout)
        on_no_ack = t.take("on_no_ack", _choice("close_connection", "error_channel"), default.on_no_ack)
        max_unacked = t.take("max_unacked", _integer(1), default.max_unacked)
        max_unacked_bytes = t.take("max_unacked_bytes", _integer(1), default.max_unacked_bytes)
        routes: list[RouteConfig] = []
        raw_routes = t.raw("routes")
        if raw_routes is not MISSING:
            if not isinstance(raw_routes, dict):
                ctx.problem(("channels", "routes"), raw_routes, 'a table of topic pattern = "pkg.module:ChannelClass"')
            else:
                for pattern, target in raw_routes.items():
                    path = ("channels", "routes", pattern)
                    pattern_ok = bool(pattern) and "*" not in pattern[:-1]
                    if not pattern_ok:
                        ctx.problem(path, pattern, _PATTERN_EXPECTED)
                    try:
                        target = _target(target)
                    except _Bad as bad:
                        ctx.problem(path, target, bad.expected)
                        continue
                    cls = self.resolve(ctx, path, target, self.check_channel) if self.import_targets else None
                    if not pattern_ok:
                        continue
                    shadow = next((r for r in routes if _shadows(r.pattern, pattern)), None)
                    if shadow is not None:
                        ctx.problem(
                            path,
                            pattern,
                            f"a route reachable under first-match-wins (every topic it matches is taken by "
                            f"{shadow.pattern!r} at {ctx.where(('channels', 'routes', shadow.pattern))}; "
                            "list the more specific pattern first)",
                        )
                        continue
                    routes.append(RouteConfig(pattern, target, cls))
        t.finish(_SECTION_HINTS)
        return ChannelsSection(ack_timeout, on_no_ack, tuple(routes), max_unacked, max_unacked_bytes)

    def pubsub_section(self, ctx: _FileCtx, raw: object) -> PubSubSection:
        default = PubSubSection()
        t = _Table(ctx, ("pubsub",), raw, "[pubsub]")
        adapter = t.take("adapter", _choice("local", "redis"), default.adapter)
        url = t.take("url", _redis_url, default.url)
        t.finish(_SECTION_HINTS)
        return PubSubSection(adapter, url)

    def history_section(self, ctx: _FileCtx, raw: object) -> HistorySection:
        default = HistorySection()
        t = _Table(ctx, ("history",), raw, "[history]")
        size = t.take("size", _integer(0), default.size)
        max_age = t.take("max_age", _duration(), default.max_age)
        t.finish(_SECTION_HINTS)
        return HistorySection(size, max_age)

    def root_section(self, ctx: _FileCtx, raw: object) -> RootSection:
        default = RootSection()
        t = _Table(ctx, ("root",), raw, "[root]")
        strategy = t.take("strategy", _choice(*_STRATEGIES), default.strategy)
        max_restarts = t.take("max_restarts", _integer(0), default.max_restarts)
        max_seconds = t.take("max_seconds", _duration(positive=True), default.max_seconds)
        t.finish(_SECTION_HINTS)
        return RootSection(strategy, max_restarts, max_seconds)

    # -- supervisors and children

    def register_name(self, ctx: _FileCtx, path: _PathT, name: str | None) -> None:
        if name is None:
            return
        if name in self.names:
            ctx.problem(path, name, f"a registered name unique in the node (already used at {self.names[name]})")
        else:
            self.names[name] = ctx.where(path)

    def supervisor(
        self,
        ctx: _FileCtx,
        path: _PathT,
        raw: object,
        source_file: str,
        *,
        root_level: bool,
    ) -> SupervisorConfig | None:
        """Validate an inline supervisor table (a subtree, or a ``type = "supervisor"`` child)."""
        t = _Table(ctx, path, raw, "a supervisor")
        if not t.ok:
            return None
        sup_id = t.take("id", _identifier)
        if root_level and sup_id is not None:
            if sup_id in RESERVED_ROOT_CHILD_IDS:
                ctx.problem(
                    (*path, "id"),
                    sup_id,
                    "an id other than the root's built-in children " + ", ".join(sorted(RESERVED_ROOT_CHILD_IDS)),
                )
            elif sup_id in self.subtree_ids:
                ctx.problem(
                    (*path, "id"),
                    sup_id,
                    f"a subtree id unique among all subtrees (already used at {self.subtree_ids[sup_id]})",
                )
            else:
                self.subtree_ids[sup_id] = ctx.where((*path, "id"))
        t.take("type", _choice("supervisor"), "supervisor")
        if root_level and t.has("start"):
            ctx.problem(
                (*path, "start"),
                t.raw("start"),
                'no "start" key: a subtree is declared inline with strategy, max_restarts, '
                "max_seconds and its children",
            )
        strategy = t.take("strategy", _choice(*_STRATEGIES), "one_for_one")
        max_restarts = t.take("max_restarts", _integer(0), 3)
        max_seconds = t.take("max_seconds", _duration(positive=True), 5.0)
        restart = t.take("restart", _choice(*_RESTARTS), "permanent")
        shutdown = t.take("shutdown", _shutdown, "infinity")
        name = t.take("name", _identifier, None)
        self.register_name(ctx, (*path, "name"), name)
        children = self.children(ctx, path, t.raw("children"), source_file)
        t.finish(_UNSUPPORTED_HINTS)
        if sup_id is None:
            return None
        return SupervisorConfig(
            id=sup_id,
            strategy=strategy,
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            restart=restart,
            children=children,
            source_file=source_file,
            shutdown=shutdown,
            name=name,
        )

    def children(
        self, ctx: _FileCtx, path: _PathT, raw: object, source_file: str
    ) -> tuple[ChildConfig | SupervisorConfig, ...]:
        """Validate ``[[...children]]``: each child, and that ids are unique."""
        if raw is MISSING:
            return ()
        children_path = (*path, "children")
        if not isinstance(raw, list):
            ctx.problem(children_path, raw, f"an array of tables [[{_format_key(children_path)}]]")
            return ()
        result: list[ChildConfig | SupervisorConfig] = []
        ids: dict[str, int] = {}
        for index, item in enumerate(raw):
            child_path = (*children_path, index)
            child: ChildConfig | SupervisorConfig | None
            if isinstance(item, dict) and item.get("type") == "supervisor" and "start" not in item:
                child = self.supervisor(ctx, child_path, item, source_file, root_level=False)
            else:
                child = self.start_child(ctx, child_path, item)
            if child is None:
                continue
            if child.id in ids:
                first = ctx.where((*children_path, ids[child.id], "id"))
                ctx.problem(
                    (*child_path, "id"),
                    child.id,
                    f"an id unique within its supervisor (already used at {first})",
                )
                continue
            ids[child.id] = index
            result.append(child)
        return tuple(result)

    def start_child(self, ctx: _FileCtx, path: _PathT, raw: object) -> ChildConfig | None:
        """Validate a child with a ``start`` target: a worker, or a start-form supervisor."""
        t = _Table(ctx, path, raw, "a child spec")
        if not t.ok:
            return None
        child_type = t.take("type", _choice("worker", "supervisor"), "worker")
        child_id = t.take("id", _identifier)
        start = t.take("start", _target)
        target = None
        if start is not None and self.import_targets:
            check = self.check_supervisor_class if child_type == "supervisor" else self.check_worker
            target = self.resolve(ctx, (*path, "start"), start, check)
        args_raw = t.raw("args")
        args: tuple[Any, ...] = ()
        if args_raw is not MISSING:
            if isinstance(args_raw, list):
                args = _freeze(args_raw)
            else:
                ctx.problem((*path, "args"), args_raw, "a list of positional arguments")
        kwargs_raw = t.raw("kwargs")
        kwargs = FrozenMapping()
        if kwargs_raw is not MISSING:
            if isinstance(kwargs_raw, dict):
                kwargs = _freeze(kwargs_raw)
            else:
                ctx.problem((*path, "kwargs"), kwargs_raw, "a table of keyword arguments")
        restart = t.take("restart", _choice(*_RESTARTS), "permanent")
        shutdown = t.take("shutdown", _shutdown, "infinity" if child_type == "supervisor" else 5.0)
        name = t.take("name", _identifier, None)
        self.register_name(ctx, (*path, "name"), name)
        t.finish(_START_SUPERVISOR_HINTS if child_type == "supervisor" else _WORKER_HINTS)
        if child_id is None or start is None:
            return None
        return ChildConfig(
            id=child_id,
            start=start,
            target=target,
            args=args,
            kwargs=kwargs,
            restart=restart,
            shutdown=shutdown,
            type=child_type,
            name=name,
        )

    # -- import targets

    def resolve(
        self, ctx: _FileCtx, path: _PathT, target: str, check: Callable[[object], str | None]
    ) -> Any:
        """Import ``"pkg.module:Attr"`` and check its kind; on failure record a problem and return None."""
        module_name, _, attribute = target.partition(":")
        module = self.modules.get(module_name)
        if module is None:
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:  # noqa: BLE001 - any failure of the import is a config problem
                module = exc
            self.modules[module_name] = module
        if isinstance(module, Exception):
            ctx.problem(
                path,
                target,
                f"an importable module {module_name!r} ({type(module).__name__}: {module})",
            )
            return None
        obj: Any = module
        for part in attribute.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                candidates = [name for name in dir(obj) if not name.startswith("_")]
                ctx.problem(
                    path,
                    target,
                    f"an attribute {attribute!r} in module {module_name!r}{_did_you_mean(part, candidates)}",
                )
                return None
        problem = check(obj)
        if problem is not None:
            ctx.problem(path, obj, problem)
            return None
        return obj

    @staticmethod
    def check_worker(obj: object) -> str | None:
        """A worker's start target: an ``Actor`` subclass (not a supervisor) or an async function."""
        expected = "an Actor subclass or an async function (async def) as a worker's start target"
        if inspect.iscoroutinefunction(obj):
            return None
        if not inspect.isclass(obj):
            return expected
        if _supervisor_classes() and issubclass(obj, _supervisor_classes()):
            return 'type = "supervisor" for a supervisor class (or an inline supervisor without "start")'
        try:
            from ackvisor.actor import Actor
        except ImportError:  # the runtime layer is not there yet: a class is all we can check
            return None
        return None if issubclass(obj, Actor) else expected

    @staticmethod
    def check_supervisor_class(obj: object) -> str | None:
        """A start-form supervisor's target: a ``Supervisor`` or ``DynamicSupervisor`` subclass."""
        classes = _supervisor_classes()
        if inspect.isclass(obj) and (not classes or issubclass(obj, classes)):
            return None
        return (
            "a Supervisor or DynamicSupervisor subclass as the start of a type = \"supervisor\" child "
            "(or drop \"start\" and declare the supervisor inline)"
        )

    @staticmethod
    def check_channel(obj: object) -> str | None:
        """A route target: a ``Channel`` subclass."""
        expected = "a Channel subclass (ackvisor.channels.channel.Channel) as a route target"
        if not inspect.isclass(obj):
            return expected
        try:
            from ackvisor.channels.channel import Channel
        except ImportError:  # the channels layer is not there yet: a class is all we can check
            return None
        return None if issubclass(obj, Channel) else expected


def load_config(
    path: str | os.PathLike[str],
    *,
    overrides: Sequence[str] = (),
    import_targets: bool = True,
) -> NodeConfig:
    """Read, override, include, validate and (optionally) import a node configuration.

    Args:
        path: the node config file. ``include`` globs and a relative ``pid_file`` are
            resolved against its directory.
        overrides: ``--set`` arguments, ``"dotted.key=value"``, applied to the node
            file's tree before validation, in order. The value is parsed as a TOML value
            when it is one (``5``, ``true``, ``"x"``, ``[1, 2]``) and taken as a string
            otherwise (so ``channels.ack_timeout=1.5s`` works). Numeric key parts index
            arrays (``supervisors.0.max_restarts=5``). Problems with overridden values,
            unknown keys included, name the file ``"--set"``.
        import_targets: import every ``"pkg.module:Attr"`` (children's ``start`` and
            route targets) and check its kind; with False only the syntax is checked and
            ``ChildConfig.target`` / ``RouteConfig.cls`` are None.

    Returns:
        The validated, frozen :class:`NodeConfig`.

    Raises:
        ConfigError: listing every problem found in every file.
    """
    return _Loader(path, overrides, import_targets).load()

