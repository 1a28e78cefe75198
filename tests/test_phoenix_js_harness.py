"""Self-test of the phoenix.js e2e harness (tests/phoenix_js.py + tests/js/phx_driver.mjs).

The server in this module, :class:`HarnessSelfTestPhoenixServer`, is a tiny,
hard-coded Phoenix-protocol (V2 JSON) fixture that exists only to prove the
harness works against the real phoenix.js client. It is NOT ackvisor's server and
implements none of its semantics beyond what the assertions below need:
heartbeat replies, ``phx_join`` → ok + one ``hydrate`` push carrying a
``message_id``, recording of ``message_ack`` frames, and a few canned events.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.phoenix_js import VERSIONS, PhoenixJS
except ImportError:  # bare `pytest`: rootdir-less sys.path, tests/ is on it
    from phoenix_js import VERSIONS, PhoenixJS  # type: ignore[no-redef]

# Small timings keep every test well under a second or two of real time.
FAST = {"reconnect_ms": 20, "rejoin_ms": 50, "timeout_ms": 2000}


@dataclass
class _Conn:
    id: int
    path: str
    subprotocols: list[str]
    ws: WebSocketConnection
    closed: bool = False


@dataclass
class HarnessSelfTestPhoenixServer:
    """Minimal Phoenix Channels V2 endpoint for the harness self-test (not a product server).

    Inbound frames ``[join_ref, ref, topic, event, payload]``:

    * ``phoenix`` / ``heartbeat`` → ok reply ``{}``
    * ``phx_join`` → ok reply ``{"params": <join params>}``, then the push
      ``[join_ref, null, topic, "hydrate", {"message_id": "msg-N", "topic": topic}]``
    * ``message_ack`` → recorded in :attr:`acks`, ok reply ``{}``
    * ``rehydrate`` → ok reply, then another ``hydrate`` push
    * ``crash`` → ok reply, then ``phx_error`` for the caller's join_ref
    * ``fail`` → error reply ``{"reason": "failed"}``
    * ``phx_leave`` → ok reply, then ``phx_close``
    * anything else → ok reply ``{"echo": payload}``; non-JSON frames go to :attr:`garbage`.
    """

    port: int = 0
    connections: list[_Conn] = field(default_factory=list)
    frames: list[tuple[int, list]] = field(default_factory=list)
    joins: list[dict] = field(default_factory=list)
    acks: list[dict] = field(default_factory=list)
    garbage: list[tuple[int, str]] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 5) -> Any:
        with trio.move_on_after(timeout):
            while not (result := predicate()):
                await self._changed.wait()
            return result
        raise AssertionError(
            f"harness self-test server: condition not met within {timeout} s; "
            f"frames={self.frames[-20:]} joins={self.joins} acks={self.acks}"
        )

    async def wait_for_ack(self, message_id: str, *, timeout: float = 5) -> dict:
        return await self.wait_for(
            lambda: next((a for a in self.acks if a["message_id"] == message_id), None), timeout=timeout
        )

    async def close_all(self, code: int, reason: str) -> None:
        for conn in self.connections:
            if not conn.closed:
                await conn.ws.aclose(code=code, reason=reason)

    async def send_error(self, topic: str) -> None:
        """Send ``phx_error`` for the latest join of ``topic`` (channel crash, socket stays up)."""
        join = [j for j in self.joins if j["topic"] == topic][-1]
        conn = self.connections[join["conn"]]
        await conn.ws.send_message(
            json.dumps([join["join_ref"], join["join_ref"], topic, "phx_error", {"reason": "channel_crash"}])
        )

    async def handle(self, request: WebSocketRequest) -> None:
        proposed = list(request.proposed_subprotocols)
        ws = await request.accept(subprotocol="phoenix" if "phoenix" in proposed else None)
        conn = _Conn(id=len(self.connections), path=request.path, subprotocols=proposed, ws=ws)
        self.connections.append(conn)
        self._notify()
        try:
            while True:
                text = await ws.get_message()
                await self._on_frame(conn, text)
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            conn.closed = True
            self._notify()

    async def _on_frame(self, conn: _Conn, text: str | bytes) -> None:
        try:
            frame = json.loads(text)
            join_ref, ref, topic, event, payload = frame
        except (ValueError, TypeError):
            self.garbage.append((conn.id, text if isinstance(text, str) else repr(text)))
            return
        self.frames.append((conn.id, frame))

        async def send(*msg: Any) -> None:
            await conn.ws.send_message(json.dumps(list(msg)))

        async def reply(status: str, response: dict) -> None:
            await send(join_ref, ref, topic, "phx_reply", {"status": status, "response": response})

        async def hydrate() -> None:
            message_id = f"msg-{next(self._ids)}"
            await send(join_ref, None, topic, "hydrate", {"message_id": message_id, "topic": topic})

        if topic == "phoenix" and event == "heartbeat":
            await reply("ok", {})
        elif event == "phx_join":
            self.joins.append({"conn": conn.id, "join_ref": join_ref, "topic": topic, "params": payload})
            await reply("ok", {"params": payload})
            await hydrate()
        elif event == "message_ack":
            self.acks.append(
                {"conn": conn.id, "join_ref": join_ref, "ref": ref, "topic": topic, **payload}
            )
            await reply("ok", {})
        elif event == "rehydrate":
            await reply("ok", {})
            await hydrate()
        elif event == "crash":
            await reply("ok", {})
            await send(join_ref, join_ref, topic, "phx_error", {"reason": "channel_crash"})
        elif event == "fail":
            await reply("error", {"reason": "failed"})
        elif event == "phx_leave":
            await reply("ok", {})
            await send(join_ref, join_ref, topic, "phx_close", {})
        else:
            await reply("ok", {"echo": payload})


@pytest.fixture
async def harness_server():
    server = HarnessSelfTestPhoenixServer()
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(serve_websocket, server.handle, "127.0.0.1", 0, None)
        server.port = ws_server.port
        yield server
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("version", VERSIONS)
async def test_connect_join_hydrate_auto_ack(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, params={"token": "abc"}, **FAST) as js:
        assert js.events[0]["phoenix"].startswith(version + ".")
        await js.connect()
        ok = await js.join("room:1", {"since": 0})
        join_ref = ok["join_ref"]
        assert ok["response"] == {"params": {"since": 0}}

        msg = await js.expect("message", topic="room:1", event="hydrate")
        assert msg["join_ref"] == join_ref
        message_id = msg["payload"]["message_id"]
        sent = await js.expect("ack_sent", message_id=message_id)
        assert sent["join_ref"] == join_ref and sent["mode"] == "auto"

        ack = await harness_server.wait_for_ack(message_id)
        assert ack["join_ref"] == join_ref
        assert ack["topic"] == "room:1" and ack["status"] == "Received"
        await js.expect("ack_reply", message_id=message_id, status="ok")

    assert js.process.returncode == 0
    [conn] = harness_server.connections
    assert conn.path == "/socket/websocket?token=abc&vsn=2.0.0"
    [join] = harness_server.joins
    assert join["join_ref"] == join_ref and join["params"] == {"since": 0}


@pytest.mark.parametrize("version", VERSIONS)
async def test_ack_none_sends_no_ack_until_told(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, **FAST) as js:
        await js.connect()
        ok = await js.join("room:1", ack="none")
        first = await js.expect("message", event="hydrate")
        await js.expect_no("ack_sent", within=0.3)
        assert not [f for _, f in harness_server.frames if f[3] == "message_ack"]

        # manual ack
        await js.ack("room:1", first["payload"]["message_id"])
        ack = await harness_server.wait_for_ack(first["payload"]["message_id"])
        assert ack["join_ref"] == ok["join_ref"]
        await js.expect("ack_sent", mode="manual")

        # switching to auto acks the next message by itself
        await js.set_ack("room:1", "auto")
        await js.push("room:1", "rehydrate")
        second = await js.expect("message", event="hydrate")
        assert second["payload"]["message_id"] != first["payload"]["message_id"]
        await harness_server.wait_for_ack(second["payload"]["message_id"])
        await js.expect("ack_sent", message_id=second["payload"]["message_id"], mode="auto")


@pytest.mark.parametrize("version", VERSIONS)
async def test_close_1011_reconnects_and_rejoins_with_new_join_ref(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, **FAST) as js:
        await js.connect()
        first = await js.join("room:1")
        first_msg = await js.expect("message", event="hydrate")
        await harness_server.wait_for_ack(first_msg["payload"]["message_id"])

        await harness_server.close_all(1011, "no_ack_received")
        closed = await js.expect("socket_close")
        assert closed["code"] == 1011 and closed["reason"] == "no_ack_received"
        await js.expect("socket_open")
        second = await js.expect("join_ok", topic="room:1")
        assert second["join_ref"] != first["join_ref"]

        msg = await js.expect("message", event="hydrate")
        assert msg["join_ref"] == second["join_ref"]
        ack = await harness_server.wait_for_ack(msg["payload"]["message_id"])
        assert ack["join_ref"] == second["join_ref"]

    assert len(harness_server.connections) == 2
    assert [(j["conn"], j["join_ref"]) for j in harness_server.joins] == [
        (0, first["join_ref"]),
        (1, second["join_ref"]),
    ]
    # the transport loss showed up as a client-synthesized channel error
    assert js.find("channel_error", from_server=False)


@pytest.mark.parametrize("version", VERSIONS)
async def test_params_are_reevaluated_on_rejoin(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, params={"token": "t1"}, **FAST) as js:
        await js.connect()
        await js.join("room:1", {"since": 0})
        await js.expect("message", event="hydrate")

        await js.set_params("room:1", {"since": 7})
        await js.set_socket_params({"token": "t2"})
        await harness_server.close_all(1011, "bye")

        ok = await js.expect("join_ok", topic="room:1")
        assert ok["response"] == {"params": {"since": 7}}
        attempt = js.find("join_attempt", join_ref=ok["join_ref"])
        assert attempt and attempt[-1]["params"] == {"since": 7}

    assert [j["params"] for j in harness_server.joins] == [{"since": 0}, {"since": 7}]
    assert [c.path for c in harness_server.connections] == [
        "/socket/websocket?token=t1&vsn=2.0.0",
        "/socket/websocket?token=t2&vsn=2.0.0",
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_phx_error_rejoins_on_the_same_socket(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, **FAST) as js:
        await js.connect()
        first = await js.join("room:1")
        await js.push("room:1", "crash")
        err = await js.expect("channel_error", from_server=True)
        assert err["payload"] == {"reason": "channel_crash"} and err["wire_join_ref"] == first["join_ref"]
        second = await js.expect("join_ok", topic="room:1")
        assert second["join_ref"] != first["join_ref"]
        await js.expect("message", event="hydrate", join_ref=second["join_ref"])
    assert len(harness_server.connections) == 1
    assert not js.find("socket_close")


@pytest.mark.parametrize("version", VERSIONS)
async def test_driver_commands(harness_server, version):
    async with PhoenixJS.open(harness_server.url, version=version, heartbeat_ms=300, **FAST) as js:
        await js.connect()
        await js.join("room:1")

        reply = await js.push("room:1", "echo", {"x": 1}, id="p1")
        assert reply == {
            "type": "push_reply", "topic": "room:1", "event": "echo",
            "status": "ok", "response": {"echo": {"x": 1}}, "id": "p1",
        }  # fmt: skip
        failed = await js.push("room:1", "fail")
        assert failed["status"] == "error" and failed["response"] == {"reason": "failed"}

        assert isinstance(await js.ping(), (int, float))
        await js.expect("heartbeat_reply", status="ok", timeout=2)

        await js.raw("this is not json")
        await harness_server.wait_for(lambda: harness_server.garbage)
        assert harness_server.garbage == [(0, "this is not json")]

        await js.send({"cmd": "no_such_command"})
        await js.expect("driver_error", cmd="no_such_command")
        await js.send({"cmd": "push", "topic": "never-joined", "event": "x"})
        await js.expect("driver_error", cmd="push")

        state = await js.state()
        assert state["socket"] == "open"
        assert state["channels"] == [{"topic": "room:1", "state": "joined", "join_ref": state["channels"][0]["join_ref"]}]

        # phoenix.js closes the channel locally (payload "leave") right before
        # it hands the ok reply to the caller's receive("ok") hook
        await js.leave("room:1", wait=False)
        closed = await js.expect("channel_close", topic="room:1")
        assert closed["payload"] == "leave" and closed["from_server"] is False
        left = await js.expect("leave_reply", topic="room:1")
        assert left["status"] == "ok"

        await js.disconnect()
        await js.expect_no("socket_open", within=0.3)
    assert len(harness_server.connections) == 1


async def test_auth_token_subprotocol(harness_server):
    async with PhoenixJS.open(harness_server.url, version="1.8", auth_token="s3cret?", **FAST) as js:
        await js.connect()
    token = base64.b64encode(b"s3cret?").decode().rstrip("=")
    assert harness_server.connections[0].subprotocols == ["phoenix", f"base64url.bearer.phx.{token}"]


async def test_raw_mode_reports_frames(harness_server):
    async with PhoenixJS.open(harness_server.url, raw=True, **FAST) as js:
        await js.connect()
        ok = await js.join("room:1", {"a": 1})
        out = [json.loads(e["data"]) for e in js.find("raw_out")]
        assert [ok["join_ref"], ok["join_ref"], "room:1", "phx_join", {"a": 1}] in out
        raw_in = await js.expect("raw_in", data=lambda d: d["event"] == "hydrate")
        assert raw_in["data"]["join_ref"] == ok["join_ref"] and raw_in["data"]["ref"] is None


async def test_expect_failure_is_a_plain_assertion_with_event_tail(harness_server):
    with pytest.raises(AssertionError) as info:
        async with PhoenixJS.open(harness_server.url, **FAST) as js:
            await js.expect("never_happens", timeout=0.2)
    text = str(info.value)
    assert "expected event never_happens" in text and '"type": "ready"' in text
    assert js.process.returncode == 0
