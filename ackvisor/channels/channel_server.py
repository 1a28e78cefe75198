"""``ChannelServer``: the actor that runs one ``Channel`` instance for one joined topic.

It is spawned by its connection (linked, so each dies with the other per the
endpoint's policy), writes its own join reply (so the reply always precedes
the first push), routes client messages to ``handle_in``, ``message_ack`` to
its :class:`~ackvisor.channels.acks.AckTracker`, broadcasts to
``handle_out``, and exits with ``Error("no_ack_received", ...)`` when an ack
deadline passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from ..actor import IGNORE, Actor, ActorExit, ActorRef
from ..exits import Shutdown, reason_fields
from .acks import AckTracker, CheckAck
from .channel import Channel, JoinRefused, ReplyRef, Socket
from .protocol import Message
from .pubsub import Broadcast
from .transport import Transport, TransportClosed

__all__ = ["ChannelServer", "ChannelSettings"]

log = structlog.get_logger("ackvisor.channels")

_CLOSED = Shutdown("closed")


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Per-endpoint channel settings: ``ack_timeout`` seconds and the ``on_no_ack`` policy."""

    ack_timeout: float = 5.0
    on_no_ack: str = "close_connection"


class ChannelServer(Actor):
    """Hosts one ``Channel``; see the module docstring."""

    channel: Channel
    socket: Socket
    transport: Transport
    tracker: AckTracker

    async def init(
        self,
        channel_cls: type[Channel],
        message: Message,
        transport: Transport,
        socket: Socket,
        settings: ChannelSettings,
    ) -> Any:
        self.transport = transport
        self.socket = socket
        self.settings = settings
        self.tracker = AckTracker(self.ref, settings.ack_timeout)
        self._current: Message | None = None
        channel = channel_cls()
        channel._server = self
        self.channel = channel
        topic, join_ref, ref = message.topic, message.join_ref, message.ref
        params = message.payload if isinstance(message.payload, dict) else {}
        try:
            result = await channel.join(topic, params, socket)
        except JoinRefused as e:
            await self._reply_quietly(join_ref, ref, topic, "error", e.response)
            return IGNORE
        except Exception as e:
            log.error("join_crashed", topic=topic, connection=socket.connection_id, peer=socket.peer, **reason_fields(e))
            await self._reply_quietly(join_ref, ref, topic, "error", {"reason": "join crashed"})
            return IGNORE
        response = result if isinstance(result, dict) else {}
        try:
            await transport.reply(join_ref, ref, topic, "ok", response)
        except TransportClosed:
            return IGNORE
        return None

    async def _reply_quietly(self, join_ref: str | None, ref: str | None, topic: str, status: str, response: dict) -> None:
        try:
            await self.transport.reply(join_ref, ref, topic, status, response)
        except TransportClosed:
            pass

    # ----- writing

    async def push(self, event: str, payload: Any, *, ack: bool) -> str | None:
        socket = self.socket
        if not ack:
            await self._write(self.transport.serializer.encode_push(socket.join_ref, socket.topic, event, payload))
            return None
        if not isinstance(payload, dict):
            raise TypeError("an acked push needs a dict payload (the message_id goes into it)")
        pending = self.tracker.track(event)
        payload = {**payload, "message_id": pending.message_id}
        await self._write(self.transport.serializer.encode_push(socket.join_ref, socket.topic, event, payload))
        self.tracker.written(pending)
        return pending.message_id

    async def write_broadcast(self, event: str, payload: Any) -> None:
        await self._write(self.transport.serializer.encode_broadcast(self.socket.topic, event, payload))

    async def _write(self, frame: str | bytes) -> None:
        try:
            await self.transport.send(frame)
        except TransportClosed:
            raise ActorExit(_CLOSED) from None

    async def reply_to(self, to: ReplyRef, status: str, response: dict) -> None:
        """A deferred reply (``Channel.reply``); a closed socket ends the channel quietly."""
        try:
            await self.transport.reply(to.join_ref, to.ref, to.topic, status, response)
        except TransportClosed:
            raise ActorExit(_CLOSED) from None

    def current_reply_ref(self) -> ReplyRef:
        msg = self._current
        if msg is None:
            raise RuntimeError("socket_ref() is only available while handling a client message")
        return ReplyRef(msg.join_ref, msg.ref, msg.topic)

    # ----- messages

    async def handle_info(self, message: Any) -> None:
        cls = type(message)
        if cls is Message:
            await self._handle_client(message)
        elif cls is CheckAck:
            pending = self.tracker.expired(message)
            if pending is not None:
                socket = self.socket
                raise ActorExit(
                    self.tracker.no_ack_reason(
                        pending,
                        topic=socket.topic,
                        join_ref=socket.join_ref,
                        connection=socket.connection_id,
                        peer=socket.peer,
                    )
                )
        elif cls is Broadcast:
            await self.channel.handle_out(message.event, message.payload, self.socket)
        else:
            await self.channel.handle_info(message, self.socket)

    async def _handle_client(self, msg: Message) -> None:
        event = msg.event
        if event == "message_ack":
            await self._handle_ack(msg)
            return
        if event == "phx_leave":
            await self._reply(msg, "ok", {})
            self.stop(Shutdown("left"))
            return
        self._current = msg
        try:
            result = await self.channel.handle_in(event, msg.payload, self.socket)
        finally:
            self._current = None
        if result is None:
            return
        if isinstance(result, str):
            await self._reply(msg, result, {})
        elif isinstance(result, dict):
            await self._reply(msg, "ok", result)
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], str):
            await self._reply(msg, result[0], result[1] if result[1] is not None else {})
        else:
            raise TypeError(f"handle_in returned {result!r}; expected None, a status, a dict or (status, dict)")

    async def _handle_ack(self, msg: Message) -> None:
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        message_id = payload.get("message_id")
        if self.tracker.ack(message_id):
            if msg.ref is not None:
                await self._reply(msg, "ok", {})
        else:
            log.info("unknown_ack", topic=msg.topic, message_id=repr(message_id)[:80], connection=self.socket.connection_id)
            if msg.ref is not None:  # a reply without a ref reaches nobody
                await self._reply(msg, "error", {"reason": "unknown message_id"})

    async def _reply(self, msg: Message, status: str, response: dict) -> None:
        try:
            await self.transport.reply(msg.join_ref, msg.ref, msg.topic, status, response)
        except TransportClosed:
            raise ActorExit(_CLOSED) from None

    async def terminate(self, reason: Any) -> None:
        self.tracker.cancel_all()
        await self.channel.terminate(reason, self.socket)

    def statistics_acks(self) -> Any:
        """The ack tracker's counters."""
        return self.tracker.statistics()


_ = ActorRef
