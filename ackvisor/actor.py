"""Actors: the ``Actor`` behaviour (gen_server-like) and ``ActorRef``, its pid.

An actor is one Trio task with a :class:`~ackvisor.mailbox.Mailbox`.  It
handles one message at a time (GS-4): calls go to ``handle_call``, casts to
``handle_cast``, everything else (plain sends, timer messages, ``Exit`` and
``Down``) to ``handle_info``.  Each actor owns a private nursery for its
helpers (``start_soon``) and child actors (``spawn``), so nothing it starts
outlives it.

Lifecycle guarantees:

* start is synchronous (GS-1): ``spawn`` returns once ``init`` has returned;
  an exception in ``init`` fails the start with :class:`StartError` and
  ``terminate`` is not called (GS-2); ``init`` may return :data:`IGNORE`.
* a handler that raises (or a helper task that raises) crashes the actor:
  ``terminate(reason)`` runs, then the actor exits with that exception as its
  reason.  ``self.stop(reason)`` or ``raise ActorExit(reason)`` stops it with
  ``reason`` after ``terminate``.
* decision (differs from OTP, documented): ``terminate`` also runs when a
  supervisor shuts the actor down, whether or not it traps exits, bounded by
  the child's shutdown time.  It does **not** run when the actor is killed
  (``KILL``, ``brutal_kill``) or dies from a linked peer's abnormal exit while
  not trapping (GS-17).  Python still runs ``finally`` blocks of a killed
  actor, but any ``await`` in them is cancelled at once.
* when an actor ends: its names are released, then linked actors get an exit
  signal and monitors a ``Down`` (P-9), in that order.

The runtime side of an incarnation (the process that runs these callbacks)
is the private :mod:`ackvisor.process`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import structlog
import trio
from trio.lowlevel import Abort, checkpoint, current_task, reschedule, wait_task_rescheduled

from .exits import (
    NORMAL,
    SHUTDOWN,
    CalleeExited,
    CallingSelf,
    CallTimeout,
    Killed,
    Normal,
    NoProcError,
    Shutdown,
    is_expected,
)
from .links import MonitorRef
from .mailbox import MailboxStatistics
from .timers import TimerRef

# The runtime side of an actor (the process: run loop, signals, links and
# monitors, exit hooks) lives in .process; its private names are re-exported
# here because other modules import them from ackvisor.actor.
from .process import DEFAULT_SHUTDOWN, _Cast, _Cell, _current, _Timed, current_cell  # noqa: F401

if TYPE_CHECKING:
    from .node import Node

__all__ = [
    "Actor",
    "ActorRef",
    "ActorExit",
    "ActorStatistics",
    "Caller",
    "IGNORE",
    "NOREPLY",
    "current_actor",
    "DEFAULT_SHUTDOWN",
]

log = structlog.get_logger("ackvisor.actor")


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


IGNORE: Any = _Sentinel("IGNORE")
"""Return this from ``init`` to end the start quietly (GS-2 ``ignore``): spawn returns None."""

NOREPLY: Any = _Sentinel("NOREPLY")
"""Return this from ``handle_call`` to reply later with ``caller.reply(value)`` (GS-14)."""


class ActorExit(Exception):
    """Raise from a handler or helper to stop the actor with ``reason`` (``terminate`` runs first)."""

    def __init__(self, reason: Any = NORMAL) -> None:
        super().__init__(str(reason))
        self.reason = reason


# ---------------------------------------------------------------- envelopes


_TIMED_OUT: Any = _Sentinel("TIMED_OUT")


class Caller:
    """The ``From`` of a call: reply to it exactly once, now or later (GS-14).

    Replying to a caller that already gave up (timeout, cancellation) is a
    silent no-op, like an OTP 24 alias (GS-12, GS-13).

    (Internally the Caller is also the call's envelope in the callee's
    mailbox, and the waiting task is parked/rescheduled directly: one object
    per call, no ``trio.Event``.)
    """

    __slots__ = ("request", "_task", "_value", "_error", "_done")

    def __init__(self, request: Any = None) -> None:
        self.request = request
        self._task: Any = None
        self._value: Any = None
        self._error: Any = None
        self._done = False

    def reply(self, value: Any) -> None:
        """Send the reply; ignored if already replied or the caller left."""
        if self._done:
            return
        self._done = True
        self._value = value
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task)

    def _fail(self, error: Any) -> None:
        if self._done:
            return
        self._done = True
        self._error = error
        task = self._task
        if task is not None:
            self._task = None
            reschedule(task)

    def __call__(self, ref: "ActorRef", reason: Any) -> None:
        # Watcher protocol: the callee ended before replying (GS-11).
        self._fail(CalleeExited(ref, reason))

    def _timed_out(self, _tref: Any) -> None:
        self._fail(_TIMED_OUT)

    def _abort(self, _raise_cancel: Any) -> Abort:
        # The waiting caller was cancelled: from now on a reply is dropped.
        self._task = None
        self._done = True
        return Abort.SUCCEEDED

    @property
    def replied(self) -> bool:
        """True once a reply (or a failure) has been delivered or the caller gave up."""
        return self._done


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A snapshot of an actor: identity, liveness, mailbox counters, links and monitors."""

    id: int
    name: str | None
    actor: str
    alive: bool
    trap_exit: bool
    mailbox: MailboxStatistics
    links: int
    monitors: int
    exit_reason: str | None


# --------------------------------------------------------------------- refs


class ActorRef:
    """The address of one actor incarnation (a pid): compare and hash by identity.

    ``cast`` and ``send`` are sync and never block; sending to a dead actor is
    a silent no-op (GS-5).  ``call`` is async and always a checkpoint.  A
    restarted child gets a new ``ActorRef``; old refs stay dead.
    """

    __slots__ = ("_cell", "id", "__weakref__")

    def __init__(self, cell: "_Cell") -> None:
        self._cell = cell
        self.id = cell.id

    def __repr__(self) -> str:
        cell = self._cell
        label = cell.name or type(cell.actor).__name__
        return f"<ActorRef #{self.id} {label}{'' if cell.alive else ' dead'}>"

    @property
    def name(self) -> str | None:
        """The name given at spawn, if any."""
        return self._cell.name

    @property
    def alive(self) -> bool:
        """True until the actor's exit is final."""
        return self._cell.alive

    @property
    def exit_reason(self) -> Any:
        """The final exit reason, or None while alive."""
        return None if self._cell.alive else self._cell.reason

    @property
    def node(self) -> "Node":
        """The node this actor lives on."""
        return self._cell.node

    def cast(self, request: Any) -> None:
        """Queue ``request`` for ``handle_cast``; sync, never blocks, always succeeds (GS-5)."""
        self._cell.mailbox.put(_Cast(request))

    def send(self, message: Any) -> None:
        """Queue ``message`` for ``handle_info``; sync, never blocks."""
        self._cell.mailbox.put(message)

    async def call(self, request: Any, *, timeout: float | None = 5.0) -> Any:
        """Send ``request`` to ``handle_call`` and wait for the reply (GS-10..GS-13).

        Raises :class:`NoProcError` at once if the actor is dead,
        :class:`CalleeExited` (with the callee's reason) as soon as it dies
        before replying, :class:`CallTimeout` after ``timeout`` seconds
        (``None`` waits forever; the callee keeps running and a late reply is
        dropped), :class:`CallingSelf` if an actor calls itself.  If the caller
        is cancelled, ``Cancelled`` propagates unchanged.
        """
        cell = self._cell
        if not cell.alive:
            await checkpoint()
            raise NoProcError(self)
        task = current_task()
        if cell.task is task:
            raise CallingSelf(f"{self} called itself")
        caller = Caller(request)
        watchers = cell.watchers
        if watchers is None:
            watchers = cell.watchers = {}
        watchers[caller] = caller  # a Down-like notification if the callee dies first
        timer = None
        try:
            cell.mailbox.put(caller)
            if caller._done:  # refused at once (mailbox overflow)
                await checkpoint()
            else:
                if timeout is not None:
                    # The node's timer heap, not a CancelScope: far cheaper per call.
                    timer = cell.node.timers.schedule(timeout, caller._timed_out)
                caller._task = task
                await wait_task_rescheduled(caller._abort)
        finally:
            caller._done = True
            del watchers[caller]
            if timer is not None:
                timer._discard()
        error = caller._error
        if error is not None:
            if error is _TIMED_OUT:
                raise CallTimeout(self, request, timeout)  # type: ignore[arg-type]
            raise error
        return caller._value

    def exit(self, reason: Any) -> None:
        """Send an exit signal as if a link fired (P-3): ``KILL`` kills, trapping actors get ``Exit``."""
        sender = _current.get()
        self._cell.signal(sender.ref if sender is not None else None, reason, from_self=sender is self._cell)

    async def stop(self, reason: Any = NORMAL, *, timeout: float | None = None) -> None:
        """Stop the actor with ``reason`` (``terminate`` runs) and wait until it has ended (GS-20).

        Raises NoProcError if it was not alive; raises CallTimeout if it did
        not end within ``timeout`` (it is then killed).
        """
        cell = self._cell
        if not cell.alive:
            await trio.lowlevel.checkpoint()
            raise NoProcError(self)
        deadline = math.inf if timeout is None else trio.current_time() + timeout
        cell.shutdown(reason, math.inf if timeout is None else timeout)
        final = await self.wait()
        if isinstance(final, Killed) and not isinstance(reason, Killed) and trio.current_time() >= deadline:
            raise CallTimeout(self, ("stop", reason), timeout)  # type: ignore[arg-type]

    async def wait(self) -> Any:
        """Wait until the actor has ended and return its exit reason."""
        cell = self._cell
        if cell.alive:
            if cell.done is None:
                cell.done = trio.Event()
            await cell.done.wait()
        else:
            await trio.lowlevel.checkpoint()
        return cell.reason

    def statistics(self) -> ActorStatistics:
        """A frozen snapshot of this actor's state and mailbox counters."""
        cell = self._cell
        return ActorStatistics(
            id=cell.id,
            name=cell.name,
            actor=type(cell.actor).__qualname__,
            alive=cell.alive,
            trap_exit=cell.trap_exit,
            mailbox=cell.mailbox.statistics(),
            links=len(cell.links or ()),
            monitors=len(cell.monitors or ()),
            exit_reason=None if cell.alive else str(cell.reason),
        )

    def _send_after(self, message: Any, seconds: float) -> TimerRef:
        cell = self._cell
        mailbox = cell.mailbox
        timers = cell.timers
        if timers is None:
            timers = cell.timers = set()
        tref = cell.node.timers.schedule(seconds, lambda tref: mailbox.put(_Timed(tref, message)), timers)
        if not cell.alive:
            tref.cancel()  # addressed to a dead actor: never delivered (T-4)
        return tref


def exit_reason_of(exc: BaseException) -> Any:
    """The exit reason an exception stands for (OTP_SEMANTICS 9.3).

    A group holding a single exception stands for that exception (so an
    error raised in a handler's own nursery is reported by its name, not as
    "ExceptionGroup"); :class:`ActorExit` stands for its ``reason``; a group
    of several exceptions is the reason as it is.
    """
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, ActorExit):
        return exc.reason
    return exc


def current_actor() -> ActorRef | None:
    """The ``ActorRef`` of the actor whose code is running (handlers and its helpers), or None."""
    cell = _current.get()
    return cell.ref if cell is not None else None


# ------------------------------------------------------------------ behaviour


class Actor:
    """Base class of every actor. Override the callbacks you need; all are async.

    ``self.ref`` and ``self.node`` are set before ``init`` runs.
    """

    ref: ActorRef
    node: "Node"
    _cell: "_Cell"

    #: Default shutdown time (seconds) a supervisor grants this actor's ``terminate``.
    shutdown_timeout: ClassVar[float] = DEFAULT_SHUTDOWN

    async def init(self, *args: Any, **kwargs: Any) -> Any:
        """Set up state. Return :data:`IGNORE` to not start. Raising fails the start."""

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        """Answer a call: the return value is the reply, or :data:`NOREPLY` to reply later."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls (got {request!r})")

    async def handle_cast(self, request: Any) -> None:
        """Handle a cast."""
        raise NotImplementedError(f"{type(self).__name__} does not handle casts (got {request!r})")

    async def handle_info(self, message: Any) -> None:
        """Handle any other message; the default logs and drops it (GS-9)."""
        log.warning("unexpected_message", actor=repr(self.ref), message=repr(message)[:200])

    async def terminate(self, reason: Any) -> None:
        """Clean up before exiting (see the module docstring for when it runs)."""

    # ----- helpers available to subclasses (all sync except spawn)

    def stop(self, reason: Any = NORMAL) -> None:
        """Stop after the current handler returns, with ``reason`` (``terminate`` runs)."""
        self._cell.stop_reason = reason

    @property
    def trap_exit(self) -> bool:
        """Whether exit signals arrive as :class:`Exit` messages instead of killing this actor."""
        return self._cell.trap_exit

    @trap_exit.setter
    def trap_exit(self, flag: bool) -> None:
        self._cell.trap_exit = bool(flag)

    def link(self, ref: ActorRef) -> None:
        """Link to ``ref`` (P-1)."""
        self._cell.link(ref)

    def unlink(self, ref: ActorRef) -> None:
        """Remove the link to ``ref``."""
        self._cell.unlink(ref)

    def monitor(self, ref: ActorRef) -> MonitorRef:
        """Monitor ``ref``; a :class:`Down` arrives in ``handle_info`` when it ends (P-4, P-5)."""
        return self._cell.monitor(ref)

    def demonitor(self, mref: MonitorRef) -> None:
        """Remove a monitor; its Down is never handled afterwards (P-6)."""
        self._cell.demonitor(mref)

    def send_after(self, message: Any, seconds: float) -> TimerRef:
        """Deliver ``message`` to this actor's ``handle_info`` after ``seconds``."""
        return self.ref._send_after(message, seconds)

    def start_soon(self, fn: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        """Run ``fn(*args)`` as a helper task owned by this actor; if it raises, the actor crashes."""
        self._cell.start_helper(fn, args, name)

    async def spawn(self, actor: "type[Actor] | Actor", *args: Any, **options: Any) -> ActorRef | None:
        """Start a child actor owned by this one (it dies with this actor); see :meth:`Node.spawn`."""
        return await self.node._spawn_in(self._cell.nursery, actor, args, owner=self._cell, **options)


def describe_reason(reason: Any) -> str:
    """Human text for a reason (``normal``, ``shutdown``, ``no_ack_received``, ``ValueError: x``)."""
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


_EXPECTED_TYPES = (Normal, Shutdown, Killed)
assert is_expected(NORMAL) and is_expected(SHUTDOWN)
