"""The loader behind :func:`ackvisor.config.load_config`.

Reads the node file, applies ``--set`` overrides, validates every section, follows
``include`` to the subtree files and imports ``start``/route targets, collecting every
problem into one :class:`~ackvisor.config.ConfigError`.
"""

from __future__ import annotations

import glob
import importlib
import inspect
import os
import re
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from ackvisor.config import (
    _DEFAULT_INCLUDE,
    _RESTARTS,
    _STRATEGIES,
    MISSING,
    RESERVED_ROOT_CHILD_IDS,
    ChannelsSection,
    ChildConfig,
    ConfigError,
    ConfigProblem,
    EndpointSection,
    FrozenMapping,
    HistorySection,
    LoggingSection,
    NodeConfig,
    NodeSection,
    PubSubSection,
    RootSection,
    RouteConfig,
    SupervisorConfig,
    _freeze,
)
from ackvisor.config_lines import _format_key, _Locator, _PathT
from ackvisor.config_overrides import _apply_overrides
from ackvisor.config_schema import (
    _PATTERN_EXPECTED,
    _SECTION_HINTS,
    _START_SUPERVISOR_HINTS,
    _UNSUPPORTED_HINTS,
    _WORKER_HINTS,
    _Bad,
    _choice,
    _did_you_mean,
    _duration,
    _endpoint_path,
    _FileCtx,
    _identifier,
    _integer,
    _origin,
    _path_string,
    _redis_url,
    _shadows,
    _shutdown,
    _string,
    _Table,
    _target,
)
from ackvisor.durations import format_duration

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
        gc_threshold = t.take("gc_threshold", _integer(100), default.gc_threshold)
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
        return NodeSection(name, shutdown_timeout, drain_window, pid_path, gc_threshold)

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
        write_timeout = t.take("write_timeout", _duration(positive=True), default.write_timeout)
        max_channels = t.take("max_channels_per_socket", _integer(1), default.max_channels_per_socket)
        t.finish(_SECTION_HINTS)
        return EndpointSection(
            host,
            port,
            path,
            tuple(origins),
            max_frame_bytes,
            heartbeat_timeout,
            write_timeout=write_timeout,
            max_channels_per_socket=max_channels,
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
