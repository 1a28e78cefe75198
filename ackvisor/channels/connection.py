"""``Connection``: the actor behind one WebSocket (Phoenix's socket process).

It owns the TCP stream from the moment the listener accepted it: it runs the
WebSocket handshake (path, ``vsn``, origin, ``authToken`` subprotocol, the
endpoint's ``connect`` hook), reads frames into its mailbox, answers
heartbeats, routes joins, leaves and channel messages to one
:class:`ChannelServer` per topic (rules of the protocol brief §6), and turns
channel exits into ``phx_close`` / ``phx_error`` - or, for a no-ack under
the ``close_connection`` policy, into its own exit with the same reason,
which closes the socket with 1011 and produces one crash report from the
connections supervisor.

Bad input costs at most this connection: a frame that cannot be addressed
closes the socket with 1003/1007/1009; one that can gets an error reply.
"""

from __future__ import annotations

import base64
import binascii
import inspect
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

import structlog
import trio
from trio_websocket import ConnectionClosed, wrap_server_stream

from ..actor import Actor, ActorExit, ActorRef
from ..exits import Error, Shutdown, StartError, is_expected, reason_fields
from ..links import Exit
from .channel import Socket
from .channel_server import ChannelServer, ChannelSettings
from .protocol import Message, ProtocolError, Serializer, serializer_for_vsn
from .reader_handoff import next_request, open_server_connection, run_reader
from .transport import Transport, TransportClosed

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["Connection", "ConnectInfo", "ConnectRefused"]

log = structlog.get_logger("ackvisor.channels")

_AUTH_PREFIX = "base64url.bearer.phx."


class ConnectRefused(Exception):
    """Raise from an endpoint ``connect`` hook to refuse the socket with an HTTP ``status`` (default 403)."""

    def __init__(self, status: int = 403, reason: str = "forbidden") -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What a ``connect`` hook may look at besides the query params."""

    peer: str
    uri: str
    origin: str | None
    user_agent: str | None
    auth_token: str | None
    headers: tuple[tuple[str, str], ...]


class _Frame:
    """A decoding failure the reader hands to the actor, so all writes stay in one task."""

    __slots__ = ("error",)

    def __init__(self, error: ProtocolError) -> None:
        self.error = error


class _ReaderDone:
    """The reader stopped (peer closed, heartbeat timeout): the actor ends with ``reason``."""

    __slots__ = ("reason",)

    def __init__(self, reason: Any) -> None:
        self.reason = reason


class _HeartbeatCheck:
    """The timer message: has the client been silent for ``heartbeat_timeout``?"""

    __slots__ = ()


_HEARTBEAT_CHECK = _HeartbeatCheck()


class _Joined:
    __slots__ = ("ref", "join_ref")

    def __init__(self, ref: ActorRef, join_ref: str | None) -> None:
        self.ref = ref
        self.join_ref = join_ref


def _peer_of(stream: Any) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    except Exception:
        return "unknown"


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """Phoenix's ``check_origin``: no Origin header, or an empty allow-list, passes.

    Entries are ``"https://host[:port]"`` (exact scheme), ``"//host"`` (any
    scheme) and may start the host with ``*.`` for subdomains.
    """
    if origin is None or not allowed:
        return True
    try:
        # The Origin header is untrusted: a bad port ("https://x:abc") only
        # raises when .port is read, so read it here.
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    for entry in allowed:
        try:
            want = urlsplit(entry if "//" in entry else f"//{entry}")
            want_port = want.port
        except ValueError:
            continue  # a malformed allow-list entry matches nothing
        if want.scheme and want.scheme != parts.scheme:
            continue
        want_host = (want.hostname or "").lower()
        if want_port is not None and want_port != port:
            continue
        if want_host.startswith("*."):
            if host.endswith(want_host[1:]) and host != want_host[2:]:
                return True
        elif host == want_host:
            return True
    return False


class Connection(Actor):
    """One client socket; temporary child of the endpoint's connections supervisor."""

    async def init(self, endpoint: "Endpoint", stream: trio.SocketStream) -> None:
        self.endpoint = endpoint
        self.settings = endpoint.settings
        self.channel_settings = endpoint.channel_settings
        self.stream = stream
        self.peer = _peer_of(stream)
        self.transport: Transport | None = None
        self.serializer: Serializer | None = None
        self.params: dict[str, Any] = {}
        self.assigns: dict[str, Any] = {}
        self.channels: dict[str, _Joined] = {}
        self.topics_by_ref: dict[ActorRef, str] = {}
        self._handling = False
        self._reading = True
        self._last_seen = 0.0
        self._decode: Any = None
        #: True once trio-websocket's reader hands frames straight to _on_frame
        self.reader_handoff = False
        self.trap_exit = True
        self.start_soon(self._socket_main)

    # ----- the socket task (handshake, then reading)

    async def _socket_main(self) -> None:
        settings = self.settings
        try:
            ws = None
            if settings.reader_handoff:
                ws = open_server_connection(self.stream, self._on_frame, max_message_size=settings.max_frame_bytes)
            if ws is not None:
                # This task *is* trio-websocket's reader, handing frames straight to
                # _on_frame; the handshake runs in a helper meanwhile.
                self.reader_handoff = True
                self.start_soon(self._open, partial(next_request, ws), ws)
                await run_reader(ws)
                self._reader_ended(ws.closed)
            else:
                ws = await self._open(
                    partial(wrap_server_stream, self._cell.nursery, self.stream, max_message_size=settings.max_frame_bytes),
                    None,
                )
                try:
                    while self._reading:
                        self._on_frame(await ws.get_message())
                except ConnectionClosed as e:
                    self._reader_ended(e.reason)
            # The reader is done (bad frame, peer closed, heartbeat timeout) and
            # has told the actor, which closes the socket with the right code
            # (1001/1003/1007/1011) in its own task and then ends, cancelling
            # us. Closing the stream here would race that close frame and the
            # client would only see 1006.
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(self.stream)

    async def _open(self, get_request: Callable[[], Any], ws: Any) -> Any:
        """Run the handshake (bounded by ``handshake_timeout``); the actor ends if it fails."""
        with trio.move_on_after(self.settings.handshake_timeout) as handshake:
            request = await get_request()
            ws = await self._handshake(request, ws)
        if handshake.cancelled_caught:
            log.info("handshake_timeout", peer=self.peer)
            raise ActorExit(Shutdown("handshake_timeout"))
        if ws is None:
            raise ActorExit(Shutdown("rejected"))
        self._heartbeat_after(self.settings.heartbeat_timeout)
        return ws

    async def _handshake(self, request: Any, ws: Any) -> Any:
        """Accept or reject ``request``; returns the open connection or None.

        ``ws`` is the connection when already known (reader hand-off): frames
        can then reach ``_on_frame`` as soon as the accept is on the wire, so
        everything they need is set up before it.
        """
        settings = self.settings
        target = request.path or ""
        path, _, query = target.partition("?")
        if path.rstrip("/") != settings.path.rstrip("/") + "/websocket":
            log.info("handshake_rejected", peer=self.peer, status=404, why="unknown path", path=path[:200])
            await request.reject(404)
            return None
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            serializer = serializer_for_vsn(params.get("vsn"))
        except ProtocolError:
            log.info("handshake_rejected", peer=self.peer, status=403, why="unsupported vsn", vsn=str(params.get("vsn"))[:40])
            await request.reject(403)
            return None
        headers = tuple((k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers)
        header = dict(headers)
        origin = header.get("origin")
        if not origin_allowed(origin, settings.check_origin):
            log.info("handshake_rejected", peer=self.peer, status=403, why="origin not allowed", origin=origin)
            await request.reject(403)
            return None
        token = None
        for proto in request.proposed_subprotocols:
            if proto.startswith(_AUTH_PREFIX):
                raw = proto[len(_AUTH_PREFIX) :]
                try:
                    token = base64.b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
                except (binascii.Error, UnicodeDecodeError):
                    log.info("handshake_rejected", peer=self.peer, status=403, why="bad auth token encoding")
                    await request.reject(403)
                    return None
        info = ConnectInfo(
            peer=self.peer,
            uri=target,
            origin=origin,
            user_agent=header.get("user-agent"),
            auth_token=token,
            headers=tuple((k, v) for k, v in headers if k.startswith("x-")),
        )
        hook = self.endpoint.connect
        if hook is not None:
            try:
                result = hook(params, info)
                if inspect.isawaitable(result):
                    result = await result
            except ConnectRefused as e:
                log.info("handshake_rejected", peer=self.peer, status=e.status, why=e.reason)
                await request.reject(e.status)
                return None
            if result is False:
                log.info("handshake_rejected", peer=self.peer, status=403, why="connect hook refused")
                await request.reject(403)
                return None
            if isinstance(result, dict):
                self.assigns = result
        subprotocol = "phoenix" if "phoenix" in request.proposed_subprotocols else None
        self.params = params
        self.serializer = serializer
        self._decode = serializer.decode
        self._last_seen = trio.current_time()
        if ws is not None:
            self._open_transport(ws, serializer)
        ws = await request.accept(subprotocol=subprotocol)
        if self.transport is None:
            self._open_transport(ws, serializer)
        log.info("connection_opened", connection=self.ref.id, peer=self.peer, vsn=serializer.vsn)
        return ws

    def _open_transport(self, ws: Any, serializer: Serializer) -> None:
        transport = Transport(
            ws, serializer, peer=self.peer, connection_id=self.ref.id, direct_writes=self.settings.direct_writes
        )
        cell = self._cell
        if cell.timers is None:
            cell.timers = set()
        timers, owned = cell.node.timers, cell.timers
        # The watch's timer belongs to this actor: it is cancelled when we end.
        transport.watch_writes(
            self.settings.write_timeout,
            self._write_stalled,
            arm=lambda seconds, callback: timers.schedule(seconds, callback, owned),
        )
        self.transport = transport

    def _write_stalled(self, seconds: float) -> None:
        """The client has read nothing for ``seconds`` while frames wait: let it crash.

        Runs in the timer service (this actor may itself be the one stuck in a
        write); crashing cancels the stuck write and the socket is closed
        (1011 if the close frame still fits, else dropped after 1 s).
        """
        transport = self.transport
        self._cell.crash(
            Error(
                "write_stalled",
                stalled_s=seconds,
                frames_out=transport.statistics().frames_out if transport is not None else 0,
                topics=sorted(self.channels),
                connection=self.ref.id,
                peer=self.peer,
            )
        )

    def _reader_ended(self, reason: Any) -> None:
        """The socket ended (``reason``: trio-websocket's CloseReason, None if it just dropped)."""
        code = int(reason.code) if reason is not None else 1006
        if code == 1009:
            log.warning("bad_frame", connection=self.ref.id, peer=self.peer, reason="too_big", close_code=1009)
        # Behind the frames already queued, so they are still handled in order.
        self._stop_reading(_ReaderDone(Shutdown(("closed", code))))

    def _heartbeat_after(self, seconds: float) -> None:
        # One timer per heartbeat period, not per frame: when it fires early
        # (traffic arrived meanwhile) it is re-armed for the rest of the period.
        self.send_after(_HEARTBEAT_CHECK, seconds)

    def _heartbeat_check(self) -> None:
        if not self._reading:
            return  # already ending
        timeout = self.settings.heartbeat_timeout
        idle = trio.current_time() - self._last_seen
        if idle >= timeout:
            log.info("heartbeat_timeout", connection=self.ref.id, peer=self.peer, seconds=timeout)
            self._stop_reading(_ReaderDone(Shutdown("heartbeat_timeout")))
        else:
            self._heartbeat_after(timeout - idle)

    def _stop_reading(self, why: Any) -> None:
        """Tell the actor (behind every frame already queued) and ignore all later frames."""
        if self._reading:
            self._reading = False
            self._cell.mailbox.put(why)

    def _on_frame(self, data: str | bytes) -> None:
        """One received message, in arrival order; sync (it runs in trio-websocket's reader task)."""
        if not self._reading:
            return  # a frame after one that closes the socket, or after the end
        self._last_seen = trio.current_time()
        try:
            msg = self._decode(data)
        except ProtocolError as e:
            if e.close_code is not None:
                self._stop_reading(_Frame(e))  # the actor closes the socket; read nothing more
            else:
                self._cell.mailbox.put(_Frame(e))
            return
        # Fast path: while the connection is idle with nothing queued, every
        # earlier frame has been fully handled, so handing a channel's own
        # traffic (acks, pushes, leaves) straight to the channel keeps the
        # order and saves a hop through this actor.
        if not self._handling and self._cell.mailbox.depth == 0 and msg.event != "phx_join" and msg.topic != "phoenix":
            joined = self.channels.get(msg.topic)
            if joined is not None and (msg.join_ref is None or msg.join_ref == joined.join_ref):
                joined.ref.send(msg)
                return
        self._cell.mailbox.put(msg)

    # ----- messages

    async def handle_info(self, message: Any) -> None:
        self._handling = True
        try:
            await self._dispatch(message)
        finally:
            self._handling = False

    async def _dispatch(self, message: Any) -> None:
        cls = type(message)
        if cls is Message:
            await self._route(message)
        elif cls is Exit:
            await self._channel_exited(message)
        elif cls is _Frame:
            await self._bad_frame(message.error)
        elif cls is _ReaderDone:
            self.stop(message.reason)
        elif message is _HEARTBEAT_CHECK:
            self._heartbeat_check()
        else:
            log.warning("connection_unexpected_message", connection=self.ref.id, message=repr(message)[:200])

    async def _route(self, msg: Message) -> None:
        topic, event = msg.topic, msg.event
        if topic == "phoenix" and event == "heartbeat":
            # First, as in Phoenix: a route such as "*" must not swallow heartbeats.
            await self._reply(None, msg.ref, "phoenix", "ok", {})
            return
        joined = self.channels.get(topic)
        if event == "phx_join":
            if joined is not None:
                await self._close_channel(topic, joined, Shutdown("duplicate_join"))
            await self._join(msg)
            return
        if joined is not None:
            if msg.join_ref is not None and msg.join_ref != joined.join_ref:
                return  # stale join_ref: silently ignored (Phoenix >= 1.8.3)
            joined.ref.send(msg)
            return
        if event == "phx_leave":
            await self._reply(msg.join_ref, msg.ref, topic, "ok", {})
        else:
            await self._reply(None, msg.ref, topic, "error", {"reason": "unmatched topic"})

    async def _join(self, msg: Message) -> None:
        topic = msg.topic
        channel_cls = self.endpoint.router.match(topic)
        if channel_cls is None:
            log.warning("unmatched_topic", connection=self.ref.id, topic=topic[:200])
            await self._reply(None, msg.ref, topic, "error", {"reason": "unmatched topic"})
            return
        if len(self.channels) >= self.settings.max_channels:
            await self._reply(None, msg.ref, topic, "error", {"reason": "too many channels joined"})
            return
        join_ref = msg.join_ref if msg.join_ref is not None else msg.ref
        assert self.transport is not None and self.serializer is not None
        socket = Socket(
            topic,
            join_ref,
            assigns=self.assigns,
            params=self.params,
            peer=self.peer,
            connection=self.ref,
            connection_id=self.ref.id,
            vsn=self.serializer.vsn,
        )
        joined_msg = msg if msg.join_ref is not None else Message(join_ref, msg.ref, topic, msg.event, msg.payload)
        try:
            ref = await self.spawn(
                ChannelServer, channel_cls, joined_msg, self.transport, socket, self.channel_settings, link=True
            )
        except StartError as e:
            log.error("channel_start_failed", **_report(e.reason, connection=self.ref.id, topic=topic))
            await self._reply(None, msg.ref, topic, "error", {"reason": "join crashed"})
            return
        if ref is not None:
            self.channels[topic] = _Joined(ref, join_ref)
            self.topics_by_ref[ref] = topic

    async def _close_channel(self, topic: str, joined: _Joined, reason: Any) -> None:
        """Stop a channel we chose to end (duplicate join) and send its ``phx_close``."""
        del self.channels[topic]
        self.topics_by_ref.pop(joined.ref, None)
        if joined.ref.alive:
            await joined.ref.stop(reason, timeout=5)
        await self._send_control(joined.join_ref, topic, "phx_close", {})

    async def _channel_exited(self, message: Exit) -> None:
        ref = message.sender
        topic = self.topics_by_ref.pop(ref, None) if ref is not None else None
        if topic is None:
            return  # a channel we already removed, or a stray exit signal
        joined = self.channels.pop(topic)
        reason = message.reason
        if is_expected(reason):
            await self._send_control(joined.join_ref, topic, "phx_close", {})
            return
        if isinstance(reason, Error) and reason.name == "no_ack_received" and self.settings.on_no_ack == "close_connection":
            # Let it crash: the connection exits with the channel's reason; the
            # supervisor writes the one crash report and the socket closes 1011.
            self.stop(reason)
            return
        # The reason's own details (a no-ack carries topic, connection, peer...)
        # must not collide with ours as keyword arguments.
        log.error("channel_crashed", **_report(reason, connection=self.ref.id, peer=self.peer, topic=topic))
        await self._send_control(joined.join_ref, topic, "phx_error", {"reason": "channel_crash"})

    async def _bad_frame(self, error: ProtocolError) -> None:
        log.warning(
            "bad_frame",
            connection=self.ref.id,
            peer=self.peer,
            reason=error.reason,
            close_code=error.close_code,
            topic=(error.topic or "")[:200] or None,
        )
        if error.close_code is None and error.topic is not None:
            await self._reply(error.join_ref, error.ref, error.topic, "error", {"reason": error.reason})
            return
        if self.transport is not None:
            await self.transport.close(error.close_code or 1007, error.reason)
        self.stop(Shutdown("bad_frame"))

    # ----- writing

    async def _reply(self, join_ref: str | None, ref: str | None, topic: str, status: str, response: dict) -> None:
        assert self.transport is not None
        try:
            await self.transport.reply(join_ref, ref, topic, status, response)
        except TransportClosed:
            raise ActorExit(Shutdown("closed")) from None

    async def _send_control(self, join_ref: str | None, topic: str, event: str, payload: dict) -> None:
        assert self.serializer is not None and self.transport is not None
        frame = self.serializer.encode_message(Message(join_ref, join_ref, topic, event, payload))
        try:
            await self.transport.send(frame)
        except TransportClosed:
            raise ActorExit(Shutdown("closed")) from None

    # ----- ending

    async def terminate(self, reason: Any) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closed:
            if is_expected(reason):
                # Our side ends it while the client should come back (drain,
                # shutdown): 1001 "going away", never 1000 (older phoenix.js
                # would not reconnect).
                code, text = 1001, "going away"
            else:
                code, text = 1011, str(getattr(reason, "name", None) or type(reason).__name__)
            await transport.close(code, text)
        closed = transport.closed_with if transport is not None else None
        log.info(
            "connection_closed",
            connection=self.ref.id,
            peer=self.peer,
            close_code=closed if closed is not None else _client_code(reason),
            exit_reason=str(reason)[:200],  # not "reason": that key marks crash reports
        )

    def statistics_channels(self) -> dict[str, str | None]:
        """Joined topics and their join_refs."""
        return {topic: j.join_ref for topic, j in self.channels.items()}


def _report(reason: Any, **context: Any) -> dict[str, Any]:
    """Report keys: ``reason_fields(reason)`` plus ``context`` (context wins on a clash)."""
    return {**reason_fields(reason), **context}


def _client_code(reason: Any) -> int | None:
    detail = getattr(reason, "detail", None)
    if isinstance(detail, tuple) and len(detail) == 2 and detail[0] == "closed":
        return detail[1]
    return None
