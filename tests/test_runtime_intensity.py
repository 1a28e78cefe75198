"""Property test of the restart-intensity window (S-14) against a reference model.

The whole supervisor runs under ``MockClock(autojump_threshold=0)``: a child is
crashed after generated gaps (quarter seconds, so window boundaries are hit
exactly and often), and the crash at which the supervisor gives up must be the
one the model predicts.
"""

from __future__ import annotations

import structlog
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ackvisor import SHUTDOWN, Actor, ChildSpec, open_node


def model(times: list[float], intensity: int, period: float) -> int | None:
    """S-14 as written: drop stamps older than now - period (exactly period old stays), append, compare."""
    window: list[float] = []
    for i, now in enumerate(times):
        window = [t for t in window if t >= now - period]
        window.append(now)
        if len(window) > intensity:
            return i
    return None


class Crashy(Actor):
    async def init(self, stamps):
        self.stamps = stamps

    async def handle_cast(self, request):
        self.stamps.append(trio.current_time())
        raise RuntimeError("crash")


def run_supervisor(gaps: list[float], intensity: int, period: float) -> tuple[list[float], int | None, int]:
    async def main():
        stamps: list[float] = []
        gave_up_at = None
        async with open_node() as node:
            sup = await node.start_supervisor(
                [ChildSpec("c", Crashy, stamps)], max_restarts=intensity, max_seconds=period
            )
            for i, gap in enumerate(gaps):
                await trio.sleep(gap)
                sup.which_children()[0].ref.cast("crash")
                await trio.testing.wait_all_tasks_blocked()
                if not sup.alive:
                    assert sup.exit_reason == SHUTDOWN
                    gave_up_at = i
                    break
            in_window = sup.statistics().restarts_in_window if sup.alive else -1
        return stamps, gave_up_at, in_window

    with structlog.testing.capture_logs():
        return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    gaps=st.lists(st.integers(0, 28).map(lambda q: q * 0.25), min_size=1, max_size=12),
    intensity=st.integers(0, 4),
    period=st.sampled_from([0.5, 1.0, 2.5, 5.0]),
)
def test_S14_intensity_window_matches_reference_model(gaps, intensity, period):
    stamps, gave_up_at, in_window = run_supervisor(gaps, intensity, period)
    assert len(stamps) == (len(gaps) if gave_up_at is None else gave_up_at + 1)
    assert gave_up_at == model(stamps, intensity, period)
    if gave_up_at is None:
        now = stamps[-1]
        assert in_window == len([t for t in stamps if t >= now - period])


def test_S14_model_sanity():
    assert model([0, 2, 4, 6, 8, 10], 3, 5) is None
    assert model([0, 1, 2, 3], 3, 5) == 3
    assert model([0, 1, 2, 5], 3, 5) == 3  # exactly period old still counts
    assert model([0, 1, 2, 5.25], 3, 5) is None
    assert model([0], 0, 5) == 0
