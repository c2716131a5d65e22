"""Exponential backoff with jitter: pure, with the randomness passed in so tests can pin it."""

from __future__ import annotations

import random

# Delays are drawn from [JITTER_FLOOR * base, base]: enough spread that jobs failing together do not
# retry together, while the first retry still waits close to `backoff_initial` as configured.
JITTER_FLOOR = 0.8


def backoff_delay(attempt: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Delay before retry number `attempt` (1 for the first failure): doubling, capped, jittered."""
    exponent = min(max(attempt, 1) - 1, 64)  # 2**64 * anything positive already exceeds any cap
    base = min(maximum, initial * 2.0**exponent)
    return base * rng.uniform(JITTER_FLOOR, 1.0)
