"""``ChannelServer``: the actor that runs one ``Channel`` instance for one joined topic.

It is spawned by its connection (linked, so each dies with the other per the
endpoint's policy), writes its own join reply (so the reply always precedes
the first push), routes client messages to ``handle_in``, ``message_ack`` to
its :class:`~ackvisor.channels.acks.AckTracker`, broadcasts to
``handle_out``, and exits with ``Error("no_ack_received", ...)`` when an ack
deadline passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import structlog

from ..actor import IGNORE, Actor, ActorExit, ActorRef
from ..exits import Shutdown, reason_fields
from .acks import AckTracker, CheckAck
from .channel import Channel, JoinRefused, ReplyRef, Socket
from .protocol import Message
from . import pubsub
from .history import history_of
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
    max_unacked: float = math.inf
    max_unacked_bytes: float = math.inf


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
        self.tracker = AckTracker(
            self.ref,
            settings.ack_timeout,
            max_unacked=settings.max_unacked,
            max_unacked_bytes=settings.max_unacked_bytes,
        )
        self._current: Message | None = None
        #: (epoch, offset) of the last history message delivered to this client.
        self.position: tuple[str, int] | None = None
        self._delivering: Broadcast | None = None
        channel = channel_cls()
        channel._server = self
        self.channel = channel
        topic, join_ref, ref = message.topic, message.join_ref, message.ref
        params = message.payload if isinstance(message.payload, dict) else {}
        replay = self._recover(channel_cls.history_topic, params)
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
        if socket.recovered is not None:
            response = {**response, "recovered": socket.recovered, "epoch": socket.position.epoch, "offset": socket.position.offset}
        try:
            await transport.reply(join_ref, ref, topic, "ok", response)
            # Replay before the mailbox is served: nothing live can overtake it.
            for entry in replay:
                await self._deliver(Broadcast(entry.topic, entry.event, entry.payload, None, entry.offset, entry.epoch))
        except TransportClosed:
            return IGNORE
        return None

    def _recover(self, history_topic: str | None, params: dict[str, Any]) -> list[Any]:
        """Subscribe first, then read the history: a message published in between is in both, and
        :meth:`_deliver` drops the second copy by offset."""
        if history_topic is None:
            return []
        history = history_of(self.node)
        pubsub.subscribe(self.node, history_topic, self.ref)
        position = history.position(history_topic)
        self.socket.position = position
        resume = params.get("resume")
        replay = None
        if isinstance(resume, dict):
            epoch, offset = resume.get("epoch"), resume.get("offset")
            if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
                replay = history.read_from(history_topic, epoch, offset)
                if replay is not None:
                    self.position = (epoch, offset)
        self.socket.recovered = replay is not None
        return replay or []

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
        tracker = self.tracker
        source = self._delivering
        if source is not None and source.offset is not None:
            pending = tracker.track(event, offset=source.offset, epoch=source.epoch)
            payload = {**payload, "message_id": pending.message_id, "offset": source.offset, "epoch": source.epoch}
        else:
            pending = tracker.track(event)
            payload = {**payload, "message_id": pending.message_id}
        frame = self.transport.serializer.encode_push(socket.join_ref, socket.topic, event, payload)
        tracker.sized(pending, len(frame))
        if tracker.over_limit():
            raise ActorExit(tracker.too_many_reason(topic=socket.topic, connection=socket.connection_id, peer=socket.peer))
        await self._write(frame)
        tracker.written(pending)
        return pending.message_id

    async def push_snapshot(self, event: str, payload: dict[str, Any], position: Any) -> str | None:
        epoch, offset = (position.epoch, position.offset) if hasattr(position, "epoch") else position
        message_id = await self.push(event, {**payload, "snapshot": {"epoch": epoch, "offset": offset}}, ack=True)
        if self.position is None or self.position[0] != epoch or self.position[1] < offset:
            self.position = (epoch, offset)
        return message_id

    async def _deliver(self, message: Broadcast) -> None:
        """Hand a broadcast to ``handle_out``, skipping history messages this client already has."""
        offset = message.offset
        if offset is not None:
            position = self.position
            if position is not None and position[0] == message.epoch and offset <= position[1]:
                return
            self.position = (message.epoch, offset)  # type: ignore[assignment]
        self._delivering = message
        try:
            await self.channel.handle_out(message.event, message.payload, self.socket)
        finally:
            self._delivering = None

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
            await self._deliver(message)
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
        offset = payload.get("offset")
        if message_id is None and isinstance(offset, int) and not isinstance(offset, bool):
            epoch = payload.get("epoch")
            acked = self.tracker.ack_upto(offset, epoch if isinstance(epoch, str) else None)
            if msg.ref is not None:
                await self._reply(msg, "ok", {"acked": acked})
            return
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
