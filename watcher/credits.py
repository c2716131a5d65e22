"""The org's API credits as a budget: pure, with the clock passed in.

Zoho counts credits over a rolling 24 hours, and every poll spends one. Two things limit us: the
user's own `credits_per_day` (the watcher must never spend more than that in any 24 hours) and
what Zoho says is left for the whole org (`X-API-CREDITS-REMAINING`, sent once half is used).
`wait` is the hard limit; `stretch` paces all jobs alike so that the hard limit is rarely reached
— without it, the first jobs to come due would spend the day's credits and the rest would starve.

Memory: one float per credit spent in the last 24 hours, about 32 bytes each: 3 MB at 100,000
credits a day. Beyond a few hundred thousand a day, count per second instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

DAY_S = 86_400.0

# Zoho sends the header only while more than half of the org's credits are used. A reading stops
# slowing us down once none has come for this long: usage has presumably fallen back, and if it
# has not, the next answer says so again.
REMAINING_TTL_S = 3_600.0

# A drop below the floor is over once a reading is this far above it (Zoho resets credits daily):
# an answer to a request sent a moment before a low one may come back just above the floor.
RECOVERED = 1.1

# A stretch this many times smaller than the largest one in force brings parked jobs forward.
RELAXED = 1.1

# `now + wait(now)` could land a rounding error short of the moment a credit ages out; waiting this
# much longer makes waiting what `wait` said always enough.
_ROUNDING_S = 1e-6


class CreditBudget:
    """Credits spent by this watcher in the last 24 hours and what Zoho says the org has left."""

    def __init__(
        self,
        credits_per_day: int | None,
        floor: int,
        *,
        spent_before: Iterable[float] = (),
        on_spend: Callable[[], None] | None = None,
    ) -> None:
        """`spent_before`: when credits went before this budget began (a run before a restart),
        in order; `on_spend` is told of each credit spent from now on, to keep it likewise."""
        # When each credit of the last 24 hours went, in order.
        self._spent: deque[float] = deque(spent_before)
        self._on_spend = on_spend
        self._reading: tuple[float, int] | None = None  # (seen at, remaining) from Zoho's header
        self._low = False  # within a drop below the floor
        self.configure(credits_per_day, floor)

    def configure(self, credits_per_day: int | None, floor: int) -> None:
        """Set the limits (again, after a reload); what was spent still counts."""
        if credits_per_day is not None and credits_per_day <= 0:
            raise ValueError(f"credits_per_day must be positive, not {credits_per_day}")
        if floor < 0:
            raise ValueError(f"floor must not be negative, not {floor}")
        self._per_day = credits_per_day
        self._floor = floor

    def spend(self, now: float) -> None:
        """One request went out at `now`."""
        if self._per_day is None:
            return
        self._spent.append(now)
        self._forget(now)
        if self._on_spend is not None:
            self._on_spend()

    def wait(self, now: float) -> float:
        """Seconds until one more request fits the rolling-24 h budget (0.0 if it fits now)."""
        if self._per_day is None:
            return 0.0
        self._forget(now)
        excess = len(self._spent) - self._per_day
        if excess < 0:
            return 0.0
        return self._spent[excess] + DAY_S - now + _ROUNDING_S  # the oldest have aged out by then

    def stretch(self, now: float, demand_per_s: float) -> float:
        """Factor (>= 1) by which to multiply every job's planned gap.

        `demand_per_s` is the rate the tracked jobs would poll at unstretched. A steady pace of
        credits_per_day / 24 h is the only one that never runs into `wait`, whatever happened
        before: any faster and the budget runs dry before the oldest credits come back, and then
        every job waits for hours. Below Zoho's floor, the pace slows further in proportion to
        how far under it the org is.
        """
        factor = 1.0
        if self._per_day is not None:
            factor = max(factor, demand_per_s * DAY_S / self._per_day)
        remaining = still_news(self._reading, now)
        if remaining is not None and remaining < self._floor:
            factor = max(factor, self._floor / max(remaining, 1))
        return factor

    def remaining(self, now: float, value: int) -> bool:
        """Zoho's X-API-CREDITS-REMAINING was seen; `stretch` slows down accordingly from now on.

        True when this reading starts a drop below the floor, so that the caller warns
        (`credits.low`) once per drop. A drop is over once a reading is RECOVERED times the floor,
        or no reading has come for REMAINING_TTL_S.
        """
        previous, self._reading = self._reading, (now, value)
        if value >= self._floor:
            self._low = self._low and value < self._floor * RECOVERED
            return False
        ongoing = self._low and still_news(previous, now) is not None
        self._low = True
        return not ongoing

    def _forget(self, now: float) -> None:
        """Drop credits spent 24 hours ago or more: they no longer count, and memory stays small."""
        while self._spent and self._spent[0] + DAY_S <= now:
            self._spent.popleft()


def still_news(reading: tuple[float, int] | None, now: float) -> int | None:
    """The credits a reading (seen at, remaining) says are left, while it is younger than
    REMAINING_TTL_S; None for no reading, or one that old."""
    if reading is None or now - reading[0] >= REMAINING_TTL_S:
        return None
    return reading[1]


class Demand:
    """How many polls per second the tracked jobs would make at their planned gaps.

    Kept up to date one job at a time, so `stretch` needs no pass over all jobs.
    """

    def __init__(self) -> None:
        self._gaps: dict[object, float] = {}
        self.per_s = 0.0

    def plan(self, key: object, gap: float) -> None:
        self.drop(key)
        self._gaps[key] = gap
        self.per_s += 1.0 / gap

    def drop(self, key: object) -> None:
        gap = self._gaps.pop(key, None)
        if gap is not None:
            self.per_s = max(0.0, self.per_s - 1.0 / gap)


class Pace(Generic[K]):
    """When each job's next poll was planned, from what gap and stretch.

    A stretched gap can be hours long (a reading far below the floor, a small budget shared by
    many jobs). When the stretch falls again (credits recovered, a reading expired, jobs ended, a
    reload lifted the budget), a job already parked under the old one would otherwise wait out
    its whole gap, and see its end that late. `sooner` names the jobs to bring forward.
    """

    def __init__(self) -> None:
        self._plans: dict[K, tuple[float, float, float]] = {}  # key: (at, gap, due)
        self._highest = 1.0  # no plan is stretched more than this

    def plan(self, key: K, now: float, gap: float, stretch: float) -> float:
        """Record the next poll of `key`, `gap` stretched by `stretch` from `now`; its delay."""
        delay = gap * stretch
        self._plans[key] = (now, gap, now + delay)
        self._highest = max(self._highest, stretch)
        return delay

    def drop(self, key: K) -> None:
        self._plans.pop(key, None)

    def sooner(self, now: float, stretch: float) -> list[tuple[K, float]]:
        """The jobs due later than `stretch` now asks, each with its new delay from `now`. Only
        a clear fall is acted on, so a stretch that wavers with demand costs no pass. A job due
        by now is left alone: it is being polled, or about to be, and must not be twice."""
        if stretch * RELAXED > self._highest:
            return []
        self._highest = stretch
        moved = []
        for key, (at, gap, due) in self._plans.items():
            sooner = at + gap * stretch
            if now < due and sooner < due:
                self._plans[key] = (at, gap, sooner)
                moved.append((key, max(0.0, sooner - now)))
        return moved
