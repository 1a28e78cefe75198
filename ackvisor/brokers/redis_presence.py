"""Presence over Redis, tied to node liveness (``shared/spec/REDIS.md`` section 3.5).

* Each entry is a field ``<node>|<conn>|<key>`` of ``ax:{T}:p`` holding the
  meta JSON (with a fresh ``phx_ref``; ``phx_ref_prev`` on an update).
* A node heartbeats ONE entry (``ZADD ax:nodes <server ms> <node>``): O(nodes)
  writes, whatever the number of sockets.  Reads drop entries of nodes whose
  heartbeat is older than ``node_timeout``.
* Join / leave run one script each that changes the hash and publishes a
  Phoenix diff on the topic channel; every node subscribed to the topic gets
  it as a :class:`PresenceEvent`.
* Any live node reaps a dead one: for each topic of ``ax:n:<dead>:t`` it
  removes the dead node's entries and publishes the leaves, then forgets the
  node (unless it came back meanwhile).
* The node keeps its own entries locally, so it can re-sync them (one script
  per topic that makes the node's fields exactly the local set and publishes
  the diff) after an outage, after it was itself reaped, and at start (which
  also clears what a previous incarnation with the same node id left).
  While Redis is down, joins and leaves are recorded locally and applied on
  the re-sync: they never fail for the caller.
"""

from __future__ import annotations

import json
import math
import secrets
from typing import TYPE_CHECKING, Any

import structlog
import trio
from coredis import PureToken

from .redis_codec import PresenceEvent

if TYPE_CHECKING:
    from .redis_feed import Feed

__all__ = ["PresenceMixin"]

log = structlog.get_logger("ackvisor.redis")


class PresenceMixin:
    """Presence and the node heartbeat/reaper; mixed into :class:`~.redis.RedisBroker`."""

    def __init__(self) -> None:
        #: topic -> {field: meta JSON} of this node's own entries.
        self._local: dict[str, dict[str, str]] = {}
        self._presence_dirty = True

    # ----- API

    async def presence_join(self, topic: str, key: str, conn_id: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Track ``key`` for connection ``conn_id`` on ``topic`` (again: an update).  Returns the
        stored meta (with ``phx_ref``).  Never raises for want of Redis (applied when it is back)."""
        self_: Any = self
        if "|" in conn_id or not conn_id:
            raise ValueError(f"conn_id must be non-empty without '|': {conn_id!r}")
        field = f"{self_.node_id}|{conn_id}|{key}"
        entries = self._local.setdefault(topic, {})
        stored = dict(meta or {})
        stored["phx_ref"] = secrets.token_urlsafe(9)
        previous = entries.get(field)
        if previous is not None:
            stored["phx_ref_prev"] = json.loads(previous).get("phx_ref")
        value = json.dumps(stored, separators=(",", ":"), ensure_ascii=False)
        entries[field] = value
        f = self_._feeds.get(topic)
        if f is not None:
            f.presence_seen = True
        await self._presence_write(topic, field, value, key, index=True)
        return stored

    async def presence_leave(self, topic: str, key: str, conn_id: str) -> None:
        """Untrack ``key`` for ``conn_id`` on ``topic`` (no-op if not tracked)."""
        field = f"{self.node_id}|{conn_id}|{key}"  # type: ignore[attr-defined]
        entries = self._local.get(topic)
        if not entries or entries.pop(field, None) is None:
            return
        last = not entries
        if last:
            del self._local[topic]
        await self._presence_write(topic, field, "", key, index=False, unindex=last)

    async def presence_leave_conn(self, conn_id: str) -> None:
        """Untrack every key of ``conn_id`` on every topic (its socket closed)."""
        prefix = f"{self.node_id}|{conn_id}|"  # type: ignore[attr-defined]
        for topic in list(self._local):
            for field in [f for f in self._local.get(topic, {}) if f.startswith(prefix)]:
                await self.presence_leave(topic, field[len(prefix) :], conn_id)

    async def presence_list(self, topic: str) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Who is on ``topic`` across live nodes: ``{key: {"metas": [meta, ...]}}`` (Phoenix's
        ``presence_state``).  Raises BrokerUnavailable if Redis cannot be read."""
        b: Any = self
        raw = await b._read_plain(lambda c: c.hgetall(b.keys.presence(topic)))
        alive = {n.decode() for n in await b._read("ALIVE", [b.keys.nodes], [int(b.node_timeout * 1000)])}
        state: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for field, value in sorted(raw.items()):
            node, _, rest = field.decode().partition("|")
            if node not in alive:
                continue
            key = rest.partition("|")[2]
            state.setdefault(key, {"metas": []})["metas"].append(json.loads(value))
        return state

    def presence_local(self, topic: str) -> dict[str, dict[str, Any]]:
        """This node's own entries on ``topic``: ``{"<conn>|<key>": meta}``."""
        cut = len(self.node_id) + 1  # type: ignore[attr-defined]
        return {f[cut:]: json.loads(v) for f, v in self._local.get(topic, {}).items()}

    # ----- writing

    async def _presence_write(self, topic: str, field: str, value: str, key: str, *, index: bool, unindex: bool = False) -> None:
        b: Any = self
        if not b._running or not b._up:
            self._presence_dirty = True
            return
        try:
            if index:
                await b._wclient.sadd(b.keys.node_topics(b.node_id), [topic])
            await b._eval(
                b._wclient,
                "PRESENCE_SET",
                [b.keys.presence(topic)],
                [b.keys.channel(topic), b.node_id, field, value, key, math.ceil(b.meta_ttl)],
            )
            if unindex and topic not in self._local:
                await b._wclient.srem(b.keys.node_topics(b.node_id), [topic])
        except Exception as e:
            if not b.is_connection_error(e):
                raise
            b._mark_down(e)
            self._presence_dirty = True

    async def _presence_sync(self, topic: str, node: str, want: dict[str, str]) -> Any:
        b: Any = self
        args: list[Any] = [b.keys.channel(topic), node, math.ceil(b.meta_ttl), b.node_id]
        for f, v in want.items():
            args += [f, v]
        return await b._eval(b._wclient, "PRESENCE_SYNC", [b.keys.presence(topic)], args)

    async def _presence_resync_all(self) -> None:
        """Make Redis hold exactly this node's local entries (all topics it ever indexed)."""
        b: Any = self
        index = b.keys.node_topics(b.node_id)
        topics = {t.decode() for t in await b._wclient.smembers(index)} | set(self._local)
        for topic in sorted(topics):
            want = dict(self._local.get(topic, {}))
            if want:
                await b._wclient.sadd(index, [topic])
            await self._presence_sync(topic, b.node_id, want)
            if not want and topic not in self._local:
                await b._wclient.srem(index, [topic])

    async def _reap(self, dead: str) -> None:
        b: Any = self
        # One reaper per dead node at a time (the scripts are idempotent anyway).
        claim = f"{b.keys.prefix}:reap:{dead}"
        if not await b._wclient.set(claim, b.node_id, condition=PureToken.NX, px=max(1000, int(b.node_timeout * 1000))):
            return
        topics = sorted(t.decode() for t in await b._wclient.smembers(b.keys.node_topics(dead)))
        removed = 0
        for topic in topics:
            r = await self._presence_sync(topic, dead, {})
            removed += int(r[0])
        if await b._eval(b._wclient, "FORGET_NODE", [b.keys.nodes, b.keys.node_topics(dead)], [dead, int(b.node_timeout * 1000)]):
            b._c.reaped_nodes += 1
            log.info("redis_node_reaped", node=b.node_id, dead=dead, topics=len(topics), entries=removed)

    async def _leave_cluster(self) -> None:
        """Graceful shutdown: remove this node's entries (with leave diffs) and its heartbeat."""
        b: Any = self
        for topic in sorted(self._local):
            await self._presence_sync(topic, b.node_id, {})
        await b._eval(b._wclient, "FORGET_NODE", [b.keys.nodes, b.keys.node_topics(b.node_id)], [b.node_id, -1])

    # ----- receiving

    def _presence_diff(self, f: "Feed", origin: str, body: bytes) -> None:
        b: Any = self
        f.presence_seen = True
        b._c.presence_diffs += 1
        if b._on_presence is None:
            return
        try:
            d = json.loads(body)
            event = PresenceEvent(f.topic, "diff", d.get("joins") or {}, d.get("leaves") or {}, None, origin)
        except Exception as e:
            log.warning("redis_bad_presence_diff", node=b.node_id, topic=f.topic, error=repr(e)[:200])
            return
        self._call_presence(event)

    async def _presence_state_refresh(self, f: "Feed") -> None:
        """After a re-subscribe: diffs may have been lost, send the whole state."""
        try:
            state = await self.presence_list(f.topic)
        except Exception:
            return
        self._call_presence(PresenceEvent(f.topic, "state", {}, {}, state, ""))

    def _call_presence(self, event: PresenceEvent) -> None:
        b: Any = self
        try:
            b._on_presence(event)
        except Exception as e:
            b._c.callback_errors += 1
            log.error("redis_presence_callback_failed", node=b.node_id, topic=event.topic, error=repr(e)[:200], exc_info=e)

    # ----- heartbeat and reaper

    async def _heartbeat_loop(self) -> None:
        b: Any = self
        timeout_ms = int(b.node_timeout * 1000)
        first, failures, again = True, 0, False
        while True:
            b._wake_heartbeat = trio.Event()
            try:
                now, prev, dead = await b._eval(b._wclient, "HEARTBEAT", [b.keys.nodes], [b.node_id, timeout_ms])
                b._mark_up()
                failures = 0
                if first or self._presence_dirty:
                    await b._load_scripts()
                # Missing (forgotten by a reaper) or too old (a reaper may be at work): re-sync.
                reaped_me = int(prev) < int(now) - timeout_ms
                if first or reaped_me or self._presence_dirty or again:
                    # A reaper may still be running over this node: re-sync once more next beat.
                    again = reaped_me and not first
                    self._presence_dirty = False
                    await self._presence_resync_all()
                first = False
                for node in dead:
                    name = node.decode()
                    if name != b.node_id:
                        await self._reap(name)
                delay = b.heartbeat
            except Exception as e:
                if not b.is_connection_error(e):
                    raise
                b._mark_down(e)
                self._presence_dirty = True
                failures += 1
                delay = b._backoff(failures, cap=min(b.heartbeat, 1.0))
            with trio.move_on_after(delay):
                await b._wake_heartbeat.wait()
