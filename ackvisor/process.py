"""The process: the runtime side of one actor incarnation (private).

:class:`_Cell` is what :class:`~ackvisor.actor.ActorRef` points at: the Trio
task running the receive loop (``_serve``), the mailbox, exit signals, links
and monitors bookkeeping, and the exit hooks.  What this module guarantees
(the behaviour contract itself is documented in :mod:`ackvisor.actor`):

* one message at a time, dispatched by exact envelope type (``_Cast`` to
  ``handle_cast``, :class:`~ackvisor.actor.Caller` to ``handle_call``,
  ``_Timed`` and everything else to ``handle_info``); a ``Down`` of a removed
  monitor and a cancelled timer's message are never handled;
* exit signals follow P-2/P-3: ``KILL`` kills, trapping actors get ``Exit``,
  ``normal`` from a peer is ignored, anything else kills without ``terminate``;
* when the process ends: its names are released, its monitors and timers are
  dropped, then linked processes get an exit signal and watchers (monitors,
  pending callers) are notified (P-9), in that order; ``done`` is set last.

Import direction: :mod:`ackvisor.actor` imports this module; the behaviour-API
names used here at run time (``ActorRef``, ``Caller``, ``IGNORE``, ``NOREPLY``,
``exit_reason_of``) are imported lazily, once per process start, never per
message.
"""

from __future__ import annotations

import contextvars
import itertools
import math
from typing import TYPE_CHECKING, Any, Callable

import structlog
import trio
from trio.lowlevel import checkpoint, checkpoint_if_cancelled, current_task, wait_task_rescheduled
from .exits import KILLED, NORMAL, NOPROC, SHUTDOWN, CalleeExited, Kill, Normal, NoProcError, StartError, reason_fields
from .links import Down, Exit, MonitorRef
from .mailbox import Mailbox, OverflowPolicy
from .timers import _CANCELLED, TimerRef

if TYPE_CHECKING:
    from .actor import Actor, ActorRef
    from .node import Node

# Same logger name as before the split: log records are unchanged.
log = structlog.get_logger("ackvisor.actor")

DEFAULT_SHUTDOWN = 5.0
#: Messages an actor may take from a non-empty mailbox before it yields to the scheduler.
FAIR_BURST = 16
_ids = itertools.count(1)
_current: contextvars.ContextVar["_Cell | None"] = contextvars.ContextVar("ackvisor_actor", default=None)


# ---------------------------------------------------------------- envelopes


class _Cast:
    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request


class _Timed:
    __slots__ = ("tref", "message")

    def __init__(self, tref: TimerRef, message: Any) -> None:
        self.tref = tref
        self.message = message



def current_cell() -> "_Cell | None":
    return _current.get()


# ------------------------------------------------------------------- process


class _Cell:
    """The runtime side of one actor incarnation (private)."""

    __slots__ = (
        "id",
        "ref",
        "actor",
        "node",
        "name",
        "mailbox",
        "scope",
        "loop_scope",
        "nursery",
        "task",
        "links",
        "monitors",
        "watchers",
        "trap_exit",
        "alive",
        "reason",
        "pending",
        "run_terminate",
        "stop_reason",
        "done",
        "started",
        "timers",
    )

    def __init__(
        self,
        node: "Node",
        actor: Actor,
        *,
        name: str | None,
        mailbox_size: float,
        overflow: OverflowPolicy,
    ) -> None:
        self.id = next(_ids)
        self.node = node
        self.actor = actor
        self.name = name
        self.mailbox = Mailbox(
            mailbox_size,
            overflow,
            on_dead_letter=self._dead_letter,
            on_overflow=self._overflowed,
        )
        from .actor import ActorRef  # lazy: ackvisor.actor imports this module

        self.ref = ActorRef(self)
        self.scope: trio.CancelScope | None = None
        self.loop_scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None
        self.task: Any = None
        # Created on first use: most actors never link or monitor.
        self.links: set[_Cell] | None = None
        self.monitors: dict[MonitorRef, _Cell] | None = None  # monitors *I* hold -> target
        self.watchers: dict[object, Callable[[ActorRef, Any], None]] | None = None
        self.trap_exit = False
        self.alive = True
        self.reason: Any = None
        self.pending: Any = None
        self.run_terminate = True
        self.stop_reason: Any = None
        self.done: trio.Event | None = None
        self.started = False
        self.timers: set[TimerRef] | None = None  # pending timers addressed to this actor
        actor.ref = self.ref
        actor.node = node
        actor._cell = self

    # ----- signals from outside (all sync)

    def shutdown(self, reason: Any = SHUTDOWN, timeout: float = DEFAULT_SHUTDOWN) -> None:
        """Orderly stop: interrupt the loop, run ``terminate`` within ``timeout``, then kill."""
        if not self.alive:
            return
        if timeout == "brutal_kill":
            self.kill()
            return
        if self.pending is None:
            self.pending = reason
        if self.scope is not None and timeout != math.inf:
            self.scope.deadline = min(self.scope.deadline, trio.current_time() + timeout)
        if self.loop_scope is not None:
            self.loop_scope.cancel()
        elif self.scope is not None and not self.started:
            self.scope.cancel()  # still in init: abandon the start

    def kill(self, reason: Any = KILLED) -> None:
        """Untrappable stop: no ``terminate`` (R-3)."""
        if not self.alive:
            return
        self.pending = reason
        self.run_terminate = False
        if self.scope is not None:
            self.scope.cancel()

    def signal(self, sender: ActorRef | None, reason: Any, *, from_self: bool = False) -> None:
        """Deliver an exit signal per P-2/P-3."""
        if not self.alive:
            return
        if isinstance(reason, Kill):
            self.kill(KILLED)
        elif self.trap_exit and not from_self:
            self.mailbox.put(Exit(sender, reason))
        elif isinstance(reason, Normal) and not from_self:
            return
        else:
            self.kill(reason)

    def crash(self, reason: Any) -> None:
        """Fail from inside (a helper raised): like a handler crash, ``terminate`` runs."""
        if not self.alive or self.pending is not None:
            return
        self.pending = reason
        if self.loop_scope is not None:
            self.loop_scope.cancel()
        elif not self.started and self.scope is not None:
            self.scope.cancel()  # still in init: the start fails with this reason
        # else: already stopping (terminate is running); its reason stands

    def _overflowed(self) -> None:
        from .exits import Error

        self.crash(Error("mailbox_overflow", depth=self.mailbox.depth))

    def _dead_letter(self, item: Any, why: str) -> None:
        from .actor import Caller  # lazy: ackvisor.actor imports this module

        if isinstance(item, Caller):
            item._fail(CalleeExited(self.ref, why))
        message = item.request if isinstance(item, (Caller, _Cast)) else getattr(item, "message", item)
        log.warning("dead_letter", actor=repr(self.ref), why=why, message=repr(message)[:200])

    # ----- links and monitors

    def link(self, ref: ActorRef) -> None:
        other = ref._cell
        if other is self:
            return
        if not other.alive:
            if self.trap_exit:
                self.mailbox.put(Exit(ref, NOPROC))
                return
            raise NoProcError(ref)
        if self.links is None:
            self.links = set()
        if other.links is None:
            other.links = set()
        self.links.add(other)
        other.links.add(self)

    def unlink(self, ref: ActorRef) -> None:
        other = ref._cell
        if self.links:
            self.links.discard(other)
        if other.links:
            other.links.discard(self)

    def monitor(self, ref: ActorRef) -> MonitorRef:
        target = ref._cell
        mref = MonitorRef(ref)
        if not target.alive:
            mref.active = True
            self.mailbox.put(Down(mref, ref, NOPROC))
            return mref
        if self.monitors is None:
            self.monitors = {}
        self.monitors[mref] = target
        mailbox = self.mailbox
        if target.watchers is None:
            target.watchers = {}
        target.watchers[mref] = lambda r, reason: mailbox.put(Down(mref, r, reason))
        return mref

    def demonitor(self, mref: MonitorRef) -> None:
        mref.active = False
        target = self.monitors.pop(mref, None) if self.monitors else None
        if target is not None and target.watchers:
            target.watchers.pop(mref, None)

    # ----- helpers

    def start_helper(self, fn: Callable[..., Any], args: tuple[Any, ...], name: str | None) -> None:
        if self.nursery is None:
            raise RuntimeError("actor has no nursery (not started or already ended)")
        self.nursery.start_soon(self._guard_helper, fn, args, name=name or getattr(fn, "__qualname__", None))

    async def _guard_helper(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        except Exception as e:
            from .actor import exit_reason_of  # lazy: ackvisor.actor imports this module

            self.crash(exit_reason_of(e))
        except KeyboardInterrupt:
            self.node._interrupt()

    def _split_interrupt(self, group: BaseExceptionGroup) -> None:
        """A group escaped a handler: forward Ctrl-C to the node, crash on errors, re-raise the rest."""
        ki, rest = group.split(KeyboardInterrupt)
        if ki is None:
            raise group
        self.node._interrupt()
        if rest is None:
            return
        if isinstance(rest, Exception):
            from .actor import exit_reason_of  # lazy: ackvisor.actor imports this module

            self.stop_reason = exit_reason_of(rest)
            return
        raise rest

    # ----- the task

    async def run(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        register: Callable[["_Cell"], None] | None,
        task_status: trio.TaskStatus[ActorRef | None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        from .actor import IGNORE, exit_reason_of  # lazy: ackvisor.actor imports this module

        _current.set(self)
        self.task = current_task()
        actor = self.actor
        init_failure: Any = None
        ignored = False
        try:
            # The nursery's own cancel scope is the actor's scope: cancelling it
            # kills the actor and its helpers; its deadline is the shutdown time.
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                self.scope = nursery.cancel_scope
                try:
                    if register is not None:
                        register(self)
                        register = None  # an idle actor keeps nothing it does not need
                    result = await actor.init(*args, **kwargs)
                except Exception as e:
                    init_failure = exit_reason_of(e)
                    nursery.cancel_scope.cancel()
                else:
                    args = kwargs = None  # type: ignore[assignment]
                    if result is IGNORE:
                        ignored = True
                        nursery.cancel_scope.cancel()
                    else:
                        self.started = True
                        task_status.started(self.ref)
                        task_status = None  # type: ignore[assignment]  # frees the start nursery
                        await self._serve()
                        nursery.cancel_scope.cancel()
        except trio.Cancelled:
            # Cancelled from outside our own scope (the owner's nursery is
            # closing): an orderly shutdown, ``terminate`` already ran in _serve.
            if self.reason is None:
                self.reason = self.pending if self.pending is not None else SHUTDOWN
            raise
        finally:
            if self.reason is None:
                if init_failure is not None:
                    self.reason = init_failure
                elif ignored:
                    self.reason = NORMAL
                elif self.pending is not None and (not self.started or not self.run_terminate):
                    self.reason = self.pending
                elif not self.started:
                    self.reason = SHUTDOWN
                elif self.stop_reason is None and self.scope is not None and self.scope.cancelled_caught:
                    # Our own scope's deadline (the shutdown time) expired before
                    # terminate could run: that is the kill (S-5).
                    self.reason = KILLED
                else:
                    self.reason = self.stop_reason if self.stop_reason is not None else NORMAL
            self._exit()
        if not self.started:
            if ignored:
                task_status.started(None)
                return
            raise StartError(repr(self.ref), self.reason)

    async def _serve(self) -> None:
        """The receive loop, then ``terminate``. Sets ``stop_reason`` to the exit reason.

        Hot path: the mailbox's ``get`` is inlined (no extra coroutine frame per
        message nor while idle) and dispatch is by exact envelope type.

        Taking a message is always a cancel point (a kill or exit signal stops
        the loop before the next message, as with a memory channel's
        ``receive``), but it yields to the scheduler only when the mailbox is
        empty or after ``FAIR_BURST`` messages in a row (OTP_SEMANTICS 9.8 item
        7: bursts checkpoint periodically for fairness).
        """
        from .actor import NOREPLY, Caller, exit_reason_of  # lazy, once per actor: not per message

        actor = self.actor
        mailbox = self.mailbox
        queue = mailbox._queue
        take = mailbox._take
        abort = mailbox._abort
        task = self.task
        self.loop_scope = trio.CancelScope()
        burst = 0
        try:
            with self.loop_scope:
                while self.stop_reason is None:
                    # --- inlined Mailbox.get(): always a cancel point; a schedule point
                    # only every FAIR_BURST messages taken without waiting, so a message
                    # the actor sends itself (or a burst) is not a scheduler round trip.
                    if mailbox._head < len(queue):
                        burst += 1
                        if burst >= FAIR_BURST:
                            burst = 0
                            await checkpoint()
                        else:
                            await checkpoint_if_cancelled()
                    else:
                        burst = 0
                    while mailbox._head >= len(queue):
                        mailbox._waiter = task
                        await wait_task_rescheduled(abort)
                    item = take()
                    # --- dispatch
                    cls = type(item)
                    try:
                        if cls is _Cast:
                            await actor.handle_cast(item.request)
                        elif cls is Caller:
                            # Handled even if the caller already gave up (GS-12):
                            # the work is not cancelled, only the reply is dropped.
                            result = await actor.handle_call(item.request, item)
                            if result is not NOREPLY:
                                item.reply(result)
                        elif cls is _Timed:
                            if item.tref._state != _CANCELLED:
                                await actor.handle_info(item.message)
                        elif cls is Down:
                            mref = item.monitor
                            if mref.active:
                                mref.active = False
                                if self.monitors:
                                    self.monitors.pop(mref, None)
                                await actor.handle_info(item)
                        else:
                            await actor.handle_info(item)
                    except Exception as e:
                        self.stop_reason = exit_reason_of(e)
                    except KeyboardInterrupt:
                        # Ctrl-C landed in this handler: not this actor's failure.
                        # The node stops the whole tree in order, then re-raises it.
                        self.node._interrupt()
                    except BaseExceptionGroup as group:
                        self._split_interrupt(group)
        except BaseException as exc:
            # Not our loop_scope's cancel: the owner's nursery is closing, or we
            # were killed. An orderly close still gets a bounded ``terminate``.
            self.loop_scope = None
            if _only_cancelled(exc) and self.run_terminate and not self.scope.cancel_called:  # type: ignore[union-attr]
                self.stop_reason = self.pending if self.pending is not None else SHUTDOWN
                with trio.CancelScope(shield=True) as cleanup:
                    cleanup.deadline = trio.current_time() + self.actor.shutdown_timeout
                    await self._terminate(self.stop_reason)
            raise
        finally:
            self.loop_scope = None
        if self.stop_reason is None:
            # The loop was interrupted: an orderly shutdown or a helper crash.
            self.stop_reason = self.pending if self.pending is not None else SHUTDOWN
        if self.run_terminate:
            await self._terminate(self.stop_reason)

    async def _terminate(self, reason: Any) -> None:
        try:
            await self.actor.terminate(reason)
        except trio.Cancelled:
            # Ran out of shutdown time: the supervisor's deadline is the kill.
            self.stop_reason = KILLED
            raise
        except Exception as e:
            from .actor import exit_reason_of  # lazy: ackvisor.actor imports this module

            reason = exit_reason_of(e)
            log.error("terminate_failed", actor=repr(self.ref), **reason_fields(reason))
            self.stop_reason = reason
        except KeyboardInterrupt:
            self.node._interrupt()

    def _exit(self) -> None:
        self.alive = False
        self.nursery = None
        self.mailbox.close()
        node = self.node
        node.registry._remove_actor(self.ref)
        node._forget(self)
        if self.monitors:
            for mref in list(self.monitors):
                self.demonitor(mref)
        if self.timers:
            for tref in list(self.timers):
                tref._discard()  # T-4: timers addressed to a dead actor die with it
        reason = self.reason
        links, self.links = self.links, None
        if links:
            for other in links:
                if other.links:
                    other.links.discard(self)
                other.signal(self.ref, reason)
        watchers, self.watchers = self.watchers, None
        if watchers:
            for notify in list(watchers.values()):
                notify(self.ref, reason)
        if self.done is not None:
            self.done.set()



def _only_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_cancelled(e) for e in exc.exceptions)
    return False
