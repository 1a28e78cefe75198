"""End-to-end tests for ackvisor.client against a small Phoenix-protocol server.

``FixturePhoenixServer`` below is a TEST FIXTURE, not the product server: a
few dozen lines of trio-websocket that speak V2 the way Phoenix does (brief
§5-§6) and record every frame, so the tests can wait on what the server
observed instead of sleeping. Real sockets, real time; every test is bounded
by ``trio.fail_after(TEST_TIMEOUT)``.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ackvisor.channels.protocol import V2_JSON, Message, ProtocolError, decode_binary_push
from ackvisor.client import (
    ChannelClosed,
    ClientClosed,
    CloseInfo,
    ConnectError,
    JoinError,
    JoinTimeout,
    NotConnected,
    PhoenixClient,
    PushInterrupted,
    PushTimeout,
    decode_server_frame,
    default_backoff,
    default_rejoin_after,
    encode_client_binary_push,
    endpoint_url,
    serialize_params,
)

TEST_TIMEOUT = 2.0
FAST = {"reconnect_after": lambda tries: 0.01, "rejoin_after": lambda tries: 0.01}


def bounded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Fail the test (instead of hanging) if it takes longer than TEST_TIMEOUT."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        with trio.fail_after(TEST_TIMEOUT):
            return await fn(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------
# Test fixture: a minimal Phoenix V2 server


class FixtureConnection:
    """One accepted WebSocket on the fixture server."""

    def __init__(self, server: "FixturePhoenixServer", ws: WebSocketConnection, path: str) -> None:
        self.server = server
        self.ws = ws
        self.path = path
        parts = urlsplit(path)
        self.route = parts.path
        self.query = dict(parse_qsl(parts.query, keep_blank_values=True))
        self.query_pairs = parse_qsl(parts.query, keep_blank_values=True)
        self.raw_query = parts.query
        self.joins: dict[str, str | None] = {}  # topic -> current join_ref
        self.subprotocols: tuple[str, ...] = ()
        self.closed: tuple[int, str | None] | None = None
        self.done = trio.Event()

    async def send(self, frame: str | bytes) -> None:
        await self.ws.send_message(frame)

    async def push(self, topic: str, event: str, payload: Any, *, join_ref: Any = "current") -> None:
        """Channel push ``[join_ref, null, topic, event, payload]`` (current join_ref by default)."""
        if join_ref == "current":
            join_ref = self.joins[topic]
        await self.send(V2_JSON.encode_push(join_ref, topic, event, payload))

    async def broadcast(self, topic: str, event: str, payload: Any) -> None:
        await self.send(V2_JSON.encode_broadcast(topic, event, payload))

    async def reply(self, msg: Message, status: str, response: Any, *, join_ref: Any = "same") -> None:
        jr = msg.join_ref if join_ref == "same" else join_ref
        await self.send(V2_JSON.encode_reply(jr, msg.ref, msg.topic, status, response))

    async def channel_error(self, topic: str) -> None:
        """Like a channel crash: ``[jr, jr, topic, "phx_error", {"reason": "channel_crash"}]``."""
        jr = self.joins.pop(topic)
        await self.send(V2_JSON.encode_message(Message(jr, jr, topic, "phx_error", {"reason": "channel_crash"})))

    async def channel_close(self, topic: str) -> None:
        jr = self.joins.pop(topic)
        await self.send(V2_JSON.encode_message(Message(jr, jr, topic, "phx_close", {})))

    async def close(self, code: int, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)


class FixturePhoenixServer:
    """TEST FIXTURE. Answers like Phoenix: heartbeat -> ok; phx_join -> ``join_handler``;
    phx_leave -> ok then phx_close; ``message_ack`` -> ok; ``echo`` -> ok with the
    payload; ``fail`` -> error; ``noreply`` -> nothing; binary pushes -> binary reply.
    Records every decoded client frame in ``received`` as ``(connection, Message)``.
    """

    def __init__(self) -> None:
        self.port = 0
        self.connections: list[FixtureConnection] = []
        self.received: list[tuple[FixtureConnection, Message]] = []
        self.raw: list[tuple[FixtureConnection, str | bytes]] = []
        self.answer_heartbeats = True
        self.reject_connections = 0
        self.rejected = 0
        self.reply_to_joins = True
        self.join_handler: Callable[[FixtureConnection, Message], tuple[str, dict[str, Any]]] = (
            lambda conn, msg: ("ok", {"joined": msg.topic})
        )
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket"

    def _notify(self) -> None:
        event, self._changed = self._changed, trio.Event()
        event.set()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve_websocket, self._handler, "127.0.0.1", 0, None)
            self.port = server.port
            task_status.started()

    async def _handler(self, request: WebSocketRequest) -> None:
        if self.reject_connections > 0:  # like connect/3 returning :error -> HTTP 403
            self.reject_connections -= 1
            self.rejected += 1
            await request.reject(403)
            self._notify()
            return
        proposed = tuple(request.proposed_subprotocols)
        ws = await request.accept(subprotocol="phoenix" if "phoenix" in proposed else None)
        conn = FixtureConnection(self, ws, request.path)
        conn.subprotocols = proposed
        self.connections.append(conn)
        self._notify()
        try:
            while True:
                data = await ws.get_message()
                self.raw.append((conn, data))
                try:
                    msg = V2_JSON.decode(data)
                except ProtocolError:
                    self._notify()
                    continue
                self.received.append((conn, msg))
                self._notify()
                await self._answer(conn, msg)
        except ConnectionClosed:
            pass
        finally:
            reason = ws.closed
            conn.closed = (reason.code, reason.reason) if reason is not None else None
            conn.done.set()
            self._notify()

    async def _answer(self, conn: FixtureConnection, msg: Message) -> None:
        event = msg.event
        if msg.topic == "phoenix" and event == "heartbeat":
            if self.answer_heartbeats:
                await conn.reply(msg, "ok", {}, join_ref=None)
        elif event == "phx_join":
            if not self.reply_to_joins:
                return
            status, response = self.join_handler(conn, msg)
            if status == "ok":
                conn.joins[msg.topic] = msg.join_ref
            await conn.reply(msg, status, response)
        elif event == "phx_leave":
            await conn.reply(msg, "ok", {})
            if conn.joins.get(msg.topic) == msg.join_ref:
                await conn.channel_close(msg.topic)
        elif isinstance(msg.payload, bytes):
            await conn.send(V2_JSON.encode_reply(msg.join_ref, msg.ref, msg.topic, "ok", msg.payload[::-1]))
        elif event == "message_ack":
            await conn.reply(msg, "ok", {})
        elif event == "echo":
            await conn.reply(msg, "ok", msg.payload)
        elif event == "fail":
            await conn.reply(msg, "error", {"reason": "nope"})
        elif event == "noreply":
            pass

    # ---- observation (wait on events, never sleep) ---------------------------

    async def wait_connection(self, count: int = 1) -> FixtureConnection:
        """Wait until ``count`` connections were accepted; return the count-th."""
        while len(self.connections) < count:
            await self._changed.wait()
        return self.connections[count - 1]

    async def wait_for(self, predicate: Callable[[FixtureConnection, Message], bool], *, start: int = 0) -> tuple[int, FixtureConnection, Message]:
        """First received message (index >= start) matching ``predicate``."""
        i = start
        while True:
            while i < len(self.received):
                conn, msg = self.received[i]
                if predicate(conn, msg):
                    return i, conn, msg
                i += 1
            await self._changed.wait()

    async def wait_event(self, event: str, *, topic: str | None = None, start: int = 0) -> Message:
        _, _, msg = await self.wait_for(
            lambda c, m: m.event == event and (topic is None or m.topic == topic), start=start
        )
        return msg

    def events(self, event: str) -> list[Message]:
        return [m for _, m in self.received if m.event == event]


@pytest.fixture
async def server() -> Any:
    """A running FixturePhoenixServer on 127.0.0.1 (random port)."""
    srv = FixturePhoenixServer()
    async with trio.open_nursery() as nursery:
        await nursery.start(srv.run)
        yield srv
        nursery.cancel_scope.cancel()


def _client_tasks() -> list[str]:
    """Names of live tasks belonging to ackvisor.client."""
    names = []
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return [n for n in names if "ackvisor.client" in n]


# --------------------------------------------------------------------------
# Pure helpers


def test_default_schedules_match_phoenix_js() -> None:
    assert [default_backoff(t) for t in range(1, 12)] == [
        0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 5.0
    ]
    assert [default_rejoin_after(t) for t in range(1, 6)] == [1.0, 2.0, 5.0, 10.0, 10.0]


def test_endpoint_url_like_phoenix_js() -> None:
    assert endpoint_url("ws://h:4000/socket") == "ws://h:4000/socket/websocket?vsn=2.0.0"
    assert (
        endpoint_url("ws://h:4000/socket", {"token": "a b&c", "user": {"id": 1, "tags": ["x", "y"]}, "on": True})
        == "ws://h:4000/socket/websocket?token=a%20b%26c&user%5Bid%5D=1"
        "&user%5Btags%5D%5B0%5D=x&user%5Btags%5D%5B1%5D=y&on=true&vsn=2.0.0"
    )
    assert serialize_params({"q": "it's (ok)!*~"}) == "q=it's%20(ok)!*~"


def test_binary_frame_helpers_roundtrip() -> None:
    frame = encode_client_binary_push("1", "2", "room:1", "up", b"\x00\xff")
    assert decode_binary_push(frame) == Message("1", "2", "room:1", "up", b"\x00\xff")
    assert decode_server_frame(V2_JSON.encode_push("3", "t", "e", b"xy")) == Message("3", None, "t", "e", b"xy")
    assert decode_server_frame(V2_JSON.encode_broadcast("t", "e", b"z")) == Message(None, None, "t", "e", b"z")
    assert decode_server_frame(V2_JSON.encode_reply("3", "9", "t", "ok", b"r")) == Message(
        "3", "9", "t", "phx_reply", {"status": "ok", "response": b"r"}
    )
    for bad in (b"", b"\x07", b"\x00\x05\x01\x01ab", b"\x02\x01\x01\xff\xfe"):
        with pytest.raises(ProtocolError):
            decode_server_frame(bad)


# --------------------------------------------------------------------------
# Connecting and joining


@bounded
async def test_connect_url_params_and_join_refs(server: FixturePhoenixServer) -> None:
    calls = itertools.count(1)
    async with PhoenixClient.open(server.url, params=lambda: {"token": "t", "n": next(calls)}) as client:
        conn = await server.wait_connection()
        assert conn.route == "/socket/websocket"
        assert conn.query_pairs == [("token", "t"), ("n", "1"), ("vsn", "2.0.0")]
        assert client.connected

        channel = await client.join("room:1", {"since": 5})
        assert channel.joined and channel.state == "joined"
        assert channel.join_response == {"joined": "room:1"}
        join = server.events("phx_join")[0]
        assert join.topic == "room:1" and join.payload == {"since": 5}
        assert join.join_ref == join.ref == channel.join_ref
        assert join.ref is not None and join.ref.isdigit()

        reply = await channel.push("echo", {"a": 1})
        assert reply == {"status": "ok", "response": {"a": 1}}
        echo = server.events("echo")[0]
        assert echo.join_ref == channel.join_ref
        assert int(echo.ref) > int(join.ref)  # one counter per socket, decimal strings
        assert channel.events.joins == 1
        stats = client.statistics()
        assert stats.connects == 1 and stats.reconnects == 0 and stats.joins == 1


@bounded
async def test_join_error_raises_and_discards_channel(server: FixturePhoenixServer) -> None:
    server.join_handler = lambda conn, msg: ("error", {"reason": "unauthorized"})
    async with PhoenixClient.open(server.url) as client:
        with pytest.raises(JoinError) as info:
            await client.join("secret:1")
        assert info.value.response == {"reason": "unauthorized"}
        assert info.value.topic == "secret:1"
        assert client.channel("secret:1") is None
        assert client.statistics().join_errors == 1


@bounded
async def test_join_timeout_sends_leave(server: FixturePhoenixServer) -> None:
    server.reply_to_joins = False
    async with PhoenixClient.open(server.url) as client:
        with pytest.raises(JoinTimeout):
            await client.join("slow:1", timeout=0.1)
        join = server.events("phx_join")[0]
        leave = await server.wait_event("phx_leave", topic="slow:1")
        assert leave.join_ref == join.join_ref
        assert client.channel("slow:1") is None


@bounded
async def test_join_while_disconnected_is_sent_on_connect(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, wait_connected=False) as client:
        channel = await client.join("room:late")
        assert channel.joined and client.connected


@bounded
async def test_handshake_rejected(server: FixturePhoenixServer) -> None:
    from trio_websocket import ConnectionRejected

    server.reject_connections = 1
    with pytest.raises(ConnectError) as info:
        async with PhoenixClient.open(server.url, reconnect=False):
            pytest.fail("must not get here")  # pragma: no cover
    assert isinstance(info.value.cause, ConnectionRejected) and info.value.cause.status_code == 403

    # with reconnect=True the client keeps retrying on the backoff, like phoenix.js
    server.reject_connections = 3
    async with PhoenixClient.open(server.url, **FAST) as client:
        assert client.statistics().connect_errors == 3
        assert server.rejected == 4 and len(server.connections) == 1


async def test_connect_failure_without_reconnect_raises() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        port = listener.socket.getsockname()[1]
        await listener.aclose()  # nothing listens on this port any more
        with pytest.raises(ConnectError):
            async with PhoenixClient.open(f"ws://127.0.0.1:{port}/socket", reconnect=False):
                pytest.fail("must not get here")  # pragma: no cover


# --------------------------------------------------------------------------
# Acks


@bounded
async def test_auto_ack_with_current_join_ref_before_delivery(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("superheroes:lobby")
        conn = server.connections[0]
        await conn.push("superheroes:lobby", "hydrate", {"message_id": "m-1", "superheroes": []})
        # nobody calls receive(): the ack must still be sent
        ack = await server.wait_event("message_ack")
        assert ack.join_ref == channel.join_ref
        assert ack.topic == "superheroes:lobby"
        assert ack.payload == {"message_id": "m-1", "status": "Received"}
        assert ack.ref is not None and ack.ref != ack.join_ref

        msg = await channel.receive()
        assert msg.event == "hydrate" and msg.payload["message_id"] == "m-1"
        assert msg.join_ref == channel.join_ref

        # ordering: when receive() returns, the ack is already on the wire, so a
        # frame sent afterwards reaches the server after it
        await conn.push("superheroes:lobby", "update", {"message_id": 7})
        await channel.receive()
        await channel.push("echo", {"after": True})
        idx_ack, _, _ = await server.wait_for(lambda c, m: m.event == "message_ack" and m.payload["message_id"] == 7)
        idx_echo, _, _ = await server.wait_for(lambda c, m: m.event == "echo")
        assert idx_ack < idx_echo

        # broadcasts (join_ref null) are acked too, with the channel's join_ref
        await conn.broadcast("superheroes:lobby", "new", {"message_id": "b-1"})
        ack = await server.wait_event("message_ack", start=idx_echo)
        assert ack.payload["message_id"] == "b-1" and ack.join_ref == channel.join_ref
        # pushes without message_id are not acked
        await conn.push("superheroes:lobby", "plain", {"x": 1})
        assert (await channel.receive()).event == "new"
        assert (await channel.receive()).event == "plain"
        stats = client.statistics()
        assert stats.acks_sent == 3 and channel.events.acks_sent == 3
        assert stats.ack_errors == 0


@bounded
async def test_auto_ack_false_sends_nothing_and_manual_ack(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, auto_ack=False) as client:
        channel = await client.join("room:1")
        assert channel.auto_ack is False
        conn = server.connections[0]
        await conn.push("room:1", "hydrate", {"message_id": "m-1"})
        msg = await channel.receive()
        # frames on one socket are ordered: the echo proves nothing was sent before it
        await channel.push("echo", {})
        assert server.events("message_ack") == []

        reply = await channel.ack(msg.payload["message_id"], status="Processed")
        assert reply == {"status": "ok", "response": {}}
        ack = server.events("message_ack")[0]
        assert ack.payload == {"message_id": "m-1", "status": "Processed"}
        assert ack.join_ref == channel.join_ref
        assert client.statistics().acks_sent == 1

        # per-channel override at join time and at runtime
        other = await client.join("room:2", auto_ack=True)
        await conn.push("room:2", "hydrate", {"message_id": "m-2"})
        assert (await server.wait_event("message_ack", topic="room:2")).payload["message_id"] == "m-2"
        other.auto_ack = False
        await conn.push("room:2", "hydrate", {"message_id": "m-3"})
        await other.receive()
        await other.receive()
        await other.push("echo", {})
        assert [m.payload["message_id"] for m in server.events("message_ack")] == ["m-1", "m-2"]


@bounded
async def test_ack_error_reply_is_counted(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        # a server that answers the ack with an error: patch this connection's answers
        original = server._answer

        async def answer(c: FixtureConnection, msg: Message) -> None:
            if msg.event == "message_ack":
                await c.reply(msg, "error", {"reason": "unknown message"})
            else:
                await original(c, msg)

        server._answer = answer  # type: ignore[method-assign]
        await conn.push("room:1", "hydrate", {"message_id": "m-1"})
        await channel.receive()
        # the error reply to the ack is consumed; a later echo proves it was read
        await channel.push("echo", {})
        assert client.statistics().ack_errors == 1


# --------------------------------------------------------------------------
# Pushes


@bounded
async def test_push_reply_error_timeout_and_binary(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        assert await channel.push("fail", {}) == {"status": "error", "response": {"reason": "nope"}}
        with pytest.raises(PushTimeout):
            await channel.push("noreply", {}, timeout=0.05)
        assert client.statistics().pending_replies == 0

        reply = await channel.push("up", b"\x01\x02\x03")
        assert reply == {"status": "ok", "response": b"\x03\x02\x01"}
        raw = [d for _, d in server.raw if isinstance(d, bytes)][0]
        assert decode_binary_push(raw).join_ref == channel.join_ref

        conn = server.connections[0]
        await conn.push("room:1", "blob", b"\xffdata")
        await conn.broadcast("room:1", "bblob", b"\x00")
        first, second = await channel.receive(), await channel.receive()
        assert (first.event, first.payload, first.join_ref) == ("blob", b"\xffdata", channel.join_ref)
        assert (second.event, second.payload, second.join_ref) == ("bblob", b"\x00", None)


@bounded
async def test_cancelled_push_leaves_client_usable(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        with trio.move_on_after(0.05) as scope:
            await channel.push("noreply", {}, timeout=5)
        assert scope.cancelled_caught
        assert client.statistics().pending_replies == 0
        assert (await channel.push("echo", {"ok": 1}))["response"] == {"ok": 1}


@bounded
async def test_send_raw_and_bad_frames_from_server(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        await client.send_raw('{"not": "an array"}')
        await client.send_raw(b"\x09garbage")
        await channel.push("echo", {})
        assert [d for _, d in server.raw][-3:-1] == ['{"not": "an array"}', b"\x09garbage"]
        conn = server.connections[0]
        await conn.send("[1,2]")
        await conn.send(b"\x07")
        await conn.push("room:1", "after", {})
        assert (await channel.receive()).event == "after"
        assert client.statistics().decode_errors == 2


# --------------------------------------------------------------------------
# Heartbeat


@bounded
async def test_heartbeat_sent_and_answered(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, heartbeat_interval=0.05) as client:
        first = await server.wait_event("heartbeat")
        assert first == Message(None, first.ref, "phoenix", "heartbeat", {})
        # a second heartbeat is only sent after the first one's reply was processed
        _, _, second = await server.wait_for(lambda c, m: m.event == "heartbeat" and m.ref != first.ref)
        assert int(second.ref) > int(first.ref)
        assert client.statistics().heartbeat_timeouts == 0
        assert client.last_heartbeat_rtt is not None
        assert await client.ping() >= 0


@bounded
async def test_missing_heartbeat_reply_closes_and_reconnects(server: FixturePhoenixServer) -> None:
    server.answer_heartbeats = False
    async with PhoenixClient.open(server.url, heartbeat_interval=0.05, **FAST) as client:
        channel = await client.join("room:1")
        first_ref = channel.join_ref
        first_conn = await server.wait_connection(1)
        await server.wait_connection(2)
        await first_conn.done.wait()
        assert first_conn.closed == (1000, "heartbeat timeout")
        assert await client.wait_closed(close_count=1) == CloseInfo(1000, "heartbeat timeout")
        assert client.statistics().heartbeat_timeouts >= 1
        server.answer_heartbeats = True
        await channel.wait_joined(join_count=2)
        assert channel.join_ref != first_ref


# --------------------------------------------------------------------------
# Stale join_refs, phx_error, phx_close


@bounded
async def test_stale_join_ref_dropped(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        await conn.push("room:1", "old", {"message_id": "stale"}, join_ref="999999")
        await conn.send(V2_JSON.encode_message(Message("999999", "999999", "room:1", "phx_error", {})))
        await conn.send(V2_JSON.encode_message(Message("999999", "999999", "room:1", "phx_close", {})))
        await conn.push("room:1", "new", {"message_id": "fresh"})
        msg = await channel.receive()
        assert msg.event == "new"
        assert channel.joined and channel.events.errors == 0 and channel.events.closes == 0
        assert channel.events.stale_dropped == 3
        ack = await server.wait_event("message_ack")
        assert ack.payload["message_id"] == "fresh"
        assert [m.payload["message_id"] for m in server.events("message_ack")] == ["fresh"]
        assert channel.pending_messages() == 0


@bounded
async def test_phx_error_rejoins_with_new_join_ref_and_fresh_params(server: FixturePhoenixServer) -> None:
    counter = itertools.count(1)
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1", lambda: {"attempt": next(counter)})
        conn = server.connections[0]
        first_ref = channel.join_ref
        await conn.push("room:1", "hydrate", {"message_id": "a"})
        await conn.channel_error("room:1")
        await channel.wait_joined(join_count=2)
        assert channel.events.errors == 1 and channel.events.joins == 2
        assert channel.join_ref != first_ref
        joins = server.events("phx_join")
        assert [j.payload for j in joins] == [{"attempt": 1}, {"attempt": 2}]
        assert joins[1].join_ref == joins[1].ref == channel.join_ref
        assert len(server.connections) == 1  # the socket stayed up

        # the message from the first join is still delivered, in order, then new ones
        await conn.push("room:1", "hydrate", {"message_id": "b"})
        assert (await channel.receive()).payload["message_id"] == "a"
        assert (await channel.receive()).payload["message_id"] == "b"
        await server.wait_for(lambda c, m: m.event == "message_ack" and m.payload["message_id"] == "b")
        acks = server.events("message_ack")
        assert [(a.payload["message_id"], a.join_ref) for a in acks] == [("a", first_ref), ("b", channel.join_ref)]


@bounded
async def test_rejoin_error_keeps_retrying(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        answers = iter([("error", {"reason": "busy"}), ("error", {"reason": "busy"})])
        server.join_handler = lambda c, m: next(answers, ("ok", {}))
        await conn.channel_error("room:1")
        await channel.wait_joined(join_count=2)
        assert channel.events.join_errors == 2
        assert len(server.events("phx_join")) == 4


@bounded
async def test_pending_push_interrupted_by_phx_error(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        async with trio.open_nursery() as nursery:

            async def crash_after_push() -> None:
                await server.wait_event("noreply")
                await conn.channel_error("room:1")

            nursery.start_soon(crash_after_push)
            with pytest.raises(PushInterrupted) as info:
                await channel.push("noreply", {})
            assert info.value.event == "noreply"
        # a push made while errored waits for the rejoin and then goes through
        assert (await channel.push("echo", {"x": 1}))["response"] == {"x": 1}
        assert channel.events.joins == 2


@bounded
async def test_phx_close_is_final(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        await conn.push("room:1", "last", {})
        await conn.channel_close("room:1")
        assert (await channel.receive()).event == "last"  # queued messages drain first
        with pytest.raises(ChannelClosed):
            await channel.receive()
        with pytest.raises(ChannelClosed):
            await channel.push("echo", {})
        assert channel.closed and channel.events.closes == 1
        assert client.channel("room:1") is None
        # never rejoined: a later frame on the same socket shows no new phx_join
        other = await client.join("room:2")
        await other.push("echo", {})
        assert [j.topic for j in server.events("phx_join")] == ["room:1", "room:2"]


@bounded
async def test_leave(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        channel = await client.join("room:1")
        await channel.leave()
        leave = server.events("phx_leave")[0]
        assert leave.join_ref == channel.join_ref
        assert channel.closed and channel.state == "closed"
        with pytest.raises(ChannelClosed):
            await channel.receive()
        assert [m async for m in channel] == []
        await channel.leave()  # idempotent
        assert client.channel("room:1") is None
        # the topic can be joined again
        again = await client.join("room:1")
        assert again.joined and again.join_ref != channel.join_ref


@bounded
async def test_duplicate_join_leaves_old_channel(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url) as client:
        first = await client.join("room:1")
        second = await client.join("room:1")
        assert first.closed and second.joined
        leave = server.events("phx_leave")[0]
        assert leave.join_ref == first.join_ref
        with pytest.raises(ChannelClosed):
            first.receive_nowait()


# --------------------------------------------------------------------------
# Socket closes and reconnects


@bounded
async def test_server_close_1011_reconnects_and_rejoins(server: FixturePhoenixServer) -> None:
    calls = itertools.count(1)
    async with PhoenixClient.open(server.url, params=lambda: {"n": next(calls)}, **FAST) as client:
        a = await client.join("room:a", lambda: {"since": len(server.events("phx_join"))})
        b = await client.join("room:b")
        refs = (a.join_ref, b.join_ref)
        conn1 = server.connections[0]
        await conn1.push("room:a", "hydrate", {"message_id": "x"})
        await server.wait_event("message_ack")
        await conn1.close(1011, "no_ack_received")

        assert await client.wait_closed(close_count=1) == CloseInfo(1011, "no_ack_received")
        conn2 = await server.wait_connection(2)
        assert conn2.query["n"] == "2"  # socket params re-evaluated
        await a.wait_joined(join_count=2)
        await b.wait_joined(join_count=2)
        assert (a.join_ref, b.join_ref) != refs and a.join_ref != refs[0]
        assert a.events.transport_errors == 1
        rejoin = [m for c, m in server.received if c is conn2 and m.event == "phx_join" and m.topic == "room:a"][0]
        assert rejoin.payload == {"since": 2}
        assert client.statistics().reconnects == 1 and client.connected

        await conn2.push("room:a", "hydrate", {"message_id": "y"})
        ack = await server.wait_for(lambda c, m: c is conn2 and m.event == "message_ack")
        assert ack[2].join_ref == a.join_ref
        assert [(await a.receive()).payload["message_id"] for _ in range(2)] == ["x", "y"]


@bounded
async def test_abrupt_tcp_loss_reconnects(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        await conn.ws._stream.aclose()  # no close frame: the client sees 1006
        assert (await client.wait_closed(close_count=1)).code == 1006
        await channel.wait_joined(join_count=2)
        assert len(server.connections) == 2


@bounded
async def test_no_reconnect_raises_client_closed(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, reconnect=False) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        await conn.push("room:1", "queued", {})
        async with trio.open_nursery() as nursery:
            results: list[BaseException] = []

            async def blocked_push() -> None:
                try:
                    await channel.push("noreply", {})
                except BaseException as exc:
                    results.append(exc)

            nursery.start_soon(blocked_push)
            await server.wait_event("noreply")
            await conn.close(1011, "boom")
        assert isinstance(results[0], (PushInterrupted, ClientClosed))
        assert (await channel.receive()).event == "queued"
        with pytest.raises(ClientClosed) as info:
            await channel.receive()
        assert info.value.close == CloseInfo(1011, "boom")
        with pytest.raises(ClientClosed):
            await channel.push("echo", {})
        with pytest.raises(ClientClosed):
            await client.join("room:2")
        with pytest.raises(ClientClosed):
            await channel.wait_joined()
        assert not client.connected and client.is_closed
        assert client.closes == [CloseInfo(1011, "boom")]
        assert len(server.connections) == 1


@bounded
async def test_disconnect(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, **FAST) as client:
        channel = await client.join("room:1")
        await client.disconnect(4000, "bye")
        conn = server.connections[0]
        await conn.done.wait()
        assert conn.closed == (4000, "bye")
        with pytest.raises(ClientClosed):
            await channel.receive()
        with pytest.raises(ClientClosed):
            await client.send_raw("x")
        assert client.closes == [CloseInfo(4000, "bye")]


# --------------------------------------------------------------------------
# Structured concurrency


@bounded
async def test_clean_shutdown_no_leftover_tasks(server: FixturePhoenixServer) -> None:
    assert _client_tasks() == []
    receiver_error: list[BaseException] = []
    async with trio.open_nursery() as nursery:
        async with PhoenixClient.open(server.url, heartbeat_interval=0.05) as client:
            channel = await client.join("room:1")
            assert any("_run" in n for n in _client_tasks())

            async def receiver() -> None:
                try:
                    await channel.receive()
                except ClientClosed as exc:
                    receiver_error.append(exc)

            nursery.start_soon(receiver)
            await server.wait_event("heartbeat")
        assert _client_tasks() == []
    assert len(receiver_error) == 1  # a waiting receiver is woken, not stranded
    conn = server.connections[0]
    await conn.done.wait()
    assert conn.closed == (1000, None)


@bounded
async def test_exception_in_body_propagates_unwrapped(server: FixturePhoenixServer) -> None:
    with pytest.raises(KeyError):
        async with PhoenixClient.open(server.url) as client:
            await client.join("room:1")
            raise KeyError("boom")
    assert _client_tasks() == []


async def test_cancellation_during_reconnect_backoff(server: FixturePhoenixServer) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        start = trio.current_time()
        with trio.move_on_after(0.3) as scope:
            async with PhoenixClient.open(server.url, reconnect_after=lambda tries: 60.0) as client:
                await client.join("room:1")
                await server.connections[0].close(1011)
                await client.wait_closed(close_count=1)
                assert not client.connected  # now sleeping 60 s before reconnecting
                with pytest.raises(NotConnected):
                    await client.send_raw("[]")
                with pytest.raises(NotConnected):
                    await client.ping()
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert trio.current_time() - start < 1.0
        assert _client_tasks() == []
        assert len(server.connections) == 1


async def test_connect_timeout_and_cancel_during_stalled_handshake() -> None:
    """A peer that accepts TCP but never answers the WebSocket handshake."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(trio.serve_tcp, lambda stream: trio.sleep_forever(), 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            url = f"ws://127.0.0.1:{port}/socket"
            with pytest.raises(ConnectError) as info:
                async with PhoenixClient.open(url, reconnect=False, connect_timeout=0.1):
                    pytest.fail("must not get here")  # pragma: no cover
            assert isinstance(info.value.cause, trio.TooSlowError)
            with trio.move_on_after(0.1) as scope:
                async with PhoenixClient.open(url, connect_timeout=30):
                    pytest.fail("must not get here")  # pragma: no cover
            assert scope.cancelled_caught
            assert _client_tasks() == []
            nursery.cancel_scope.cancel()


@bounded
async def test_auth_token_subprotocols(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, auth_token="s3cret?") as client:
        conn = await server.wait_connection()
        assert conn.subprotocols == ("phoenix", "base64url.bearer.phx.czNjcmV0Pw")
        assert conn.ws.subprotocol == "phoenix"
        assert (await client.join("room:1")).joined


@bounded
async def test_inbox_limit_drops_oldest(server: FixturePhoenixServer) -> None:
    async with PhoenixClient.open(server.url, inbox_limit=2) as client:
        channel = await client.join("room:1")
        conn = server.connections[0]
        for i in range(4):
            await conn.push("room:1", "n", {"message_id": i})
        await channel.push("echo", {})  # its reply is read after the 4 pushes were queued
        assert [channel.receive_nowait().payload["message_id"] for _ in range(2)] == [2, 3]
        assert channel.events.inbox_dropped == 2 and channel.events.acks_sent == 4
        with pytest.raises(trio.WouldBlock):
            channel.receive_nowait()
