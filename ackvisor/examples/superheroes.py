"""The seed's app: a superheroes list kept in sync on every client, with acked pushes.

* :class:`SuperheroStore` - an actor holding the list; every change is
  broadcast on the ``"superheroes"`` pubsub topic.
* :class:`SuperheroChannel` - serves ``superheroes:*`` topics.  On join it
  subscribes to ``"superheroes"`` and sends itself ``send_initial_superheroes``;
  handling that, it pushes ``hydrate {superheroes, message_id}`` with an ack.
  Every change broadcast by the store is pushed with an ack too.  A client
  that does not ack in time crashes the channel with ``no_ack_received``;
  the client reconnects, rejoins and gets a fresh ``hydrate``.
"""

from __future__ import annotations

import inspect
from typing import Any

from ..actor import Actor, Caller
from ..channels import pubsub
from ..channels.channel import Channel, JoinRefused, Socket
from ..channels.history import history_of

__all__ = ["SuperheroStore", "SuperheroChannel", "DEFAULT_SUPERHEROES", "STORE_NAME", "TOPIC"]

STORE_NAME = "superheroes_store"
TOPIC = "superheroes"

DEFAULT_SUPERHEROES: list[dict[str, Any]] = [
    {"id": 1, "name": "Ada Lovelace", "power": "analytical engine"},
    {"id": 2, "name": "Grace Hopper", "power": "compilers"},
    {"id": 3, "name": "Joe Armstrong", "power": "let it crash"},
]


class SuperheroStore(Actor):
    """Holds the superheroes; ``call("list")``, ``call(("add", hero))``, ``call(("remove", id))``."""

    async def init(self, superheroes: list[dict[str, Any]] | None = None) -> None:
        self.superheroes = [dict(h) for h in (superheroes if superheroes is not None else DEFAULT_SUPERHEROES)]

    async def handle_call(self, request: Any, caller: Caller) -> Any:
        if request == "list":
            return [dict(h) for h in self.superheroes]
        if request == "snapshot":
            # The list and the topic position it corresponds to, taken atomically:
            # a client applying changes after this offset ends in the same state.
            # (With the in-memory history this is one synchronous step; with Redis the
            # position is read from Redis while this actor handles nothing else.)
            position = history_of(self.node).position(TOPIC)
            if inspect.isawaitable(position):
                position = await position
            return [dict(h) for h in self.superheroes], position
        if isinstance(request, tuple) and request and request[0] == "add":
            hero = dict(request[1])
            hero.setdefault("id", max((h["id"] for h in self.superheroes), default=0) + 1)
            self.superheroes.append(hero)
            await pubsub.publish_async(self.node, TOPIC, "superhero_added", {"superhero": hero})
            return hero
        if isinstance(request, tuple) and request and request[0] == "remove":
            before = len(self.superheroes)
            self.superheroes = [h for h in self.superheroes if h["id"] != request[1]]
            removed = len(self.superheroes) != before
            if removed:
                await pubsub.publish_async(self.node, TOPIC, "superhero_removed", {"id": request[1]})
            return removed
        raise ValueError(f"unknown request {request!r}")


class SuperheroChannel(Channel):
    """Serves ``superheroes:lobby`` (and any ``superheroes:*``).

    Changes carry ``offset``/``epoch``; a client that rejoins with
    ``resume: {epoch, offset}`` gets exactly the changes it missed
    (``recovered: true``), otherwise a fresh ``hydrate`` snapshot.
    """

    history_topic = TOPIC

    async def join(self, topic: str, params: dict[str, Any], socket: Socket) -> Any:
        store = self.node.whereis(STORE_NAME)
        if store is None:
            raise JoinRefused({"reason": "superheroes store unavailable"})
        socket.assign(store=store)
        if not socket.recovered:
            self.send(self.ref, "send_initial_superheroes")
        return None

    async def handle_info(self, message: Any, socket: Socket) -> Any:
        if message == "send_initial_superheroes":
            superheroes, position = await socket.assigns.store.call("snapshot")
            await self.push_snapshot("hydrate", {"superheroes": superheroes}, position)
        else:
            await super().handle_info(message, socket)

    async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
        await self.push(event, payload, ack=True)

    async def handle_in(self, event: str, payload: Any, socket: Socket) -> Any:
        # payload is bytes for a binary frame: never assume a dict.
        if event == "add_superhero" and isinstance(payload, dict) and isinstance(payload.get("superhero"), dict):
            hero = await socket.assigns.store.call(("add", payload["superhero"]))
            return ("ok", {"superhero": hero})
        return await super().handle_in(event, payload, socket)
