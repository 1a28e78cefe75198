"""The Redis broker against real redis-servers: the shared one on 127.0.0.1:6379 (a unique key
prefix per test, only our own keys deleted) and private ones on free ports for the disruptive
cases (connection kills, restarts, a server that stalls), so the shared server is never disturbed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import coredis
import pytest
import trio

import structlog

from ackvisor.brokers import BrokerUnavailable, PresenceEvent, Publication, RedisBroker
from ackvisor.channels.history import Position

SHARED_URL = "redis://127.0.0.1:6379/0"
REDIS_SERVER = shutil.which("redis-server")


def shared_redis_available() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not shared_redis_available(), reason="no redis-server on 127.0.0.1:6379")
needs_redis_server = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


def unique_prefix() -> str:
    return "axt" + secrets.token_hex(4)


async def delete_prefix(url: str, prefix: str) -> None:
    """Delete our own keys only (SCAN MATCH prefix:*)."""
    client = coredis.Redis.from_url(url)
    async with client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await client.delete(keys[i : i + 500])


class Node:
    """One broker plus what it delivered."""

    def __init__(self, broker: RedisBroker) -> None:
        self.broker = broker
        self.got: list[Publication] = []
        self.presence: list[PresenceEvent] = []

    def offsets(self, topic: str) -> list[int]:
        return [p.offset for p in self.got if p.topic == topic]

    def payloads(self, topic: str) -> list[Any]:
        return [p.payload for p in self.got if p.topic == topic]


@asynccontextmanager
async def cluster(n: int, url: str = SHARED_URL, *, prefix: str | None = None, names: str = "abcdefgh", cleanup: bool = True, **options: Any) -> AsyncIterator[list[Node]]:
    prefix = prefix or unique_prefix()
    nodes = [Node(RedisBroker(url, node_id=f"n{names[i]}", prefix=prefix, **options)) for i in range(n)]
    try:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                await nursery.start(_run, node)
            yield nodes
            nursery.cancel_scope.cancel()
    finally:
        if cleanup:
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                try:
                    await delete_prefix(url, prefix)
                except Exception:
                    pass


async def _run(node: Node, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    await node.broker.run(node.got.append, on_presence=node.presence.append, task_status=task_status)


async def wait_for(pred: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    with trio.move_on_after(timeout):
        while not pred():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of our own (restartable without disturbing the shared one)."""

    def __init__(self, *, persistent: bool = True) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="axredis")
        self.persistent = persistent
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            REDIS_SERVER or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
            "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
            "--enable-debug-command", "yes", "--daemonize", "no", "--logfile", os.path.join(self.dir, "log"),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("private redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# =========================================================================== fixtures


@pytest.fixture
def private_redis():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    r = PrivateRedis()
    r.start()
    yield r
    r.close()


async def raw_client(url: str) -> coredis.Redis:
    return coredis.Redis.from_url(url)


pytestmark = needs_redis


# =========================================================================== broadcast and order


async def test_publish_on_any_node_reaches_all_nodes_in_one_order():
    async with cluster(3) as (a, b, c):
        for n in (a, b, c):
            n.broker.subscribe("room")
        for n in (a, b, c):
            assert await n.broker.ensure_subscribed("room") == (await a.broker.position("room"))

        async def publisher(n: Node, tag: str) -> None:
            for i in range(100):
                await n.broker.publish("room", "msg", {"from": tag, "i": i})

        async with trio.open_nursery() as nursery:
            for n, tag in ((a, "a"), (b, "b"), (c, "c")):
                nursery.start_soon(publisher, n, tag)
        await wait_for(lambda: all(len(n.got) == 300 for n in (a, b, c)), what="300 deliveries on each node")
        assert a.offsets("room") == list(range(1, 301))
        assert a.payloads("room") == b.payloads("room") == c.payloads("room")
        for tag in "abc":  # each publisher's own order is kept
            assert [p["i"] for p in a.payloads("room") if p["from"] == tag] == list(range(100))
        assert {p.epoch for p in a.got} == {(await b.broker.position("room")).epoch}
        assert all(p.resync is None for p in a.got + b.got + c.got)
        assert a.broker.statistics().published == 100 and c.broker.statistics().delivered == 300


async def test_only_subscribed_nodes_get_a_topic_and_subscriptions_are_refcounted():
    async with cluster(2) as (a, b):
        a.broker.subscribe("t1")
        b.broker.subscribe("t2")
        b.broker.subscribe("t2")
        await a.broker.ensure_subscribed("t1")
        await b.broker.ensure_subscribed("t2")
        a.broker.publish_nowait("t1", "x", 1)  # queued, fire-and-forget
        await a.broker.publish("t2", "y", 2)
        await wait_for(lambda: len(a.got) == 1 and len(b.got) == 1)
        assert (a.got[0].event, a.got[0].offset) == ("x", 1) and b.got[0].event == "y"
        b.broker.unsubscribe("t2")  # one reference left: still subscribed
        await a.broker.publish("t2", "y", 3)
        await wait_for(lambda: len(b.got) == 2)
        b.broker.unsubscribe("t2")
        assert b.broker.subscribed() == []
        async with await raw_client(SHARED_URL) as r:
            channel = b.broker.keys.channel("t2")
            await wait_for_async(lambda: numsub(r, channel), 0)
        with pytest.raises(RuntimeError):
            await b.broker.ensure_subscribed("t2")


async def numsub(r: coredis.Redis, channel: str) -> int:
    return (await r.pubsub_numsub(channel))[channel.encode()]


async def wait_for_async(fn: Callable[[], Any], value: Any, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while await fn() != value:
            await trio.sleep(0.02)
        return
    raise AssertionError(f"never became {value!r}")


async def test_broadcast_without_history_and_a_failing_callback():
    async with cluster(2) as (a, b):
        calls = []

        def flaky(p: Publication) -> None:
            calls.append(p)
            if len(calls) == 1:
                raise RuntimeError("callback bug")

        b.broker._deliver = flaky
        for n in (a, b):
            n.broker.subscribe("live")
            await n.broker.ensure_subscribed("live")
        e = await a.broker.broadcast("live", "tick", {"n": 1})
        assert (e.offset, e.epoch) == (0, "")
        a.broker.broadcast_nowait("live", "tick", {"n": 2})
        await wait_for(lambda: len(calls) == 2 and len(a.got) == 2)
        assert [(p.offset, p.payload["n"]) for p in calls] == [(0, 1), (0, 2)]
        assert b.broker.statistics().callback_errors == 1
        assert (await a.broker.position("live")).offset == 0  # nothing in the history


# =========================================================================== history and resume


async def test_resume_on_another_node():
    async with cluster(2) as (a, b):
        entries = [await a.broker.publish("feed", "m", i) for i in range(50)]
        epoch = entries[0].epoch
        assert [e.offset for e in entries] == list(range(1, 51))
        got = await b.broker.read_from("feed", epoch, 20)
        assert [(e.offset, e.payload) for e in got] == [(i + 1, i) for i in range(20, 50)]
        assert got[0].topic == "feed" and got[0].event == "m"
        assert await b.broker.read_from("feed", epoch, 50) == []
        assert await b.broker.read_from("feed", "other", 20) is None
        assert await b.broker.read_from("feed", epoch, 51) is None  # beyond the top
        assert await b.broker.position("feed") == Position(epoch, 50)


async def test_trimmed_or_too_long_history_cannot_be_recovered():
    async with cluster(1, history_size=50, recover_limit=300) as (a,):
        for i in range(0, 600, 100):
            await trio_gather([a.broker.publish("big", "m", j) for j in range(i, i + 100)])
        epoch = (await a.broker.position("big")).epoch
        assert await a.broker.read_from("big", epoch, 5) is None  # trimmed (MAXLEN ~ 50)
        assert await a.broker.read_from("big", epoch, 550) is not None
        async with await raw_client(SHARED_URL) as r:
            assert await r.xlen(a.broker.keys.stream("big")) < 600
    async with cluster(1, recover_limit=10) as (a,):
        for i in range(30):
            await a.broker.publish("t", "m", i)
        epoch = (await a.broker.position("t")).epoch
        assert await a.broker.read_from("t", epoch, 5) is None  # 25 > recover_limit
        assert len(await a.broker.read_from("t", epoch, 25)) == 5


async def trio_gather(aws: list[Any]) -> list[Any]:
    out: list[Any] = [None] * len(aws)

    async def one(i: int, aw: Any) -> None:
        out[i] = await aw

    async with trio.open_nursery() as n:
        for i, aw in enumerate(aws):
            n.start_soon(one, i, aw)
    return out


async def test_lost_meta_surfaces_as_a_new_epoch():
    async with cluster(2) as (a, b):
        b.broker.subscribe("t")
        await b.broker.ensure_subscribed("t")
        old = [await a.broker.publish("t", "m", i) for i in range(5)]
        await wait_for(lambda: len(b.got) == 5)
        async with await raw_client(SHARED_URL) as r:
            await r.delete([a.broker.keys.meta("t")])  # e.g. evicted, or a Redis without persistence restarted
            e = await a.broker.publish("t", "m", 5)
            assert e.offset == 1 and e.epoch != old[0].epoch
            assert await r.xlen(a.broker.keys.stream("t")) == 1  # the old epoch's stream was dropped
        await wait_for(lambda: len(b.got) == 6)
        last = b.got[-1]
        assert (last.epoch, last.offset, last.resync) == (e.epoch, 1, "epoch")
        assert await b.broker.read_from("t", old[0].epoch, 3) is None
        assert await b.broker.read_from("t", e.epoch, 0) == [e.__class__("t", e.epoch, 1, "m", 5, last.at)]


# =========================================================================== idempotency


async def test_same_msg_id_is_published_once_from_any_node():
    async with cluster(2) as (a, b):
        b.broker.subscribe("t")
        await b.broker.ensure_subscribed("t")
        e1 = await a.broker.publish("t", "m", 1, msg_id="client-42")
        e2 = await b.broker.publish("t", "m", 1, msg_id="client-42")
        e3 = await b.broker.publish("t", "m", 2, msg_id="client-43")
        assert (e1.offset, e1.epoch) == (e2.offset, e2.epoch) and e3.offset == 2
        await wait_for(lambda: len(b.got) == 2)
        await trio.sleep(0.05)
        assert b.offsets("t") == [1, 2] and b.got[0].msg_id == "client-42"
        assert b.broker.statistics().publish_duplicates == 1
        # the script itself, run twice with the same idempotency key (a retry after a lost reply)
        bk = a.broker
        async with await raw_client(SHARED_URL) as r:
            keys = [bk.keys.meta("t"), bk.keys.stream("t"), bk.keys.idem("t", "raw-1")]
            args = ["100", "60", "60", "ffffffff", bk.keys.channel("t"), "nx", "60", b'{"e":"m","p":3}']
            first = await r.evalsha(bk._shas["PUBLISH"], keys=keys, args=args)
            again = await r.evalsha(bk._shas["PUBLISH"], keys=keys, args=args)
            assert first[1] == 3 and again[1] == b"3|" + first[0]
            assert await r.xlen(bk.keys.stream("t")) == 3


async def test_idempotent_publish_under_a_forced_timeout(private_redis):
    """The server applies the batch after the client gave up (stalled server): the retry with the
    same idempotency key must not publish it twice."""
    async with cluster(2, private_redis.url, stream_timeout=0.15, publish_timeout=5.0) as (a, b):
        b.broker.subscribe("t")
        await b.broker.ensure_subscribed("t")
        await a.broker.publish("t", "m", 0)
        async with await raw_client(private_redis.url) as r:
            async with trio.open_nursery() as n:
                n.start_soon(debug_sleep, r, 0.6)
                await trio.sleep(0.05)
                e = await a.broker.publish("t", "m", 1)  # times out at least once, then succeeds
            assert e.offset == 2
            assert await r.xlen(a.broker.keys.stream("t")) == 2
        await wait_for(lambda: len(b.got) == 2)
        await trio.sleep(0.1)
        assert b.offsets("t") == [1, 2]
        s = a.broker.statistics()
        # the retry was answered from the idempotency key the stalled first attempt had written
        assert s.publish_retries >= 1 and s.publish_duplicates == 1 and s.published == 1


async def debug_sleep(r: coredis.Redis, seconds: float) -> None:
    async with r.pipeline(transaction=False, timeout=seconds + 2) as p:
        p.create_request(b"DEBUG", b"SLEEP", str(seconds).encode(), callback=lambda x, **k: x)


# =========================================================================== reconnects and gaps


async def steady_publisher(node: Node, topic: str, count: int, interval: float, failures: list[Any]) -> None:
    """Publish ``count`` messages; on BrokerUnavailable retry the SAME msg_id (exactly once)."""
    for i in range(count):
        msg_id = f"{topic}-{i}"
        while True:
            try:
                await node.broker.publish(topic, "m", i, msg_id=msg_id)
                break
            except BrokerUnavailable as e:
                failures.append(e)
                await trio.sleep(0.05)
        await trio.sleep(interval)


async def test_pubsub_connection_killed_mid_stream(private_redis):
    async with cluster(2, private_redis.url) as (a, b):
        for n in (a, b):
            n.broker.subscribe("s")
            await n.broker.ensure_subscribed("s")
        failures: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(steady_publisher, a, "s", 300, 0.002, failures)
            await wait_for(lambda: len(b.got) > 50)
            async with await raw_client(private_redis.url) as r:
                for _ in range(2):
                    killed = await r.client_kill(type_=coredis.PureToken.PUBSUB)
                    assert killed == 2
                    await trio.sleep(0.15)
        await wait_for(lambda: len(a.got) == 300 and len(b.got) == 300, what="all 300 on both nodes")
        await trio.sleep(0.1)
        for n in (a, b):
            assert n.offsets("s") == list(range(1, 301))
            assert n.payloads("s") == list(range(300))
            s = n.broker.statistics()
            assert s.resubscribes >= 2 and s.gap_fills >= 2
            assert all(p.resync is None for p in n.got)
        assert sum(n.broker.statistics().filled_from_history for n in (a, b)) > 0


async def test_redis_restart_mid_stream_loses_nothing(private_redis):
    """A persistent Redis restarted: publishes fail fast while it is down (retried with the same
    msg_id by the app), nodes recover by themselves, and each feed is exactly 1..N."""
    with structlog.testing.capture_logs() as logs:
        async with cluster(2, private_redis.url, heartbeat=0.2, node_timeout=2.0) as (a, b):
            for n in (a, b):
                n.broker.subscribe("r")
                await n.broker.ensure_subscribed("r")
            epoch = (await a.broker.position("r")).epoch
            failures: list[Any] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(steady_publisher, a, "r", 200, 0.003, failures)
                await wait_for(lambda: len(b.got) > 40)
                private_redis.kill()
                await wait_for(lambda: not b.broker.redis_up, timeout=2, what="redis_down on b")
                t0 = trio.current_time()
                with pytest.raises(BrokerUnavailable):  # fails fast while Redis is known down
                    await b.broker.publish("r", "m", "not published")
                assert trio.current_time() - t0 < 0.1
                await trio.sleep(0.4)
                private_redis.start()
            await wait_for(lambda: len(a.got) == 200 and len(b.got) == 200, timeout=8, what="all 200 on both nodes")
            await trio.sleep(0.1)
            for n in (a, b):
                assert n.offsets("r") == list(range(1, 201))
                assert n.payloads("r") == list(range(200))
                assert {p.epoch for p in n.got} == {epoch}
                assert n.broker.redis_up
            # a's publish in flight during the outage was retried (same idempotency key) until
            # Redis was back; later ones may have failed fast and were retried by the app
            assert all(isinstance(f, BrokerUnavailable) for f in failures)
            assert a.broker.statistics().publish_retries >= 1
    downs = [e for e in logs if e["event"] == "redis_down" and e["node"] == "na"]
    ups = [e for e in logs if e["event"] == "redis_up" and e["node"] == "na"]
    assert len(downs) == len(ups) == 1  # once per state change, not per message


async def test_redis_unreachable_at_start_then_available(private_redis):
    private_redis.kill()
    async with cluster(1, private_redis.url, heartbeat=0.2, node_timeout=2.0, cleanup=False) as (a,):
        await trio.sleep(0.3)
        assert not a.broker.redis_up
        with pytest.raises(BrokerUnavailable):
            await a.broker.publish("t", "m", 1)
        a.broker.subscribe("t")
        with pytest.raises(BrokerUnavailable):
            await a.broker.ensure_subscribed("t", timeout=0.2)
        await a.broker.presence_join("t", "alice", "c1", {})  # remembered, applied later
        private_redis.start()
        await wait_for(lambda: a.broker.redis_up, what="redis_up")
        await a.broker.ensure_subscribed("t")
        e = await a.broker.publish("t", "m", 1)
        await wait_for(lambda: len(a.got) == 1)
        assert a.got[0].offset == e.offset == 1
        await wait_for_async(lambda: a.broker.presence_list("t"), {"alice": {"metas": [a.broker.presence_local("t")["c1|alice"]]}})


# =========================================================================== presence


def keys_of(events: list[PresenceEvent], field: str) -> list[str]:
    return [k for e in events if e.kind == "diff" for k in getattr(e, field)]


async def test_presence_joins_and_leaves_across_nodes():
    async with cluster(3) as (a, b, c):
        c.broker.subscribe("lobby")
        await c.broker.ensure_subscribed("lobby")
        ma = await a.broker.presence_join("lobby", "alice", "conn1", {"device": "web"})
        await b.broker.presence_join("lobby", "bob", "conn2", {"device": "ios"})
        await b.broker.presence_join("lobby", "alice", "conn3", {"device": "android"})  # alice twice
        await wait_for(lambda: len(c.presence) == 3)
        state = await c.broker.presence_list("lobby")
        assert sorted(state) == ["alice", "bob"]
        assert sorted(m["device"] for m in state["alice"]["metas"]) == ["android", "web"]
        assert all("phx_ref" in m for m in state["alice"]["metas"])
        assert c.presence[0].joins == {"alice": {"metas": [ma]}} and c.presence[0].origin == "na"
        # an update: leave of the old meta + join of the new one, in one diff
        mb = await a.broker.presence_join("lobby", "alice", "conn1", {"device": "web", "typing": True})
        assert mb["phx_ref_prev"] == ma["phx_ref"]
        await wait_for(lambda: len(c.presence) == 4)
        assert c.presence[3].joins == {"alice": {"metas": [mb]}} and c.presence[3].leaves == {"alice": {"metas": [ma]}}
        await b.broker.presence_leave("lobby", "bob", "conn2")
        await wait_for(lambda: len(c.presence) == 5)
        assert list(c.presence[4].leaves) == ["bob"] and c.presence[4].joins == {}
        assert sorted(await a.broker.presence_list("lobby")) == ["alice"]
        await b.broker.presence_leave_conn("conn3")
        await wait_for(lambda: len(c.presence) == 6)
        assert [m["device"] for m in (await c.broker.presence_list("lobby"))["alice"]["metas"]] == ["web"]


async def test_a_killed_node_is_reaped_with_leave_diffs():
    async with cluster(3, heartbeat=0.1, node_timeout=0.5) as (a, b, c):
        a.broker.subscribe("room")
        await a.broker.ensure_subscribed("room")
        await a.broker.presence_join("room", "alice", "c1", {})
        await b.broker.presence_join("room", "bob", "c2", {})
        await b.broker.presence_join("other", "bob", "c2", {})
        await wait_for(lambda: len(a.presence) == 2)
        b.broker.stop(graceful=False)  # crashed: no leave, the heartbeat just stops
        t0 = trio.current_time()
        # presence_list hides a dead node's entries as soon as its heartbeat is too old ...
        await wait_for(lambda: len(a.presence) == 3, timeout=3, what="the reaper's leave diff")
        assert trio.current_time() - t0 < 1.5
        assert a.presence[2].leaves and list(a.presence[2].leaves) == ["bob"]
        assert await a.broker.presence_list("room") == await c.broker.presence_list("room")
        assert sorted(await c.broker.presence_list("room")) == ["alice"]
        assert await c.broker.presence_list("other") == {}
        async with await raw_client(SHARED_URL) as r:
            assert [m.decode() for m in await r.hkeys(a.broker.keys.presence("room"))] == ["na|c1|alice"]
            assert await r.zscore(a.broker.keys.nodes, "nb") is None
            assert not await r.exists([a.broker.keys.node_topics("nb")])
        assert a.broker.statistics().reaped_nodes + c.broker.statistics().reaped_nodes == 1


async def test_graceful_stop_leaves_at_once_and_a_reaped_node_rejoins():
    async with cluster(2, heartbeat=0.1, node_timeout=0.5) as (a, b):
        a.broker.subscribe("room")
        await a.broker.ensure_subscribed("room")
        await b.broker.presence_join("room", "bob", "c2", {})
        await wait_for(lambda: len(a.presence) == 1)
        # b looks dead for a moment (e.g. a long pause): it is reaped, then re-syncs its entries
        async with await raw_client(SHARED_URL) as r:
            await r.zadd(a.broker.keys.nodes, {"nb": 1})
            await a.broker._reap("nb")  # (what a's next heartbeat would do, without the race)
            await wait_for(lambda: len(a.presence) >= 3, timeout=3, what="reaped then re-joined")
        assert list(a.presence[1].leaves) == ["bob"] and list(a.presence[2].joins) == ["bob"]
        assert sorted(await a.broker.presence_list("room")) == ["bob"]
        b.broker.stop()  # graceful: leaves now
        await wait_for(lambda: any(e.leaves for e in a.presence[3:]), timeout=0.5, what="the graceful leave")
        assert await a.broker.presence_list("room") == {}


# =========================================================================== more failure cases


async def test_a_message_lost_by_pubsub_with_nothing_after_it_is_found_by_the_position_check():
    async with cluster(1, position_check=0.2) as (a,):
        a.broker.subscribe("t")
        await a.broker.ensure_subscribed("t")
        await a.broker.publish("t", "m", 1)
        await wait_for(lambda: len(a.got) == 1)
        bk = a.broker
        async with await raw_client(SHARED_URL) as r:  # appended to the stream, published elsewhere
            keys = [bk.keys.meta("t"), bk.keys.stream("t")]
            args = ["100", "60", "60", "ffffffff", "nowhere", "nx", "60", b'{"e":"m","p":2}']
            await r.evalsha(bk._shas["PUBLISH"], keys=keys, args=args)
        await wait_for(lambda: len(a.got) == 2, timeout=3, what="the position check")
        assert a.offsets("t") == [1, 2] and a.got[1].payload == 2 and a.got[1].resync is None


async def test_a_redis_restart_that_lost_everything_surfaces_as_a_new_epoch():
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(persistent=False)
    server.start()
    try:
        async with cluster(2, server.url, heartbeat=0.2, node_timeout=2.0, cleanup=False) as (a, b):
            b.broker.subscribe("t")
            await b.broker.ensure_subscribed("t")
            old = [await a.broker.publish("t", "m", i) for i in range(3)]
            await wait_for(lambda: len(b.got) == 3)
            server.kill()
            server.start()
            await wait_for(lambda: b.broker.statistics().resubscribes >= 1, what="the re-subscribe")
            e = await publish_retrying(a, "t", "m", 3)
            assert e.offset == 1 and e.epoch != old[0].epoch
            await wait_for(lambda: len(b.got) == 4)
            assert (b.got[3].offset, b.got[3].epoch, b.got[3].resync) == (1, e.epoch, "epoch")
            assert await b.broker.read_from("t", old[0].epoch, 3) is None
    finally:
        server.close()


async def publish_retrying(node: Node, topic: str, event: str, payload: Any) -> Any:
    with trio.fail_after(5):
        while True:
            try:
                return await node.broker.publish(topic, event, payload, msg_id=f"{topic}-{payload}")
            except BrokerUnavailable:
                await trio.sleep(0.05)


async def test_presence_state_is_resent_after_a_resubscribe(private_redis):
    async with cluster(2, private_redis.url) as (a, b):
        a.broker.subscribe("room")
        await a.broker.ensure_subscribed("room")
        await b.broker.presence_join("room", "bob", "c2", {})
        await wait_for(lambda: len(a.presence) == 1)
        async with await raw_client(private_redis.url) as r:
            await r.client_kill(type_=coredis.PureToken.PUBSUB)
        await wait_for(lambda: any(e.kind == "state" for e in a.presence), what="a presence state")
        state = [e for e in a.presence if e.kind == "state"][0]
        assert list(state.state) == ["bob"] and state.topic == "room"


async def test_stopping_fails_waiting_publishers_instead_of_hanging():
    async with cluster(1) as (a,):
        results: list[Any] = []

        async def pub(i: int) -> None:
            try:
                results.append(await a.broker.publish("t", "m", i))
            except BrokerUnavailable as e:
                results.append(e)

        async with trio.open_nursery() as n:
            for i in range(50):
                n.start_soon(pub, i)
            await trio.sleep(0)
            a.broker.stop()
        assert len(results) == 50 and any(isinstance(r, BrokerUnavailable) for r in results)
        with pytest.raises(BrokerUnavailable):
            await a.broker.publish("t", "m", 99)


async def test_run_returns_after_stop_and_never_raises_into_the_nursery():
    broker = RedisBroker("redis://127.0.0.1:1/0", node_id="lonely", prefix=unique_prefix(), heartbeat=0.1, node_timeout=1.0)
    with trio.fail_after(5):
        async with trio.open_nursery() as n:
            await n.start(lambda task_status: broker.run(lambda p: None, task_status=task_status))
            broker.subscribe("t")
            await trio.sleep(0.3)  # connection refused everywhere: logged once, retried
            assert not broker.redis_up
            broker.stop()
    assert broker.statistics().redis_down_events == 1


async def test_a_quick_unsubscribe_resubscribe_keeps_the_feed_going():
    """Re-subscribing while the UNSUBSCRIBE is pending or done: ensure_subscribed never hangs, the
    feed stays in order without duplicates, and (position, history, live) covers everything."""
    async with cluster(2) as (a, b):
        b.broker.subscribe("t")
        await b.broker.ensure_subscribed("t")
        for i in range(8):
            b.broker.unsubscribe("t")
            if i % 2:
                await trio.sleep(0.05)  # sometimes the UNSUBSCRIBE is already out
            b.broker.subscribe("t")
            position = await b.broker.ensure_subscribed("t", timeout=3)
            seen = len(b.got)
            await a.broker.publish("t", "m", i)
            # what a new local subscriber would do: history after the position, then live
            replay = await b.broker.read_from("t", position.epoch, position.offset)
            await wait_for(lambda: any(p.payload == i for p in b.got[seen:]) or any(e.payload == i for e in replay))
        offsets = b.offsets("t")
        assert offsets == sorted(set(offsets))
        for i in range(8, 11):
            await a.broker.publish("t", "m", i)
        await wait_for(lambda: b.payloads("t")[-3:] == [8, 9, 10])
        assert b.broker.subscribed() == ["t"]


async def test_read_from_with_a_limit_pages_like_the_memory_history():
    async with cluster(1, page_size=7) as (a,):
        entries = [await a.broker.publish("t", "m", i) for i in range(30)]
        epoch = entries[0].epoch
        got = await a.broker.read_from("t", epoch, 3, 10)
        assert [e.offset for e in got] == list(range(4, 14))
        assert [e.offset for e in await a.broker.read_from("t", epoch, 25, 10)] == [26, 27, 28, 29, 30]
        assert [e.offset for e in await a.broker.read_from("t", epoch, 0)] == list(range(1, 31))
        assert await a.broker.read_from("t", epoch, 30, 10) == []
        position, caught = (epoch, 0), []
        while True:  # the channel server's catch-up loop
            batch = await a.broker.read_from("t", *position, 4)
            if not batch:
                break
            caught += batch
            position = (epoch, batch[-1].offset)
        assert [e.payload for e in caught] == list(range(30))


# =========================================================================== the node bridge


async def test_node_bridge_fans_out_to_local_actors_on_two_nodes():
    from ackvisor import Actor, open_node
    from ackvisor.brokers import NodeBridge
    from ackvisor.channels import pubsub
    from ackvisor.channels.pubsub import Broadcast

    class Sub(Actor):
        async def init(self, seen: list) -> None:
            self.seen = seen

        async def handle_info(self, message: Any) -> None:
            if type(message) is Broadcast:
                self.seen.append(message)

    prefix = unique_prefix()
    try:
        async with open_node("na") as node_a, open_node("nb") as node_b:
            bridges = [
                NodeBridge(node, RedisBroker(SHARED_URL, node_id=node.name, prefix=prefix), sweep=0.05)
                for node in (node_a, node_b)
            ]
            async with trio.open_nursery() as nursery:
                for bridge in bridges:
                    await nursery.start(bridge.run)
                seen: dict[str, list[Broadcast]] = {"a1": [], "b1": [], "b2": []}
                for name, node in (("a1", node_a), ("b1", node_b), ("b2", node_b)):
                    ref = await node.spawn(Sub, seen[name])
                    pubsub.subscribe(node, "room", ref)
                history_b = bridges[1].history
                position = await history_b.position("room")  # subscribes node b, waits for the ack
                assert position.offset == 0
                await wait_for(lambda: "room" in bridges[0].broker.subscribed(), what="the sweep subscribing node a")
                await bridges[0].broker.ensure_subscribed("room")
                for i in range(3):
                    await bridges[0].broker.publish("room", "new_msg", {"i": i})
                await bridges[1].broker.broadcast("room", "typing", {"who": "bob"})
                await bridges[0].broker.presence_join("room", "alice", "c1", {"online_at": 1})
                await wait_for(lambda: all(len(v) == 5 for v in seen.values()), what="5 broadcasts per actor")
                for v in seen.values():
                    assert [(m.event, m.offset) for m in v] == [
                        ("new_msg", 1), ("new_msg", 2), ("new_msg", 3), ("typing", None), ("presence_diff", None),
                    ]
                    assert v[0].epoch == position.epoch and v[4].payload["joins"]["alice"]["metas"][0]["online_at"] == 1
                got = await history_b.read_from("room", position.epoch, 1, 1)
                assert [(e.offset, e.payload) for e in got] == [(2, {"i": 1})]
                with pytest.raises(TypeError):
                    history_b.append("room", "x", 1)
                for ref in node_b.registry.members(("pubsub", "room")):
                    pubsub.unsubscribe(node_b, "room", ref)
                await wait_for(lambda: bridges[1].broker.subscribed() == [], what="the sweep unsubscribing node b")
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await delete_prefix(SHARED_URL, prefix)
