"""The subscribe path of the Redis broker: ONE PubSub connection per node, one feed per topic.

* ``subscribe`` / ``unsubscribe`` are sync and reference-counted; the
  reconcile task makes the server-side subscriptions equal to the wanted
  topics (SUBSCRIBE in batches of 512; a subscription that was not
  acknowledged in time is simply sent again).
* The consume task reads with ``get_message()`` (``async for`` ends silently
  after a reconnect on Trio) and hands publications to the topic's
  :class:`~.redis_feed.Feed` (in order, gaps filled from the stream).
* coredis has no reconnect hook: a SUBSCRIBE acknowledgement for a topic
  that was acknowledged before means the connection was re-established (or
  the PubSub was re-created), so the feed catches up from the stream and,
  if presence was seen on the topic, the whole presence state is re-sent.
* The first acknowledgement anchors the feed at the topic's position
  (``ensure_subscribed`` returns it); everything published after it is
  delivered.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import RedisError
from coredis.retry import CompositeRetryPolicy, ConstantRetryPolicy, ExponentialBackoffRetryPolicy

from ..channels.history import Position, new_epoch
from .redis_codec import BrokerUnavailable, decode_body, describe, is_connection_error, parse_envelope
from .redis_feed import Feed

__all__ = ["SubscriberMixin"]

log = structlog.get_logger("ackvisor.redis")

_SUB_BATCH = 512  # channels per SUBSCRIBE


class _Mutex:
    """A lock whose uncontended acquire does not yield (trio.Lock checkpoints twice): the feeds'
    hot path takes it once per message."""

    __slots__ = ("busy", "_free")

    def __init__(self) -> None:
        self.busy = False
        self._free = trio.Event()

    async def acquire(self) -> None:
        while self.busy:
            await self._free.wait()
        self.busy = True

    def release(self) -> None:
        self.busy = False
        self._free.set()
        self._free = trio.Event()


class SubscriberMixin:
    """Subscriptions and feeds; mixed into :class:`~.redis.RedisBroker`."""

    _feeds: dict[str, Feed]
    _by_channel: dict[bytes, Feed]
    _sequencer: Any
    _feed_mutex: _Mutex
    _wake_reconcile: trio.Event
    _rclient: Any
    _c: Any
    _deliver: Any
    _on_presence: Any
    keys: Any
    node_id: str
    subscribe_timeout: float
    position_check: float
    max_backoff: float
    meta_ttl: float


    def subscribe(self, topic: str) -> None:
        """Reference-counted subscription of this node to ``topic`` (sync; the subscriber task
        sends SUBSCRIBE).  Await :meth:`ensure_subscribed` before reading history."""
        f = self._feeds.get(topic)
        if f is None:
            channel = self.keys.channel(topic).encode()
            f = self._feeds[topic] = Feed(topic, channel)
            self._by_channel[channel] = f
            self._wake_reconcile.set()
        elif f.refs == 0:
            self._wake_reconcile.set()  # it was being dropped: keep it (and its position)
        f.refs += 1

    def unsubscribe(self, topic: str) -> None:
        """Drop one reference; after the last one the subscriber task UNSUBSCRIBEs (sync).  The feed
        is forgotten once the UNSUBSCRIBE is done (a quick re-subscribe keeps its position)."""
        f = self._feeds.get(topic)
        if f is None or f.refs <= 0:
            return
        f.refs -= 1
        if f.refs == 0:
            self._wake_reconcile.set()

    async def ensure_subscribed(self, topic: str, *, timeout: float | None = None) -> Position:
        """Wait until the SUBSCRIBE for ``topic`` was acknowledged and the feed anchored; returns
        the feed's position (epoch, newest offset delivered or known at subscription time).
        Everything published after it is delivered.  Raises BrokerUnavailable on timeout."""
        f = self._feeds.get(topic)
        if f is None or f.refs <= 0:
            raise RuntimeError(f"subscribe({topic!r}) first")
        with trio.move_on_after(self.subscribe_timeout if timeout is None else timeout):
            await f.ready.wait()
            return Position(f.epoch, f.last or 0)
        raise BrokerUnavailable(f"no SUBSCRIBE acknowledgement for {topic!r}")

    def subscribed(self) -> list[str]:
        """Topics this node is subscribed to."""
        return [t for t, f in self._feeds.items() if f.refs > 0]

    async def _subscriber(self) -> None:
        assert self._rclient is not None
        policy = CompositeRetryPolicy(
            ExponentialBackoffRetryPolicy((RedisConnectionError,), retries=None, base_delay=0.05, max_delay=self.max_backoff, jitter=True),
            ConstantRetryPolicy((TimeoutError,), retries=2, delay=0.1),
        )
        failures = 0
        while True:
            try:
                async with self._rclient.pubsub(
                    retry_policy=policy, ignore_subscribe_messages=False, subscription_timeout=2.0, max_idle_seconds=5
                ) as ps:
                    failures = 0
                    async with trio.open_nursery() as n:
                        n.start_soon(self._reconcile, ps)
                        n.start_soon(self._maintenance)
                        await self._consume(ps)
            except Exception as e:
                failures += 1
                if is_connection_error(e):
                    self._mark_down(e)
                else:
                    log.warning("redis_subscriber_restarting", node=self.node_id, error=describe(e))
                await trio.sleep(self._backoff(failures))

    async def _reconcile(self, ps: Any) -> None:
        """Keep the server-side subscriptions equal to the wanted topics."""
        failures = 0
        while True:
            self._wake_reconcile = trio.Event()
            want = {f.channel for f in self._feeds.values() if f.refs > 0}
            have = {c if isinstance(c, bytes) else c.encode() for c in ps.channels}
            try:
                add = sorted(want - have)
                for i in range(0, len(add), _SUB_BATCH):
                    await ps.subscribe(*add[i : i + _SUB_BATCH])
                drop = sorted(have - want)
                for i in range(0, len(drop), _SUB_BATCH):
                    await ps.unsubscribe(*drop[i : i + _SUB_BATCH])
                failures = 0
                self._forget_dropped_feeds(ps)
            except Exception as e:  # not acknowledged in time / connection gone: retry
                if not (is_connection_error(e) or isinstance(e, RedisError)):
                    raise
                failures += 1
                await trio.sleep(self._backoff(failures))
                continue
            with trio.move_on_after(1.0):
                await self._wake_reconcile.wait()

    def _forget_dropped_feeds(self, ps: Any) -> None:
        have = {c if isinstance(c, bytes) else c.encode() for c in ps.channels}
        for topic, f in list(self._feeds.items()):
            if f.refs <= 0 and f.channel not in have:
                del self._feeds[topic]
                self._by_channel.pop(f.channel, None)
                self._sequencer.troubled.discard(f)

    async def _consume(self, ps: Any) -> None:
        """The get_message() loop (never ``async for``: it ends silently after a reconnect)."""
        mutex = self._feed_mutex
        while True:
            m = await ps.get_message()
            if m is None:
                continue
            kind = m["type"]
            if kind == "message" or kind == "subscribe":
                await mutex.acquire()
                try:
                    if kind == "message":
                        await self._on_message(m["channel"], m["data"])
                    else:
                        await self._on_ack(m["channel"])
                finally:
                    mutex.release()

    async def _maintenance(self) -> None:
        """Retry failed fills/anchors and run the position check, never while a message is being
        handled (the mutex keeps one task at a time on the feeds)."""
        next_check = trio.current_time() + self.position_check
        while True:
            await trio.sleep(0.25)
            await self._feed_mutex.acquire()
            try:
                await self._maintain()
                if trio.current_time() >= next_check:
                    next_check = trio.current_time() + self.position_check
                    await self._check_positions()
            finally:
                self._feed_mutex.release()

    async def _on_message(self, channel: Any, data: Any) -> None:
        if isinstance(channel, str):
            channel = channel.encode()
        f = self._by_channel.get(channel)
        if f is None:
            return  # unsubscribed meanwhile
        try:
            kind, offset, epoch, origin, body = parse_envelope(data if isinstance(data, bytes) else data.encode())
        except ValueError as e:
            log.warning("redis_bad_envelope", node=self.node_id, topic=f.topic, error=str(e))
            return
        if kind == b"p":
            if offset == 0:
                self._emit(f, 0, origin, body, None, epoch="")
            else:
                await self._sequencer.offer(f, offset, epoch, origin, body)
        elif kind in (b"j", b"l"):
            self._presence_diff(f, origin, body)

    def _emit(self, f: Feed, offset: int, origin: str, body: bytes, resync: str | None, *, epoch: str | None = None) -> None:
        if f.refs <= 0:
            return  # being dropped: nobody on this node wants it
        try:
            p = decode_body(f.topic, f.epoch if epoch is None else epoch, offset, origin, body, resync)
        except Exception as e:
            log.warning("redis_bad_body", node=self.node_id, topic=f.topic, offset=offset, error=describe(e))
            return
        self._c.delivered += 1
        try:
            self._deliver(p)  # type: ignore[misc]
        except Exception as e:
            self._c.callback_errors += 1
            log.error("redis_deliver_callback_failed", node=self.node_id, topic=f.topic, error=describe(e), exc_info=e)

    async def _on_ack(self, channel: Any) -> None:
        if isinstance(channel, str):
            channel = channel.encode()
        f = self._by_channel.get(channel)
        if f is None:
            return
        if f.acked:  # a re-sent SUBSCRIBE: the connection was re-established
            self._c.resubscribes += 1
            await self._sequencer.fill(f)
            if f.presence_seen and self._on_presence is not None:
                await self._presence_state_refresh(f)
        else:
            f.acked = True
            await self._sequencer.anchor(f)
        if f.last is not None:
            f.ready.set()

    async def _maintain(self) -> None:
        now = trio.current_time()
        for f in list(self._sequencer.troubled):
            if self._feeds.get(f.topic) is not f:
                self._sequencer.troubled.discard(f)
                continue
            if now >= f.retry_at:
                if f.last is None:
                    if f.acked and await self._sequencer.anchor(f):
                        f.ready.set()
                else:
                    await self._sequencer.fill(f)

    async def _check_positions(self) -> None:
        """Catch a loss nothing else revealed (a pub/sub message lost and nothing published since):
        a feed whose top moved while its ``last`` did not since the previous check is filled."""
        feeds = [f for f in self._feeds.values() if f.refs > 0 and f.last is not None and not f.pending and f.acked]
        if not feeds or self._rclient is None:
            return
        keys, mttl = self.keys, max(1, math.ceil(self.meta_ttl))
        calls = [("HISTORY", [keys.meta(f.topic), keys.stream(f.topic)], [0, 0, new_epoch()[:8], mttl]) for f in feeds]
        results: list[Any] = []
        try:
            for i in range(0, len(calls), 1000):
                results += await self._pipeline(self._rclient, calls[i : i + 1000])
        except Exception as e:
            if is_connection_error(e):
                self._mark_down(e)
                return
            raise
        for f, r in zip(feeds, results):
            if isinstance(r, BaseException) or self._feeds.get(f.topic) is not f:
                continue
            top, epoch = int(r[0]), r[1].decode()
            stuck = f.checked_last == f.last
            f.checked_last = f.last
            if (epoch != f.epoch and epoch not in f.retired) or (stuck and top > (f.last or 0)):
                await self._sequencer.fill(f)
