"""``ackvisor check | tree | version`` in subprocesses (``run`` is in tests/test_daemon.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import trio

import ackvisor

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
DEFAULT_CONFIG = REPO / "config.toml"

_SCRIPT = Path(sys.executable).with_name("ackvisor")
ACKVISOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ackvisor.cli"]


async def cli(*args: str | os.PathLike[str], cwd: Path = REPO) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    return await trio.run_process(
        [*ACKVISOR, *map(str, args)], capture_stdout=True, capture_stderr=True, check=False, env=env, cwd=str(cwd)
    )


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the fixture")


def problem_lines(stderr: bytes) -> list[str]:
    return [line.strip() for line in stderr.decode().splitlines()[1:]]


async def test_version() -> None:
    done = await cli("version")
    assert done.returncode == 0
    assert done.stdout.decode() == f"ackvisor {ackvisor.__version__}\n"


async def test_check_default_config_is_valid() -> None:
    done = await cli("check", "--config", DEFAULT_CONFIG)
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "ok" in out and "superheroes" in out and "ops" in out
    assert done.stderr == b""


async def test_check_default_config_from_its_directory_by_default() -> None:
    done = await cli("check")  # --config defaults to ./config.toml
    assert done.returncode == 0, done.stderr.decode()


NODE_TOML = """\
include = ["supervisors/*.toml"]

[node]
drain_window = "soon"

[endpoint]
port = 70000

[channels]
ack_timout = "5s"

[channels.routes]
"superheroes:*" = "ackvisor.examples.nope:SuperheroChannel"
"""

SUBTREE_TOML = """\
[supervisor]
id = "app"
strategy = "one_for_none"

[[supervisor.children]]
id = "a"
start = "daemon_targets:Worker"
restart = "sometimes"

[[supervisor.children]]
id = "b"
start = "daemon_targets:NoSuchActor"
shutdown = "later"
"""


async def test_check_reports_every_problem_with_file_key_line_and_expectation(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(NODE_TOML)
    (tmp_path / "supervisors").mkdir()
    subtree = tmp_path / "supervisors" / "app.toml"
    subtree.write_text(SUBTREE_TOML)

    done = await cli("check", "--config", config)
    assert done.returncode == 2
    assert done.stdout == b""
    err = done.stderr.decode()
    lines = problem_lines(done.stderr)
    assert err.splitlines()[0] == f"ackvisor: {config}: {len(lines)} problems:"

    expected = [
        # (file, fixture text, dotted key, words of the expectation, value found)
        (config, NODE_TOML, 'drain_window = "soon"', "node.drain_window", "a duration", "'soon'"),
        (config, NODE_TOML, "port = 70000", "endpoint.port", "an integer from 0 to 65535", "70000"),
        (config, NODE_TOML, "ack_timout", "channels.ack_timout", "did you mean 'ack_timeout'", "'ack_timout'"),
        (config, NODE_TOML, "ackvisor.examples.nope", 'channels.routes."superheroes:*"', "an importable module", "nope"),
        (subtree, SUBTREE_TOML, "one_for_none", "supervisor.strategy", '"one_for_one", "one_for_all", "rest_for_one"', "'one_for_none'"),
        (subtree, SUBTREE_TOML, "sometimes", "supervisor.children.0.restart", '"permanent", "transient", "temporary"', "'sometimes'"),
        (subtree, SUBTREE_TOML, "NoSuchActor", "supervisor.children.1.start", "an attribute 'NoSuchActor'", "NoSuchActor"),
        (subtree, SUBTREE_TOML, "later", "supervisor.children.1.shutdown", "brutal_kill", "'later'"),
    ]
    for file, text, needle, key, expectation, found in expected:
        prefix = f"{file}:{line_of(text, needle)}: {key}: expected "
        matching = [line for line in lines if line.startswith(prefix)]
        assert len(matching) == 1, f"no line starting with {prefix!r} in\n{err}"
        assert expectation in matching[0] and found in matching[0].split(", found ")[-1], matching[0]
    assert len(lines) == len(expected), err


async def test_check_names_set_overrides_and_syntax_errors(tmp_path: Path) -> None:
    done = await cli(
        "check", "--config", DEFAULT_CONFIG, "--set", "channels.ack_timeout=soon", "--set", "endpoint.prot=1"
    )
    assert done.returncode == 2
    lines = problem_lines(done.stderr)
    assert any(l.startswith("--set: channels.ack_timeout: expected a duration > 0") and "'soon'" in l for l in lines), lines
    assert any(l.startswith("--set: endpoint.prot: expected one of the keys of [endpoint]") and "did you mean 'port'" in l for l in lines), lines

    broken = tmp_path / "broken.toml"
    broken.write_text('[node]\nname = "x"\n[endpoint\nport = 1\n')
    done = await cli("check", "--config", broken)
    assert done.returncode == 2
    (line,) = problem_lines(done.stderr)
    assert line.startswith(f"{broken}:3: expected valid TOML"), line

    missing = tmp_path / "missing.toml"
    done = await cli("check", "--config", missing)
    assert done.returncode == 2
    (line,) = problem_lines(done.stderr)
    assert line.startswith(f"{missing}: expected a readable TOML file"), line


async def test_check_imports_without_starting_anything(tmp_path: Path) -> None:
    # a child whose init raises is valid config: check imports it but never starts it
    config = tmp_path / "config.toml"
    config.write_text(
        'include = []\n[[supervisors]]\nid = "s"\n[[supervisors.children]]\nid = "x"\nstart = "daemon_targets:FailingInit"\n'
    )
    done = await cli("check", "--config", config)
    assert done.returncode == 0, done.stderr.decode()
    assert not list(tmp_path.glob("*.pid")) and not list(tmp_path.glob("*.sock"))


async def test_tree_without_a_daemon_fails_clearly(tmp_path: Path) -> None:
    sock = tmp_path / "nobody.sock"
    done = await cli("tree", "--socket", sock)
    assert done.returncode == 1
    assert f"no daemon answering on {sock}" in done.stderr.decode()

    config = tmp_path / "config.toml"
    config.write_text('include = []\n[node]\npid_file = "run/node.pid"\n')
    done = await cli("tree", "--config", config, "--json")
    assert done.returncode == 1
    assert str(tmp_path / "run" / "node.sock") in done.stderr.decode()

    config.write_text("[node]\nnmae = 1\n")
    done = await cli("tree", "--config", config)
    assert done.returncode == 2
    assert "node.nmae" in done.stderr.decode()


async def test_check_rejects_a_control_socket_path_too_long_for_a_unix_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120) / "node.pid"
    done = await cli("check", "--config", DEFAULT_CONFIG, "--set", f"node.pid_file={deep}")
    assert done.returncode == 2
    (line,) = problem_lines(done.stderr)
    assert line.startswith("--set: node.pid_file: expected a pid file whose control socket path"), line
    assert line.endswith("/node.pid'"), line  # the value found (shortened in the middle)
