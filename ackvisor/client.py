"""A Trio Phoenix Channels client that acks automatically.

It behaves like phoenix.js (npm ``phoenix`` 1.8.16, see the protocol brief §8-§9)
and speaks the V2 JSON serializer over one WebSocket::

    async with PhoenixClient.open("ws://127.0.0.1:4000/socket", params={"token": t}) as client:
        channel = await client.join("superheroes:lobby")
        hydrate = await channel.receive()        # already acked (auto_ack=True)
        reply = await channel.push("rename", {"id": 1, "name": "Bob"})

What it shares with phoenix.js:

* URL: ``<endpoint>/websocket?<params>&vsn=2.0.0``; params flattened Rails/Plug
  style (``user[id]=1``) and percent-encoded like ``encodeURIComponent``;
  ``params`` may be a callable, re-evaluated on every (re)connect.
* Refs: one counter per socket rendered as decimal strings; a join's
  ``join_ref`` is its own ``ref``; every later push carries the channel's
  current join_ref; heartbeats carry ``join_ref = null``.
* Heartbeat ``[null, ref, "phoenix", "heartbeat", {}]`` every
  ``heartbeat_interval`` after the socket opens and after each reply; no reply
  within one more interval closes the socket (1000, ``"heartbeat timeout"``)
  and reconnects.
* Inbound messages whose join_ref is non-null and differs from the channel's
  current one are dropped (replies, pushes, ``phx_error``, ``phx_close``).
* ``phx_error`` -> channel errored, rejoin after ``rejoin_after(tries)``
  (1, 2, 5, then 10 s); ``phx_close`` -> channel closed for good.
* Socket closed (any code, either side) -> every channel errors; with
  ``reconnect=True`` the socket reconnects on ``reconnect_after(tries)``
  (10, 50, 100, 150, 200, 250, 500 ms, 1, 2, then 5 s) and rejoins every
  errored channel at once, with new join_refs and re-evaluated params.
* A join error on a *re*join keeps retrying on the rejoin backoff.

Where it differs (on purpose):

* :meth:`PhoenixClient.join` waits for the first outcome: an error reply to the
  first join raises :class:`JoinError` and the channel is discarded (phoenix.js
  would retry forever); no outcome within ``timeout`` raises
  :class:`JoinTimeout` (a ``phx_leave`` is sent for that join).
* A push whose reply is lost because its join ended (``phx_error``, socket
  closed) fails at once with :class:`PushInterrupted` instead of waiting for
  its local timeout. A push made while the channel is not joined waits (within
  its timeout) for the (re)join, like phoenix.js' push buffer.

Acks: for every inbound push or broadcast on a joined channel whose payload
has a ``message_id``, the reader sends
``[join_ref, ref, topic, "message_ack", {"message_id": id, "status": "Received"}]``
*before* the message is queued for :meth:`ClientChannel.receive` (so it acks
even if nobody receives). Acks are fire-and-forget: their replies are consumed,
error replies are counted (``statistics().ack_errors``).

Concurrency: the client owns one nursery (connection loop, one timer task,
and per connection the trio-websocket reader and a heartbeat task); leaving
:meth:`PhoenixClient.open` closes the socket (1000) and everything else. The
hot path spawns no tasks: the connection task decodes each frame once, acks
and routes it inline. Frames written from caller tasks (push, ack, join,
leave, send_raw) are written under a shield so a cancelled caller never leaves
a half-written frame on the socket.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, Final, NamedTuple
from urllib.parse import quote

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from .channels.protocol import V2_JSON, Message, ProtocolError

__all__ = [
    "ChannelClosed",
    "ChannelEvents",
    "ClientChannel",
    "ClientClosed",
    "ClientStatistics",
    "CloseInfo",
    "ConnectError",
    "JoinError",
    "JoinTimeout",
    "NotConnected",
    "PhoenixClient",
    "PhoenixClientError",
    "PushInterrupted",
    "PushTimeout",
    "decode_server_frame",
    "default_backoff",
    "default_rejoin_after",
    "encode_client_binary_push",
    "endpoint_url",
    "open_client",
    "serialize_params",
]

Params = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None

#: phoenix.js ``reconnectAfterMs`` default, in seconds (index = tries - 1).
_RECONNECT_STEPS: Final = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0)
#: phoenix.js ``rejoinAfterMs`` default, in seconds (index = tries - 1).
_REJOIN_STEPS: Final = (1.0, 2.0, 5.0)

VSN: Final = "2.0.0"
HEARTBEAT_TIMEOUT_REASON: Final = "heartbeat timeout"
_ACK_REF_CAP: Final = 65536  # fire-and-forget ack refs remembered per connection

# channel states (phoenix.js names)
CLOSED: Final = "closed"
JOINING: Final = "joining"
JOINED: Final = "joined"
ERRORED: Final = "errored"
LEAVING: Final = "leaving"

_PHX_REPLY: Final = "phx_reply"
_PHX_ERROR: Final = "phx_error"
_PHX_CLOSE: Final = "phx_close"

# pending-reply kinds
_K_JOIN, _K_PUSH, _K_LEAVE, _K_HEARTBEAT = 0, 1, 2, 3


def default_backoff(tries: int) -> float:
    """phoenix.js reconnect schedule: 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2, then 5 s.

    ``tries`` is 1 for the first retry after a close (phoenix.js counts the same way).
    """
    if tries < 1:
        tries = 1
    return _RECONNECT_STEPS[tries - 1] if tries <= len(_RECONNECT_STEPS) else 5.0


def default_rejoin_after(tries: int) -> float:
    """phoenix.js rejoin schedule: 1, 2, 5, then 10 s (``tries`` starts at 1)."""
    if tries < 1:
        tries = 1
    return _REJOIN_STEPS[tries - 1] if tries <= len(_REJOIN_STEPS) else 10.0


# --------------------------------------------------------------------------
# Errors and small value types


class PhoenixClientError(Exception):
    """Base class of every error raised by this module."""


class ClientClosed(PhoenixClientError):
    """The socket is closed and will not come back (``reconnect=False``,
    :meth:`PhoenixClient.disconnect`, or the client's ``open()`` block ended)."""

    def __init__(self, close: "CloseInfo | None" = None, detail: str = "client closed") -> None:
        super().__init__(close, detail)
        self.close = close
        self.detail = detail

    def __str__(self) -> str:
        if self.close is None:
            return self.detail
        return f"{self.detail} (code={self.close.code}, reason={self.close.reason!r})"


class ConnectError(PhoenixClientError):
    """``open()`` could not connect (only raised when ``reconnect=False``)."""

    def __init__(self, url: str, cause: BaseException | None = None) -> None:
        super().__init__(url, cause)
        self.url = url
        self.cause = cause

    def __str__(self) -> str:
        return f"could not connect to {self.url}: {self.cause!r}"


class NotConnected(PhoenixClientError):
    """:meth:`PhoenixClient.send_raw` was called while no connection is open."""


class ChannelClosed(PhoenixClientError):
    """The channel was left (:meth:`ClientChannel.leave`), closed by the server
    (``phx_close``), or replaced by a newer join of the same topic."""

    def __init__(self, topic: str, reason: str = "closed") -> None:
        super().__init__(topic, reason)
        self.topic = topic
        self.reason = reason

    def __str__(self) -> str:
        return f"channel {self.topic!r} closed: {self.reason}"


class JoinError(PhoenixClientError):
    """The server answered the first ``phx_join`` with a non-ok status."""

    def __init__(self, topic: str, response: Any, status: str = "error") -> None:
        super().__init__(topic, response, status)
        self.topic = topic
        self.response = response
        self.status = status

    def __str__(self) -> str:
        return f"join {self.topic!r} failed ({self.status}): {self.response!r}"


class JoinTimeout(PhoenixClientError, TimeoutError):
    """No reply to the first join within the ``timeout`` given to :meth:`PhoenixClient.join`."""

    def __init__(self, topic: str, timeout: float) -> None:
        super().__init__(topic, timeout)
        self.topic = topic
        self.timeout = timeout

    def __str__(self) -> str:
        return f"join {self.topic!r} got no reply within {self.timeout} s"


class PushTimeout(PhoenixClientError, TimeoutError):
    """No reply to a push within its timeout (purely local, like phoenix.js)."""

    def __init__(self, topic: str, event: str, timeout: float) -> None:
        super().__init__(topic, event, timeout)
        self.topic = topic
        self.event = event
        self.timeout = timeout

    def __str__(self) -> str:
        return f"push {self.event!r} on {self.topic!r} got no reply within {self.timeout} s"


class PushInterrupted(PhoenixClientError):
    """The push was sent but its channel join ended (``phx_error``, socket
    closed) before the reply came; the server may or may not have handled it."""

    def __init__(self, topic: str, event: str, reason: str) -> None:
        super().__init__(topic, event, reason)
        self.topic = topic
        self.event = event
        self.reason = reason

    def __str__(self) -> str:
        return f"push {self.event!r} on {self.topic!r} interrupted: {self.reason}"


def _fresh(exc: BaseException) -> BaseException:
    """A new instance of a stored error, so tracebacks do not pile up on one object."""
    return exc.__class__(*exc.args)


class CloseInfo(NamedTuple):
    """How one connection ended: the WebSocket close ``code`` and ``reason``.

    Server closes report the server's code; an abrupt TCP loss is 1006; closes
    made by this client report the code it sent (1000 for ``disconnect()``
    and for a heartbeat timeout, whose reason is ``"heartbeat timeout"``).
    """

    code: int
    reason: str | None


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


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    """Snapshot returned by :meth:`PhoenixClient.statistics`."""

    connects: int
    reconnects: int
    connect_errors: int
    closes: int
    connected: bool
    frames_in: int
    frames_out: int
    messages_in: int
    decode_errors: int
    stale_dropped: int
    unrouted: int
    acks_sent: int
    ack_errors: int
    heartbeats_sent: int
    heartbeat_timeouts: int
    joins: int
    join_errors: int
    channel_errors: int
    channel_closes: int
    channels: int
    pending_replies: int
    last_heartbeat_rtt: float | None


# --------------------------------------------------------------------------
# URL and binary frames


def _js_string(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is float and value.is_integer() and math.isfinite(value):
        return str(int(value))
    return str(value)


def _encode_component(text: str) -> str:
    # encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) unescaped.
    return quote(text, safe="-_.!~*'()")


def serialize_params(params: Mapping[str, Any], parent_key: str | None = None) -> str:
    """phoenix.js ``Ajax.serialize``: Rails/Plug-style flattening, percent-encoded.

    ``{"user": {"id": 1}}`` -> ``user%5Bid%5D=1``; lists become ``key[0]=..``;
    ``True``/``False`` -> ``true``/``false``; ``None`` values are skipped.
    """
    parts: list[str] = []
    for key, value in params.items():
        param_key = f"{parent_key}[{key}]" if parent_key is not None else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            nested = serialize_params(value, param_key)
            if nested:
                parts.append(nested)
        elif isinstance(value, (list, tuple)):
            nested = serialize_params({str(i): v for i, v in enumerate(value)}, param_key)
            if nested:
                parts.append(nested)
        else:
            parts.append(_encode_component(param_key) + "=" + _encode_component(_js_string(value)))
    return "&".join(parts)


def _append_params(url: str, params: Mapping[str, Any]) -> str:
    if not params:
        return url
    query = serialize_params(params)
    if not query:
        return url
    return f"{url}{'&' if '?' in url else '?'}{query}"


def endpoint_url(url: str, params: Mapping[str, Any] | None = None, *, vsn: str = VSN) -> str:
    """``<url>/websocket?<params>&vsn=2.0.0``, exactly like phoenix.js' ``endPointURL()``."""
    base = url.rstrip("/") + "/websocket"
    return _append_params(_append_params(base, params or {}), {"vsn": vsn})


def _eval_params(params: Params) -> dict[str, Any]:
    value = params() if callable(params) else params
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"params must be a mapping, got {type(value).__name__}")
    return dict(value)


def _bfield(value: str | None, name: str) -> bytes:
    if value is None:
        return b""
    data = value.encode("utf-8")
    if len(data) > 255:
        raise ValueError(f"{name} is {len(data)} UTF-8 bytes; binary frames allow at most 255")
    return data


def encode_client_binary_push(
    join_ref: str | None, ref: str | None, topic: str, event: str, payload: bytes
) -> bytes:
    """V2 client->server binary push: kind 0 and four 1-byte lengths (brief §3)."""
    j = _bfield(join_ref, "join_ref")
    r = _bfield(ref, "ref")
    t = _bfield(topic, "topic")
    e = _bfield(event, "event")
    return b"".join((bytes((0, len(j), len(r), len(t), len(e))), j, r, t, e, bytes(payload)))


def _bad_binary(detail: str, code: int = 1007) -> ProtocolError:
    return ProtocolError("bad_binary_header", code, detail=detail)


def decode_server_frame(data: bytes) -> Message:
    """Decode a V2 *server->client* binary frame (brief §3).

    kind 0 push (3 lengths: join_ref, topic, event; no ref), kind 1 reply
    (4 lengths: join_ref, ref, topic, status; becomes ``phx_reply`` with
    ``{"status": status, "response": bytes}``), kind 2 broadcast (2 lengths).
    Raises :class:`ProtocolError` on anything malformed. (The shared codec only
    decodes the client->server layout, which differs.)
    """
    data = bytes(data)
    size = len(data)
    if size == 0:
        raise _bad_binary("empty binary frame")
    kind = data[0]
    if kind == 0:
        header = 4
    elif kind == 1:
        header = 5
    elif kind == 2:
        header = 3
    else:
        raise _bad_binary(f"unsupported binary kind {kind}", 1003)
    if size < header:
        raise _bad_binary("truncated header")
    lengths = data[1:header]
    fields: list[str] = []
    at = header
    try:
        for n in lengths:
            end = at + n
            if end > size:
                raise _bad_binary("header lengths exceed frame size")
            fields.append(data[at:end].decode("utf-8"))
            at = end
    except UnicodeDecodeError:
        raise _bad_binary("header string is not valid UTF-8") from None
    payload = data[at:]
    if kind == 0:
        join_ref, topic, event = fields
        ref = None
    elif kind == 1:
        join_ref, ref_s, topic, status = fields
        return Message(join_ref or None, ref_s or None, topic, _PHX_REPLY,
                       {"status": status, "response": payload})
    else:
        topic, event = fields
        join_ref, ref = "", None
    if not topic or not event:
        raise ProtocolError("wrong_type", 1007, detail="empty topic or event")
    return Message(join_ref or None, ref, topic, event, payload)


def _bearer_protocol(token: str) -> str:
    # phoenix.js: btoa(token) (standard base64) with "=" padding stripped.
    encoded = base64.b64encode(token.encode("utf-8")).decode("ascii").rstrip("=")
    return "base64url.bearer.phx." + encoded


# --------------------------------------------------------------------------
# Internals


class _Pending:
    """One frame waiting for its phx_reply."""

    __slots__ = ("kind", "channel", "ref", "event", "reply", "error", "done", "sent_at", "name")

    def __init__(self, kind: int, channel: "ClientChannel | None", ref: str, name: str = "") -> None:
        self.kind = kind
        self.channel = channel
        self.ref = ref
        self.name = name
        self.event: trio.Event | None = trio.Event() if kind != _K_JOIN else None
        self.reply: Any = None
        self.error: BaseException | None = None
        self.done = False
        self.sent_at = 0.0

    def resolve(self, reply: Any) -> None:
        if not self.done:
            self.done = True
            self.reply = reply
            if self.event is not None:
                self.event.set()

    def fail(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = error
            if self.event is not None:
                self.event.set()


class _Timer:
    __slots__ = ("deadline", "fn", "args", "active")

    def __init__(self, deadline: float, fn: Callable[..., Awaitable[None]], args: tuple[Any, ...]) -> None:
        self.deadline = deadline
        self.fn = fn
        self.args = args
        self.active = True

    def cancel(self) -> None:
        self.active = False


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


# --------------------------------------------------------------------------
# Client


class PhoenixClient:
    """One Phoenix socket (one WebSocket at a time, reconnecting).

    Use :meth:`open`; the constructor only stores options. All public methods
    must be called from the Trio run that ``open()`` runs in.
    """

    def __init__(
        self,
        url: str,
        *,
        params: Params = None,
        auto_ack: bool = True,
        reconnect: bool = True,
        reconnect_after: Callable[[int], float] = default_backoff,
        rejoin_after: Callable[[int], float] = default_rejoin_after,
        heartbeat_interval: float | None = 30.0,
        connect_timeout: float = 10.0,
        disconnect_timeout: float = 5.0,
        auth_token: str | None = None,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        max_message_size: int = 64 * 1024 * 1024,
        message_queue_size: int = 64,
        inbox_limit: int | None = None,
    ) -> None:
        self.url = url
        #: socket params (mapping or callable re-evaluated on every connect); settable
        self.params: Params = params
        #: default auto_ack for new channels
        self.auto_ack = auto_ack
        #: reconnect after the socket closes (any code); settable
        self.reconnect = reconnect
        self.reconnect_after = reconnect_after
        self.rejoin_after = rejoin_after
        self.heartbeat_interval = heartbeat_interval
        self.connect_timeout = connect_timeout
        self.disconnect_timeout = disconnect_timeout
        self.auth_token = auth_token
        self.extra_headers = extra_headers
        self.max_message_size = max_message_size
        self.message_queue_size = message_queue_size
        self.inbox_limit = inbox_limit

        #: every finished connection, oldest first
        self.closes: list[CloseInfo] = []
        #: the last connect failure (exception), if any
        self.last_connect_error: BaseException | None = None
        #: round-trip time of the last answered heartbeat, seconds
        self.last_heartbeat_rtt: float | None = None

        self._ref = 0
        self._ws: WebSocketConnection | None = None
        self._channels: dict[str, ClientChannel] = {}
        self._pending: dict[str, _Pending] = {}
        self._ack_refs: dict[str, ClientChannel] = {}
        self._changed = trio.Event()
        self._stopping = False
        self._finished = trio.Event()
        self._final: BaseException | None = None
        self._wait_scope: trio.CancelScope | None = None
        self._local_close: CloseInfo | None = None
        self._tries = 0
        self._nursery: trio.Nursery | None = None
        self._task_scopes: list[trio.CancelScope] = []
        self._tasks_cancelled = False
        # timers
        self._timers: list[tuple[float, int, _Timer]] = []
        self._timer_seq = itertools.count()
        self._timer_wakeup = trio.Event()
        # counters
        self._connects = 0
        self._connect_errors = 0
        self._frames_in = 0
        self._frames_out = 0
        self._messages_in = 0
        self._decode_errors = 0
        self._stale = 0
        self._unrouted = 0
        self._acks_sent = 0
        self._ack_errors = 0
        self._heartbeats_sent = 0
        self._heartbeat_timeouts = 0
        self._joins = 0
        self._join_errors = 0
        self._channel_errors = 0
        self._channel_closes = 0

    # ---- lifecycle ---------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        *,
        params: Params = None,
        auto_ack: bool = True,
        reconnect: bool = True,
        reconnect_after: Callable[[int], float] = default_backoff,
        rejoin_after: Callable[[int], float] = default_rejoin_after,
        heartbeat_interval: float | None = 30.0,
        connect_timeout: float = 10.0,
        wait_connected: bool = True,
        **options: Any,
    ) -> AsyncIterator["PhoenixClient"]:
        """Run a client for the duration of the ``async with`` block.

        ``url`` is the endpoint base (``ws://host:4000/socket``). With
        ``wait_connected=True`` (default) the block starts once the first
        connection is open: with ``reconnect=True`` it keeps retrying on the
        backoff (bound it with ``trio.fail_after`` if needed), with
        ``reconnect=False`` a failure raises :class:`ConnectError`. Extra
        keyword options: ``disconnect_timeout``, ``auth_token``,
        ``extra_headers``, ``max_message_size``, ``message_queue_size``,
        ``inbox_limit`` (see :class:`PhoenixClient`).

        Leaving the block closes the socket with 1000, cancels every
        background task and makes pending calls raise :class:`ClientClosed`.
        """
        client = cls(
            url, params=params, auto_ack=auto_ack, reconnect=reconnect,
            reconnect_after=reconnect_after, rejoin_after=rejoin_after,
            heartbeat_interval=heartbeat_interval, connect_timeout=connect_timeout,
            **options,
        )
        try:
            async with trio.open_nursery() as nursery:
                client._nursery = nursery
                nursery.start_soon(client._guarded, client._timer_loop,
                                   name=f"{__name__}.PhoenixClient._timer_loop")
                nursery.start_soon(client._guarded, client._run,
                                   name=f"{__name__}.PhoenixClient._run")
                try:
                    if wait_connected:
                        await client._wait_first_connect()
                    yield client
                finally:
                    # Graceful close first (the internal tasks are shielded from
                    # outer cancellation so the close handshake can complete),
                    # bounded; then cancel everything.
                    with trio.CancelScope(shield=True, deadline=trio.current_time() + client.disconnect_timeout + 1):
                        await client.disconnect()
                    client._finalize(ClientClosed(client.closes[-1] if client.closes else None))
                    client._cancel_tasks()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Background tasks only end by cancellation, so a group holds the
            # body's exception alone: re-raise it unwrapped.
            if len(group.exceptions) == 1:
                _reraise(group.exceptions[0])
            raise
        finally:
            client._nursery = None

    async def _guarded(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run an internal task shielded from outer cancellation; ``open()``
        cancels it explicitly after the graceful disconnect."""
        scope = trio.CancelScope(shield=True)
        self._task_scopes.append(scope)
        if self._tasks_cancelled:
            scope.cancel()
        with scope:
            await fn()

    def _cancel_tasks(self) -> None:
        self._tasks_cancelled = True
        for scope in self._task_scopes:
            scope.cancel()

    async def _wait_first_connect(self) -> None:
        while self._ws is None:
            if self._finished.is_set():
                raise ConnectError(self.url, self.last_connect_error)
            await self._changed.wait()

    @property
    def connected(self) -> bool:
        """True while a WebSocket connection is open."""
        return self._ws is not None

    @property
    def is_closed(self) -> bool:
        """True once the client will not (re)connect any more."""
        return self._final is not None or self._finished.is_set()

    @property
    def channels(self) -> dict[str, ClientChannel]:
        """Open channels by topic (a copy)."""
        return dict(self._channels)

    def endpoint_url(self) -> str:
        """The URL the next connection will use (params evaluated now)."""
        return endpoint_url(self.url, _eval_params(self.params))

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            connects=self._connects,
            reconnects=max(0, self._connects - 1),
            connect_errors=self._connect_errors,
            closes=len(self.closes),
            connected=self._ws is not None,
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            messages_in=self._messages_in,
            decode_errors=self._decode_errors,
            stale_dropped=self._stale,
            unrouted=self._unrouted,
            acks_sent=self._acks_sent,
            ack_errors=self._ack_errors,
            heartbeats_sent=self._heartbeats_sent,
            heartbeat_timeouts=self._heartbeat_timeouts,
            joins=self._joins,
            join_errors=self._join_errors,
            channel_errors=self._channel_errors,
            channel_closes=self._channel_closes,
            channels=len(self._channels),
            pending_replies=len(self._pending),
            last_heartbeat_rtt=self.last_heartbeat_rtt,
        )

    def _notify(self) -> None:
        event = self._changed
        self._changed = trio.Event()
        event.set()

    def _make_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    @contextmanager
    def _interruptible(self) -> Iterator[trio.CancelScope]:
        """A wait that disconnect() / a heartbeat timeout may cut short."""
        scope = trio.CancelScope()
        if self._stopping or self._local_close is not None:
            scope.cancel()
        self._wait_scope = scope
        try:
            with scope:
                yield scope
        finally:
            if self._wait_scope is scope:
                self._wait_scope = None

    def _close_connection(self, info: CloseInfo) -> None:
        """Ask the connection task to close the current socket with ``info``."""
        if self._ws is not None and self._local_close is None:
            self._local_close = info
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def disconnect(self, code: int = 1000, reason: str | None = None) -> None:
        """Close the socket (``code``/``reason``) and stop reconnecting.

        Channels error and their receivers get :class:`ClientClosed`. Returns
        once the connection task has finished.
        """
        self._stopping = True
        self._close_connection(CloseInfo(code, reason))
        if self._nursery is None:
            await trio.lowlevel.checkpoint()
            return
        await self._finished.wait()

    async def wait_closed(self, *, close_count: int | None = None) -> CloseInfo:
        """Wait until the current connection closes and return its :class:`CloseInfo`.

        If no connection is open, returns the last close at once (or waits for
        the next connection to close if there was none yet). With
        ``close_count=n`` waits until ``n`` connections have closed in total
        and returns the n-th close (race-free when the client may already
        have reconnected). Raises :class:`ClientClosed` if the client ends
        without the awaited close.
        """
        await trio.lowlevel.checkpoint()
        if close_count is not None:
            while len(self.closes) < close_count:
                if self._finished.is_set() and self._ws is None:
                    raise ClientClosed(self.closes[-1] if self.closes else None)
                await self._changed.wait()
            return self.closes[close_count - 1]
        if self._ws is None and self.closes:
            return self.closes[-1]
        seen = len(self.closes)
        while len(self.closes) <= seen:
            if self._finished.is_set() and self._ws is None:
                if self.closes:
                    return self.closes[-1]
                raise ClientClosed(None, "client closed without ever connecting")
            await self._changed.wait()
        return self.closes[seen]

    async def wait_connected(self, *, connect_count: int | None = None) -> None:
        """Wait until connected (or until ``connect_count`` connections were made)."""
        await trio.lowlevel.checkpoint()
        while True:
            if connect_count is None:
                if self._ws is not None:
                    return
            elif self._connects >= connect_count:
                return
            if self._finished.is_set():
                raise ClientClosed(self.closes[-1] if self.closes else None)
            await self._changed.wait()

    # ---- timers ------------------------------------------------------------

    def _call_later(self, delay: float, fn: Callable[..., Awaitable[None]], *args: Any) -> _Timer:
        deadline = trio.current_time() + max(0.0, delay)
        timer = _Timer(deadline, fn, args)
        heap = self._timers
        if not heap or deadline < heap[0][0]:
            self._timer_wakeup.set()
        heapq.heappush(heap, (deadline, next(self._timer_seq), timer))
        return timer

    async def _timer_loop(self) -> None:
        heap = self._timers
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, timer = heapq.heappop(heap)
                if timer.active:
                    timer.active = False
                    await timer.fn(*timer.args)
                now = trio.current_time()
            if self._timer_wakeup.is_set():
                self._timer_wakeup = trio.Event()
            wakeup = self._timer_wakeup
            with trio.move_on_at(heap[0][0] if heap else math.inf):
                await wakeup.wait()

    # ---- sending -----------------------------------------------------------

    async def _send(self, frame: str | bytes, *, shield: bool = False) -> bool:
        """Write one frame on the current connection; False if there is none / it closed."""
        ws = self._ws
        if ws is None:
            await trio.lowlevel.checkpoint()
            return False
        try:
            if shield:
                with trio.CancelScope(shield=True):
                    await ws.send_message(frame)
            else:
                await ws.send_message(frame)
        except ConnectionClosed:
            return False
        self._frames_out += 1
        return True

    async def send_raw(self, data: str | bytes) -> None:
        """Send ``data`` as one text (``str``) or binary (``bytes``) frame, unchecked.

        Raises :class:`NotConnected` if no connection is open (or it closed meanwhile).
        """
        if self._final is not None:
            raise _fresh(self._final)
        if not await self._send(data, shield=True):
            raise NotConnected("no open connection")

    async def _send_leave_frame(self, topic: str, join_ref: str | None, shield: bool = False) -> None:
        """Fire-and-forget phx_leave (join timeouts, replaced or abandoned joins)."""
        if self._ws is None or join_ref is None:
            await trio.lowlevel.checkpoint()
            return
        ref = self._make_ref()
        await self._send(V2_JSON.encode_message(Message(join_ref, ref, topic, "phx_leave", {})), shield=shield)

    async def ping(self, *, timeout: float = 10.0) -> float:
        """Send a heartbeat and return the round-trip time in seconds."""
        ref = self._make_ref()
        p = _Pending(_K_HEARTBEAT, None, ref, "heartbeat")
        self._pending[ref] = p
        start = trio.current_time()
        try:
            if not await self._send(V2_JSON.encode_message(Message(None, ref, "phoenix", "heartbeat", {})), shield=True):
                raise NotConnected("no open connection")
            assert p.event is not None
            with trio.fail_after(timeout):
                await p.event.wait()
        except trio.TooSlowError:
            raise PushTimeout("phoenix", "heartbeat", timeout) from None
        finally:
            self._pending.pop(ref, None)
        if p.error is not None:
            raise p.error
        return trio.current_time() - start

    # ---- joining -----------------------------------------------------------

    def channel(self, topic: str) -> ClientChannel | None:
        """The open channel for ``topic``, if any."""
        return self._channels.get(topic)

    async def join(
        self,
        topic: str,
        params: Params = None,
        *,
        auto_ack: bool | None = None,
        timeout: float = 10.0,
        inbox_limit: int | None = None,
        resume: bool = True,
    ) -> ClientChannel:
        """Join ``topic`` and wait for the first outcome.

        Returns the joined :class:`ClientChannel`. Raises :class:`JoinError`
        on an error reply, :class:`JoinTimeout` after ``timeout`` (a phx_leave
        is sent and the channel discarded), :class:`ClientClosed` if the
        client closes meanwhile. If the socket is down, the join is sent when
        it reconnects. An already open channel on the same topic is left first
        (like phoenix.js). ``params`` may be a callable, re-evaluated on every
        rejoin. ``inbox_limit`` bounds the receive queue (oldest dropped).

        With ``resume`` (the default), messages carrying ``offset``/``epoch``
        are tracked: every rejoin sends ``resume: {epoch, offset}`` so the
        server replays what was missed, a message below the last offset seen
        (or at it, from an earlier join) is dropped as a duplicate, and a
        ``snapshot`` payload (or a ``recovered: false`` join reply) sets the
        position. ``receive()`` then sees every offset exactly once, in order,
        across let-it-crash reconnects (``channel.events.duplicates``,
        ``recovered`` and ``not_recovered`` count what happened). The position
        is tracked when a message is read off the socket, so a message dropped
        by ``inbox_limit`` is not replayed.
        """
        if self._final is not None or self._finished.is_set():
            raise ClientClosed(self.closes[-1] if self.closes else None)
        old = self._channels.get(topic)
        if old is not None:
            old_ref, old_state = old.join_ref, old.state
            old._terminate(ChannelClosed(topic, "replaced by a new join"))
            if old_state in (JOINED, JOINING) and self._ws is not None:
                await self._send_leave_frame(topic, old_ref, shield=True)
        channel = ClientChannel(
            self, topic, params, self.auto_ack if auto_ack is None else auto_ack, timeout,
            self.inbox_limit if inbox_limit is None else inbox_limit,
        )
        channel.resume = resume
        self._channels[topic] = channel
        ok = False
        try:
            with trio.move_on_after(timeout):
                if self._ws is not None:
                    await self._send_join(channel, shield=True)
                while not channel._joined_once:
                    if channel._final is not None:
                        raise _fresh(channel._final)
                    await channel._changed.wait()
                ok = True
                return channel
            channel.events.join_timeouts += 1
            raise JoinTimeout(topic, timeout)
        finally:
            channel._initial_pending = False
            if not ok and channel._final is None:
                join_ref, state = channel.join_ref, channel.state
                channel._terminate(ChannelClosed(topic, "join abandoned"))
                if state == JOINING and join_ref is not None and self._ws is not None and self._nursery is not None:
                    self._call_later(0, self._send_leave_frame, topic, join_ref)

    async def _send_join(self, channel: ClientChannel, *, shield: bool = False) -> None:
        if channel._final is not None:
            return
        if channel._join_timer is not None:
            channel._join_timer.cancel()
            channel._join_timer = None
        if channel.join_ref is not None:
            self._pending.pop(channel.join_ref, None)
        ref = self._make_ref()
        params = _eval_params(channel.params)
        if channel.resume and channel.position is not None:
            params = {**params, "resume": {"epoch": channel.position[0], "offset": channel.position[1]}}
        channel.join_ref = ref
        channel.state = JOINING
        self._pending[ref] = _Pending(_K_JOIN, channel, ref, "phx_join")
        if not channel._initial_pending:
            channel._join_timer = self._call_later(channel.timeout, self._join_timed_out, channel, ref)
        channel._notify()
        await self._send(V2_JSON.encode_message(Message(ref, ref, channel.topic, "phx_join", params)), shield=shield)

    async def _join_timed_out(self, channel: ClientChannel, ref: str) -> None:
        if channel._final is not None or channel.state != JOINING or channel.join_ref != ref:
            return
        channel._join_timer = None
        channel.events.join_timeouts += 1
        self._pending.pop(ref, None)
        await self._send_leave_frame(channel.topic, ref)
        if channel._final is None and channel.join_ref == ref and channel.state == JOINING:
            self._channel_errored(channel, "join timeout")

    def _channel_errored(self, channel: ClientChannel, reason: str) -> None:
        """phx_error / failed rejoin: errored, fail pushes, schedule a rejoin if connected."""
        channel.state = ERRORED
        if channel._join_timer is not None:
            channel._join_timer.cancel()
            channel._join_timer = None
        channel._fail_pushes(reason)
        if channel._rejoin_timer is not None:
            channel._rejoin_timer.cancel()
            channel._rejoin_timer = None
        if self._ws is not None and self._nursery is not None:
            channel._rejoin_tries += 1
            channel._rejoin_timer = self._call_later(
                self.rejoin_after(channel._rejoin_tries), self._rejoin_due, channel
            )
        channel._notify()

    async def _rejoin_due(self, channel: ClientChannel) -> None:
        channel._rejoin_timer = None
        if channel._final is None and channel.state == ERRORED and self._ws is not None:
            await self._send_join(channel)

    def _on_join_reply(self, channel: ClientChannel, ref: str, payload: Any) -> None:
        if channel._final is not None or channel.join_ref != ref or channel.state != JOINING:
            return
        if channel._join_timer is not None:
            channel._join_timer.cancel()
            channel._join_timer = None
        status = payload.get("status") if type(payload) is dict else None
        response = payload.get("response") if type(payload) is dict else None
        if status == "ok":
            channel.state = JOINED
            channel.join_response = response
            if channel.resume and type(response) is dict and "recovered" in response:
                if response["recovered"] is True:
                    channel.events.recovered += 1
                else:
                    channel.events.not_recovered += 1
                    epoch, offset = response.get("epoch"), response.get("offset")
                    if isinstance(epoch, str) and type(offset) is int:
                        # no replay comes: the stream restarts at the server's position (the
                        # channel's snapshot, if it sends one, is at or after it)
                        channel.position = (epoch, offset)
                        channel._position_join = None
            channel._joined_once = True
            channel._rejoin_tries = 0
            channel.events.joins += 1
            self._joins += 1
            channel._notify()
            return
        channel.events.join_errors += 1
        self._join_errors += 1
        if not channel._joined_once and channel._initial_pending:
            channel._terminate(JoinError(channel.topic, response, str(status)))
        else:
            self._channel_errored(channel, f"rejoin refused: {response!r}")

    # ---- connection loop -----------------------------------------------------

    async def _run(self) -> None:
        try:
            while not self._stopping:
                await self._connect_and_serve()
                if self._stopping or not self.reconnect:
                    break
                self._tries += 1
                with self._interruptible():
                    await trio.sleep(self.reconnect_after(self._tries))
        finally:
            self._finished.set()
            self._finalize(ClientClosed(self.closes[-1] if self.closes else None))

    def _subprotocols(self) -> list[str] | None:
        if self.auth_token is None:
            return None
        return ["phoenix", _bearer_protocol(self.auth_token)]

    async def _connect_and_serve(self) -> None:
        ws: WebSocketConnection | None = None
        try:
            url = self.endpoint_url()
            async with trio.open_nursery() as conn_nursery:
                with self._interruptible():
                    with trio.fail_after(self.connect_timeout):
                        ws = await connect_websocket_url(
                            conn_nursery, url,
                            subprotocols=self._subprotocols(),
                            extra_headers=self.extra_headers,
                            message_queue_size=self.message_queue_size,
                            max_message_size=self.max_message_size,
                        )
                if ws is None:  # disconnect() during the attempt
                    conn_nursery.cancel_scope.cancel()
                    return
                await self._serve(ws, conn_nursery)
        except* (HandshakeError, ConnectionClosed, OSError, trio.TooSlowError, trio.BrokenResourceError) as group:
            self._connect_errors += 1
            self.last_connect_error = group.exceptions[0]
            self._notify()
        finally:
            if ws is not None:
                stream = getattr(ws, "_stream", None)
                if stream is not None:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(stream)

    async def _serve(self, ws: WebSocketConnection, conn_nursery: trio.Nursery) -> None:
        self._ws = ws
        self._local_close = None
        self._tries = 0
        self._connects += 1
        self._notify()
        heartbeat_scope = trio.CancelScope()
        try:
            for channel in list(self._channels.values()):
                channel._cancel_timers()
                channel._rejoin_tries = 0
                if channel._final is None and channel.state in (ERRORED, JOINING):
                    await self._send_join(channel)
            if self.heartbeat_interval is not None:
                conn_nursery.start_soon(
                    self._heartbeat_task, heartbeat_scope,
                    name=f"{__name__}.PhoenixClient._heartbeat",
                )
            with self._interruptible():
                await self._read_loop(ws)
        finally:
            heartbeat_scope.cancel()
            local = self._local_close
            self._local_close = None
            reason = ws.closed
            if local is not None:
                info = local
            elif reason is not None:
                info = CloseInfo(reason.code, reason.reason)
            else:  # cancelled from outside: we close it
                info = CloseInfo(1000, None)
            self._connection_lost(info)
            with trio.CancelScope(shield=True, deadline=trio.current_time() + self.disconnect_timeout):
                await ws.aclose(info.code, info.reason)
            # let the trio-websocket reader see the TCP close, but not forever
            conn_nursery.cancel_scope.deadline = trio.current_time() + self.disconnect_timeout

    def _connection_lost(self, info: CloseInfo) -> None:
        self._ws = None
        self.closes.append(info)
        for p in self._pending.values():
            if p.kind == _K_PUSH:
                p.fail(PushInterrupted(p.channel.topic if p.channel else "", p.name,
                                       f"connection closed ({info.code})"))
            elif p.kind == _K_HEARTBEAT:
                p.fail(NotConnected(f"connection closed ({info.code})"))
            else:
                p.resolve(None)
        self._pending.clear()
        self._ack_refs.clear()
        for channel in self._channels.values():
            channel._pushes.clear()
            channel._cancel_timers()
            if channel.state in (JOINED, JOINING):
                channel.state = ERRORED
                channel.events.transport_errors += 1
            channel._notify()
        if self._stopping or not self.reconnect:
            self._finalize(ClientClosed(info))
        self._notify()

    def _finalize(self, error: ClientClosed) -> None:
        """The client will not connect again: close every channel with ``error``."""
        if self._final is not None:
            return
        self._final = error
        self._stopping = True
        for channel in list(self._channels.values()):
            channel._terminate(error, state=ERRORED if channel.state != CLOSED else CLOSED)
        for p in list(self._pending.values()):
            p.fail(_fresh(error))
        self._pending.clear()
        self._notify()

    async def _heartbeat_task(self, scope: trio.CancelScope) -> None:
        interval = self.heartbeat_interval
        assert interval is not None
        with scope:
            while True:
                await trio.sleep(interval)
                ref = self._make_ref()
                p = _Pending(_K_HEARTBEAT, None, ref, "heartbeat")
                self._pending[ref] = p
                start = trio.current_time()
                if not await self._send(V2_JSON.encode_message(Message(None, ref, "phoenix", "heartbeat", {}))):
                    return
                self._heartbeats_sent += 1
                assert p.event is not None
                with trio.move_on_after(interval):
                    await p.event.wait()
                self._pending.pop(ref, None)
                if p.done:
                    if p.error is not None:
                        return
                    self.last_heartbeat_rtt = trio.current_time() - start
                    continue
                self._heartbeat_timeouts += 1
                self._close_connection(CloseInfo(1000, HEARTBEAT_TIMEOUT_REASON))
                return

    # ---- reading -----------------------------------------------------------

    async def _read_loop(self, ws: WebSocketConnection) -> None:
        get_message = ws.get_message
        decode = V2_JSON.decode
        encode = V2_JSON.encode_message
        channels = self._channels
        pending = self._pending
        ack_refs = self._ack_refs
        while True:
            try:
                data = await get_message()
            except ConnectionClosed:
                return
            self._frames_in += 1
            try:
                msg = decode(data) if type(data) is str else decode_server_frame(data)
            except ProtocolError:
                self._decode_errors += 1
                continue
            topic = msg.topic
            event = msg.event
            join_ref = msg.join_ref
            channel = channels.get(topic)
            if channel is not None and join_ref is not None and join_ref != channel.join_ref:
                self._stale += 1
                channel.events.stale_dropped += 1
                continue

            if event == _PHX_REPLY:
                ref = msg.ref
                if ref is None:
                    self._unrouted += 1
                    continue
                acked = ack_refs.pop(ref, None)
                if acked is not None:
                    payload = msg.payload
                    if type(payload) is not dict or payload.get("status") != "ok":
                        self._ack_errors += 1
                    continue
                p = pending.pop(ref, None)
                if p is None:
                    self._unrouted += 1
                    continue
                if p.kind == _K_JOIN:
                    assert p.channel is not None
                    self._on_join_reply(p.channel, ref, msg.payload)
                else:
                    if p.channel is not None:
                        p.channel._pushes.pop(ref, None)
                    p.resolve(msg.payload)
                continue

            if channel is None:
                self._unrouted += 1
                continue
            if event == _PHX_ERROR:
                channel.events.errors += 1
                self._channel_errors += 1
                pending.pop(channel.join_ref or "", None)
                self._channel_errored(channel, "phx_error")
                continue
            if event == _PHX_CLOSE:
                channel.events.closes += 1
                self._channel_closes += 1
                channel._terminate(ChannelClosed(topic, "phx_close"))
                continue

            # a push or broadcast for this channel
            self._messages_in += 1
            payload = msg.payload
            if channel.auto_ack and channel.state == JOINED and type(payload) is dict:
                message_id = payload.get("message_id")
                if message_id is not None:
                    ref = self._make_ref()
                    frame = encode(Message(channel.join_ref, ref, topic, "message_ack",
                                           {"message_id": message_id, "status": "Received"}))
                    if len(ack_refs) >= _ACK_REF_CAP:
                        del ack_refs[next(iter(ack_refs))]
                    ack_refs[ref] = channel
                    try:
                        await ws.send_message(frame)
                    except ConnectionClosed:
                        ack_refs.pop(ref, None)
                    else:
                        self._frames_out += 1
                        self._acks_sent += 1
                        channel.events.acks_sent += 1
            if channel.resume and type(payload) is dict and not _fresh_offset(channel, payload):
                channel.events.duplicates += 1
                continue
            channel._deliver(msg)


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


def _reraise(exc: BaseException) -> None:
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


#: Alias: ``async with open_client(url, ...) as client``.
open_client = PhoenixClient.open
