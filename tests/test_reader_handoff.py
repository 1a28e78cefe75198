"""The reader hand-off: trio-websocket's reader task delivers frames straight to the connection.

Unit tests over an in-memory stream pair (every message handed over in order, the reader
returns with the close code when the socket ends, 1009 still enforced), and end-to-end
tests run with the fast paths (reader hand-off, direct writes) on and off: the same behaviour.
"""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing
from trio_websocket import wrap_client_stream

from ackvisor.channels import Channel
from ackvisor.channels.connection import Connection
from ackvisor.channels.reader_handoff import next_request, open_server_connection, run_reader

from channel_apps import RawClient, serve, wait_until


async def test_the_reader_runs_in_the_callers_task_and_hands_over_every_message_in_order():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    got: list[str] = []
    ws = open_server_connection(server_stream, got.append, max_message_size=1000)
    assert ws is not None
    ended = trio.Event()

    async def server_side() -> None:
        await run_reader(ws)  # this task is the reader: it returns when the socket ends
        ended.set()

    async def handshake() -> None:
        request = await next_request(ws)
        assert request.path == "/socket/websocket?vsn=2.0.0"
        await request.accept()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server_side)
        nursery.start_soon(handshake)
        client = await wrap_client_stream(nursery, client_stream, "localhost", "/socket/websocket?vsn=2.0.0")
        for i in range(20):
            await client.send_message(f"m{i}")  # sent back to back, right after the handshake
        await wait_until(lambda: len(got) == 20, what="messages")
        assert got == [f"m{i}" for i in range(20)]
        await client.aclose(1001, "bye")
        with trio.fail_after(5):
            await ended.wait()
        assert ws.closed is not None and ws.closed.code == 1001


async def test_a_message_over_the_limit_ends_the_reader_with_1009():
    client_stream, server_stream = trio.testing.memory_stream_pair()
    got: list[str] = []
    ws = open_server_connection(server_stream, got.append, max_message_size=100)
    assert ws is not None

    async def accept() -> None:
        await (await next_request(ws)).accept()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        reader_done = trio.Event()

        async def reader() -> None:
            await run_reader(ws)
            reader_done.set()

        nursery.start_soon(reader)
        client = await wrap_client_stream(nursery, client_stream, "localhost", "/")
        await client.send_message("x" * 50)
        await client.send_message("y" * 500)
        with trio.fail_after(5):
            await reader_done.wait()
        assert got == ["x" * 50]
        assert ws.closed.code == 1009
        nursery.cancel_scope.cancel()


def test_without_the_expected_internals_nothing_is_replaced(monkeypatch):
    import ackvisor.channels.reader_handoff as handoff

    monkeypatch.setattr(handoff, "_NEEDED", ("_no_such_member",))
    _, server_stream = trio.testing.memory_stream_pair()
    assert handoff.open_server_connection(server_stream, print, max_message_size=10) is None


class Echo(Channel):
    """Replies to ``say`` with the text and keeps every ``say`` it saw, in order."""

    seen: list[str] = []

    async def join(self, topic, params, socket):
        return None

    async def handle_in(self, event, payload, socket):
        if event == "say":
            Echo.seen.append(payload["text"])
            return {"text": payload["text"]}
        return await super().handle_in(event, payload, socket)


def _connections(server) -> list[Connection]:
    return [r._cell.actor for r in server.node.actors() if isinstance(r._cell.actor, Connection)]


@pytest.mark.parametrize("handoff, direct", [(True, True), (False, False)], ids=["fast_paths", "public_api"])
async def test_frames_are_handled_in_order_and_bad_frames_close_only_their_socket(handoff, direct):
    Echo.seen = []
    async with serve({"echo:*": Echo}, reader_handoff=handoff, direct_writes=direct) as server:
        async with RawClient.open(server.ws_url()) as client, RawClient.open(server.ws_url()) as other:
            # A join and 50 messages sent back to back, without waiting for any reply.
            await client.send("1", "1", "echo:a", "phx_join")
            for i in range(50):
                await client.send("1", str(i + 2), "echo:a", "say", {"text": f"m{i}"})
            assert (await client.reply_to("1"))[4]["status"] == "ok"
            replies = [await client.reply_to(str(i + 2)) for i in range(50)]
            assert [r[4]["response"]["text"] for r in replies] == [f"m{i}" for i in range(50)]
            assert Echo.seen == [f"m{i}" for i in range(50)]
            assert {c.reader_handoff for c in _connections(server)} == {handoff}
            # Invalid JSON closes that socket with 1007; a frame right behind it is never handled.
            await client.send_raw("{not json")
            await client.send("1", "99", "echo:a", "say", {"text": "after"})
            assert await client.closed() == 1007
            assert "after" not in Echo.seen
            # The other socket carries on.
            await other.send("1", "1", "echo:b", "phx_join")
            await other.reply_to("1")
            await other.send("1", "2", "echo:b", "say", {"text": "still here"})
            assert (await other.reply_to("2"))[4]["response"]["text"] == "still here"
            server.assert_healthy()


@pytest.mark.parametrize("handoff, direct", [(True, True), (False, False)], ids=["fast_paths", "public_api"])
async def test_frame_over_the_limit_closes_1009_and_silence_closes_1001(handoff, direct):
    async with serve(
        {"echo:*": Echo}, reader_handoff=handoff, direct_writes=direct, max_frame_bytes=1000, heartbeat_timeout=0.3
    ) as server:
        async with RawClient.open(server.ws_url()) as big:
            await big.send_raw(json.dumps(["1", "1", "echo:a", "phx_join", {"x": "y" * 2000}]))
            assert await big.closed() == 1009
        async with RawClient.open(server.ws_url()) as silent:
            assert await silent.closed() == 1001
