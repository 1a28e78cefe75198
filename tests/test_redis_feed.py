"""The per-topic feed rules (ackvisor.brokers.redis_feed), with a fake history: no Redis needed."""

from __future__ import annotations

import pytest
import trio

from ackvisor.brokers.redis_codec import Keys, parse_envelope
from ackvisor.brokers.redis_feed import Feed, Sequencer


class FakeHistory:
    """One topic's stream: epoch, top, entries (offset -> body), trimmed below ``first``."""

    def __init__(self, epoch: str = "e1") -> None:
        self.epoch = epoch
        self.entries: dict[int, bytes] = {}
        self.top = 0
        self.fail = 0
        self.calls: list[tuple[int, int]] = []

    def add(self, n: int = 1) -> list[int]:
        out = []
        for _ in range(n):
            self.top += 1
            self.entries[self.top] = b"m%d" % self.top
            out.append(self.top)
        return out

    def trim_below(self, first: int) -> None:
        self.entries = {o: b for o, b in self.entries.items() if o >= first}

    def reset(self, epoch: str) -> None:
        self.epoch, self.entries, self.top = epoch, {}, 0

    async def fetch(self, topic: str, since: int, limit: int):
        self.calls.append((since, limit))
        if self.fail:
            self.fail -= 1
            raise ConnectionError("down")
        await trio.sleep(0)
        got = [(o, b) for o, b in sorted(self.entries.items()) if o > since][:limit] if limit else []
        return self.top, self.epoch, got


def make(page: int = 1000):
    h = FakeHistory()
    out: list[tuple[str, int, bytes, str | None]] = []
    seq = Sequencer(h.fetch, lambda f, off, origin, body, resync: out.append((f.epoch, off, body, resync)), page=page, retry_delay=lambda n: 0.0)
    f = Feed("t", b"ax:{t}:c")
    return h, seq, f, out


async def offer(seq, f, h, offset, epoch=None):
    await seq.offer(f, offset, epoch or h.epoch, "n1", b"m%d" % offset)


async def test_in_order_and_duplicates():
    h, seq, f, out = make()
    assert await seq.anchor(f) and f.last == 0 and f.epoch == "e1"
    h.add(3)
    for o in (1, 2, 2, 3, 1):
        await offer(seq, f, h, o)
    assert [o for _, o, _, _ in out] == [1, 2, 3]
    assert seq.dropped_duplicates == 2 and h.calls == [(0, 0)]


async def test_a_gap_is_filled_from_history_before_the_newer_message():
    h, seq, f, out = make()
    await seq.anchor(f)
    h.add(6)
    await offer(seq, f, h, 1)
    await offer(seq, f, h, 5)  # 2..4 lost by pub/sub
    await offer(seq, f, h, 6)
    assert [o for _, o, _, _ in out] == [1, 2, 3, 4, 5, 6]
    assert all(r is None for *_, r in out)
    assert seq.filled == 5 and seq.dropped_duplicates == 1  # 2..6 from the stream, the live 6 dropped


async def test_a_gap_that_was_trimmed_marks_resync():
    h, seq, f, out = make()
    await seq.anchor(f)
    h.add(10)
    await offer(seq, f, h, 1)
    h.trim_below(6)
    await offer(seq, f, h, 8)
    # the fill reads up to the top: 9 and 10 are delivered now, their live copies are dropped later
    assert [(o, r) for _, o, _, r in out] == [(1, None), (6, "trimmed"), (7, None), (8, None), (9, None), (10, None)]
    assert seq.resyncs == 1


async def test_the_fill_is_paged():
    h, seq, f, out = make(page=3)
    await seq.anchor(f)
    h.add(10)
    await offer(seq, f, h, 10)
    assert [o for _, o, _, _ in out] == list(range(1, 11))
    assert len(h.calls) >= 4


async def test_an_epoch_change_restarts_offsets_with_resync():
    h, seq, f, out = make()
    await seq.anchor(f)
    h.add(2)
    await offer(seq, f, h, 1)
    await offer(seq, f, h, 2)
    h.reset("e2")
    h.add(3)
    await offer(seq, f, h, 2, "e2")  # 1 of e2 was lost: filled
    await offer(seq, f, h, 3, "e2")
    await offer(seq, f, h, 2, "e1")  # a straggler of the retired epoch
    assert [(e, o, r) for e, o, _, r in out] == [("e1", 1, None), ("e1", 2, None), ("e2", 1, "epoch"), ("e2", 2, None), ("e2", 3, None)]
    assert f.retired == ["e1"]


async def test_a_fill_that_fails_keeps_pending_until_the_retry():
    h, seq, f, out = make()
    await seq.anchor(f)
    h.add(4)
    await offer(seq, f, h, 1)
    h.fail = 1
    await offer(seq, f, h, 3)
    assert [o for _, o, _, _ in out] == [1] and f.pending and f.failures == 1
    await offer(seq, f, h, 4)  # retry_at passed (delay 0): the fill now works
    assert [o for _, o, _, _ in out] == [1, 2, 3, 4] and not f.pending and f.failures == 0


async def test_pending_messages_cover_what_the_stream_lost():
    h, seq, f, out = make()
    await seq.anchor(f)
    h.add(5)
    await offer(seq, f, h, 1)
    h.fail = 2
    await offer(seq, f, h, 4)
    await offer(seq, f, h, 5)
    assert sorted(f.pending) == [4, 5]
    h.trim_below(3)  # 2 is gone, 4 and 5 are pending and in the stream, 3 only in the stream
    await seq.fill(f)
    assert [(o, r) for _, o, _, r in out] == [(1, None), (3, "trimmed"), (4, None), (5, None)]


async def test_unanchored_feed_starts_at_the_first_message():
    h, seq, f, out = make()
    h.add(7)
    await offer(seq, f, h, 7)
    assert [o for _, o, _, _ in out] == [7] and f.last == 7 and h.calls == []


def test_envelope_and_keys():
    k = Keys("ax")
    assert k.channel("room:1") == "ax:{room:1}:c" and k.topic_of_channel(b"ax:{room:1}:c") == "room:1"
    assert k.topic_of_channel(b"other:{x}:c") is None
    assert parse_envelope(b"ax1|p|12|ep|n1|{\"a\":\"x|y\"}") == (b"p", 12, "ep", "n1", b'{"a":"x|y"}')
    with pytest.raises(ValueError):
        parse_envelope(b"ax2|p|1|e|n|b")
    with pytest.raises(ValueError):
        Keys("a{b")
