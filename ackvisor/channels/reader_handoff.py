"""Run trio-websocket's reader in the connection's own task and hand it every message directly.

trio-websocket runs one reader task per connection that parses frames and
puts each message into a memory channel, from which ``get_message`` takes
it in another task.  For a connection actor that only routes the message
on to a mailbox, that costs a whole scheduler round trip per frame (the
largest single overhead on top of a bare echo server, by profile) and one
more task per connection (memory).  Here:

* :func:`open_server_connection` builds the server-side
  ``WebSocketConnection`` (public constructor) and, before its reader ever
  runs, replaces the message channel with :class:`_Handoff`, so the reader
  calls ``deliver(message)`` itself, synchronously, in arrival order;
* :func:`run_reader` runs the reader *in the calling task* (instead of a
  task of its own); it returns when the socket has ended, and ``ws.closed``
  then holds the close code;
* :func:`next_request` waits for the client's handshake request, to accept
  or reject as with ``wrap_server_stream``.

What stays trio-websocket's: the handshake, frame parsing, ping/pong, the
close handshake and ``max_message_size`` (a too-big message still closes
the socket with 1009).

This uses private members (``_send_channel``, ``_reader_task``,
``_get_request``) of the trio-websocket version pinned in
``pyproject.toml``.  If they are not there, :func:`open_server_connection`
returns None and the connection uses the public API (``wrap_server_stream``
and ``get_message``): same behaviour, one task and one task switch per frame
more.
"""

from __future__ import annotations

from typing import Any, Callable

import trio
from trio_websocket import WebSocketConnection, WebSocketRequest
from wsproto import ConnectionType, WSConnection

__all__ = ["next_request", "open_server_connection", "run_reader"]

_NEEDED = ("_send_channel", "_reader_task", "_get_request")


class _Handoff:
    """Quacks like the ``MemorySendChannel`` the reader task sends messages into."""

    __slots__ = ("deliver",)

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver

    async def send(self, message: Any) -> None:
        # No checkpoint on purpose: the reader's next receive_some() is one.
        self.deliver(message)

    def send_nowait(self, message: Any) -> None:
        self.deliver(message)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def __aenter__(self) -> "_Handoff":
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass


def open_server_connection(
    stream: trio.abc.Stream, deliver: Callable[[Any], None], *, max_message_size: int
) -> WebSocketConnection | None:
    """A server-side connection on ``stream`` whose messages go to ``deliver``; its reader is not
    running yet (see :func:`run_reader`).  None if this trio-websocket lacks the internals."""
    ws = WebSocketConnection(stream, WSConnection(ConnectionType.SERVER), max_message_size=max_message_size)
    if not all(hasattr(ws, name) for name in _NEEDED) or not isinstance(ws._send_channel, trio.MemorySendChannel):
        return None
    # Before the reader runs, so nothing was queued yet; its ``async with`` on the
    # channel at the end now closes the hand-off (a no-op) instead.
    ws._send_channel = _Handoff(deliver)
    return ws


async def run_reader(ws: WebSocketConnection) -> None:
    """Read ``ws`` in this task until the socket ends (peer closed, close handshake, 1009, error)."""
    await ws._reader_task()


async def next_request(ws: WebSocketConnection) -> WebSocketRequest:
    """The client's handshake request (the reader must be running in another task)."""
    return await ws._get_request()
