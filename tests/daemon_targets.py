"""Test-only ``start`` targets for the daemon CLI tests (tests/test_daemon.py).

The daemon runs in a subprocess; tests/ is put on its ``PYTHONPATH`` so the
config files under tests/daemon_configs/ can say ``"daemon_targets:Worker"``.
"""

from __future__ import annotations

from typing import Any

import structlog
import trio

from ackvisor.actor import Actor, Caller

log = structlog.get_logger("tests.daemon_targets")


class Worker(Actor):
    """Does nothing; remembers its arguments (``call("args")``)."""

    async def init(self, label: str = "worker", **options: Any) -> None:
        self.label = label
        self.options = options
        log.info("worker_started", label=label, **options)

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if request == "args":
            return {"label": self.label, **self.options}
        raise ValueError(f"unknown request {request!r}")

    async def terminate(self, reason: Any) -> None:
        log.info("worker_stopped", label=self.label)


class Crasher(Actor):
    """Starts fine, then raises ``after`` seconds later: a child that crashes in a loop."""

    async def init(self, after: float = 0.05) -> None:
        self.send_after("boom", after)

    async def handle_info(self, message: Any) -> None:
        if message == "boom":
            raise RuntimeError("crasher: boom")


class FailingInit(Actor):
    """Cannot start: ``init`` raises."""

    async def init(self, **options: Any) -> None:
        raise RuntimeError("failing_init: cannot start")


class SlowStop(Actor):
    """Takes ``seconds`` to terminate (bounded by its child spec's shutdown)."""

    async def init(self, seconds: float = 30.0) -> None:
        self.seconds = seconds

    async def terminate(self, reason: Any) -> None:
        log.info("slow_stop_terminating", seconds=self.seconds)
        await trio.sleep(self.seconds)
