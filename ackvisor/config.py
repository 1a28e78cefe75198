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
    gc_threshold = 10000               # CPython's young-generation GC threshold (its default: 700)

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
    write_timeout = "10s"
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

import os
import reprlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias

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
    gc_threshold: int = 10_000
    """CPython's young-generation GC threshold while the daemon runs (>= 100; CPython's default is 700).

    A server keeps ~200 GC-tracked objects per connection alive; with young
    collections every 700 allocations, objects that live across a few scheduler
    passes get promoted and full collections follow (0.6 s each at 5,000
    connections). Fewer young collections let more of them die young."""

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
    write_timeout: float = 10.0
    """Seconds a write may wait with no frame reaching the client before the connection crashes (> 0)."""
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
    from ackvisor.config_loader import _Loader  # deferred: config_loader imports this module

    return _Loader(path, overrides, import_targets).load()
