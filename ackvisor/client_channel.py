"""One joined topic of a Phoenix client: :class:`ClientChannel` and its counters.

Also tracks the channel's resume position (``epoch``/``offset``) so that
rejoins replay what was missed and duplicates are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import trio

from .channels.protocol import V2_JSON, Message
from .client_errors import ChannelClosed, PushInterrupted, PushTimeout, _fresh
from .client_pending import _K_LEAVE, _K_PUSH, _Pending, _Timer
from .client_wire import Params, encode_client_binary_push

if TYPE_CHECKING:
    from .client import PhoenixClient

# channel states (phoenix.js names)
CLOSED: Final = "closed"
JOINING: Final = "joining"
JOINED: Final = "joined"
ERRORED: Final = "errored"
LEAVING: Final = "leaving"


@dataclass(slots=True)
class ChannelEvents:
    """Per-channel counters (mutable, updated by the client)."""

    #: successful joins (first join and every rejoin)
    joins: int = 0
    #: error replies to a phx_join
    join_errors: int = 0
    #: join attempts that got no reply in time
    join_timeouts: int = 0
    #: ``phx_error`` received from the server for the current join
    errors: int = 0
    #: ``phx_close`` received from the server for the current join
    closes: int = 0
    #: times the channel errored because the socket closed
    transport_errors: int = 0
    #: inbound messages dropped because their join_ref was stale
    stale_dropped: int = 0
    #: pushes/broadcasts queued for receive()
    messages_in: int = 0
    #: messages discarded because the inbox was full (``inbox_limit``)
    inbox_dropped: int = 0
    #: message_ack frames sent (auto and manual)
    acks_sent: int = 0
    #: offset messages dropped because this client already had them (resume)
    duplicates: int = 0
    #: joins answered ``recovered: true`` (the server replayed what was missed)
    recovered: int = 0
    #: joins answered ``recovered: false`` (a fresh snapshot follows)
    not_recovered: int = 0


# --------------------------------------------------------------------------
# Channel


class ClientChannel:
    """One joined topic. Created by :meth:`PhoenixClient.join`; survives rejoins.

    ``state`` is one of ``"joining"``, ``"joined"``, ``"errored"``,
    ``"leaving"``, ``"closed"``. ``join_ref`` is the ref of the current (or
    last) join. Server pushes and broadcasts (not replies, not control events)
    are queued in order for :meth:`receive`, across rejoins.
    """

    __slots__ = (
        "_client", "topic", "params", "auto_ack", "timeout", "state", "join_ref",
        "join_response", "events", "_inbox", "_inbox_limit", "_lot", "_final",
        "_changed", "_pushes", "_rejoin_tries", "_rejoin_timer", "_join_timer",
        "_joined_once", "_initial_pending", "resume", "position", "_position_join", "__weakref__",
    )

    def __init__(
        self,
        client: "PhoenixClient",
        topic: str,
        params: Params,
        auto_ack: bool,
        timeout: float,
        inbox_limit: int | None,
    ) -> None:
        self._client = client
        self.topic = topic
        #: join params (a mapping or a callable re-evaluated on every rejoin); settable
        self.params: Params = params
        #: ack inbound pushes carrying a ``message_id`` (settable at any time)
        self.auto_ack = auto_ack
        #: per-attempt join timeout (rejoins) and default for pushes
        self.timeout = timeout
        self.state: str = JOINING
        self.join_ref: str | None = None
        #: response of the last ok join reply
        self.join_response: Any = None
        self.events = ChannelEvents()
        self._inbox: deque[Message] = deque()
        self._inbox_limit = inbox_limit
        self._lot = trio.lowlevel.ParkingLot()
        self._final: BaseException | None = None
        self._changed = trio.Event()
        self._pushes: dict[str, _Pending] = {}
        self._rejoin_tries = 0
        self._rejoin_timer: _Timer | None = None
        self._join_timer: _Timer | None = None
        self._joined_once = False
        self._initial_pending = True
        #: track ``(epoch, offset)`` and pass ``resume`` on every rejoin; drop duplicates
        self.resume = False
        #: ``(epoch, offset)`` of the last history message handed to ``receive()``
        self.position: tuple[str, int] | None = None
        # the join_ref under which ``position`` was reached by a message (None: by a join reply
        # or a snapshot); a second push for the same offset in that join is not a duplicate
        self._position_join: str | None = None

    def __repr__(self) -> str:
        return (f"<ClientChannel topic={self.topic!r} state={self.state} "
                f"join_ref={self.join_ref!r} queued={len(self._inbox)}>")

    # ---- state -------------------------------------------------------------

    @property
    def joined(self) -> bool:
        """True while the current join is acknowledged by the server."""
        return self.state == JOINED

    @property
    def closed(self) -> bool:
        """True once the channel is closed for good (left, phx_close, client closed)."""
        return self._final is not None

    @property
    def client(self) -> "PhoenixClient":
        return self._client

    def _notify(self) -> None:
        event = self._changed
        self._changed = trio.Event()
        event.set()

    def _deliver(self, msg: Message) -> None:
        inbox = self._inbox
        limit = self._inbox_limit
        if limit is not None and len(inbox) >= limit:
            inbox.popleft()
            self.events.inbox_dropped += 1
        inbox.append(msg)
        self.events.messages_in += 1
        self._lot.unpark()

    def _fail_pushes(self, error: BaseException | str) -> None:
        """Fail the pushes awaiting a reply: with ``error``, or with
        :class:`PushInterrupted` (``error`` being the reason) if it is a str."""
        if not self._pushes:
            return
        pending = self._client._pending
        for ref, p in self._pushes.items():
            pending.pop(ref, None)
            if isinstance(error, str):
                p.fail(PushInterrupted(self.topic, p.name, error))
            else:
                p.fail(_fresh(error))
        self._pushes.clear()

    def _cancel_timers(self) -> None:
        if self._rejoin_timer is not None:
            self._rejoin_timer.cancel()
            self._rejoin_timer = None
        if self._join_timer is not None:
            self._join_timer.cancel()
            self._join_timer = None

    def _terminate(self, error: BaseException, state: str = CLOSED) -> None:
        """Close for good: pending pushes, receivers and waiters get ``error``."""
        if self._final is not None:
            return
        self._final = error
        self.state = state
        self._cancel_timers()
        client = self._client
        if client._channels.get(self.topic) is self:
            del client._channels[self.topic]
        if self.join_ref is not None:
            client._pending.pop(self.join_ref, None)
        self._fail_pushes(error)
        self._lot.unpark_all()
        self._notify()

    # ---- receiving ---------------------------------------------------------

    async def receive(self) -> Message:
        """The next server push/broadcast on this topic, in arrival order.

        Waits across rejoins and reconnects. Raises :class:`ChannelClosed`
        (left / ``phx_close``) or :class:`ClientClosed` once the queue is
        drained and the channel is closed for good.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        inbox = self._inbox
        while not inbox:
            if self._final is not None:
                raise _fresh(self._final)
            await self._lot.park()
        msg = inbox.popleft()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return msg

    def receive_nowait(self) -> Message:
        """Like :meth:`receive` but raises ``trio.WouldBlock`` if nothing is queued."""
        if self._inbox:
            return self._inbox.popleft()
        if self._final is not None:
            raise _fresh(self._final)
        raise trio.WouldBlock

    def pending_messages(self) -> int:
        """Number of messages queued for :meth:`receive`."""
        return len(self._inbox)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                msg = await self.receive()
            except ChannelClosed:
                return
            yield msg

    # ---- waiting -----------------------------------------------------------

    async def wait_joined(self, *, join_count: int | None = None) -> None:
        """Wait until the channel is joined (``join_count=None``) or until it
        has completed at least ``join_count`` successful joins in total.

        Raises :class:`ChannelClosed` / :class:`ClientClosed` if the channel is
        closed for good first.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if join_count is None:
                if self.state == JOINED:
                    return
            elif self.events.joins >= join_count:
                return
            if self._final is not None:
                raise _fresh(self._final)
            await self._changed.wait()

    async def wait_state(self, predicate: Callable[["ClientChannel"], bool]) -> None:
        """Wait until ``predicate(channel)`` holds (re-checked on every state change)."""
        await trio.lowlevel.checkpoint()
        while not predicate(self):
            if self._final is not None:
                raise _fresh(self._final)
            await self._changed.wait()

    async def _wait_can_push(self) -> None:
        client = self._client
        while True:
            if self._final is not None:
                raise _fresh(self._final)
            if self.state == JOINED and client._ws is not None:
                return
            await self._changed.wait()

    # ---- sending -----------------------------------------------------------

    async def push(self, event: str, payload: dict[str, Any] | bytes, *, timeout: float | None = None) -> Any:
        """Push ``event`` and return the reply payload ``{"status": ..., "response": ...}``.

        Waits for the channel to be (re)joined first. ``bytes`` payloads go as
        a V2 binary frame (a binary reply has ``bytes`` as its ``response``).
        Raises :class:`PushTimeout` if no reply comes within ``timeout``
        (default: the channel's join timeout), :class:`PushInterrupted` if the
        join it was sent on ends first, :class:`ChannelClosed` /
        :class:`ClientClosed` if the channel is closed for good.
        """
        return await self._push(event, payload, self.timeout if timeout is None else timeout)

    async def _push(self, event: str, payload: Any, timeout: float) -> Any:
        client = self._client
        binary = isinstance(payload, (bytes, bytearray, memoryview))
        if not binary and not isinstance(payload, dict):
            raise TypeError(f"payload must be a dict or bytes, not {type(payload).__name__}")
        with trio.move_on_after(timeout):
            while True:
                await self._wait_can_push()
                changed = self._changed
                join_ref = self.join_ref
                ref = client._make_ref()
                if binary:
                    frame: str | bytes = encode_client_binary_push(join_ref, ref, self.topic, event, payload)
                else:
                    frame = V2_JSON.encode_message(Message(join_ref, ref, self.topic, event, payload))
                p = _Pending(_K_PUSH, self, ref, event)
                client._pending[ref] = p
                self._pushes[ref] = p
                try:
                    sent = await client._send(frame, shield=True)
                    if not sent:
                        await changed.wait()  # the connection is going away; wait for the state change
                        continue
                    if event == "message_ack":
                        self.events.acks_sent += 1
                        client._acks_sent += 1
                    assert p.event is not None
                    await p.event.wait()
                finally:
                    if not p.done:
                        client._pending.pop(ref, None)
                        self._pushes.pop(ref, None)
                if p.error is not None:
                    raise p.error
                return p.reply
        raise PushTimeout(self.topic, event, timeout)

    async def ack(self, message_id: Any, status: str = "Received", *, timeout: float | None = None) -> Any:
        """Send ``message_ack {message_id, status}`` with the current join_ref and return its reply."""
        return await self._push(
            "message_ack", {"message_id": message_id, "status": status},
            self.timeout if timeout is None else timeout,
        )

    async def leave(self, *, timeout: float | None = None) -> None:
        """Send ``phx_leave`` and wait for its reply (or ``timeout``), then close
        the channel for good: receivers get :class:`ChannelClosed` once the
        queue is drained. Idempotent."""
        if self._final is not None:
            await trio.lowlevel.checkpoint()
            return
        client = self._client
        timeout = self.timeout if timeout is None else timeout
        previous = self.state
        self._cancel_timers()
        self.state = LEAVING
        self._notify()
        try:
            if previous in (JOINED, JOINING) and client._ws is not None and self.join_ref is not None:
                ref = client._make_ref()
                p = _Pending(_K_LEAVE, self, ref, "phx_leave")
                client._pending[ref] = p
                frame = V2_JSON.encode_message(Message(self.join_ref, ref, self.topic, "phx_leave", {}))
                try:
                    if await client._send(frame, shield=True):
                        assert p.event is not None
                        with trio.move_on_after(timeout):
                            await p.event.wait()
                finally:
                    client._pending.pop(ref, None)
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._terminate(ChannelClosed(self.topic, "left"))


def _fresh_offset(channel: ClientChannel, payload: dict[str, Any]) -> bool:
    """Track the resume position; False for a history message this channel already delivered.

    A message is a duplicate when its offset (in the current epoch) is below the position, or
    equal to it while the position was reached in an earlier join or by a snapshot; several
    pushes made for one history message in the same join all carry its offset and are kept.
    A snapshot moves the position forward only (within an epoch), like the server does.
    """
    snapshot = payload.get("snapshot")
    if type(snapshot) is dict:
        epoch, offset = snapshot.get("epoch"), snapshot.get("offset")
        if isinstance(epoch, str) and type(offset) is int:
            position = channel.position
            if position is None or position[0] != epoch or position[1] < offset:
                channel.position = (epoch, offset)
                channel._position_join = None
        return True
    offset = payload.get("offset")
    epoch = payload.get("epoch")
    if type(offset) is not int or not isinstance(epoch, str):
        return True
    position = channel.position
    if position is not None and position[0] == epoch:
        if offset < position[1]:
            return False
        if offset == position[1]:
            return channel._position_join is not None and channel._position_join == channel.join_ref
    channel.position = (epoch, offset)
    channel._position_join = channel.join_ref
    return True
