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
    put (P-7); ``get`` is always a Trio checkpoint; after :meth:`close`,
    ``put`` silently drops (sending to a dead actor is a no-op).
    """

    __slots__ = (
        "_send",
        "_recv",
        "capacity",
        "overflow",
        "_on_dead_letter",
        "_on_overflow",
        "_depth",
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
        if not (capacity == math.inf or (isinstance(capacity, int) and capacity > 0)):
            raise ValueError(f"capacity must be a positive int or math.inf, not {capacity!r}")
        self._send, self._recv = trio.open_memory_channel[Any](math.inf)
        self.capacity = capacity
        self.overflow = overflow
        self._on_dead_letter = on_dead_letter
        self._on_overflow = on_overflow
        self._depth = 0
        self._peak = 0
        self._received = 0
        self._dropped = 0
        self._closed = False

    def put(self, item: Any) -> bool:
        """Queue ``item``; return False if it was dropped (closed mailbox or overflow)."""
        if self._closed:
            return False
        if self._depth >= self.capacity:
            if self.overflow == "drop_old":
                self._drop(self._recv.receive_nowait(), "mailbox_full")
                self._depth -= 1
            else:
                self._drop(item, "mailbox_full")
                if self.overflow == "crash" and self._on_overflow is not None:
                    self._on_overflow()
                return False
        self._send.send_nowait(item)
        self._depth += 1
        if self._depth > self._peak:
            self._peak = self._depth
        return True

    async def get(self) -> Any:
        """Wait for the next envelope (a checkpoint even when one is already queued)."""
        item = await self._recv.receive()
        self._depth -= 1
        self._received += 1
        return item

    def get_nowait(self) -> Any:
        """Take the next envelope or raise ``trio.WouldBlock``."""
        item = self._recv.receive_nowait()
        self._depth -= 1
        self._received += 1
        return item

    def close(self) -> list[Any]:
        """Stop accepting messages; return what was still queued (the caller decides their fate)."""
        self._closed = True
        left = []
        while True:
            try:
                left.append(self._recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        self._depth = 0
        return left

    @property
    def depth(self) -> int:
        """Messages queued and not yet received."""
        return self._depth

    def _drop(self, item: Any, why: str) -> None:
        self._dropped += 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(item, why)

    def statistics(self) -> MailboxStatistics:
        """Return a frozen snapshot of the counters."""
        return MailboxStatistics(
            depth=self._depth,
            peak=self._peak,
            received=self._received,
            dropped=self._dropped,
            capacity=self.capacity,
            overflow=self.overflow,
        )
