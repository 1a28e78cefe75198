"""The connection side of :class:`~ackvisor.client.PhoenixClient`.

Connect (and reconnect), rejoin, heartbeat, read and route every inbound frame
(auto-acking pushes), and clean up when a connection or the client ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    connect_websocket_url,
)

from .channels.protocol import V2_JSON, Message, ProtocolError
from .client_channel import CLOSED, ERRORED, JOINED, JOINING, _fresh_offset
from .client_errors import ChannelClosed, ClientClosed, CloseInfo, NotConnected, PushInterrupted, _fresh
from .client_pending import _K_HEARTBEAT, _K_JOIN, _K_PUSH, _Pending
from .client_wire import _PHX_CLOSE, _PHX_ERROR, _PHX_REPLY, _bearer_protocol, decode_server_frame

if TYPE_CHECKING:
    from .client import PhoenixClient

HEARTBEAT_TIMEOUT_REASON: Final = "heartbeat timeout"
_ACK_REF_CAP: Final = 65536  # fire-and-forget ack refs remembered per connection
# task names stay those of the public module (``ackvisor.client``)
_TASK_PREFIX: Final = "ackvisor.client.PhoenixClient"


class _ConnectionLoop:
    """Connection loop and frame reader of :class:`~ackvisor.client.PhoenixClient` (a mixin)."""

    # ---- connection loop -----------------------------------------------------

    async def _run(self: PhoenixClient) -> None:
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

    def _subprotocols(self: PhoenixClient) -> list[str] | None:
        if self.auth_token is None:
            return None
        return ["phoenix", _bearer_protocol(self.auth_token)]

    async def _connect_and_serve(self: PhoenixClient) -> None:
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

    async def _serve(self: PhoenixClient, ws: WebSocketConnection, conn_nursery: trio.Nursery) -> None:
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
                    name=f"{_TASK_PREFIX}._heartbeat",
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

    def _connection_lost(self: PhoenixClient, info: CloseInfo) -> None:
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

    def _finalize(self: PhoenixClient, error: ClientClosed) -> None:
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

    async def _heartbeat_task(self: PhoenixClient, scope: trio.CancelScope) -> None:
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

    async def _read_loop(self: PhoenixClient, ws: WebSocketConnection) -> None:
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
