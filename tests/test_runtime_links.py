"""Links, monitors, exit signals, trap_exit (P-1..P-9, R-2, R-3)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

import ackvisor
from ackvisor import (
    KILL,
    CalleeExited,
    KILLED,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    Actor,
    Down,
    Error,
    Exit,
    NoProcError,
    Shutdown,
)


class Peer(Actor):
    """Records what it gets; requests drive links/monitors from inside the actor."""

    async def init(self, trap=False, name_log=None):
        self.trap_exit = trap
        self.got = []
        self.terminated = []
        self.name_log = name_log

    async def handle_call(self, request, caller):
        op, arg = request
        if op == "link":
            self.link(arg)
        elif op == "link_fn":
            ackvisor.link(arg)
        elif op == "unlink":
            self.unlink(arg)
        elif op == "monitor":
            return self.monitor(arg)
        elif op == "monitor_fn":
            return ackvisor.monitor(arg)
        elif op == "demonitor":
            self.demonitor(arg)
        elif op == "trap":
            self.trap_exit = arg
        elif op == "got":
            return list(self.got)
        elif op == "exit":
            target, reason = arg
            target.exit(reason)
        elif op == "stats":
            return self.ref.statistics()
        return None

    async def handle_cast(self, request):
        op, arg = request
        if op == "crash":
            raise RuntimeError(arg)
        if op == "stop":
            self.stop(arg)
        if op == "send_then_die":
            target, messages = arg
            for m in messages:
                target.send(m)
            raise RuntimeError("after sending")
        if op == "busy_then_demonitor":
            seconds, mref = arg
            await trio.sleep(seconds)
            self.demonitor(mref)

    async def handle_info(self, message):
        if self.name_log is not None and isinstance(message, Down):
            self.name_log.append(self.node.whereis("named"))
        self.got.append(message)

    async def terminate(self, reason):
        self.terminated.append(reason)


async def linked_pair(node, trap_a=False, trap_b=False):
    a = await node.spawn(Peer, kwargs=dict(trap=trap_a))
    b = await node.spawn(Peer, kwargs=dict(trap=trap_b))
    await a.call(("link", b))
    return a, b


# ------------------------------------------------------------------ P-1


async def test_P1_link_is_bidirectional(node):
    a, b = await linked_pair(node)
    b.cast(("crash", "b failed"))
    reason = await a.wait()
    assert isinstance(reason, RuntimeError) and str(reason) == "b failed"

    c, d = await linked_pair(node)
    c.cast(("crash", "c failed"))
    assert str(await d.wait()) == "c failed"


async def test_P1_link_is_idempotent_and_self_link_is_noop(node):
    a, b = await linked_pair(node)
    await a.call(("link", b))
    await b.call(("link", a))
    await a.call(("link", a))
    assert a.statistics().links == 1 and b.statistics().links == 1


async def test_P1_unlink_removes_both_directions(node):
    a, b = await linked_pair(node)
    await b.call(("unlink", a))
    assert a.statistics().links == 0
    b.cast(("crash", "x"))
    await b.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert a.alive


async def test_P1_module_level_link_function(node):
    a = await node.spawn(Peer)
    b = await node.spawn(Peer)
    await a.call(("link_fn", b))
    b.cast(("crash", "x"))
    await a.wait()
    with pytest.raises(RuntimeError):
        ackvisor.link(a)  # outside any actor


# ------------------------------------------------------------------ P-2 / R-2 / R-3


async def test_R2_link_kills_non_trapping_peer_but_not_on_normal(node):
    a, b = await linked_pair(node)
    b.cast(("stop", NORMAL))
    assert await b.wait() == NORMAL
    await trio.testing.wait_all_tasks_blocked()
    assert a.alive
    assert await a.call(("got", None)) == []


async def test_R2_shutdown_propagates_over_links(node):
    a, b = await linked_pair(node)
    b.cast(("stop", Shutdown("bye")))
    assert await a.wait() == Shutdown("bye")


async def test_P2_linked_death_skips_terminate_when_not_trapping(node):
    a, b = await linked_pair(node)
    actor_a = a._cell.actor
    b.cast(("crash", "boom"))
    await a.wait()
    assert actor_a.terminated == []


async def test_P2_trapped_exit_becomes_message(node):
    a, b = await linked_pair(node, trap_a=True)
    b.cast(("crash", "boom"))
    await b.wait()
    await trio.testing.wait_all_tasks_blocked()
    (msg,) = await a.call(("got", None))
    assert isinstance(msg, Exit) and msg.sender is b and str(msg.reason) == "boom"
    assert a.alive


async def test_P2_trapping_receiver_gets_exit_even_for_normal(node):
    a, b = await linked_pair(node, trap_a=True)
    b.cast(("stop", NORMAL))
    await b.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert await a.call(("got", None)) == [Exit(b, NORMAL)]


async def test_R3_kill_is_untrappable(node):
    a = await node.spawn(Peer, kwargs=dict(trap=True))
    a.exit(KILL)
    assert await a.wait() == KILLED
    assert a._cell.actor.terminated == []


async def test_R3_relayed_killed_is_trappable(node):
    a, b = await linked_pair(node, trap_a=True)
    b.exit(KILL)
    assert await b.wait() == KILLED
    await trio.testing.wait_all_tasks_blocked()
    assert await a.call(("got", None)) == [Exit(b, KILLED)]


async def test_R3_relayed_killed_kills_non_trapping_peer_with_killed(node):
    a, b = await linked_pair(node)
    b.exit(KILL)
    assert await a.wait() == KILLED


async def test_P2_exit_chain_propagates_through_several_links(node):
    a = await node.spawn(Peer)
    b = await node.spawn(Peer)
    c = await node.spawn(Peer, kwargs=dict(trap=True))
    await a.call(("link", b))
    await b.call(("link", c))
    a.cast(("crash", "root cause"))
    assert str(await b.wait()) == "root cause"
    await trio.testing.wait_all_tasks_blocked()
    (msg,) = await c.call(("got", None))
    assert msg.sender is b and str(msg.reason) == "root cause"


# ------------------------------------------------------------------ P-3


async def test_P3_exit_normal_to_non_trapping_other_is_noop(node):
    a = await node.spawn(Peer)
    b = await node.spawn(Peer)
    await a.call(("exit", (b, NORMAL)))
    await trio.testing.wait_all_tasks_blocked()
    assert b.alive


async def test_P3_exit_reason_to_other_kills_non_trapping(node):
    a = await node.spawn(Peer)
    b = await node.spawn(Peer)
    await a.call(("exit", (b, Error("go away"))))
    assert await b.wait() == Error("go away")


async def test_P3_exit_to_trapping_other_is_message_with_sender(node):
    a = await node.spawn(Peer)
    b = await node.spawn(Peer, kwargs=dict(trap=True))
    await a.call(("exit", (b, SHUTDOWN)))
    await trio.testing.wait_all_tasks_blocked()
    assert await b.call(("got", None)) == [Exit(a, SHUTDOWN)]
    b.exit(SHUTDOWN)  # from outside any actor: sender is None
    await trio.testing.wait_all_tasks_blocked()
    assert (await b.call(("got", None)))[-1] == Exit(None, SHUTDOWN)


async def test_P3_exit_normal_to_self_exits(node):
    a = await node.spawn(Peer, kwargs=dict(trap=True))
    await a.call(("exit", (a, NORMAL)))
    assert await a.wait() == NORMAL


# ------------------------------------------------------------------ P-4 .. P-6


async def test_P4_monitor_gives_down_with_reason_and_never_kills_watcher(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    mref = await w.call(("monitor", t))
    t.cast(("crash", "target died"))
    await t.wait()
    await trio.testing.wait_all_tasks_blocked()
    (down,) = await w.call(("got", None))
    assert isinstance(down, Down) and down.monitor is mref and down.actor is t
    assert str(down.reason) == "target died"
    assert w.alive


async def test_P4_monitors_stack(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    m1 = await w.call(("monitor", t))
    m2 = await w.call(("monitor_fn", t))
    assert m1 is not m2
    await t.stop()
    await trio.testing.wait_all_tasks_blocked()
    downs = await w.call(("got", None))
    assert [d.monitor for d in downs] == [m1, m2]
    assert all(d.reason == NORMAL for d in downs)


async def test_P5_monitor_on_already_dead_actor_gives_down_noproc(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    await t.stop()
    mref = await w.call(("monitor", t))
    await trio.testing.wait_all_tasks_blocked()
    assert await w.call(("got", None)) == [Down(mref, t, NOPROC)]


async def test_P5_link_to_dead_actor_raises_noproc_when_not_trapping(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    await t.stop()
    with pytest.raises(CalleeExited) as info:
        await w.call(("link", t))
    # The handler raised NoProcError, which crashed w; the caller learns w's reason.
    assert isinstance(info.value.reason, NoProcError)


async def test_P5_link_to_dead_actor_gives_exit_noproc_when_trapping(node):
    w = await node.spawn(Peer, kwargs=dict(trap=True))
    t = await node.spawn(Peer)
    await t.stop()
    await w.call(("link", t))
    await trio.testing.wait_all_tasks_blocked()
    assert await w.call(("got", None)) == [Exit(t, NOPROC)]


async def test_P6_demonitor_flushes_a_queued_down(node, autojump_clock):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    mref = await w.call(("monitor", t))
    w.cast(("busy_then_demonitor", (1, mref)))  # w is busy while t dies
    await trio.sleep(0.5)
    await t.stop()
    assert w.statistics().mailbox.depth == 1  # the Down is queued
    await trio.sleep(1)
    await trio.testing.wait_all_tasks_blocked()
    assert await w.call(("got", None)) == []
    assert w.statistics().monitors == 0


async def test_P6_demonitor_before_death_means_no_down(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    mref = await w.call(("monitor", t))
    await w.call(("demonitor", mref))
    await t.stop()
    await trio.testing.wait_all_tasks_blocked()
    assert await w.call(("got", None)) == []
    assert t.statistics().monitors == 0


async def test_P7_down_arrives_after_messages_sent_before_dying(node):
    w = await node.spawn(Peer)
    t = await node.spawn(Peer)
    await w.call(("monitor", t))
    t.cast(("send_then_die", (w, ["m1", "m2", "m3"])))
    await t.wait()
    await trio.testing.wait_all_tasks_blocked()
    got = await w.call(("got", None))
    assert got[:3] == ["m1", "m2", "m3"] and isinstance(got[3], Down)


async def test_P8_trap_exit_toggled_at_run_time(node):
    a, b = await linked_pair(node)
    await a.call(("trap", True))
    b.cast(("crash", "first"))
    await b.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert a.alive and len(await a.call(("got", None))) == 1
    c = await node.spawn(Peer)
    await a.call(("link", c))
    await a.call(("trap", False))
    c.cast(("crash", "second"))
    assert str(await a.wait()) == "second"


async def test_P9_names_released_before_monitors_are_told(node):
    seen_names = []
    w = await node.spawn(Peer, kwargs=dict(name_log=seen_names))
    t = await node.spawn(Peer, name="named")
    await w.call(("monitor", t))
    t.cast(("crash", "x"))
    await t.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert seen_names == [None]
    assert node.whereis("named") is None


async def test_node_spawn_link_true_links_to_calling_actor(node):
    holder = {}

    class Parent(Actor):
        async def handle_call(self, request, caller):
            holder["child"] = await self.node.spawn(Peer, link=True)
            return holder["child"]

    parent = await node.spawn(Parent)
    child = await parent.call("spawn")
    child.cast(("crash", "child crash"))
    assert str(await parent.wait()) == "child crash"
