"""Supervisors: ``Supervisor`` (static children, three strategies) and ``DynamicSupervisor``.

Semantics follow OTP_SEMANTICS section 5:

* children start in list order, each ready before the next (S-13); a failed
  start during the supervisor's own start stops the ones already started, in
  reverse order, and fails with :class:`StartError` naming the child (S-20);
* a crash in one child never cancels a sibling under ``one_for_one`` (S-7);
  ``one_for_all`` (S-8) and ``rest_for_one`` (S-9) stop the affected siblings
  in reverse order and restart them in start order;
* restart intensity is one sliding window per supervisor (S-14): more than
  ``max_restarts`` restarts within ``max_seconds`` (default 3 in 5 s, S-1),
  measured with ``trio.current_time()`` in float seconds (finer than
  Erlang's whole seconds, S-16), makes the supervisor log
  ``max_restart_intensity_reached``, stop every child in reverse order and
  exit with ``shutdown``, which its parent handles per the child's restart
  type (S-17, S-18);
* stop is in reverse start order, each child within its shutdown time (S-5,
  S-13); a failed restart is retried through the mailbox and counts as a
  restart (S-19).

Reports are structlog events with stable keys: ``child_started``,
``child_terminated`` (the crash report: supervisor, child_id, actor, reason,
traceback), ``child_restarted``, ``start_error``, ``shutdown_error`` and
``max_restart_intensity_reached``.  ``normal``/``shutdown`` exits are not
crash reports (R-1); a ``permanent`` child's expected exit is reported at
info level since it is restarted (R-4).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Hashable, Iterable, Literal

import structlog
import trio

from .actor import NOREPLY, Actor, ActorRef, Caller
from .childspec import STRATEGIES, ChildSpec
from .exits import KILLED, SHUTDOWN, Error, Killed, Shutdown, StartError, is_expected, reason_fields

__all__ = [
    "Supervisor",
    "DynamicSupervisor",
    "SupervisorRef",
    "ChildInfo",
    "ChildCounts",
    "SupervisorStatistics",
    "SupervisorError",
]

log = structlog.get_logger("ackvisor.supervisor")

ChildState = Literal["running", "restarting", "stopped", "undefined"]


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """One row of ``which_children``: the child's id, current ref (or None), kind, state, restarts, last exit."""

    id: Hashable
    ref: ActorRef | None
    type: str
    state: ChildState
    restarts: int
    last_exit: str | None


@dataclass(frozen=True, slots=True)
class ChildCounts:
    """``count_children``: specs, active children, supervisors, workers (S-23)."""

    specs: int
    active: int
    supervisors: int
    workers: int


@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A snapshot: strategy, intensity settings, restarts in the current window, children by state."""

    strategy: str
    max_restarts: int
    max_seconds: float
    restarts_in_window: int
    total_restarts: int
    children: dict[str, int]


class _Child:
    __slots__ = ("spec", "ref", "state", "restarts", "last_exit", "backoff_level")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.ref: ActorRef | None = None
        self.state: ChildState = "stopped"
        self.restarts = 0
        self.last_exit: Any = None
        self.backoff_level = 0

    def info(self) -> ChildInfo:
        return ChildInfo(
            id=self.spec.id,
            ref=self.ref,
            type=self.spec.type,
            state=self.state,
            restarts=self.restarts,
            last_exit=None if self.last_exit is None else _reason_text(self.last_exit),
        )


class _ChildExit:
    __slots__ = ("child", "ref", "reason")

    def __init__(self, child: _Child, ref: ActorRef, reason: Any) -> None:
        self.child = child
        self.ref = ref
        self.reason = reason


class _Retry:
    """Restart ``child`` now; ``counted`` when the intensity was already charged (backoff delays)."""

    __slots__ = ("child", "counted")

    def __init__(self, child: _Child, counted: bool = False) -> None:
        self.child = child
        self.counted = counted


def _reason_text(reason: Any) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


class SupervisorRef(ActorRef):
    """The ``ActorRef`` of a supervisor, with the run-time API (S-23).

    Queries (``which_children``, ``count_children``, ``statistics``) are sync;
    changes go through the supervisor's mailbox and are async.
    """

    __slots__ = ()

    @property
    def _sup(self) -> "_SupervisorBase":
        return self._cell.actor  # type: ignore[return-value]

    async def start_child(self, spec: ChildSpec | Any, *args: Any) -> ActorRef | None:
        """Add and start a child (a ChildSpec; for a DynamicSupervisor also extra args). Returns its ref, or None if it ignored."""
        return await self._request(("start_child", spec, args))

    async def terminate_child(self, id_or_ref: Any) -> None:
        """Stop a child by id (or by ref for a DynamicSupervisor); it is not restarted."""
        await self._request(("terminate_child", id_or_ref))

    async def restart_child(self, id: Hashable) -> ActorRef | None:
        """Start a stopped child again (does not count towards intensity)."""
        return await self._request(("restart_child", id))

    async def delete_child(self, id: Hashable) -> None:
        """Remove a stopped child's spec."""
        await self._request(("delete_child", id))

    async def _request(self, request: Any) -> Any:
        result = await self.call(request, timeout=None)
        if isinstance(result, _Failure):
            raise result.error
        return result

    def which_children(self) -> list[ChildInfo]:
        """Children in start order, with their state (sync snapshot)."""
        return self._sup._which_children()

    def count_children(self) -> ChildCounts:
        """How many specs, active children, supervisors and workers (sync)."""
        return self._sup._count_children()

    def statistics(self) -> SupervisorStatistics:  # type: ignore[override]
        """Restarts in the current window and children by state (sync)."""
        return self._sup._statistics()

    def actor_statistics(self) -> Any:
        """The plain actor statistics (mailbox and links) of the supervisor itself."""
        return ActorRef.statistics(self)


class _Failure:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class SupervisorError(Exception):
    """A run-time request to a supervisor failed (``not_found``, ``running``, ``already_present``, ``max_children``)."""

    def __init__(self, what: str, detail: Any = None) -> None:
        super().__init__(what if detail is None else f"{what}: {detail!r}")
        self.what = what
        self.detail = detail


class _SupervisorBase(Actor):
    ref_class = SupervisorRef
    shutdown_timeout = math.inf

    sup_id: Hashable
    strategy: str
    max_restarts: int
    max_seconds: float
    backoff: tuple[float, float] | None

    def _setup(self, *, max_restarts: int, max_seconds: float, backoff: tuple[float, float] | None, id: Hashable | None) -> None:
        if not isinstance(max_restarts, int) or isinstance(max_restarts, bool) or max_restarts < 0:
            raise ValueError(f"max_restarts must be an int >= 0, not {max_restarts!r}")
        if not isinstance(max_seconds, (int, float)) or isinstance(max_seconds, bool) or max_seconds <= 0:
            raise ValueError(f"max_seconds must be a number > 0, not {max_seconds!r}")
        if backoff is not None and not (len(backoff) == 2 and 0 < backoff[0] <= backoff[1]):
            raise ValueError(f"backoff must be (base_seconds, max_seconds) with 0 < base <= max, not {backoff!r}")
        self.max_restarts = max_restarts
        self.max_seconds = float(max_seconds)
        self.backoff = tuple(backoff) if backoff else None  # type: ignore[assignment]
        self._window: deque[float] = deque()
        self._total_restarts = 0
        self.sup_id = id if id is not None else (self.ref.name or f"supervisor#{self.ref.id}")

    # ----- restart intensity (S-14)

    def _allow_restart(self) -> bool:
        now = trio.current_time()
        window = self._window
        horizon = now - self.max_seconds
        while window and window[0] < horizon:
            window.popleft()
        window.append(now)
        self._total_restarts += 1
        return len(window) <= self.max_restarts

    def _restarts_in_window(self) -> int:
        horizon = trio.current_time() - self.max_seconds
        return sum(1 for t in self._window if t >= horizon)

    # ----- starting and stopping one child

    async def _start(self, child: _Child, *extra: Any) -> bool:
        """Start ``child``; False (and a start_error report) if its start failed."""
        spec = child.spec
        mailbox = self._cell.mailbox

        def watch(ref: ActorRef, reason: Any) -> None:
            mailbox.put(_ChildExit(child, ref, reason))

        try:
            ref = await self.node._spawn_in(
                self._cell.nursery,
                spec.start,
                spec.args + extra,
                kwargs=spec.kwargs,
                name=spec.name,
                owner=self._cell,
                watch=watch,
                mailbox_size=spec.mailbox_size,
                overflow=spec.overflow,
            )
        except StartError as e:
            child.ref = None
            child.last_exit = e.reason
            log.error("start_error", supervisor=str(self.sup_id), child_id=str(spec.id), **reason_fields(e.reason))
            return False
        if ref is None:
            child.state = "undefined"
            child.ref = None
            return True
        child.ref = ref
        child.state = "running"
        log.info(
            "child_started",
            supervisor=str(self.sup_id),
            child_id=str(spec.id),
            actor=repr(ref),
            restart=spec.restart,
            shutdown=spec.shutdown,
            child_type=spec.type,
        )
        return True

    async def _stop(self, child: _Child) -> None:
        """Stop ``child`` per its shutdown spec and wait for it (S-5, S-6)."""
        ref = child.ref
        child.ref = None
        child.state = "stopped"
        if ref is None or not ref.alive:
            return
        spec = child.spec
        cell = ref._cell
        if spec.shutdown == "brutal_kill":
            cell.kill()
        else:
            cell.shutdown(SHUTDOWN, spec.shutdown)
        reason = await ref.wait()
        child.last_exit = reason
        # S-6: brutal_kill expects ``killed``; a timed shutdown expects ``shutdown``
        # (a child killed because it outlived its shutdown time is a shutdown_error).
        ok = isinstance(reason, Killed) if spec.shutdown == "brutal_kill" else isinstance(reason, Shutdown)
        if not ok and not (spec.restart != "permanent" and is_expected(reason)):
            log.error("shutdown_error", supervisor=str(self.sup_id), child_id=str(spec.id), actor=repr(ref), **reason_fields(reason))

    def _should_restart(self, spec: ChildSpec, reason: Any) -> bool:
        if spec.restart == "permanent":
            return True
        if spec.restart == "transient":
            return not is_expected(reason) or isinstance(reason, Killed)
        return False

    def _report_exit(self, child: _Child, ref: ActorRef, reason: Any) -> None:
        spec = child.spec
        expected = is_expected(reason)
        if expected and spec.restart != "permanent":
            return  # not a crash, nothing to restart
        level = log.info if expected else log.error
        level(
            "child_terminated",
            supervisor=str(self.sup_id),
            child_id=str(spec.id),
            actor=repr(ref),
            restart=spec.restart,
            **reason_fields(reason),
        )

    def _backoff_delay(self, child: _Child) -> float:
        assert self.backoff is not None
        base, cap = self.backoff
        if len(self._window) <= 1:
            child.backoff_level = 0
        delay = min(cap, base * (2 ** child.backoff_level))
        child.backoff_level += 1
        return delay * random.uniform(0.5, 1.0)

    async def _give_up(self, offender: _Child, reason: Any) -> None:
        log.error(
            "max_restart_intensity_reached",
            supervisor=str(self.sup_id),
            child_id=str(offender.spec.id),
            max_restarts=self.max_restarts,
            max_seconds=self.max_seconds,
            **reason_fields(reason),
        )
        self.stop(SHUTDOWN)

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if not isinstance(request, tuple) or not request:
            # S-24: garbage never crashes a supervisor.
            log.warning("supervisor_unexpected_message", supervisor=str(self.sup_id), message=repr(request)[:200])
            return _Failure(SupervisorError("unknown_request", request))
        try:
            return await self._handle_request(request)
        except (SupervisorError, StartError, ValueError) as e:
            return _Failure(e)

    async def handle_cast(self, request: Any) -> None:
        log.warning("supervisor_unexpected_message", supervisor=str(self.sup_id), message=repr(request)[:200])

    async def _handle_request(self, request: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _tree(self) -> list[dict[str, Any]]:
        out = []
        for info in self._which_children():
            node: dict[str, Any] = {
                "id": str(info.id),
                "kind": info.type,
                "state": info.state,
                "restarts": info.restarts,
                "last_exit": info.last_exit,
                "actor": repr(info.ref) if info.ref is not None else None,
                "mailbox_depth": info.ref._cell.mailbox.depth if info.ref is not None else 0,
            }
            if info.ref is not None and isinstance(info.ref, SupervisorRef) and info.ref.alive:
                node["strategy"] = info.ref._sup.strategy
                node["children"] = info.ref._sup._tree()
            out.append(node)
        return out

    def _which_children(self) -> list[ChildInfo]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _count_children(self) -> ChildCounts:
        infos = self._which_children()
        return ChildCounts(
            specs=len(infos),
            active=sum(1 for i in infos if i.state == "running"),
            supervisors=sum(1 for i in infos if i.type == "supervisor"),
            workers=sum(1 for i in infos if i.type == "worker"),
        )

    def _statistics(self) -> SupervisorStatistics:
        by_state: dict[str, int] = {}
        for info in self._which_children():
            by_state[info.state] = by_state.get(info.state, 0) + 1
        return SupervisorStatistics(
            strategy=self.strategy,
            max_restarts=self.max_restarts,
            max_seconds=self.max_seconds,
            restarts_in_window=self._restarts_in_window(),
            total_restarts=self._total_restarts,
            children=by_state,
        )


class Supervisor(_SupervisorBase):
    """A supervisor over an ordered list of :class:`ChildSpec` (see the module docstring).

    Start it with ``node.start_supervisor(children, ...)``, as a child with
    ``ChildSpec.supervisor(...)``, or ``node.spawn(Supervisor, children, ...)``.
    """

    async def init(
        self,
        children: Iterable[ChildSpec] = (),
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: tuple[float, float] | None = None,
        id: Hashable | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")
        self.strategy = strategy
        self._setup(max_restarts=max_restarts, max_seconds=max_seconds, backoff=backoff, id=id)
        specs = list(children)
        seen: set[Hashable] = set()
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise ValueError(f"supervisor {self.sup_id}: children must be ChildSpec, not {spec!r}")
            if spec.id in seen:
                raise ValueError(f"supervisor {self.sup_id}: duplicate child id {spec.id!r}")
            seen.add(spec.id)
        self._children: list[_Child] = []
        for spec in specs:
            child = _Child(spec)
            self._children.append(child)
            if not await self._start(child):
                failed = child.last_exit
                for started in reversed(self._children[:-1]):
                    await self._stop(started)
                raise StartError(f"supervisor {self.sup_id}: child {spec.id!r}", failed)

    async def terminate(self, reason: Any) -> None:
        for child in reversed(self._children):
            await self._stop(child)

    def _find(self, id: Hashable) -> _Child | None:
        for child in self._children:
            if child.spec.id == id:
                return child
        return None

    def _which_children(self) -> list[ChildInfo]:
        return [c.info() for c in self._children]

    # ----- messages

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, _ChildExit):
            await self._child_exited(message)
        elif isinstance(message, _Retry):
            await self._retry(message)
        else:
            log.warning("supervisor_unexpected_message", supervisor=str(self.sup_id), message=repr(message)[:200])

    async def _child_exited(self, ev: _ChildExit) -> None:
        child = ev.child
        if child.ref is not ev.ref:
            return  # we stopped or replaced it ourselves
        child.ref = None
        child.last_exit = ev.reason
        child.state = "stopped"
        self._report_exit(child, ev.ref, ev.reason)
        if not self._should_restart(child.spec, ev.reason):
            if child.spec.restart == "temporary":
                self._children.remove(child)
            return
        if not self._allow_restart():
            await self._give_up(child, ev.reason)
            return
        if self.backoff is not None:
            child.state = "restarting"
            self.send_after(_Retry(child, counted=True), self._backoff_delay(child))
            return
        await self._apply_strategy(child)

    async def _retry(self, retry: _Retry) -> None:
        child = retry.child
        if child not in self._children or child.state != "restarting":
            return
        if not retry.counted and not self._allow_restart():
            await self._give_up(child, child.last_exit)
            return
        await self._apply_strategy(child)

    def _group(self, child: _Child) -> list[_Child]:
        if self.strategy == "one_for_one":
            return [child]
        if self.strategy == "one_for_all":
            return list(self._children)
        index = self._children.index(child)
        return self._children[index:]

    async def _apply_strategy(self, trigger: _Child) -> None:
        group = self._group(trigger)
        for child in reversed(group):
            if child is not trigger and child.ref is not None:
                await self._stop(child)
        for child in group:
            if child is not trigger and child.spec.restart == "temporary":
                self._children.remove(child)
        group = [c for c in group if c in self._children]
        for child in group:
            if not await self._start(child):
                # S-19: mark restarting and retry through the mailbox, counting intensity.
                child.state = "restarting"
                for later in group[group.index(child) + 1 :]:
                    later.state = "restarting" if later.ref is None else later.state
                self._cell.mailbox.put(_Retry(child))
                return
            child.restarts += 1
            log.info("child_restarted", supervisor=str(self.sup_id), child_id=str(child.spec.id), actor=repr(child.ref), restarts=child.restarts)

    # ----- run-time API (S-23)

    async def _handle_request(self, request: Any) -> Any:
        op = request[0]
        if op == "start_child":
            spec = request[1]
            if not isinstance(spec, ChildSpec):
                raise ValueError(f"start_child needs a ChildSpec, not {spec!r}")
            existing = self._find(spec.id)
            if existing is not None:
                if existing.ref is not None:
                    raise SupervisorError("already_started", existing.ref)
                raise SupervisorError("already_present", spec.id)
            child = _Child(spec)
            self._children.append(child)
            if not await self._start(child):
                self._children.remove(child)
                raise StartError(f"child {spec.id!r}", child.last_exit)
            return child.ref
        if op == "terminate_child":
            child = self._find(request[1])
            if child is None:
                raise SupervisorError("not_found", request[1])
            await self._stop(child)
            if child.spec.restart == "temporary":
                self._children.remove(child)
            return None
        if op == "restart_child":
            child = self._find(request[1])
            if child is None:
                raise SupervisorError("not_found", request[1])
            if child.ref is not None:
                raise SupervisorError("running", request[1])
            if child.state == "restarting":
                raise SupervisorError("restarting", request[1])
            if not await self._start(child):
                raise StartError(f"child {child.spec.id!r}", child.last_exit)
            return child.ref
        if op == "delete_child":
            child = self._find(request[1])
            if child is None:
                raise SupervisorError("not_found", request[1])
            if child.ref is not None:
                raise SupervisorError("running", request[1])
            if child.state == "restarting":
                raise SupervisorError("restarting", request[1])
            self._children.remove(child)
            return None
        raise SupervisorError("unknown_request", op)


class DynamicSupervisor(_SupervisorBase):
    """A one_for_one supervisor that starts empty and runs many children (S-12).

    ``start_child(spec, *extra_args)`` appends ``extra_args`` to the spec's
    args.  ``max_children`` bounds the number of live children (then
    ``start_child`` raises ``SupervisorError("max_children")``).  Temporary
    children that crash are reported and forgotten: they never count
    towards the restart intensity.  On shutdown all children are stopped
    concurrently, each within its own shutdown time.
    """

    strategy = "one_for_one"

    async def init(
        self,
        *,
        max_children: float = math.inf,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        backoff: tuple[float, float] | None = None,
        id: Hashable | None = None,
    ) -> None:
        self._setup(max_restarts=max_restarts, max_seconds=max_seconds, backoff=backoff, id=id)
        self.max_children = max_children
        self._children: dict[ActorRef, _Child] = {}
        self._restarting: list[_Child] = []

    def _which_children(self) -> list[ChildInfo]:
        return [c.info() for c in self._children.values()] + [c.info() for c in self._restarting]

    async def terminate(self, reason: Any) -> None:
        children = list(self._children.values())
        self._children.clear()
        async with trio.open_nursery() as nursery:
            for child in children:
                nursery.start_soon(self._stop, child)

    async def handle_info(self, message: Any) -> None:
        if isinstance(message, _ChildExit):
            child = message.child
            if self._children.get(message.ref) is not child:
                return
            del self._children[message.ref]
            child.ref = None
            child.state = "stopped"
            child.last_exit = message.reason
            self._report_exit(child, message.ref, message.reason)
            if not self._should_restart(child.spec, message.reason):
                return
            if not self._allow_restart():
                await self._give_up(child, message.reason)
                return
            await self._restart(child)
        elif isinstance(message, _Retry):
            if message.child in self._restarting:
                self._restarting.remove(message.child)
                if not self._allow_restart():
                    await self._give_up(message.child, message.child.last_exit)
                    return
                await self._restart(message.child)
        else:
            log.warning("supervisor_unexpected_message", supervisor=str(self.sup_id), message=repr(message)[:200])

    async def _restart(self, child: _Child) -> None:
        if await self._start(child):
            if child.ref is not None:
                self._children[child.ref] = child
            child.restarts += 1
            log.info("child_restarted", supervisor=str(self.sup_id), child_id=str(child.spec.id), actor=repr(child.ref), restarts=child.restarts)
        else:
            child.state = "restarting"
            self._restarting.append(child)
            self._cell.mailbox.put(_Retry(child))

    async def _handle_request(self, request: Any) -> Any:
        op = request[0]
        if op == "start_child":
            spec, extra = request[1], request[2]
            if not isinstance(spec, ChildSpec):
                raise ValueError(f"start_child needs a ChildSpec, not {spec!r}")
            if len(self._children) >= self.max_children:
                raise SupervisorError("max_children", self.max_children)
            child = _Child(spec)
            if not await self._start(child, *extra):
                raise StartError(f"child {spec.id!r}", child.last_exit)
            if child.ref is not None:
                self._children[child.ref] = child
            return child.ref
        if op == "terminate_child":
            target = request[1]
            child = self._children.pop(target, None) if isinstance(target, ActorRef) else None
            if child is None:
                raise SupervisorError("not_found", target)
            await self._stop(child)
            return None
        if op in ("restart_child", "delete_child"):
            raise SupervisorError("not_supported_by_dynamic_supervisor", op)
        raise SupervisorError("unknown_request", op)


# Keep names importable for type checkers and ChildSpec's lazy import.
_ = (NOREPLY, Error, KILLED)
