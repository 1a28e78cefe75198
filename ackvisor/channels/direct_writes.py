"""Hand a frame straight to the kernel when no other write is in progress.

trio-websocket's ``send_message`` serialises writers with a lock whose
``acquire`` is a scheduling checkpoint, and ``send_all`` checkpoints again:
every frame costs two trips through the scheduler (and through the writer's
whole await chain), even when the socket has room.  For a server that writes
a frame per message that is the largest cost left on top of the framing.

:class:`DirectWriter` writes the same bytes without them when it can: if no
write holds trio-websocket's lock and the connection is not closing, it
frames the message with the connection's own wsproto and hands it to the
kernel with one non-blocking ``write(2)``, synchronously (nothing can run in
between, so frames never interleave).  If the kernel takes only part of it
(its buffer is full), the rest goes out the normal way under the lock, which
waits for room; errors take the normal way too, so a broken socket ends in
``ConnectionClosed`` exactly as before.

Fairness and cancellation: a direct write neither yields nor checks for
cancellation, so after :data:`FAIR_WRITES` of them in a row the next write
takes the normal path (two checkpoints).  A task pushing in a loop still
lets the others run, and sees a cancel within that many writes.

Like :mod:`.reader_handoff` this relies on trio-websocket 0.12 internals
(``_wsproto``, ``_stream_lock``, ``_stream``, ``_close_reason``,
``_abort_web_socket``); :meth:`DirectWriter.for_connection` returns None when
they are not there, and the connection then writes with ``send_message``.
"""

from __future__ import annotations

import os
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto.events import BytesMessage, TextMessage

__all__ = ["DirectWriter", "FAIR_WRITES"]

#: Direct writes in a row before one goes the normal (yielding) way.
FAIR_WRITES = 16

_NEEDED = ("_wsproto", "_stream_lock", "_stream", "_close_reason", "_abort_web_socket")


class DirectWriter:
    """Writes frames to one trio-websocket connection; ``send`` is a drop-in for ``send_message``."""

    __slots__ = ("ws", "_proto", "_lock", "_stream", "_socket", "_burst")

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._proto = ws._wsproto
        self._lock = ws._stream_lock
        self._stream = ws._stream
        self._socket = ws._stream.socket
        self._burst = 0

    @classmethod
    def for_connection(cls, ws: Any) -> "DirectWriter | None":
        """A writer for ``ws``, or None if it is not a trio-websocket connection over a TCP socket
        with the internals this relies on."""
        if not all(hasattr(ws, name) for name in _NEEDED) or not isinstance(ws._stream, trio.SocketStream):
            return None
        return cls(ws)

    async def send(self, frame: str | bytes) -> None:
        """Write one message (str: text, bytes: binary); returns once it is handed to the socket.

        Raises ``ConnectionClosed`` like ``send_message`` when the connection is closed or closing.
        """
        ws = self.ws
        if self._burst >= FAIR_WRITES or ws._close_reason is not None or self._lock.locked():
            self._burst = 0
            await ws.send_message(frame)
            return
        fd = self._socket.fileno()  # -1 once closed; checked now, so never a reused descriptor
        if fd < 0:
            await ws.send_message(frame)
            return
        data = self._proto.send(TextMessage(data=frame) if isinstance(frame, str) else BytesMessage(data=frame))
        try:
            written = os.write(fd, data)
        except OSError:  # full buffer (BlockingIOError) or a broken socket: the locked path handles it
            written = 0
        self._burst += 1
        if written < len(data):
            await self._send_rest(data[written:] if written else data)

    async def _send_rest(self, data: bytes) -> None:
        # As trio-websocket's own _send: under its lock, a broken stream aborts the connection.
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.ws._abort_web_socket()
                raise ConnectionClosed(self.ws._close_reason) from None
