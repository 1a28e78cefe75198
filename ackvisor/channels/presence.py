"""Presence: who is joined on a topic, per key with metas, in Phoenix's wire format.

``await track(node, topic, key, conn_id, meta)`` records one presence (a
channel does it through :meth:`Channel.track`, which also pushes the current
``presence_state`` to its client).  Every change is broadcast on the topic as
``presence_diff {"joins": {key: {"metas": [...]}}, "leaves": {...}}``, which a
channel's default ``handle_out`` forwards to its client, so phoenix.js's
``Presence`` works unmodified.  Every meta carries a unique ``phx_ref``.

With the local adapter the table lives in the node; with the Redis adapter
(``node.broker``) it lives in Redis, spans all nodes, and a node that stops
heartbeating is reaped by the others, which announce its leaves.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..node import Node
from . import pubsub

__all__ = ["track", "untrack", "list_presences"]

Presences = dict[str, dict[str, list[dict[str, Any]]]]


def _table(node: Node) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    table = getattr(node, "_presence", None)
    if table is None:
        table = {}
        node._presence = table  # type: ignore[attr-defined]
    return table


async def track(node: Node, topic: str, key: str, conn_id: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record (or update) ``key``'s presence for connection ``conn_id`` on ``topic``; returns the stored meta."""
    broker = getattr(node, "broker", None)
    if broker is not None:
        return await broker.presence_join(topic, key, conn_id, meta)
    entries = _table(node).setdefault(topic, {}).setdefault(key, {})
    stored = {**(meta or {}), "phx_ref": secrets.token_urlsafe(9)}
    previous = entries.get(conn_id)
    leaves: Presences = {}
    if previous is not None:
        stored["phx_ref_prev"] = previous["phx_ref"]
        leaves = {key: {"metas": [previous]}}
    entries[conn_id] = stored
    pubsub.broadcast(node, topic, "presence_diff", {"joins": {key: {"metas": [stored]}}, "leaves": leaves})
    return stored


async def untrack(node: Node, topic: str, key: str, conn_id: str) -> None:
    """Remove ``key``'s presence for ``conn_id`` on ``topic`` and announce the leave."""
    broker = getattr(node, "broker", None)
    if broker is not None:
        await broker.presence_leave(topic, key, conn_id)
        return
    topics = _table(node)
    entries = topics.get(topic, {}).get(key)
    if not entries or conn_id not in entries:
        return
    meta = entries.pop(conn_id)
    if not entries:
        del topics[topic][key]
        if not topics[topic]:
            del topics[topic]
    pubsub.broadcast(node, topic, "presence_diff", {"joins": {}, "leaves": {key: {"metas": [meta]}}})


async def list_presences(node: Node, topic: str) -> Presences:
    """``{key: {"metas": [...]}}`` for everyone present on ``topic`` (every node with Redis)."""
    broker = getattr(node, "broker", None)
    if broker is not None:
        return await broker.presence_list(topic)
    return {key: {"metas": list(conns.values())} for key, conns in _table(node).get(topic, {}).items()}
