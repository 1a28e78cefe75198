"""The ``Channel`` behaviour: what an application writes to serve a topic.

One channel instance runs per joined topic per socket, inside its own actor
(a :class:`~ackvisor.channels.channel_server.ChannelServer`), linked to its
connection.  Callbacks (all async, one at a time):

* ``join(topic, params, socket)`` - return None (ok ``{}``), or a dict (ok with
  that response); raise :class:`JoinRefused` to answer an error reply such as
  ``{"reason": "unauthorized"}``.  A crash in ``join`` answers
  ``{"reason": "join crashed"}``.  Pushing during ``join`` is not allowed
  (as in Phoenix): send yourself a message and push from ``handle_info``.
* ``handle_in(event, payload, socket)`` - return None (no reply), ``"ok"`` /
  ``"error"``, ``(status, response_dict)``, or a dict (ok with it).
* ``handle_info(message, socket)`` - any other message (timers, your sends).
* ``handle_out(event, payload, socket)`` - a broadcast on a subscribed topic;
  the default pushes it to the client as a broadcast frame.
* ``terminate(reason, socket)``.

Helpers: ``await self.push(event, payload, ack=True)`` adds a ``message_id``,
writes the frame and starts the ack deadline (see ``acks.py``); if the client
does not ack in time the channel exits with ``no_ack_received``.
``broadcast``, ``broadcast_from``, ``subscribe``, ``send``, ``send_after`` and
``stop`` are sync.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import structlog

from ..actor import ActorRef
from ..exits import NORMAL
from ..node import Node
from ..timers import TimerRef
from . import pubsub

if TYPE_CHECKING:
    from .channel_server import ChannelServer

__all__ = ["Channel", "Socket", "Assigns", "JoinRefused", "ReplyRef"]

log = structlog.get_logger("ackvisor.channels")


class JoinRefused(Exception):
    """Raise from ``join`` to refuse it with an error reply carrying ``response`` (a dict)."""

    def __init__(self, response: dict[str, Any] | None = None) -> None:
        super().__init__(repr(response))
        self.response = response if response is not None else {"reason": "join refused"}


class Assigns:
    """Per-socket application state: attribute and item access (``socket.assigns.user_id``)."""

    def __init__(self, values: dict[str, Any] | None = None) -> None:
        object.__setattr__(self, "_values", dict(values or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no assign named {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self._values[name] = value

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def get(self, name: str, default: Any = None) -> Any:
        """The assign ``name`` or ``default``."""
        return self._values.get(name, default)

    def as_dict(self) -> dict[str, Any]:
        """A copy of all assigns."""
        return dict(self._values)

    def __repr__(self) -> str:
        return f"Assigns({sorted(self._values)})"


class Socket:
    """The channel's view of its client: topic, join_ref, assigns, connect params and peer."""

    __slots__ = ("topic", "join_ref", "assigns", "params", "peer", "connection", "connection_id", "vsn", "recovered", "position")

    def __init__(
        self,
        topic: str,
        join_ref: str | None,
        *,
        assigns: dict[str, Any] | None,
        params: dict[str, Any],
        peer: str,
        connection: ActorRef,
        connection_id: int,
        vsn: str,
    ) -> None:
        self.topic = topic
        self.join_ref = join_ref
        self.assigns = Assigns(assigns)
        self.params = params
        self.peer = peer
        self.connection = connection
        self.connection_id = connection_id
        self.vsn = vsn
        #: For channels with a ``history_topic``: True when the join resumed from
        #: the client's ``resume`` position (the missed messages are replayed), False
        #: when the channel must send a fresh snapshot; None without history.
        self.recovered: bool | None = None
        #: The history topic's position (epoch, offset) when the channel joined.
        self.position: Any = None

    def assign(self, **values: Any) -> "Socket":
        """Set assigns and return the socket (so ``return socket.assign(x=1)`` reads naturally)."""
        for key, value in values.items():
            setattr(self.assigns, key, value)
        return self

    def __repr__(self) -> str:
        return f"<Socket {self.topic} join_ref={self.join_ref} peer={self.peer}>"


class ReplyRef:
    """Where to send a deferred reply: keep it from ``handle_in`` and ``await self.reply(ref, ...)`` later."""

    __slots__ = ("join_ref", "ref", "topic")

    def __init__(self, join_ref: str | None, ref: str | None, topic: str) -> None:
        self.join_ref = join_ref
        self.ref = ref
        self.topic = topic


class Channel:
    """Base class of application channels; override the callbacks you need.

    Set ``history_topic`` to the pubsub topic whose messages this channel
    delivers with offsets (published with :func:`ackvisor.channels.pubsub.publish`):
    the framework then subscribes to it before ``join``, honours the client's
    ``resume: {epoch, offset}`` join param (replaying what was missed, in
    order, before any live message, with no duplicate), adds ``offset`` and
    ``epoch`` to acked pushes made for those messages, and answers the join
    with ``recovered``, ``epoch`` and ``offset``.  When ``socket.recovered`` is
    False, send a snapshot with :meth:`push_snapshot`.
    """

    _server: "ChannelServer"

    #: The pubsub topic this channel resumes from (None: no offsets, no resume).
    history_topic: ClassVar[str | None] = None

    # ----- callbacks

    async def join(self, topic: str, params: dict[str, Any], socket: Socket) -> Any:
        """Authorise and set up; the default accepts with ``{}``."""
        return None

    async def handle_in(self, event: str, payload: Any, socket: Socket) -> Any:
        """Handle a client push; the default answers an ``unknown event`` error reply."""
        return ("error", {"reason": "unknown event", "event": event})

    async def handle_info(self, message: Any, socket: Socket) -> Any:
        """Handle any other message; the default logs and drops it."""
        log.warning("channel_unexpected_message", topic=socket.topic, message=repr(message)[:200])

    async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
        """Handle a broadcast on a subscribed topic; the default forwards it as a broadcast frame."""
        await self._server.write_broadcast(event, payload)

    async def terminate(self, reason: Any, socket: Socket) -> None:
        """Clean up; runs when the channel stops (leave, crash, socket closed)."""

    # ----- helpers

    @property
    def ref(self) -> ActorRef:
        """This channel actor's ref."""
        return self._server.ref

    @property
    def node(self) -> Node:
        """The node this channel lives on."""
        return self._server.node

    @property
    def socket(self) -> Socket:
        """This channel's socket."""
        return self._server.socket

    async def push(self, event: str, payload: dict[str, Any] | bytes, *, ack: bool = False) -> str | None:
        """Write ``[join_ref, null, topic, event, payload]`` to the client.

        With ``ack=True`` the payload gets a fresh ``message_id`` (returned),
        which the client must ack within the endpoint's ``ack_timeout`` after
        the frame was written, or this channel exits with ``no_ack_received``.
        """
        return await self._server.push(event, payload, ack=ack)

    async def push_snapshot(self, event: str, payload: dict[str, Any], position: Any) -> str | None:
        """Push a fresh snapshot taken at ``position`` (an ``(epoch, offset)`` pair or a history Position), acked.

        The payload gets ``snapshot: {epoch, offset}``; live messages at or
        below that offset are then skipped, so nothing is applied twice.
        """
        return await self._server.push_snapshot(event, payload, position)

    async def track(self, key: str, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record this client's presence under ``key`` on the channel's topic (Phoenix Presence).

        Pushes ``presence_state`` (everyone present, on every node with the
        Redis adapter) to this client; every change reaches every joined
        client as ``presence_diff``.  The presence is removed when the channel
        ends.  Returns the stored meta (with its ``phx_ref``).
        """
        return await self._server.track(key, meta)

    async def reply(self, to: ReplyRef, status: str, response: dict[str, Any] | None = None) -> None:
        """Send a deferred reply (see :meth:`socket_ref`)."""
        await self._server.reply_to(to, status, response or {})

    def socket_ref(self) -> ReplyRef:
        """The reply address of the message being handled, for a reply after ``handle_in`` returned."""
        return self._server.current_reply_ref()

    def broadcast(self, event: str, payload: Any, *, topic: str | None = None) -> int:
        """Broadcast to every subscriber of ``topic`` (default: this channel's topic), this one included."""
        return pubsub.broadcast(self.node, topic or self.socket.topic, event, payload)

    def broadcast_from(self, event: str, payload: Any, *, topic: str | None = None) -> int:
        """Broadcast to every subscriber but this channel."""
        return pubsub.broadcast(self.node, topic or self.socket.topic, event, payload, exclude=self.ref)

    def subscribe(self, topic: str) -> None:
        """Receive broadcasts on ``topic`` (in ``handle_out``)."""
        pubsub.subscribe(self.node, topic, self.ref)

    def unsubscribe(self, topic: str) -> None:
        """Stop receiving broadcasts on ``topic``."""
        pubsub.unsubscribe(self.node, topic, self.ref)

    def send(self, ref: ActorRef, message: Any) -> None:
        """Send ``message`` to any actor (to yourself: ``self.send(self.ref, msg)`` reaches ``handle_info``)."""
        ref.send(message)

    def send_after(self, message: Any, seconds: float) -> TimerRef:
        """Deliver ``message`` to this channel's ``handle_info`` after ``seconds``."""
        return self.ref._send_after(message, seconds)

    def stop(self, reason: Any = NORMAL) -> None:
        """Stop after the current callback: ``normal``/``shutdown`` close the channel (``phx_close``); others crash it."""
        self._server.stop(reason)
