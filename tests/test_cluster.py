"""Several ackvisor nodes over one real Redis (issue 6): cross-node broadcast order, resume on
another node after a let-it-crash, presence across nodes with a dead node reaped.

Each node is a full ackvisor node (its own ``open_node``, PubSub with the Redis adapter,
endpoint on its own port) inside this test process; clients are real sockets.
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio

from ackvisor import ChildSpec, open_node
from ackvisor.channels import Channel, Endpoint, PubSub
from ackvisor.channels import pubsub
from ackvisor.client import PhoenixClient

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_available() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _redis_available(), reason="needs redis-server on 127.0.0.1:6379 (.ci/run starts one)")


class RoomChannel(Channel):
    """Resumes from the room's own history; tracks presence when joined with a ``user``."""

    history_topic = "{topic}"

    async def join(self, topic: str, params: dict[str, Any], socket: Any) -> Any:
        if isinstance(params.get("user"), str):
            self.send(self.ref, ("track", params["user"]))
        return None

    async def handle_info(self, message: Any, socket: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "track":
            await self.track(message[1], {"node": self.node.name})

    async def handle_in(self, event: str, payload: Any, socket: Any) -> Any:
        if event == "shout":
            entry = await pubsub.publish_async(self.node, socket.topic, "shout", payload)
            return ("ok", {"offset": entry.offset})
        return await super().handle_in(event, payload, socket)

    async def handle_out(self, event: str, payload: Any, socket: Any) -> Any:
        if event.startswith("presence_"):
            await self.push(event, payload)
        else:
            await self.push(event, payload, ack=True)


class Cluster:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: dict[str, Any] = {}
        self.endpoints: dict[str, Endpoint] = {}

    def url(self, name: str) -> str:
        return self.endpoints[name].url

    def broker(self, name: str) -> Any:
        return self.nodes[name].broker


@asynccontextmanager
async def cluster(*names: str, ack_timeout: float = 0.3, url: str = REDIS_URL) -> AsyncIterator[Cluster]:
    c = Cluster(f"axt{secrets.token_hex(4)}")

    async def run_node(name: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_node(name) as node:
            ep = Endpoint({"room:*": RoomChannel}, port=0, ack_timeout=ack_timeout, heartbeat_timeout=30.0)
            await node.start_supervisor(
                [
                    ChildSpec(
                        "pubsub",
                        PubSub,
                        "redis",
                        url,
                        name="pubsub",
                        kwargs=dict(node_id=name, prefix=c.prefix, heartbeat=0.2, node_timeout=0.8),
                    ),
                    ep.child_spec(),
                ]
            )
            await ep.wait_listening()
            c.nodes[name], c.endpoints[name] = node, ep
            task_status.started()
            await trio.sleep_forever()

    try:
        async with trio.open_nursery() as nursery:
            for name in names:
                await nursery.start(run_node, name)
            yield c
            nursery.cancel_scope.cancel()
    finally:
        await _flush(c.prefix, url)


async def _flush(prefix: str, url: str = REDIS_URL) -> None:
    import coredis

    async with coredis.Redis.from_url(url) as client:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(keys)


async def _receive_offsets(channel: Any, n: int, *, event: str = "shout") -> list[tuple[int, Any]]:
    got: list[tuple[int, Any]] = []
    with trio.fail_after(10):
        while len(got) < n:
            msg = await channel.receive()
            if msg.event == event:
                got.append((msg.payload["offset"], msg.payload["n"]))
    return got


async def test_broadcast_on_one_node_reaches_clients_on_the_others_in_one_order() -> None:
    async with cluster("a", "b", "c") as c:
        async with PhoenixClient.open(c.url("b")) as cb, PhoenixClient.open(c.url("c")) as cc:
            chan_b = await cb.join("room:1")
            chan_c = await cc.join("room:1")
            # Publishers on A (concurrent, so Redis decides the one order).
            async with trio.open_nursery() as nursery:
                for k in range(4):
                    async def publish_some(k: int = k) -> None:
                        for i in range(25):
                            await pubsub.publish_async(c.nodes["a"], "room:1", "shout", {"n": k * 100 + i})

                    nursery.start_soon(publish_some)
            seen_b = await _receive_offsets(chan_b, 100)
            seen_c = await _receive_offsets(chan_c, 100)
    assert [o for o, _ in seen_b] == list(range(1, 101))
    assert seen_b == seen_c  # same messages in the same order on both nodes
    assert sorted(n for _, n in seen_b) == sorted(k * 100 + i for k in range(4) for i in range(25))


async def test_client_crashed_on_one_node_resumes_on_another_with_no_loss() -> None:
    async with cluster("a", "b") as c:
        async with PhoenixClient.open(c.url("a"), reconnect=False) as ca:
            chan = await ca.join("room:2")
            for i in range(10):
                await pubsub.publish_async(c.nodes["b"], "room:2", "shout", {"n": i})
            first = await _receive_offsets(chan, 10)
            position = chan.position
            # Let it crash on A: stop acking; the ack deadline passes and A closes with 1011.
            chan.auto_ack = False
            await pubsub.publish_async(c.nodes["b"], "room:2", "shout", {"n": 10})
            closed = await ca.wait_closed()
            assert closed.code == 1011
        assert position is not None and position[1] == 10
        for i in range(11, 25):
            await pubsub.publish_async(c.nodes["a"], "room:2", "shout", {"n": i})
        # The client comes back on B with the position it had handed to the application.
        async with PhoenixClient.open(c.url("b")) as cb:
            resumed = await cb.join("room:2", {"resume": {"epoch": position[0], "offset": position[1]}})
            assert resumed.join_response["recovered"] is True
            rest = await _receive_offsets(resumed, 15)
    assert [n for _, n in first + rest] == list(range(25))
    assert [o for o, _ in first + rest] == list(range(1, 26))


async def test_presence_spans_nodes_and_a_dead_node_is_reaped() -> None:
    async with cluster("a", "b") as c:
        async with PhoenixClient.open(c.url("a")) as ca, PhoenixClient.open(c.url("b")) as cb:
            chan_a = await ca.join("room:p", {"user": "alice"})

            async def next_event(channel: Any, event: str, pred: Any = lambda p: True) -> Any:
                with trio.fail_after(10):
                    while True:
                        msg = await channel.receive()
                        if msg.event == event and pred(msg.payload):
                            return msg.payload

            await next_event(chan_a, "presence_state", lambda p: "alice" in p)
            chan_b = await cb.join("room:p", {"user": "bob"})
            state_b = await next_event(chan_b, "presence_state", lambda p: {"alice", "bob"} <= set(p))
            assert state_b["alice"]["metas"][0]["node"] == "a"
            assert state_b["bob"]["metas"][0]["phx_ref"]
            await next_event(chan_a, "presence_diff", lambda p: "bob" in p["joins"])
            # Node B dies without saying goodbye: its broker stops heartbeating.
            c.broker("b").stop(graceful=False)
            diff = await next_event(chan_a, "presence_diff", lambda p: "bob" in p["leaves"])
            assert diff["leaves"]["bob"]["metas"][0]["node"] == "b"
            listed = await c.broker("a").presence_list("room:p")
            assert set(listed) == {"alice"}


async def test_redis_restarted_mid_stream_resuming_clients_lose_nothing(tmp_path: Any) -> None:
    """A (persistent) Redis is killed and restarted while node A publishes and a client on node B
    receives: publishes retried with their idempotency key are applied once, B's feed fills the
    gap from the stream, and the client sees every offset exactly once, in order."""
    from test_redis_broker import REDIS_SERVER, PrivateRedis

    from ackvisor.brokers.redis import BrokerError, BrokerUnavailable

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis()
    redis.start()
    try:
        async with cluster("a", "b", url=redis.url) as c:
            async with PhoenixClient.open(c.url("b")) as cb:
                chan = await cb.join("room:r")

                async def publisher() -> None:
                    for i in range(300):
                        while True:
                            try:
                                await pubsub.publish_async(c.nodes["a"], "room:r", "shout", {"n": i}, msg_id=f"m{i}")
                                break
                            except (BrokerUnavailable, BrokerError):
                                await trio.sleep(0.02)
                        if i == 100:
                            redis.kill()
                            await trio.sleep(0.3)
                            await trio.to_thread.run_sync(redis.start)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(publisher)
                    with trio.fail_after(30):
                        seen = await _receive_offsets(chan, 300)
        assert [o for o, _ in seen] == list(range(1, 301))
        assert [n for _, n in seen] == list(range(300))
    finally:
        redis.close()
