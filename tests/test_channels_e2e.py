"""End-to-end: the unmodified phoenix.js client (1.8 and 1.7, under Node) against ackvisor's endpoint.

Real sockets and the real clock. Every wait is on an observable event with a
timeout (phoenix.js events, heartbeat round trips, server log events).
"""

from __future__ import annotations

import base64

import pytest
import trio

from ackvisor.channels import ConnectRefused
from ackvisor.examples.superheroes import STORE_NAME

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.channel_apps import RawClient, past_the_ack_deadline, serve, wait_until
    from tests.phoenix_js import VERSIONS, PhoenixJS
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from channel_apps import RawClient, past_the_ack_deadline, serve, wait_until  # type: ignore[no-redef]
    from phoenix_js import VERSIONS, PhoenixJS  # type: ignore[no-redef]

LOBBY = "superheroes:lobby"
FAST = {"reconnect_ms": 20, "rejoin_ms": 50, "timeout_ms": 3000}
ACK_TIMEOUT = 0.3


def _no_ack_reports(server) -> list[dict]:
    return [e for e in server.logs if e.get("reason") == "no_ack_received"]


@pytest.mark.parametrize("version", VERSIONS)
async def test_hydrate_and_auto_ack_keep_the_channel_alive_past_the_ack_timeout(version):
    async with serve(ack_timeout=ACK_TIMEOUT) as server:
        async with PhoenixJS.open(server.url, version=version, heartbeat_ms=150, **FAST) as js:
            await js.connect()
            ok = await js.join(LOBBY)
            hydrate = await js.expect("message", topic=LOBBY, event="hydrate")
            t_hydrate = trio.current_time()
            assert hydrate["join_ref"] == ok["join_ref"]
            assert [h["name"] for h in hydrate["payload"]["superheroes"]][:1] == ["Ada Lovelace"]
            message_id = hydrate["payload"]["message_id"]
            await js.expect("ack_sent", message_id=message_id, mode="auto")
            await js.expect("ack_reply", message_id=message_id, status="ok")

            # heartbeats are answered; wait for round trips until well past 2x the ack timeout
            while trio.current_time() - t_hydrate < 2 * ACK_TIMEOUT + 0.1:
                reply = await js.expect("heartbeat_reply", timeout=2)
                assert reply["status"] == "ok"
            # the channel is still alive: it answers a push and still gets store broadcasts
            added = await js.push(LOBBY, "add_superhero", {"superhero": {"name": "Barbara Liskov"}})
            assert added["status"] == "ok" and added["response"]["superhero"]["name"] == "Barbara Liskov"
            change = await js.expect("message", topic=LOBBY, event="superhero_added")
            await js.expect("ack_reply", message_id=change["payload"]["message_id"], status="ok")
            assert isinstance(await js.ping(), (int, float))

            assert not js.find("socket_close")
            assert not js.find("channel_error")
            assert len(js.find("socket_open")) == 1
            assert len(js.find("join_ok")) == 1
        assert not _no_ack_reports(server)
        assert not server.crash_reports(), server.crash_reports()
        server.assert_healthy()


@pytest.mark.parametrize("version", VERSIONS)
async def test_no_ack_crashes_closes_1011_and_the_client_reconnects_to_a_fresh_hydrate(version):
    async with serve(ack_timeout=ACK_TIMEOUT) as server:
        async with PhoenixJS.open(server.url, version=version, **FAST) as js:
            await js.connect()
            first = await js.join(LOBBY, ack="none")
            hydrate = await js.expect("message", topic=LOBBY, event="hydrate")
            first_id = hydrate["payload"]["message_id"]

            closed = await js.expect("socket_close", timeout=3)
            assert closed["code"] == 1011 and closed["reason"] == "no_ack_received"
            # phoenix.js (1.7 too: the code is not 1000) reconnects and rejoins
            await js.set_ack(LOBBY, "auto")
            await js.expect("socket_open")
            second = await js.expect("join_ok", topic=LOBBY)
            assert second["join_ref"] != first["join_ref"]
            fresh = await js.expect("message", topic=LOBBY, event="hydrate")
            assert fresh["join_ref"] == second["join_ref"]
            fresh_id = fresh["payload"]["message_id"]
            assert fresh_id != first_id
            await js.expect("ack_reply", message_id=fresh_id, status="ok")
            assert not js.find("channel_error", from_server=True)  # the close, not phx_error

        [report] = _no_ack_reports(server)
        assert report["event"] == "child_terminated" and report["log_level"] == "error"
        assert report["topic"] == LOBBY
        assert report["message_id"] == first_id
        assert report["join_ref"] == first["join_ref"]
        assert ACK_TIMEOUT * 1000 <= report["waited_ms"] < ACK_TIMEOUT * 1000 + 250
        assert isinstance(report["connection"], int)
        assert report["peer"].startswith("127.0.0.1:")
        assert report["supervisor"] == server.endpoint.connections_name
        assert len(server.crash_reports()) == 1, server.crash_reports()
        [closed_log] = [e for e in server.events("connection_closed") if e["connection"] == report["connection"]]
        assert closed_log["close_code"] == 1011
        server.assert_healthy()


@pytest.mark.parametrize("version", VERSIONS)
async def test_error_channel_policy_sends_phx_error_and_rejoins_on_the_same_socket(version):
    async with serve(ack_timeout=ACK_TIMEOUT, on_no_ack="error_channel") as server:
        async with PhoenixJS.open(server.url, version=version, **FAST) as js:
            await js.connect()
            first = await js.join(LOBBY, ack="none")
            hydrate = await js.expect("message", topic=LOBBY, event="hydrate")
            err = await js.expect("channel_error", from_server=True, timeout=3)
            assert err["payload"] == {"reason": "channel_crash"}
            assert err["wire_join_ref"] == first["join_ref"]

            await js.set_ack(LOBBY, "auto")
            second = await js.expect("join_ok", topic=LOBBY)
            assert second["join_ref"] != first["join_ref"]
            fresh = await js.expect("message", topic=LOBBY, event="hydrate", join_ref=second["join_ref"])
            assert fresh["payload"]["message_id"] != hydrate["payload"]["message_id"]
            await js.expect("ack_reply", message_id=fresh["payload"]["message_id"], status="ok")
            await js.ping()
            assert not js.find("socket_close")
            assert len(js.find("socket_open")) == 1
            assert not js.find("channel_close")  # never phx_close for a crash

        [report] = _no_ack_reports(server)
        assert report["event"] == "channel_crashed" and report["log_level"] == "error"
        assert report["topic"] == LOBBY and report["message_id"] == hydrate["payload"]["message_id"]
        assert report["waited_ms"] >= ACK_TIMEOUT * 1000
        assert isinstance(report["connection"], int) and report["peer"].startswith("127.0.0.1:")
        assert len(server.crash_reports()) == 1, server.crash_reports()
        assert len(server.events("connection_opened")) == 1  # one socket throughout
        await wait_until(lambda: server.connection_count() == 0, what="the client's connection ended")
        server.assert_healthy()


@pytest.mark.parametrize("version", VERSIONS)
async def test_store_changes_reach_every_joined_client_as_acked_pushes(version):
    async with serve(ack_timeout=1.0) as server:
        async with PhoenixJS.open(server.url, version=version, **FAST) as a, PhoenixJS.open(
            server.url, version=version, **FAST
        ) as b:
            for js in (a, b):
                await js.connect()
                await js.join(LOBBY)
                hydrate = await js.expect("message", event="hydrate")
                await js.expect("ack_reply", message_id=hydrate["payload"]["message_id"], status="ok")

            store = server.node.whereis(STORE_NAME)
            hero = await store.call(("add", {"name": "Margaret Hamilton", "power": "apollo"}))
            ids = set()
            for js in (a, b):
                msg = await js.expect("message", topic=LOBBY, event="superhero_added")
                assert msg["payload"]["superhero"] == hero
                assert msg["join_ref"] is not None  # a channel push, not a fastlane broadcast
                ids.add(msg["payload"]["message_id"])
                await js.expect("ack_reply", message_id=msg["payload"]["message_id"], status="ok")
            assert len(ids) == 2

            assert await store.call(("remove", hero["id"])) is True
            for js in (a, b):
                msg = await js.expect("message", topic=LOBBY, event="superhero_removed")
                assert msg["payload"]["id"] == hero["id"]
                await js.expect("ack_reply", message_id=msg["payload"]["message_id"], status="ok")
        assert not server.crash_reports()


async def test_heartbeats_unmatched_topic_unknown_ack_and_leave():
    async with serve(ack_timeout=ACK_TIMEOUT) as server:
        async with PhoenixJS.open(server.url, heartbeat_ms=100, **FAST) as js:
            await js.connect()
            rtt = await js.ping()
            assert 0 <= rtt < 1000
            await js.expect("heartbeat_reply", status="ok", timeout=2)  # the periodic heartbeat

            # unmatched topic: error reply, the socket stays open
            await js.join("nope:1", wait=False)
            err = await js.expect("join_error", topic="nope:1")
            assert err["response"] == {"reason": "unmatched topic"}
            await js.leave("nope:1")  # stop phoenix.js's rejoin trickle
            await js.ping()

            ok = await js.join(LOBBY)
            hydrate = await js.expect("message", event="hydrate")
            await js.expect("ack_reply", message_id=hydrate["payload"]["message_id"], status="ok")
            # an ack for an unknown message_id: error reply, nothing crashes
            await js.ack(LOBBY, "no-such-message")
            bad = await js.expect("ack_reply", message_id="no-such-message")
            assert bad["status"] == "error" and bad["response"] == {"reason": "unknown message_id"}
            # an unknown event gets an error reply
            unknown = await js.push(LOBBY, "frobnicate", {"x": 1})
            assert unknown["status"] == "error" and unknown["response"]["reason"] == "unknown event"
            # still alive: a change is delivered and acked
            await server.node.whereis(STORE_NAME).call(("add", {"name": "Radia Perlman"}))
            msg = await js.expect("message", event="superhero_added", join_ref=ok["join_ref"])
            await js.expect("ack_reply", message_id=msg["payload"]["message_id"], status="ok")

            await js.leave(LOBBY, wait=False)
            closed = await js.expect("channel_close", topic=LOBBY)
            assert closed["payload"] == "leave"
            left = await js.expect("leave_reply", topic=LOBBY)
            assert left["status"] == "ok"
            await js.ping()
            assert not js.find("socket_close")
            assert not js.find("channel_error")
        await wait_until(lambda: server.events("connection_closed"), what="connection closed")
        assert not server.crash_reports(), server.crash_reports()
        assert [e["topic"] for e in server.events("unmatched_topic")][:1] == ["nope:1"]


async def test_ack_after_the_crash_is_harmless():
    """error_channel: the client acks the crashed join's message late, with the old join_ref."""
    async with serve(ack_timeout=ACK_TIMEOUT, on_no_ack="error_channel") as server:
        async with RawClient.open(server.ws_url()) as c:
            join_ref, reply = await c.join(LOBBY)
            assert reply[4]["status"] == "ok"
            hydrate = await c.expect_event(LOBBY, "hydrate")
            err = await c.expect_event(LOBBY, "phx_error")
            assert err[0] == err[1] == join_ref
            late = await c.call(join_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"]})
            assert late[0] is None and late[4] == {"status": "error", "response": {"reason": "unmatched topic"}}
            # rejoin, then the old ack (old join_ref) again: ignored; the new hydrate acked in time
            new_ref, _ = await c.join(LOBBY)
            fresh = await c.expect_event(LOBBY, "hydrate")
            assert fresh[0] == new_ref
            stale_ref = c.next_ref()
            await c.send(join_ref, stale_ref, LOBBY, "message_ack", {"message_id": hydrate[4]["message_id"]})
            ok = await c.call(new_ref, LOBBY, "message_ack", {"message_id": fresh[4]["message_id"]})
            assert ok[4]["status"] == "ok"
            # the stale ack got no reply at all (the ok above was sent after it)
            assert not [f for f in c.received if f[1] == stale_ref]
            # past the ack deadline the rejoined channel is alive
            canary = await past_the_ack_deadline(server)
            assert (await c.call(new_ref, LOBBY, "nothing"))[4]["status"] == "error"  # unknown event
            assert not [f for f in c.received if f[3] == "phx_error" and f[0] == new_ref]
        assert _no_ack_reports(server)[1:] == [canary]
        assert len(_no_ack_reports(server)) == 2


async def test_auth_token_and_params_reach_the_connect_hook():
    seen = []

    def connect(params, info):
        seen.append((params, info))
        if params.get("token") != "good":
            raise ConnectRefused(401, "bad token")
        return {"user_id": 42}

    async with serve(connect=connect, ack_timeout=ACK_TIMEOUT) as server:
        async with PhoenixJS.open(server.url, params={"token": "good"}, auth_token="s3cret?", **FAST) as js:
            await js.connect()
            ok = await js.join("echo:1")
            assert ok["response"] == {"topic": "echo:1", "assigns": {"user_id": 42}}
        params, info = seen[0]
        assert params == {"token": "good", "vsn": "2.0.0"}
        assert info.auth_token == "s3cret?"
        assert info.peer.startswith("127.0.0.1:")
        assert info.uri == "/socket/websocket?token=good&vsn=2.0.0"

        # refused by the hook: the handshake fails with the hook's status, phoenix.js keeps retrying
        async with PhoenixJS.open(server.url, params={"token": "bad"}, **FAST) as js:
            await js.connect(wait=False)
            await js.expect("socket_error")
            await js.expect("socket_error")  # a retry, refused again
            assert not js.find("socket_open")
        assert server.events("handshake_rejected", status=401)
        assert not server.crash_reports()


async def test_auth_token_is_decoded_from_standard_base64_without_padding():
    seen = []
    async with serve(connect=lambda params, info: seen.append(info.auth_token)) as server:
        token = base64.b64encode("tøken/+?".encode()).decode().rstrip("=")
        async with RawClient.open(server.ws_url(), subprotocols=["phoenix", f"base64url.bearer.phx.{token}"]) as c:
            assert c.ws.subprotocol == "phoenix"
            await c.heartbeat()
        assert seen == ["tøken/+?"]


async def test_heartbeat_timeout_closes_a_silent_socket_but_not_a_chatty_one():
    async with serve(heartbeat_timeout=0.3) as server:
        async with PhoenixJS.open(server.url, heartbeat_ms=80, **FAST) as chatty:
            await chatty.connect()
            async with RawClient.open(server.ws_url()) as silent:
                t0 = trio.current_time()
                code = await silent.closed(timeout=3)
                waited = trio.current_time() - t0
            assert code != 1000 and code == 1001
            assert 0.25 <= waited < 1.5
            # the phoenix.js client heartbeats every 80 ms and outlives several timeouts
            while trio.current_time() - t0 < 0.8:
                await chatty.expect("heartbeat_reply", timeout=2)
            assert not chatty.find("socket_close")
        assert server.events("heartbeat_timeout")
        assert not server.crash_reports()
