"""The ``ackvisor.testing`` pytest plugin, used the way a user of ackvisor would use it."""

from __future__ import annotations

import pytest
import structlog
import trio

from ackvisor import SHUTDOWN, Actor, ChildSpec, Node
from ackvisor.testing import Reports, assert_restarted, capture_reports, settle, wait_exit


class Ticker(Actor):
    """A user actor with a timer: ticks every second, crashes on request."""

    async def init(self, log):
        self.log = log
        self.ticks = 0
        self.send_after("tick", 1)

    async def handle_info(self, message):
        self.ticks += 1
        self.send_after("tick", 1)

    async def handle_call(self, request, caller):
        return self.ticks

    async def handle_cast(self, request):
        raise RuntimeError(request)

    async def terminate(self, reason):
        self.log.append(reason)


@pytest.fixture
def terminated():
    """Sync fixture: torn down after the trio test and its async fixtures, so it sees node's teardown."""
    log = []
    yield log
    assert log == [SHUTDOWN], "the node fixture must stop actors at teardown"


async def test_node_fixture_opens_a_node_and_tears_it_down(terminated, node):
    assert isinstance(node, Node)
    await node.spawn(Ticker, terminated)
    assert node.actor_count == 1
    assert terminated == []


async def test_node_fixture_works_under_mock_clock(node, autojump_clock):
    ref = await node.spawn(Ticker, [])
    await trio.sleep(10.5)
    assert await ref.call("ticks") == 10


async def test_wait_exit_returns_the_reason(node):
    ref = await node.spawn(Ticker, [])
    ref.cast("boom")
    reason = await wait_exit(ref)
    assert isinstance(reason, RuntimeError) and str(reason) == "boom"
    assert await wait_exit(ref) is reason  # already dead: returns at once


async def test_wait_exit_timeout_in_virtual_time(node, autojump_clock):
    ref = await node.spawn(Ticker, [])
    with pytest.raises(trio.TooSlowError):
        await wait_exit(ref, timeout=60)
    assert trio.current_time() == pytest.approx(60)


async def test_assert_restarted(node):
    sup = await node.start_supervisor([ChildSpec("t", Ticker, []), ChildSpec("u", Ticker, [])])
    for _ in range(2):
        ref = sup.which_children()[0].ref
        ref.cast("crash")
        await wait_exit(ref)
        await settle()
    assert_restarted(sup, "t", 2)
    assert_restarted(sup, "u", 0)
    with pytest.raises(AssertionError, match="restarted 2 times, expected 3"):
        assert_restarted(sup, "t", 3)
    with pytest.raises(AssertionError, match="no child 'nope'"):
        assert_restarted(sup, "nope", 0)


async def test_reports_fixture_collects_runtime_events(node, reports):
    assert isinstance(reports, Reports)
    sup = await node.start_supervisor([ChildSpec("t", Ticker, [])], name="app")
    ref = sup.which_children()[0].ref
    ref.cast("boom")
    await wait_exit(ref)
    await settle()
    assert reports.names() == ["child_started", "child_terminated", "child_started", "child_restarted"]
    crash = reports.one("child_terminated", supervisor="app", child_id="t")
    assert crash["reason"] == "RuntimeError" and crash["log_level"] == "error"
    assert len(reports.named("child_started")) == 2
    assert reports.where("child_started", child_id="t")[0]["supervisor"] == "app"
    with pytest.raises(AssertionError):
        reports.one("child_started")


def test_capture_reports_restores_structlog_configuration():
    before = list(structlog.get_config()["processors"])
    with capture_reports() as reports:
        structlog.get_logger("user").info("my_event", answer=42)
    assert reports == [{"event": "my_event", "answer": 42, "log_level": "info"}]
    assert structlog.get_config()["processors"] == before


def test_plugin_is_registered_through_entry_point(pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("ackvisor")
