"""Names (unique keys) and groups (duplicate keys) for actors (OTP_SEMANTICS REG-1..REG-5, PG-1).

Entries belong to a live actor and vanish when it dies, *before* its links
and monitors are told (P-9), so a supervisor restarting a child can register
the same name again at once.  A name therefore "survives restarts" by being
re-registered by the restarted child.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterator

from .exits import AlreadyStarted, NoProcError

if TYPE_CHECKING:
    from .actor import ActorRef

__all__ = ["Registry"]


class Registry:
    """One node's name table and group table. All methods are sync."""

    def __init__(self) -> None:
        self._names: dict[Hashable, "ActorRef"] = {}
        self._groups: dict[Hashable, dict["ActorRef", list[Any]]] = defaultdict(dict)
        # Reverse index so cleanup on death is proportional to what the actor held.
        self._owned: dict["ActorRef", tuple[set[Hashable], set[Hashable]]] = {}

    def _owner(self, ref: "ActorRef") -> tuple[set[Hashable], set[Hashable]]:
        owned = self._owned.get(ref)
        if owned is None:
            owned = self._owned[ref] = (set(), set())
        return owned

    def register(self, name: Hashable, ref: "ActorRef") -> None:
        """Register ``name`` for ``ref``; raise AlreadyStarted if a live actor holds it, NoProcError if ``ref`` is dead."""
        if not ref.alive:
            raise NoProcError(ref)
        holder = self._names.get(name)
        if holder is not None and holder != ref:
            raise AlreadyStarted(str(name), holder)
        self._names[name] = ref
        self._owner(ref)[0].add(name)

    def unregister(self, name: Hashable) -> None:
        """Forget ``name`` (no error if it is not registered)."""
        ref = self._names.pop(name, None)
        if ref is not None and ref in self._owned:
            self._owned[ref][0].discard(name)

    def whereis(self, name: Hashable) -> "ActorRef | None":
        """The live actor registered under ``name``, or None."""
        return self._names.get(name)

    def names(self) -> list[Hashable]:
        """Every registered name."""
        return list(self._names)

    def join(self, group: Hashable, ref: "ActorRef", value: Any = None) -> None:
        """Add ``ref`` to ``group`` (an actor may join a group several times, PG-1)."""
        if not ref.alive:
            raise NoProcError(ref)
        self._groups[group].setdefault(ref, []).append(value)
        self._owner(ref)[1].add(group)

    def leave(self, group: Hashable, ref: "ActorRef") -> bool:
        """Remove one membership of ``ref`` in ``group``; False if it was not a member."""
        members = self._groups.get(group)
        if not members or ref not in members:
            return False
        values = members[ref]
        values.pop()
        if not values:
            del members[ref]
            if ref in self._owned:
                self._owned[ref][1].discard(group)
            if not members:
                del self._groups[group]
        return True

    def members(self, group: Hashable) -> list["ActorRef"]:
        """Live members of ``group`` (each once), in join order."""
        members = self._groups.get(group)
        return list(members) if members else []

    def lookup(self, group: Hashable) -> list[tuple["ActorRef", Any]]:
        """``(ref, value)`` for every membership of ``group``."""
        members = self._groups.get(group)
        if not members:
            return []
        return [(ref, v) for ref, values in members.items() for v in values]

    def count(self, group: Hashable) -> int:
        """Number of distinct members of ``group``."""
        members = self._groups.get(group)
        return len(members) if members else 0

    def dispatch(self, group: Hashable, fn: Callable[["ActorRef", Any], None]) -> int:
        """Call ``fn(ref, value)`` for every membership of ``group`` (the pubsub fan-out); return how many."""
        n = 0
        for ref, value in self.lookup(group):
            fn(ref, value)
            n += 1
        return n

    def groups(self) -> Iterator[Hashable]:
        """Every non-empty group."""
        return iter(list(self._groups))

    def _remove_actor(self, ref: "ActorRef") -> None:
        owned = self._owned.pop(ref, None)
        if owned is None:
            return
        names, groups = owned
        for name in names:
            if self._names.get(name) == ref:
                del self._names[name]
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(ref, None)
                if not members:
                    del self._groups[group]
