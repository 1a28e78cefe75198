"""Unit tests of the channels layer that need no socket: AckTracker (virtual time), Router, origin_allowed."""

from __future__ import annotations

import pytest
import trio

from ackvisor import Actor, Error, open_node
from ackvisor.channels import AckTracker, CheckAck, EndpointSettings, Router
from ackvisor.channels.acks import new_message_id
from ackvisor.channels.connection import origin_allowed


class Recorder(Actor):
    """Owns an AckTracker the way a channel does: each CheckAck goes to ``tracker.expired`` and
    the (virtual) time and outcome are recorded; ``call("block")`` keeps it busy."""

    async def init(self, ack_timeout: float) -> None:
        self.tracker = AckTracker(self.ref, ack_timeout)
        self.handled: list[tuple[str, float, object]] = []
        self.changed = trio.Event()
        self.release = trio.Event()

    async def handle_call(self, request, caller):
        if request == "block":
            caller.reply("blocked")
            await self.release.wait()
            return None
        if request == "ping":
            return "pong"

    async def handle_info(self, message) -> None:
        if isinstance(message, CheckAck):
            expired = self.tracker.expired(message)
            self.handled.append((message.message_id, trio.current_time(), expired))
            self.changed.set()

    async def next_check(self) -> tuple[str, float, object]:
        """Wait for the next CheckAck to be handled and return its record."""
        seen = len(self.handled)
        while len(self.handled) == seen:
            self.changed = trio.Event()
            await self.changed.wait()
        return self.handled[-1]


async def _recorder(node, ack_timeout: float = 1.0) -> tuple[object, Recorder, AckTracker]:
    ref = await node.spawn(Recorder, ack_timeout)
    rec = ref._cell.actor
    return ref, rec, rec.tracker


async def test_check_ack_fires_exactly_ack_timeout_after_written_not_after_track(autojump_clock):
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node, 5.0)
        t_track = trio.current_time()
        pending = tracker.track("hydrate")
        assert pending.deadline is None and pending.sent_at is None
        await trio.sleep(3.0)  # our own queueing: must not count against the client
        tracker.written(pending)
        t_written = trio.current_time()
        assert pending.sent_at == t_written and pending.deadline == t_written + 5.0
        message_id, fired_at, expired = await rec.next_check()
        assert message_id == pending.message_id and expired is pending
        assert fired_at == pytest.approx(t_written + 5.0)
        assert fired_at - t_track == pytest.approx(8.0)
        reason = tracker.no_ack_reason(pending, topic="t:1")
        assert isinstance(reason, Error) and reason.name == "no_ack_received"
        assert reason.details["message_id"] == message_id
        assert reason.details["waited_ms"] == pytest.approx(5000.0, abs=1)
        assert reason.details["topic"] == "t:1" and reason.details["message_event"] == "hydrate"
        assert tracker.statistics().expired == 1


async def test_acked_message_never_expires_and_the_timer_is_not_rearmed_for_nothing(autojump_clock):
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node)
        pending = tracker.track("hydrate")
        tracker.written(pending)
        await trio.sleep(0.5)
        assert tracker.ack(pending.message_id) is True
        assert tracker.awaiting == {}
        await trio.sleep(10)
        # The timer armed for it still fires once (acks do not cancel it), finds nothing.
        assert [(m, t, e) for m, t, e in rec.handled] == [(pending.message_id, pytest.approx(1.0), None)]
        assert node.timers.pending_count == 0
        stats = tracker.statistics()
        assert (stats.awaiting, stats.tracked, stats.acked, stats.expired) == (0, 1, 1, 0)


async def test_one_timer_serves_many_pushes_each_checked_at_its_own_deadline(autojump_clock):
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node, 1.0)
        t0 = trio.current_time()
        first = tracker.track("a")
        tracker.written(first)  # deadline t0+1.0
        pendings = []
        for _ in range(100):
            await trio.sleep(0.001)
            p = tracker.track("b")
            tracker.written(p)
            pendings.append(p)
        assert node.timers.pending_count == 1  # one armed timer, not 101
        await trio.sleep(0.5 - 0.1)  # t0 + 0.5
        second = tracker.track("c")
        tracker.written(second)  # deadline t0+1.5
        assert tracker.ack(first.message_id)
        for p in pendings:
            assert tracker.ack(p.message_id)
        # t0+1.0: the timer armed for `first` fires, finds it acked, re-arms for `second`.
        message_id, fired_at, expired = await rec.next_check()
        assert (message_id, expired) == (first.message_id, None)
        assert fired_at == pytest.approx(t0 + 1.0)
        message_id, fired_at, expired = await rec.next_check()
        assert (message_id, expired) == (second.message_id, second)
        assert fired_at == pytest.approx(t0 + 1.5)
        assert tracker.no_ack_reason(second).details["waited_ms"] == pytest.approx(1000.0, abs=1)


async def test_ack_after_the_timer_message_was_queued_still_wins(autojump_clock):
    """The timer fires while the owner is busy (its CheckAck sits in the mailbox); an ack then
    arrives before it is handled: the message must not be reported as expired."""
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node)
        pending = tracker.track("hydrate")
        tracker.written(pending)
        assert await ref.call("block") == "blocked"
        await trio.sleep(2.0)  # the timer fired; its message is queued behind the block
        assert node.timers.pending_count == 0
        assert ref._cell.mailbox.depth >= 1
        assert tracker.ack(pending.message_id) is True
        rec.release.set()
        assert await ref.call("ping") == "pong"  # everything before the ping was handled
        assert [e for _, _, e in rec.handled] == [None]
        assert tracker.statistics().expired == 0


async def test_ack_before_written_arms_no_timer(autojump_clock):
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node)
        pending = tracker.track("hydrate")
        assert tracker.ack(pending.message_id) is True
        tracker.written(pending)
        assert pending.deadline is None and node.timers.pending_count == 0
        await trio.sleep(5)
        assert rec.handled == []


async def test_unknown_repeated_and_malformed_acks_return_false(autojump_clock):
    async with open_node() as node:
        ref, _, tracker = await _recorder(node)
        pending = tracker.track("hydrate")
        tracker.written(pending)
        assert tracker.ack("no-such-id") is False
        assert tracker.ack(None) is False
        assert tracker.ack(42) is False
        assert tracker.ack(["not", "hashable"]) is False
        assert tracker.ack({"a": 1}) is False
        assert tracker.ack(pending.message_id) is True
        assert tracker.ack(pending.message_id) is False  # repeated
        assert tracker.statistics().unknown == 6
        assert tracker.statistics().acked == 1


async def test_cancel_all_stops_the_timer_and_a_stale_check_is_ignored(autojump_clock):
    async with open_node() as node:
        ref, rec, tracker = await _recorder(node)
        for _ in range(5):
            tracker.written(tracker.track("x"))
        stale = CheckAck(next(iter(tracker.awaiting)))
        assert tracker.expired(stale) is None  # not the check this tracker armed
        tracker.cancel_all()
        await trio.sleep(5)
        assert rec.handled == []
        assert tracker.statistics().expired == 0


async def test_message_ids_are_unique(autojump_clock):
    async with open_node() as node:
        ref, _, _ = await _recorder(node)
        a, b = AckTracker(ref, 1.0), AckTracker(ref, 1.0)
        ids = [a.track("x").message_id for _ in range(5000)] + [b.track("x").message_id for _ in range(5000)]
        ids += [new_message_id() for _ in range(5000)]
        assert len(set(ids)) == len(ids)
        assert all(isinstance(i, str) and i for i in ids)


async def test_ack_timeout_must_be_positive(autojump_clock):
    async with open_node() as node:
        ref, _, _ = await _recorder(node)
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError):
                AckTracker(ref, bad)


# ---------------------------------------------------------------- Router


class A: ...


class B: ...


class C: ...


def test_router_exact_prefix_and_first_match_wins():
    router = Router({"room:lobby": A, "room:*": B, "*": C})
    assert router.match("room:lobby") is A
    assert router.match("room:42") is B
    assert router.match("room:") is B
    assert router.match("other") is C
    assert Router([("room:*", B), ("room:lobby", A)]).match("room:lobby") is B  # declaration order
    assert Router({"room:lobby": A}).match("room:lobby2") is None
    assert Router({"room:*": A}).match("roo") is None
    assert Router({"room:*": A}).match("ROOM:1") is None  # case-sensitive, like Phoenix
    assert Router({}).match("anything") is None


@pytest.mark.parametrize("pattern", ["", "room:*:x", "*room", "a*b*", 3])
def test_router_rejects_bad_patterns(pattern):
    with pytest.raises(ValueError):
        Router({pattern: A})


# ---------------------------------------------------------------- check_origin


@pytest.mark.parametrize(
    "origin, allowed, ok",
    [
        (None, ("https://example.com",), True),  # non-browser clients send no Origin
        ("https://evil.com", (), True),  # empty allow-list: no check
        ("https://example.com", ("https://example.com",), True),
        ("https://EXAMPLE.com", ("https://example.com",), True),
        ("http://example.com", ("https://example.com",), False),  # scheme must match
        ("http://example.com", ("//example.com",), True),  # any scheme
        ("https://example.com", ("example.com",), True),
        ("https://example.com:4000", ("https://example.com",), True),  # no port in entry: any port
        ("https://example.com:4000", ("https://example.com:4000",), True),
        ("https://example.com:4001", ("https://example.com:4000",), False),
        ("https://example.com", ("https://example.com:4000",), False),
        ("https://a.example.com", ("https://*.example.com",), True),
        ("https://a.b.example.com", ("//*.example.com",), True),
        ("https://example.com", ("https://*.example.com",), False),  # the bare domain is not a subdomain
        ("https://badexample.com", ("https://*.example.com",), False),
        ("https://example.com.evil.com", ("https://example.com",), False),
        ("https://evil.com", ("https://example.com", "https://other.com"), False),
        ("https://other.com", ("https://example.com", "https://other.com"), True),
        ("null", ("https://example.com",), False),
        ("", ("https://example.com",), False),
        ("https://example.com:abc", ("https://example.com:4000",), False),  # bad port: no exception
        ("https://example.com:99999", ("https://example.com",), False),
        ("https://[::1", ("https://example.com",), False),
        ("https://example.com", ("https://example.com:notaport", "https://example.com"), True),
    ],
)
def test_origin_allowed(origin, allowed, ok):
    assert origin_allowed(origin, allowed) is ok


def test_endpoint_settings_validation():
    assert EndpointSettings(check_origin=["https://a"]).check_origin == ("https://a",)
    for bad in (
        dict(on_no_ack="ignore"),
        dict(path="socket"),
        dict(ack_timeout=0),
        dict(max_frame_bytes=0),
        dict(heartbeat_timeout=0),
        dict(handshake_timeout=-1),
        dict(max_channels=0),
    ):
        with pytest.raises(ValueError):
            EndpointSettings(**bad)
