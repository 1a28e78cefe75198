"""Timers (T-1..T-6): send_after, cancel, read; all under MockClock (autojump_clock)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from ackvisor import KILL, Actor, send_after


class Recorder(Actor):
    async def init(self):
        self.seen = []

    async def handle_info(self, message):
        self.seen.append((message, trio.current_time()))

    async def handle_cast(self, request):
        op, arg = request
        if op == "busy":
            await trio.sleep(arg)
        elif op == "cancel":
            tref, out = arg
            out.append(tref.cancel())

    async def handle_call(self, request, caller):
        return list(self.seen)


async def test_T1_send_after_delivers_to_handle_info_at_the_deadline(node, autojump_clock):
    ref = await node.spawn(Recorder)
    t0 = trio.current_time()
    tref = send_after(ref, "tick", 2.5)
    assert tref.pending
    await trio.sleep(3)
    assert await ref.call(None) == [("tick", t0 + 2.5)]
    assert not tref.pending and not tref.cancelled


async def test_T1_timers_fire_in_deadline_order(node, autojump_clock):
    ref = await node.spawn(Recorder)
    send_after(ref, "c", 3)
    send_after(ref, "a", 1)
    send_after(ref, "b", 2)
    send_after(ref, "a2", 1)  # same deadline: arming order
    await trio.sleep(4)
    assert [m for m, _ in await ref.call(None)] == ["a", "a2", "b", "c"]


async def test_T2_zero_delay_timer_is_asynchronous(node, autojump_clock):
    ref = await node.spawn(Recorder)
    send_after(ref, "timer", 0)
    ref.send("direct")
    await trio.testing.wait_all_tasks_blocked()
    assert [m for m, _ in await ref.call(None)] == ["direct", "timer"]


async def test_T2_negative_delay_rejected(node):
    ref = await node.spawn(Recorder)
    with pytest.raises(ValueError):
        send_after(ref, "x", -1)


async def test_T3_cancel_pending_returns_remaining_seconds(node, autojump_clock):
    ref = await node.spawn(Recorder)
    tref = send_after(ref, "tick", 5)
    await trio.sleep(2)
    assert tref.cancel() == pytest.approx(3)
    assert tref.cancel() is False  # already cancelled
    await trio.sleep(10)
    assert await ref.call(None) == []


async def test_T3_cancel_after_fire_returns_false_and_queued_message_is_not_handled(node, autojump_clock):
    """The race of OTP_SEMANTICS 10.5: the message is already in the mailbox when cancel runs."""
    ref = await node.spawn(Recorder)
    ref.cast(("busy", 2))  # the actor cannot handle anything before t=2
    tref = send_after(ref, "tick", 1)
    await trio.sleep(1.5)
    assert ref.statistics().mailbox.depth == 1  # fired and queued, not handled
    assert tref.cancel() is False
    await trio.sleep(5)
    assert await ref.call(None) == []  # never handled


async def test_T3_cancel_exactly_at_the_deadline(node, autojump_clock):
    """Timers fire at the start of the run-loop pass in which their deadline has passed, so a
    task waking at that same instant finds it fired: cancel() says False. Whether the target
    handled it before the cancel is the scheduler's order; after the cancel it never is."""
    ref = await node.spawn(Recorder)
    tref = send_after(ref, "tick", 1)
    await trio.sleep_until(tref.deadline)  # wakes in the pass that fires the timer
    assert tref.fired_at == tref.deadline
    handled_before = len(ref._cell.actor.seen)  # read without a checkpoint: nothing can run
    assert tref.cancel() is False
    await trio.sleep(1)
    assert len(await ref.call(None)) == handled_before <= 1


async def test_T3_cancel_from_the_owner_inside_a_handler(node, autojump_clock):
    ref = await node.spawn(Recorder)
    ref.cast(("busy", 2))
    tref = send_after(ref, "tick", 1)
    out = []
    ref.cast(("cancel", (tref, out)))  # queued behind busy, after the timer fired at t=1
    await trio.sleep(3)
    assert out == [False]
    assert await ref.call(None) == []


async def test_T4_timers_die_with_their_actor(node, autojump_clock):
    ref = await node.spawn(Recorder)
    tref = send_after(ref, "tick", 5)
    await ref.stop()
    assert not tref.pending
    assert tref.read() is False and tref.cancel() is False
    await trio.sleep(10)  # firing into a dead actor is harmless
    assert node.timers.pending_count == 0


async def test_T4_killed_actor_timers_cancelled(node, autojump_clock):
    ref = await node.spawn(Recorder)
    trefs = [send_after(ref, i, 1 + i) for i in range(10)]
    ref.exit(KILL)
    await ref.wait()
    assert all(t.cancel() is False for t in trefs)


async def test_T5_read_timer(node, autojump_clock):
    ref = await node.spawn(Recorder)
    tref = send_after(ref, "tick", 4)
    await trio.sleep(1)
    assert tref.read() == pytest.approx(3)
    await trio.sleep(4)
    assert tref.read() is False


async def test_T6_rearm_idiom_only_current_timer_handled(node, autojump_clock):
    class Heart(Actor):
        async def init(self):
            self.fired = []
            self.tref = self.send_after("beat", 1)

        async def handle_cast(self, request):
            self.tref.cancel()
            self.tref = self.send_after("beat", 1)

        async def handle_info(self, message):
            self.fired.append(trio.current_time())

        async def handle_call(self, request, caller):
            return self.fired

    ref = await node.spawn(Heart)
    for _ in range(5):
        await trio.sleep(0.5)
        ref.cast("rearm")
    await trio.sleep(3)
    assert await ref.call(None) == [pytest.approx(3.5)]


async def test_timer_service_handles_many_timers_and_cancellations(node, autojump_clock):
    ref = await node.spawn(Recorder)
    trefs = [send_after(ref, i, (i % 100) / 10) for i in range(5000)]
    for t in trefs[::2]:
        t.cancel()
    await trio.sleep(11)
    seen = await ref.call(None)
    assert sorted(m for m, _ in seen) == list(range(1, 5000, 2))
    assert node.timers.pending_count == 0


async def test_due_timers_fire_at_the_start_of_the_run_loop_pass_not_on_the_timer_tasks_turn(autojump_clock):
    """The run-loop hook alone fires a due timer (here the service's task never runs at all), so
    a burst of busy tasks cannot delay a timer by more than the pass that was running."""
    from ackvisor.timers import TimerService, _FireDueTimers

    service = TimerService()
    fired = []
    tref = service.schedule(0.5, lambda t: fired.append(trio.current_time()))
    hook = _FireDueTimers(service)
    trio.lowlevel.add_instrument(hook)
    try:
        autojump_clock.jump(2.0)  # a long pass: the deadline passes while we run
        assert fired == []
        await trio.lowlevel.checkpoint()  # the next pass starts: the hook fires it first
        assert fired == [pytest.approx(2.0 + (tref.deadline - 0.5))]
        assert tref.fired_at == fired[0] and not tref.pending
    finally:
        trio.lowlevel.remove_instrument(hook)
