"""Client bookkeeping: frames waiting for their ``phx_reply``, and scheduled timer calls."""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .client_channel import ClientChannel

# pending-reply kinds
_K_JOIN, _K_PUSH, _K_LEAVE, _K_HEARTBEAT = 0, 1, 2, 3


class _Pending:
    """One frame waiting for its phx_reply."""

    __slots__ = ("kind", "channel", "ref", "event", "reply", "error", "done", "sent_at", "name")

    def __init__(self, kind: int, channel: "ClientChannel | None", ref: str, name: str = "") -> None:
        self.kind = kind
        self.channel = channel
        self.ref = ref
        self.name = name
        self.event: trio.Event | None = trio.Event() if kind != _K_JOIN else None
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.sent_at = 0.0

    def resolve(self, reply: Any) -> None:
        if not self.done:
            self.done = True
            self.reply = reply
            if self.event is not None:
                self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = error
            if self.event is not None:
                self.event.set()


class _Timer:
    __slots__ = ("deadline", "fn", "args", "active")

    def __init__(self, deadline: float, fn: Callable[..., Awaitable[None]], args: tuple[Any, ...]) -> None:
        self.deadline = deadline
        self.fn = fn
        self.args = args
        self.active = True

    def cancel(self) -> None:
        self.active = False


class _TimerQueue:
    """The client's own timers (rejoin, join timeout, reconnect): one heap and one task.

    The host class initialises ``_timers`` (a heap list), ``_timer_seq``
    (an ``itertools.count``) and ``_timer_wakeup`` (a ``trio.Event``).
    """

    _timers: list[tuple[float, int, _Timer]]
    _timer_seq: Any
    _timer_wakeup: trio.Event

    def _call_later(self, delay: float, fn: Callable[..., Awaitable[None]], *args: Any) -> _Timer:
        deadline = trio.current_time() + max(0.0, delay)
        timer = _Timer(deadline, fn, args)
        heap = self._timers
        if not heap or deadline < heap[0][0]:
            self._timer_wakeup.set()
        heapq.heappush(heap, (deadline, next(self._timer_seq), timer))
        return timer

    async def _timer_loop(self) -> None:
        heap = self._timers
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, timer = heapq.heappop(heap)
                if timer.active:
                    timer.active = False
                    await timer.fn(*timer.args)
                now = trio.current_time()
            if self._timer_wakeup.is_set():
                self._timer_wakeup = trio.Event()
            wakeup = self._timer_wakeup
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await wakeup.wait()
