"""Nothing lost: offsets, history and resume across let-it-crash reconnects (issue 5).

Real sockets and the real clock (except the MemoryHistory units, which use the
autojump clock).  The big tests publish 10,000 messages on one topic while the
Python client (``ackvisor.client``, ``resume=True``) is forced through no-ack
crashes (1011) or abrupt TCP drops, and assert the full offset sequence.
"""

from __future__ import annotations

import socket as stdsocket
import struct
from typing import Any

import pytest
import trio

from ackvisor.channels import Channel, Socket
from ackvisor.channels import pubsub
from ackvisor.channels.acks import AckTracker
from ackvisor.channels.history import MemoryHistory, history_of
from ackvisor.client import PhoenixClient
from ackvisor.examples.superheroes import STORE_NAME, TOPIC as HEROES

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.channel_apps import ROUTES, RawClient, serve, wait_until
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from channel_apps import ROUTES, RawClient, serve, wait_until  # type: ignore[no-redef]

FEED = "feed"
FAST = {"reconnect_after": lambda tries: 0.01, "rejoin_after": lambda tries: 0.02}


class FeedChannel(Channel):
    """``feed:*``: every message published on ``"feed"`` is pushed with an ack; a join that is not
    recovered gets a ``snapshot`` push (``{"upto": offset}``) at the topic's position."""

    history_topic = FEED

    async def join(self, topic: str, params: dict[str, Any], socket: Socket) -> Any:
        if not socket.recovered:
            self.send(self.ref, "snapshot")
        return {"feed": True}

    async def handle_info(self, message: Any, socket: Socket) -> Any:
        if message == "snapshot":
            position = history_of(self.node).position(FEED)
            await self.push_snapshot("snapshot", {"upto": position.offset}, position)
        else:
            await super().handle_info(message, socket)

    async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
        await self.push(event, payload, ack=True)


class SmallBatchFeed(FeedChannel):
    """The same with tiny replay batches, so a replay spans many actor turns."""

    replay_batch = 7


FEED_ROUTES = {**ROUTES, "feed:*": FeedChannel, "small:*": SmallBatchFeed}


def publish(server: Any, n: int) -> None:
    for _ in range(n):
        pubsub.publish(server.node, FEED, "tick", {"n": 1})


async def drop_tcp(client: PhoenixClient) -> bool:
    """Close the client's TCP stream abruptly (RST, no close frame); False if not connected."""
    ws = client._ws
    stream = getattr(ws, "_stream", None) if ws is not None else None
    if stream is None:
        return False
    try:
        stream.socket.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    await trio.aclose_forcefully(stream)
    return True


async def collect_offsets(channel: Any, total: int, offsets: list[int], events: list[str]) -> None:
    while len(offsets) < total:
        msg = await channel.receive()
        events.append(msg.event)
        if msg.event == "tick":
            offsets.append(msg.payload["offset"])


# ------------------------------------------------------------------ 10,000 messages, crashes

TOTAL = 10_000


async def _publisher(server: Any, done: trio.Event, *, batch: int = 50, pause: float = 0.015) -> None:
    sent = 0
    while sent < TOTAL:
        n = min(batch, TOTAL - sent)
        publish(server, n)
        sent += n
        await trio.sleep(pause)
    done.set()


async def test_ten_thousand_publishes_through_repeated_no_ack_crashes():
    with trio.fail_after(30):
        async with serve(FEED_ROUTES, ack_timeout=0.2, max_unacked=1_000_000, max_unacked_bytes=1 << 30) as server:
            server.node.history = MemoryHistory(size=2 * TOTAL)
            async with PhoenixClient.open(server.url, **FAST) as client:
                channel = await client.join("feed:all")
                first = await channel.receive()
                assert first.event == "snapshot" and first.payload["snapshot"]["offset"] == 0
                offsets: list[int] = []
                events: list[str] = []
                done = trio.Event()
                crashes = 0

                async def chaos() -> None:
                    nonlocal crashes
                    while not done.is_set():
                        await trio.sleep(0.12)
                        if done.is_set():
                            break
                        closes = len(client.closes)
                        channel.auto_ack = False  # withhold acks: the deadline (0.2 s) passes
                        with trio.move_on_after(2):
                            await client.wait_closed(close_count=closes + 1)
                            crashes += 1
                        channel.auto_ack = True
                        await channel.wait_joined()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_publisher, server, done)
                    nursery.start_soon(chaos)
                    await collect_offsets(channel, TOTAL, offsets, events)
                    nursery.cancel_scope.cancel()
                assert offsets == list(range(1, TOTAL + 1))
                assert crashes >= 3, crashes
                assert all(c.code == 1011 for c in client.closes), client.closes
                assert channel.events.recovered >= crashes
                assert channel.events.not_recovered == 1  # the first join only
                assert "snapshot" not in events  # every rejoin was recovered: no second snapshot
        reports = [e for e in server.crash_reports() if e.get("reason") == "no_ack_received"]
        assert len(reports) >= crashes
        assert all(e.get("offset") is not None for e in reports)  # the report names the offset


async def test_ten_thousand_publishes_through_abrupt_tcp_drops():
    with trio.fail_after(30):
        async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
            server.node.history = MemoryHistory(size=2 * TOTAL)
            async with PhoenixClient.open(server.url, **FAST) as client:
                channel = await client.join("feed:all")
                assert (await channel.receive()).event == "snapshot"
                offsets: list[int] = []
                events: list[str] = []
                done = trio.Event()
                drops = 0

                async def chaos() -> None:
                    nonlocal drops
                    while not done.is_set():
                        await trio.sleep(0.1)
                        if done.is_set():
                            break
                        connects = client.statistics().connects
                        if await drop_tcp(client):
                            drops += 1
                            await client.wait_connected(connect_count=connects + 1)
                            await channel.wait_joined()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_publisher, server, done)
                    nursery.start_soon(chaos)
                    await collect_offsets(channel, TOTAL, offsets, events)
                    nursery.cancel_scope.cancel()
                assert offsets == list(range(1, TOTAL + 1))
                assert drops >= 3, drops
                assert any(c.code == 1006 for c in client.closes), client.closes
                assert channel.events.recovered >= drops
                assert "snapshot" not in events
        assert not [e for e in server.crash_reports() if e.get("reason") == "no_ack_received"]


async def test_two_thousand_publishes_through_no_ack_crashes_with_the_error_channel_policy():
    # phx_error instead of closing the socket: the client rejoins on the same socket, resuming
    with trio.fail_after(20):
        async with serve(FEED_ROUTES, ack_timeout=0.2, on_no_ack="error_channel", max_unacked=100_000) as server:
            async with PhoenixClient.open(server.url, **FAST) as client:
                channel = await client.join("feed:all")
                assert (await channel.receive()).event == "snapshot"
                offsets: list[int] = []
                events: list[str] = []
                total = 2000

                async def publisher() -> None:
                    for _ in range(total // 10):
                        publish(server, 10)
                        await trio.sleep(0.01)

                async def chaos() -> None:
                    for _ in range(3):
                        await trio.sleep(0.15)
                        errors = channel.events.errors
                        channel.auto_ack = False
                        await channel.wait_state(lambda c: c.events.errors > errors)
                        channel.auto_ack = True
                        await channel.wait_joined()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publisher)
                    nursery.start_soon(chaos)
                    while len(offsets) < total:
                        msg = await channel.receive()
                        events.append(msg.event)
                        if msg.event == "tick":
                            offsets.append(msg.payload["offset"])
                    nursery.cancel_scope.cancel()
                assert offsets == list(range(1, total + 1))
                assert channel.events.errors >= 3 and channel.events.recovered >= 3
                assert not client.closes  # one socket throughout
                assert "snapshot" not in events


# ------------------------------------------------------------------ recovered: false

async def _raw_join(client: RawClient, topic: str, resume: dict | None) -> tuple[str, dict]:
    join_ref, reply = await client.join(topic, {"resume": resume} if resume is not None else {})
    assert reply[4]["status"] == "ok", reply
    return join_ref, reply[4]["response"]


async def test_first_join_is_not_recovered_and_gets_a_snapshot_at_the_join_position():
    async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
        publish(server, 5)
        async with RawClient.open(server.ws_url()) as client:
            join_ref, response = await _raw_join(client, "feed:1", None)
            position = history_of(server.node).position(FEED)
            assert response == {"feed": True, "recovered": False, "epoch": position.epoch, "offset": 5}
            snap = await client.expect_event("feed:1", "snapshot")
            assert snap[4]["snapshot"] == {"epoch": position.epoch, "offset": 5} and snap[4]["upto"] == 5
            publish(server, 1)
            tick = await client.expect_event("feed:1", "tick")
            assert (tick[4]["offset"], tick[4]["epoch"]) == (6, position.epoch)
            assert isinstance(tick[4]["message_id"], str)


async def test_trimmed_history_is_not_recovered_and_gets_a_fresh_snapshot():
    async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
        server.node.history = MemoryHistory(size=10)
        publish(server, 30)  # offsets 1..30, only 21..30 kept
        epoch = history_of(server.node).position(FEED).epoch
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "feed:1", {"epoch": epoch, "offset": 12})
            assert response["recovered"] is False and response["offset"] == 30 and response["epoch"] == epoch
            snap = await client.expect_event("feed:1", "snapshot")
            assert snap[4]["snapshot"] == {"epoch": epoch, "offset": 30}
        async with RawClient.open(server.ws_url()) as client:
            # the oldest kept offset is 21: resuming from 20 still works
            _, response = await _raw_join(client, "feed:1", {"epoch": epoch, "offset": 20})
            assert response["recovered"] is True
            got = [(await client.expect_event("feed:1", "tick"))[4]["offset"] for _ in range(10)]
            assert got == list(range(21, 31))
            assert not [f for f in client.unclaimed if f[3] == "snapshot"]


async def test_changed_epoch_is_not_recovered_and_gets_a_fresh_snapshot():
    async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
        history = history_of(server.node)
        publish(server, 3)
        old = history.position(FEED)
        new = history.reset(FEED)  # e.g. the node restarted: history gone, new epoch
        assert new.epoch != old.epoch and new.offset == 0
        publish(server, 2)
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "feed:1", {"epoch": old.epoch, "offset": 3})
            assert response["recovered"] is False and response["epoch"] == new.epoch and response["offset"] == 2
            snap = await client.expect_event("feed:1", "snapshot")
            assert snap[4]["snapshot"] == {"epoch": new.epoch, "offset": 2}


@pytest.mark.parametrize("resume", [
    pytest.param({"epoch": "nope", "offset": 1}, id="unknown-epoch"),
    pytest.param("garbage", id="not-a-dict"),
    pytest.param({"epoch": 7, "offset": "x"}, id="wrong-types"),
    pytest.param({"offset": True, "epoch": "e"}, id="bool-offset"),
])
async def test_bad_resume_params_are_not_recovered_and_never_crash(resume):
    async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
        publish(server, 2)
        async with RawClient.open(server.ws_url()) as client:
            _, reply = await client.join("feed:1", {"resume": resume})
            assert reply[4]["status"] == "ok" and reply[4]["response"]["recovered"] is False
            await client.expect_event("feed:1", "snapshot")
        assert not server.crash_reports()


async def test_resume_beyond_the_head_is_not_recovered():
    async with serve(FEED_ROUTES, ack_timeout=1.0) as server:
        publish(server, 2)
        epoch = history_of(server.node).position(FEED).epoch
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "feed:1", {"epoch": epoch, "offset": 99})
            assert response["recovered"] is False


async def test_superheroes_resume_replays_missed_changes_and_hydrates_only_when_not_recovered():
    async with serve(ack_timeout=1.0) as server:
        store = server.node.whereis(STORE_NAME)
        async with RawClient.open(server.ws_url()) as client:
            join_ref, response = await _raw_join(client, "superheroes:lobby", None)
            assert response["recovered"] is False
            hydrate = await client.expect_event("superheroes:lobby", "hydrate")
            await client.send(join_ref, client.next_ref(), "superheroes:lobby", "message_ack",
                              {"message_id": hydrate[4]["message_id"]})
            position = hydrate[4]["snapshot"]
        for name in ("Barbara Liskov", "Edsger Dijkstra"):
            await store.call(("add", {"name": name}))  # published while the client is away
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "superheroes:lobby", position)
            assert response["recovered"] is True
            added = [await client.expect_event("superheroes:lobby", "superhero_added") for _ in range(2)]
            assert [a[4]["superhero"]["name"] for a in added] == ["Barbara Liskov", "Edsger Dijkstra"]
            assert [a[4]["offset"] for a in added] == [position["offset"] + 1, position["offset"] + 2]
            with trio.move_on_after(0.2):
                await client.expect_event("superheroes:lobby", "hydrate")
                raise AssertionError("a recovered join must not hydrate")
        # a lost epoch: hydrate again
        history_of(server.node).reset(HEROES)
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "superheroes:lobby", position)
            assert response["recovered"] is False
            hydrate = await client.expect_event("superheroes:lobby", "hydrate")
            assert [h["name"] for h in hydrate[4]["superheroes"]][-2:] == ["Barbara Liskov", "Edsger Dijkstra"]


# ------------------------------------------------------------------ big replays, history lost

async def _read_ticks(client: RawClient, topic: str, join_ref: str, n: int, *, ack: str = "each") -> list[int]:
    """Read ``n`` tick offsets, acking each (or cumulatively every 10th and at the end)."""
    offsets: list[int] = []
    while len(offsets) < n:
        frame = await client.expect_event(topic, "tick", timeout=10)
        payload = frame[4]
        offsets.append(payload["offset"])
        if ack == "each":
            await client.send(join_ref, None, topic, "message_ack", {"message_id": payload["message_id"]})
        elif ack == "cumulative" and (len(offsets) % 10 == 0 or len(offsets) == n):
            await client.send(join_ref, None, topic, "message_ack", {"offset": payload["offset"]})
    return offsets


@pytest.mark.parametrize("ack", ["each", "cumulative"])
async def test_a_replay_larger_than_max_unacked_is_paced_by_acks_not_crashed(ack):
    # 3,000 missed messages, at most 100 unacked: the replay waits for acks instead of
    # tripping too_many_unacked; live messages published during the replay come after it.
    async with serve(FEED_ROUTES, ack_timeout=2.0, max_unacked=100) as server:
        publish(server, 3000)
        epoch = history_of(server.node).position(FEED).epoch
        async with RawClient.open(server.ws_url()) as client:
            join_ref, response = await _raw_join(client, "small:1", {"epoch": epoch, "offset": 0})
            assert response["recovered"] is True

            async def live() -> None:
                for _ in range(10):
                    publish(server, 20)
                    await trio.sleep(0.005)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(live)
                offsets = await _read_ticks(client, "small:1", join_ref, 3200, ack=ack)
        assert offsets == list(range(1, 3201))
        assert not server.crash_reports(), server.crash_reports()


async def test_history_trimmed_during_the_catch_up_ends_the_channel_with_history_lost():
    async with serve(FEED_ROUTES, ack_timeout=5.0, max_unacked=20) as server:
        server.node.history = MemoryHistory(size=100)
        publish(server, 100)
        epoch = history_of(server.node).position(FEED).epoch
        async with RawClient.open(server.ws_url()) as client:
            join_ref, response = await _raw_join(client, "small:1", {"epoch": epoch, "offset": 0})
            assert response["recovered"] is True
            # the window (10) fills; while we do not ack, 200 more messages trim our gap away
            first = [await client.expect_event("small:1", "tick") for _ in range(10)]
            publish(server, 200)
            for frame in first:
                await client.send(join_ref, None, "small:1", "message_ack", {"message_id": frame[4]["message_id"]})
            err = await client.expect_event("small:1", "phx_error")
            assert err[0] == join_ref
            # what was already read from the history still came, in order; then the gap
            ticks = [f[4]["offset"] for f in client.unclaimed if f[3] == "tick"]
            last = ticks[-1] if ticks else 10
            assert ticks == list(range(11, last + 1))
            # the rejoin with our position is not recovered: a fresh snapshot
            _, response = await _raw_join(client, "small:1", {"epoch": epoch, "offset": last})
            assert response["recovered"] is False
            snap = await client.expect_event("small:1", "snapshot")
            assert snap[4]["snapshot"]["offset"] == 300
        [report] = [e for e in server.crash_reports() if e.get("reason") == "history_lost"]
        assert report["offset"] == last and report["history_topic"] == FEED


# ------------------------------------------------------------------ acks

async def test_cumulative_ack_acks_everything_up_to_the_offset_and_per_id_acks_still_work():
    async with serve(FEED_ROUTES, ack_timeout=0.5) as server:
        async with RawClient.open(server.ws_url()) as client:
            join_ref, _ = await _raw_join(client, "feed:1", None)
            snap = await client.expect_event("feed:1", "snapshot")
            # the snapshot has no offset of its own: it needs its per-id ack
            reply = await client.call(join_ref, "feed:1", "message_ack", {"message_id": snap[4]["message_id"]})
            assert reply[4] == {"status": "ok", "response": {}}
            publish(server, 10)
            ticks = [await client.expect_event("feed:1", "tick") for _ in range(10)]
            assert [t[4]["offset"] for t in ticks] == list(range(1, 11))
            reply = await client.call(join_ref, "feed:1", "message_ack", {"offset": 7, "status": "Received"})
            assert reply[4] == {"status": "ok", "response": {"acked": 7}}
            # per-id acks for the rest; an already cumulatively acked id is unknown now
            reply = await client.call(join_ref, "feed:1", "message_ack", {"message_id": ticks[2][4]["message_id"]})
            assert reply[4]["status"] == "error"
            for t in ticks[7:]:
                reply = await client.call(join_ref, "feed:1", "message_ack", {"message_id": t[4]["message_id"]})
                assert reply[4] == {"status": "ok", "response": {}}
            reply = await client.call(join_ref, "feed:1", "message_ack", {"offset": 10, "epoch": ticks[0][4]["epoch"]})
            assert reply[4]["response"] == {"acked": 0}
            # well past the ack timeout, the channel is alive: everything was acked
            await trio.sleep(0.7)
            assert (await client.heartbeat())[4]["status"] == "ok"
            publish(server, 1)
            assert (await client.expect_event("feed:1", "tick"))[4]["offset"] == 11
        assert not server.crash_reports(), server.crash_reports()


async def test_cumulative_ack_in_another_epoch_acks_nothing():
    async with serve(FEED_ROUTES, ack_timeout=0.3) as server:
        async with RawClient.open(server.ws_url()) as client:
            join_ref, _ = await _raw_join(client, "feed:1", None)
            await client.expect_event("feed:1", "snapshot")
            publish(server, 3)
            for _ in range(3):
                await client.expect_event("feed:1", "tick")
            reply = await client.call(join_ref, "feed:1", "message_ack", {"offset": 3, "epoch": "other"})
            assert reply[4]["response"] == {"acked": 0}
            assert await client.closed() == 1011  # nothing was acked: no_ack_received


async def test_ack_upto_stops_at_the_first_newer_offset_and_skips_non_offset_messages(autojump_clock):
    class Owner:
        def _send_after(self, message: Any, seconds: float) -> Any:
            class T:
                def cancel(self) -> None:
                    pass
            return T()

    tracker = AckTracker(Owner(), 1.0)  # type: ignore[arg-type]
    snap = tracker.track("snapshot")
    tracked = [tracker.track("tick", offset=n, epoch="e") for n in range(1, 6)]
    other = tracker.track("plain")
    for p in (snap, *tracked, other):
        tracker.sized(p, 10)
    assert tracker.ack_upto(3, "e") == 3
    assert list(tracker.awaiting) == [snap.message_id, tracked[3].message_id, tracked[4].message_id, other.message_id]
    assert tracker.awaiting_bytes == 40
    assert tracker.ack_upto(9, "x") == 0
    assert tracker.ack_upto(9, None) == 2
    assert list(tracker.awaiting) == [snap.message_id, other.message_id]


@pytest.mark.parametrize("cap", [
    pytest.param({"max_unacked": 5}, id="count"),
    pytest.param({"max_unacked_bytes": 2_000}, id="bytes"),
])
async def test_too_many_unacked_ends_the_channel_with_that_reason_before_memory_grows(cap):
    async with serve(FEED_ROUTES, ack_timeout=30.0, **cap) as server:
        async with RawClient.open(server.ws_url()) as client:
            join_ref, _ = await _raw_join(client, "feed:1", None)
            await client.expect_event("feed:1", "snapshot")  # not acked either
            for _ in range(40):
                pubsub.publish(server.node, FEED, "tick", {"pad": "x" * 100})
            err = await client.expect_event("feed:1", "phx_error")
            assert err[0] == join_ref
            pushed = [f for f in client.unclaimed if f[3] == "tick"]
            assert len(pushed) < 20  # it stopped long before the 40th
        report = await wait_until(lambda: next((e for e in server.crash_reports() if e.get("reason") == "too_many_unacked"), None))
        assert report["event"] == "channel_crashed" and report["topic"] == "feed:1"
        if "max_unacked" in cap:
            assert report["awaiting"] == 6 and report["max_unacked"] == 5
        else:
            assert report["awaiting_bytes"] > 2_000


# ------------------------------------------------------------------ python client de-dup

async def test_python_client_drops_duplicates_and_keeps_several_pushes_for_one_offset():
    class Twice(FeedChannel):
        async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
            await self.push(event, payload, ack=True)
            await self.push("echo_" + event, payload, ack=False)

    async with serve({"twice:*": Twice}, ack_timeout=1.0) as server:
        async with PhoenixClient.open(server.url, **FAST) as client:
            channel = await client.join("twice:1")
            assert (await channel.receive()).event == "snapshot"
            publish(server, 2)
            got = [await channel.receive() for _ in range(4)]
            assert [(m.event, m.payload["offset"]) for m in got] == [
                ("tick", 1), ("echo_tick", 1), ("tick", 2), ("echo_tick", 2)]
            assert "message_id" not in got[1].payload
            # a duplicate (same offset, later join) is dropped; an older offset too
            position = channel.position
            await drop_tcp(client)
            await channel.wait_joined(join_count=2)
            assert channel.join_response["recovered"] is True
            publish(server, 1)
            got = [await channel.receive() for _ in range(2)]
            assert [(m.event, m.payload["offset"]) for m in got] == [("tick", 3), ("echo_tick", 3)]
            assert position == (position[0], 2)
            assert channel.events.duplicates == 0


# ------------------------------------------------------------------ MemoryHistory units

async def test_memory_history_offsets_limits_and_size_trimming(autojump_clock):
    h = MemoryHistory(size=100, max_age=60)
    assert h.position("t").offset == 0
    entries = [h.append("t", "e", {"i": i}) for i in range(1, 251)]
    assert [e.offset for e in entries] == list(range(1, 251))
    assert len({e.epoch for e in entries}) == 1
    assert h.position("t").offset == 250
    epoch = entries[0].epoch
    assert h.read_from("t", epoch, 149) is None  # 150 was trimmed (151..250 kept)
    got = h.read_from("t", epoch, 150)
    assert got is not None and [e.offset for e in got] == list(range(151, 251))
    got = h.read_from("t", epoch, 160, limit=5)
    assert got is not None and [e.offset for e in got] == [161, 162, 163, 164, 165]
    assert h.read_from("t", epoch, 250) == [] and h.read_from("t", epoch, 250, limit=3) == []
    assert h.read_from("t", epoch, 251) is None  # beyond the head
    assert h.read_from("t", "other", 200) is None
    assert h.read_from("nope", epoch, 0) is None
    assert h.read_from("t", epoch, -1) is None
    stats = h.statistics()
    assert (stats.topics, stats.messages, stats.appended, stats.trimmed) == (1, 100, 250, 150)
    # the payload of a trimmed message is no longer referenced by the history
    assert all(e.payload["i"] > 150 for e in h._topics["t"].items[h._topics["t"].head:])


async def test_memory_history_trims_by_age_and_reset_starts_a_new_epoch(autojump_clock):
    h = MemoryHistory(size=1000, max_age=10)
    first = h.append("t", "e", {})
    await trio.sleep(6)
    h.append("t", "e", {})
    await trio.sleep(6)  # the first is now 12 s old
    assert h.read_from("t", first.epoch, 0) is None
    assert [e.offset for e in h.read_from("t", first.epoch, 1) or []] == [2]
    await trio.sleep(11)
    assert h.read_from("t", first.epoch, 1) is None
    assert h.read_from("t", first.epoch, 2) == []  # nothing missed: still recoverable
    new = h.reset("t")
    assert new.epoch != first.epoch and new.offset == 0
    assert h.read_from("t", first.epoch, 2) is None
    assert h.append("t", "e", {}).offset == 1


async def test_memory_history_size_zero_keeps_offsets_but_no_messages(autojump_clock):
    h = MemoryHistory(size=0)
    e = h.append("t", "e", {})
    assert h.position("t").offset == 1 and h.statistics().messages == 0
    assert h.read_from("t", e.epoch, 1) == []
    assert h.read_from("t", e.epoch, 0) is None


async def test_memory_history_log_compacts(autojump_clock):
    h = MemoryHistory(size=10)
    for _ in range(10_000):
        h.append("t", "e", None)
    log = h._topics["t"]
    assert len(log) == 10 and len(log.items) < 200
    epoch = log.epoch
    assert [e.offset for e in h.read_from("t", epoch, 9990) or []] == list(range(9991, 10_001))


# ------------------------------------------------------------------ crashes during the first replay batch

async def test_a_crash_while_replaying_the_first_batch_is_a_channel_crash_after_an_ok_join():
    class Fragile(FeedChannel):
        async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
            if payload.get("poison"):
                raise RuntimeError("cannot render this one")
            await super().handle_out(event, payload, socket)

    async with serve({"fragile:*": Fragile}, ack_timeout=1.0) as server:
        pubsub.publish(server.node, FEED, "tick", {})
        pubsub.publish(server.node, FEED, "tick", {"poison": True})
        epoch = history_of(server.node).position(FEED).epoch
        async with RawClient.open(server.ws_url()) as client:
            join_ref, response = await _raw_join(client, "fragile:1", {"epoch": epoch, "offset": 0})
            assert response["recovered"] is True
            assert (await client.expect_event("fragile:1", "tick"))[4]["offset"] == 1
            err = await client.expect_event("fragile:1", "phx_error")
            assert err[0] == join_ref
        report = await wait_until(lambda: next((e for e in server.crash_reports() if e.get("event") == "channel_crashed"), None))
        assert "cannot render this one" in report["error"]
        assert not server.events("channel_start_failed")


async def test_history_topic_can_be_the_joined_topic():
    class Room(Channel):
        history_topic = "{topic}"

        async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
            await self.push(event, payload, ack=True)

    async with serve({"room:*": Room}, ack_timeout=1.0) as server:
        for room, n in (("room:a", 3), ("room:b", 5)):
            for _ in range(n):
                pubsub.publish(server.node, room, "said", {"room": room})
        history = history_of(server.node)
        async with RawClient.open(server.ws_url()) as client:
            _, response = await _raw_join(client, "room:b", {"epoch": history.position("room:b").epoch, "offset": 2})
            assert response["recovered"] is True and response["offset"] == 5
            got = [await client.expect_event("room:b", "said") for _ in range(3)]
            assert [(f[4]["room"], f[4]["offset"]) for f in got] == [("room:b", 3), ("room:b", 4), ("room:b", 5)]
            pubsub.publish(server.node, "room:a", "said", {"room": "room:a"})  # another room: not ours
            pubsub.publish(server.node, "room:b", "said", {"room": "room:b"})
            assert (await client.expect_event("room:b", "said"))[4]["offset"] == 6
