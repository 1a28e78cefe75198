"""The publish path of the Redis broker: one task per node batches, pipelines and retries.

A publish is queued (bounded), then the publisher task drains up to
``max_batch`` requests, groups them by topic, and runs one PUBLISH script per
topic chunk of up to 128 messages - all in ONE pipelined round trip.  The
write client has no automatic retry: a batch whose outcome is unknown
(timeout, dropped connection) is retried by this task with the same
idempotency keys, so a message applied by the first attempt is answered from
its key and never published twice.  Broadcasts without history carry no key
and are not retried (they fail with ``maybe_published``).
"""

from __future__ import annotations

import math
import secrets
import time
from collections import defaultdict
from typing import Any

import structlog
import trio
from coredis.exceptions import NoScriptError

from ..channels.history import Entry, new_epoch
from . import redis_scripts as scripts
from .redis_codec import BrokerError, BrokerUnavailable, describe, encode_body, is_connection_error

__all__ = ["PublisherMixin"]

log = structlog.get_logger("ackvisor.redis")

_CHUNK = 128  # messages per PUBLISH script call


class _ScriptsFlushed(Exception):
    """NOSCRIPT in a batch (Redis restarted or SCRIPT FLUSH): loaded again; nothing ran, re-run."""


class _PubReq:
    __slots__ = ("topic", "event", "payload", "body", "msg_id", "history", "at", "done", "entry", "error")

    def __init__(self, topic: str, event: str, payload: Any, body: bytes, msg_id: str | None, history: bool, at: float) -> None:
        self.at = at
        self.topic = topic
        self.event = event
        self.payload = payload
        self.body = body
        self.msg_id = msg_id
        self.history = history
        self.done = trio.Event()
        self.entry: Entry | None = None
        self.error: BaseException | None = None


class PublisherMixin:
    """Publishing; mixed into :class:`~.redis.RedisBroker` (uses its clients, keys and counters)."""

    _pub_send: Any
    _pub_recv: Any
    _inflight: list[_PubReq]
    _c: Any
    _wclient: Any
    _shas: dict[str, str]
    keys: Any
    node_id: str
    history_size: int
    history_ttl: float
    meta_ttl: float
    idem_ttl: float
    max_batch: int
    publish_timeout: float
    stream_timeout: float
    connect_timeout: float
    _running: bool
    _stopping: bool
    _up: bool


    async def publish(self, topic: str, event: str, payload: Any, *, msg_id: str | None = None, from_conn: str | None = None) -> Entry:
        """Publish with history: returns the Entry with the assigned offset and epoch once applied.

        Idempotent: publishing the same ``msg_id`` on the same topic again
        (within ``idem_ttl``) returns the first publication's offset and epoch
        and publishes nothing.  Raises :class:`BrokerUnavailable` if Redis is
        known to be down or the publish could not be confirmed within
        ``publish_timeout`` (``maybe_published``: retry with the same msg_id),
        :class:`BrokerError` if Redis refused it, TypeError for a payload that
        is not JSON-serializable.
        """
        req = self._request(topic, event, payload, msg_id, from_conn, history=True)
        await self._enqueue(req)
        if req.error is not None:
            raise req.error
        assert req.entry is not None
        return req.entry

    def publish_nowait(self, topic: str, event: str, payload: Any, *, msg_id: str | None = None, from_conn: str | None = None) -> None:
        """Queue a publication (sync, fire-and-forget; for callers that cannot await).

        Raises :class:`BrokerUnavailable` if Redis is down or the queue is full;
        a later failure is counted in ``publish_failures`` (and logged as ``redis_down``).
        """
        req = self._request(topic, event, payload, msg_id, from_conn, history=True)
        try:
            self._pub_send.send_nowait(req)
        except trio.WouldBlock:
            raise BrokerUnavailable("the Redis publish queue is full") from None

    def broadcast_nowait(self, topic: str, event: str, payload: Any, *, from_conn: str | None = None) -> None:
        """:meth:`broadcast`, queued and forgotten (sync); raises BrokerUnavailable if Redis is down
        or the queue is full."""
        req = self._request(topic, event, payload, None, from_conn, history=False)
        try:
            self._pub_send.send_nowait(req)
        except trio.WouldBlock:
            raise BrokerUnavailable("the Redis publish queue is full") from None

    async def broadcast(self, topic: str, event: str, payload: Any, *, from_conn: str | None = None) -> Entry:
        """Publish WITHOUT history (offset 0, no idempotency): a plain cross-node broadcast."""
        req = self._request(topic, event, payload, None, from_conn, history=False)
        await self._enqueue(req)
        if req.error is not None:
            raise req.error
        assert req.entry is not None
        return req.entry

    async def _enqueue(self, req: _PubReq) -> None:
        try:
            self._pub_send.send_nowait(req)  # no extra trip through the scheduler
        except trio.WouldBlock:
            await self._pub_send.send(req)  # the queue is full: wait for room (backpressure)
        await req.done.wait()

    def _request(self, topic: str, event: str, payload: Any, msg_id: str | None, from_conn: str | None, *, history: bool) -> _PubReq:
        if not self._running or self._stopping:
            raise BrokerUnavailable("the Redis broker is not running")
        if not self._up:
            raise BrokerUnavailable("Redis is down")
        if history and msg_id is None and self.idem_ttl > 0:
            msg_id = secrets.token_hex(8)
        at = round(time.time(), 6)
        return _PubReq(topic, event, payload, encode_body(event, payload, msg_id, from_conn, at), msg_id, history, at)

    async def _publisher(self) -> None:
        recv = self._pub_recv
        while True:
            batch = [await recv.receive()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            self._inflight = batch
            if not self._up and not await self._probe():
                self._fail(batch, BrokerUnavailable("Redis is down"))
                continue
            await self._run_batch(batch)
            self._inflight = []

    async def _probe(self) -> bool:
        """Redis was down: one quick PING before failing a whole batch."""
        assert self._wclient is not None
        try:
            with trio.fail_after(self.connect_timeout):
                await self._wclient.ping()
        except Exception:
            return False
        self._mark_up()
        return True

    def _fail(self, batch: list[_PubReq], error: BaseException) -> None:
        for req in batch:
            if not req.done.is_set():
                self._c.publish_failures += 1
                req.error = error
                req.done.set()

    def _fail_queued(self, error: BaseException) -> None:
        while True:
            try:
                req = self._pub_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return
            self._fail([req], error)

    async def _run_batch(self, batch: list[_PubReq]) -> None:
        started = trio.current_time()
        attempt = 0
        while True:
            try:
                await self._send_batch(batch)
                self._mark_up()
                self._c.publish_batches += 1
                return
            except _ScriptsFlushed:
                if attempt > 3:
                    self._fail(batch, BrokerError("NOSCRIPT after loading the script"))
                    return
                attempt += 1
                continue
            except Exception as e:
                if not is_connection_error(e):
                    log.error("redis_publish_failed", node=self.node_id, error=describe(e))
                    self._fail(batch, BrokerError(describe(e)))
                    return
                self._mark_down(e)
                attempt += 1
                delay = self._backoff(attempt)
                error = BrokerUnavailable(f"Redis unavailable: {describe(e)}", maybe_published=True)
                # Only what carries an idempotency key is retried (a plain broadcast could double).
                self._fail([r for r in batch if not r.done.is_set() and r.msg_id is None], error)
                batch = [r for r in batch if not r.done.is_set()]
                if not batch:
                    return
                if trio.current_time() + delay - started > self.publish_timeout:
                    self._fail(batch, error)
                    return
                self._c.publish_retries += 1
                await trio.sleep(delay)

    async def _send_batch(self, batch: list[_PubReq]) -> None:
        keys = self.keys
        by_topic: dict[str, list[_PubReq]] = defaultdict(list)
        plain: list[_PubReq] = []
        for req in batch:
            if req.done.is_set():
                continue  # resolved in an earlier attempt
            (by_topic[req.topic] if req.history else plain).append(req)
        calls: list[tuple[str, list[Any], list[Any]]] = []
        groups: list[list[_PubReq]] = []
        maxlen = str(self.history_size)
        ttl, mttl, ittl = str(max(1, math.ceil(self.history_ttl))), str(max(1, math.ceil(self.meta_ttl))), str(max(1, math.ceil(self.idem_ttl)))
        for topic, reqs in by_topic.items():
            for i in range(0, len(reqs), _CHUNK):
                chunk = reqs[i : i + _CHUNK]
                use_idem = self.idem_ttl > 0 and all(r.msg_id is not None for r in chunk)
                k = [keys.meta(topic), keys.stream(topic)]
                if use_idem:
                    k += [keys.idem(topic, r.msg_id) for r in chunk]  # type: ignore[arg-type]
                a: list[Any] = [maxlen, ttl, mttl, new_epoch()[:8], keys.channel(topic), self.node_id, ittl]
                a += [r.body for r in chunk]
                calls.append(("PUBLISH", k, a))
                groups.append(chunk)
        assert self._wclient is not None
        head = f"ax1|p|0||{self.node_id}|".encode()
        async with self._wclient.pipeline(transaction=False, raise_on_error=False, timeout=self.stream_timeout) as pipe:
            for name, k, a in calls:
                pipe.evalsha(self._shas[name], keys=k, args=a)
            for req in plain:
                pipe.publish(keys.channel(req.topic), head + req.body)
        results = list(pipe.results or ())
        if any(isinstance(r, NoScriptError) for r in results[: len(calls)]):
            await self._wclient.script_load(scripts.PUBLISH)
            raise _ScriptsFlushed()
        for r in results:
            if isinstance(r, BaseException) and is_connection_error(r):
                raise r
        for chunk, r in zip(groups, results):
            if isinstance(r, BaseException):
                self._fail(chunk, BrokerError(describe(r)))
                continue
            epoch = r[0].decode()
            for req, res in zip(chunk, r[1:]):
                if isinstance(res, bytes):  # a duplicate: "<offset>|<epoch>"
                    off, _, ep = res.partition(b"|")
                    req.entry = Entry(req.topic, ep.decode(), int(off), req.event, req.payload, req.at)
                    self._c.publish_duplicates += 1
                else:
                    req.entry = Entry(req.topic, epoch, int(res), req.event, req.payload, req.at)
                    self._c.published += 1
                req.done.set()
        for req, r in zip(plain, results[len(calls) :]):
            if isinstance(r, BaseException):
                self._fail([req], BrokerError(describe(r)))
            else:
                req.entry = Entry(req.topic, "", 0, req.event, req.payload, req.at)
                self._c.published += 1
                req.done.set()
