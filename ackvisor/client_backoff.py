"""The client's default reconnect and rejoin schedules (phoenix.js defaults)."""

from __future__ import annotations

from typing import Final

#: phoenix.js ``reconnectAfterMs`` default, in seconds (index = tries - 1).
_RECONNECT_STEPS: Final = (0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.0)
#: phoenix.js ``rejoinAfterMs`` default, in seconds (index = tries - 1).
_REJOIN_STEPS: Final = (1.0, 2.0, 5.0)


def default_backoff(tries: int) -> float:
    """phoenix.js reconnect schedule: 0.01, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1, 2, then 5 s.

    ``tries`` is 1 for the first retry after a close (phoenix.js counts the same way).
    """
    if tries < 1:
        tries = 1
    return _RECONNECT_STEPS[tries - 1] if tries <= len(_RECONNECT_STEPS) else 5.0


def default_rejoin_after(tries: int) -> float:
    """phoenix.js rejoin schedule: 1, 2, 5, then 10 s (``tries`` starts at 1)."""
    if tries < 1:
        tries = 1
    return _REJOIN_STEPS[tries - 1] if tries <= len(_REJOIN_STEPS) else 10.0
