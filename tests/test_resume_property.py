"""Property: replay and live traffic interleaving at the moment of rejoin lose nothing and
repeat nothing.

A real endpoint, a real socket (raw V2 client) and real actors.  The history is wrapped in
an *asynchronous* backend (like the Redis one will be) whose ``position`` and ``read_from``
publish messages of their own and yield before answering: that is exactly the window
between "subscribe" and "read the history" (and every catch-up read after it) in which a
live message is both in the channel's mailbox and in the history.  A concurrent publisher
adds bursts at hypothesis-chosen checkpoints while the replay runs.  Hypothesis chooses how
many messages are published before the resume, how many the client had seen, how many land
in each read window, the bursts, the replay batch, the replay window and the ack style.  The client must receive exactly ``seen+1 .. head``, in order.

(Checked by mutation: without the offset de-duplication in ``_deliver``, or without dropping
live messages while catching up, hypothesis finds a counterexample.)
"""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ackvisor.channels import Channel, Socket, pubsub
from ackvisor.channels.history import MemoryHistory, history_of

try:  # `python -m pytest` from the repo root (the project's convention)
    from tests.channel_apps import RawClient, serve
except ImportError:  # bare `pytest`: tests/ is on sys.path
    from channel_apps import RawClient, serve  # type: ignore[no-redef]

TOPIC = "prop"


class RacyHistory:
    """An async history backend around MemoryHistory that publishes during its own reads."""

    def __init__(self, node: Any, at_position: int, at_reads: list[int]) -> None:
        self.inner = MemoryHistory(size=100_000)
        self.node = node
        self.at_position = at_position
        self.at_reads = list(at_reads)
        self.reads = 0

    def append(self, topic: str, event: str, payload: Any) -> Any:
        return self.inner.append(topic, event, payload)

    def _publish(self, n: int) -> None:
        for _ in range(n):
            pubsub.publish(self.node, TOPIC, "tick", {})

    async def position(self, topic: str) -> Any:
        self._publish(self.at_position)  # after the channel subscribed, before the read
        await trio.sleep(0)
        return self.inner.position(topic)

    async def read_from(self, topic: str, epoch: str, offset: int, limit: int | None = None) -> Any:
        n = self.at_reads[self.reads] if self.reads < len(self.at_reads) else 0
        self.reads += 1
        self._publish(n)
        await trio.sleep(0)
        result = self.inner.read_from(topic, epoch, offset, limit)
        self._publish(n // 2)  # and some more after the read, before the answer arrives
        await trio.sleep(0)
        return result


def _channel_class(batch: int, window: int) -> type[Channel]:
    class PropChannel(Channel):
        history_topic = TOPIC
        replay_batch = batch
        replay_window = window

        async def handle_out(self, event: str, payload: Any, socket: Socket) -> Any:
            await self.push(event, payload, ack=True)

    return PropChannel


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before=st.integers(0, 40),
    seen_fraction=st.floats(0, 1),
    at_position=st.integers(0, 5),
    at_reads=st.lists(st.integers(0, 20), max_size=6),
    bursts=st.lists(st.tuples(st.integers(0, 200), st.integers(0, 15), st.booleans()), max_size=5),
    batch=st.integers(1, 8),
    window=st.integers(1, 20),
    ack_every=st.integers(1, 6),
    cumulative=st.booleans(),
)
async def test_replay_and_live_interleavings_deliver_every_offset_exactly_once_in_order(
    before, seen_fraction, at_position, at_reads, bursts, batch, window, ack_every, cumulative
):
    with trio.fail_after(20):
        # live bursts are bounded by max_unacked (beyond it: too_many_unacked, by design); the
        # replay is paced by the channel's replay_window instead
        async with serve({"prop:*": _channel_class(batch, window)}, ack_timeout=5.0, max_unacked=1000) as server:
            history = RacyHistory(server.node, at_position, at_reads)
            server.node.history = history
            for _ in range(before):
                pubsub.publish(server.node, TOPIC, "tick", {})
            seen = int(before * seen_fraction)
            epoch = history.inner.position(TOPIC).epoch
            every = min(ack_every, window)
            async with RawClient.open(server.ws_url()) as client:
                publisher_done = trio.Event()

                async def publisher() -> None:
                    for checkpoints, size, real_time in bursts:
                        if real_time:
                            await trio.sleep(checkpoints / 100_000)  # up to 2 ms
                        for _ in range(checkpoints):
                            await trio.sleep(0)
                        for _ in range(size):
                            pubsub.publish(server.node, TOPIC, "tick", {})
                    publisher_done.set()

                def catching_up() -> bool:
                    return any(getattr(r._cell.actor, "catching_up", False) for r in pubsub.subscribers(server.node, TOPIC))

                offsets: list[int] = []
                async with trio.open_nursery() as nursery:
                    join_ref = client.next_ref()
                    await client.send(join_ref, join_ref, "prop:1", "phx_join", {"resume": {"epoch": epoch, "offset": seen}})
                    nursery.start_soon(publisher)  # racing the join, its replay and the switch to live
                    reply = await client.reply_to(join_ref)
                    assert reply[4]["status"] == "ok" and reply[4]["response"]["recovered"] is True, reply
                    unacked = 0
                    while True:
                        try:
                            frame = await client.expect_event("prop:1", "tick", timeout=0.05)
                        except trio.TooSlowError:
                            assert not [f for f in client.unclaimed if f[3] == "phx_error"], server.crash_reports()
                            # quiet: done once nothing more can come and we are at the head
                            last = offsets[-1] if offsets else seen
                            if publisher_done.is_set() and not catching_up() and last == history.inner.position(TOPIC).offset:
                                break
                            continue
                        payload = frame[4]
                        assert payload["epoch"] == epoch
                        offsets.append(payload["offset"])
                        unacked += 1
                        if not cumulative:
                            await client.send(join_ref, None, "prop:1", "message_ack", {"message_id": payload["message_id"]})
                        elif unacked >= every:
                            await client.send(join_ref, None, "prop:1", "message_ack", {"offset": payload["offset"]})
                            unacked = 0
                head = history.inner.position(TOPIC).offset
                assert offsets == list(range(seen + 1, head + 1)), (seen, head, offsets)
            assert not server.crash_reports(), server.crash_reports()
