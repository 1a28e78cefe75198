"""Key layout, the wire envelope and the value types of the Redis broker.

Keys (``prefix`` defaults to ``ax``; ``{T}`` is the topic inside a hash tag so
all of a topic's keys share one cluster slot):

========================  =======  ==============================================
``ax:{T}:m``              HASH     ``e`` epoch, ``o`` newest offset
``ax:{T}:s``              STREAM   entry id ``<offset>-0``, field ``d`` = body
``ax:{T}:i:<msg_id>``     STRING   ``<offset>|<epoch>`` of the first publish (EX idem_ttl)
``ax:{T}:c``              channel  envelopes of topic T
``ax:{T}:p``              HASH     ``<node>|<conn>|<key>`` -> presence meta JSON
``ax:nodes``              ZSET     node -> last heartbeat (Redis server clock, ms)
``ax:n:<node>:t``         SET      topics where the node has presence (reaper index)
``ax:reap:<node>``        STRING   the live node reaping a dead one (NX PX)
========================  =======  ==============================================

Envelope on a topic channel: ``ax1|<kind>|<offset>|<epoch>|<origin>|<body>``
(split with ``maxsplit=5``; binary-safe because the body is last).  Kinds:
``p`` publication (offset 0 and an empty epoch for a broadcast without
history), ``j`` / ``l`` presence diff with joins / with leaves only.  The
body of a publication is compact JSON ``{"e": event, "p": payload, "i":
msg_id, "f": from_conn, "t": unix time}``; the body of a presence diff is the
Phoenix diff ``{"joins": {...}, "leaves": {...}}``.  The idempotency key is a
string rather than the HASH of the note: half the memory, same information.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import trio
from coredis.exceptions import ConnectionError as RedisConnectionError

from ..channels.history import Entry

__all__ = [
    "Keys",
    "Publication",
    "PresenceEvent",
    "BrokerError",
    "BrokerUnavailable",
    "BrokerStatistics",
    "encode_body",
    "decode_body",
    "parse_envelope",
    "is_connection_error",
    "describe",
]


class BrokerError(Exception):
    """Redis answered with an error (a script error, out of memory, ...)."""


class BrokerUnavailable(BrokerError):
    """Redis cannot be reached (or did not answer in time).

    ``maybe_published`` is True when a publish may have been applied before the
    connection failed: retry it with the same ``msg_id`` to stay exactly-once.
    """

    def __init__(self, message: str, *, maybe_published: bool = False) -> None:
        super().__init__(message)
        self.maybe_published = maybe_published


class Keys:
    """The key and channel names for one prefix."""

    __slots__ = ("prefix", "nodes", "_chan_head", "_chan_tail")

    def __init__(self, prefix: str) -> None:
        if not prefix or any(c in prefix for c in "{}| \t\r\n"):
            raise ValueError(f"invalid key prefix {prefix!r}")
        self.prefix = prefix
        self.nodes = f"{prefix}:nodes"
        self._chan_head = f"{prefix}:{{".encode()
        self._chan_tail = b"}:c"

    def meta(self, topic: str) -> str:
        return f"{self.prefix}:{{{topic}}}:m"

    def stream(self, topic: str) -> str:
        return f"{self.prefix}:{{{topic}}}:s"

    def idem(self, topic: str, msg_id: str) -> str:
        return f"{self.prefix}:{{{topic}}}:i:{msg_id}"

    def channel(self, topic: str) -> str:
        return f"{self.prefix}:{{{topic}}}:c"

    def presence(self, topic: str) -> str:
        return f"{self.prefix}:{{{topic}}}:p"

    def node_topics(self, node: str) -> str:
        return f"{self.prefix}:n:{node}:t"

    def topic_of_channel(self, channel: bytes | str) -> str | None:
        """The topic of a channel name, or None if it is not one of ours."""
        if isinstance(channel, str):
            channel = channel.encode()
        if channel.startswith(self._chan_head) and channel.endswith(self._chan_tail):
            return channel[len(self._chan_head) : -len(self._chan_tail)].decode()
        return None


@dataclass(frozen=True, slots=True)
class Publication:
    """One message as a node's feed delivers it.

    The first six fields are those of :class:`~ackvisor.channels.history.Entry`
    (``at`` is the publisher's Unix time).  ``offset`` is 0 and ``epoch`` ""
    for a broadcast without history.  ``resync`` is set on the first message
    after continuity was broken for this node: ``"epoch"`` (the topic's history
    was lost or reset, offsets restart) or ``"trimmed"`` (messages in between
    were trimmed from the stream before this node could fill the gap); every
    subscriber must then re-sync (``recovered: false``).
    """

    topic: str
    epoch: str
    offset: int
    event: str
    payload: Any
    at: float
    origin: str = ""
    msg_id: str | None = None
    from_conn: str | None = None
    resync: str | None = None

    def entry(self) -> Entry:
        return Entry(self.topic, self.epoch, self.offset, self.event, self.payload, self.at)


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A presence change on a subscribed topic, in Phoenix's shapes.

    ``kind == "diff"``: ``joins`` / ``leaves`` are ``{key: {"metas": [meta, ...]}}``
    (push as ``presence_diff``).  ``kind == "state"``: ``state`` is the whole
    list, sent after this node's subscription was re-established (diffs may
    have been missed; push as ``presence_state``).
    """

    topic: str
    kind: str
    joins: dict[str, Any]
    leaves: dict[str, Any]
    state: dict[str, Any] | None = None
    origin: str = ""


@dataclass(frozen=True, slots=True)
class BrokerStatistics:
    """Counters of one broker (one node)."""

    node_id: str
    redis_up: bool
    topics: int
    published: int
    publish_batches: int
    publish_duplicates: int
    publish_failures: int
    publish_retries: int
    delivered: int
    dropped_duplicates: int
    gap_fills: int
    filled_from_history: int
    resyncs: int
    resubscribes: int
    presence_entries: int
    presence_diffs: int
    reaped_nodes: int
    redis_down_events: int
    callback_errors: int


def encode_body(event: str, payload: Any, msg_id: str | None, from_conn: str | None, at: float | None = None) -> bytes:
    """The JSON body of a publication (raises TypeError if the payload is not JSON-serializable)."""
    return json.dumps(
        {"e": event, "p": payload, "i": msg_id, "f": from_conn, "t": round(time.time(), 6) if at is None else at},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def decode_body(topic: str, epoch: str, offset: int, origin: str, body: bytes, resync: str | None = None) -> Publication:
    d = json.loads(body)
    return Publication(topic, epoch, offset, d["e"], d.get("p"), d.get("t") or 0.0, origin, d.get("i"), d.get("f"), resync)


def parse_envelope(data: bytes) -> tuple[bytes, int, str, str, bytes]:
    """``(kind, offset, epoch, origin, body)`` of an envelope; raises ValueError if malformed."""
    parts = data.split(b"|", 5)
    if len(parts) != 6 or parts[0] != b"ax1":
        raise ValueError(f"not an ax1 envelope: {data[:60]!r}")
    return parts[1], int(parts[2]), parts[3].decode(), parts[4].decode(), parts[5]


def is_connection_error(e: BaseException) -> bool:
    """True for 'Redis unreachable / no answer in time' (possibly inside an exception group)."""
    if isinstance(e, BaseExceptionGroup):
        return any(is_connection_error(x) for x in e.exceptions)
    return isinstance(e, (RedisConnectionError, TimeoutError, OSError, trio.BrokenResourceError, trio.ClosedResourceError))


def describe(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup) and e.exceptions:
        return describe(e.exceptions[0])
    return f"{type(e).__name__}: {e}"[:200]
