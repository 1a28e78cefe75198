"""Protocol behaviour over real sockets with raw clients: bad input, handshakes, join_refs, binary
frames, V1, many clients, clients vanishing mid-push.

Real sockets and the real clock; every wait is on a frame, a close or a log
event, with a timeout.
"""

from __future__ import annotations

import base64
import json

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from ackvisor.examples.superheroes import STORE_NAME

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.channel_apps import EchoChannel, RawClient, past_the_ack_deadline, serve, wait_until
    from tests.phoenix_js import PhoenixJS
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from channel_apps import EchoChannel, RawClient, past_the_ack_deadline, serve, wait_until  # type: ignore[no-redef]
    from phoenix_js import PhoenixJS  # type: ignore[no-redef]

LOBBY = "superheroes:lobby"


def _binary_push(join_ref: str, ref: str, topic: str, event: str, payload: bytes) -> bytes:
    j, r, t, e = (s.encode() for s in (join_ref, ref, topic, event))
    return bytes([0, len(j), len(r), len(t), len(e)]) + j + r + t + e + payload


async def _bystander_works(client: RawClient, join_ref: str) -> None:
    """Another connected client still gets heartbeat and channel replies."""
    assert (await client.heartbeat())[4]["status"] == "ok"
    echo = await client.call(join_ref, "echo:by", "echo", {"still": "here"})
    assert echo[4] == {"status": "ok", "response": {"still": "here"}}


# --------------------------------------------------------------- malformed frames

CLOSING_FRAMES = [
    pytest.param("this is not json", 1007, "invalid_json", id="invalid-json"),
    pytest.param('{"topic": "echo:1", "event": "x", "payload": {}, "ref": "1"}', 1007, "not_an_array", id="object"),
    pytest.param("42", 1007, "not_an_array", id="number"),
    pytest.param('"a string"', 1007, "not_an_array", id="string"),
    pytest.param('["1", "1", "echo:1", "echo"]', 1007, "wrong_arity", id="four-items"),
    pytest.param("[]", 1007, "wrong_arity", id="empty-array"),
    pytest.param('["1", "1", 7, "echo", {}]', 1007, "wrong_type", id="bad-topic"),
    pytest.param('["1", "1", "", "echo", {}]', 1007, "wrong_type", id="empty-topic"),
    pytest.param('[null, "1", "echo:1", "echo", {"x": NaN}]', 1007, "invalid_json", id="nan"),
    pytest.param("[" * 100_000 + "]" * 100_000, 1007, "invalid_json", id="deep-nesting"),
    pytest.param(_binary_push("1", "2", "echo:1", "e", b"")[:4], 1007, "bad_binary_header", id="binary-truncated"),
    pytest.param(bytes([0, 200, 1, 6, 4]) + b"12echo:1echo", 1007, "bad_binary_header", id="binary-bad-lengths"),
    pytest.param(bytes([0, 1, 1, 6, 1]) + b"11echo:1\xff", 1007, "bad_binary_header", id="binary-bad-utf8"),
    pytest.param(bytes([1, 0, 0, 0, 0]), 1003, "bad_binary_header", id="binary-wrong-kind"),
    pytest.param(b"", 1007, "bad_binary_header", id="binary-empty"),
]


@pytest.mark.parametrize("frame, code, reason", CLOSING_FRAMES)
async def test_malformed_frames_close_only_that_socket(frame, code, reason):
    async with serve(ack_timeout=1.0) as server:
        async with RawClient.open(server.ws_url()) as bystander, RawClient.open(server.ws_url()) as bad:
            by_ref, _ = await bystander.join("echo:by")
            joined_ref, _ = await bad.join("echo:1")
            await bad.send_raw(frame)
            assert await bad.closed() == code
            await _bystander_works(bystander, by_ref)
        [log] = server.events("bad_frame")
        assert log["reason"] == reason and log["close_code"] == code and log["log_level"] == "warning"
        assert not server.crash_reports(), server.crash_reports()
        server.assert_healthy()


REPLYING_FRAMES = [
    pytest.param('["J", "9", "echo:1", "echo", []]', "echo:1", id="payload-array"),
    pytest.param('["J", "9", "echo:1", "echo", "text"]', "echo:1", id="payload-string"),
    pytest.param('["J", "9", "echo:1", "echo", null]', "echo:1", id="payload-null"),
    pytest.param('["J", "9", "echo:1", 5, {}]', "echo:1", id="event-number"),
    pytest.param('["J", "9", "echo:1", "", {}]', "echo:1", id="event-empty"),
    pytest.param('["J", 1.5, "echo:1", "echo", {}]', "echo:1", id="ref-float"),
    pytest.param('["J", "9", "nope:1", "echo", 7]', "nope:1", id="unjoined-topic"),
]


@pytest.mark.parametrize("frame, topic", REPLYING_FRAMES)
async def test_wrong_types_on_an_addressable_frame_get_an_error_reply_and_the_socket_stays(frame, topic):
    async with serve() as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join("echo:1")
            await c.send_raw(frame.replace('"J"', json.dumps(join_ref)))
            reply = await c.expect(lambda f: f[3] == "phx_reply" and f[2] == topic)
            assert reply[4]["status"] == "error" and reply[4]["response"] == {"reason": "wrong_type"}
            # the socket and the channel are fine
            echo = await c.call(join_ref, "echo:1", "echo", {"a": 1})
            assert echo[4] == {"status": "ok", "response": {"a": 1}}
        assert not server.crash_reports()


async def test_a_frame_over_max_frame_bytes_closes_1009():
    async with serve(max_frame_bytes=1024) as server:
        async with RawClient.open(server.ws_url()) as bystander, RawClient.open(server.ws_url()) as big:
            by_ref, _ = await bystander.join("echo:by")
            join_ref, _ = await big.join("echo:1")
            # just under the limit is fine
            small = await big.call(join_ref, "echo:1", "echo", {"x": "a" * 900})
            assert small[4]["status"] == "ok"
            await big.send(join_ref, "9", "echo:1", "echo", {"x": "a" * 2000})
            assert await big.closed() == 1009
            await _bystander_works(bystander, by_ref)
        assert server.events("bad_frame", reason="too_big", close_code=1009)
        assert not server.crash_reports()
        server.assert_healthy()


async def test_malformed_raw_frame_from_phoenix_js_socket_then_it_reconnects():
    """The driver's raw command sends garbage over phoenix.js's own socket: closed 1007, phoenix.js
    reconnects (non-1000) and rejoins; a second phoenix.js client is untouched."""
    async with serve(ack_timeout=1.0) as server:
        async with PhoenixJS.open(server.url, reconnect_ms=20, rejoin_ms=50) as js, PhoenixJS.open(
            server.url, reconnect_ms=20, rejoin_ms=50
        ) as other:
            for client in (js, other):
                await client.connect()
                await client.join(LOBBY)
                await client.expect("message", event="hydrate")
            await js.raw("[1,2,3]")
            closed = await js.expect("socket_close")
            assert closed["code"] == 1007
            await js.expect("join_ok", topic=LOBBY)
            await js.expect("message", event="hydrate")
            await js.send({"cmd": "raw", "data_base64": base64.b64encode(bytes([0, 9, 9, 9, 9])).decode()})
            closed = await js.expect("socket_close")
            assert closed["code"] == 1007
            await js.expect("join_ok", topic=LOBBY)
            await other.ping()
            assert not other.find("socket_close") and not other.find("channel_error")
        assert not server.crash_reports()


# --------------------------------------------------------------- handshake


async def _rejected(url: str, **kwargs) -> int:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, **kwargs):
            pass
    return info.value.status_code


async def test_handshake_rejections_are_http_errors_and_harm_nobody():
    async with serve(check_origin=("https://good.example",)) as server:
        async with RawClient.open(server.ws_url()) as bystander:
            by_ref, _ = await bystander.join("echo:by")
            assert await _rejected(server.ws_url("vsn=3.0.0")) == 403
            assert await _rejected(server.ws_url("vsn=banana")) == 403
            assert await _rejected(server.ws_url(path="/nope/websocket")) == 404
            assert await _rejected(server.ws_url(path="/socket")) == 404
            assert await _rejected(server.ws_url(), extra_headers=[(b"Origin", b"https://evil.example")]) == 403
            assert await _rejected(server.ws_url(), extra_headers=[(b"Origin", b"https://good.example:bad")]) == 403
            # allowed origin, and no origin at all (non-browser clients), are accepted
            async with RawClient.open(server.ws_url(), extra_headers=[(b"Origin", b"https://good.example")]) as ok:
                assert (await ok.heartbeat())[4]["status"] == "ok"
            await _bystander_works(bystander, by_ref)
        rejected = server.events("handshake_rejected")
        assert sorted(e["status"] for e in rejected) == [403, 403, 403, 403, 404, 404]
        assert not server.crash_reports(), server.crash_reports()
        server.assert_healthy()


async def test_connect_hook_can_refuse_or_assign():
    def connect(params, info):
        if params.get("user") == "mallory":
            return False
        return {"user": params.get("user")}

    async with serve(connect=connect) as server:
        assert await _rejected(server.ws_url("user=mallory&vsn=2.0.0")) == 403
        async with RawClient.open(server.ws_url("user=alice&vsn=2.0.0")) as c:
            _, reply = await c.join("echo:1")
            assert reply[4]["response"]["assigns"] == {"user": "alice"}
        assert not server.crash_reports()


async def test_v1_clients_speak_json_objects():
    async with serve() as server:
        async with RawClient.open(server.ws_url(query="")) as c:  # no vsn: V1
            await c.send_raw(json.dumps({"topic": "echo:1", "event": "phx_join", "payload": {}, "ref": "1"}))
            reply = await c.recv()
            assert reply == {
                "topic": "echo:1", "event": "phx_reply", "ref": "1",
                "payload": {"status": "ok", "response": {"topic": "echo:1", "assigns": {}}},
            }  # fmt: skip
            await c.send_raw(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "2"}))
            assert (await c.recv())["ref"] == "2"
            await c.send_raw("[null, null, \"echo:1\", \"x\", {}]")  # a V2 frame is not an object
            assert await c.closed() == 1007


# --------------------------------------------------------------- limits and draining


async def test_max_channels_per_socket():
    async with serve(max_channels=2) as server:
        async with RawClient.open(server.ws_url()) as c:
            await c.join("echo:1")
            await c.join("echo:2")
            _, reply = await c.join("echo:3")
            assert reply[0] is None
            assert reply[4] == {"status": "error", "response": {"reason": "too many channels joined"}}
            assert (await c.heartbeat())[4]["status"] == "ok"


async def test_max_connections_refuses_the_extra_socket_and_keeps_the_others():
    async with serve(max_connections=1) as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join("echo:1")
            stream = await trio.open_tcp_stream("127.0.0.1", server.endpoint.port)
            await stream.send_all(
                b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            with trio.fail_after(5):
                response = b""
                while chunk := await stream.receive_some():
                    response += chunk
            assert response.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")  # then EOF, no upgrade
            await stream.aclose()
            echo = await c.call(join_ref, "echo:1", "echo", {"x": 1})
            assert echo[4]["status"] == "ok"
        assert server.events("connection_refused", why="max_children")
        assert not server.crash_reports()
        server.assert_healthy()


async def test_heartbeats_are_answered_even_with_a_catch_all_route():
    async with serve({"*": EchoChannel}) as server:
        async with RawClient.open(server.ws_url()) as c:
            _, reply = await c.join("phoenix")  # "*" routes even the socket's own topic
            assert reply[4]["status"] == "ok"
            assert (await c.heartbeat())[4] == {"status": "ok", "response": {}}  # not EchoChannel's


async def test_drain_closes_every_socket_with_1001_so_clients_come_back():
    async with serve() as server:
        async with RawClient.open(server.ws_url()) as a, RawClient.open(server.ws_url()) as b:
            await a.join("echo:1")
            await b.join("echo:1")
            assert await server.endpoint.drain(server.node, window=0.05) == 2
            assert await a.closed() == 1001
            assert await b.closed() == 1001
        await wait_until(lambda: server.connection_count() == 0, what="drained")
        assert not server.crash_reports()


# --------------------------------------------------------------- joins, leaves, join_refs


async def test_unmatched_topic_join_and_message_get_error_replies_with_null_join_ref():
    async with serve() as server:
        async with RawClient.open(server.ws_url()) as c:
            _, reply = await c.join("nope:1")
            assert reply[0] is None and reply[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
            msg = await c.call("5", "echo:1", "echo", {})  # never joined
            assert msg[0] is None and msg[4]["response"] == {"reason": "unmatched topic"}
            left = await c.call("5", "echo:1", "phx_leave")  # leave of a topic not joined: ok
            assert left[4] == {"status": "ok", "response": {}}
            assert (await c.heartbeat())[4]["status"] == "ok"
            refused = await c.join("echo:2", {"refuse": True})
            assert refused[1][4] == {"status": "error", "response": {"reason": "unauthorized"}}
            crashed = await c.join("echo:3", {"crash": True})
            assert crashed[1][4] == {"status": "error", "response": {"reason": "join crashed"}}
            # the refused/crashed topics are not joined
            assert (await c.call(refused[0], "echo:2", "echo", {}))[4]["response"] == {"reason": "unmatched topic"}
        assert server.events("join_crashed")
        assert not server.events("child_terminated")


async def test_leave_replies_ok_then_phx_close_and_the_topic_is_gone():
    async with serve(ack_timeout=0.3) as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join(LOBBY)
            hydrate = await c.expect_event(LOBBY, "hydrate")
            await c.call(join_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"]})
            left = await c.call(join_ref, LOBBY, "phx_leave")
            assert left[0] == join_ref and left[4] == {"status": "ok", "response": {}}
            close = await c.expect_event(LOBBY, "phx_close")
            assert close == [join_ref, join_ref, LOBBY, "phx_close", {}]
            after = await c.call(join_ref, LOBBY, "add_superhero", {"superhero": {"name": "x"}})
            assert after[4]["response"] == {"reason": "unmatched topic"}
        assert not server.crash_reports()


async def test_leave_with_a_pending_ack_does_not_crash():
    async with serve(ack_timeout=0.2) as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join(LOBBY)
            await c.expect_event(LOBBY, "hydrate")  # never acked
            await c.call(join_ref, LOBBY, "phx_leave")
            await c.expect_event(LOBBY, "phx_close")
            canary = await past_the_ack_deadline(server)
            assert (await c.heartbeat())[4]["status"] == "ok"
        assert server.crash_reports() == [canary]


async def test_duplicate_join_closes_the_old_instance_and_stale_join_refs_are_ignored():
    async with serve(ack_timeout=0.3) as server:
        async with RawClient.open(server.ws_url()) as c:
            old_ref, _ = await c.join(LOBBY)
            old_hydrate = await c.expect_event(LOBBY, "hydrate")  # not acked: the old instance is replaced
            new_ref = c.next_ref()
            await c.send(new_ref, new_ref, LOBBY, "phx_join", {})
            frames = [await c.recv(), await c.recv(), await c.recv()]
            close = next(f for f in frames if f[3] == "phx_close")
            assert close[0] == old_ref and close[1] == old_ref
            reply = next(f for f in frames if f[3] == "phx_reply")
            assert reply[0] == new_ref and reply[4]["status"] == "ok"
            fresh = next(f for f in frames if f[3] == "hydrate")
            assert fresh[0] == new_ref and fresh[4]["message_id"] != old_hydrate[4]["message_id"]

            # a message with the old join_ref is silently ignored (no reply, no effect)
            stale = c.next_ref()
            await c.send(old_ref, stale, LOBBY, "add_superhero", {"superhero": {"name": "Stale"}})
            await c.send(old_ref, c.next_ref(), LOBBY, "phx_leave")
            ok = await c.call(new_ref, LOBBY, "message_ack", {"message_id": fresh[4]["message_id"]})
            assert ok[4]["status"] == "ok"
            assert not [f for f in c.received if f[1] == stale]
            heroes = await server.node.whereis(STORE_NAME).call("list")
            assert "Stale" not in [h["name"] for h in heroes]
            # a null join_ref is accepted (V1-style clients)
            null = await c.call(None, LOBBY, "add_superhero", {"superhero": {"name": "Null"}})
            assert null[0] is None and null[4]["status"] == "ok"
            added = await c.expect_event(LOBBY, "superhero_added")
            await c.call(new_ref, LOBBY, "message_ack", {"message_id": added[4]["message_id"]})
            # past the ack timeout: the old instance's unacked hydrate crashed nothing
            canary = await past_the_ack_deadline(server)
            assert (await c.heartbeat())[4]["status"] == "ok"
        assert server.crash_reports() == [canary]


# --------------------------------------------------------------- acks


async def test_unknown_and_malformed_acks_get_error_replies():
    async with serve(ack_timeout=0.5) as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join(LOBBY)
            hydrate = await c.expect_event(LOBBY, "hydrate")
            for payload in ({"message_id": "nope"}, {"message_id": 7}, {"message_id": ["x"]}, {}):
                reply = await c.call(join_ref, LOBBY, "message_ack", payload)
                assert reply[4] == {"status": "error", "response": {"reason": "unknown message_id"}}
            ok = await c.call(join_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"], "status": "Received"})
            assert ok[4] == {"status": "ok", "response": {}}
            again = await c.call(join_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"]})
            assert again[4]["status"] == "error"
            # an ack without a ref gets no reply (a reply with a null ref reaches nobody)
            await c.send(join_ref, None, LOBBY, "message_ack", {"message_id": "nope-too"})
            assert (await c.heartbeat())[4]["status"] == "ok"
            assert not [f for f in c.received if f[3] == "phx_reply" and f[1] is None]
        assert not server.crash_reports()
        assert len(server.events("unknown_ack")) == 6


async def test_binary_push_reaches_handle_in_and_binary_replies_work():
    async with serve() as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join("echo:1")
            await c.send_raw(_binary_push(join_ref, "7", "echo:1", "echo", b"\x00\x01\x02"))
            reply = await c.reply_to("7")
            assert reply[4] == {"status": "ok", "response": {"bytes": 3}}
            # a binary payload to the superheroes channel is answered, not crashed on
            lobby_ref, _ = await c.join(LOBBY)
            await c.send_raw(_binary_push(lobby_ref, "8", LOBBY, "add_superhero", b"{}"))
            reply = await c.reply_to("8")
            assert reply[4]["status"] == "error"
        assert not server.crash_reports(), server.crash_reports()


async def test_a_crash_in_handle_in_is_phx_error_not_a_closed_socket():
    async with serve() as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, _ = await c.join("echo:1")
            other_ref, _ = await c.join("echo:2")
            await c.send(join_ref, "9", "echo:1", "crash")
            err = await c.expect_event("echo:1", "phx_error")
            assert err[:4] == [join_ref, join_ref, "echo:1", "phx_error"]
            # the other channel on the same socket is untouched
            echo = await c.call(other_ref, "echo:2", "echo", {"ok": True})
            assert echo[4]["response"] == {"ok": True}
        [report] = server.events("channel_crashed")
        assert report["reason"] == "RuntimeError" and report["topic"] == "echo:1"


# --------------------------------------------------------------- many clients


async def _hydrated_client(nursery: trio.Nursery, url: str, **kwargs) -> tuple[RawClient, str]:
    c = await RawClient.connect(nursery, url, **kwargs)
    join_ref, reply = await c.join(LOBBY, timeout=15)
    assert reply[4]["status"] == "ok"
    hydrate = await c.expect_event(LOBBY, "hydrate", timeout=15)
    ack = await c.call(join_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"]}, timeout=15)
    assert ack[4]["status"] == "ok"
    return c, join_ref


async def test_200_concurrent_clients_join_hydrate_ack_and_all_get_a_broadcast():
    n = 200
    async with serve(ack_timeout=5.0) as server:
        clients: list[tuple[RawClient, str]] = []
        async with trio.open_nursery() as sockets:
            async with trio.open_nursery() as joining:
                async def one() -> None:
                    clients.append(await _hydrated_client(sockets, server.ws_url()))

                for _ in range(n):
                    joining.start_soon(one)
            assert len(clients) == n
            assert server.connection_count() == n

            hero = await server.node.whereis(STORE_NAME).call(("add", {"name": "Barbara Liskov"}))
            ids: set[str] = set()

            async def receive(c: RawClient, join_ref: str) -> None:
                msg = await c.expect_event(LOBBY, "superhero_added", timeout=15)
                assert msg[0] == join_ref and msg[4]["superhero"] == hero
                ids.add(msg[4]["message_id"])
                ok = await c.call(join_ref, LOBBY, "message_ack", {"message_id": msg[4]["message_id"]}, timeout=15)
                assert ok[4]["status"] == "ok"

            async with trio.open_nursery() as acking:
                for c, join_ref in clients:
                    acking.start_soon(receive, c, join_ref)
            assert len(ids) == n
            for c, _ in clients:
                await c.ws.aclose()
            sockets.cancel_scope.cancel()
        await wait_until(lambda: server.connection_count() == 0, timeout=10, what="all connections closed")
        assert not server.crash_reports(), server.crash_reports()[:3]
        server.assert_healthy()


async def test_clients_vanishing_mid_push_cost_nothing_to_the_others():
    """One client vanishes (TCP torn down, no close handshake) before a push; another stops
    reading so the server's write to it blocks mid-push, then vanishes too. The other clients
    get every push, in order, and nothing is crash-reported."""
    big = 16 << 20
    # 16 MB stays unacked on `stuck`: lift the unacked-bytes cap (tested on its own) out of the way
    async with serve(ack_timeout=5.0, max_unacked_bytes=64 << 20) as server:
        async with trio.open_nursery() as sockets:
            a, a_ref = await _hydrated_client(sockets, server.ws_url(), max_message_size=big)
            b, b_ref = await _hydrated_client(sockets, server.ws_url(), max_message_size=big)
            gone, _ = await _hydrated_client(sockets, server.ws_url(), max_message_size=big)
            stuck, _ = await _hydrated_client(sockets, server.ws_url(), max_message_size=big)
            store = server.node.whereis(STORE_NAME)
            await gone.ws._stream.aclose()
            # `stuck` reads nothing from here on: its trio-websocket queue (1 message) and the
            # kernel buffers fill up and the server's write to it blocks
            heroes = [await store.call(("add", {"name": f"{n}" * 4_000_000})) for n in range(4)]
            for c, ref in ((a, a_ref), (b, b_ref)):
                for expected in heroes:
                    msg = await c.expect_event(LOBBY, "superhero_added")
                    assert msg[4]["superhero"]["id"] == expected["id"]
                    ok = await c.call(ref, LOBBY, "message_ack", {"message_id": msg[4]["message_id"]})
                    assert ok[4]["status"] == "ok"
            # the server really is blocked writing to `stuck`: not every push made it out
            [stuck_conn] = [
                child.ref._cell.actor
                for child in server.endpoint.connections(server.node).which_children()
                if child.ref._cell.actor.peer.endswith(f":{stuck.ws.local.port}")
            ]
            assert stuck_conn.transport.statistics().bytes_out < len(heroes) * 4_000_000
            await stuck.ws._stream.aclose()
            # both vanished connections end quietly (their channels and ack timers with them)
            await wait_until(lambda: server.connection_count() == 2, what="the vanished connections ended")
            for c in (a, b):
                assert (await c.heartbeat())[4]["status"] == "ok"
                await c.ws.aclose()
            sockets.cancel_scope.cancel()
        assert not server.crash_reports(), server.crash_reports()
        server.assert_healthy()
