"""The JavaScript resume helper (``clients/js/reliable.mjs``) with the unmodified phoenix.js
client (1.8 and 1.7, under Node) against ackvisor: auto-ack, ``resume`` on every rejoin after a
no-ack crash (1011) or an abrupt TCP drop, exactly the missed messages once and in order, the
``recovered: false`` snapshot path, and duplicates dropped before the application sees them.

Real sockets and the real clock; every wait is on a driver event or server state.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ackvisor.channels import Socket, pubsub
from ackvisor.channels.history import MemoryHistory, history_of

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.channel_apps import ROUTES, serve, wait_until
    from tests.phoenix_js import VERSIONS, PhoenixJS
    from tests.test_resume import FEED, FeedChannel
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from channel_apps import ROUTES, serve, wait_until  # type: ignore[no-redef]
    from phoenix_js import VERSIONS, PhoenixJS  # type: ignore[no-redef]
    from test_resume import FEED, FeedChannel  # type: ignore[no-redef]

TOPIC = "feed:js"
EVENTS = ("tick", "snapshot")


class DupFeed(FeedChannel):
    """Like FeedChannel, but a recovered join is followed by two stale copies (the resume offset
    and the one before it), as a buggy or racing server might send: the helper must drop them."""

    async def join(self, topic: str, params: dict[str, Any], socket: Socket) -> Any:
        result = await super().join(topic, params, socket)
        if socket.recovered:
            self.send(self.ref, ("stale", params["resume"]))
        return result

    async def handle_info(self, message: Any, socket: Socket) -> Any:
        if isinstance(message, tuple) and message[0] == "stale":
            resume = message[1]
            for offset in (resume["offset"], resume["offset"] - 1):
                await self.push("tick", {"offset": offset, "epoch": resume["epoch"], "stale": True}, ack=True)
        else:
            await super().handle_info(message, socket)


JS_ROUTES = {**ROUTES, "feed:*": FeedChannel, "dup:*": DupFeed}


def publish(server: Any, n: int) -> None:
    for _ in range(n):
        pubsub.publish(server.node, FEED, "tick", {"n": 1})


def all_acked(server: Any) -> bool:
    """No channel on the feed awaits an ack (the client's acks reached the server)."""
    return all(not ref._cell.actor.tracker.awaiting for ref in pubsub.subscribers(server.node, FEED))


def delivered(js: PhoenixJS, event: str = "tick", topic: str = TOPIC) -> list[Any]:
    return [e["payload"] for e in js.find("reliable_message", topic=topic, event=event)]


async def wait_ticks(js: PhoenixJS, n: int, topic: str = TOPIC, timeout: float = 10) -> list[int]:
    with trio.fail_after(timeout):
        while len(delivered(js, topic=topic)) < n:
            await js.expect("reliable_message", topic=topic, timeout=timeout)
    return [p["offset"] for p in delivered(js, topic=topic)]


@pytest.mark.parametrize("ack", ["each", "cumulative"])
@pytest.mark.parametrize("version", VERSIONS)
async def test_helper_resumes_after_a_no_ack_crash_and_a_tcp_drop_with_exactly_the_missed_messages(version, ack):
    async with serve(JS_ROUTES, ack_timeout=0.3) as server:
        async with PhoenixJS.open(server.url, version=version, reconnect_ms=150, rejoin_ms=50,
                                  timeout_ms=3000, ack_filter=True) as js:
            await js.connect()
            ok = await js.reliable_join(TOPIC, {"client": "js"}, ack=ack, events=EVENTS, quiet=True)
            position = history_of(server.node).position(FEED)
            assert ok["response"] == {"feed": True, "recovered": False, "epoch": position.epoch, "offset": 0}
            snap = await js.expect("reliable_message", topic=TOPIC, event="snapshot")
            assert snap["payload"]["snapshot"] == {"epoch": position.epoch, "offset": 0}
            publish(server, 20)
            assert await wait_ticks(js, 20) == list(range(1, 21))

            # 1. the acks get lost on the wire: no_ack_received, socket closed 1011
            await wait_until(lambda: all_acked(server), what="acks for 1..20")
            await js.drop_acks(True)
            publish(server, 5)  # 21..25: delivered to the app, never acked
            close = await js.expect("socket_close", timeout=5)
            assert close["code"] == 1011
            await js.drop_acks(False)
            publish(server, 10)  # 26..35: published while the client is away
            attempt = await js.expect("join_attempt", topic=TOPIC)
            assert attempt["params"] == {"client": "js", "resume": {"epoch": position.epoch, "offset": 25}}
            ok = await js.expect("join_ok", topic=TOPIC)
            assert ok["response"]["recovered"] is True
            assert await wait_ticks(js, 35) == list(range(1, 36))

            # 2. an abrupt TCP drop (no close frame)
            await js.terminate()
            await js.expect("socket_close", timeout=5)
            publish(server, 7)  # 36..42 while away
            attempt = await js.expect("join_attempt", topic=TOPIC)
            assert attempt["params"]["resume"] == {"epoch": position.epoch, "offset": 35}
            assert (await js.expect("join_ok", topic=TOPIC))["response"]["recovered"] is True
            publish(server, 3)  # 43..45 live
            assert await wait_ticks(js, 45) == list(range(1, 46))

            stats = await js.reliable_stats(TOPIC)
            assert stats["position"] == {"epoch": position.epoch, "offset": 45}
            assert stats["stats"]["duplicates"] == 0 and stats["stats"]["gaps"] == 0
            assert stats["stats"]["joins"] == 3 and stats["stats"]["recovered"] == 2
            assert stats["stats"]["snapshots"] == 1  # only the first join's
            if ack == "cumulative":
                assert stats["stats"]["acks"] < 45  # coalesced
            # everything was acked: the channel outlives its ack deadline
            await trio.sleep(0.5)
            assert await js.ping() >= 0
            assert len(js.find("socket_close")) == 2
        no_acks = [e for e in server.crash_reports() if e.get("reason") == "no_ack_received"]
        assert len(no_acks) == 1 and no_acks[0]["offset"] == 21


@pytest.mark.parametrize("version", VERSIONS)
async def test_helper_gets_a_fresh_snapshot_when_the_history_was_lost(version):
    async with serve(JS_ROUTES, ack_timeout=0.3) as server:
        server.node.history = MemoryHistory(size=5)
        async with PhoenixJS.open(server.url, version=version, reconnect_ms=100, rejoin_ms=50, timeout_ms=3000) as js:
            await js.connect()
            await js.reliable_join(TOPIC, ack="each", events=EVENTS, quiet=True)
            await js.expect("reliable_message", topic=TOPIC, event="snapshot")
            publish(server, 3)
            assert await wait_ticks(js, 3) == [1, 2, 3]
            old = history_of(server.node).position(FEED)

            # trimmed: 20 messages while away, only the last 5 kept
            await js.terminate()
            await js.expect("socket_close", timeout=5)
            publish(server, 20)
            attempt = await js.expect("join_attempt", topic=TOPIC)
            assert attempt["params"]["resume"] == {"epoch": old.epoch, "offset": 3}
            ok = await js.expect("join_ok", topic=TOPIC)
            assert ok["response"]["recovered"] is False and ok["response"]["offset"] == 23
            snap = await js.expect("reliable_message", topic=TOPIC, event="snapshot")
            assert snap["payload"]["snapshot"] == {"epoch": old.epoch, "offset": 23} and snap["payload"]["upto"] == 23
            publish(server, 1)
            assert (await wait_ticks(js, 4))[-1] == 24  # the stream restarts after the snapshot

            # a new epoch (history reset, e.g. a node restart)
            await js.terminate()
            await js.expect("socket_close", timeout=5)
            new = history_of(server.node).reset(FEED)
            publish(server, 2)
            attempt = await js.expect("join_attempt", topic=TOPIC)
            assert attempt["params"]["resume"] == {"epoch": old.epoch, "offset": 24}
            ok = await js.expect("join_ok", topic=TOPIC)
            assert ok["response"]["recovered"] is False and ok["response"]["epoch"] == new.epoch
            snap = await js.expect("reliable_message", topic=TOPIC, event="snapshot")
            assert snap["payload"]["snapshot"] == {"epoch": new.epoch, "offset": 2}
            publish(server, 1)
            ticks = await wait_ticks(js, 5)
            assert ticks == [1, 2, 3, 24, 3]  # offset 3 of the new epoch
            stats = await js.reliable_stats(TOPIC)
            assert stats["position"] == {"epoch": new.epoch, "offset": 3}
            assert stats["stats"]["snapshots"] == 3 and stats["stats"]["not_recovered"] == 3


@pytest.mark.parametrize("version", VERSIONS)
async def test_helper_drops_duplicates_but_still_acks_them(version):
    async with serve(JS_ROUTES, ack_timeout=0.3) as server:
        async with PhoenixJS.open(server.url, version=version, reconnect_ms=50, rejoin_ms=50, timeout_ms=3000) as js:
            await js.connect()
            await js.reliable_join("dup:1", ack="each", events=EVENTS)
            await js.expect("reliable_message", topic="dup:1", event="snapshot")
            publish(server, 4)
            assert await wait_ticks(js, 4, topic="dup:1") == [1, 2, 3, 4]
            await js.terminate()
            await js.expect("socket_close", timeout=5)
            publish(server, 2)
            ok = await js.expect("join_ok", topic="dup:1")
            assert ok["response"]["recovered"] is True
            publish(server, 1)
            assert await wait_ticks(js, 7, topic="dup:1") == [1, 2, 3, 4, 5, 6, 7]
            # the two stale copies reached phoenix.js (after the replay: 7 may be part of it) ...
            await wait_until(lambda: js.find("message", topic="dup:1", payload=lambda p: p.get("stale") and p["offset"] == 3),
                             what="the second stale copy")
            stale = [e for e in js.find("message", topic="dup:1", event="tick") if e["payload"].get("stale")]
            assert sorted(p["payload"]["offset"] for p in stale) == [3, 4]
            # ... but not the application, and they were acked (no crash past the deadline)
            assert not [p for p in delivered(js, topic="dup:1") if p.get("stale")]
            stats = await js.reliable_stats("dup:1")
            assert stats["stats"]["duplicates"] == 2
            await trio.sleep(0.5)
            assert await js.ping() >= 0
            assert len(js.find("socket_close")) == 1
        assert not server.crash_reports(), server.crash_reports()


async def test_helper_with_a_thousand_missed_messages_and_a_small_unacked_cap():
    """A big replay through phoenix.js: paced by acks (max_unacked 50), nothing lost."""
    async with serve(JS_ROUTES, ack_timeout=2.0, max_unacked=50) as server:
        server.node.history = MemoryHistory(size=5000)
        async with PhoenixJS.open(server.url, version="1.8", reconnect_ms=100, rejoin_ms=50, timeout_ms=3000) as js:
            await js.connect()
            await js.reliable_join(TOPIC, ack="cumulative", events=("tick",), quiet=True)
            await js.terminate()
            await js.expect("socket_close", timeout=5)
            publish(server, 1000)
            assert (await js.expect("join_ok", topic=TOPIC))["response"]["recovered"] is True
            assert await wait_ticks(js, 1000, timeout=20) == list(range(1, 1001))
        assert not server.crash_reports(), server.crash_reports()
