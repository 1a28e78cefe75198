"""Per-topic offsets and a bounded history, so a client can resume after a let-it-crash reconnect.

Every message published on a topic through :func:`publish` gets the topic's
next **offset** (1, 2, 3 ... dense and increasing) and the topic's **epoch**
(an id that changes whenever the topic's history is lost or reset, e.g. on a
node restart).  The history keeps the last ``size`` messages younger than
``max_age`` seconds.

A client that saw everything up to ``(epoch, offset)`` can get the rest with
:meth:`History.read_from`: it returns the messages ``offset+1 ..`` in order
if the history still holds all of them for that epoch, or ``None`` when it
cannot (trimmed, too old, other epoch) - the caller must then send a fresh
snapshot (``recovered: false``).

The interface (``append``, ``read_from``, ``position``) is small on purpose:
a Redis implementation (streams + a Lua publish) provides the same one.  The
channel server awaits ``read_from`` and ``position`` when they return an
awaitable, and reads the history in batches (``limit``), so an async backend
(XRANGE with COUNT) plugs in; ``append`` is called synchronously by
:func:`~ackvisor.channels.pubsub.publish`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from ..node import Node

__all__ = ["Entry", "History", "MemoryHistory", "Position", "HistoryStatistics", "history_of", "new_epoch"]


def new_epoch() -> str:
    """A fresh epoch id (random, short)."""
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class Entry:
    """One published message: its topic position and content."""

    topic: str
    epoch: str
    offset: int
    event: str
    payload: Any
    at: float


@dataclass(frozen=True, slots=True)
class Position:
    """Where a topic is: its epoch and the offset of its newest message (0 = none yet)."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class HistoryStatistics:
    """Topics held, messages held, messages appended and trimmed."""

    topics: int
    messages: int
    appended: int
    trimmed: int


class History(Protocol):
    """What the channels layer needs from a history backend."""

    def append(self, topic: str, event: str, payload: Any) -> Entry:
        """Assign the next offset and store the message."""
        ...

    def read_from(self, topic: str, epoch: str, offset: int, limit: int | None = None) -> list[Entry] | None:
        """Messages after ``offset`` in ``epoch``, in order (at most ``limit`` of them), or None if
        they cannot all be given.  A backend may return an awaitable of that (the channel awaits it)."""
        ...

    def position(self, topic: str) -> Position:
        """The topic's epoch and newest offset (or an awaitable of it, for an async backend)."""
        ...


class _TopicLog:
    """One topic's log: a list with a moving head (O(1) append, trim and random access; the list
    is compacted when the dead prefix grows past half of it)."""

    __slots__ = ("epoch", "next_offset", "items", "head")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.next_offset = 1
        self.items: list[Entry] = []
        self.head = 0

    def __len__(self) -> int:
        return len(self.items) - self.head

    def first(self) -> Entry | None:
        return self.items[self.head] if self.head < len(self.items) else None


class MemoryHistory:
    """The in-memory history: one bounded log per topic; ``append`` and ``position`` are O(1)
    amortised, ``read_from`` is O(messages returned)."""

    def __init__(self, size: int = 10_000, max_age: float = 300.0) -> None:
        if size < 0:
            raise ValueError(f"history size must be >= 0, not {size!r}")
        if not max_age > 0:
            raise ValueError(f"history max_age must be > 0 seconds, not {max_age!r}")
        self.size = size
        self.max_age = max_age
        self._topics: dict[str, _TopicLog] = {}
        self._appended = 0
        self._trimmed = 0

    def _log(self, topic: str) -> _TopicLog:
        log = self._topics.get(topic)
        if log is None:
            log = self._topics[topic] = _TopicLog()
        return log

    def _trim(self, log: _TopicLog, now: float) -> None:
        items = log.items
        head = log.head
        end = len(items)
        horizon = now - self.max_age
        keep = self.size
        while head < end and (end - head > keep or items[head].at < horizon):
            items[head] = None  # type: ignore[call-overload]  # drop the reference now
            head += 1
        if head != log.head:
            self._trimmed += head - log.head
            if head > 64 and head * 2 > end:
                del items[:head]
                head = 0
            log.head = head

    def append(self, topic: str, event: str, payload: Any) -> Entry:
        """Assign the next offset and store the message (trimming by size and age)."""
        log = self._log(topic)
        now = trio.current_time()
        entry = Entry(topic, log.epoch, log.next_offset, event, payload, now)
        log.next_offset += 1
        log.items.append(entry)
        self._appended += 1
        self._trim(log, now)
        return entry

    def read_from(self, topic: str, epoch: str, offset: int, limit: int | None = None) -> list[Entry] | None:
        """Messages ``offset+1 ..`` of ``epoch`` in order (the first ``limit`` of them, all if None);
        None if the history cannot give all of them (other epoch, trimmed, offset beyond the head)."""
        log = self._topics.get(topic)
        if log is None or epoch != log.epoch or offset < 0 or offset >= log.next_offset:
            return None
        self._trim(log, trio.current_time())
        if offset == log.next_offset - 1:
            return []
        first = log.first()
        if first is None or first.offset > offset + 1:
            return None  # the gap was trimmed away
        start = log.head + (offset + 1 - first.offset)
        stop = len(log.items) if limit is None else min(len(log.items), start + max(0, limit))
        return log.items[start:stop]

    def position(self, topic: str) -> Position:
        """The topic's epoch and newest offset."""
        log = self._log(topic)
        return Position(log.epoch, log.next_offset - 1)

    def reset(self, topic: str) -> Position:
        """Drop the topic's history and start a new epoch (clients will get ``recovered: false``)."""
        self._topics.pop(topic, None)
        return self.position(topic)

    def statistics(self) -> HistoryStatistics:
        """A frozen snapshot of the counters."""
        return HistoryStatistics(
            topics=len(self._topics),
            messages=sum(len(t) for t in self._topics.values()),
            appended=self._appended,
            trimmed=self._trimmed,
        )


def history_of(node: Node) -> History:
    """The node's history backend (created on first use with the defaults, or set by the daemon)."""
    history = getattr(node, "history", None)
    if history is None:
        history = MemoryHistory()
        node.history = history  # type: ignore[attr-defined]
    return history
