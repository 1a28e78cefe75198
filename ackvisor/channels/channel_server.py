"""``ChannelServer``: the actor that runs one ``Channel`` instance for one joined topic.

It is spawned by its connection (linked, so each dies with the other per the
endpoint's policy), writes its own join reply (so the reply always precedes
the first push), routes client messages to ``handle_in``, ``message_ack`` to
its :class:`~ackvisor.channels.acks.AckTracker`, broadcasts to
``handle_out``, and exits with ``Error("no_ack_received", ...)`` when an ack
deadline passes.

Resume (channels with a ``history_topic``)
------------------------------------------
Before ``join`` the server subscribes to the history topic, *then* reads the
topic's position and, if the client sent ``resume: {epoch, offset}``, the
first batch of the history after that offset (subscribe first, then read: a
message published in between is both in the mailbox and in the history, and
the offset de-duplication below drops the second copy).

While it *catches up* the server replays the history in batches of
``Channel.replay_batch`` messages, each batch a separate turn of the actor
(so acks, heartbeats and the ack deadlines keep being served), and it stops
pushing while ``replay_window`` messages (or half ``max_unacked_bytes``)
await their ack, so a large replay never trips ``too_many_unacked``.  Live
broadcasts on the history topic that arrive meanwhile are dropped: they are
in the history and the catch-up reads them from there, in order.  Once a
read returns nothing new, the channel is live: every later broadcast is
delivered unless its offset is at or below the last one delivered.  If the
history can no longer give the next message (trimmed meanwhile, or the
topic's epoch changed), the channel exits with ``history_lost`` and the
client's rejoin gets ``recovered: false``.

``history_topic`` may contain ``{topic}``, replaced by the joined topic: with
``history_topic = "{topic}"`` a ``room:*`` channel resumes from each room's own
history (publish on the room's topic with :func:`~ackvisor.channels.pubsub.publish`).
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

from ..actor import IGNORE, Actor, ActorExit, ActorRef
from ..exits import Error, Shutdown, reason_fields
from .acks import AckTracker, CheckAck
from .channel import Channel, JoinRefused, ReplyRef, Socket
from .protocol import Message
from . import presence, pubsub
from .history import history_of
from .pubsub import Broadcast
from .transport import Transport, TransportClosed

__all__ = ["ChannelServer", "ChannelSettings"]

log = structlog.get_logger("ackvisor.channels")

_CLOSED = Shutdown("closed")

#: Default history messages replayed per actor turn while catching up.
REPLAY_BATCH = 256
#: Default cap on acked replay pushes awaiting their ack (also at most half of ``max_unacked``).
REPLAY_WINDOW = 512


class _CatchUp:
    """The message a catching-up channel sends itself to replay its next batch."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<catch-up>"


_CATCH_UP = _CatchUp()
_NO_REPLAY: deque[Any] = deque(maxlen=0)  # shared by channels without a history: never filled


async def _resolved(value: Any) -> Any:
    """``value``, awaited if the history backend returned an awaitable (an async backend)."""
    if inspect.isawaitable(value):
        return await value
    return value


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
        history_topic = channel_cls.history_topic
        if history_topic is not None and "{topic}" in history_topic:
            # one history per joined topic, e.g. ``history_topic = "{topic}"`` for ``room:*``
            history_topic = history_topic.replace("{topic}", message.topic)
        self._history_topic: str | None = history_topic
        #: the epoch being caught up (replayed from the history), None once live
        self._catchup: str | None = None
        # Only channels with a history replay anything (an empty deque costs ~0.7 KB per channel).
        self._replay: deque[Any] = deque() if history_topic is not None else _NO_REPLAY
        self._catchup_scheduled = False
        self._window_blocked = False
        self._replay_batch = max(1, int(getattr(channel_cls, "replay_batch", REPLAY_BATCH)))
        window = getattr(channel_cls, "replay_window", REPLAY_WINDOW)
        if settings.max_unacked != math.inf:
            window = min(window, max(1, int(settings.max_unacked) // 2))
        self._replay_window = max(1, int(window))
        self._replay_window_bytes = settings.max_unacked_bytes / 2
        #: history messages replayed to this client (counters for statistics)
        self.replayed = 0
        self.live_dropped = 0
        #: presences this channel tracks: (key, conn_id), untracked when it ends
        self._tracked: list[tuple[str, str]] = []
        channel = channel_cls()
        channel._server = self
        self.channel = channel
        topic, join_ref, ref = message.topic, message.join_ref, message.ref
        params = message.payload if isinstance(message.payload, dict) else {}
        await self._recover(params)
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
        except TransportClosed:
            return IGNORE
        if self._catchup is not None:
            # The first batch goes out before the mailbox is served (so before anything the
            # channel sent itself in join); live messages are dropped until caught up.
            try:
                await self._catch_up()
            except ActorExit as e:
                if e.reason is _CLOSED:
                    return IGNORE
                self.stop(e.reason)  # a crash after a successful join: exit with the reason
            except Exception as e:
                self.stop(e)
        return None

    async def _recover(self, params: dict[str, Any]) -> None:
        """Subscribe first, then read the position and the first batch of the history: a message
        published in between is in both, and :meth:`_deliver` drops the second copy by offset."""
        topic = self._history_topic
        if topic is None:
            return
        history = history_of(self.node)
        pubsub.subscribe(self.node, topic, self.ref)
        position = await _resolved(history.position(topic))
        self.socket.position = position
        resume = params.get("resume")
        replay = None
        if isinstance(resume, dict):
            epoch, offset = resume.get("epoch"), resume.get("offset")
            if isinstance(epoch, str) and isinstance(offset, int) and not isinstance(offset, bool):
                replay = await _resolved(history.read_from(topic, epoch, offset, self._replay_batch))
                if replay is not None:
                    self.position = (epoch, offset)
                    self._catchup = epoch
                    self._replay.extend(replay)
        self.socket.recovered = replay is not None
        if replay is None:
            # A fresh start at the join position: what the join reply tells the client.
            self.position = (position.epoch, position.offset)

    # ----- catching up

    def _window_full(self) -> bool:
        tracker = self.tracker
        return len(tracker.awaiting) >= self._replay_window or tracker.awaiting_bytes >= self._replay_window_bytes

    def _schedule_catch_up(self) -> None:
        if not self._catchup_scheduled:
            self._catchup_scheduled = True
            self.ref.send(_CATCH_UP)

    async def _catch_up(self) -> None:
        """Replay up to one batch from the history; reschedule, wait for acks, or go live."""
        self._catchup_scheduled = False
        budget = self._replay_batch
        replay = self._replay
        topic = self._history_topic
        assert topic is not None
        while self._catchup is not None:
            if not replay:
                position = self.position
                assert position is not None
                entries = await _resolved(
                    history_of(self.node).read_from(topic, position[0], position[1], self._replay_batch)
                )
                if entries is None:
                    socket = self.socket
                    raise ActorExit(
                        Error(
                            "history_lost",
                            topic=socket.topic,
                            history_topic=topic,
                            epoch=position[0],
                            offset=position[1],
                            connection=socket.connection_id,
                            peer=socket.peer,
                        )
                    )
                if not entries:
                    self._catchup = None  # caught up: from now on the mailbox is the source
                    return
                replay.extend(entries)
            if self._window_full():
                self._window_blocked = True  # an ack reschedules us
                return
            if budget <= 0:
                self._schedule_catch_up()
                return
            entry = replay.popleft()
            budget -= 1
            self.replayed += 1
            await self._deliver(Broadcast(entry.topic, entry.event, entry.payload, None, entry.offset, entry.epoch))

    async def _reply_quietly(self, join_ref: str | None, ref: str | None, topic: str, status: str, response: dict) -> None:
        try:
            await self.transport.reply(join_ref, ref, topic, status, response)
        except TransportClosed:
            pass

    # ----- writing

    async def push(self, event: str, payload: Any, *, ack: bool) -> str | None:
        socket = self.socket
        source = self._delivering
        if not ack:
            if source is not None and isinstance(payload, dict):
                payload = {**payload, "offset": source.offset, "epoch": source.epoch}
            await self._write(self.transport.serializer.encode_push(socket.join_ref, socket.topic, event, payload))
            return None
        if not isinstance(payload, dict):
            raise TypeError("an acked push needs a dict payload (the message_id goes into it)")
        tracker = self.tracker
        if source is not None:
            pending = tracker.track(event, offset=source.offset, epoch=source.epoch)
            payload = {**payload, "message_id": pending.message_id, "offset": source.offset, "epoch": source.epoch}
        else:
            pending = tracker.track(event)
            payload = {**payload, "message_id": pending.message_id}
        frame = self.transport.serializer.encode_push(socket.join_ref, socket.topic, event, payload)
        if tracker.sized(pending, len(frame)):
            raise ActorExit(tracker.too_many_reason(topic=socket.topic, connection=socket.connection_id, peer=socket.peer))
        try:
            await self.transport.send(frame)  # not via _write: one coroutine less on the hot path
        except TransportClosed:
            raise ActorExit(_CLOSED) from None
        tracker.written(pending)
        return pending.message_id

    async def push_snapshot(self, event: str, payload: dict[str, Any], position: Any) -> str | None:
        epoch, offset = (position.epoch, position.offset) if hasattr(position, "epoch") else position
        # A snapshot is not a history message, whatever is being delivered now.
        delivering, self._delivering = self._delivering, None
        try:
            message_id = await self.push(event, {**payload, "snapshot": {"epoch": epoch, "offset": offset}}, ack=True)
        finally:
            self._delivering = delivering
        # Positions only move forward within an epoch: messages after the snapshot's offset that
        # were already delivered are not delivered again.
        if self.position is None or self.position[0] != epoch or self.position[1] < offset:
            self.position = (epoch, offset)
        return message_id

    async def _deliver(self, message: Broadcast) -> None:
        """Hand a broadcast to ``handle_out``, skipping history messages this client already has."""
        offset = message.offset
        if offset is None or message.topic != self._history_topic:
            # not a history message of this channel: no offset bookkeeping, no offset tagging
            await self.channel.handle_out(message.event, message.payload, self.socket)
            return
        position = self.position
        if position is not None and position[0] == message.epoch and offset <= position[1]:
            return
        if position is not None and (position[0] != message.epoch or offset != position[1] + 1):
            # The topic's history broke under this client (epoch changed, e.g. Redis lost it,
            # or messages went missing): exit so its rejoin gets recovered:false and a snapshot.
            raise ActorExit(
                Error(
                    "history_lost",
                    topic=self.socket.topic,
                    history_topic=message.topic,
                    expected_epoch=position[0],
                    expected_offset=position[1] + 1,
                    got_epoch=message.epoch,
                    got_offset=offset,
                    connection=self.socket.connection_id,
                    peer=self.socket.peer,
                )
            )
        self.position = (message.epoch, offset)  # type: ignore[assignment]
        if message.exclude is self.ref:
            return  # broadcast_from: this channel's own message, not echoed back
        self._delivering = message
        try:
            await self.channel.handle_out(message.event, message.payload, self.socket)
        finally:
            self._delivering = None

    async def write_broadcast(self, event: str, payload: Any) -> None:
        source = self._delivering
        if source is not None and isinstance(payload, dict):
            payload = {**payload, "offset": source.offset, "epoch": source.epoch}
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
            if message.event == "message_ack":
                # The hot path: settled without a coroutine unless a reply is due.
                reply = self._handle_ack(message)
                if reply is not None:
                    await self._reply(message, *reply)
                return
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
            if self._catchup is not None and message.offset is not None and message.topic == self._history_topic:
                self.live_dropped += 1  # in the history: the catch-up delivers it, in order
                return
            await self._deliver(message)
        elif cls is _CatchUp:
            await self._catch_up()
        else:
            await self.channel.handle_info(message, self.socket)

    async def _handle_client(self, msg: Message) -> None:
        event = msg.event
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

    def _handle_ack(self, msg: Message) -> tuple[str, dict[str, Any]] | None:
        """Settle a ``message_ack``; returns the reply (status, response) if the ack asked for one."""
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        message_id = payload.get("message_id")
        offset = payload.get("offset")
        if message_id is None and isinstance(offset, int) and not isinstance(offset, bool):
            epoch = payload.get("epoch")
            if not isinstance(epoch, str):
                epoch = self.position[0] if self.position is not None else None
            acked = self.tracker.ack_upto(offset, epoch)
            self._after_ack()
            return ("ok", {"acked": acked}) if msg.ref is not None else None
        if self.tracker.ack(message_id):
            self._after_ack()
            return ("ok", {}) if msg.ref is not None else None
        log.info("unknown_ack", topic=msg.topic, message_id=repr(message_id)[:80], connection=self.socket.connection_id)
        # A reply without a ref reaches nobody.
        return ("error", {"reason": "unknown message_id"}) if msg.ref is not None else None

    def _after_ack(self) -> None:
        if self._window_blocked and not self._window_full():
            self._window_blocked = False
            self._schedule_catch_up()

    async def _reply(self, msg: Message, status: str, response: dict) -> None:
        try:
            await self.transport.reply(msg.join_ref, msg.ref, msg.topic, status, response)
        except TransportClosed:
            raise ActorExit(_CLOSED) from None

    async def terminate(self, reason: Any) -> None:
        self.tracker.cancel_all()
        try:
            await self.channel.terminate(reason, self.socket)
        finally:
            for key, conn_id in self._tracked:
                await presence.untrack(self.node, self.socket.topic, key, conn_id)

    async def track(self, key: str, meta: dict[str, Any] | None) -> dict[str, Any]:
        socket = self.socket
        topic = socket.topic
        pubsub.subscribe(self.node, topic, self.ref)  # presence_diff arrives as a broadcast on the topic
        if getattr(self.node, "broker", None) is not None:
            # With Redis, make sure this node's subscription to the topic is acknowledged
            # before announcing ourselves, so no presence_diff is missed.
            await _resolved(history_of(self.node).position(topic))
        conn_id = f"{self.node.name}:{socket.connection_id}"
        stored = await presence.track(self.node, topic, key, conn_id, meta)
        if (key, conn_id) not in self._tracked:
            self._tracked.append((key, conn_id))
        await self.push("presence_state", await presence.list_presences(self.node, topic), ack=False)
        return stored

    def statistics_acks(self) -> Any:
        """The ack tracker's counters."""
        return self.tracker.statistics()

    @property
    def catching_up(self) -> bool:
        """True while the channel replays the history (live broadcasts are not delivered yet)."""
        return self._catchup is not None


_ = ActorRef
