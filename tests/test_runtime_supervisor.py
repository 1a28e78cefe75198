"""Supervisors (S-1..S-24): strategies, restart types, intensity, escalation, shutdown, run-time API.

Time-dependent rules run under ``autojump_clock`` (MockClock, autojump 0).
Reports are asserted through the ``reports`` fixture of ``ackvisor.testing``
(structlog capture).
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from ackvisor import (
    IGNORE,
    KILLED,
    NORMAL,
    SHUTDOWN,
    Actor,
    ChildSpec,
    DynamicSupervisor,
    Killed,
    Shutdown,
    StartError,
    Supervisor,
    SupervisorError,
)
from ackvisor.testing import assert_restarted, wait_exit


class W(Actor):
    """A worker that logs ("start", id), ("terminate", id, reason) with the virtual time."""

    async def init(self, id, log, *, fail_init=None, hang_terminate=False, crash_after=None):
        if fail_init is not None and fail_init(id):
            raise RuntimeError(f"{id} cannot start")
        self.id = id
        self.log = log
        self.count = 0
        self.hang_terminate = hang_terminate
        log.append(("start", id, trio.current_time()))
        if crash_after is not None:

            async def bomb():
                await trio.sleep(crash_after)
                raise RuntimeError(f"{id} crash loop")

            self.start_soon(bomb)

    async def handle_cast(self, request):
        if request == "crash":
            raise RuntimeError(f"{self.id} crashed")
        if request == "normal":
            self.stop(NORMAL)
        elif request == "shutdown":
            self.stop(SHUTDOWN)
        elif request == "incr":
            self.count += 1
        elif request == "slow_incr":
            await trio.sleep(1)
            self.count += 1
            self.log.append(("slow_done", self.id, trio.current_time()))

    async def handle_call(self, request, caller):
        if request == "count":
            return self.count
        return request

    async def terminate(self, reason):
        self.log.append(("terminate", self.id, reason, trio.current_time()))
        if self.hang_terminate:
            await trio.sleep_forever()


def spec(id, log, **kw):
    restart = kw.pop("restart", "permanent")
    shutdown = kw.pop("shutdown", None)
    return ChildSpec(id, W, id, log, restart=restart, shutdown=shutdown, kwargs=kw)


def refs(sup):
    return {c.id: c.ref for c in sup.which_children()}


def events(log, kind):
    return [e[1] for e in log if e[0] == kind]


async def crash(sup, id):
    ref = refs(sup)[id]
    ref.cast("crash")
    await ref.wait()
    await trio.testing.wait_all_tasks_blocked()


# ------------------------------------------------------------------ flags / specs (S-1..S-3)


def test_S1_defaults_are_3_restarts_in_5_seconds():
    import inspect

    sig = inspect.signature(Supervisor.init)
    assert sig.parameters["max_restarts"].default == 3
    assert sig.parameters["max_seconds"].default == 5.0
    assert sig.parameters["strategy"].default == "one_for_one"


def test_S3_childspec_defaults_and_validation():
    w = ChildSpec("w", W)
    assert (w.restart, w.shutdown, w.type) == ("permanent", 5.0, "worker")
    s = ChildSpec.supervisor("s", [])
    assert (s.type, s.shutdown) == ("supervisor", math.inf)
    assert ChildSpec("d", DynamicSupervisor).type == "supervisor"
    for bad in (
        dict(restart="sometimes"),
        dict(shutdown=-1),
        dict(shutdown="soon"),
        dict(shutdown=True),
        dict(type="manager"),
        dict(overflow="explode"),
    ):
        with pytest.raises(ValueError) as info:
            ChildSpec("x", W, **bad)
        assert "'x'" in str(info.value)
    with pytest.raises(ValueError):
        ChildSpec(None, W)
    with pytest.raises(ValueError):
        ChildSpec("x", 42)


@pytest.mark.parametrize(
    "flags",
    [dict(strategy="one_for_none"), dict(max_restarts=-1), dict(max_restarts=1.5), dict(max_seconds=0)],
)
async def test_S2_invalid_flags_fail_the_start_before_any_child_starts(node, flags):
    log = []
    with pytest.raises(StartError) as info:
        await node.start_supervisor([spec("a", log)], **flags)
    assert isinstance(info.value.reason, ValueError)
    assert log == []


async def test_S2_duplicate_child_ids_fail_the_start(node):
    log = []
    with pytest.raises(StartError) as info:
        await node.start_supervisor([spec("a", log), spec("a", log)])
    assert "duplicate child id 'a'" in str(info.value.reason)
    assert log == []


# ------------------------------------------------------------------ start order (S-13)


async def test_S13_children_start_in_order_each_ready_before_the_next(node, autojump_clock):
    order = []

    class SlowInit(Actor):
        async def init(self, id):
            order.append(("begin", id))
            await trio.sleep(1)
            order.append(("ready", id))

    sup = await node.start_supervisor([ChildSpec(i, SlowInit, i) for i in "abc"])
    assert order == [("begin", "a"), ("ready", "a"), ("begin", "b"), ("ready", "b"), ("begin", "c"), ("ready", "c")]
    assert [c.id for c in sup.which_children()] == ["a", "b", "c"]
    assert trio.current_time() == pytest.approx(3)


async def test_L2_child_started_progress_reports(node, reports):
    log = []
    await node.start_supervisor([spec("a", log), spec("b", log)], name="top")
    started = reports.named("child_started")
    assert [e["child_id"] for e in started] == ["a", "b"]
    assert started[0]["supervisor"] == "top" and started[0]["log_level"] == "info"
    assert started[0]["restart"] == "permanent" and started[0]["child_type"] == "worker"


# ------------------------------------------------------------------ strategies (S-7..S-10)


async def test_S7_one_for_one_restarts_only_the_failed_child(node, reports):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abc"])
    before = refs(sup)
    await crash(sup, "b")
    after = refs(sup)
    assert after["a"] is before["a"] and after["c"] is before["c"]
    assert after["b"] is not before["b"] and after["b"].alive
    assert events(log, "start") == ["a", "b", "c", "b"]
    assert events(log, "terminate") == ["b"]  # the crashed child's own terminate
    assert_restarted(sup, "b", 1)
    assert_restarted(sup, "a", 0)
    crash_report = reports.one("child_terminated", child_id="b")
    assert crash_report["log_level"] == "error" and crash_report["reason"] == "RuntimeError"
    assert "b crashed" in crash_report["traceback"] and crash_report["actor"] == repr(before["b"])
    assert reports.one("child_restarted", child_id="b")["restarts"] == 1


async def test_S7_sibling_crash_never_cancels_other_children(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abc"])
    before = refs(sup)
    before["a"].cast("incr")
    before["c"].cast("slow_incr")  # c is mid-handler (1 s) when b crashes
    await trio.sleep(0.5)
    before["b"].cast("crash")
    await trio.sleep(1)
    after = refs(sup)
    assert after["a"] is before["a"] and after["c"] is before["c"]
    assert await after["a"].call("count") == 1  # state kept
    assert await after["c"].call("count") == 1  # the in-progress handler completed
    assert ("slow_done", "c", pytest.approx(1.0)) in log
    assert events(log, "terminate") == ["b"]


async def test_S8_one_for_all_stops_others_in_reverse_then_restarts_all_in_order(node):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abcd"], strategy="one_for_all")
    before = refs(sup)
    log.clear()
    await crash(sup, "b")
    after = refs(sup)
    assert all(after[i] is not before[i] and after[i].alive for i in "abcd")
    assert [e[0:2] for e in log] == [
        ("terminate", "b"),  # the crashed child's own terminate
        ("terminate", "d"),
        ("terminate", "c"),
        ("terminate", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    assert all(e[2] == SHUTDOWN for e in log if e[0] == "terminate" and e[1] != "b")
    assert sup.statistics().restarts_in_window == 1  # S-15: one event, not four


async def test_S8_one_for_all_removes_temporary_siblings(node):
    log = []
    sup = await node.start_supervisor(
        [spec("a", log), spec("t", log, restart="temporary"), spec("c", log)], strategy="one_for_all"
    )
    await crash(sup, "a")
    assert [c.id for c in sup.which_children()] == ["a", "c"]


async def test_S9_rest_for_one_restarts_failed_and_later_children(node):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abcd"], strategy="rest_for_one")
    before = refs(sup)
    log.clear()
    await crash(sup, "b")
    after = refs(sup)
    assert after["a"] is before["a"]
    assert all(after[i] is not before[i] for i in "bcd")
    assert [e[0:2] for e in log] == [
        ("terminate", "b"),
        ("terminate", "d"),
        ("terminate", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]


async def test_S9_rest_for_one_last_child_restarts_alone(node):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abc"], strategy="rest_for_one")
    before = refs(sup)
    await crash(sup, "c")
    after = refs(sup)
    assert after["a"] is before["a"] and after["b"] is before["b"] and after["c"] is not before["c"]


async def test_S10_transient_normal_exit_under_one_for_all_does_not_touch_siblings(node):
    log = []
    sup = await node.start_supervisor(
        [spec("a", log), spec("t", log, restart="transient"), spec("c", log)], strategy="one_for_all"
    )
    before = refs(sup)
    before["t"].cast("normal")
    await before["t"].wait()
    await trio.testing.wait_all_tasks_blocked()
    after = refs(sup)
    assert after["a"] is before["a"] and after["c"] is before["c"] and after["t"] is None
    assert [c.state for c in sup.which_children()] == ["running", "stopped", "running"]


# ------------------------------------------------------------------ restart types (S-4, R-4)


async def test_S4_transient_not_restarted_after_normal_or_shutdown(node, reports):
    log = []
    sup = await node.start_supervisor([spec("t", log, restart="transient"), spec("u", log, restart="transient")])
    for id, how in (("t", "normal"), ("u", "shutdown")):
        ref = refs(sup)[id]
        ref.cast(how)
        await ref.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert refs(sup) == {"t": None, "u": None}
    assert events(log, "start") == ["t", "u"]
    assert reports.named("child_terminated") == []  # no report for expected exits


async def test_S4_transient_restarted_after_crash(node):
    log = []
    sup = await node.start_supervisor([spec("t", log, restart="transient")])
    await crash(sup, "t")
    assert refs(sup)["t"].alive
    assert_restarted(sup, "t", 1)


async def test_S4_temporary_never_restarted_and_removed(node, reports):
    log = []
    sup = await node.start_supervisor([spec("tmp", log, restart="temporary"), spec("p", log)])
    await crash(sup, "tmp")
    assert [c.id for c in sup.which_children()] == ["p"]
    assert events(log, "start") == ["tmp", "p"]
    assert reports.one("child_terminated", child_id="tmp")["restart"] == "temporary"  # crashes are reported
    assert sup.statistics().total_restarts == 0


async def test_R4_permanent_restarted_after_normal_with_info_report(node, reports):
    log = []
    sup = await node.start_supervisor([spec("p", log)])
    ref = refs(sup)["p"]
    ref.cast("normal")
    await ref.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert refs(sup)["p"].alive and refs(sup)["p"] is not ref
    report = reports.one("child_terminated", child_id="p")
    assert report["reason"] == "normal" and report["log_level"] == "info"


async def test_R4_killed_child_restarted_and_reported(node, reports):
    from ackvisor import KILL

    log = []
    sup = await node.start_supervisor([spec("t", log, restart="transient")])
    ref = refs(sup)["t"]
    ref.exit(KILL)
    await ref.wait()
    await trio.testing.wait_all_tasks_blocked()
    assert refs(sup)["t"].alive
    assert reports.one("child_terminated", child_id="t")["reason"] == "killed"
    assert events(log, "terminate") == []


# ------------------------------------------------------------------ intensity (S-14..S-17)


async def test_S14_crashes_spread_out_do_not_exceed_3_in_5s(node, autojump_clock, reports):
    log = []
    sup = await node.start_supervisor([spec("a", log), spec("b", log)], max_restarts=3, max_seconds=5)
    for _ in range(6):  # at t = 0, 2, 4, 6, 8, 10: never more than 3 within 5 s
        await crash(sup, "a")
        await trio.sleep(2)
    assert sup.alive
    assert reports.named("max_restart_intensity_reached") == []
    assert_restarted(sup, "a", 6)
    assert sup.statistics().restarts_in_window == 2  # t=8 and t=10 (now t=12)


async def test_S14_three_crashes_over_6s_do_not_trip(node, autojump_clock, reports):
    log = []
    sup = await node.start_supervisor([spec("a", log)], max_restarts=3, max_seconds=5)
    for delay in (0, 3, 3):  # t = 0, 3, 6
        await trio.sleep(delay)
        await crash(sup, "a")
    assert sup.alive and reports.named("max_restart_intensity_reached") == []


async def test_S17_four_crashes_within_5s_give_up(node, autojump_clock, reports):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abc"], max_restarts=3, max_seconds=5)
    for _ in range(3):
        await crash(sup, "b")
        await trio.sleep(1)
    log.clear()
    refs(sup)["b"].cast("crash")  # the 4th within 5 s (t = 3)
    assert await wait_exit(sup) == SHUTDOWN
    report = reports.one("max_restart_intensity_reached")
    assert report["child_id"] == "b" and report["reason"] == "RuntimeError"
    assert report["max_restarts"] == 3 and report["max_seconds"] == 5
    assert report["log_level"] == "error"
    # the offender's own terminate, then the others in reverse start order
    assert [e[0:2] for e in log] == [("terminate", "b"), ("terminate", "c"), ("terminate", "a")]
    assert events(log, "start") == []


async def test_S14_window_boundary_exactly_max_seconds_old_still_counts(node, autojump_clock, reports):
    log = []
    sup = await node.start_supervisor([spec("a", log)], max_restarts=3, max_seconds=5)
    t0 = trio.current_time()
    for t in (0, 1, 2):
        await trio.sleep_until(t0 + t)
        await crash(sup, "a")
    await trio.sleep_until(t0 + 5)  # the t=0 restart is exactly 5 s old: it still counts
    refs(sup)["a"].cast("crash")
    assert await wait_exit(sup) == SHUTDOWN
    assert len(reports.named("max_restart_intensity_reached")) == 1


async def test_S14_window_just_past_boundary_does_not_trip(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec("a", log)], max_restarts=3, max_seconds=5)
    t0 = trio.current_time()
    for t in (0, 1, 2):
        await trio.sleep_until(t0 + t)
        await crash(sup, "a")
    await trio.sleep_until(t0 + 5.001)
    await crash(sup, "a")
    assert sup.alive
    assert sup.statistics().restarts_in_window == 3


async def test_S14_intensity_zero_first_restart_trips(node, reports):
    log = []
    sup = await node.start_supervisor([spec("a", log)], max_restarts=0)
    refs(sup)["a"].cast("crash")
    assert await wait_exit(sup) == SHUTDOWN
    assert reports.named("max_restart_intensity_reached")


async def test_S14_window_is_per_supervisor_not_per_child(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec(i, log) for i in "abcd"], max_restarts=3, max_seconds=5)
    for i in "abc":
        await crash(sup, i)
    refs(sup)["d"].cast("crash")
    assert await wait_exit(sup) == SHUTDOWN


async def test_S15_manual_restart_child_does_not_count(node):
    log = []
    sup = await node.start_supervisor([spec("a", log)], max_restarts=1)
    for _ in range(3):
        await sup.terminate_child("a")
        await sup.restart_child("a")
    assert sup.statistics().restarts_in_window == 0
    await crash(sup, "a")
    assert sup.alive


async def test_S18_escalation_two_levels_up(node, autojump_clock, reports):
    """Grandchild crash loop -> child supervisor gives up -> parent restarts it -> parent trips."""
    log = []
    child_sup = ChildSpec.supervisor(
        "mid",
        [spec("leaf", log, crash_after=0.1)],
        max_restarts=2,
        max_seconds=5,
    )
    root = await node.start_supervisor([spec("sibling", log), child_sup], max_restarts=1, max_seconds=10, name="root")
    mid_refs = [refs(root)["mid"]]
    await mid_refs[0].wait()  # 3 leaf crashes in 0.3 s > 2 restarts: mid gives up
    await trio.testing.wait_all_tasks_blocked()
    mid_refs.append(refs(root)["mid"])
    assert mid_refs[1] is not None and mid_refs[1] is not mid_refs[0] and mid_refs[1].alive
    assert mid_refs[0].exit_reason == SHUTDOWN
    mid_term = reports.one("child_terminated", child_id="mid")
    assert mid_term["reason"] == "shutdown" and mid_term["log_level"] == "info"  # R-4 for permanent
    # The restarted mid crash-loops again; the root's own window (1 in 10 s) trips.
    assert await wait_exit(root) == SHUTDOWN
    gave_up = reports.named("max_restart_intensity_reached")
    assert [e["supervisor"] for e in gave_up] == ["mid", "mid", "root"]
    assert gave_up[-1]["child_id"] == "mid" and gave_up[-1]["reason"] == "shutdown"
    assert events(log, "terminate")[-1] == "sibling"  # root stopped its remaining child
    assert trio.current_time() < 1


async def test_S18_transient_child_supervisor_not_restarted_after_giving_up(node, autojump_clock):
    log = []
    child_sup = ChildSpec.supervisor("mid", [spec("leaf", log, crash_after=0.1)], max_restarts=1, restart="transient")
    root = await node.start_supervisor([child_sup, spec("other", log)])
    mid = refs(root)["mid"]
    assert await mid.wait() == SHUTDOWN
    await trio.testing.wait_all_tasks_blocked()
    assert refs(root)["mid"] is None and root.alive and refs(root)["other"].alive


# ------------------------------------------------------------------ shutdown (S-5, S-6, S-13)


async def test_S13_shutdown_reverse_order_and_timeouts_honoured(node, autojump_clock, reports):
    log = []
    sup = await node.start_supervisor(
        [spec("a", log), spec("hang", log, hang_terminate=True, shutdown=2), spec("c", log)]
    )
    hang = refs(sup)["hang"]
    log.clear()
    t0 = trio.current_time()
    await sup.stop(SHUTDOWN)
    assert [(e[0], e[1], e[3] - t0) for e in log] == [
        ("terminate", "c", 0),
        ("terminate", "hang", 0),
        ("terminate", "a", 2),  # only after hang was killed at its shutdown time
    ]
    assert hang.exit_reason == KILLED
    err = reports.one("shutdown_error", child_id="hang")
    assert err["reason"] == "killed"
    assert trio.current_time() - t0 == pytest.approx(2)


async def test_S5_brutal_kill_skips_terminate(node, reports):
    log = []
    sup = await node.start_supervisor([spec("a", log), spec("b", log, shutdown="brutal_kill")])
    b = refs(sup)["b"]
    await sup.stop()
    assert events(log, "terminate") == ["a"]
    assert b.exit_reason == KILLED
    assert reports.named("shutdown_error") == []


async def test_S5_shutdown_zero_seconds_kills_at_once_if_terminate_awaits(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec("a", log, hang_terminate=True, shutdown=0)])
    a = refs(sup)["a"]
    await sup.stop()
    assert a.exit_reason == KILLED and trio.current_time() == 0


async def test_S5_infinity_shutdown_waits_for_terminate(node, autojump_clock):
    class LongTerminate(Actor):
        async def terminate(self, reason):
            await trio.sleep(100)

    sup = await node.start_supervisor([ChildSpec("slow", LongTerminate, shutdown=math.inf)])
    slow = refs(sup)["slow"]
    await sup.stop()
    assert slow.exit_reason == SHUTDOWN and trio.current_time() == pytest.approx(100)


async def test_GS16_terminate_runs_on_supervisor_shutdown_with_shutdown_reason(node):
    log = []
    sup = await node.start_supervisor([spec("a", log)])
    await sup.stop()
    assert [e[0:3] for e in log if e[0] == "terminate"] == [("terminate", "a", SHUTDOWN)]


async def test_supervisor_stops_nested_tree_depth_first_in_reverse(node):
    log = []
    inner = ChildSpec.supervisor("inner", [spec("x", log), spec("y", log)])
    sup = await node.start_supervisor([spec("a", log), inner, spec("b", log)])
    log.clear()
    await sup.stop()
    assert events(log, "terminate") == ["b", "y", "x", "a"]


# ------------------------------------------------------------------ start failures (S-19..S-21)


async def test_S20_failed_child_start_stops_started_ones_and_names_the_child(node, reports):
    log = []
    with pytest.raises(StartError) as info:
        await node.start_supervisor(
            [spec("a", log), spec("b", log), spec("bad", log, fail_init=lambda id: True), spec("d", log)],
            name="top",
        )
    assert "'bad'" in str(info.value)
    inner = info.value.reason
    assert isinstance(inner, StartError) and "'bad'" in str(inner) and "cannot start" in str(inner)
    assert events(log, "start") == ["a", "b"]
    assert events(log, "terminate") == ["b", "a"]
    assert reports.one("start_error", child_id="bad")["supervisor"] == "top"
    assert node.actor_count == 0


async def test_S21_ignore_keeps_spec_without_ref(node):
    class Maybe(Actor):
        async def init(self, ignore):
            if ignore[0]:
                return IGNORE

    flag = [True]
    sup = await node.start_supervisor([ChildSpec("m", Maybe, flag), ChildSpec("n", Maybe, [False])])
    (m, n) = sup.which_children()
    assert (m.id, m.ref, m.state) == ("m", None, "undefined")
    assert n.state == "running"
    flag[0] = False
    ref = await sup.restart_child("m")
    assert ref is not None and refs(sup)["m"] is ref


async def test_S19_start_failure_at_run_time_retried_via_mailbox_counting_intensity(node, autojump_clock, reports):
    attempts = []

    class Flaky(Actor):
        async def init(self):
            attempts.append(trio.current_time())
            if 1 < len(attempts) <= 3:  # the first two restarts fail
                await trio.sleep(1)
                raise RuntimeError("not yet")

        async def handle_cast(self, request):
            raise RuntimeError("crash")

    sup = await node.start_supervisor([ChildSpec("f", Flaky), spec("other", [])], max_restarts=3, max_seconds=60)
    refs(sup)["f"].cast("crash")
    await trio.sleep(1.5)  # the second restart attempt is in progress
    assert sup.which_children()[0].state == "restarting"
    assert sup.which_children()[0].ref is None
    await trio.sleep(5)
    assert sup.which_children()[0].state == "running"
    assert len(attempts) == 4
    assert len(reports.named("start_error")) == 2
    assert sup.statistics().restarts_in_window == 3  # 1 restart + 2 retries


async def test_S19_permanently_failing_restart_ends_in_give_up(node, autojump_clock, reports):
    attempts = []

    class Broken(Actor):
        async def init(self):
            attempts.append(1)
            if len(attempts) > 1:
                raise RuntimeError("broken for good")

        async def handle_cast(self, request):
            raise RuntimeError("crash")

    sup = await node.start_supervisor([ChildSpec("b", Broken)], max_restarts=3)
    refs(sup)["b"].cast("crash")
    assert await wait_exit(sup) == SHUTDOWN
    assert len(attempts) == 1 + 3  # 3 counted attempts, the 4th decision gives up
    assert len(reports.named("start_error")) == 3
    assert reports.one("max_restart_intensity_reached")["child_id"] == "b"


async def test_S19_one_for_all_retry_reapplies_strategy(node, autojump_clock):
    log = []
    fails = {"n": 0}

    def fail_b_once(id):
        if id == "b" and len([e for e in log if e[:2] == ("start", "b")]) == 1 and fails["n"] == 0:
            fails["n"] += 1
            return True
        return False

    sup = await node.start_supervisor(
        [spec("a", log), spec("b", log, fail_init=fail_b_once), spec("c", log)], strategy="one_for_all"
    )
    await crash(sup, "c")
    assert all(r is not None and r.alive for r in refs(sup).values())
    assert sup.statistics().restarts_in_window == 2


# ------------------------------------------------------------------ run-time API (S-23)


async def test_S23_start_child_appends_last_and_errors(node):
    log = []
    sup = await node.start_supervisor([spec("a", log)])
    ref = await sup.start_child(spec("b", log))
    assert [c.id for c in sup.which_children()] == ["a", "b"] and refs(sup)["b"] is ref
    with pytest.raises(SupervisorError) as info:
        await sup.start_child(spec("b", log))
    assert info.value.what == "already_started"
    await sup.terminate_child("b")
    with pytest.raises(SupervisorError) as info:
        await sup.start_child(spec("b", log))
    assert info.value.what == "already_present"
    with pytest.raises(StartError):
        await sup.start_child(spec("bad", log, fail_init=lambda id: True))
    assert [c.id for c in sup.which_children()] == ["a", "b"]  # failed spec discarded
    with pytest.raises(ValueError):
        await sup.start_child("not a spec")
    await sup.stop()
    assert events(log, "terminate") == ["b", "a"]  # started-later child stops first


async def test_S23_terminate_restart_delete_child(node):
    log = []
    sup = await node.start_supervisor([spec("a", log), spec("tmp", log, restart="temporary")])
    a = refs(sup)["a"]
    await sup.terminate_child("a")
    assert not a.alive and refs(sup)["a"] is None
    await trio.testing.wait_all_tasks_blocked()
    assert refs(sup)["a"] is None  # not restarted automatically
    with pytest.raises(SupervisorError) as info:
        await sup.terminate_child("nope")
    assert info.value.what == "not_found"
    new = await sup.restart_child("a")
    assert new.alive and new is not a
    with pytest.raises(SupervisorError) as info:
        await sup.restart_child("a")
    assert info.value.what == "running"
    with pytest.raises(SupervisorError) as info:
        await sup.delete_child("a")
    assert info.value.what == "running"
    await sup.terminate_child("a")
    await sup.delete_child("a")
    assert [c.id for c in sup.which_children()] == ["tmp"]
    with pytest.raises(SupervisorError):
        await sup.delete_child("a")
    with pytest.raises(SupervisorError):
        await sup.restart_child("a")
    await sup.terminate_child("tmp")  # temporary: spec removed
    assert sup.which_children() == []


async def test_S23_which_children_and_count_children(node):
    log = []
    inner = ChildSpec.supervisor("inner", [spec("x", log)])
    sup = await node.start_supervisor([spec("a", log), inner, spec("b", log)])
    rows = sup.which_children()
    assert [(r.id, r.type, r.state, r.restarts, r.last_exit) for r in rows] == [
        ("a", "worker", "running", 0, None),
        ("inner", "supervisor", "running", 0, None),
        ("b", "worker", "running", 0, None),
    ]
    counts = sup.count_children()
    assert (counts.specs, counts.active, counts.supervisors, counts.workers) == (3, 3, 1, 2)
    await sup.terminate_child("b")
    counts = sup.count_children()
    assert (counts.specs, counts.active) == (3, 2)
    await crash(sup, "a")
    row = sup.which_children()[0]
    assert row.restarts == 1 and row.last_exit == "RuntimeError: a crashed"


async def test_S23_restart_and_delete_child_refused_while_restarting(node, autojump_clock):
    attempts = []

    class Flaky(Actor):
        async def init(self):
            attempts.append(1)
            if len(attempts) == 2:
                await trio.sleep(1)
                raise RuntimeError("retry me")

        async def handle_cast(self, request):
            raise RuntimeError("crash")

    sup = await node.start_supervisor([ChildSpec("f", Flaky)])
    refs(sup)["f"].cast("crash")
    await trio.sleep(0.5)  # the supervisor is inside the failing restart until t=1
    results = []

    async def request(op):
        try:
            await getattr(sup, op)("f")
        except SupervisorError as e:
            results.append((op, e.what))

    async with trio.open_nursery() as n:
        n.start_soon(request, "restart_child")  # queued before the retry message
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(request, "delete_child")
    # Both refused; the order the two callers resume in is the scheduler's, not a guarantee.
    assert sorted(results) == [("delete_child", "restarting"), ("restart_child", "restarting")]
    await trio.testing.wait_all_tasks_blocked()
    assert sup.which_children()[0].state == "running" and len(attempts) == 3


async def test_S24_supervisor_ignores_garbage_messages(node, reports):
    sup = await node.start_supervisor([])
    sup.send("garbage")
    sup.cast("more garbage")
    await trio.testing.wait_all_tasks_blocked()
    assert await sup.call(42) is not None
    with pytest.raises(SupervisorError):
        await sup._request(("no_such_op",))
    assert sup.alive
    assert reports.named("supervisor_unexpected_message")


# ------------------------------------------------------------------ dynamic supervisor (S-12)


class Temp(Actor):
    async def init(self, n=None):
        self.n = n

    async def handle_cast(self, request):
        raise RuntimeError(f"temp {self.n} crashed")

    async def handle_call(self, request, caller):
        return self.n


async def test_S12_dynamic_10000_temporary_children_crash_without_tripping_parent(node, reports):
    root = await node.start_supervisor(
        [ChildSpec("dyn", DynamicSupervisor, kwargs=dict(max_restarts=3, max_seconds=5))], max_restarts=0
    )
    dyn = refs(root)["dyn"]
    temp = ChildSpec("temp", Temp, restart="temporary")
    children = [await dyn.start_child(temp, i) for i in range(10_000)]
    assert dyn.count_children().active == 10_000
    assert await children[1234].call("n") == 1234  # extra args appended
    for ref in children:
        ref.cast("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert all(not r.alive for r in children)
    assert dyn.alive and root.alive and refs(root)["dyn"] is dyn
    assert dyn.which_children() == []
    assert dyn.statistics().total_restarts == 0 and root.statistics().total_restarts == 0
    assert len(reports.named("child_terminated")) == 10_000
    assert reports.named("max_restart_intensity_reached") == []


async def test_S12_dynamic_max_children(node):
    dyn = await node.spawn(DynamicSupervisor, kwargs=dict(max_children=2))
    temp = ChildSpec("temp", Temp, restart="temporary")
    await dyn.start_child(temp, 1)
    await dyn.start_child(temp, 2)
    with pytest.raises(SupervisorError) as info:
        await dyn.start_child(temp, 3)
    assert info.value.what == "max_children"
    first = dyn.which_children()[0].ref
    await dyn.terminate_child(first)
    assert (await dyn.start_child(temp, 4)).alive


async def test_S12_dynamic_terminate_by_ref_and_unsupported_ops(node):
    dyn = await node.spawn(DynamicSupervisor)
    ref = await dyn.start_child(ChildSpec("w", Temp))
    with pytest.raises(SupervisorError):
        await dyn.terminate_child("w")
    await dyn.terminate_child(ref)
    assert not ref.alive and dyn.which_children() == []
    with pytest.raises(SupervisorError):
        await dyn.restart_child("w")
    with pytest.raises(SupervisorError):
        await dyn.delete_child("w")


async def test_S12_dynamic_permanent_child_restarted_and_counts_intensity(node, reports):
    dyn = await node.spawn(DynamicSupervisor, kwargs=dict(max_restarts=2))
    ref = await dyn.start_child(ChildSpec("w", Temp))
    for _ in range(2):
        ref.cast("crash")
        await ref.wait()
        await trio.testing.wait_all_tasks_blocked()
        (row,) = dyn.which_children()
        assert row.ref is not ref and row.ref.alive
        ref = row.ref
    ref.cast("crash")
    assert await wait_exit(dyn) == SHUTDOWN
    assert reports.one("max_restart_intensity_reached")["child_id"] == "w"


async def test_S12_dynamic_ignore_adds_nothing(node):
    class Nope(Actor):
        async def init(self):
            return IGNORE

    dyn = await node.spawn(DynamicSupervisor)
    assert await dyn.start_child(ChildSpec("n", Nope)) is None
    assert dyn.which_children() == []


async def test_S12_dynamic_shutdown_is_concurrent(node, autojump_clock):
    class SlowStop(Actor):
        async def terminate(self, reason):
            await trio.sleep(1)

    dyn = await node.spawn(DynamicSupervisor)
    kids = [await dyn.start_child(ChildSpec("s", SlowStop)) for _ in range(5)]
    await dyn.stop()
    assert all(k.exit_reason == SHUTDOWN for k in kids)
    assert trio.current_time() == pytest.approx(1)  # not 5


# ------------------------------------------------------------------ backoff (beyond OTP)


async def test_backoff_delays_restart(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec("a", log)], backoff=(1.0, 4.0), max_restarts=10)
    t0 = trio.current_time()
    await crash(sup, "a")
    assert sup.which_children()[0].state == "restarting"
    await trio.sleep(1.01)
    assert sup.which_children()[0].state == "running"
    start_times = [e[2] for e in log if e[0] == "start"]
    assert 0.5 <= start_times[1] - t0 <= 1.0


# ------------------------------------------------------------------ introspection


async def test_supervisor_statistics(node, autojump_clock):
    log = []
    sup = await node.start_supervisor([spec("a", log), spec("b", log, restart="transient")], max_restarts=5)
    await crash(sup, "a")
    refs(sup)["b"].cast("normal")
    await trio.testing.wait_all_tasks_blocked()
    stats = sup.statistics()
    assert (stats.strategy, stats.max_restarts, stats.max_seconds) == ("one_for_one", 5, 5.0)
    assert stats.restarts_in_window == 1 and stats.total_restarts == 1
    assert stats.children == {"running": 1, "stopped": 1}
    await trio.sleep(6)
    assert sup.statistics().restarts_in_window == 0
    assert sup.actor_statistics().mailbox.depth == 0
