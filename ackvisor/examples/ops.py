"""Operations actors for ``supervisors/ops.toml``: periodic node stats and a mailbox watchdog.

Both use ``send_after`` ticks (no sleeping tasks), so they cost nothing
between ticks and stop instantly with their actor.
"""

from __future__ import annotations

from typing import Any

import structlog

from ..actor import Actor, Caller

__all__ = ["NodeStatsReporter", "MailboxWatchdog"]

log = structlog.get_logger("ackvisor.ops")


class NodeStatsReporter(Actor):
    """Logs ``node_stats`` (actors, pending timers, registered names) every ``interval`` seconds."""

    async def init(self, interval: float = 60.0) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, not {interval!r}")
        self.interval = interval
        self.samples = 0
        self.last: dict[str, Any] = {}
        self.send_after("tick", interval)

    async def handle_info(self, message: Any) -> None:
        if message == "tick":
            node = self.node
            self.last = {
                "actors": node.actor_count,
                "timers": node.timers.pending_count,
                "names": len(node.registry.names()),
            }
            self.samples += 1
            log.info("node_stats", node=node.name, **self.last)
            self.send_after("tick", self.interval)

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if request == "last":
            return dict(self.last)
        raise ValueError(f"unknown request {request!r}")


class MailboxWatchdog(Actor):
    """Warns (``mailbox_backlog``) about actors whose mailbox holds more than ``threshold`` messages."""

    async def init(self, interval: float = 10.0, threshold: int = 10000) -> None:
        if not interval > 0 or threshold < 1:
            raise ValueError("interval must be > 0 and threshold >= 1")
        self.interval = interval
        self.threshold = threshold
        self.send_after("tick", interval)

    async def handle_info(self, message: Any) -> None:
        if message == "tick":
            for ref in self.node.actors():
                depth = ref._cell.mailbox.depth
                if depth > self.threshold:
                    log.warning("mailbox_backlog", actor=repr(ref), depth=depth, threshold=self.threshold)
            self.send_after("tick", self.interval)
