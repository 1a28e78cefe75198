"""pytest-side harness that drives the real phoenix.js client in a Node process.

One :class:`PhoenixJS` is one ``node tests/js/phx_driver.mjs`` process holding one
phoenix.js ``Socket`` (``ws`` as transport). Commands go to the driver's stdin as
JSON lines; every observable client event comes back on stdout as a JSON line
and is appended to :attr:`PhoenixJS.events`.

Usage (inside a pytest-trio test; real sockets and the real clock, so tests using
this harness must NOT use ``MockClock``)::

    async with PhoenixJS.open(url, version="1.7", reconnect_ms=20, rejoin_ms=50) as js:
        await js.connect()                        # waits for socket_open
        ok = await js.join("room:1", {"since": 0}) # waits for join_ok
        msg = await js.expect("message", event="hydrate")
        await js.expect("ack_sent", message_id=msg["payload"]["message_id"])

Requirements: ``node`` on PATH and ``node_modules`` installed in the repository
root (``npm ci``). A missing prerequisite raises :class:`RuntimeError`; the e2e
tests are not silently skipped.

Events emitted by the driver (``type`` plus fields)
---------------------------------------------------
``ready``            phoenix, ws, node, url — the driver started (awaited by ``open``)
``socket_open``      the WebSocket opened (every (re)connect)
``socket_close``     code, reason, was_clean (socket.onClose)
``socket_error``     message (socket.onError)
``disconnected``     socket.disconnect() finished (``disconnect`` command)
``join_attempt``     topic, join_ref, params — phoenix.js evaluated the channel
                     params function for a (re)join push with that join_ref
``join_ok``          topic, join_ref, response
``join_error``       topic, join_ref, response
``join_timeout``     topic, join_ref
``channel_error``    topic, payload, from_server, join_ref, wire_join_ref
                     (every phx_error the channel handles, incl. the ones
                     phoenix.js synthesizes on transport loss: from_server=False)
``channel_close``    topic, payload, from_server, join_ref, wire_join_ref
                     (server phx_close, or the local close after leave(): payload "leave")
``message``          topic, event, payload, ref, join_ref (wire join_ref, None for
                     broadcasts), channel_join_ref — every non-control inbound
                     message the channel accepts (stale join_refs are dropped by
                     phoenix.js before this point)
``reply``            topic, ref, join_ref, status, response — every phx_reply on a channel
``ack_sent``         topic, message_id, join_ref, mode ("auto" | "manual")
``ack_reply``        topic, message_id, status ("ok" | "error" | "timeout"), response
``push_reply``       topic, event, status ("ok" | "error" | "timeout"), response, id
``leave_reply``      topic, status, response
``heartbeat_reply``  ref, status — any phx_reply on topic "phoenix" (heartbeats and pings)
``pong``             rtt (``ping`` command); ``ping_failed`` when not connected
``state``            socket, channels: [{topic, state, join_ref}] (``state`` command)
``raw_in``           data (decoded message object) — only with ``raw=True``
``raw_out``          data (the frame as sent) — only with ``raw=True``
``log``              kind, msg, data — phoenix.js logger output, only with ``log=True``
``driver_error``     message, [cmd, stack, line] — bad command or exception in the driver
``reliable_message`` topic, event, payload — a message the reliable helper
                     (clients/js/reliable.mjs) handed to the application (``reliable_join``
                     with ``events``): duplicates never show up here
``reliable_stats``   topic, stats, position, dropped_acks (``reliable_stats`` command)
``drop_acks``        on, dropped (``drop_acks`` command)

Harness-synthesized events (never sent by the driver): ``stdout_garbage`` (line)
for a non-JSON stdout line.

Commands accepted by the driver: ``connect``, ``disconnect`` [code, reason],
``join`` topic [params, ack "auto"|"none", timeout_ms], ``leave`` topic,
``set_ack`` topic ack, ``set_params`` topic params, ``set_socket_params`` params,
``push`` topic event [payload, id, timeout_ms], ``ack`` topic message_id,
``ping``, ``raw`` data | data_base64, ``state``, ``exit``,
``reliable_join`` topic [params, ack "each"|"cumulative", events, quiet, timeout_ms]
(the channel wrapped by clients/js/reliable.mjs: it acks and resumes by itself;
``message`` events are emitted unless ``quiet``), ``reliable_stats`` topic,
``drop_acks`` on (needs ``ack_filter=True``: outbound ``message_ack`` frames are
lost on the wire), ``terminate`` (abrupt TCP close of the current WebSocket, no
close frame).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

REPO_ROOT = Path(__file__).resolve().parent.parent
DRIVER = REPO_ROOT / "tests" / "js" / "phx_driver.mjs"
NODE_MODULES = REPO_ROOT / "node_modules"
VERSIONS = ("1.8", "1.7")

_MISSING = object()
_TAIL = 30


def _require_node() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("phoenix.js e2e tests need Node.js: `node` is not on PATH")
    for package in ("phoenix", "phoenix17", "ws"):
        if not (NODE_MODULES / package / "package.json").is_file():
            raise RuntimeError(
                f"phoenix.js e2e tests need the npm packages: {NODE_MODULES / package} is missing; "
                f"run `npm ci` in {REPO_ROOT}"
            )
    return node


def _schedule(value: int | float | Sequence[int | float]) -> str:
    if isinstance(value, (int, float)):
        return str(value)
    return ",".join(str(v) for v in value)


def _matches(event: dict, type: str, match: dict[str, Any]) -> bool:
    if event.get("type") != type:
        return False
    for key, expected in match.items():
        actual = event.get(key, _MISSING)
        if callable(expected):
            if actual is _MISSING or not expected(actual):
                return False
        elif actual is _MISSING or actual != expected:
            return False
    return True


class PhoenixJS:
    """One phoenix.js client (one Node process, one Socket). Create with :meth:`open`.

    ``send`` and the convenience methods are ``async`` (they write to the
    process's stdin pipe). Event matching in :meth:`expect`: keyword values are
    compared with ``==`` against the event's top-level fields; a callable value
    is used as a predicate instead (``payload=lambda p: "message_id" in p``).
    """

    events: list[dict]
    stderr_lines: list[str]

    def __init__(self, process: trio.Process, argv: list[str]) -> None:
        self.process = process
        self.argv = argv
        self.events = []
        self.stderr_lines = []
        self._cursor = 0
        self._changed = trio.Event()
        self._stdout_eof = False
        self._send_lock = trio.Lock()
        self._ids = itertools.count(1)

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        version: str = "1.8",
        params: dict | None = None,
        auth_token: str | None = None,
        reconnect_ms: int | float | Sequence[int | float] | None = None,
        rejoin_ms: int | float | Sequence[int | float] | None = None,
        heartbeat_ms: int | float | None = None,
        timeout_ms: int | float | None = None,
        raw: bool = False,
        log: bool = False,
        ack_filter: bool = False,
        startup_timeout: float = 15,
    ) -> AsyncIterator[PhoenixJS]:
        """Start the driver for phoenix.js ``version`` ("1.8" or "1.7") against ``url``
        (the socket endpoint, e.g. ``ws://127.0.0.1:PORT/socket``; phoenix.js appends
        ``/websocket?...&vsn=2.0.0``). ``params`` become the socket (connect) params.

        Timing options left at ``None`` are not passed, so phoenix.js uses its own
        defaults. ``reconnect_ms`` / ``rejoin_ms`` take a number or a schedule
        (sequence indexed by tries, last value repeats). The socket is NOT connected
        yet; call :meth:`connect`. On exit the driver is told to exit, its stdin is
        closed, and it is killed if it has not exited within 3 s.
        """
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
        node = _require_node()
        argv = [node, str(DRIVER), "--url", url, "--phoenix", version]
        if params is not None:
            argv += ["--params", json.dumps(params)]
        if auth_token is not None:
            argv += ["--auth-token", auth_token]
        if reconnect_ms is not None:
            argv += ["--reconnect-ms", _schedule(reconnect_ms)]
        if rejoin_ms is not None:
            argv += ["--rejoin-ms", _schedule(rejoin_ms)]
        if heartbeat_ms is not None:
            argv += ["--heartbeat-ms", _schedule(heartbeat_ms)]
        if timeout_ms is not None:
            argv += ["--timeout-ms", _schedule(timeout_ms)]
        if raw:
            argv.append("--raw")
        if log:
            argv.append("--log")
        if ack_filter:
            argv.append("--ack-filter")

        try:
            async with trio.open_nursery() as nursery:
                process = await trio.lowlevel.open_process(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=str(REPO_ROOT),
                    env={**os.environ, "NODE_NO_WARNINGS": "1"},
                )
                driver = cls(process, argv)
                nursery.start_soon(driver._read_stdout)
                nursery.start_soon(driver._read_stderr)
                try:
                    await driver.expect("ready", timeout=startup_timeout)
                    yield driver
                finally:
                    with trio.CancelScope(shield=True):
                        await driver._shutdown()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # trio wraps even a single failure (e.g. the test's AssertionError
            # raised at our `yield`) in an ExceptionGroup; hand back the original.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def _shutdown(self) -> None:
        process = self.process
        if process.returncode is None:
            # bounded: a wedged driver that stopped reading stdin must not hang teardown
            with trio.move_on_after(1):
                try:
                    await self.send({"cmd": "exit"})
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
                    pass
        if process.stdin is not None:
            try:
                await process.stdin.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        with trio.move_on_after(3):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self._add_line(line)
            if buffer:
                self._add_line(buffer)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._stdout_eof = True
            self._notify()

    def _add_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            event = {"type": "stdout_garbage", "line": text}
        if not isinstance(event, dict):
            event = {"type": "stdout_garbage", "line": text}
        self.events.append(event)
        self._notify()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        try:
            async for chunk in self.process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                self.stderr_lines.extend(l.decode("utf-8", "replace") for l in lines)
            if buffer:
                self.stderr_lines.append(buffer.decode("utf-8", "replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- events ------------------------------------------------------------

    def _describe(self) -> str:
        tail = self.events[-_TAIL:]
        lines = [f"last {len(tail)} of {len(self.events)} events (cursor at {self._cursor}):"]
        start = len(self.events) - len(tail)
        lines += [f"  [{start + i}] {json.dumps(e, sort_keys=True)}" for i, e in enumerate(tail)]
        if self.process.returncode is not None or self._stdout_eof:
            lines.append(f"driver process exited: returncode={self.process.returncode}")
        if self.stderr_lines:
            lines.append("driver stderr (tail):")
            lines += [f"  {l}" for l in self.stderr_lines[-_TAIL:]]
        return "\n".join(lines)

    def _scan(self, type: str, match: dict[str, Any], start: int) -> int | None:
        for index in range(start, len(self.events)):
            if _matches(self.events[index], type, match):
                return index
        return None

    async def expect(self, type: str, *, timeout: float = 10, **match: Any) -> dict:
        """Wait for the next event of ``type`` whose fields match ``match``.

        Searches from the cursor; on success the cursor moves just past the
        returned event, so an event (and everything before it) is never returned
        by a later ``expect``. Raises ``AssertionError`` listing the last 30
        events on timeout, or as soon as the driver process has exited.
        """
        waited = f"{type} {match}" if match else type
        with trio.move_on_after(timeout) as scope:
            while True:
                index = self._scan(type, match, self._cursor)
                if index is not None:
                    self._cursor = index + 1
                    return self.events[index]
                if self._stdout_eof:
                    break
                await self._changed.wait()
        reason = "timed out after {:g} s".format(timeout) if scope.cancelled_caught else "driver exited"
        raise AssertionError(f"expected event {waited}: {reason}\n{self._describe()}")

    async def expect_no(self, type: str, *, within: float, **match: Any) -> None:
        """Assert that no event of ``type`` matching ``match`` shows up (after the
        cursor) during the next ``within`` seconds. Does not move the cursor."""
        start = self._cursor
        with trio.move_on_after(within):
            while True:
                index = self._scan(type, match, start)
                if index is not None:
                    raise AssertionError(
                        f"unexpected event {type} {match}: {json.dumps(self.events[index])}\n{self._describe()}"
                    )
                if self._stdout_eof:
                    return
                await self._changed.wait()

    def find(self, type: str, **match: Any) -> list[dict]:
        """All events so far (ignoring the cursor) of ``type`` matching ``match``."""
        return [e for e in self.events if _matches(e, type, match)]

    def skip(self) -> None:
        """Move the cursor past every event received so far."""
        self._cursor = len(self.events)

    # -- commands ----------------------------------------------------------

    async def send(self, cmd: dict) -> None:
        """Write one command line to the driver (async: it is a pipe write)."""
        stdin = self.process.stdin
        assert stdin is not None
        data = (json.dumps(cmd) + "\n").encode()
        async with self._send_lock:
            await stdin.send_all(data)

    async def connect(self, *, wait: bool = True, timeout: float = 10) -> dict | None:
        """``socket.connect()``; with ``wait`` returns the next ``socket_open`` event."""
        await self.send({"cmd": "connect"})
        if wait:
            return await self.expect("socket_open", timeout=timeout)
        return None

    async def disconnect(
        self, *, code: int | None = None, reason: str | None = None, wait: bool = True, timeout: float = 10
    ) -> dict | None:
        """``socket.disconnect()``; with ``wait`` returns the ``disconnected`` event."""
        cmd: dict[str, Any] = {"cmd": "disconnect"}
        if code is not None:
            cmd["code"] = code
        if reason is not None:
            cmd["reason"] = reason
        await self.send(cmd)
        if wait:
            return await self.expect("disconnected", timeout=timeout)
        return None

    async def join(
        self,
        topic: str,
        params: dict | None = None,
        ack: str = "auto",
        *,
        wait: bool = True,
        timeout: float = 10,
    ) -> dict | None:
        """Create ``socket.channel(topic, params-function)`` and join it; ``ack`` is
        "auto" (ack every inbound message carrying a ``message_id``) or "none".
        With ``wait`` returns the ``join_ok`` event (use ``wait=False`` when the
        join is expected to fail)."""
        await self.send({"cmd": "join", "topic": topic, "params": params or {}, "ack": ack})
        if wait:
            return await self.expect("join_ok", topic=topic, timeout=timeout)
        return None

    async def leave(self, topic: str, *, wait: bool = True, timeout: float = 10) -> dict | None:
        """``channel.leave()``; with ``wait`` returns the ``leave_reply`` event. Note
        that phoenix.js emits the local ``channel_close`` (payload "leave") just
        BEFORE ``leave_reply``, so waiting here moves the cursor past it; use
        ``wait=False`` and expect both in order if the close matters."""
        await self.send({"cmd": "leave", "topic": topic})
        if wait:
            return await self.expect("leave_reply", topic=topic, timeout=timeout)
        return None

    async def set_params(self, topic: str, params: dict) -> None:
        """Change what the channel's params function returns from the next (re)join on."""
        await self.send({"cmd": "set_params", "topic": topic, "params": params})

    async def set_socket_params(self, params: dict) -> None:
        """Change the socket params used from the next (re)connect on."""
        await self.send({"cmd": "set_socket_params", "params": params})

    async def set_ack(self, topic: str, ack: str) -> None:
        await self.send({"cmd": "set_ack", "topic": topic, "ack": ack})

    async def ack(self, topic: str, message_id: Any) -> None:
        """Send one ``message_ack`` by hand."""
        await self.send({"cmd": "ack", "topic": topic, "message_id": message_id})

    async def push(
        self,
        topic: str,
        event: str,
        payload: dict | None = None,
        *,
        id: str | None = None,
        push_timeout_ms: int | None = None,
        wait: bool = True,
        timeout: float = 10,
    ) -> dict | str:
        """``channel.push(event, payload)``. With ``wait`` returns the ``push_reply``
        event (status ok/error/timeout); otherwise returns the push id."""
        push_id = id if id is not None else f"push-{next(self._ids)}"
        cmd: dict[str, Any] = {"cmd": "push", "topic": topic, "event": event, "payload": payload or {}, "id": push_id}
        if push_timeout_ms is not None:
            cmd["timeout_ms"] = push_timeout_ms
        await self.send(cmd)
        if wait:
            return await self.expect("push_reply", id=push_id, timeout=timeout)
        return push_id

    async def ping(self, *, timeout: float = 10) -> float:
        """``socket.ping()``; returns the round-trip time in ms."""
        await self.send({"cmd": "ping"})
        return (await self.expect("pong", timeout=timeout))["rtt"]

    async def raw(self, data: str) -> None:
        """Send a raw text frame over the current WebSocket, bypassing phoenix.js."""
        await self.send({"cmd": "raw", "data": data})

    async def state(self, *, timeout: float = 10) -> dict:
        await self.send({"cmd": "state"})
        return await self.expect("state", timeout=timeout)

    # -- the reliable helper (clients/js/reliable.mjs) ---------------------------

    async def reliable_join(
        self,
        topic: str,
        params: dict | None = None,
        *,
        ack: str = "each",
        events: Sequence[str] = (),
        quiet: bool = False,
        wait: bool = True,
        timeout: float = 10,
    ) -> dict | None:
        """Join ``topic`` through ``reliableChannel`` (auto-ack, resume, de-dup). Messages of
        ``events`` handed to the application come back as ``reliable_message`` events; with
        ``quiet`` the per-message ``message``/``reply`` events are not emitted. With ``wait``
        returns the ``join_ok`` event."""
        await self.send(
            {"cmd": "reliable_join", "topic": topic, "params": params or {}, "ack": ack, "events": list(events), "quiet": quiet}
        )
        if wait:
            return await self.expect("join_ok", topic=topic, timeout=timeout)
        return None

    async def reliable_stats(self, topic: str, *, timeout: float = 10) -> dict:
        """The helper's counters and position (a ``reliable_stats`` event)."""
        await self.send({"cmd": "reliable_stats", "topic": topic})
        return await self.expect("reliable_stats", topic=topic, timeout=timeout)

    async def drop_acks(self, on: bool, *, timeout: float = 10) -> dict:
        """Lose (``on``) or stop losing outbound ``message_ack`` frames (needs ``ack_filter=True``)."""
        await self.send({"cmd": "drop_acks", "on": on})
        return await self.expect("drop_acks", on=on, timeout=timeout)

    async def terminate(self) -> None:
        """Drop the current WebSocket's TCP connection abruptly (no close frame)."""
        await self.send({"cmd": "terminate"})
