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

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .channels.protocol import V2_JSON, Message, ProtocolError  # noqa: F401
from .client_connection import _ConnectionLoop

# The names this module used to define live in the client_* modules and stay
# importable from here (private ones included); ``__all__`` is the public API.
from .client_backoff import _RECONNECT_STEPS, _REJOIN_STEPS, default_backoff, default_rejoin_after  # noqa: F401
from .client_channel import (  # noqa: F401
    CLOSED, ERRORED, JOINED, JOINING, LEAVING, ChannelEvents, ClientChannel, _fresh_offset,
)
from .client_connection import _ACK_REF_CAP, HEARTBEAT_TIMEOUT_REASON  # noqa: F401
from .client_statistics import ClientStatistics
from .client_errors import (  # noqa: F401
    ChannelClosed, ClientClosed, CloseInfo, ConnectError, JoinError, JoinTimeout, NotConnected,
    PhoenixClientError, PushInterrupted, PushTimeout, _fresh,
)
from .client_pending import _K_HEARTBEAT, _K_JOIN, _K_LEAVE, _K_PUSH, _Pending, _Timer, _TimerQueue  # noqa: F401
from .client_wire import (  # noqa: F401
    _PHX_CLOSE, _PHX_ERROR, _PHX_REPLY, VSN, Params, _append_params, _bad_binary, _bearer_protocol,
    _bfield, _encode_component, _eval_params, _js_string, decode_server_frame,
    encode_client_binary_push, endpoint_url, serialize_params,
)

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


# --------------------------------------------------------------------------
# Client


class PhoenixClient(_ConnectionLoop, _TimerQueue):
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
        cls, url: str, *, wait_connected: bool = True, **options: Any
    ) -> AsyncIterator["PhoenixClient"]:
        """Run a client for the duration of the ``async with`` block.

        ``url`` is the endpoint base (``ws://host:4000/socket``). With
        ``wait_connected=True`` (default) the block starts once the first
        connection is open: with ``reconnect=True`` it keeps retrying on the
        backoff (bound it with ``trio.fail_after`` if needed), with
        ``reconnect=False`` a failure raises :class:`ConnectError`. Every other
        keyword option (``params``, ``auto_ack``, ``reconnect``,
        ``heartbeat_interval``, ...) is the constructor's (see :class:`PhoenixClient`).

        Leaving the block closes the socket with 1000, cancels every
        background task and makes pending calls raise :class:`ClientClosed`.
        """
        client = cls(url, **options)
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


def _reraise(exc: BaseException) -> None:
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


#: Alias: ``async with open_client(url, ...) as client``.
open_client = PhoenixClient.open
