"""DirectWriter: frames handed to the kernel without a scheduler trip when the socket has room,
the normal (locked, yielding) path otherwise; frames never interleave and arrive in order."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, wrap_client_stream, wrap_server_stream

from ackvisor.channels.direct_writes import FAIR_WRITES, DirectWriter


async def _pair(nursery: trio.Nursery):
    """A server and a client trio-websocket connection over a real socket pair."""
    a, b = trio.socket.socketpair()
    server_stream, client_stream = trio.SocketStream(a), trio.SocketStream(b)
    accepted = []

    async def accept() -> None:
        request = await wrap_server_stream(nursery, server_stream)
        accepted.append(await request.accept())

    nursery.start_soon(accept)
    client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
    while not accepted:
        await trio.sleep(0)
    return accepted[0], client


async def test_a_write_with_room_does_not_yield_and_every_fair_writes_th_one_does():
    async with trio.open_nursery() as nursery:
        server, client = await _pair(nursery)
        writer = DirectWriter.for_connection(server)
        assert writer is not None
        for i in range(FAIR_WRITES):
            with trio.testing.assert_no_checkpoints():
                await writer.send(f"direct {i}")
        with trio.testing.assert_checkpoints():
            await writer.send("the fair one")  # the normal path: lets others run
        await writer.send(b"\x00binary")
        got = [await client.get_message() for _ in range(FAIR_WRITES + 2)]
        assert got == [f"direct {i}" for i in range(FAIR_WRITES)] + ["the fair one", b"\x00binary"]
        nursery.cancel_scope.cancel()


async def test_a_full_socket_finishes_the_frame_under_the_lock_and_nothing_interleaves():
    async with trio.open_nursery() as nursery:
        server, client = await _pair(nursery)
        writer = DirectWriter.for_connection(server)
        assert writer is not None
        big = "x" * 200_000
        sent = 0

        async def flood() -> None:
            nonlocal sent
            for i in range(40):  # ~8 MB: far more than the socket buffers hold
                await writer.send(f"{i}:{big}")
                sent += 1
            await server.send_message("done")  # trio-websocket's own path, behind ours

        nursery.start_soon(flood)
        await trio.testing.wait_all_tasks_blocked()
        assert 0 < sent < 40  # the writer is waiting for room (a partial write under the lock)
        got = []
        while (message := await client.get_message()) != "done":
            got.append(message)
        assert got == [f"{i}:{big}" for i in range(40)]
        nursery.cancel_scope.cancel()


async def test_a_closing_connection_raises_connection_closed():
    async with trio.open_nursery() as nursery:
        server, client = await _pair(nursery)
        writer = DirectWriter.for_connection(server)
        assert writer is not None
        async def read_until_closed() -> None:
            with pytest.raises(ConnectionClosed):
                await client.get_message()  # reads the close frame and answers it

        nursery.start_soon(read_until_closed)
        await server.aclose(1001, "bye")
        with pytest.raises(ConnectionClosed):
            await writer.send("too late")
        nursery.cancel_scope.cancel()


async def test_only_tcp_connections_get_a_direct_writer():
    async with trio.open_nursery() as nursery:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        nursery.start_soon(wrap_client_stream, nursery, client_stream, "localhost", "/")
        request = await wrap_server_stream(nursery, server_stream)
        server = await request.accept()
        assert DirectWriter.for_connection(server) is None  # no socket to write to
        assert DirectWriter.for_connection(object()) is None
        nursery.cancel_scope.cancel()
