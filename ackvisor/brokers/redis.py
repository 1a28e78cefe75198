"""``RedisBroker``: one node's connection to the cluster's Redis (pub/sub, history, presence).

Design (``shared/spec/REDIS.md``): every publication on a history topic goes
through one Lua script that takes the topic's next offset, appends the body
to the topic's stream and PUBLISHes the envelope on the topic's channel, so
all nodes see one order per topic.  Nothing is delivered locally before it
came back from Redis (no short-circuit), so the publishing node sees the
same order as every other node.

Tasks (all inside :meth:`RedisBroker.run`, which the node runs in its nursery
or as a :class:`~ackvisor.node.TaskActor`):

* **publisher** - drains a bounded queue, groups the batch by topic and runs
  one PUBLISH script per topic chunk, all pipelined in one round trip.  The
  write client has ``NoRetryPolicy``; every message carries an idempotency
  key (the caller's ``msg_id`` or a generated one), so the publisher can
  retry a batch whose outcome is unknown (timeout, dropped connection)
  without duplicates, until ``publish_timeout``.
* **subscriber** - ONE coredis PubSub with a capped reconnect policy, read
  with a ``get_message()`` loop (``async for`` ends silently after a
  reconnect on Trio).  Each topic has a :class:`~.redis_feed.Feed`; a second
  SUBSCRIBE ack for a topic means the connection was re-established, and the
  feed catches up from the stream before anything newer is delivered.  A
  reconcile task keeps the server-side subscriptions equal to the wanted
  set; a maintenance task retries failed gap fills and, every
  ``position_check`` seconds, fills a feed whose stream top moved while the
  feed did not (a loss with nothing published after it).  The feeds are
  touched by one task at a time (a mutex whose uncontended path never yields).
  After the last ``unsubscribe`` the feed stops delivering at once and is
  forgotten when the UNSUBSCRIBE is done; a ``subscribe`` before that keeps it.
* **heartbeat** - ``ZADD ax:nodes`` with the server clock every ``heartbeat``
  seconds; reaps nodes silent for ``node_timeout`` (their presence entries
  are removed with leave diffs); re-syncs this node's presence after an
  outage or after it was reaped itself.

Redis down: ``publish`` raises :class:`BrokerUnavailable` at once (no
unbounded queueing; a publish already queued is retried until
``publish_timeout``, then fails with ``maybe_published``; the queue is
bounded by ``max_queue``: ``publish`` waits for room, ``publish_nowait``
raises); ``read_from`` / ``position`` / ``presence_list`` raise
BrokerUnavailable; subscriptions and presence joins/leaves never fail: they
are remembered and re-applied when Redis is back; ``redis_down`` / ``redis_up`` are logged once
per state change; no task of the broker ever raises into the caller's
nursery (a crashed task is logged and restarted).
"""

from __future__ import annotations

import math
import random
from typing import Any, Callable

import coredis
import structlog
import trio
from coredis.exceptions import NoScriptError
from coredis.retry import NoRetryPolicy

from ..channels.history import Entry, Position, new_epoch
from . import redis_scripts as scripts
from .redis_codec import (
    BrokerError,
    BrokerStatistics,
    BrokerUnavailable,
    Keys,
    PresenceEvent,
    Publication,
    decode_body,
    describe,
    is_connection_error,
)
from .redis_feed import Feed, Sequencer
from .redis_presence import PresenceMixin
from .redis_publisher import PublisherMixin, _PubReq
from .redis_subscriber import SubscriberMixin, _Mutex

__all__ = ["RedisBroker"]

log = structlog.get_logger("ackvisor.redis")



class _Counters:
    def __init__(self) -> None:
        self.published = self.publish_batches = self.publish_duplicates = 0
        self.publish_failures = self.publish_retries = 0
        self.delivered = self.resubscribes = self.presence_diffs = 0
        self.reaped_nodes = self.redis_down_events = self.callback_errors = 0


class RedisBroker(SubscriberMixin, PublisherMixin, PresenceMixin):
    """One node's Redis engine; see the module docstring.  Construct, then run :meth:`run`."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        node_id: str,
        prefix: str = "ax",
        history_size: int = 10_000,
        history_ttl: float = 300.0,
        meta_ttl: float = 30 * 86400.0,
        idem_ttl: float = 120.0,
        heartbeat: float = 2.0,
        node_timeout: float = 6.0,
        max_batch: int = 512,
        max_queue: int = 10_000,
        publish_timeout: float = 5.0,
        subscribe_timeout: float = 5.0,
        recover_limit: int | None = None,
        page_size: int = 1000,
        position_check: float = 10.0,
        max_backoff: float = 0.5,
        stream_timeout: float = 2.0,
        connect_timeout: float = 1.0,
        shutdown_grace: float = 1.0,
    ) -> None:
        if not node_id or any(c in node_id for c in "|{} \t\r\n"):
            raise ValueError(f"invalid node_id {node_id!r} (no '|', braces or whitespace)")
        if history_size < 0 or not history_ttl > 0 or not meta_ttl > 0 or idem_ttl < 0:
            raise ValueError("history_size >= 0, history_ttl > 0, meta_ttl > 0 and idem_ttl >= 0 are required")
        if not 0 < heartbeat < node_timeout:
            raise ValueError("0 < heartbeat < node_timeout is required")
        self.url = url
        self.node_id = node_id
        self.keys = Keys(prefix)
        self.history_size = history_size
        self.history_ttl = history_ttl
        self.meta_ttl = meta_ttl
        self.idem_ttl = idem_ttl
        self.heartbeat = heartbeat
        self.node_timeout = node_timeout
        self.max_batch = max_batch
        self.publish_timeout = publish_timeout
        self.subscribe_timeout = subscribe_timeout
        self.recover_limit = recover_limit if recover_limit is not None else max(history_size, 1)
        self.page_size = page_size
        self.position_check = position_check
        self.max_backoff = max_backoff
        self.stream_timeout = stream_timeout
        self.connect_timeout = connect_timeout
        self.shutdown_grace = shutdown_grace

        self._shas = {name: scripts.sha1(getattr(scripts, name)) for name in scripts.__all__ if name != "sha1"}
        self._pub_send, self._pub_recv = trio.open_memory_channel[_PubReq](max_queue)
        self._feeds: dict[str, Feed] = {}
        self._by_channel: dict[bytes, Feed] = {}
        self._sequencer = Sequencer(self._fetch, self._emit, page=page_size)
        self._wake_reconcile = trio.Event()
        self._wake_heartbeat = trio.Event()
        self._feed_mutex = _Mutex()
        self._deliver: Callable[[Publication], Any] | None = None
        self._on_presence: Callable[[PresenceEvent], Any] | None = None
        self._up = True
        self._down_since = 0.0
        self._running = False
        self._stopping = False
        self._inflight: list[_PubReq] = []
        self._graceful = True
        self._stop_scope: trio.CancelScope | None = None
        self._c = _Counters()
        self._wclient: coredis.Redis[bytes] | None = None
        self._rclient: coredis.Redis[bytes] | None = None
        PresenceMixin.__init__(self)

    # =================================================================== running

    async def run(
        self,
        deliver: Callable[[Publication], Any],
        *,
        on_presence: Callable[[PresenceEvent], Any] | None = None,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the broker until cancelled or :meth:`stop` (then it returns).

        ``deliver(publication)`` is called (sync, from the subscriber task) for
        every publication of a subscribed topic, in offset order per topic;
        ``on_presence(event)`` for presence diffs / states of subscribed topics.
        Both must not block; an exception they raise is logged and counted.
        Ready (``task_status.started(self)``) once the clients are set up, even
        if Redis is down at that moment.  On cancellation the node leaves its
        presence entries and its heartbeat (bounded by ``shutdown_grace``)
        unless it was stopped with ``stop(graceful=False)``.
        """
        if self._running:
            raise RuntimeError("RedisBroker.run is already running")
        self._running = True
        self._deliver, self._on_presence = deliver, on_presence
        try:
            async with trio.open_nursery() as outer:
                done = trio.Event()
                work = trio.CancelScope()
                body = trio.CancelScope(shield=True)
                await outer.start(self._body, body, work, done)
                task_status.started(self)
                try:
                    await done.wait()  # stop() ends the body; cancellation lands here
                finally:
                    # Cancelled: stop the work tasks, then leave gracefully with live clients.
                    work.cancel()
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(self.shutdown_grace + 1.0):
                            await done.wait()
                    body.cancel()
        finally:
            self._running = False

    async def _body(self, body: trio.CancelScope, work: trio.CancelScope, done: trio.Event, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with body:
                common = dict(
                    decode_responses=False,
                    retry_policy=NoRetryPolicy(),
                    stream_timeout=self.stream_timeout,
                    connect_timeout=self.connect_timeout,
                )
                self._wclient = coredis.Redis.from_url(self.url, client_name=f"{self.keys.prefix}:{self.node_id}:w", **common)
                self._rclient = coredis.Redis.from_url(self.url, client_name=f"{self.keys.prefix}:{self.node_id}:r", **common)
                async with self._wclient, self._rclient:
                    with work:
                        async with trio.open_nursery() as n:
                            self._stop_scope = work
                            n.start_soon(self._guard, "publisher", self._publisher)
                            n.start_soon(self._guard, "subscriber", self._subscriber)
                            n.start_soon(self._guard, "heartbeat", self._heartbeat_loop)
                            task_status.started()
                    self._stopping = True
                    self._fail([r for r in self._inflight if not r.done.is_set()], BrokerUnavailable("the Redis broker stopped", maybe_published=True))
                    if self._graceful:
                        with trio.move_on_after(self.shutdown_grace):
                            try:
                                await self._leave_cluster()
                            except Exception as e:
                                log.info("redis_leave_failed", node=self.node_id, error=describe(e))
                    self._fail_queued(BrokerUnavailable("the Redis broker stopped"))
        finally:
            done.set()

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the broker's tasks (``graceful=False`` simulates a crash: no presence leave, the
        heartbeat just stops, other nodes reap this one after ``node_timeout``)."""
        self._graceful = graceful
        if self._stop_scope is not None:
            self._stop_scope.cancel()

    async def _guard(self, name: str, fn: Callable[[], Any]) -> None:
        """Run a task forever: a crash is logged and the task restarted (never raised)."""
        failures = 0
        while True:
            try:
                await fn()
                return
            except Exception as e:
                failures += 1
                if is_connection_error(e):
                    self._mark_down(e)
                else:
                    log.error("redis_broker_task_crashed", node=self.node_id, task=name, error=describe(e), exc_info=e)
                await trio.sleep(self._backoff(failures))

    def _backoff(self, attempt: int, cap: float | None = None) -> float:
        cap = self.max_backoff if cap is None else cap
        return min(0.05 * 2 ** min(attempt, 10), cap) * (0.5 + random.random() / 2)

    # ----- Redis state

    @property
    def redis_up(self) -> bool:
        """False after an operation failed for want of Redis, until one succeeds again."""
        return self._up

    def _mark_down(self, error: BaseException) -> None:
        if self._up:
            self._up = False
            self._down_since = trio.current_time()
            self._c.redis_down_events += 1
            log.warning("redis_down", node=self.node_id, error=describe(error))
            self._wake_heartbeat.set()  # probe soon: a transient failure should not keep us "down"

    def _mark_up(self) -> None:
        if not self._up:
            self._up = True
            log.info("redis_up", node=self.node_id, down_for=round(trio.current_time() - self._down_since, 3))
            self._presence_dirty = True
            self._wake_heartbeat.set()

    # ----- scripts

    async def _load_scripts(self) -> None:
        """SCRIPT LOAD every script (at start and after an outage: a restarted Redis forgot them)."""
        assert self._wclient is not None
        async with self._wclient.pipeline(transaction=False, timeout=self.stream_timeout) as pipe:
            for name in self._shas:
                pipe.script_load(getattr(scripts, name))

    async def _eval(self, client: Any, name: str, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await client.evalsha(self._shas[name], keys=keys, args=args)
        except NoScriptError:
            await client.script_load(getattr(scripts, name))
            return await client.evalsha(self._shas[name], keys=keys, args=args)

    async def _pipeline(self, client: Any, calls: list[tuple[str, list[Any], list[Any]]]) -> list[Any]:
        """Run script calls in one round trip; results in order (an error result is an exception
        instance).  Raises on a connection-level failure.  NOSCRIPT: load the scripts, re-run the
        calls that got it (they did not run)."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            async with client.pipeline(transaction=False, raise_on_error=False, timeout=self.stream_timeout) as pipe:
                for i in todo:
                    name, keys, args = calls[i]
                    pipe.evalsha(self._shas[name], keys=keys, args=args)
            out = pipe.results or ()
            missing = []
            for i, r in zip(todo, out):
                if isinstance(r, NoScriptError) and attempt == 0:
                    missing.append(i)
                elif isinstance(r, BaseException) and is_connection_error(r):
                    raise r
                else:
                    results[i] = r
            if not missing:
                break
            for name in {calls[i][0] for i in missing}:
                await client.script_load(getattr(scripts, name))
            todo = missing
        return results

    is_connection_error = staticmethod(is_connection_error)

    async def _read(self, name: str, keys: list[Any], args: list[Any]) -> Any:
        """A read-only (or idempotent) script call with one retry; marks Redis up/down."""
        return await self._read_plain(lambda c: self._eval(c, name, keys, args))

    async def _read_plain(self, call: Callable[[Any], Any]) -> Any:
        """``await call(read_client)`` with one retry; marks Redis up/down."""
        if self._rclient is None:
            raise BrokerUnavailable("the Redis broker is not running")
        for attempt in range(2):
            try:
                r = await call(self._rclient)
                self._mark_up()
                return r
            except Exception as e:
                if not is_connection_error(e):
                    raise BrokerError(describe(e)) from e
                self._mark_down(e)
                if attempt:
                    raise BrokerUnavailable(f"Redis unavailable: {describe(e)}") from e
                await trio.sleep(0.05)

    # =================================================================== history

    async def _history(self, topic: str, since: int, limit: int) -> tuple[int, str, list[tuple[int, bytes]]]:
        keys = self.keys
        r = await self._read(
            "HISTORY", [keys.meta(topic), keys.stream(topic)], [since, limit, new_epoch()[:8], max(1, math.ceil(self.meta_ttl))]
        )
        top, epoch, raw = r
        entries = [(int(eid.split(b"-", 1)[0]), fields[1]) for eid, fields in raw]
        return int(top), epoch.decode(), entries

    _fetch = _history

    async def position(self, topic: str) -> Position:
        """The topic's epoch and newest offset (creates the epoch if the topic is new)."""
        top, epoch, _ = await self._history(topic, 0, 0)
        return Position(epoch, top)

    async def read_from(self, topic: str, epoch: str, offset: int, limit: int | None = None) -> list[Entry] | None:
        """Publications ``offset+1 ..`` of ``epoch`` in order: the first ``limit`` of them, or all
        up to the topic's top at the time of the call; ``[]`` if ``offset`` is the top.  None if
        they cannot be given (other epoch, ``offset+1`` trimmed or expired, offset beyond the
        top, more than ``recover_limit`` behind).  Same contract as
        :meth:`ackvisor.channels.history.MemoryHistory.read_from`.  Raises BrokerUnavailable."""
        if offset < 0:
            return None
        out: list[Entry] = []
        since, top0 = offset, -1
        while True:
            want = self.page_size if limit is None else min(self.page_size, limit - len(out))
            top, ep, entries = await self._history(topic, since, max(want, 1))
            if ep != epoch:
                return None
            if top0 < 0:
                top0 = top
                if offset > top or top - offset > self.recover_limit:
                    return None
                if offset == top:
                    return []
            for off, body in entries:
                if off > top0 or (limit is not None and len(out) >= limit):
                    break
                if off != since + 1:
                    return None  # trimmed
                out.append(decode_body(topic, ep, off, "", body).entry())
                since = off
            if since >= top0 or (limit is not None and len(out) >= limit):
                return out
            if len(entries) < want:
                return None  # the stream ends before the top: trimmed / expired

    # =================================================================== statistics

    def statistics(self) -> BrokerStatistics:
        """A frozen snapshot of the counters."""
        c, s = self._c, self._sequencer
        return BrokerStatistics(
            node_id=self.node_id,
            redis_up=self._up,
            topics=sum(1 for f in self._feeds.values() if f.refs > 0),
            published=c.published,
            publish_batches=c.publish_batches,
            publish_duplicates=c.publish_duplicates,
            publish_failures=c.publish_failures,
            publish_retries=c.publish_retries,
            delivered=c.delivered,
            dropped_duplicates=s.dropped_duplicates,
            gap_fills=s.gap_fills,
            filled_from_history=s.filled,
            resyncs=s.resyncs,
            resubscribes=c.resubscribes,
            presence_entries=sum(len(v) for v in self._local.values()),
            presence_diffs=c.presence_diffs,
            reaped_nodes=c.reaped_nodes,
            redis_down_events=c.redis_down_events,
            callback_errors=c.callback_errors,
        )
