"""Actors: exit reasons (R-*), gen_server rules (GS-*): start, call, cast, info, stop, terminate.

Every test that involves time runs under pytest-trio's ``autojump_clock``
(``MockClock(autojump_threshold=0)``), so timeouts are exact and instant.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from ackvisor import (
    IGNORE,
    KILL,
    KILLED,
    NOPROC,
    NOREPLY,
    NORMAL,
    SHUTDOWN,
    Actor,
    ActorExit,
    CalleeExited,
    CallingSelf,
    CallTimeout,
    Error,
    NoProcError,
    Shutdown,
    StartError,
    current_actor,
    is_expected,
    open_node,
)


class Probe(Actor):
    """A scriptable actor: requests are tuples naming what to do."""

    async def init(self, log=None, *, fail_init=None, ignore=False, trap=False):
        if fail_init is not None:
            raise fail_init
        if ignore:
            return IGNORE
        self.log = log if log is not None else []
        self.count = 0
        self.pending = []
        self.trap_exit = trap

    async def handle_call(self, request, caller):
        op = request[0]
        if op == "echo":
            return request[1]
        if op == "sleep_then":
            await trio.sleep(request[1])
            self.count += 1
            self.log.append(("slept", request[1]))
            return request[2]
        if op == "crash_after":
            await trio.sleep(request[1])
            raise RuntimeError(request[2])
        if op == "defer":
            self.pending.append(caller)
            return NOREPLY
        if op == "self_call":
            try:
                await self.ref.call(("echo", 1))
            except CallingSelf as e:
                return ("calling_self", str(e))
            return "no error"
        if op == "stop":
            self.stop(request[1])
            return "stopping"
        if op == "stop_without_reply":
            self.stop(request[1])
            return NOREPLY
        if op == "count":
            return self.count
        if op == "get_log":
            return list(self.log)
        raise ValueError(f"unknown call {request!r}")

    async def handle_cast(self, request):
        op = request[0]
        if op == "incr":
            self.count += 1
        elif op == "reply_all":
            for caller in self.pending:
                caller.reply(request[1])
            self.pending.clear()
        elif op == "crash":
            raise RuntimeError(request[1])
        elif op == "exit":
            raise ActorExit(request[1])
        elif op == "helper_crash":
            async def helper():
                await trio.sleep(request[1])
                raise KeyError("helper")

            self.start_soon(helper)
        else:
            raise ValueError(request)

    async def handle_info(self, message):
        self.log.append(("info", message))

    async def terminate(self, reason):
        self.log.append(("terminate", reason))


# ------------------------------------------------------------------


def test_R1_expected_reasons():
    assert is_expected(NORMAL)
    assert is_expected(SHUTDOWN)
    assert is_expected(Shutdown("bye"))
    assert not is_expected(KILLED)
    assert not is_expected(NOPROC)
    assert not is_expected(Error("no_ack_received"))
    assert not is_expected(ValueError("x"))


def test_R5_reasons_are_values():
    assert Shutdown("a") == Shutdown("a") and Shutdown() == SHUTDOWN
    assert Error("x", a=1) == Error("x", a=2)  # details are not part of identity
    assert str(Error("no_ack_received", topic="t")) == "no_ack_received"
    assert str(Shutdown("bye")) == "shutdown(bye)"


# ------------------------------------------------------------------ start


async def test_GS1_spawn_returns_after_init(node, autojump_clock):
    order = []

    class Slow(Actor):
        async def init(self):
            await trio.sleep(1)
            order.append("init done")

    ref = await node.spawn(Slow)
    order.append("spawn returned")
    assert order == ["init done", "spawn returned"]
    assert ref.alive


async def test_GS2_init_exception_is_start_error_without_terminate(node):
    log = []
    with pytest.raises(StartError) as info:
        await node.spawn(Probe, log, kwargs=dict(fail_init=KeyError("nope")))
    assert isinstance(info.value.reason, KeyError)
    assert "KeyError" in str(info.value)
    assert log == []  # terminate did not run
    assert node.actor_count == 0


async def test_GS2_init_ignore_returns_none(node):
    assert await node.spawn(Probe, kwargs=dict(ignore=True)) is None
    assert node.actor_count == 0


async def test_GS3_name_taken_fails_start_without_init(node):
    inits = []

    class Named(Actor):
        async def init(self):
            inits.append(1)

    first = await node.spawn(Named, name="svc")
    with pytest.raises(StartError) as info:
        await node.spawn(Named, name="svc")
    assert "svc" in str(info.value.reason)
    assert inits == [1]
    assert node.whereis("svc") is first


async def test_GS3_failed_init_releases_name_before_starter_is_told(node):
    class Bad(Actor):
        async def init(self):
            raise RuntimeError("bad init")

    with pytest.raises(StartError):
        await node.spawn(Bad, name="svc")
    assert node.whereis("svc") is None
    ref = await node.spawn(Probe, name="svc")  # immediate retry succeeds
    assert node.whereis("svc") is ref


# ------------------------------------------------------------------ cast / info


async def test_GS4_one_message_at_a_time_in_fifo_order(node, autojump_clock):
    seen = []

    class Serial(Actor):
        async def init(self):
            self.busy = False

        async def handle_cast(self, request):
            assert not self.busy
            self.busy = True
            await trio.sleep(0.1)
            seen.append(request)
            self.busy = False

        async def handle_info(self, message):
            seen.append(("info", message))

    ref = await node.spawn(Serial)
    for i in range(5):
        ref.cast(i)
    ref.send("x")
    await node.spawn(Probe)  # unrelated
    while len(seen) < 6:
        await trio.sleep(0.1)
    assert seen == [0, 1, 2, 3, 4, ("info", "x")]


async def test_GS5_cast_to_dead_actor_is_silent(node):
    ref = await node.spawn(Probe)
    await ref.stop()
    assert ref.cast(("incr",)) is None
    ref.send("anything")  # no error either


async def test_GS9_unexpected_info_is_logged_and_dropped(node):
    class NoInfo(Actor):
        async def handle_call(self, request, caller):
            return "still alive"

    ref = await node.spawn(NoInfo)
    with capture_logs() as logs:
        ref.send("stray")
        await trio.testing.wait_all_tasks_blocked()
    assert await ref.call("ping") == "still alive"
    (event,) = [e for e in logs if e["event"] == "unexpected_message"]
    assert "stray" in event["message"]


async def test_GS9_missing_handle_call_crashes_the_server(node, autojump_clock):
    class NoCalls(Actor):
        pass

    ref = await node.spawn(NoCalls)
    with pytest.raises(CalleeExited) as info:
        await ref.call("hello")
    assert isinstance(info.value.reason, NotImplementedError)
    assert isinstance(ref.exit_reason, NotImplementedError)


# ------------------------------------------------------------------ call


async def test_GS10_call_returns_reply(node):
    ref = await node.spawn(Probe)
    assert await ref.call(("echo", 42)) == 42


async def test_GS10_default_call_timeout_is_5s(node, autojump_clock):
    ref = await node.spawn(Probe)
    t0 = trio.current_time()
    with pytest.raises(CallTimeout) as info:
        await ref.call(("sleep_then", 60, "late"))
    assert trio.current_time() - t0 == pytest.approx(5.0)
    assert info.value.timeout == 5.0


async def test_GS11_call_to_dead_actor_is_noproc_at_once_naming_target(node, autojump_clock):
    ref = await node.spawn(Probe, name="gone")
    await ref.stop()
    t0 = trio.current_time()
    with pytest.raises(NoProcError) as info:
        await ref.call(("echo", 1), timeout=10)
    assert trio.current_time() == t0
    assert info.value.target is ref
    assert "gone" in str(info.value) and "noproc" in str(info.value)
    assert info.value.reason is NOPROC


async def test_GS11_callee_crash_mid_call_fails_promptly(node, autojump_clock):
    ref = await node.spawn(Probe)
    t0 = trio.current_time()
    with pytest.raises(CalleeExited) as info:
        await ref.call(("crash_after", 1.0, "kaboom"), timeout=30)
    assert trio.current_time() - t0 == pytest.approx(1.0)  # not at the 30 s timeout
    assert isinstance(info.value.reason, RuntimeError)
    assert str(info.value.reason) == "kaboom"
    assert info.value.target is ref


async def test_GS11_callee_killed_mid_call_gives_killed(node, autojump_clock):
    ref = await node.spawn(Probe)

    async def killer():
        await trio.sleep(0.5)
        ref.exit(KILL)

    async with trio.open_nursery() as n:
        n.start_soon(killer)
        with pytest.raises(CalleeExited) as info:
            await ref.call(("sleep_then", 10, "x"), timeout=30)
    assert info.value.reason == KILLED


async def test_GS11_callee_stops_without_reply_gives_its_reason(node, autojump_clock):
    ref = await node.spawn(Probe)
    with pytest.raises(CalleeExited) as info:
        await ref.call(("stop_without_reply", Shutdown("bye")))
    assert info.value.reason == Shutdown("bye")


async def test_GS11_calling_self_raises_calling_self(node, autojump_clock):
    ref = await node.spawn(Probe)
    kind, text = await ref.call(("self_call",), timeout=1)
    assert kind == "calling_self"
    assert trio.current_time() == 0  # no deadlock, no timeout


async def test_GS12_late_reply_dropped_after_timeout_and_callee_keeps_running(node, autojump_clock):
    ref = await node.spawn(Probe)
    with pytest.raises(CallTimeout):
        await ref.call(("sleep_then", 3, "late"), timeout=1)
    assert ref.alive
    with capture_logs() as logs:
        await trio.sleep(5)  # the callee finished the work and replied into the void
    assert logs == []  # silently
    assert ref.alive
    assert await ref.call(("count",)) == 1  # the work was done
    assert await ref.call(("echo", "next")) == "next"  # the late reply did not leak into this call


async def test_GS12_timed_out_queued_call_is_still_handled(node, autojump_clock):
    ref = await node.spawn(Probe)
    async with trio.open_nursery() as n:

        async def first():
            await ref.call(("sleep_then", 2, "a"), timeout=10)

        n.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(CallTimeout):
            await ref.call(("sleep_then", 1, "b"), timeout=1)  # still queued when it times out
    await trio.sleep(2)
    assert await ref.call(("get_log",)) == [("slept", 2), ("slept", 1)]


async def test_GS13_caller_cancelled_while_waiting_leaves_server_unaffected(node, autojump_clock):
    ref = await node.spawn(Probe)
    with trio.move_on_after(0.5) as scope:
        await ref.call(("sleep_then", 1, "x"), timeout=None)
    assert scope.cancelled_caught
    await trio.sleep(1)
    assert ref.alive
    assert await ref.call(("count",)) == 1


async def test_GS13_caller_dies_while_waiting_server_reply_dropped(node, autojump_clock):
    server = await node.spawn(Probe)

    class Client(Actor):
        async def handle_cast(self, request):
            await server.call(("sleep_then", 2, "x"))

    client = await node.spawn(Client)
    client.cast("go")
    await trio.sleep(1)
    client.exit(KILL)
    assert await client.wait() == KILLED
    await trio.sleep(2)
    assert server.alive and await server.call(("count",)) == 1


async def test_GS14_deferred_reply_with_noreply_and_caller_reply(node, autojump_clock):
    ref = await node.spawn(Probe)
    results = []

    async def waiter(i):
        results.append((i, await ref.call(("defer",), timeout=None)))

    async with trio.open_nursery() as n:
        n.start_soon(waiter, 1)
        n.start_soon(waiter, 2)
        await trio.sleep(3)
        assert results == []
        ref.cast(("reply_all", "later"))
    assert sorted(results) == [(1, "later"), (2, "later")]


async def test_GS14_reply_is_delivered_once(node):
    class Twice(Actor):
        async def handle_call(self, request, caller):
            caller.reply("first")
            caller.reply("second")
            assert caller.replied
            return NOREPLY

    ref = await node.spawn(Twice)
    assert await ref.call("x") == "first"


async def test_GS14_caller_reply_from_another_actor(node, autojump_clock):
    class Worker(Actor):
        async def handle_cast(self, caller):
            await trio.sleep(1)
            caller.reply("from worker")

    worker = await node.spawn(Worker)

    class Front(Actor):
        async def handle_call(self, request, caller):
            worker.cast(caller)
            return NOREPLY

    front = await node.spawn(Front)
    assert await front.call("job") == "from worker"
    assert trio.current_time() == pytest.approx(1)


async def test_GS15_stop_with_reply(node):
    log = []
    ref = await node.spawn(Probe, log)
    assert await ref.call(("stop", Shutdown("done"))) == "stopping"
    assert await ref.wait() == Shutdown("done")
    assert log[-1] == ("terminate", Shutdown("done"))


# ------------------------------------------------------------------ terminate


async def test_GS16_terminate_runs_on_normal_stop(node):
    log = []
    ref = await node.spawn(Probe, log)
    await ref.stop()
    assert log == [("terminate", NORMAL)]
    assert ref.exit_reason == NORMAL


async def test_GS16_terminate_runs_after_handler_crash(node):
    log = []
    ref = await node.spawn(Probe, log)
    ref.cast(("crash", "bad"))
    reason = await ref.wait()
    assert isinstance(reason, RuntimeError) and str(reason) == "bad"
    assert log[-1][0] == "terminate" and log[-1][1] is reason


async def test_GS16_terminate_runs_after_helper_crash(node, autojump_clock):
    log = []
    ref = await node.spawn(Probe, log)
    ref.cast(("helper_crash", 1))
    reason = await ref.wait()
    assert isinstance(reason, KeyError)
    assert log[-1] == ("terminate", reason)


async def test_GS16_actor_exit_stops_with_reason_after_terminate(node):
    log = []
    ref = await node.spawn(Probe, log)
    ref.cast(("exit", Shutdown("asked")))
    assert await ref.wait() == Shutdown("asked")
    assert log == [("terminate", Shutdown("asked"))]


async def test_GS17_terminate_not_run_on_kill(node):
    log = []
    ref = await node.spawn(Probe, log)
    ref.exit(KILL)
    assert await ref.wait() == KILLED
    assert log == []


async def test_GS17_terminate_not_run_when_linked_peer_crashes_and_not_trapping(node):
    log = []
    peer = await node.spawn(Probe)

    class Linked(Probe):
        async def init(self, log):
            await super().init(log)
            self.link(peer)

    ref = await node.spawn(Linked, log)
    peer.cast(("crash", "peer died"))
    reason = await ref.wait()
    assert isinstance(reason, RuntimeError) and str(reason) == "peer died"
    assert log == []


async def test_GS20_stop_is_synchronous_and_noproc_when_dead(node):
    log = []
    ref = await node.spawn(Probe, log)
    await ref.stop(Shutdown("x"))
    assert not ref.alive and log == [("terminate", Shutdown("x"))]
    with pytest.raises(NoProcError):
        await ref.stop()


async def test_GS20_stop_timeout_kills_and_raises(node, autojump_clock):
    class Stubborn(Actor):
        async def terminate(self, reason):
            await trio.sleep_forever()

    ref = await node.spawn(Stubborn)
    t0 = trio.current_time()
    with pytest.raises(CallTimeout):
        await ref.stop(timeout=2)
    assert trio.current_time() - t0 == pytest.approx(2)
    assert ref.exit_reason == KILLED


async def test_GS21_terminate_raising_becomes_the_reason_and_is_logged(node):
    class BadTerminate(Actor):
        async def terminate(self, reason):
            raise OSError("cleanup failed")

    ref = await node.spawn(BadTerminate)
    with capture_logs() as logs:
        with pytest.raises(OSError):
            await ref.stop()
            raise ref.exit_reason
    assert [e["event"] for e in logs] == ["terminate_failed"]
    assert logs[0]["reason"] == "OSError"


# ------------------------------------------------------------------ misc


async def test_current_actor_inside_handler_and_outside(node):
    class Who(Actor):
        async def handle_call(self, request, caller):
            return current_actor()

    ref = await node.spawn(Who)
    assert await ref.call("who") is ref
    assert current_actor() is None


async def test_actor_statistics_snapshot(node):
    ref = await node.spawn(Probe, name="stats")
    for _ in range(3):
        ref.cast(("incr",))
    stats = ref.statistics()
    assert stats.alive and stats.name == "stats" and stats.actor == "Probe"
    assert stats.mailbox.depth == 3
    await trio.testing.wait_all_tasks_blocked()
    stats = ref.statistics()
    assert stats.mailbox.depth == 0 and stats.mailbox.peak == 3 and stats.mailbox.received == 3
    await ref.stop()
    assert ref.statistics().exit_reason == "normal" and not ref.statistics().alive


async def test_restarted_ref_is_new_and_old_ref_stays_dead(node):
    a = await node.spawn(Probe)
    await a.stop()
    b = await node.spawn(Probe)
    assert a != b and a.id != b.id and not a.alive and b.alive
    assert "dead" in repr(a)


async def test_spawned_child_dies_with_its_owner(node):
    holder = {}

    class Parent(Actor):
        async def init(self):
            holder["child"] = await self.spawn(Probe)

    parent = await node.spawn(Parent)
    child = holder["child"]
    parent.exit(KILL)
    await parent.wait()
    assert not child.alive


async def test_plain_async_function_as_actor(node, autojump_clock):
    ran = []

    async def worker(x):
        ran.append(x)
        await trio.sleep(1)

    ref = await node.spawn(worker, 7)
    assert ran == [7]
    assert await ref.wait() == NORMAL
    assert trio.current_time() == pytest.approx(1)


async def test_plain_async_function_crash_is_the_reason(node):
    async def worker():
        raise LookupError("task failed")

    ref = await node.spawn(worker)
    reason = await ref.wait()
    assert isinstance(reason, LookupError)


async def test_spawn_outside_open_node_block_fails():
    async with open_node() as n:
        pass
    with pytest.raises(RuntimeError):
        await n.spawn(Probe)


async def test_9_3_single_error_in_a_handler_nursery_is_the_reason_not_a_group(node):
    class Nested(Actor):
        async def handle_cast(self, request):
            async def reader():
                if request == "error":
                    raise ActorExit(Error("no_ack_received", message_id=7))
                raise LookupError("reader failed")

            async with trio.open_nursery() as n:
                n.start_soon(reader)
                await trio.sleep_forever()

    ref = await node.spawn(Nested)
    ref.cast("plain")
    reason = await ref.wait()
    assert type(reason) is LookupError and str(reason) == "reader failed"
    ref = await node.spawn(Nested)
    ref.cast("error")
    reason = await ref.wait()
    assert reason == Error("no_ack_received") and reason.details == {"message_id": 7}


async def test_9_3_actor_exit_inside_a_group_stops_with_its_reason(node):
    class Nested(Actor):
        async def handle_cast(self, request):
            async def stopper():
                raise ActorExit(Shutdown("done"))

            async with trio.open_nursery() as n:
                n.start_soon(stopper)

    ref = await node.spawn(Nested)
    ref.cast("go")
    assert await ref.wait() == Shutdown("done")


async def test_task_worker_with_task_status_is_ready_when_it_says_so(node, autojump_clock):
    from ackvisor import ChildSpec

    order = []

    async def server(port, task_status=trio.TASK_STATUS_IGNORED):
        await trio.sleep(1)
        order.append(("listening", port))
        task_status.started()
        await trio.sleep_forever()

    class After(Actor):
        async def init(self):
            order.append("after started")

    sup = await node.start_supervisor([ChildSpec("srv", server, 8080), ChildSpec("after", After)])
    assert order == [("listening", 8080), "after started"]
    assert sup.which_children()[0].ref.alive


async def test_task_worker_failing_before_ready_fails_the_start(node):
    async def server(task_status=trio.TASK_STATUS_IGNORED):
        raise OSError("port in use")

    with pytest.raises(StartError) as info:
        await node.spawn(server)
    assert isinstance(info.value.reason, OSError)


async def test_task_worker_returning_at_once_exits_normal(node):
    async def quick():
        return 42

    ref = await node.spawn(quick)
    assert await ref.wait() == NORMAL
