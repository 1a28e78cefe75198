"""``AckTracker``: server-tracked delivery for one channel (the seed's pattern, written once).

Flow of one acked push:

1. :meth:`AckTracker.track` assigns a unique ``message_id`` and records it as
   awaiting ack;
2. the frame is written to the socket; only then :meth:`AckTracker.written`
   starts its deadline, ``ack_timeout`` from now - so time spent in our own
   queues never counts against a slow-but-alive client;
3. the client answers ``message_ack {message_id, status}``;
   :meth:`AckTracker.ack` forgets the id;
4. when a :class:`CheckAck` arrives, :meth:`AckTracker.expired` returns the
   oldest message whose deadline has passed while it is still awaited, and
   the channel exits with ``Error("no_ack_received", ...)``.

One timer per tracker, not one per push: every deadline is the write time
plus the same ``ack_timeout`` and pushes are written one after another, so
the oldest awaited message always has the earliest deadline.  The tracker
keeps a single ``check_ack`` armed for the oldest written message; when it
fires, ``expired`` either finds that deadline passed (a no-ack) or re-arms
for the message that is now the oldest.  An ack is then a dict removal, and
a busy channel costs one timer event per ``ack_timeout`` instead of a timer
per message.

Guarantees: message ids are unique within the process and across restarts
(a random per-process prefix plus a counter); a message acked before its
deadline is never reported as expired, even if the ``CheckAck`` was already
queued when the ack arrived; every awaited message is checked no later than
its deadline (plus the owner's own queueing); an unknown or repeated ack
returns False and never raises.
"""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass
from typing import Any

import trio

from ..actor import ActorRef
from ..exits import Error
from ..timers import TimerRef

__all__ = ["AckTracker", "CheckAck", "PendingAck", "AckStatistics", "new_message_id"]

_PREFIX = secrets.token_hex(4)
_counter = itertools.count(1)


def new_message_id() -> str:
    """A process-unique message id (random prefix + counter), cheap to make."""
    return f"{_PREFIX}-{next(_counter)}"


@dataclass(frozen=True, slots=True)
class CheckAck:
    """The timer message a channel sends itself: is ``message_id`` still awaited?"""

    message_id: str


class PendingAck:
    """One message awaiting its ack (with its topic offset when it came from the history).

    ``deadline`` is ``sent_at + ack_timeout``, set when the frame was written.
    """

    __slots__ = ("message_id", "event", "queued_at", "sent_at", "deadline", "offset", "epoch", "size")

    def __init__(self, message_id: str, event: str, queued_at: float, offset: int | None = None, epoch: str | None = None, size: int = 0) -> None:
        self.message_id = message_id
        self.event = event
        self.queued_at = queued_at
        self.sent_at: float | None = None
        self.deadline: float | None = None
        self.offset = offset
        self.epoch = epoch
        self.size = size


@dataclass(frozen=True, slots=True)
class AckStatistics:
    """Counters of one tracker: awaiting now, tracked, acked, unknown acks, expired."""

    awaiting: int
    awaiting_bytes: int
    tracked: int
    acked: int
    unknown: int
    expired: int


class AckTracker:
    """Message ids awaiting ack for one channel actor, with their ``check_ack`` timers."""

    __slots__ = (
        "owner",
        "ack_timeout",
        "awaiting",
        "max_unacked",
        "max_unacked_bytes",
        "awaiting_bytes",
        "_tracked",
        "_acked",
        "_unknown",
        "_expired",
        "_timer",
        "_check",
    )

    def __init__(
        self,
        owner: ActorRef,
        ack_timeout: float,
        *,
        max_unacked: float = math.inf,
        max_unacked_bytes: float = math.inf,
    ) -> None:
        if not ack_timeout > 0:
            raise ValueError(f"ack_timeout must be > 0 seconds, not {ack_timeout!r}")
        self.owner = owner
        self.ack_timeout = ack_timeout
        self.max_unacked = max_unacked
        self.max_unacked_bytes = max_unacked_bytes
        self.awaiting_bytes = 0
        # Insertion-ordered: pushes are tracked in offset order, which cumulative acks rely on.
        self.awaiting: dict[str, PendingAck] = {}
        self._tracked = 0
        self._acked = 0
        self._unknown = 0
        self._expired = 0
        # The one armed deadline timer and the message it will deliver (None: nothing armed).
        self._timer: TimerRef | None = None
        self._check: CheckAck | None = None

    def track(self, event: str, *, offset: int | None = None, epoch: str | None = None) -> PendingAck:
        """Record a new message as awaiting ack and return it (its timer is armed by :meth:`written`)."""
        pending = PendingAck(new_message_id(), event, trio.current_time(), offset, epoch)
        self.awaiting[pending.message_id] = pending
        self._tracked += 1
        return pending

    def sized(self, pending: PendingAck, size: int) -> bool:
        """Count the frame's size against the unacked-bytes cap; True if now :meth:`over_limit`."""
        pending.size = size
        self.awaiting_bytes += size
        return self.over_limit()

    def over_limit(self) -> bool:
        """True when more messages (or bytes) await ack than the caps allow: the client is hopelessly slow."""
        return len(self.awaiting) > self.max_unacked or self.awaiting_bytes > self.max_unacked_bytes

    def too_many_reason(self, **context: Any) -> Error:
        """The exit reason when :meth:`over_limit` is true."""
        oldest = next(iter(self.awaiting.values()), None)
        waited = trio.current_time() - oldest.queued_at if oldest is not None else 0.0
        return Error(
            "too_many_unacked",
            awaiting=len(self.awaiting),
            awaiting_bytes=self.awaiting_bytes,
            max_unacked=self.max_unacked,
            max_unacked_bytes=self.max_unacked_bytes,
            oldest_waited_ms=round(waited * 1000, 1),
            **context,
        )

    def ack_upto(self, offset: int, epoch: str | None = None) -> int:
        """Cumulative ack: forget every awaited message with an offset <= ``offset`` (of ``epoch`` if
        given) and cancel their timers; returns how many.  Messages without an offset (snapshots,
        plain pushes) keep waiting for their own ``message_id`` ack.

        Pushes are tracked in offset order (per epoch), so the scan stops at the first awaited
        message of that epoch beyond ``offset``: O(acked + skipped non-offset messages).
        """
        done = []
        for pending in self.awaiting.values():
            p_offset = pending.offset
            if p_offset is None:
                continue
            if epoch is not None and pending.epoch != epoch:
                continue
            if p_offset <= offset:
                done.append(pending)
            elif epoch is not None:
                break
        awaiting = self.awaiting
        for pending in done:
            del awaiting[pending.message_id]
            self._forget(pending)
        return len(done)

    def _forget(self, pending: PendingAck) -> None:
        # The deadline timer stays armed: when it fires, expired() re-arms it for
        # whatever is then the oldest message (cheaper than a cancel per ack).
        self.awaiting_bytes -= pending.size
        self._acked += 1

    def written(self, pending: PendingAck) -> None:
        """The frame was handed to the socket: its ack deadline is ``ack_timeout`` from now."""
        if pending.message_id not in self.awaiting:
            return  # acked before we even got here
        now = trio.current_time()
        pending.sent_at = now
        pending.deadline = now + self.ack_timeout
        if self._check is None:
            self._arm(pending, self.ack_timeout)
        else:
            fired_at = self._timer.fired_at  # type: ignore[union-attr]
            if fired_at is not None and now - fired_at > self.ack_timeout:
                # Fired a whole ack_timeout ago and never handled: its CheckAck was lost
                # (a bounded mailbox dropped it). Arm afresh; a late copy is ignored.
                self._arm(pending, self.ack_timeout)

    def _arm(self, pending: PendingAck, seconds: float) -> None:
        check = CheckAck(pending.message_id)
        self._check = check
        self._timer = self.owner._send_after(check, seconds)

    def ack(self, message_id: Any) -> bool:
        """Forget ``message_id``: it will not expire; False if it was not awaited."""
        pending = self.awaiting.pop(message_id, None) if isinstance(message_id, str) else None
        if pending is None:
            self._unknown += 1
            return False
        self._forget(pending)
        return True

    def expired(self, check: CheckAck) -> PendingAck | None:
        """Handle the deadline timer's ``check``: the oldest awaited message whose deadline has
        passed (the channel must then exit), else None after re-arming the timer for the
        oldest message still awaited.  A ``check`` this tracker did not arm is ignored."""
        if check is not self._check:
            return None
        self._check = None
        now = trio.current_time()
        for pending in self.awaiting.values():
            deadline = pending.deadline
            if deadline is None:
                continue  # being written right now; written() arms the timer if needed
            if deadline <= now:
                self._expired += 1
                return pending
            self._arm(pending, deadline - now)
            return None
        return None

    def no_ack_reason(self, pending: PendingAck, **context: Any) -> Error:
        """The exit reason for an expired ack, with the report's keys."""
        # Detection is the moment the deadline timer fired (the ack was not in by then: an ack
        # queued before it would have been handled first); handling it may come later under load.
        now = trio.current_time()
        timer = self._timer
        # The timer that fired was armed for this very message: its deadline passed at
        # fired_at. Otherwise the deadline passed while the timer served an older message.
        fired_at = timer.fired_at if timer is not None else None
        if fired_at is not None and pending.deadline is not None and fired_at >= pending.deadline:
            detected = fired_at
        else:
            detected = now
        waited = detected - (pending.sent_at if pending.sent_at is not None else pending.queued_at)
        context.setdefault("handled_ms_after_detection", round((now - detected) * 1000, 1))
        if pending.offset is not None:
            context.setdefault("offset", pending.offset)
        return Error(
            "no_ack_received",
            message_id=pending.message_id,
            message_event=pending.event,
            waited_ms=round(waited * 1000, 1),
            awaiting=len(self.awaiting),
            **context,
        )

    def cancel_all(self) -> None:
        """Cancel the deadline timer (the channel is ending): no ``CheckAck`` is handled after this."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._check = None

    def statistics(self) -> AckStatistics:
        """A frozen snapshot of the counters."""
        return AckStatistics(
            awaiting=len(self.awaiting),
            awaiting_bytes=self.awaiting_bytes,
            tracked=self._tracked,
            acked=self._acked,
            unknown=self._unknown,
            expired=self._expired,
        )
