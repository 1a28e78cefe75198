"""``Transport``: the write side of one WebSocket, shared by a connection and its channels.

Every frame to the client goes through :meth:`Transport.send`, which returns
once the frame has been handed to the socket (trio-websocket serialises
concurrent writers with its own lock, so frames are never interleaved).  A
write to a closed socket raises :class:`TransportClosed`, which a channel
turns into a quiet ``shutdown(closed)`` exit.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .protocol import Serializer

__all__ = ["Transport", "TransportClosed", "TransportStatistics"]


class TransportClosed(Exception):
    """The WebSocket is closed; nothing more can be written."""


@dataclass(frozen=True, slots=True)
class TransportStatistics:
    """Frames and bytes written on one socket."""

    frames_out: int
    bytes_out: int
    closed: bool


class Transport:
    """Write frames to one client; knows the socket's serializer (V1 or V2)."""

    __slots__ = ("ws", "serializer", "peer", "connection_id", "_frames", "_bytes", "closed_with")

    def __init__(self, ws: WebSocketConnection, serializer: Serializer, *, peer: str, connection_id: int) -> None:
        self.ws = ws
        self.serializer = serializer
        self.peer = peer
        self.connection_id = connection_id
        self._frames = 0
        self._bytes = 0
        self.closed_with: int | None = None

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; returns when it has been handed to the socket."""
        try:
            await self.ws.send_message(frame)
        except ConnectionClosed as e:
            raise TransportClosed(str(e)) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise TransportClosed(str(e)) from None
        self._frames += 1
        self._bytes += len(frame)

    async def reply(self, join_ref: str | None, ref: str | None, topic: str, status: str, response: dict) -> None:
        """Write a ``phx_reply``."""
        await self.send(self.serializer.encode_reply(join_ref, ref, topic, status, response))

    async def close(self, code: int, reason: str, *, timeout: float = 1.0) -> None:
        """Close the WebSocket with ``code`` (never 1000 when the client should come back); bounded."""
        if self.closed_with is None:
            self.closed_with = code
        with trio.move_on_after(timeout) as scope:
            scope.shield = True
            await self.ws.aclose(code, reason[:120])

    @property
    def is_closed(self) -> bool:
        """True once the socket is closed (by either side)."""
        return self.ws.closed is not None

    def statistics(self) -> TransportStatistics:
        """A frozen snapshot of the write counters."""
        return TransportStatistics(frames_out=self._frames, bytes_out=self._bytes, closed=self.is_closed)
