"""Mailboxes: unbounded by default; bounded with drop_new / drop_old / crash (issue decision, 9.5)."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from ackvisor import KILL, KILLED, Actor, CalleeExited, Error, Mailbox
from ackvisor.process import FAIR_BURST
from ackvisor.testing import wait_exit


class Slow(Actor):
    async def init(self):
        self.handled = []
        self.terminated = []

    async def handle_cast(self, request):
        if request == "block":
            await trio.sleep(10)
        self.handled.append(request)

    async def handle_info(self, message):
        self.handled.append(message)

    async def handle_call(self, request, caller):
        return list(self.handled)

    async def terminate(self, reason):
        self.terminated.append(reason)


async def test_mailbox_unbounded_by_default(node, autojump_clock):
    ref = await node.spawn(Slow)
    ref.cast("block")
    await trio.testing.wait_all_tasks_blocked()
    for i in range(10_000):
        ref.send(i)
    stats = ref.statistics().mailbox
    assert stats.capacity == math.inf and stats.depth == 10_000 and stats.dropped == 0


async def test_mailbox_drop_new_counts_and_logs_dead_letters(node, autojump_clock):
    ref = await node.spawn(Slow, mailbox_size=2, overflow="drop_new")
    ref.cast("block")
    await trio.testing.wait_all_tasks_blocked()
    with capture_logs() as logs:
        for i in range(5):
            ref.send(i)
    stats = ref.statistics().mailbox
    assert (stats.depth, stats.dropped, stats.peak) == (2, 3, 2)
    dead = [e for e in logs if e["event"] == "dead_letter"]
    assert [e["message"] for e in dead] == ["2", "3", "4"]
    assert all(e["why"] == "mailbox_full" and e["log_level"] == "warning" for e in dead)
    await trio.sleep(11)
    assert await ref.call(None) == ["block", 0, 1]


async def test_mailbox_drop_old_keeps_newest(node, autojump_clock):
    ref = await node.spawn(Slow, mailbox_size=2, overflow="drop_old")
    ref.cast("block")
    await trio.testing.wait_all_tasks_blocked()
    with capture_logs() as logs:
        for i in range(5):
            ref.send(i)
    assert ref.statistics().mailbox.dropped == 3
    assert [e["message"] for e in logs if e["event"] == "dead_letter"] == ["0", "1", "2"]
    await trio.sleep(11)
    assert await ref.call(None) == ["block", 3, 4]


async def test_mailbox_drop_old_when_receiver_is_waiting(node):
    """The first message goes straight to a waiting receiver; the bound must still hold."""
    ref = await node.spawn(Slow, mailbox_size=1, overflow="drop_old")
    await trio.testing.wait_all_tasks_blocked()  # the actor is parked in get()
    ref.send("a")
    ref.send("b")
    ref.send("c")
    await trio.testing.wait_all_tasks_blocked()
    handled = await ref.call(None)
    assert handled[-1] == "c" and len(handled) <= 2


async def test_mailbox_crash_policy_exits_actor_with_mailbox_overflow(node, autojump_clock):
    ref = await node.spawn(Slow, mailbox_size=3, overflow="crash")
    ref.cast("block")
    await trio.testing.wait_all_tasks_blocked()
    with capture_logs() as logs:
        for i in range(4):
            ref.send(i)
        reason = await ref.wait()
    assert reason == Error("mailbox_overflow")
    assert ref.statistics().mailbox.dropped >= 1
    assert ref._cell.actor.terminated == [reason]
    assert [e["message"] for e in logs if e["event"] == "dead_letter"][0] == "3"


async def test_mailbox_overflow_of_a_call_fails_the_caller_at_once(node, autojump_clock):
    ref = await node.spawn(Slow, mailbox_size=1, overflow="drop_new")
    ref.cast("block")
    await trio.testing.wait_all_tasks_blocked()
    ref.send("fills the box")
    with pytest.raises(CalleeExited):
        await ref.call("dropped", timeout=60)
    assert trio.current_time() == 0


async def test_mailbox_messages_to_dead_actor_are_dropped_silently(node):
    ref = await node.spawn(Slow)
    await ref.stop()
    ref.send("x")
    ref.cast("y")
    assert ref.statistics().mailbox.depth == 0


async def test_mailbox_unit_fifo_and_validation():
    with pytest.raises(ValueError):
        Mailbox(0)
    with pytest.raises(ValueError):
        Mailbox(2, "nope")  # type: ignore[arg-type]
    box = Mailbox(3, "drop_new")
    assert [box.put(i) for i in range(4)] == [True, True, True, False]
    assert [box.get_nowait() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(trio.WouldBlock):
        box.get_nowait()
    box.put("left")
    assert box.close() == ["left"]
    assert box.put("after close") is False


async def test_mailbox_get_is_a_checkpoint_even_when_not_empty():
    box = Mailbox()
    box.put(1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await box.get()
    assert box.depth == 1
    assert await box.get() == 1


class SelfSender(Actor):
    """Sends itself ``n`` messages from one handler that never awaits; records each one."""

    async def init(self):
        self.handled = []

    async def handle_info(self, message):
        self.handled.append(message)
        if message == "burst":
            for i in range(200):
                self.ref.send(i)
        elif message == "die":
            self.ref.exit(KILL)


async def test_actor_loop_takes_a_burst_but_yields_to_others_every_fair_burst_messages(node):
    """A self-sent burst is handled without a scheduler round trip per message, yet another
    task still runs at least once every FAIR_BURST messages (OTP_SEMANTICS 9.8 item 7)."""
    ref = await node.spawn(SelfSender)
    actor = ref._cell.actor
    progress = []  # len(actor.handled) each time the other task got to run

    async def other():
        while len(actor.handled) < 201:
            progress.append(len(actor.handled))
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        ref.send("burst")
        nursery.start_soon(other)
    steps = [b - a for a, b in zip(progress, progress[1:])]
    # Each scheduler batch runs both tasks once, in an order Trio randomises: between two
    # runs of `other` the actor ran at most two bursts.
    assert max(steps) <= 2 * FAIR_BURST
    assert len(progress) < 201  # not one scheduler round trip per message


async def test_actor_loop_is_a_cancel_point_between_queued_messages(node):
    """Killed by its own handler: the messages queued behind are never handled, even though
    taking a queued message is not a schedule point."""
    ref = await node.spawn(SelfSender)
    actor = ref._cell.actor
    for message in ("a", "die", "b", "c"):
        ref.send(message)
    await wait_exit(ref)
    assert actor.handled == ["a", "die"]
    assert ref.exit_reason is KILLED
