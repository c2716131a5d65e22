"""Times kept across a restart: epoch seconds in the state file, the loop's monotonic clock in
memory, where a wall clock that is stepped cannot disturb what they count."""

from __future__ import annotations

from collections.abc import Iterable


def to_monotonic(times: Iterable[float], wall: float, now: float, within: float) -> list[float]:
    """`times` (epoch seconds, in order) no older than `within` at `wall`, on the monotonic clock
    that reads `now` at the same moment. A wall clock set back since cannot put one in the
    future, where it would count for longer than `within`."""
    return [now - max(0.0, wall - at) for at in times if wall - at < within]


def to_wall(times: Iterable[float], now: float, wall: float) -> list[float]:
    """Monotonic `times`, read `now`, as epoch seconds where the wall clock reads `wall`."""
    return [wall - (now - at) for at in times]
