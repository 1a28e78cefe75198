"""``ChildSpec``: how a supervisor starts, restarts and stops one child (OTP_SEMANTICS S-3..S-5).

Validation is strict and happens when the spec is built, before anything
starts (S-2): a bad value raises ``ValueError`` naming the field, the value
and what was expected.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Literal, Mapping

from .mailbox import OverflowPolicy

__all__ = ["ChildSpec", "Restart", "Shutdown_", "ChildType", "RESTARTS", "STRATEGIES"]

Restart = Literal["permanent", "transient", "temporary"]
ChildType = Literal["worker", "supervisor"]
Shutdown_ = float | Literal["brutal_kill"]

RESTARTS = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True, eq=True)
class ChildSpec:
    """One child of a supervisor.

    ``start`` is an :class:`~ackvisor.Actor` subclass (instantiated, then
    ``init(*args, **kwargs)``), an ``Actor`` instance, or an async function
    run as a plain Trio task worker (it may accept ``task_status`` to signal
    readiness, like ``nursery.start``).

    ``restart``: ``permanent`` (always restarted), ``transient`` (only after a
    crash), ``temporary`` (never; its spec is dropped when it ends) - S-4.
    ``shutdown``: seconds granted to ``terminate`` before the child is
    killed, ``math.inf`` to wait forever (default for supervisors), or
    ``"brutal_kill"`` (no ``terminate``) - S-5.  Default 5 s for workers.
    ``name`` registers the child under a unique name, re-registered on restart.
    """

    id: Hashable
    start: Any
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    restart: Restart = "permanent"
    shutdown: Shutdown_ = 5.0
    type: ChildType = "worker"
    name: str | None = None
    mailbox_size: float = math.inf
    overflow: OverflowPolicy = "drop_new"

    def __init__(
        self,
        id: Hashable,
        start: Any,
        *args: Any,
        restart: Restart = "permanent",
        shutdown: Shutdown_ | None = None,
        type: ChildType | None = None,
        name: str | None = None,
        kwargs: Mapping[str, Any] | None = None,
        mailbox_size: float = math.inf,
        overflow: OverflowPolicy = "drop_new",
    ) -> None:
        if type is None:
            from .supervisor import DynamicSupervisor, Supervisor

            is_sup = inspect.isclass(start) and issubclass(start, (Supervisor, DynamicSupervisor))
            type = "supervisor" if is_sup else "worker"
        if shutdown is None:
            shutdown = math.inf if type == "supervisor" else 5.0
        values = dict(
            id=id,
            start=start,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            restart=restart,
            shutdown=shutdown,
            type=type,
            name=name,
            mailbox_size=mailbox_size,
            overflow=overflow,
        )
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._validate()

    __hash__ = None  # type: ignore[assignment]  # kwargs is a dict: specs compare by value only

    def _validate(self) -> None:
        if self.id is None:
            raise ValueError("ChildSpec.id is required")
        if not callable(self.start) and not _is_actor_instance(self.start):
            raise ValueError(f"ChildSpec {self.id!r}: start must be an Actor class, Actor instance or async function, not {self.start!r}")
        if self.restart not in RESTARTS:
            raise ValueError(f"ChildSpec {self.id!r}: restart must be one of {RESTARTS}, not {self.restart!r}")
        if self.type not in ("worker", "supervisor"):
            raise ValueError(f"ChildSpec {self.id!r}: type must be 'worker' or 'supervisor', not {self.type!r}")
        s = self.shutdown
        if not (s == "brutal_kill" or (isinstance(s, (int, float)) and not isinstance(s, bool) and s >= 0)):
            raise ValueError(
                f"ChildSpec {self.id!r}: shutdown must be 'brutal_kill', seconds >= 0 or math.inf, not {s!r}"
            )
        if self.overflow not in ("drop_new", "drop_old", "crash"):
            raise ValueError(f"ChildSpec {self.id!r}: overflow must be drop_new, drop_old or crash, not {self.overflow!r}")

    @classmethod
    def supervisor(
        cls,
        id: Hashable,
        children: Iterable["ChildSpec"],
        *,
        strategy: str = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        restart: Restart = "permanent",
        shutdown: Shutdown_ = math.inf,
        name: str | None = None,
        backoff: tuple[float, float] | None = None,
    ) -> "ChildSpec":
        """A child that is itself a :class:`~ackvisor.Supervisor` over ``children``."""
        from .supervisor import Supervisor

        return cls(
            id,
            Supervisor,
            tuple(children),
            restart=restart,
            shutdown=shutdown,
            type="supervisor",
            name=name,
            kwargs=dict(strategy=strategy, max_restarts=max_restarts, max_seconds=max_seconds, backoff=backoff, id=id),
        )


def _is_actor_instance(obj: Any) -> bool:
    from .actor import Actor

    return isinstance(obj, Actor)
