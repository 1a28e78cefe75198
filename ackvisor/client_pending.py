"""Client bookkeeping: frames waiting for their ``phx_reply``, and scheduled timer calls."""

from __future__ import annotations

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
