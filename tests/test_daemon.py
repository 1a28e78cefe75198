"""End-to-end tests of ``ackvisor run``: the real daemon in a subprocess.

Every test starts ``ackvisor run`` (the installed console script) on an
ephemeral port (``--set endpoint.port=0``) with its own pid file and control
socket in ``tmp_path``, talks to it with the real phoenix.js client
(tests/phoenix_js.py) and ``ackvisor tree --json``, signals it, and reads its
JSON log lines from stderr. Real time, no MockClock. The daemon is killed in
``finally`` if a test leaves it running.

Test-only actors live in tests/daemon_targets.py (tests/ is put on the
daemon's PYTHONPATH); fixture configs in tests/daemon_configs/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.phoenix_js import PhoenixJS
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from phoenix_js import PhoenixJS  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"
CONFIGS = TESTS / "daemon_configs"
DEFAULT_CONFIG = REPO / "config.toml"

_SCRIPT = Path(sys.executable).with_name("ackvisor")
ACKVISOR = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "ackvisor.cli"]

LISTENING = re.compile(r"listening on (ws://\S+) \(pid (\d+)\)")

# phoenix.js must not reconnect on its own during these tests: every close is asserted.
NO_RECONNECT = {"reconnect_ms": 60_000, "rejoin_ms": 60_000}


def daemon_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def cli(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``ackvisor ARGS`` to completion; never raises on a non-zero exit."""
    return await trio.run_process(
        [*ACKVISOR, *map(str, args)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=daemon_env(),
        cwd=str(cwd or REPO),
    )


class DaemonProcess:
    """A running ``ackvisor run``: its output, parsed JSON log lines and a few controls."""

    def __init__(self, process: trio.Process, argv: list[str], pid_file: Path) -> None:
        self.process = process
        self.argv = argv
        self.pid_file = pid_file
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self.garbage: list[str] = []  # stderr lines that are not JSON objects
        self.url: str | None = None
        self._changed = trio.Event()
        self._eof = 0

    @property
    def control_socket(self) -> Path:
        return self.pid_file.with_name(self.pid_file.stem + ".sock")

    # -- output

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _read(self, stream: Any, on_line: Callable[[str], None]) -> None:
        buffer = b""
        try:
            async for chunk in stream:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    on_line(line.decode("utf-8", "replace"))
                self._notify()
            if buffer:
                on_line(buffer.decode("utf-8", "replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._eof += 1
            self._notify()

    def _stdout_line(self, line: str) -> None:
        self.stdout_lines.append(line)
        match = LISTENING.search(line)
        if match and self.url is None:
            self.url = match.group(1)

    def _stderr_line(self, line: str) -> None:
        self.stderr_lines.append(line)
        if not line.strip():
            return
        try:
            entry = json.loads(line)
        except ValueError:
            self.garbage.append(line)
            return
        if isinstance(entry, dict):
            self.logs.append(entry)
        else:
            self.garbage.append(line)

    def describe(self) -> str:
        tail = self.stderr_lines[-25:]
        return (
            f"daemon {self.argv}\nreturncode={self.process.returncode}\n"
            f"stdout: {self.stdout_lines[-5:]}\nstderr (last {len(tail)}):\n" + "\n".join(tail)
        )

    async def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 5) -> Any:
        with trio.move_on_after(timeout):
            while True:
                result = check()
                if result:
                    return result
                if self._eof >= 2:
                    break
                await self._changed.wait()
        raise AssertionError(f"waited {timeout} s for {what}\n{self.describe()}")

    def find(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == event and all(e.get(k) == v for k, v in match.items())]

    async def wait_log(self, event: str, *, timeout: float = 5, after: int = 0, **match: Any) -> dict[str, Any]:
        """The first log line from index ``after`` on with ``event`` and the ``match`` fields."""

        def check() -> dict[str, Any] | None:
            return next(iter(self.find(event, **match)[after:]), None)

        return await self.wait_for(check, f"log event {event} {match}", timeout)

    # -- control

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        with trio.move_on_after(timeout):
            await self.process.wait()
        if self.process.returncode is None:
            raise AssertionError(f"daemon still running {timeout} s later\n{self.describe()}")
        await self.wait_for(lambda: self._eof >= 2, "the daemon's output to end", 5)
        return self.process.returncode

    async def tree(self, *via: str) -> dict[str, Any]:
        """``ackvisor tree --json`` (through ``--socket`` unless ``via`` says otherwise)."""
        args = via or ("--socket", str(self.control_socket))
        done = await cli("tree", *args, "--json")
        assert done.returncode == 0, f"tree failed: {done.stderr.decode()}\n{self.describe()}"
        return json.loads(done.stdout)


@asynccontextmanager
async def run_daemon(
    config: Path,
    tmp_path: Path,
    *sets: str,
    pid_file: Path | None = None,
    log_level: str | None = None,
    wait_listening: bool = True,
) -> AsyncIterator[DaemonProcess]:
    """Start ``ackvisor run --config CONFIG`` on an ephemeral port; kill it on the way out."""
    pid_file = pid_file or tmp_path / "daemon.pid"
    argv = [
        *ACKVISOR, "run", "--config", str(config), "--log-format", "json",
        "--set", "endpoint.port=0", "--set", f"node.pid_file={json.dumps(str(pid_file))}",
    ]
    for item in sets:
        argv += ["--set", item]
    if log_level is not None:
        argv += ["--log-level", log_level]
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=daemon_env(), cwd=str(tmp_path)
    )
    daemon = DaemonProcess(process, argv, pid_file)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon._read, process.stdout, daemon._stdout_line)
            nursery.start_soon(daemon._read, process.stderr, daemon._stderr_line)
            try:
                if wait_listening:
                    await daemon.wait_for(lambda: daemon.url, "the 'listening on' line", 10)
                yield daemon
            finally:
                with trio.CancelScope(shield=True):
                    if process.returncode is None:
                        process.kill()
                    await process.wait()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # hand the test's own failure back unwrapped
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def copy_config(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CONFIGS / name, target)
    return target / "config.toml"


def flatten(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``tree --json`` -> ``{"root/app/b": entry}``; same-id siblings get ``@actor``."""
    out: dict[str, dict[str, Any]] = {}

    def walk(entries: list[dict[str, Any]], prefix: str) -> None:
        for entry in entries:
            path = f"{prefix}/{entry['id']}" if prefix else entry["id"]
            if path in out:
                path = f"{path}@{entry['actor']}"
            out[path] = entry
            walk(entry.get("children") or [], path)

    walk(answer["tree"], "")
    return out


def identity(answer: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """What must not change for an untouched node: its actor (pid), state and restart count."""
    return {path: (e["actor"], e["state"], e["restarts"]) for path, e in flatten(answer).items()}


def children_ids(answer: dict[str, Any], path: str) -> list[str]:
    return [c["id"] for c in flatten(answer)[path].get("children") or []]


async def join_lobby(js: PhoenixJS, ack: str = "auto") -> dict[str, Any]:
    await js.connect()
    await js.join("superheroes:lobby", ack=ack)
    return await js.expect("message", topic="superheroes:lobby", event="hydrate")


# --------------------------------------------------------------------------- run


async def test_run_default_config_client_joins_acks_and_tree_shows_it(tmp_path: Path) -> None:
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "channels.ack_timeout=400ms") as daemon:
        assert daemon.pid_file.read_text().strip() == str(daemon.process.pid)
        assert oct(daemon.control_socket.stat().st_mode & 0o777) == oct(0o600)
        async with PhoenixJS.open(daemon.url, **NO_RECONNECT) as js:
            hydrate = await join_lobby(js)
            payload = hydrate["payload"]
            assert [h["name"] for h in payload["superheroes"]][:3] == ["Ada Lovelace", "Grace Hopper", "Joe Armstrong"]
            await js.expect("ack_sent", message_id=payload["message_id"])
            await js.expect("ack_reply", message_id=payload["message_id"], status="ok")
            # the server got the ack: the connection outlives the 400 ms ack timeout
            await js.expect_no("socket_close", within=0.7)

            answer = await daemon.tree()
            assert answer["node"] == "ackvisor"
            assert answer["pid"] == daemon.process.pid
            assert answer["url"] == daemon.url
            assert answer["config"] == str(DEFAULT_CONFIG)
            nodes = flatten(answer)
            assert [e["id"] for e in answer["tree"]] == ["root"]
            assert children_ids(answer, "root") == ["pubsub", "ops", "superheroes", "endpoint"]
            assert children_ids(answer, "root/ops") == ["stats", "mailbox_watchdog"]
            assert children_ids(answer, "root/superheroes") == ["store"]
            assert children_ids(answer, "root/endpoint") == ["connections", "listener"]
            assert nodes["root"]["strategy"] == "one_for_one"
            assert nodes["root/endpoint"]["strategy"] == "rest_for_one"
            assert nodes["root/ops/stats"]["kind"] == "worker"
            assert nodes["root/endpoint/connections"]["kind"] == "supervisor"
            connections = nodes["root/endpoint/connections"]["children"]
            assert len(connections) == 1 and connections[0]["state"] == "running"
            for path, entry in nodes.items():
                assert entry["state"] == "running", path
                assert entry["restarts"] == 0, path
                assert {"id", "kind", "state", "restarts", "last_exit", "mailbox_depth"} <= entry.keys(), path

            text = await cli("tree", "--socket", daemon.control_socket)
            assert text.returncode == 0, text.stderr
            rendered = text.stdout.decode()
            for expected in ("root (supervisor, one_for_one) running", "pubsub (worker)", "ops (supervisor, rest_for_one)",
                             "store (worker)", "connections (supervisor", "listener (worker)", daemon.url):
                assert expected in rendered, rendered
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert not daemon.find("child_terminated", reason="no_ack_received")
    assert not [e for e in daemon.logs if e.get("reason") == "no_ack_received"]
    assert not daemon.pid_file.exists() and not daemon.control_socket.exists()
    assert daemon.garbage == []


async def test_sigterm_drains_with_1001_and_exits_0_within_the_window(tmp_path: Path) -> None:
    window = 0.5
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "node.drain_window=500ms") as daemon:
        async with PhoenixJS.open(daemon.url, **NO_RECONNECT) as a, PhoenixJS.open(daemon.url, **NO_RECONNECT) as b:
            await join_lobby(a)
            await join_lobby(b)
            started = trio.current_time()
            daemon.signal(signal.SIGTERM)
            close_a = await a.expect("socket_close", timeout=window + 3)
            close_b = await b.expect("socket_close", timeout=window + 3)
            assert (close_a["code"], close_b["code"]) == (1001, 1001)
            assert await daemon.wait_exit(window + 3) == 0
            elapsed = trio.current_time() - started
    # two sockets over 0.5 s: the second closes ~0.25 s after the first; then the tree stops fast
    assert window / 2 * 0.8 <= elapsed < window + 2.0, elapsed
    assert daemon.find("shutdown_requested", signal="SIGTERM")
    assert daemon.find("drained", connections=2)
    assert daemon.find("node_stopped", forced=False)
    events = [e["event"] for e in daemon.logs]
    assert events.index("shutdown_requested") < events.index("drained") < events.index("node_stopped")
    assert not daemon.pid_file.exists() and not daemon.control_socket.exists()
    assert daemon.garbage == []


async def test_second_sigterm_during_a_long_drain_forces_an_immediate_exit(tmp_path: Path) -> None:
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "node.drain_window=20s", "node.shutdown_timeout=60s") as daemon:
        async with PhoenixJS.open(daemon.url, **NO_RECONNECT) as a, PhoenixJS.open(daemon.url, **NO_RECONNECT) as b:
            await join_lobby(a)
            await join_lobby(b)
            daemon.signal(signal.SIGTERM)
            assert (await a.expect("socket_close", timeout=3))["code"] == 1001
            # the drain now waits 10 s before closing b ...
            await b.expect_no("socket_close", within=0.2)
            assert daemon.process.returncode is None
            started = trio.current_time()
            daemon.signal(signal.SIGTERM)  # ... unless told twice
            code = await daemon.wait_exit(3)
            elapsed = trio.current_time() - started
            await b.expect("socket_close", timeout=3)
    assert elapsed < 1.5, elapsed
    assert code == 0
    assert daemon.find("shutdown_forced", signal="SIGTERM")
    assert daemon.find("node_stopped", forced=True)
    assert not daemon.pid_file.exists() and not daemon.control_socket.exists()
    assert daemon.garbage == []


async def test_shutdown_timeout_bounds_a_child_that_will_not_stop(tmp_path: Path) -> None:
    config = tmp_path / "slow.toml"
    config.write_text(
        'include = []\n[node]\nshutdown_timeout = "600ms"\ndrain_window = "100ms"\n'
        '[[supervisors]]\nid = "slow"\n[[supervisors.children]]\nid = "sleeper"\n'
        'start = "daemon_targets:SlowStop"\nkwargs = { seconds = 30 }\nshutdown = "infinity"\n'
    )
    async with run_daemon(config, tmp_path) as daemon:
        started = trio.current_time()
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
        elapsed = trio.current_time() - started
    assert 0.5 <= elapsed < 0.6 + 1.5, elapsed
    assert daemon.find("slow_stop_terminating")
    assert daemon.find("shutdown_timeout")
    assert daemon.find("node_stopped")
    assert daemon.garbage == []


async def test_sigint_drains_like_sigterm(tmp_path: Path) -> None:
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "node.drain_window=100ms") as daemon:
        daemon.signal(signal.SIGINT)
        assert await daemon.wait_exit(5) == 0
    assert daemon.find("shutdown_requested", signal="SIGINT")
    assert daemon.find("node_stopped")
    assert daemon.garbage == []


# --------------------------------------------------------------------------- reload


APP_RELOADED = """\
[supervisor]
id = "app"
strategy = "rest_for_one"
max_restarts = 3
max_seconds = "5s"

[[supervisor.children]]
id = "a"
start = "daemon_targets:Worker"
kwargs = { label = "a2" }

[[supervisor.children]]
id = "d"
start = "daemon_targets:Worker"
kwargs = { label = "d1" }

[[supervisor.children]]
id = "b"
start = "daemon_targets:Worker"
kwargs = { label = "b1" }
shutdown = "1s"
"""


EXTRA_SUBTREE = """\
[supervisor]
id = "extra"

[[supervisor.children]]
id = "e"
start = "daemon_targets:Worker"
kwargs = { label = "e1" }
"""


async def test_sighup_restarts_only_the_changed_child_starts_added_stops_removed(tmp_path: Path) -> None:
    config = copy_config("app", tmp_path)
    async with run_daemon(config, tmp_path, pid_file=config.with_name("ackvisor.pid")) as daemon:
        via_config = ("--config", str(config))  # the pid file comes from the copied config
        async with PhoenixJS.open(daemon.url, **NO_RECONNECT) as js:
            await join_lobby(js)
            before = await daemon.tree(*via_config)
            assert children_ids(before, "root") == ["pubsub", "app", "superheroes", "endpoint"]
            assert children_ids(before, "root/app") == ["a", "b", "c"]
            assert len(flatten(before)["root/endpoint/connections"]["children"]) == 1

            (config.parent / "supervisors" / "app.toml").write_text(APP_RELOADED)
            (config.parent / "supervisors" / "extra.toml").write_text(EXTRA_SUBTREE)
            daemon.signal(signal.SIGHUP)
            applied = await daemon.wait_log("reload_applied")
            assert applied["restarted"] == ["app/a"]
            assert applied["started"] == ["app/d", "extra"]
            assert applied["stopped"] == ["app/c"]

            after = await daemon.tree(*via_config)
            assert children_ids(after, "root/app") == ["a", "d", "b"]  # the file's order ...
            assert children_ids(after, "root") == ["pubsub", "app", "extra", "superheroes", "endpoint"]  # ... the includes'
            old, new = identity(before), identity(after)
            assert new.pop("root/app/a")[0] != old.pop("root/app/a")[0]
            assert new.pop("root/app/d")[1] == "running"
            assert new.pop("root/extra")[1] == new.pop("root/extra/e")[1] == "running"
            assert old.pop("root/app/c")
            assert new == old  # every other node: same actor, state and restart count
            # the new spec was used, and the client never noticed
            assert daemon.find("worker_started", label="a2") and daemon.find("worker_started", label="d1")
            assert not js.find("socket_close") and not js.find("channel_error")
            assert [e["label"] for e in daemon.find("worker_stopped")] == ["c1", "a1"]
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    # the tree stops in reverse start order, the reloaded subtree in its file's order
    assert [e["label"] for e in daemon.find("worker_stopped")][2:] == ["e1", "b1", "d1", "a2"]
    assert daemon.garbage == []


async def test_sighup_with_a_broken_file_keeps_the_old_tree(tmp_path: Path) -> None:
    config = copy_config("app", tmp_path)
    app_toml = config.parent / "supervisors" / "app.toml"
    original = app_toml.read_text()
    async with run_daemon(config, tmp_path) as daemon:
        before = await daemon.tree()

        broken = original.replace('kwargs = { label = "b1" }', 'kwargs = { label = "b2" }\nrestart = "sometimes"')
        broken = broken.replace('kwargs = { label = "c1" }', 'kwarg = { label = "c2" }')
        app_toml.write_text(broken)
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_log("reload_failed")
        problems = failed["problems"]
        assert failed["level"] == "error"
        restart_line = broken.splitlines().index('restart = "sometimes"') + 1
        kwarg_line = broken.splitlines().index('kwarg = { label = "c2" }') + 1
        assert any(
            f"{app_toml}:{restart_line}: supervisor.children.1.restart:" in p and "sometimes" in p and "permanent" in p
            for p in problems
        ), problems
        assert any(f"{app_toml}:{kwarg_line}: supervisor.children.2.kwarg:" in p for p in problems), problems
        assert identity(await daemon.tree()) == identity(before)

        app_toml.write_text("[supervisor\nid = ")  # not even TOML
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_log("reload_failed", after=1)
        assert any(str(app_toml) in p and "TOML" in p for p in failed["problems"]), failed
        assert identity(await daemon.tree()) == identity(before)

        app_toml.write_text(original)  # fixed: a reload with nothing to do
        daemon.signal(signal.SIGHUP)
        applied = await daemon.wait_log("reload_applied")
        assert applied["restarted"] == applied["started"] == applied["stopped"] == []
        assert identity(await daemon.tree()) == identity(before)
        assert not daemon.find("worker_started", label="b2")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert daemon.garbage == []


async def test_sighup_with_a_child_that_cannot_start_keeps_the_node_running(tmp_path: Path) -> None:
    config = copy_config("app", tmp_path)
    app_toml = config.parent / "supervisors" / "app.toml"
    with_bad = app_toml.read_text() + '\n[[supervisor.children]]\nid = "bad"\nstart = "daemon_targets:FailingInit"\n'
    async with run_daemon(config, tmp_path) as daemon:
        before = await daemon.tree()
        app_toml.write_text(with_bad.replace('label = "a1"', 'label = "a2"'))
        daemon.signal(signal.SIGHUP)
        failed = await daemon.wait_log("reload_child_failed", child="app/bad")
        assert "failing_init: cannot start" in failed["error"]
        applied = await daemon.wait_log("reload_applied")
        assert applied["restarted"] == ["app/a"] and applied["failed"] == ["app/bad"]
        after = await daemon.tree()
        assert children_ids(after, "root/app") == ["a", "b", "c"]
        old, new = identity(before), identity(after)
        assert new.pop("root/app/a") != old.pop("root/app/a")
        assert new == old
        # a later reload tries the child that did not start again (and only it)
        daemon.signal(signal.SIGHUP)
        await daemon.wait_log("reload_child_failed", child="app/bad", after=1)
        applied = await daemon.wait_log("reload_applied", after=1)
        assert applied["restarted"] == [] and applied["failed"] == ["app/bad"]
        assert daemon.process.returncode is None
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert daemon.garbage == []


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_sighup_with_changed_channels_restarts_the_endpoint_and_clients_come_back(tmp_path: Path) -> None:
    from ackvisor.client import PhoenixClient

    config = copy_config("app", tmp_path)
    # a fixed port: the restarted endpoint binds it again and the client reconnects to it
    async with run_daemon(config, tmp_path, f"endpoint.port={free_port()}") as daemon:
        before = await daemon.tree()
        async with PhoenixClient.open(daemon.url, reconnect_after=lambda tries: 0.05) as client:
            channel = await client.join("superheroes:lobby")
            with trio.fail_after(5):
                assert (await channel.receive()).event == "hydrate"  # acked by the client
            config.write_text(config.read_text().replace("[channels.routes]", '[channels]\nack_timeout = "4s"\n\n[channels.routes]'))
            daemon.signal(signal.SIGHUP)
            applied = await daemon.wait_log("reload_applied")
            assert (applied["restarted"], applied["started"], applied["stopped"]) == (["endpoint"], [], [])
            with trio.fail_after(5):
                assert (await client.wait_closed(close_count=1)).code == 1001
                await channel.wait_joined(join_count=2)  # reconnected and rejoined on the new endpoint
                hero = {"name": "Margaret Hamilton", "power": "apollo guidance"}
                reply = await channel.push("add_superhero", {"superhero": hero})
                assert reply["status"] == "ok" and reply["response"]["superhero"]["name"] == hero["name"]
                while (message := await channel.receive()).event != "superhero_added":
                    pass  # (a rejoin may first re-send what the client missed)
                assert message.payload["superhero"]["name"] == hero["name"]
            after = await daemon.tree()
        assert after["url"] == daemon.url
        old, new = identity(before), identity(after)
        for path in ("root/endpoint", "root/endpoint/connections", "root/endpoint/listener"):
            assert new[path][0] != old[path][0], path  # a new endpoint subtree ...

        def outside_endpoint(nodes: dict[str, Any]) -> dict[str, Any]:
            return {p: v for p, v in nodes.items() if not p.startswith("root/endpoint")}

        assert outside_endpoint(new) == outside_endpoint(old)  # ... and nothing else touched
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert not [e for e in daemon.logs if e.get("reason") == "no_ack_received"]
    assert daemon.garbage == []


async def test_ops_subtree_reports_node_stats(tmp_path: Path) -> None:
    (tmp_path / "supervisors").mkdir()
    ops = (REPO / "supervisors" / "ops.toml").read_text()
    assert "interval = 60.0" in ops and "interval = 10.0" in ops
    (tmp_path / "supervisors" / "ops.toml").write_text(ops.replace("interval = 60.0", "interval = 0.1").replace("interval = 10.0", "interval = 0.1"))
    config = tmp_path / "config.toml"
    config.write_text('include = ["supervisors/*.toml"]\n')
    async with run_daemon(config, tmp_path) as daemon:
        first = await daemon.wait_log("node_stats")
        await daemon.wait_log("node_stats", after=1)
        assert first["node"] == "ackvisor" and first["actors"] >= 7 and first["names"] >= 1
        assert children_ids(await daemon.tree(), "root/ops") == ["stats", "mailbox_watchdog"]
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert not [e for e in daemon.logs if e.get("level") == "error"]


# --------------------------------------------------------------------------- going down


async def test_root_giving_up_exits_non_zero(tmp_path: Path) -> None:
    async with run_daemon(CONFIGS / "crashy.toml", tmp_path, wait_listening=False) as daemon:
        code = await daemon.wait_exit(10)
    assert code == 1, daemon.describe()
    down = daemon.find("node_down")
    assert len(down) == 1 and down[0]["level"] == "error" and down[0]["node"] == "crashy"
    crashes = [e for e in daemon.logs if e.get("error") == "crasher: boom"]
    assert len(crashes) >= 2, daemon.describe()
    assert not daemon.pid_file.exists() and not daemon.control_socket.exists()
    assert daemon.garbage == []


async def test_boot_failures_exit_cleanly(tmp_path: Path) -> None:
    async with run_daemon(DEFAULT_CONFIG, tmp_path) as first:
        # same pid file / control socket: refused, the first daemon is untouched
        async with run_daemon(DEFAULT_CONFIG, tmp_path, wait_listening=False) as second:
            assert await second.wait_exit(5) == 2
        assert second.find("already_running")
        assert second.garbage == []
        # own pid file, but the port is taken: the root cannot start
        port = first.url.rsplit(":", 1)[1].split("/")[0]
        async with run_daemon(
            DEFAULT_CONFIG, tmp_path, f"endpoint.port={port}", pid_file=tmp_path / "third.pid", wait_listening=False
        ) as third:
            assert await third.wait_exit(5) == 1
        assert third.find("node_start_failed")
        assert third.garbage == [], third.describe()
        assert not (tmp_path / "third.pid").exists()
        assert first.process.returncode is None
        assert (await first.tree())["pid"] == first.process.pid
        first.signal(signal.SIGTERM)
        assert await first.wait_exit(5) == 0


async def test_run_with_a_broken_config_does_not_start(tmp_path: Path) -> None:
    done = await cli("run", "--config", DEFAULT_CONFIG, "--set", "channels.ack_timeout=soon", "--set", "root.strategy=x")
    assert done.returncode == 2
    err = done.stderr.decode()
    assert "--set: channels.ack_timeout: expected a duration" in err and "--set: root.strategy:" in err, err
    assert done.stdout == b""


# --------------------------------------------------------------------------- logs


async def test_json_logs_parse_and_carry_one_no_ack_received(tmp_path: Path) -> None:
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "channels.ack_timeout=300ms", "node.gc_threshold=2500") as daemon:
        started = await daemon.wait_log("node_started")
        assert started["gc_threshold"] == 2500  # applied to the daemon's process
        async with PhoenixJS.open(daemon.url, **NO_RECONNECT) as js:
            hydrate = await join_lobby(js, ack="none")
            message_id = hydrate["payload"]["message_id"]
            close = await js.expect("socket_close", timeout=5)
            assert close["code"] == 1011
            report = await daemon.wait_log("child_terminated", reason="no_ack_received")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert daemon.garbage == [], daemon.garbage
    assert len(daemon.logs) == len([line for line in daemon.stderr_lines if line.strip()])
    for entry in daemon.logs:
        assert {"event", "level", "timestamp"} <= entry.keys(), entry
    no_acks = [e for e in daemon.logs if e.get("reason") == "no_ack_received"]
    assert no_acks == [report], no_acks
    assert report["level"] == "error"
    assert report["topic"] == "superheroes:lobby"
    assert report["message_id"] == message_id
    assert 300 <= report["waited_ms"] < 2000
    assert isinstance(report["connection"], int)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", report["peer"]), report
    assert daemon.stdout_lines[0].startswith("ackvisor node 'ackvisor' listening on ws://127.0.0.1:")


async def test_tokens_and_auth_params_are_never_logged(tmp_path: Path) -> None:
    from trio_websocket import HandshakeError, open_websocket_url

    secrets = ("sekrit-socket-token-1", "sekrit-auth-token-2", "sekrit-join-token-3", "sekrit-password-4", "sekrit-5")
    async with run_daemon(DEFAULT_CONFIG, tmp_path, "channels.ack_timeout=300ms", log_level="debug") as daemon:
        # rejected handshakes are logged too: wrong path, unsupported vsn
        for target in (f"/wrong/websocket?token={secrets[4]}&vsn=2.0.0", f"/socket/websocket?token={secrets[4]}&vsn=9"):
            with pytest.raises(HandshakeError):
                async with open_websocket_url(daemon.url.replace("/socket", "") + target):
                    pass
        await daemon.wait_log("handshake_rejected", status=403)
        params = {"token": secrets[0], "user": "ada"}
        async with PhoenixJS.open(daemon.url, params=params, auth_token=secrets[1], **NO_RECONNECT) as js:
            await js.connect()
            await js.join("superheroes:lobby", {"token": secrets[2], "password": secrets[3]}, ack="none")
            await js.expect("message", event="hydrate")
            # the no-ack crash report is where a socket's params would leak
            assert (await js.expect("socket_close", timeout=5))["code"] == 1011
            await daemon.wait_log("child_terminated", reason="no_ack_received")
        daemon.signal(signal.SIGTERM)
        assert await daemon.wait_exit(5) == 0
    assert daemon.find("connection_opened") and len(daemon.find("handshake_rejected")) == 2  # logged ...
    output = "\n".join(daemon.stdout_lines + daemon.stderr_lines)
    for secret in secrets:  # ... without its secrets
        assert secret not in output
    assert "sekrit" not in output
