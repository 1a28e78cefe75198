"""Test support for code built on ackvisor: a pytest plugin plus plain helpers.

This module is registered as a pytest plugin through the ``pytest11`` entry
point, so installing ackvisor makes its fixtures available in every test
suite (with ``pytest-trio``; ``trio_mode = true`` or ``@pytest.mark.trio``).

Fixtures:

* ``node`` - an :class:`~ackvisor.Node` opened with :func:`~ackvisor.open_node`
  for the test and shut down (reverse start order, each actor within its
  shutdown time) when the test ends.
* ``reports`` - a :class:`Reports` list that collects every structlog event
  emitted during the test (the runtime's ``child_started``,
  ``child_terminated``, ``max_restart_intensity_reached`` ... and your own).

Helpers (usable without the fixtures):

* ``await wait_exit(ref, timeout=None) -> reason`` - wait until an actor has
  ended and return its exit reason;
* ``assert_restarted(sup_ref, child_id, times)`` - assert a supervisor
  restarted a child exactly ``times`` times (from ``which_children``);
* ``capture_reports()`` - a context manager yielding a :class:`Reports`;
* ``await settle()`` - ``trio.testing.wait_all_tasks_blocked()``: let the
  tree process everything that is already queued.

Guarantees:

* Everything here reads time only through Trio, so it works unchanged under
  ``MockClock`` (pytest-trio's ``autojump_clock`` fixture): timeouts, timers,
  shutdown times and restart-intensity windows run in virtual time, exactly
  and instantly.  Nothing here sleeps on the wall clock or polls.
* ``node`` tears the tree down even when the test fails, and every actor of
  the test is gone when the fixture's teardown returns.
* ``reports`` / ``capture_reports`` see the events as dicts with the event
  name under ``"event"`` and the level under ``"log_level"``; structlog's
  processors are bypassed while capturing and restored afterwards (the
  capture does not work for loggers cached with
  ``cache_logger_on_first_use=True`` before it started).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, AsyncIterator, Hashable, Iterable, Iterator

import pytest
import structlog
import trio
import trio.testing
from structlog.testing import LogCapture

from .actor import ActorRef
from .node import Node, open_node

__all__ = ["Reports", "capture_reports", "wait_exit", "assert_restarted", "settle", "node", "reports"]


class Reports(list):  # list[dict[str, Any]]
    """Captured structlog events (each a dict), in emission order, with filters by event name."""

    def named(self, event: str) -> list[dict[str, Any]]:
        """Every captured event called ``event``."""
        return [e for e in self if e.get("event") == event]

    def names(self) -> list[str]:
        """The event names, in order."""
        return [e.get("event") for e in self]

    def one(self, event: str, **match: Any) -> dict[str, Any]:
        """The single event called ``event`` whose keys equal ``match``; AssertionError otherwise."""
        found = [e for e in self.named(event) if all(e.get(k) == v for k, v in match.items())]
        assert len(found) == 1, f"expected exactly one {event!r} matching {match}, got {len(found)}: {found}"
        return found[0]

    def where(self, event: str, **match: Any) -> list[dict[str, Any]]:
        """Events called ``event`` whose keys equal ``match``."""
        return [e for e in self.named(event) if all(e.get(k) == v for k, v in match.items())]


@contextmanager
def capture_reports(processors: Iterable[Any] = ()) -> Iterator[Reports]:
    """Collect every structlog event emitted inside the block into a :class:`Reports` list."""
    reports = Reports()
    cap = LogCapture()
    cap.entries = reports  # type: ignore[assignment]
    configured = structlog.get_config()["processors"]
    old = configured.copy()
    try:
        configured.clear()
        configured.extend(processors)
        configured.append(cap)
        structlog.configure(processors=configured)
        yield reports
    finally:
        configured.clear()
        configured.extend(old)
        structlog.configure(processors=configured)


async def wait_exit(ref: ActorRef, timeout: float | None = None) -> Any:
    """Wait for ``ref`` to end and return its exit reason; ``trio.TooSlowError`` after ``timeout``."""
    with trio.fail_after(math.inf if timeout is None else timeout):
        return await ref.wait()


def assert_restarted(sup_ref: Any, child_id: Hashable, times: int) -> None:
    """Assert the supervisor ``sup_ref`` restarted child ``child_id`` exactly ``times`` times."""
    rows = [c for c in sup_ref.which_children() if c.id == child_id]
    assert rows, f"{sup_ref} has no child {child_id!r} (children: {[c.id for c in sup_ref.which_children()]})"
    restarts = rows[0].restarts
    assert restarts == times, f"child {child_id!r} of {sup_ref} was restarted {restarts} times, expected {times}"


async def settle() -> None:
    """Let every task run until all are blocked (everything already queued is handled)."""
    await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """A node opened for the test and shut down (reverse start order) after it."""
    async with open_node("test") as n:
        yield n


@pytest.fixture
def reports() -> Iterator[Reports]:
    """Structlog events emitted during the test (see :class:`Reports`)."""
    with capture_reports() as captured:
        yield captured
