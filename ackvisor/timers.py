"""Timers: ``send_after(ref, message, seconds) -> TimerRef`` (OTP_SEMANTICS T-1..T-6).

All timers of a node share one task and one heap, so an armed timer costs a
small object, not a Trio task: an ack tracker can arm one per push.  Time is
read from ``trio.current_time()``, so ``MockClock`` drives timers exactly.

Guarantees:

* delivery is asynchronous, even for 0 seconds (T-2);
* :meth:`TimerRef.cancel` returns the remaining seconds if the timer was
  still pending, else ``False`` (T-3);
* timer messages are tagged with their ``TimerRef`` in the mailbox, so after
  ``cancel()`` returns the message is **never handled**, even if it was
  already queued (stronger than OTP, where a late message may still arrive);
* a timer addressed to an actor that has died delivers nothing (T-4).
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Any, Callable, Literal

import trio

if TYPE_CHECKING:
    from .actor import ActorRef

__all__ = ["TimerRef", "TimerService", "send_after"]

_PENDING, _FIRED, _CANCELLED = 0, 1, 2


class TimerRef:
    """Handle of one armed timer. ``cancel`` is sync and never blocks."""

    __slots__ = ("deadline", "fired_at", "_seq", "_deliver", "_state", "_service", "_owner", "__weakref__")

    def __init__(
        self,
        deadline: float,
        seq: int,
        deliver: Callable[["TimerRef"], None],
        service: "TimerService",
        owner: "set[TimerRef] | None" = None,
    ) -> None:
        self.deadline = deadline
        #: when the timer task fired it (None until then): how late it ran, under load
        self.fired_at: float | None = None
        self._seq = seq
        self._deliver = deliver
        self._state = _PENDING
        self._service = service
        # The target actor's set of pending timers: it cancels them when it dies (T-4).
        self._owner = owner
        if owner is not None:
            owner.add(self)

    def __lt__(self, other: "TimerRef") -> bool:
        return (self.deadline, self._seq) < (other.deadline, other._seq)

    def cancel(self) -> float | Literal[False]:
        """Cancel the timer; its message will not be handled from now on.

        Returns the seconds that were left if it was pending, ``False`` if it
        had already fired or been cancelled (T-3).
        """
        state = self._state
        self._state = _CANCELLED
        if state == _PENDING:
            self._service._cancelled += 1
            self._deliver = _noop
            owner = self._owner
            if owner is not None:
                self._owner = None
                owner.discard(self)
            return max(0.0, self.deadline - trio.current_time())
        return False

    def _discard(self) -> None:
        """Cancel without computing the remaining time (internal fast path)."""
        if self._state == _PENDING:
            self._state = _CANCELLED
            self._service._cancelled += 1
            self._deliver = _noop
            owner = self._owner
            if owner is not None:
                self._owner = None
                owner.discard(self)

    def read(self) -> float | Literal[False]:
        """Seconds left before the timer fires, or ``False`` if it is not pending (T-5)."""
        if self._state == _PENDING:
            return max(0.0, self.deadline - trio.current_time())
        return False

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called; a queued message of this timer is then dropped."""
        return self._state == _CANCELLED

    @property
    def pending(self) -> bool:
        """True while the timer has neither fired nor been cancelled."""
        return self._state == _PENDING

    def __repr__(self) -> str:
        state = ("pending", "fired", "cancelled")[self._state]
        return f"<TimerRef {state} at {self.deadline:.3f}>"


def _noop(_: TimerRef) -> None:
    pass


class TimerService:
    """One task per node that fires every timer at its deadline, in deadline order."""

    def __init__(self) -> None:
        self._heap: list[TimerRef] = []
        self._seq = itertools.count()
        self._wake = trio.Event()
        self._sleeping_until = math.inf
        self._cancelled = 0

    def schedule(
        self, seconds: float, deliver: Callable[[TimerRef], None], owner: "set[TimerRef] | None" = None
    ) -> TimerRef:
        """Arm a timer that calls ``deliver(tref)`` after ``seconds``; sync.

        ``owner`` is the target's set of pending timers: the timer adds itself
        and leaves it when it fires or is cancelled.
        """
        if not seconds >= 0:
            raise ValueError(f"timer delay must be >= 0 seconds, not {seconds!r}")
        tref = TimerRef(trio.current_time() + seconds, next(self._seq), deliver, self, owner)
        heapq.heappush(self._heap, tref)
        if tref.deadline < self._sleeping_until:
            self._wake.set()
        # Lazy deletion keeps cancel O(1); compact when cancelled entries dominate.
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
            self._heap = [t for t in self._heap if t._state == _PENDING]
            heapq.heapify(self._heap)
            self._cancelled = 0
        return tref

    @property
    def pending_count(self) -> int:
        """Timers armed and not yet fired (cancelled ones may still be counted until compaction)."""
        return len(self._heap) - self._cancelled

    def _fire(self, now: float) -> None:
        heap = self._heap
        # Fire what is due; also drop cancelled timers at the top, so the
        # sleep below targets the next *pending* deadline (call timeouts are
        # armed and cancelled at a high rate and must not wake this task).
        while heap and (heap[0].deadline <= now or heap[0]._state != _PENDING):
            tref = heapq.heappop(heap)
            if tref._state == _PENDING:
                tref._state = _FIRED
                tref.fired_at = now
                owner = tref._owner
                if owner is not None:
                    tref._owner = None
                    owner.discard(tref)
                deliver, tref._deliver = tref._deliver, _noop
                deliver(tref)
            else:
                self._cancelled -= 1

    @trio.lowlevel.enable_ki_protection
    async def run(self) -> None:
        """Fire timers forever; cancel the surrounding scope to stop.

        KI-protected: a Ctrl-C arriving while this runtime task runs is
        delivered to the main task instead of tearing the node's nursery down.
        """
        hook = _FireDueTimers(self)
        trio.lowlevel.add_instrument(hook)
        try:
            await self._sleep_and_fire()
        finally:
            trio.lowlevel.remove_instrument(hook)

    async def _sleep_and_fire(self) -> None:
        while True:
            self._fire(trio.current_time())
            heap = self._heap
            self._sleeping_until = heap[0].deadline if heap else math.inf
            self._wake = trio.Event()
            with trio.move_on_at(self._sleeping_until):
                await self._wake.wait()
            self._sleeping_until = -math.inf


class _FireDueTimers(trio.abc.Instrument):
    """Fires due timers at the start of every run-loop pass, before its batch of tasks runs.

    The timer task alone fires a timer only when its own turn comes, which is
    after the batch that was running when the deadline passed *and* after the
    tasks ahead of it in the next one; under a burst (thousands of connections
    crashing at once) one batch can take tens of milliseconds.  From this hook
    a due timer waits at most for the batch that was running at its deadline.
    The task still sleeps until the next deadline, so the run loop wakes up
    for it when nothing else happens.
    """

    __slots__ = ("service",)

    def __init__(self, service: TimerService) -> None:
        self.service = service

    def after_io_wait(self, timeout: float) -> None:
        service = self.service
        heap = service._heap
        if heap and heap[0].deadline <= trio.current_time():
            service._fire(trio.current_time())


def send_after(ref: "ActorRef", message: Any, seconds: float) -> TimerRef:
    """Deliver ``message`` to ``ref``'s ``handle_info`` after ``seconds`` (T-1); sync."""
    return ref._send_after(message, seconds)
