"""A client that stops reading: writes wait on a full socket, and after ``write_timeout`` with no
frame finishing the connection crashes with ``write_stalled`` (its socket is closed, others
carry on). Unit tests of the watch under MockClock; one end-to-end test over real sockets."""

from __future__ import annotations

import pytest
import trio

from ackvisor import open_node
from ackvisor.channels import Channel
from ackvisor.channels.protocol import serializer_for_vsn
from ackvisor.channels.transport import Transport

from channel_apps import RawClient, serve, wait_until


class _Socket:
    """A WebSocket stand-in whose writes take ``delays`` seconds each (``inf``: never finish)."""

    closed = None

    def __init__(self, *delays: float) -> None:
        self.delays = list(delays)
        self.sent: list[str] = []

    async def send_message(self, frame: str) -> None:
        await trio.sleep(self.delays.pop(0) if self.delays else 0)
        self.sent.append(frame)


def _watched(node, ws, write_timeout: float) -> tuple[Transport, list[float]]:
    stalls: list[float] = []
    transport = Transport(ws, serializer_for_vsn("2.0.0"), peer="p", connection_id=1)
    transport.watch_writes(
        write_timeout,
        lambda seconds: stalls.append(trio.current_time()),
        arm=lambda seconds, callback: node.timers.schedule(seconds, callback),
    )
    return transport, stalls


async def test_a_write_that_never_finishes_is_reported_one_write_timeout_later(autojump_clock):
    async with open_node() as node:
        transport, stalls = _watched(node, _Socket(float("inf")), 2.0)
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.send, "frame")
            await trio.sleep(10)
            nursery.cancel_scope.cancel()
        assert stalls == [pytest.approx(t0 + 2.0)]  # once, at the first check


async def test_slow_writes_that_keep_finishing_never_stall_and_idle_costs_no_timer(autojump_clock):
    async with open_node() as node:
        ws = _Socket(*([1.5] * 6))  # each write takes 1.5 s, longer than... nothing: progress every 1.5 s
        transport, stalls = _watched(node, ws, 2.0)
        for i in range(6):
            await transport.send(f"f{i}")
        assert len(ws.sent) == 6 and stalls == []
        await trio.sleep(5)  # the last check found nothing in flight and disarmed
        assert node.timers.pending_count == 0 and stalls == []


class Flood(Channel):
    """Pushes 64 KiB frames until the socket stops taking them (the client never reads)."""

    async def join(self, topic, params, socket):
        self.send(self.ref, "flood")
        return None

    async def handle_info(self, message, socket):
        if message == "flood":
            blob = "x" * 65536
            while True:
                await self.push("blob", {"b": blob})


class Echo(Channel):
    async def join(self, topic, params, socket):
        return None

    async def handle_in(self, event, payload, socket):
        return {"echo": payload}


async def test_a_client_that_stops_reading_crashes_its_connection_with_write_stalled():
    async with serve({"flood:*": Flood, "echo:*": Echo}, write_timeout=0.5) as server:
        async with RawClient.open(server.ws_url()) as healthy:
            stuck = await trio.open_tcp_stream("127.0.0.1", server.endpoint.port)
            await stuck.send_all(
                b"GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            response = b""
            while b"\r\n\r\n" not in response:
                response += await stuck.receive_some(1)  # the 101, byte by byte: nothing after it
            assert response.startswith(b"HTTP/1.1 101")
            # A masked client frame: join flood:1 (mask key 0 keeps the payload as is).
            join = b'["1","1","flood:1","phx_join",{}]'
            await stuck.send_all(bytes([0x81, 0x80 | len(join), 0, 0, 0, 0]) + join)
            # ... and then never read a byte: the server's writes fill the buffers and wait.
            reports = await wait_until(
                lambda: server.events("child_terminated", reason="write_stalled"), timeout=10, what="write_stalled"
            )
            [report] = reports
            assert report["topics"] == ["flood:1"] and report["stalled_s"] == 0.5
            assert report["frames_out"] >= 2  # the upgrade's join reply and some blobs got out
            join_ref, _ = await healthy.join("echo:1")
            reply = await healthy.call(join_ref, "echo:1", "ping", {"n": 1})
            assert reply[4] == {"status": "ok", "response": {"echo": {"n": 1}}}
            await trio.aclose_forcefully(stuck)
        server.assert_healthy()
