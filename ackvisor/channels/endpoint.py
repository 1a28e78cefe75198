"""``Endpoint``: a Phoenix-protocol WebSocket endpoint as a supervision subtree.

``endpoint.child_spec()`` is the subtree of the default tree::

    endpoint            supervisor, rest_for_one
    ├── connections     DynamicSupervisor: one temporary Connection per socket
    └── listener        task worker: accepts TCP connections, hands each to `connections`

Connections are *temporary* children: a crashing connection (a no-ack, bad
input, a client vanishing) never spends restart budget, so many clients
failing at once cannot take the listener down.  If the connections
supervisor itself fails, rest_for_one restarts the listener after it.

The listener only accepts; the connection actor owns the stream from then on
(handshake included), so a slow handshake never blocks accepting.
"""

from __future__ import annotations

import errno
import math
from dataclasses import dataclass, field, replace
from typing import Any, Awaitable, Callable, Mapping

import structlog
import trio

from ..childspec import ChildSpec
from ..exits import SHUTDOWN
from ..node import Node
from ..supervisor import DynamicSupervisor, SupervisorError, SupervisorRef
from .channel_server import ChannelSettings
from .connection import ConnectInfo, Connection
from .router import Router

__all__ = ["Endpoint", "EndpointSettings"]

log = structlog.get_logger("ackvisor.channels")

_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

ConnectHook = Callable[[dict[str, Any], ConnectInfo], "dict[str, Any] | bool | None | Awaitable[Any]"]


@dataclass(frozen=True)
class EndpointSettings:
    """Everything an endpoint is configured with (the ``[endpoint]`` and ``[channels]`` config tables).

    Durations are seconds.  ``port=0`` binds an ephemeral port (see
    :attr:`Endpoint.port`).  ``on_no_ack`` is ``"close_connection"`` (the
    connection exits too and the socket closes with 1011) or
    ``"error_channel"`` (``phx_error``; the client rejoins on the same socket).
    """

    host: str = "127.0.0.1"
    port: int = 4000
    path: str = "/socket"
    check_origin: tuple[str, ...] = ()
    max_frame_bytes: int = 1 << 20
    heartbeat_timeout: float = 60.0
    #: a client that reads nothing for this long while frames wait to be
    #: written crashes its connection with ``write_stalled`` (transport.py)
    write_timeout: float = 10.0
    max_channels: int = 100
    max_connections: float = math.inf
    ack_timeout: float = 5.0
    on_no_ack: str = "close_connection"
    max_unacked: float = 1000
    max_unacked_bytes: float = 8 << 20
    handshake_timeout: float = 10.0
    connection_shutdown: float = 5.0
    #: trio-websocket's reader task hands frames straight to the connection
    #: (see ``channels/reader_handoff.py``); False reads them with
    #: ``get_message()`` (same behaviour, one task switch more per frame).
    reader_handoff: bool = True
    #: frames are handed to the kernel directly when no other write is in
    #: progress (see ``channels/direct_writes.py``); False always writes with
    #: trio-websocket's ``send_message`` (two scheduler trips per frame).
    direct_writes: bool = True

    def __post_init__(self) -> None:
        if self.on_no_ack not in ("close_connection", "error_channel"):
            raise ValueError(f"on_no_ack must be 'close_connection' or 'error_channel', not {self.on_no_ack!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', not {self.path!r}")
        if not self.ack_timeout > 0:
            raise ValueError(f"ack_timeout must be > 0, not {self.ack_timeout!r}")
        if not self.max_frame_bytes > 0:
            raise ValueError(f"max_frame_bytes must be > 0, not {self.max_frame_bytes!r}")
        for name in ("heartbeat_timeout", "handshake_timeout", "write_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 seconds, not {getattr(self, name)!r}")
        if not self.max_channels >= 1:
            raise ValueError(f"max_channels must be >= 1, not {self.max_channels!r}")
        object.__setattr__(self, "check_origin", tuple(self.check_origin))


class Endpoint:
    """A configured endpoint: settings, routes (topic pattern -> Channel class) and a ``connect`` hook.

    The ``connect(params, info)`` hook (sync or async) may return a dict of
    assigns, ``False`` to refuse with 403, or raise ``ConnectRefused(status)``.
    """

    def __init__(
        self,
        routes: Mapping[str, Any],
        settings: EndpointSettings | None = None,
        *,
        connect: ConnectHook | None = None,
        id: str = "endpoint",
        **overrides: Any,
    ) -> None:
        settings = settings or EndpointSettings()
        self.settings = replace(settings, **overrides) if overrides else settings
        self.router = Router(routes)
        self.connect = connect
        self.id = id
        s = self.settings
        self.channel_settings = ChannelSettings(s.ack_timeout, s.on_no_ack, s.max_unacked, s.max_unacked_bytes)
        self.addresses: list[tuple[str, int]] = []
        self._listening: trio.Event | None = None

    # ----- the subtree

    @property
    def connections_name(self) -> str:
        """Registered name of the connections supervisor."""
        return f"{self.id}.connections"

    def child_spec(self, *, restart: str = "permanent") -> ChildSpec:
        """The endpoint subtree as a child of any supervisor."""
        return ChildSpec.supervisor(
            self.id,
            [
                ChildSpec(
                    "connections",
                    DynamicSupervisor,
                    name=self.connections_name,
                    kwargs=dict(max_children=self.settings.max_connections, id=self.connections_name),
                ),
                ChildSpec("listener", _listen, self, shutdown=1.0),
            ],
            strategy="rest_for_one",
            restart=restart,  # type: ignore[arg-type]
            name=self.id,
        )

    def connections(self, node: Node) -> SupervisorRef | None:
        """The live connections supervisor, if running."""
        ref = node.whereis(self.connections_name)
        return ref if isinstance(ref, SupervisorRef) else None

    @property
    def port(self) -> int:
        """The bound port (after the listener started)."""
        if not self.addresses:
            raise RuntimeError("endpoint is not listening yet")
        return self.addresses[0][1]

    @property
    def url(self) -> str:
        """``ws://host:port/path``: the base URL a phoenix.js ``Socket`` is given."""
        host = self.addresses[0][0] if self.addresses else self.settings.host
        if ":" in host:
            host = f"[{host}]"
        return f"ws://{host}:{self.port}{self.settings.path}"

    async def wait_listening(self) -> None:
        """Wait until the listener has bound its sockets."""
        if self.addresses:
            await trio.lowlevel.checkpoint()
            return
        if self._listening is None:
            self._listening = trio.Event()
        await self._listening.wait()

    async def drain(self, node: Node, *, window: float = 2.0) -> int:
        """Close every connection with 1001 spread over ``window`` seconds; returns how many.

        Each connection runs its ``terminate`` (channels close, socket closes
        with 1001 "going away") so clients reconnect elsewhere without a
        thundering herd.
        """
        sup = self.connections(node)
        if sup is None:
            return 0
        refs = [c.ref for c in sup.which_children() if c.ref is not None]
        if not refs:
            return 0
        step = window / len(refs)
        async with trio.open_nursery() as nursery:
            for i, ref in enumerate(refs):
                if i and step > 0:
                    await trio.sleep(step)
                ref._cell.shutdown(SHUTDOWN, self.settings.connection_shutdown)
                nursery.start_soon(ref.wait)
        return len(refs)


async def _listen(endpoint: Endpoint, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """The listener worker: bind, report the port, then accept forever."""
    from ..actor import current_actor

    me = current_actor()
    assert me is not None
    node = me.node
    settings = endpoint.settings
    listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
    endpoint.addresses = [tuple(listener.socket.getsockname()[:2]) for listener in listeners]  # type: ignore[misc]
    if endpoint._listening is not None:
        endpoint._listening.set()
    log.info("endpoint_listening", endpoint=endpoint.id, url=endpoint.url, addresses=[f"{h}:{p}" for h, p in endpoint.addresses])
    spec = ChildSpec("connection", Connection, endpoint, restart="temporary", shutdown=settings.connection_shutdown)
    task_status.started()
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, node, endpoint, listener, spec, nursery)
    finally:
        endpoint.addresses = []
        with trio.CancelScope(shield=True):
            for listener in listeners:
                await trio.aclose_forcefully(listener)


async def _accept_loop(
    node: Node, endpoint: Endpoint, listener: trio.SocketListener, spec: ChildSpec, nursery: trio.Nursery
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as e:
            if e.errno in _ACCEPT_ERRNOS:
                log.error("accept_failed", endpoint=endpoint.id, error=str(e))
                await trio.sleep(0.1)
                continue
            raise
        sup = endpoint.connections(node)
        if sup is None:
            await trio.aclose_forcefully(stream)
            continue
        try:
            await sup.start_child(spec, stream)
        except SupervisorError as e:
            log.warning("connection_refused", endpoint=endpoint.id, why=e.what)
            if e.what == "max_children":
                nursery.start_soon(_refuse_busy, stream)  # never holds up accepting
            else:
                await trio.aclose_forcefully(stream)
        except Exception as e:  # a failing start must not stop accepting
            log.error("connection_start_failed", endpoint=endpoint.id, error=repr(e))
            await trio.aclose_forcefully(stream)


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"


async def _refuse_busy(stream: trio.SocketStream) -> None:
    """Answer a socket over ``max_connections`` with HTTP 503 (clients back off and retry), bounded.

    The request is read first (up to its end or 8 KiB): closing a socket with
    unread data makes the kernel send a reset, and the client would see that
    instead of the 503.
    """
    with trio.move_on_after(1.0):
        try:
            received = b""
            while b"\r\n\r\n" not in received and len(received) < 8192:
                data = await stream.receive_some(4096)
                if not data:
                    break
                received += data
            await stream.send_all(_BUSY)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


_ = field
