"""Glue between a :class:`~.redis.RedisBroker` and one node's channels layer.

:class:`NodeBridge` is what a ``[pubsub] adapter = "redis"`` node runs:

* ``deliver`` / ``presence`` - the broker's callbacks: each publication (or
  presence event) of a topic becomes ONE :class:`~ackvisor.channels.pubsub.Broadcast`
  put in the mailbox of every local subscriber of the topic (the node's
  registry group, as :func:`ackvisor.channels.pubsub.broadcast` does).
  History publications carry ``offset`` / ``epoch``; broadcasts without
  history carry ``None`` for both; presence arrives as Phoenix's
  ``presence_diff`` (``{"joins", "leaves"}``) and ``presence_state`` events
  (``offset None``), which a channel's default ``handle_out`` pushes as is.
* ``history`` - a :class:`RedisHistory`, the ``History`` interface the
  channel server reads (``position`` / ``read_from`` are async: the server
  awaits them).  ``position`` first makes sure this node's Redis
  subscription to the topic is acknowledged (subscribe, THEN read).
* the node's Redis subscriptions follow the local subscribers: a topic is
  subscribed as soon as ``RedisHistory.position`` / :meth:`NodeBridge.track`
  asks for it, and :meth:`NodeBridge.sync_subscriptions` (run every
  ``sweep`` seconds) subscribes topics that gained local subscribers through
  ``pubsub.subscribe`` and unsubscribes topics that have none left.
"""

from __future__ import annotations

from typing import Any

import trio

from ..channels.history import Entry, Position
from ..channels.pubsub import Broadcast
from .redis import RedisBroker
from .redis_codec import PresenceEvent, Publication

__all__ = ["NodeBridge", "RedisHistory"]

_GROUP = "pubsub"  # the registry group prefix of ackvisor.channels.pubsub


class RedisHistory:
    """The channels' ``History`` interface over a broker (async reads, no sync append)."""

    def __init__(self, bridge: "NodeBridge") -> None:
        self._bridge = bridge
        self.broker = bridge.broker

    async def position(self, topic: str) -> Position:
        """Subscribe this node (if needed), wait for the acknowledgement, then read the position:
        everything after it reaches the node's local subscribers."""
        self._bridge.track(topic)
        await self.broker.ensure_subscribed(topic)
        return await self.broker.position(topic)

    async def read_from(self, topic: str, epoch: str, offset: int, limit: int | None = None) -> list[Entry] | None:
        return await self.broker.read_from(topic, epoch, offset, limit)

    def append(self, topic: str, event: str, payload: Any) -> Entry:
        raise TypeError("with the Redis adapter the offset comes from Redis: use `await broker.publish(...)`")


class NodeBridge:
    """A broker wired to a node: local fan-out of publications and presence, subscriptions that
    follow the local subscribers.  Run with ``await nursery.start(bridge.run)``."""

    def __init__(self, node: Any, broker: RedisBroker, *, sweep: float = 1.0) -> None:
        self.node = node
        self.broker = broker
        self.sweep = sweep
        self.history = RedisHistory(self)
        self._tracked: set[str] = set()
        self.fanned_out = 0

    # ----- the broker's callbacks

    def deliver(self, p: Publication) -> None:
        offset, epoch = (p.offset, p.epoch) if p.offset else (None, None)
        self._fan_out(p.topic, Broadcast(p.topic, p.event, p.payload, None, offset, epoch))

    def presence(self, ev: PresenceEvent) -> None:
        if ev.kind == "state":
            message = Broadcast(ev.topic, "presence_state", ev.state or {})
        else:
            message = Broadcast(ev.topic, "presence_diff", {"joins": ev.joins, "leaves": ev.leaves})
        self._fan_out(ev.topic, message)

    def _fan_out(self, topic: str, message: Broadcast) -> None:
        for ref in self.node.registry.members((_GROUP, topic)):
            ref.send(message)
            self.fanned_out += 1

    # ----- subscriptions

    def track(self, topic: str) -> None:
        """Make sure the node is subscribed to ``topic`` (until it has no local subscriber)."""
        if topic not in self._tracked:
            self._tracked.add(topic)
            self.broker.subscribe(topic)

    def sync_subscriptions(self) -> None:
        """Subscribe topics with local subscribers, unsubscribe those without (sync)."""
        local = {g[1] for g in self.node.registry.groups() if isinstance(g, tuple) and len(g) == 2 and g[0] == _GROUP}
        for topic in local - self._tracked:
            self.track(topic)
        for topic in self._tracked - local:
            self._tracked.discard(topic)
            self.broker.unsubscribe(topic)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker with this bridge's callbacks, and the subscription sweep (until
        cancelled or the broker is stopped)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeper)
            await self.broker.run(self.deliver, on_presence=self.presence, task_status=task_status)
            nursery.cancel_scope.cancel()

    async def _sweeper(self) -> None:
        while True:
            await trio.sleep(self.sweep)
            self.sync_subscriptions()
