"""ackvisor.config and ackvisor.durations: TOML -> validated, frozen node config."""

from __future__ import annotations

import math
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from ackvisor.config import (
    MISSING,
    ChannelsSection,
    ChildConfig,
    ConfigError,
    ConfigProblem,
    EndpointSection,
    FrozenMapping,
    HistorySection,
    LoggingSection,
    NodeConfig,
    PubSubSection,
    RootSection,
    RouteConfig,
    SupervisorConfig,
    load_config,
)
from ackvisor.durations import DurationError, format_duration, parse_duration, parse_shutdown

TESTS = Path(__file__).parent
CONFIGS = TESTS / "configs"


@pytest.fixture(autouse=True)
def _targets_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/config_targets.py importable as ``config_targets``."""
    monkeypatch.syspath_prepend(str(TESTS))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line of the n-th line of ``path`` containing ``needle``."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if needle in line]
    return hits[occurrence - 1]


def problems_of(path: Path, **kwargs: object) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    return info.value.problems


def only_problem(path: Path, **kwargs: object) -> ConfigProblem:
    problems = problems_of(path, **kwargs)
    assert len(problems) == 1, "\n".join(map(str, problems))
    return problems[0]


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        (" 5s ", 5.0),
        ("0s", 0.0),
        (1.5, 1.5),
        (5, 5.0),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(value: object, seconds: float) -> None:
    result = parse_duration(value)
    assert isinstance(result, float)
    assert math.isclose(result, seconds)


@pytest.mark.parametrize(
    "value",
    ["5", "5 s", "-1s", "1d", "5S", "", "infinity", "brutal_kill", -1, True, None, math.nan, math.inf, [5]],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration") as info:
        parse_duration(value)
    assert isinstance(info.value, DurationError)
    assert info.value.found is value or info.value.found == value or value != value


def test_parse_shutdown() -> None:
    assert parse_shutdown("brutal_kill") == "brutal_kill"
    assert parse_shutdown("infinity") == "infinity"
    assert parse_shutdown("5s") == 5.0
    assert parse_shutdown(0) == 0.0
    with pytest.raises(ValueError, match='"brutal_kill", "infinity", or a duration'):
        parse_shutdown("forever")


@pytest.mark.parametrize(("seconds", "text"), [(0.5, "500ms"), (5.0, "5s"), (120.0, "2m"), (3600.0, "1h"), (1.5, "1.5s")])
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds
    assert format_duration("infinity") == "infinity"


# --------------------------------------------------------------------------- valid configs


def test_empty_config_gives_all_defaults() -> None:
    config = load_config(CONFIGS / "empty.toml")
    assert config.path == (CONFIGS / "empty.toml").absolute()
    assert config.node.name == "ackvisor"
    assert config.node.shutdown_timeout == 30.0
    assert config.node.drain_window == 2.0
    assert config.node.gc_threshold == 10000
    assert config.node.pid_file == (CONFIGS / "ackvisor.pid").absolute()
    assert config.node.control_socket == (CONFIGS / "ackvisor.sock").absolute()
    assert config.logging == LoggingSection()
    assert config.endpoint == EndpointSection(
        host="127.0.0.1",
        port=4000,
        path="/socket",
        check_origin=(),
        max_frame_bytes=1048576,
        heartbeat_timeout=60.0,
        write_timeout=10.0,
        max_channels_per_socket=100,
    )
    assert config.channels == ChannelsSection(ack_timeout=5.0, on_no_ack="close_connection", routes=())
    assert config.pubsub == PubSubSection(adapter="local", url="redis://127.0.0.1:6379/0")
    assert config.history == HistorySection(size=10000, max_age=300.0)
    assert config.root == RootSection(strategy="one_for_one", max_restarts=3, max_seconds=5.0)
    assert config.include == ("supervisors/*.toml",)
    assert config.subtrees == ()


def test_full_config_loads_every_section() -> None:
    config = load_config(CONFIGS / "full" / "config.toml")
    full = CONFIGS / "full"
    assert config.node.name == "full-node"
    assert (config.node.shutdown_timeout, config.node.drain_window) == (45.0, 0.5)
    assert config.node.pid_file == (full / "run" / "full.pid").absolute()
    assert config.node.control_socket == (full / "run" / "full.sock").absolute()
    assert config.logging == LoggingSection(format="json", level="debug")
    assert config.endpoint.port == 4100
    assert config.endpoint.path == "/live/socket"
    assert config.endpoint.check_origin == ("https://example.com", "//*.example.org", "http://localhost:8080")
    assert config.endpoint.heartbeat_timeout == 90.0
    assert config.endpoint.write_timeout == 2.5
    assert config.channels.ack_timeout == 1.5
    assert config.channels.on_no_ack == "error_channel"
    assert [(r.pattern, r.target) for r in config.channels.routes] == [
        ("room:*", "config_targets:RoomChannel"),
        ("lobby", "config_targets:RoomChannel"),
    ]
    import config_targets

    assert config.channels.routes[0].cls is config_targets.RoomChannel
    assert config.channels.routes[0].matches("room:42") and not config.channels.routes[0].matches("lobby:1")
    assert config.channels.routes[1].matches("lobby") and not config.channels.routes[1].matches("lobby2")
    assert config.pubsub == PubSubSection(adapter="redis", url="redis://redis.internal:6379/2")
    assert config.history == HistorySection(size=500, max_age=120.0)
    assert config.root == RootSection(strategy="rest_for_one", max_restarts=10, max_seconds=30.0)

    # inline [[supervisors]] first, then include patterns in order, each sorted
    assert [s.id for s in config.subtrees] == ["inline", "cache", "rooms", "literal"]
    inline, cache, rooms, literal = config.subtrees
    assert inline.source_file == str(full / "config.toml")
    assert inline.strategy == "one_for_all"
    assert inline.children[0].target is config_targets.ticker

    assert cache.source_file == str(full / "supervisors" / "10_cache.toml")
    assert (cache.max_restarts, cache.max_seconds, cache.restart) == (5, 10.0, "transient")
    assert cache.shutdown == "infinity"
    store, ticker = cache.children
    assert isinstance(store, ChildConfig)
    assert store == ChildConfig(
        id="store",
        start="config_targets:Store",
        args=(1, "two", (3, 4)),
        kwargs=FrozenMapping({"size": 100, "tags": ("a", "b"), "nested": FrozenMapping({"deep": True})}),
        restart="permanent",
        shutdown="brutal_kill",
        type="worker",
        name="cache_store",
    )
    assert store.target is config_targets.Store
    assert ticker.shutdown == 2.0 and ticker.restart == "temporary"

    registry, workers, sessions, last = rooms.children
    assert isinstance(registry, ChildConfig) and registry.restart == "transient"
    assert isinstance(workers, SupervisorConfig)
    assert workers.type == "supervisor"
    assert (workers.strategy, workers.max_restarts, workers.max_seconds) == ("one_for_all", 1, 2.0)
    assert workers.shutdown == "infinity"  # S-3 default for supervisors
    assert workers.name == "room_workers"
    assert workers.children[0].target is config_targets.Namespace.Inner
    assert workers.children[0].shutdown == "infinity"
    assert isinstance(last, ChildConfig) and last.shutdown == 5.0  # S-3 default for workers
    # a supervisor class as a start-form child: type "supervisor", shutdown defaults to infinity
    from ackvisor.supervisor import DynamicSupervisor

    assert isinstance(sessions, ChildConfig)
    assert (sessions.type, sessions.shutdown, sessions.target) == ("supervisor", "infinity", DynamicSupervisor)
    assert sessions.kwargs == {"max_children": 1000}
    assert [(depth, spec.id, spec.type) for depth, spec in rooms.walk()] == [
        (0, "rooms", "supervisor"),
        (1, "registry", "worker"),
        (1, "workers", "supervisor"),
        (2, "inner", "worker"),
        (1, "sessions", "supervisor"),
        (1, "last", "worker"),
    ]
    assert literal.children == ()


def test_start_arguments_are_fresh_mutable_copies() -> None:
    config = load_config(CONFIGS / "full" / "config.toml")
    store = config.subtrees[1].children[0]
    assert isinstance(store, ChildConfig)
    args, kwargs = store.start_arguments()
    assert args == [1, "two", [3, 4]]
    assert kwargs == {"size": 100, "tags": ["a", "b"], "nested": {"deep": True}}
    args[2].append(5)
    kwargs["tags"].append("c")
    assert store.start_arguments() == ([1, "two", [3, 4]], {"size": 100, "tags": ["a", "b"], "nested": {"deep": True}})
    with pytest.raises(TypeError):
        store.kwargs["size"] = 1  # type: ignore[index]


def test_specs_compare_by_value_and_are_hashable() -> None:
    imported = load_config(CONFIGS / "full" / "config.toml")
    plain = load_config(CONFIGS / "full" / "config.toml", import_targets=False)
    assert all(c.target is None for s in plain.subtrees for _, c in s.walk() if isinstance(c, ChildConfig))
    assert all(r.cls is None for r in plain.channels.routes)
    # target/cls/source_file do not take part in equality: same file, same specs
    assert plain.subtrees == imported.subtrees
    assert plain.channels == imported.channels
    assert hash(plain.subtrees) == hash(imported.subtrees)
    assert len({*plain.subtrees, *imported.subtrees}) == 4


def test_reload_diff_sees_only_changed_children(tmp_path: Path) -> None:
    shutil.copytree(CONFIGS / "full", tmp_path / "full")
    before = load_config(tmp_path / "full" / "config.toml")
    cache_file = tmp_path / "full" / "supervisors" / "10_cache.toml"
    cache_file.write_text(cache_file.read_text().replace('restart = "temporary"', 'restart = "transient"'))
    after = load_config(tmp_path / "full" / "config.toml")
    old, new = before.subtrees[1], after.subtrees[1]
    changed = [a.id for a, b in zip(old.children, new.children, strict=True) if a != b]
    assert changed == ["ticker"]
    assert before.subtrees[2] == after.subtrees[2]


# --------------------------------------------------------------------------- overrides


def test_overrides_nested_number_string_duration_list_and_index() -> None:
    config = load_config(
        CONFIGS / "full" / "config.toml",
        overrides=[
            "endpoint.port=5000",
            "channels.ack_timeout=1.5s",
            'node.name="edge node"',
            "logging.level = warning",
            'endpoint.check_origin=["https://a.example"]',
            "supervisors.0.max_restarts=7",
            'channels.routes."topic:*"=config_targets:RoomChannel',
            "history.size=0",
        ],
    )
    assert config.endpoint.port == 5000
    assert config.channels.ack_timeout == 1.5
    assert config.node.name == "edge node"
    assert config.logging.level == "warning"
    assert config.endpoint.check_origin == ("https://a.example",)
    assert config.subtrees[0].max_restarts == 7
    assert config.channels.routes[-1] == RouteConfig("topic:*", "config_targets:RoomChannel")
    assert config.history.size == 0


def test_override_creates_missing_tables() -> None:
    config = load_config(CONFIGS / "empty.toml", overrides=["pubsub.adapter=redis", "root.max_seconds=10s"])
    assert config.pubsub.adapter == "redis"
    assert config.root.max_seconds == 10.0


def test_override_of_unknown_key_is_reported_as_set() -> None:
    problem = only_problem(CONFIGS / "full" / "config.toml", overrides=["channels.ack_timout=1.5s"])
    assert problem.file == "--set"
    assert problem.key == "channels.ack_timout"
    assert problem.line is None
    assert problem.found == "ack_timout"
    assert "did you mean 'ack_timeout'" in problem.expected
    assert str(problem).startswith("--set: channels.ack_timout: expected one of the keys of [channels]")


def test_override_of_unknown_table_and_bad_values_are_reported_as_set() -> None:
    problems = problems_of(
        CONFIGS / "empty.toml",
        overrides=["chanels.ack_timeout=5s", "endpoint.port=http", "no_equals_sign", "node.name=a", "node.name.first=x"],
    )
    by_key = {p.key: p for p in problems}
    assert all(p.file == "--set" and p.line is None for p in problems), problems
    assert set(by_key) == {"chanels", "endpoint.port", "", "node.name.first"}
    assert "did you mean 'channels'" in by_key["chanels"].expected
    assert by_key["endpoint.port"].found == "http"
    assert by_key["endpoint.port"].expected == "an integer from 0 to 65535"
    assert by_key[""].found == "no_equals_sign"
    assert "key=value" in by_key[""].expected
    assert "a table at node.name" in by_key["node.name.first"].expected


def test_override_value_problems_keep_file_problems_in_their_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", """
        [endpoint]
        port = -1
    """)
    problems = problems_of(config, overrides=["endpoint.host=''"])
    assert [(p.file, p.key, p.line) for p in problems] == [
        ("--set", "endpoint.host", None),
        (str(config), "endpoint.port", 2),
    ]


# --------------------------------------------------------------------------- error reporting


def test_three_mistakes_give_three_problems_at_once() -> None:
    path = CONFIGS / "three_mistakes.toml"
    problems = problems_of(path)
    assert [(p.file, p.key, p.line, p.found) for p in problems] == [
        (str(path), "endpoint.port", line_of(path, "port = 70000"), 70000),
        (str(path), "channels.ack_timout", line_of(path, "ack_timout"), "ack_timout"),
        (str(path), "root.strategy", line_of(path, "one_for_none"), "one_for_none"),
    ]
    assert problems[0].expected == "an integer from 0 to 65535"
    assert "did you mean 'ack_timeout'" in problems[1].expected
    assert problems[2].expected == 'one of "one_for_one", "one_for_all", "rest_for_one"'
    with pytest.raises(ConfigError) as info:
        load_config(path)
    lines = str(info.value).splitlines()
    assert lines == [str(p) for p in problems]
    assert lines[0] == f"{path}:3: endpoint.port: expected an integer from 0 to 65535, found 70000"


def test_problem_str_without_line() -> None:
    problem = ConfigProblem("a.toml", "node.name", None, 3, "a non-empty string")
    assert str(problem) == "a.toml: node.name: expected a non-empty string, found 3"
    assert str(ConfigProblem("a.toml", "x", 4, MISSING, "a string (required)")) == (
        "a.toml:4: x: expected a string (required), found nothing"
    )


@pytest.mark.parametrize(
    ("text", "key", "line", "found", "expected"),
    [
        ('[endpoint]\nport = "4000"\n', "endpoint.port", 2, "4000", "an integer from 0 to 65535"),
        ("[endpoint]\nport = true\n", "endpoint.port", 2, True, "an integer from 0 to 65535"),
        ('[endpoint]\npath = "socket"\n', "endpoint.path", 2, "socket", 'starting with "/"'),
        ('[endpoint]\npath = "/socket/"\n', "endpoint.path", 2, "/socket/", 'without a trailing "/"'),
        ('[endpoint]\n\ncheck_origin = [\n  "https://ok.example",\n  "example.com",\n]\n',
         "endpoint.check_origin.1", 3, "example.com", "an origin like"),
        ("[endpoint]\nmax_frame_bytes = 0\n", "endpoint.max_frame_bytes", 2, 0, "an integer > 0"),
        ('[endpoint]\nheartbeat_timeout = "0s"\n', "endpoint.heartbeat_timeout", 2, "0s", "a duration > 0"),
        ('[endpoint]\nwrite_timeout = "-1s"\n', "endpoint.write_timeout", 2, "-1s", "a duration > 0"),
        ("[node]\ngc_threshold = 5\n", "node.gc_threshold", 2, 5, "an integer >= 100"),
        ('[channels]\nack_timeout = "5 seconds"\n', "channels.ack_timeout", 2, "5 seconds", "a duration > 0"),
        ('[channels]\non_no_ack = "ignore"\n', "channels.on_no_ack", 2, "ignore",
         'one of "close_connection", "error_channel"'),
        ('[channels.routes]\n"room:*" = "RoomChannel"\n', 'channels.routes."room:*"', 2, "RoomChannel",
         'an import path "package.module:Attribute"'),
        ('[channels.routes]\n"room:*" = "config_targets:RoomChannel"\n"room:lobby" = "config_targets:RoomChannel"\n',
         'channels.routes."room:lobby"', 3, "room:lobby", "every topic it matches is taken by 'room:*' at "),
        ('[logging]\nlevel = "verbose"\n', "logging.level", 2, "verbose", '"debug", "info", "warning", "error"'),
        ('[logging]\nformat = "xml"\n', "logging.format", 2, "xml", '"auto", "console", "json"'),
        ('[node]\nshutdown_timeout = "5 minutes"\n', "node.shutdown_timeout", 2, "5 minutes", "a duration"),
        ('[node]\nshutdown_timeout = "10s"\ndrain_window = "1m"\n', "node.drain_window", 3, "1m",
         "not longer than node.shutdown_timeout (10s)"),
        ('[node]\nname = ""\n', "node.name", 2, "", "a non-empty string"),
        ('[pubsub]\nadapter = "kafka"\n', "pubsub.adapter", 2, "kafka", '"local", "redis"'),
        ('[pubsub]\nurl = "http://redis"\n', "pubsub.url", 2, "http://redis", "a Redis URL"),
        ("[history]\nsize = -1\n", "history.size", 2, -1, "an integer >= 0"),
        ('[history]\nmax_age = "-5m"\n', "history.max_age", 2, "-5m", "a duration"),
        ("[root]\nmax_seconds = 0\n", "root.max_seconds", 2, 0, "a duration > 0"),
        ("[root]\nmax_restarts = 1.5\n", "root.max_restarts", 2, 1.5, "an integer >= 0"),
        ('[root]\ninclude = ["x/*.toml"]\n', "root.include", 2, "include", '"include" is a top-level key'),
        ("node = 5\n", "node", 1, 5, "a table"),
        ('include = "supervisors/*.toml"\n', "include", 1, "supervisors/*.toml", "a list of glob patterns"),
        ('[[supervisors]]\nid = "s"\nstrategy = "one_for_some"\n', "supervisors.0.strategy", 3, "one_for_some",
         '"one_for_one", "one_for_all", "rest_for_one"'),
        ('[[supervisors]]\nid = "s"\nstart = "x:Y"\n', "supervisors.0.start", 3, "x:Y", 'no "start" key'),
        ('[[supervisors]]\nid = "s"\nauto_shutdown = "never"\n', "supervisors.0.auto_shutdown", 3, "auto_shutdown",
         '"auto_shutdown" (S-22) is not supported'),
        ('[[supervisors]]\nid = "s"\n[[supervisors]]\nid = "s"\n', "supervisors.1.id", 4, "s",
         "unique among all subtrees (already used at "),
        ('[[supervisors]]\nid = "pubsub"\n', "supervisors.0.id", 2, "pubsub", "other than the root's built-in children"),
        ('[[supervisors]]\nstrategy = "one_for_one"\n', "supervisors.0.id", 1, MISSING,
         "a non-empty string without whitespace (required)"),
    ],
)
def test_each_error_names_file_key_line_found_and_expectation(
    tmp_path: Path, text: str, key: str, line: int, found: object, expected: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    problem = only_problem(config)
    assert problem.file == str(config)
    assert problem.key == key
    assert problem.line == line
    assert problem.found == found if found is not MISSING else problem.found is MISSING
    assert expected in problem.expected
    assert str(problem).startswith(f"{config}:{line}: {key}: expected ")


CHILD_HEADER = '[[supervisors]]\nid = "s"\nname = "sup"\n\n[[supervisors.children]]\nid = "c"\n'


@pytest.mark.parametrize(
    ("extra", "key", "found", "expected"),
    [
        ('start = "config_targets:Store"\nrestart = "always"\n', "restart", "always",
         '"permanent", "transient", "temporary"'),
        ('start = "config_targets:Store"\nshutdown = "forever"\n', "shutdown", "forever",
         '"brutal_kill", "infinity", or a duration'),
        ('start = "config_targets:Store"\nshutdown = -5\n', "shutdown", -5, '"brutal_kill", "infinity"'),
        ('start = "config_targets:Store"\nargs = "x"\n', "args", "x", "a list of positional arguments"),
        ('start = "config_targets:Store"\nkwargs = [1]\n', "kwargs", [1], "a table of keyword arguments"),
        ('start = "config_targets:Store"\ntype = "wroker"\n', "type", "wroker", '"worker", "supervisor"'),
        ('start = "config_targets:Store"\nname = "two words"\n', "name", "two words", "without whitespace"),
        ('start = "config_targets:Store"\nname = "sup"\n', "name", "sup", "a registered name unique in the node"),
        ('start = "config_targets:Store"\nsignificant = true\n', "significant", "significant",
         '"significant" (S-22) is not supported'),
        ('start = "config_targets:Store"\nstrategy = "one_for_all"\n', "strategy", "strategy",
         '"strategy" belongs to an inline child with type = "supervisor"'),
        ('type = "supervisor"\nstart = "ackvisor.supervisor:DynamicSupervisor"\nchildren = []\n', "children",
         "children", '"children" belongs to an inline supervisor, declared without "start"'),
        ('start = "ackvisor.supervisor:Supervisor"\n', "start", None, 'type = "supervisor" for a supervisor class'),
        ('type = "supervisor"\nstart = "config_targets:Store"\n', "start", None,
         "a Supervisor or DynamicSupervisor subclass"),
        ('start = "config_targets:Store"\nstrat = 1\n', "strat", "strat", "one of the keys of [supervisors.0.children.0]"),
        ("restart = \"permanent\"\n", "start", MISSING, 'an import path "package.module:Attribute" (exactly one ":") (required)'),
    ],
)
def test_child_spec_errors(tmp_path: Path, extra: str, key: str, found: object, expected: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(CHILD_HEADER + extra)
    problem = only_problem(config)
    assert problem.key == f"supervisors.0.children.0.{key}"
    if found is MISSING:
        assert problem.found is MISSING
        assert problem.line == 5  # the [[supervisors.children]] header
    else:
        if found is not None:
            assert problem.found == found
        assert problem.line == line_of(config, f"{key} =", 2 if key == "name" else 1)
    assert expected in problem.expected


def test_unknown_keys_at_every_level(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", """
        colour = "blue"
        [node]
        nmae = "x"
        [endpoint]
        prot = 4000
        [channels.routes]
        "room:*" = "config_targets:RoomChannel"
        [[supervisors]]
        id = "s"
        max_restart = 3
        [[supervisors.children]]
        id = "c"
        start = "config_targets:Store"
        restrat = "permanent"
    """)
    problems = problems_of(config)
    assert [(p.key, p.line, p.found) for p in problems] == [
        ("node.nmae", 3, "nmae"),
        ("endpoint.prot", 5, "prot"),
        ("supervisors.0.children.0.restrat", 14, "restrat"),
        ("supervisors.0.max_restart", 10, "max_restart"),
        ("colour", 1, "colour"),
    ]
    assert "did you mean 'name'" in problems[0].expected
    assert "did you mean 'port'" in problems[1].expected
    assert "did you mean 'restart'" in problems[2].expected
    assert "did you mean 'max_restarts'" in problems[3].expected


def test_bad_toml_syntax_names_file_and_line() -> None:
    path = CONFIGS / "syntax_error.toml"
    problem = only_problem(path)
    assert problem.file == str(path)
    assert problem.line == line_of(path, "port = = 4000")
    assert problem.expected == "valid TOML"
    assert "Invalid value" in str(problem.found)
    assert str(problem).startswith(f"{path}:{problem.line}: expected valid TOML, found ")


def test_missing_config_file() -> None:
    problem = only_problem(CONFIGS / "does_not_exist.toml")
    assert problem.file == str(CONFIGS / "does_not_exist.toml")
    assert problem.expected == "a readable TOML file"
    assert "FileNotFoundError" in str(problem.found)


# --------------------------------------------------------------------------- include


def test_include_globs_order_dedupe_and_missing(tmp_path: Path) -> None:
    config = write(tmp_path / "node.toml", """
        include = ["subs/*.toml", "deep/**/*.toml", "subs/b.toml", "nothing/*.toml", "*.toml"]
    """)
    for name in ("b", "a"):
        write(tmp_path / "subs" / f"{name}.toml", f'[supervisor]\nid = "{name}"\n')
    write(tmp_path / "deep" / "x" / "y" / "z.toml", '[supervisor]\nid = "z"\n')
    write(tmp_path / "top.toml", '[supervisor]\nid = "top"\n')
    (tmp_path / "subs" / "dir.toml").mkdir()  # a directory matched by a glob is skipped
    loaded = load_config(config)
    # sorted within a pattern, patterns in order, each file once, the node file itself never
    assert [s.id for s in loaded.subtrees] == ["a", "b", "z", "top"]
    assert loaded.subtrees[0].source_file == str(tmp_path / "subs" / "a.toml")


def test_include_is_relative_to_the_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "etc" / "node.toml", 'include = ["supervisors/*.toml"]\n')
    write(tmp_path / "etc" / "supervisors" / "one.toml", '[supervisor]\nid = "one"\n')
    monkeypatch.chdir(tmp_path)
    loaded = load_config("etc/node.toml")
    assert [s.id for s in loaded.subtrees] == ["one"]
    assert loaded.subtrees[0].source_file == str(Path("etc") / "supervisors" / "one.toml")
    assert loaded.node.pid_file == tmp_path / "etc" / "ackvisor.pid"


def test_include_problems_keep_their_positions(tmp_path: Path) -> None:
    config = write(tmp_path / "config.toml", 'include = [3, "subs/*.toml", "", "absent.toml"]\n')
    problems = problems_of(config)
    assert [(p.key, p.line, p.found) for p in problems] == [
        ("include.0", 1, 3),
        ("include.2", 1, ""),
        ("include.3", 1, "absent.toml"),
    ]
    assert "a literal path must exist" in problems[2].expected


def test_default_include_picks_up_supervisors_dir(tmp_path: Path) -> None:
    write(tmp_path / "config.toml", "")
    write(tmp_path / "supervisors" / "one.toml", '[supervisor]\nid = "one"\n')
    assert [s.id for s in load_config(tmp_path / "config.toml").subtrees] == ["one"]


def test_bad_subtrees_report_every_problem_in_every_file() -> None:
    base = CONFIGS / "bad_subtrees"
    a, b, c, d = (base / "supervisors" / f"{n}.toml" for n in "abcd")
    problems = problems_of(base / "config.toml")
    summary = [(p.file, p.key, p.line) for p in problems]
    assert summary == [
        (str(base / "config.toml"), "include.1", 1),
        (str(a), "supervisor.children.1.id", line_of(a, 'id = "cart"', 2)),
        (str(a), "supervisor.children.2.start", line_of(a, "start", 3)),
        (str(a), "supervisor.children.2.children", line_of(a, "[[supervisor.children.children]]")),
        (str(b), "supervisor.id", line_of(b, 'id = "shop"')),
        (str(b), "supervisor.children.0.name", line_of(b, 'name = "cart"')),
        (str(c), "", 4),
        (str(d), "supervisor", None),
        (str(d), "supervisors", 1),
    ], "\n".join(map(str, problems))
    by_key = {(p.file, p.key): p for p in problems}
    dup_child = by_key[(str(a), "supervisor.children.1.id")]
    assert dup_child.found == "cart"
    first_cart = line_of(a, 'id = "cart"')
    assert f"already used at {a}:{first_cart}" in dup_child.expected
    assert "a Supervisor or DynamicSupervisor subclass" in by_key[(str(a), "supervisor.children.2.start")].expected
    assert '"children" belongs to an inline supervisor' in by_key[(str(a), "supervisor.children.2.children")].expected
    dup_subtree = by_key[(str(b), "supervisor.id")]
    assert dup_subtree.found == "shop"
    assert f"unique among all subtrees (already used at {a}:2)" in dup_subtree.expected
    assert "registered name unique in the node" in by_key[(str(b), "supervisor.children.0.name")].expected
    assert by_key[(str(c), "")].expected == "valid TOML"
    assert by_key[(str(d), "supervisor")].found is MISSING
    assert "did you mean 'supervisor'" in by_key[(str(d), "supervisors")].expected


def test_nested_array_of_tables_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path / "s" / "one.toml", """
        [supervisor]
        id = "one"

        [[supervisor.children]]
        id = "first"
        start = "config_targets:Store"

        [[supervisor.children]]
        id = "group"
        type = "supervisor"

        [[supervisor.children.children]]
        id = "g1"
        start = "config_targets:Store"

        [[supervisor.children.children]]
        id = "g2"
        start = "config_targets:Store"
        restart = "sometimes"

        [[supervisor.children]]
        id = "third"
        start = "config_targets:Store"
        shutdown = "soon"
    """)
    write(tmp_path / "config.toml", 'include = ["s/*.toml"]\n')
    problems = problems_of(tmp_path / "config.toml")
    assert [(p.key, p.line) for p in problems] == [
        ("supervisor.children.1.children.1.restart", line_of(path, "sometimes")),
        ("supervisor.children.2.shutdown", line_of(path, '"soon"')),
    ]


# --------------------------------------------------------------------------- import targets


def test_missing_module_missing_attribute_wrong_kind() -> None:
    path = CONFIGS / "bad_targets.toml"
    problems = problems_of(path)
    by_key = {p.key: p for p in problems}
    assert list(by_key) == [
        'channels.routes."room:*"',
        'channels.routes."bad:*:pattern"',
        "channels.routes.noattr",
        "supervisors.0.children.0.start",
        "supervisors.0.children.1.start",
        "supervisors.0.children.2.start",
        "supervisors.0.children.3.start",
        "supervisors.0.children.4.start",
    ]
    assert all(p.file == str(path) for p in problems)

    missing_module = by_key["supervisors.0.children.0.start"]
    assert missing_module.line == line_of(path, "no_such_package")
    assert missing_module.found == "no_such_package.sub:Thing"
    assert "an importable module 'no_such_package.sub'" in missing_module.expected
    assert "ModuleNotFoundError: No module named 'no_such_package'" in missing_module.expected

    missing_attr = by_key["supervisors.0.children.1.start"]
    assert missing_attr.line == line_of(path, "config_targets:Stor\"")
    assert missing_attr.found == "config_targets:Stor"
    assert "an attribute 'Stor' in module 'config_targets' (did you mean 'Store'?)" == missing_attr.expected

    import config_targets

    sync = by_key["supervisors.0.children.2.start"]
    assert sync.found is config_targets.sync_function
    assert "an Actor subclass or an async function" in sync.expected
    assert by_key["supervisors.0.children.3.start"].found == 42
    assert "exactly one \":\"" in by_key["supervisors.0.children.4.start"].expected

    route = by_key['channels.routes."room:*"']
    assert route.line == line_of(path, '"room:*"')
    assert route.found is config_targets.sync_function
    assert "a Channel subclass" in route.expected
    assert "topic pattern" in by_key['channels.routes."bad:*:pattern"'].expected
    assert "did you mean 'RoomChannel'" in by_key["channels.routes.noattr"].expected


def test_import_targets_false_checks_only_syntax() -> None:
    problems = problems_of(CONFIGS / "bad_targets.toml", import_targets=False)
    assert [p.key for p in problems] == ['channels.routes."bad:*:pattern"', "supervisors.0.children.4.start"]


def test_class_that_is_not_an_actor_is_rejected_once_actor_exists(tmp_path: Path) -> None:
    actor = pytest.importorskip("ackvisor.actor")
    if not hasattr(actor, "Actor"):
        pytest.skip("ackvisor.actor.Actor not written yet")
    config = write(tmp_path / "config.toml", """
        [[supervisors]]
        id = "s"
        [[supervisors.children]]
        id = "c"
        start = "config_targets:NotAnActor"
    """)
    problem = only_problem(config)
    assert problem.key == "supervisors.0.children.0.start"
    assert "an Actor subclass" in problem.expected


def test_route_class_that_is_not_a_channel_is_rejected_once_channel_exists(tmp_path: Path) -> None:
    channel = pytest.importorskip("ackvisor.channels.channel")
    if not hasattr(channel, "Channel"):
        pytest.skip("ackvisor.channels.channel.Channel not written yet")
    config = write(tmp_path / "config.toml", """
        [channels.routes]
        "room:*" = "config_targets:Store"
    """)
    problem = only_problem(config)
    assert problem.key == 'channels.routes."room:*"'
    assert "a Channel subclass" in problem.expected


def test_a_failing_import_is_reported_once_per_reference_and_not_retried(tmp_path: Path) -> None:
    write(tmp_path / "pkg_boom.py", """
        with open(__file__ + ".attempts", "a") as f:
            f.write("x")
        raise RuntimeError("boom at import")
    """)
    config = write(tmp_path / "config.toml", """
        [[supervisors]]
        id = "s"
        [[supervisors.children]]
        id = "a"
        start = "pkg_boom:A"
        [[supervisors.children]]
        id = "b"
        start = "pkg_boom:B"
    """)
    sys.path.insert(0, str(tmp_path))
    try:
        problems = problems_of(config)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pkg_boom", None)
    assert [p.key for p in problems] == ["supervisors.0.children.0.start", "supervisors.0.children.1.start"]
    assert all("RuntimeError: boom at import" in p.expected for p in problems)
    assert (tmp_path / "pkg_boom.py.attempts").read_text() == "x"


def test_node_config_is_frozen() -> None:
    config = load_config(CONFIGS / "empty.toml")
    with pytest.raises(AttributeError):
        config.node = None  # type: ignore[misc]
    assert isinstance(config, NodeConfig)
