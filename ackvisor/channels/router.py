"""Topic routing: which ``Channel`` class serves a topic (Phoenix's ``channel "room:*", Module``).

A pattern is either an exact topic or ends with ``*`` (prefix match).  Routes
are tried in declaration order and the first match wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    """One route: ``pattern`` (exact, or prefix ending in ``*``) to a ``Channel`` subclass."""

    pattern: str
    channel: Any

    def matches(self, topic: str) -> bool:
        """True if ``topic`` is served by this route."""
        if self.pattern.endswith("*"):
            return topic.startswith(self.pattern[:-1])
        return topic == self.pattern


class Router:
    """An ordered list of routes; :meth:`match` is sync and allocation-free on a hit."""

    def __init__(self, routes: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        items = routes.items() if isinstance(routes, Mapping) else routes
        self.routes: tuple[Route, ...] = tuple(Route(p, c) for p, c in items)
        for route in self.routes:
            if not isinstance(route.pattern, str) or not route.pattern or "*" in route.pattern[:-1]:
                raise ValueError(f"route pattern must be a topic or a prefix ending in '*', not {route.pattern!r}")
        self._exact = {r.pattern: r.channel for r in reversed(self.routes) if not r.pattern.endswith("*")}

    def match(self, topic: str) -> Any | None:
        """The ``Channel`` class for ``topic``, or None (the "unmatched topic" case)."""
        for route in self.routes:
            if route.matches(topic):
                return route.channel
        return None
