"""``ClientStatistics``: the frozen snapshot :meth:`PhoenixClient.statistics` returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientStatistics"]


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Snapshot returned by :meth:`PhoenixClient.statistics`."""

    connects: int
    reconnects: int
    connect_errors: int
    closes: int
    connected: bool
    frames_in: int
    frames_out: int
    messages_in: int
    decode_errors: int
    stale_dropped: int
    unrouted: int
    acks_sent: int
    ack_errors: int
    heartbeats_sent: int
    heartbeat_timeouts: int
    joins: int
    join_errors: int
    channel_errors: int
    channel_closes: int
    channels: int
    pending_replies: int
    last_heartbeat_rtt: float | None
