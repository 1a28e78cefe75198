"""Small importable objects used as ``start`` / route targets by tests/test_config.py.

They subclass the real ``Actor`` / ``Channel`` base classes when those modules exist
(they are written concurrently), so the config loader's kind checks accept them
either way.
"""

from __future__ import annotations

from typing import Any

try:
    from ackvisor.actor import Actor as _ActorBase
except ImportError:  # runtime layer not written yet
    _ActorBase = object  # type: ignore[assignment,misc]

try:
    from ackvisor.channels.channel import Channel as _ChannelBase
except ImportError:  # channels layer not written yet
    _ChannelBase = object  # type: ignore[assignment,misc]


class Store(_ActorBase):  # type: ignore[misc,valid-type]
    """A worker actor target."""


class Cache(_ActorBase):  # type: ignore[misc,valid-type]
    """Another worker actor target."""


async def ticker(interval: float = 1.0, **options: Any) -> None:
    """A plain Trio task worker (an async function)."""


def sync_function() -> None:
    """Wrong kind for a child: a plain (sync) function."""


NOT_CALLABLE = 42
"""Wrong kind for anything."""


class NotAnActor:
    """Wrong kind for a child once ``ackvisor.actor`` exists."""


class RoomChannel(_ChannelBase):  # type: ignore[misc,valid-type]
    """A channel route target."""


class Namespace:
    """Holds a nested attribute, for ``"config_targets:Namespace.Inner"``."""

    class Inner(_ActorBase):  # type: ignore[misc,valid-type]
        """A nested actor target."""
