"""Links, monitors and exit signals (OTP_SEMANTICS P-1..P-9).

* A **link** is bidirectional: when either end exits, the other receives an
  exit signal carrying the reason (P-1).  A non-trapping receiver ignores
  ``normal`` and dies with any other reason, without running ``terminate``
  (P-2, GS-17); a trapping receiver gets an :class:`Exit` message instead.
  ``KILL`` is never trappable (R-3).
* A **monitor** is one-way and stackable: the watcher gets one :class:`Down`
  message per monitor when the target ends, or at once with ``noproc`` if the
  target is already dead (P-4, P-5).  After :func:`demonitor` returns, no
  ``Down`` for that monitor is ever handled, even one already queued (P-6).

The functions here act on behalf of the *current actor* (the one whose
handler is running); they are sync and never block.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .actor import ActorRef

__all__ = ["Exit", "Down", "MonitorRef", "link", "unlink", "monitor", "demonitor", "exit", "trap_exit"]

_monitor_ids = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Exit:
    """Message a trapping actor receives when a linked actor exits (or ``exit(ref, reason)`` is sent)."""

    sender: "ActorRef | None"
    reason: Any


@dataclass(slots=True, eq=False)
class MonitorRef:
    """Handle of one monitor; pass it to :func:`demonitor`."""

    target: "ActorRef"
    id: int = field(default_factory=lambda: next(_monitor_ids))
    active: bool = True

    def __repr__(self) -> str:
        return f"<MonitorRef #{self.id} on {self.target}>"


@dataclass(frozen=True, slots=True)
class Down:
    """Message a watcher receives when a monitored actor ends; ``reason`` is its exit reason."""

    monitor: MonitorRef
    actor: "ActorRef"
    reason: Any


def _me() -> Any:
    from .actor import current_cell

    cell = current_cell()
    if cell is None:
        raise RuntimeError("this function must be called from inside an actor")
    return cell


def link(ref: "ActorRef") -> None:
    """Link the current actor to ``ref`` (idempotent; raises NoProcError if ``ref`` is dead and we do not trap)."""
    _me().link(ref)


def unlink(ref: "ActorRef") -> None:
    """Remove the link between the current actor and ``ref``, if any."""
    _me().unlink(ref)


def monitor(ref: "ActorRef") -> MonitorRef:
    """Monitor ``ref`` from the current actor; a :class:`Down` message follows its exit."""
    return _me().monitor(ref)


def demonitor(mref: MonitorRef) -> None:
    """Remove a monitor; a ``Down`` for it that is already queued is dropped too (P-6)."""
    _me().demonitor(mref)


def exit(ref: "ActorRef", reason: Any) -> None:  # noqa: A001 - the OTP name
    """Send an exit signal to ``ref`` as if a link fired (P-3); ``KILL`` is untrappable."""
    ref.exit(reason)


def trap_exit(flag: bool = True) -> None:
    """Turn exit trapping on or off for the current actor (P-8)."""
    _me().trap_exit = flag
