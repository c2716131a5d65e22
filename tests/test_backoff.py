"""Backoff bounds: doubling from the initial delay, never past the cap, jittered."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from watcher.backoff import JITTER_FLOOR, backoff_delay


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.001, max_value=100),
    ratio=st.floats(min_value=1, max_value=1000),
    seed=st.integers(),
)
def test_delay_stays_within_bounds(attempt: int, initial: float, ratio: float, seed: int) -> None:
    maximum = initial * ratio
    delay = backoff_delay(attempt, initial, maximum, random.Random(seed))
    base = min(maximum, initial * 2.0 ** (attempt - 1)) if attempt < 1000 else maximum
    assert JITTER_FLOOR * base <= delay <= base <= maximum


def test_delays_double_until_the_cap() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 1.0, 8.0, rng) for n in range(1, 7)]
    upper = [1, 2, 4, 8, 8, 8]
    assert all(JITTER_FLOOR * u <= d <= u for d, u in zip(delays, upper, strict=True))


def test_jitter_spreads_jobs_that_fail_together() -> None:
    rng = random.Random(7)
    assert len({backoff_delay(3, 1.0, 60.0, rng) for _ in range(20)}) == 20
