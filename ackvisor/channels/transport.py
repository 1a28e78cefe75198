"""``Transport``: the write side of one WebSocket, shared by a connection and its channels.

Every frame to the client goes through :meth:`Transport.send`, which returns
once the frame has been handed to the socket (trio-websocket serialises
concurrent writers with its own lock, so frames are never interleaved).  A
write to a closed socket raises :class:`TransportClosed`, which a channel
turns into a quiet ``shutdown(closed)`` exit.

A client that stops reading fills the socket's buffers and every write then
waits - including the channel that would notice missing acks.  With
:meth:`Transport.watch_writes`, a write that has waited a whole
``write_timeout`` with no frame finishing meanwhile calls ``on_stall``
(the connection then crashes with ``write_stalled``).  The watch is one
timer, armed only while writes are in flight: an idle socket costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .direct_writes import DirectWriter
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

    __slots__ = (
        "ws",
        "serializer",
        "peer",
        "connection_id",
        "_frames",
        "_bytes",
        "closed_with",
        "_writing",
        "_done",
        "_watch",
        "_watch_done",
        "_arm",
        "_write_timeout",
        "_on_stall",
        "_send_message",
    )

    def __init__(
        self,
        ws: WebSocketConnection,
        serializer: Serializer,
        *,
        peer: str,
        connection_id: int,
        direct_writes: bool = False,
    ) -> None:
        self.ws = ws
        # Frames go to the kernel without a trip through the scheduler when the
        # socket has room (channels/direct_writes.py); else trio-websocket's own path.
        writer = DirectWriter.for_connection(ws) if direct_writes else None
        self._send_message = writer.send if writer is not None else ws.send_message
        self.serializer = serializer
        self.peer = peer
        self.connection_id = connection_id
        self._frames = 0
        self._bytes = 0
        self.closed_with: int | None = None
        self._writing = 0  # writes in flight
        self._done = 0  # writes finished, written or failed
        self._watch: Any = None  # the armed stall check's timer, if any
        self._watch_done = 0
        self._arm: Callable[[float, Callable[[Any], None]], Any] | None = None
        self._write_timeout = 0.0
        self._on_stall: Callable[[float], None] | None = None

    def watch_writes(
        self,
        write_timeout: float,
        on_stall: Callable[[float], None],
        *,
        arm: Callable[[float, Callable[[Any], None]], Any],
    ) -> None:
        """Call ``on_stall(seconds)`` once a write has waited ``write_timeout`` with no frame finishing.

        ``arm(seconds, callback)`` schedules ``callback(timer)`` (the owner's
        timer service, so the watch dies with the owner).  Detection comes
        between one and two ``write_timeout`` after the stall began.
        """
        self._write_timeout = write_timeout
        self._on_stall = on_stall
        self._arm = arm

    async def send(self, frame: str | bytes) -> None:
        """Write one frame; returns when it has been handed to the socket."""
        self._writing += 1
        if self._watch is None and self._arm is not None:
            self._arm_watch()
        try:
            await self._send_message(frame)
        except ConnectionClosed as e:
            raise TransportClosed(str(e)) from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise TransportClosed(str(e)) from None
        finally:
            self._writing -= 1
            self._done += 1
        self._frames += 1
        self._bytes += len(frame)

    def _arm_watch(self) -> None:
        self._watch_done = self._done
        self._watch = self._arm(self._write_timeout, self._check_writes)  # type: ignore[misc]

    def _check_writes(self, _timer: Any) -> None:
        self._watch = None
        if self._writing == 0 or self.closed_with is not None:
            return  # nothing waiting: disarmed until the next write
        if self._done == self._watch_done:
            # A write was in flight when the watch was armed and not one write has
            # finished since: that write has waited the whole period.
            self._on_stall(self._write_timeout)  # type: ignore[misc]
            return
        self._arm_watch()

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
