"""Local PubSub: topic subscriptions and broadcast between actors of one node.

Subscriptions live in the node registry's groups, so a subscriber that dies
is unsubscribed automatically (before its monitors hear of it).  Broadcast is
sync and never blocks: it puts one :class:`Broadcast` message in each
subscriber's mailbox, in subscription order.  Messages from one broadcaster
to one subscriber keep their order.

The :class:`PubSub` actor is the node's pubsub service (registered as
``"pubsub"``); with the local adapter it only owns the counters, with a
distributed adapter (Redis) it also owns the relay tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..actor import Actor, ActorRef, current_actor
from ..node import Node

__all__ = ["Broadcast", "PubSub", "subscribe", "unsubscribe", "broadcast", "publish", "subscribers", "PubSubStatistics"]

_GROUP = "pubsub"


@dataclass(frozen=True, slots=True)
class Broadcast:
    """The message a subscriber receives: topic, event, payload, and the broadcasting actor (or None)."""

    topic: str
    event: str
    payload: Any
    sender: ActorRef | None = None
    offset: int | None = None
    epoch: str | None = None
    #: a history message's excluded subscriber (``publish(..., exclude=)``): it still gets the
    #: message, to keep its offsets contiguous, but does not push it
    exclude: ActorRef | None = None


@dataclass(frozen=True, slots=True)
class PubSubStatistics:
    """Counters of the local pubsub: broadcasts made and messages delivered."""

    topics: int
    broadcasts: int
    delivered: int


class _Counters:
    __slots__ = ("broadcasts", "delivered")

    def __init__(self) -> None:
        self.broadcasts = 0
        self.delivered = 0


def _counters(node: Node) -> _Counters:
    counters = getattr(node, "_pubsub_counters", None)
    if counters is None:
        counters = _Counters()
        node._pubsub_counters = counters  # type: ignore[attr-defined]
    return counters


def subscribe(node: Node, topic: str, ref: ActorRef | None = None) -> None:
    """Subscribe ``ref`` (default: the current actor) to ``topic``; sync."""
    ref = ref if ref is not None else _require_actor()
    if ref not in node.registry.members((_GROUP, topic)):
        node.registry.join((_GROUP, topic), ref)


def unsubscribe(node: Node, topic: str, ref: ActorRef | None = None) -> None:
    """Remove ``ref``'s (default: the current actor's) subscription to ``topic``; sync."""
    ref = ref if ref is not None else _require_actor()
    node.registry.leave((_GROUP, topic), ref)


def subscribers(node: Node, topic: str) -> list[ActorRef]:
    """Live subscribers of ``topic``."""
    return node.registry.members((_GROUP, topic))


def broadcast(node: Node, topic: str, event: str, payload: Any, *, exclude: ActorRef | None = None) -> int:
    """Deliver ``Broadcast(topic, event, payload)`` to every subscriber but ``exclude``; returns how many
    local subscribers got it (with the Redis adapter it goes to every node through Redis: returns 0)."""
    broker = getattr(node, "broker", None)
    if broker is not None:
        broker.broadcast_nowait(topic, event, payload)
        return 0
    return _fan_out(node, Broadcast(topic, event, payload, current_actor()), exclude)


async def publish_async(node: Node, topic: str, event: str, payload: Any, *, msg_id: str | None = None) -> Any:
    """:func:`publish` that returns the :class:`~ackvisor.channels.history.Entry` with any adapter.

    With Redis the offset is assigned by Redis (one atomic Lua step: next
    offset, stream append, publish), idempotent under retries with ``msg_id``;
    every node, this one included, delivers it from the Redis feed in one
    order per topic.
    """
    broker = getattr(node, "broker", None)
    if broker is not None:
        return await broker.publish(topic, event, payload, msg_id=msg_id)
    return publish(node, topic, event, payload)


def publish(node: Node, topic: str, event: str, payload: Any, *, exclude: ActorRef | None = None) -> Any:
    """Broadcast with history: the message gets the topic's next offset and epoch first.

    Returns the history :class:`~ackvisor.channels.history.Entry`.  Appending
    and delivering happen in one synchronous step, so every subscriber sees
    one order per topic, and a subscriber that read the history after
    subscribing can de-duplicate by offset.
    """
    from .history import history_of

    broker = getattr(node, "broker", None)
    if broker is not None:
        broker.publish_nowait(topic, event, payload)  # offset assigned by Redis: use publish_async to learn it
        return None
    entry = history_of(node).append(topic, event, payload)
    _fan_out(node, Broadcast(topic, event, payload, current_actor(), entry.offset, entry.epoch, exclude), None)
    return entry


def _fan_out(node: Node, message: Broadcast, exclude: ActorRef | None) -> int:
    n = 0
    for ref in node.registry.members((_GROUP, message.topic)):
        if ref is not exclude:
            ref.send(message)
            n += 1
    counters = _counters(node)
    counters.broadcasts += 1
    counters.delivered += n
    return n


def _require_actor() -> ActorRef:
    ref = current_actor()
    if ref is None:
        raise RuntimeError("subscribe/unsubscribe without ref= must be called from inside an actor")
    return ref


class PubSub(Actor):
    """The node's pubsub service actor. Query with ``call("statistics")``.

    ``adapter="local"``: subscriptions and history live in this node.
    ``adapter="redis"``: it runs a :class:`~ackvisor.brokers.redis.RedisBroker`
    (publisher, subscriber feed, presence heartbeat/reaper) and a bridge that
    delivers every publication to this node's subscribers; it sets
    ``node.broker`` and ``node.history`` so publish, history reads and
    presence go through Redis.  ``node_id`` must be unique per node (default:
    the node's name).  Redis being down never crashes this actor: the broker
    logs once per state change and reconnects by itself.
    """

    async def init(
        self,
        adapter: str = "local",
        url: str = "redis://127.0.0.1:6379/0",
        *,
        node_id: str | None = None,
        history_size: int = 10_000,
        history_max_age: float = 300.0,
        prefix: str = "ax",
        **broker_options: Any,
    ) -> None:
        self.adapter = adapter
        self.broker: Any = None
        if adapter == "local":
            return
        if adapter != "redis":
            raise ValueError(f"pubsub adapter must be 'local' or 'redis', not {adapter!r}")
        from ..brokers.redis import RedisBroker
        from ..brokers.redis_channels import NodeBridge

        broker = RedisBroker(
            url,
            node_id=node_id or self.node.name,
            prefix=prefix,
            history_size=history_size,
            history_ttl=history_max_age,
            **broker_options,
        )
        bridge = NodeBridge(self.node, broker)
        await self._cell.nursery.start(bridge.run)
        self.broker = broker
        self.node.broker = broker  # type: ignore[attr-defined]
        self.node.history = bridge.history  # type: ignore[attr-defined]

    async def terminate(self, reason: Any) -> None:
        if self.broker is not None and getattr(self.node, "broker", None) is self.broker:
            self.node.broker = None  # type: ignore[attr-defined]
            self.node.history = None  # type: ignore[attr-defined]

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "statistics":
            return self.statistics()
        raise ValueError(f"unknown pubsub request {request!r}")

    def statistics(self) -> PubSubStatistics:
        """Topics with subscribers, broadcasts made and messages delivered on this node."""
        counters = _counters(self.node)
        topics = sum(1 for g in self.node.registry.groups() if isinstance(g, tuple) and g[0] == _GROUP)
        return PubSubStatistics(topics=topics, broadcasts=counters.broadcasts, delivered=counters.delivered)
