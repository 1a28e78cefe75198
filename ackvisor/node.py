"""The node: the root of an actor tree inside one Trio program.

``async with open_node() as node:`` embeds a tree in any Trio program.  The
node owns the process table, the registry and the timer task.  Leaving the
block shuts every top-level actor down in reverse start order, each within
its shutdown time (supervisors stop their own children the same way), then
cancels whatever is left.  If the block is left by Ctrl-C, the tree is shut
down the same way and a plain ``KeyboardInterrupt`` (not an exception group)
is re-raised, wherever the interrupt landed (in the block, in a task of the
program, or inside an actor's handler).  A second Ctrl-C during that orderly
shutdown kills whatever is still alive (no ``terminate``).
"""

from __future__ import annotations

import inspect
import math
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Hashable, Iterable

import trio

from .actor import DEFAULT_SHUTDOWN, Actor, ActorRef, _Cell, current_cell, exit_reason_of
from .childspec import ChildSpec
from .exits import SHUTDOWN
from .mailbox import OverflowPolicy
from .registry import Registry
from .supervisor import Supervisor, SupervisorRef
from .timers import TimerRef, TimerService

__all__ = ["Node", "open_node", "TaskActor"]


class TaskActor(Actor):
    """Runs a plain async function as an actor (a Trio task worker under a supervisor).

    If the function accepts ``task_status``, the actor is ready when it calls
    ``task_status.started()`` (like ``nursery.start``); otherwise at once.
    The actor exits ``normal`` when the function returns, and crashes with
    its exception if it raises.
    """

    async def init(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._fn = fn
        self._early: Any = None
        self.worker = getattr(fn, "__qualname__", repr(fn))
        await self._cell.nursery.start(self._run, fn, args, kwargs)
        if self._early is not None:
            # The function ended right after saying it was ready, before this
            # actor finished starting: it exits at once with that reason.
            self._cell.stop_reason = self._early

    async def _run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        cell = self._cell
        status = _Status(task_status)
        try:
            if "task_status" in inspect.signature(fn).parameters:
                await fn(*args, task_status=status, **kwargs)
            else:
                status.started()
                await fn(*args, **kwargs)
        except Exception as e:
            if not status.ready:
                raise  # before readiness: nursery.start in init raises it, the start fails
            self._finish(exit_reason_of(e))
            return
        if not status.ready:
            status.started()
        self._finish(_normal())

    def _finish(self, reason: Any) -> None:
        cell = self._cell
        if cell.started:
            cell.crash(reason)  # interrupts the receive loop; terminate runs, then exit
        else:
            self._early = reason

    async def handle_info(self, message: Any) -> None:
        pass  # a task worker has no protocol; stray messages are ignored


class _Status:
    """Wraps a task_status to remember whether the function said it was ready."""

    __slots__ = ("_inner", "ready")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.ready = False

    def started(self, value: Any = None) -> None:
        self.ready = True
        self._inner.started(value)


def _normal() -> Any:
    from .exits import NORMAL

    return NORMAL


class Node:
    """One actor runtime in one Trio program: process table, registry, timers, top-level actors."""

    def __init__(self, name: str, nursery: trio.Nursery) -> None:
        self.name = name
        self.registry = Registry()
        self.timers = TimerService()
        self._nursery = nursery
        self._cells: dict[int, _Cell] = {}
        # Live top-level actors in start order (id -> (ref, shutdown)); dead ones leave at exit.
        self._top: dict[int, tuple[ActorRef, float | str]] = {}
        self.closing = False
        self._interrupted = False
        self._body_scope: trio.CancelScope | None = None

    # ----- spawning

    async def spawn(
        self,
        actor: "type[Actor] | Actor | Callable[..., Any]",
        *args: Any,
        name: str | None = None,
        link: bool = False,
        trap_exit: bool = False,
        mailbox_size: float = math.inf,
        overflow: OverflowPolicy = "drop_new",
        kwargs: dict[str, Any] | None = None,
        shutdown: float | str | None = None,
    ) -> ActorRef | None:
        """Start an actor at the top level of the node and return its ref once ``init`` returned.

        ``actor`` is an Actor class (instantiated without arguments, then
        ``init(*args, **kwargs)``), an Actor instance, or an async function
        (run as a :class:`TaskActor`).  ``link=True`` links it to the calling
        actor.  Raises :class:`StartError` if ``init`` fails; returns None if
        it returned ``IGNORE``.  At node exit top-level actors are stopped in
        reverse start order, each within ``shutdown`` seconds (default: the
        actor's ``shutdown_timeout``).
        """
        caller = current_cell() if link else None
        ref = await self._spawn_in(
            self._nursery,
            actor,
            args,
            kwargs=kwargs,
            name=name,
            link_to=caller,
            trap_exit=trap_exit,
            mailbox_size=mailbox_size,
            overflow=overflow,
        )
        if ref is not None and ref.alive:
            timeout = shutdown if shutdown is not None else ref._cell.actor.shutdown_timeout
            self._top[ref.id] = (ref, timeout)
        return ref

    async def start_supervisor(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        name: str | None = None,
        backoff: tuple[float, float] | None = None,
        id: Hashable | None = None,
    ) -> SupervisorRef:
        """Start a top-level :class:`Supervisor` over ``children``; returns once every child is ready.

        Raises :class:`StartError` naming the child if one fails to start (S-20).
        """
        ref = await self.spawn(
            Supervisor,
            list(children),
            name=name,
            kwargs=dict(strategy=strategy, max_restarts=max_restarts, max_seconds=max_seconds, backoff=backoff, id=id or name),
        )
        assert isinstance(ref, SupervisorRef)
        return ref

    async def _spawn_in(
        self,
        nursery: trio.Nursery | None,
        actor: Any,
        args: tuple[Any, ...],
        *,
        kwargs: Any = None,
        name: str | None = None,
        owner: _Cell | None = None,
        link_to: _Cell | None = None,
        trap_exit: bool = False,
        watch: Callable[[ActorRef, Any], None] | None = None,
        mailbox_size: float = math.inf,
        overflow: OverflowPolicy = "drop_new",
        link: bool = False,
    ) -> ActorRef | None:
        if nursery is None:
            raise RuntimeError("the owner has no nursery (not running)")
        if self.closing and owner is None:
            raise RuntimeError("node is shutting down")
        if isinstance(actor, Actor):
            instance = actor
        elif inspect.isclass(actor) and issubclass(actor, Actor):
            instance = actor()
        elif inspect.iscoroutinefunction(actor) or callable(actor):
            instance = TaskActor()
            args = (actor, *args)
        else:
            raise TypeError(f"cannot spawn {actor!r}: expected an Actor class, Actor instance or async function")
        cell = _Cell(self, instance, name=name, mailbox_size=mailbox_size, overflow=overflow)
        ref_class = getattr(instance, "ref_class", None)
        if ref_class is not None and ref_class is not type(cell.ref):
            cell.ref = ref_class(cell)
            instance.ref = cell.ref
        cell.trap_exit = trap_exit
        if link and owner is not None:
            link_to = owner
        self._cells[cell.id] = cell
        if watch is not None:
            cell.watchers = {watch: watch}

        def register(c: _Cell) -> None:
            if name is not None:
                self.registry.register(name, c.ref)
            if link_to is not None:
                link_to.link(c.ref)

        return await nursery.start(cell.run, args, dict(kwargs or {}), register, name=f"actor:{name or type(instance).__name__}")

    def _forget(self, cell: _Cell) -> None:
        self._cells.pop(cell.id, None)
        self._top.pop(cell.id, None)

    def _kill_all(self) -> None:
        for cell in list(self._cells.values()):
            cell.kill()

    def _interrupt(self) -> None:
        """Ctrl-C landed inside an actor: stop the tree in order and re-raise it at ``open_node``."""
        self._interrupted = True
        if self.closing:
            self._kill_all()  # Ctrl-C during the orderly stop escalates (APP-4)
        elif self._body_scope is not None:
            self._body_scope.cancel()

    # ----- lookups and helpers

    def whereis(self, name: Hashable) -> ActorRef | None:
        """The live actor registered as ``name``, or None."""
        return self.registry.whereis(name)

    def register(self, name: Hashable, ref: ActorRef) -> None:
        """Register ``name`` for ``ref`` (unique)."""
        self.registry.register(name, ref)

    def unregister(self, name: Hashable) -> None:
        """Release ``name``."""
        self.registry.unregister(name)

    def send_after(self, ref: ActorRef, message: Any, seconds: float) -> TimerRef:
        """Deliver ``message`` to ``ref`` after ``seconds``; sync."""
        return ref._send_after(message, seconds)

    @property
    def actor_count(self) -> int:
        """Live actors on this node."""
        return len(self._cells)

    def actors(self) -> list[ActorRef]:
        """Every live actor's ref."""
        return [cell.ref for cell in self._cells.values()]

    def tree(self) -> list[dict[str, Any]]:
        """A plain-data snapshot of the top-level actors and, for supervisors, their subtrees."""
        out = []
        for ref, _ in list(self._top.values()):
            if not ref.alive:
                continue
            entry: dict[str, Any] = {
                "id": ref.name or f"#{ref.id}",
                "kind": "supervisor" if isinstance(ref, SupervisorRef) else "worker",
                "state": "running",
                "restarts": 0,
                "last_exit": None,
                "actor": repr(ref),
                "mailbox_depth": ref._cell.mailbox.depth,
            }
            if isinstance(ref, SupervisorRef):
                entry["strategy"] = ref._sup.strategy
                entry["children"] = ref._sup._tree()
            out.append(entry)
        return out

    # ----- shutdown

    async def shutdown(self) -> None:
        """Stop top-level actors in reverse start order, each within its shutdown time."""
        self.closing = True
        while self._top:
            ref, timeout = self._top.pop(next(reversed(self._top)))
            if not ref.alive:
                continue
            cell = ref._cell
            if timeout == "brutal_kill":
                cell.kill()
            else:
                cell.shutdown(SHUTDOWN, timeout)  # type: ignore[arg-type]
            await ref.wait()


def _only_keyboard_interrupt(exc: BaseException) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_keyboard_interrupt(e) or isinstance(e, trio.Cancelled) for e in exc.exceptions) and any(
            _only_keyboard_interrupt(e) for e in exc.exceptions
        )
    return False


@asynccontextmanager
async def open_node(name: str = "ackvisor") -> AsyncIterator[Node]:
    """Open a node for the duration of the block (see the module docstring for the guarantees)."""
    interrupted = False
    node: Node | None = None
    try:
        async with trio.open_nursery() as nursery:
            node = Node(name, nursery)
            nursery.start_soon(node.timers.run, name="ackvisor:timers")
            try:
                # Ctrl-C that lands inside an actor's code is caught there and
                # cancels this scope, so the body ends and the tree stops in order.
                with trio.CancelScope() as body:
                    node._body_scope = body
                    yield node
            except KeyboardInterrupt:
                interrupted = True
                raise
            except BaseExceptionGroup as group:
                interrupted = _only_keyboard_interrupt(group)
                raise
            finally:
                node._body_scope = None
                try:
                    with trio.CancelScope(shield=True):
                        await node.shutdown()
                except KeyboardInterrupt:
                    # A second Ctrl-C during the orderly stop escalates: whatever
                    # is still alive is killed, without terminate (APP-4).
                    interrupted = True
                    node._kill_all()
                    raise
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if interrupted or _only_keyboard_interrupt(group) or (node is not None and node._interrupted):
            raise KeyboardInterrupt from None
        if len(group.exceptions) == 1 and not isinstance(group.exceptions[0], BaseExceptionGroup):
            raise group.exceptions[0] from None
        raise
    if node is not None and node._interrupted:
        raise KeyboardInterrupt from None


_ = DEFAULT_SHUTDOWN
