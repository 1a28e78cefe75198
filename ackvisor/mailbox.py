"""The mailbox: one Trio memory channel per actor, with an explicit overflow policy.

Sending never blocks (Erlang's ``!``): :meth:`Mailbox.put` is synchronous.  By
default a mailbox is unbounded; with a ``capacity`` the ``overflow`` policy
decides what happens to a message that does not fit:

* ``"drop_new"`` - the new message is dropped (a dead letter);
* ``"drop_old"`` - the oldest queued message is dropped to make room;
* ``"crash"`` - the new message is dropped and the owner exits with
  ``Error("mailbox_overflow")``, so its supervisor decides.

Every dropped message is counted in :meth:`Mailbox.statistics` and handed to
the ``on_dead_letter`` callback (the runtime logs it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import trio
from trio.lowlevel import Abort, checkpoint, current_task, reschedule, wait_task_rescheduled

__all__ = ["Mailbox", "MailboxStatistics", "OverflowPolicy"]

OverflowPolicy = Literal["drop_new", "drop_old", "crash"]
_POLICIES = ("drop_new", "drop_old", "crash")


@dataclass(frozen=True, slots=True)
class MailboxStatistics:
    """A snapshot of a mailbox: current ``depth``, ``peak`` depth, messages ``received`` and ``dropped``."""

    depth: int
    peak: int
    received: int
    dropped: int
    capacity: float
    overflow: str


class Mailbox:
    """A FIFO of envelopes owned by one actor; ``put`` is sync and never blocks.

    Guarantees: messages from one sender are received in the order they were
    put (P-7); ``get`` is always a Trio checkpoint; at most one task receives;
    after :meth:`close`, ``put`` silently drops (sending to a dead actor is a
    no-op).  The bound is exact: ``depth`` never exceeds ``capacity``.

    Implementation: a list with a moving head (amortised O(1), about 60 bytes
    when empty, where a ``deque`` or a memory channel costs 700+) plus the
    parked receiver task, woken with ``trio.lowlevel.reschedule``.  The actor
    loop inlines :meth:`get` (see ``process._Cell._serve``).
    """

    __slots__ = (
        "_queue",
        "_head",
        "_waiter",
        "capacity",
        "overflow",
        "_on_dead_letter",
        "_on_overflow",
        "_peak",
        "_received",
        "_dropped",
        "_closed",
    )

    def __init__(
        self,
        capacity: float = math.inf,
        overflow: OverflowPolicy = "drop_new",
        *,
        on_dead_letter: Callable[[Any, str], None] | None = None,
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        if overflow not in _POLICIES:
            raise ValueError(f"overflow must be one of {_POLICIES}, not {overflow!r}")
        if not (capacity == math.inf or (isinstance(capacity, int) and not isinstance(capacity, bool) and capacity > 0)):
            raise ValueError(f"capacity must be a positive int or math.inf, not {capacity!r}")
        self._queue: list[Any] = []
        self._head = 0
        self._waiter: Any = None
        self.capacity = capacity
        self.overflow = overflow
        self._on_dead_letter = on_dead_letter
        self._on_overflow = on_overflow
        self._peak = 0
        self._received = 0
        self._dropped = 0
        self._closed = False

    def put(self, item: Any) -> bool:
        """Queue ``item``; return False if it was dropped (closed mailbox or overflow)."""
        if self._closed:
            return False
        queue = self._queue
        depth = len(queue) - self._head
        if depth >= self.capacity:
            if self.overflow == "drop_old":
                self._drop(self._take(), "mailbox_full")
                self._received -= 1  # dropped, not received
                depth -= 1
            else:
                self._drop(item, "mailbox_full")
                if self.overflow == "crash" and self._on_overflow is not None:
                    self._on_overflow()
                return False
        queue.append(item)
        if depth >= self._peak:
            self._peak = depth + 1
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            reschedule(waiter)
        return True

    def _take(self) -> Any:
        """Pop the oldest item; the queue must not be empty."""
        queue = self._queue
        head = self._head
        item = queue[head]
        head += 1
        if head == len(queue):
            queue.clear()
            self._head = 0
        elif head >= 32 and head * 2 >= len(queue):
            del queue[:head]
            self._head = 0
        else:
            queue[head - 1] = None
            self._head = head
        self._received += 1
        return item

    def _abort(self, _: Any) -> Abort:
        self._waiter = None
        return Abort.SUCCEEDED

    async def _wait(self) -> None:
        """Park until something is queued (the queue is empty)."""
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already receiving from this mailbox")
        self._waiter = current_task()
        await wait_task_rescheduled(self._abort)

    async def get(self) -> Any:
        """Wait for the next envelope (a checkpoint even when one is already queued)."""
        if self._head < len(self._queue):
            await checkpoint()
        while self._head >= len(self._queue):
            await self._wait()
        return self._take()

    def get_nowait(self) -> Any:
        """Take the next envelope or raise ``trio.WouldBlock``."""
        if self._head >= len(self._queue):
            raise trio.WouldBlock
        return self._take()

    def close(self) -> list[Any]:
        """Stop accepting messages; return what was still queued (the caller decides their fate)."""
        self._closed = True
        left = self._queue[self._head :]
        self._queue.clear()
        self._head = 0
        return left

    @property
    def depth(self) -> int:
        """Messages queued and not yet received."""
        return len(self._queue) - self._head

    def _drop(self, item: Any, why: str) -> None:
        self._dropped += 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(item, why)

    def statistics(self) -> MailboxStatistics:
        """Return a frozen snapshot of the counters."""
        return MailboxStatistics(
            depth=len(self._queue) - self._head,
            peak=self._peak,
            received=self._received,
            dropped=self._dropped,
            capacity=self.capacity,
            overflow=self.overflow,
        )
