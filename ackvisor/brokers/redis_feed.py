"""The per-topic feed: turns an at-most-once pub/sub stream into an in-order, gap-free one.

One :class:`Feed` per subscribed topic holds ``epoch`` and ``last`` (the
offset of the newest publication delivered on this node).  A publication
arriving from pub/sub with

* ``offset <= last`` is a duplicate (a replay overlapped it): dropped;
* ``offset == last + 1`` (and nothing waiting): delivered;
* ``offset > last + 1``: a gap (pub/sub lost messages, e.g. across a
  reconnect).  It waits in ``pending`` while the gap is filled from the
  topic's stream (``fill``); the stream and the pending messages are merged
  and delivered in offset order.  If the stream no longer holds a missing
  offset (trimmed/expired), the next publication carries
  ``resync="trimmed"``;
* another epoch: the topic's history was reset (offsets restart at 1); the
  feed switches to it, fills from its start, and the first publication of the
  new epoch carries ``resync="epoch"``.  Stragglers of a retired epoch are
  dropped.

After a re-subscribe (reconnect) the broker calls ``fill`` for every feed so
what was published during the outage is delivered before anything newer.
The class does no I/O itself: ``fetch(topic, since, limit) -> (top, epoch,
[(offset, body), ...])`` reads the history, ``emit(feed, offset, origin, body, resync)``
delivers.  All methods run in the broker's one subscriber task, so a feed is
never touched by two tasks at once.
"""

from __future__ import annotations

from typing import Awaitable, Callable

import trio

__all__ = ["Feed", "Sequencer"]

Fetch = Callable[[str, int, int], Awaitable[tuple[int, str, list[tuple[int, bytes]]]]]


class Feed:
    """The delivery state of one topic on one node."""

    __slots__ = (
        "topic",
        "channel",
        "refs",
        "epoch",
        "last",
        "pending",
        "retired",
        "resync_next",
        "acked",
        "ready",
        "retry_at",
        "failures",
        "checked_last",
        "presence_seen",
    )

    def __init__(self, topic: str, channel: bytes) -> None:
        self.topic = topic
        self.channel = channel
        self.refs = 0
        self.epoch = ""
        #: Offset of the newest delivered publication; None until anchored (position read at the
        #: first SUBSCRIBE ack) or until the first publication arrived.
        self.last: int | None = None
        #: Publications waiting for a gap before them to be filled: offset -> (origin, body).
        self.pending: dict[int, tuple[str, bytes]] = {}
        self.retired: list[str] = []
        self.resync_next: str | None = None
        self.acked = False
        self.ready = trio.Event()
        self.retry_at = 0.0
        self.failures = 0
        self.checked_last: int | None = None
        self.presence_seen = False

    def __repr__(self) -> str:
        return f"<Feed {self.topic!r} epoch={self.epoch!r} last={self.last} pending={len(self.pending)}>"


class Sequencer:
    """The feed rules (see the module docstring) over injected ``fetch`` and ``emit``."""

    def __init__(
        self,
        fetch: Fetch,
        emit: Callable[[Feed, int, str, bytes, "str | None"], None],
        *,
        page: int = 1000,
        max_pending: int = 10_000,
        retry_delay: Callable[[int], float] = lambda n: min(0.05 * 2**n, 0.5),
    ) -> None:
        self._fetch = fetch
        self._emit_cb = emit
        self.page = page
        self.max_pending = max_pending
        self._retry_delay = retry_delay
        #: Feeds whose last read failed (the broker retries them at ``retry_at``).
        self.troubled: set[Feed] = set()
        self.dropped_duplicates = 0
        self.gap_fills = 0
        self.filled = 0
        self.resyncs = 0

    # ----- delivering

    def _emit(self, f: Feed, offset: int, origin: str, body: bytes) -> None:
        f.last = offset
        resync, f.resync_next = f.resync_next, None
        self._emit_cb(f, offset, origin, body, resync)

    def _switch_epoch(self, f: Feed, epoch: str) -> None:
        if f.epoch:
            f.retired.append(f.epoch)
            del f.retired[:-8]
        f.epoch = epoch
        f.last = 0
        f.pending.clear()
        f.resync_next = "epoch"
        self.resyncs += 1

    async def offer(self, f: Feed, offset: int, epoch: str, origin: str, body: bytes) -> None:
        """A publication from pub/sub."""
        if epoch in f.retired:
            self.dropped_duplicates += 1
            return
        if f.last is None:  # not anchored: start here
            f.epoch = epoch
            self._emit(f, offset, origin, body)
            return
        if epoch != f.epoch:
            self._switch_epoch(f, epoch)
        if offset <= f.last:
            self.dropped_duplicates += 1
            return
        if offset == f.last + 1 and not f.pending:
            self._emit(f, offset, origin, body)
            return
        if len(f.pending) < self.max_pending:
            f.pending[offset] = (origin, body)
        # (beyond the bound a publication is only dropped here: the stream still has it)
        if trio.current_time() >= f.retry_at:
            await self.fill(f)

    async def anchor(self, f: Feed) -> bool:
        """At the first SUBSCRIBE ack: take the topic's position as the starting point."""
        try:
            top, epoch, _ = await self._fetch(f.topic, 0, 0)
        except Exception:
            self._failed(f)
            return False
        self._recovered(f)
        if f.last is None:
            f.epoch, f.last = epoch, top
        return True

    async def fill(self, f: Feed) -> bool:
        """Deliver everything after ``last`` up to the stream's top (then the pending ones).

        Returns False if Redis could not be read (the pending publications stay,
        the broker retries later).
        """
        if f.last is None:
            return await self.anchor(f)
        self.gap_fills += 1
        try:
            while True:
                top, epoch, entries = await self._fetch(f.topic, f.last, self.page)
                if epoch != f.epoch:
                    if epoch in f.retired:
                        return True  # a stale read; the live feed is ahead
                    self._switch_epoch(f, epoch)
                    continue
                self._merge(f, entries, complete=len(entries) < self.page)
                if len(entries) < self.page or f.last >= top:
                    if f.last < top:  # the rest was trimmed and nothing pending covers it
                        f.last = top
                        f.resync_next = f.resync_next or "trimmed"
                        self.resyncs += 1
                    break
        except Exception:
            self._failed(f)
            return False
        self._recovered(f)
        return True

    def _failed(self, f: Feed) -> None:
        f.failures += 1
        f.retry_at = trio.current_time() + self._retry_delay(f.failures)
        self.troubled.add(f)

    def _recovered(self, f: Feed) -> None:
        f.failures = 0
        f.retry_at = 0.0
        self.troubled.discard(f)

    def _merge(self, f: Feed, entries: list[tuple[int, bytes]], *, complete: bool) -> None:
        """Deliver stream entries and pending publications in offset order (up to the last entry,
        or everything if the stream was read to its end)."""
        assert f.last is not None
        pending = f.pending
        upto = entries[-1][0] if entries else f.last
        for offset, body in entries:
            while pending:
                first = min(pending)
                if first >= offset:
                    break
                self._deliver_pending(f, first)
            if offset <= f.last:
                pending.pop(offset, None)
                continue
            if offset > f.last + 1 and not f.resync_next:
                f.resync_next = "trimmed"
                self.resyncs += 1
            pending.pop(offset, None)
            self.filled += 1
            self._emit(f, offset, "", body)
        if complete:
            upto = max(pending) if pending else upto
        for offset in sorted(o for o in pending if o <= upto):
            self._deliver_pending(f, offset)

    def _deliver_pending(self, f: Feed, offset: int) -> None:
        assert f.last is not None
        origin, body = f.pending.pop(offset)
        if offset <= f.last:
            self.dropped_duplicates += 1
            return
        if offset > f.last + 1 and not f.resync_next:
            f.resync_next = "trimmed"
            self.resyncs += 1
        self._emit(f, offset, origin, body)
