"""The credit budget on a virtual clock: the rolling-24 h limit, even pacing, Zoho's floor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.clock import to_monotonic
from watcher.credits import DAY_S, REMAINING_TTL_S, CreditBudget, Pace

HOUR = 3_600.0


@given(
    st.integers(1, 50),
    st.lists(st.floats(0.0, 3 * DAY_S / 50), min_size=1, max_size=300),
)
def test_requests_that_honour_wait_never_exceed_the_budget_in_any_24_hours(
    per_day: int, gaps: list[float]
) -> None:
    budget = CreditBudget(per_day, floor=0)
    sent: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        now += budget.wait(now)
        assert budget.wait(now) == 0.0
        budget.spend(now)
        sent.append(now)
    for start in sent:
        assert sum(1 for at in sent if start <= at < start + DAY_S) <= per_day


def test_wait_is_the_time_until_the_oldest_credit_ages_out() -> None:
    budget = CreditBudget(3, floor=0)
    for at in (0.0, 10.0, 20.0):
        budget.spend(at)
    assert budget.wait(100.0) == pytest.approx(DAY_S - 100.0)
    assert budget.wait(DAY_S) == 0.0
    budget.spend(DAY_S)
    assert budget.wait(DAY_S) == pytest.approx(10.0)


@given(
    st.integers(1, 50),
    st.lists(st.floats(-DAY_S, 0.0), max_size=60).map(sorted),
    st.floats(0.0, DAY_S),
    st.lists(st.floats(0.0, DAY_S / 10), min_size=1, max_size=100),
)
def test_credits_spent_before_a_restart_count_for_the_rest_of_their_24_hours(
    per_day: int, before: list[float], set_back: float, gaps: list[float]
) -> None:
    """The run before sent up to the restart (at 0.0) honouring its budget; the wall clock may
    have been set back since. With what it spent carried over, every 24 hours keep the budget.
    (Times in real seconds; the new run's monotonic clock reads 5.0 at the restart.)"""
    sent: list[float] = []
    budget = CreditBudget(per_day, floor=0)
    for at in before:
        if budget.wait(at) == 0.0:
            budget.spend(at)
            sent.append(at)
    resumed = CreditBudget(per_day, floor=0, spent_before=to_monotonic(sent, -set_back, 5.0, DAY_S))
    now = 5.0
    for gap in gaps:
        now += gap
        now += resumed.wait(now)
        resumed.spend(now)
        sent.append(now - 5.0)
    for start in sent:
        assert sum(1 for at in sent if start <= at < start + DAY_S) <= per_day


def test_each_credit_spent_under_a_budget_is_told_to_be_kept() -> None:
    kept: list[str] = []
    budget = CreditBudget(None, floor=0, on_spend=lambda: kept.append("credit"))
    budget.spend(1.0)  # no budget: nothing to keep
    budget.configure(10, floor=0)
    budget.spend(2.0)
    budget.spend(3.0)
    assert kept == ["credit", "credit"]


def test_credits_carried_over_are_those_of_the_last_24_hours_on_the_new_clock() -> None:
    wall = 1_000_000.0
    spent = [wall - DAY_S - 1.0, wall - HOUR, wall - 10.0, wall + 50.0]  # the last: clock went back
    assert to_monotonic(spent, wall, now=7.0, within=DAY_S) == [7.0 - HOUR, -3.0, 7.0]


def test_without_a_budget_nothing_waits_or_stretches() -> None:
    budget = CreditBudget(None, floor=0)
    for _ in range(10_000):
        budget.spend(0.0)
    assert budget.wait(0.0) == 0.0
    assert budget.stretch(0.0, demand_per_s=1_000.0) == 1.0


def test_stretch_slows_every_job_to_the_pace_the_budget_can_sustain() -> None:
    budget = CreditBudget(8_640, floor=0)  # one credit every 10 s
    assert budget.stretch(0.0, demand_per_s=0.05) == 1.0
    assert budget.stretch(0.0, demand_per_s=0.1) == pytest.approx(1.0)
    assert budget.stretch(0.0, demand_per_s=1.0) == pytest.approx(10.0)


def test_below_the_floor_zoho_reports_slow_down_in_proportion() -> None:
    budget = CreditBudget(None, floor=1_000)
    assert budget.remaining(0.0, 2_000) is False
    assert budget.stretch(0.0, demand_per_s=1.0) == 1.0
    assert budget.remaining(10.0, 250) is True
    assert budget.stretch(10.0, demand_per_s=1.0) == 4.0
    assert budget.remaining(20.0, 0) is False  # the same drop: said once
    assert budget.stretch(20.0, demand_per_s=1.0) == 1_000.0


def test_a_drop_is_said_once_and_again_only_after_a_recovery_or_a_silence() -> None:
    budget = CreditBudget(None, floor=1_000)
    # Answers to requests sent around the drop may come back out of order, around the floor.
    assert [budget.remaining(t, v) for t, v in [(0, 999), (1, 1_000), (2, 998)]] == [
        True,
        False,
        False,
    ]
    assert budget.remaining(3.0, 1_100) is False  # Zoho's daily reset, say: the drop is over
    assert budget.remaining(4.0, 900) is True
    later = 4.0 + REMAINING_TTL_S  # no reading for that long: usage fell, and now rises again
    assert budget.remaining(later, 800) is True


def test_the_stricter_of_budget_and_floor_wins_rather_than_both() -> None:
    budget = CreditBudget(8_640, floor=1_000)
    budget.remaining(0.0, 500)
    assert budget.stretch(0.0, demand_per_s=0.3) == pytest.approx(3.0)
    assert budget.stretch(0.0, demand_per_s=0.1) == pytest.approx(2.0)


def test_a_low_reading_stops_applying_once_none_has_come_for_a_while() -> None:
    budget = CreditBudget(None, floor=1_000)
    budget.remaining(0.0, 100)
    assert budget.stretch(REMAINING_TTL_S - 1.0, demand_per_s=1.0) == 10.0
    assert budget.stretch(REMAINING_TTL_S, demand_per_s=1.0) == 1.0


def test_memory_holds_only_the_last_24_hours() -> None:
    budget = CreditBudget(100_000, floor=0)
    for n in range(48 * 60):
        budget.spend(n * 60.0)
    assert len(budget._spent) == 24 * 60


@pytest.mark.parametrize(("per_day", "floor"), [(0, 10), (-5, 10), (10, -1)])
def test_nonsense_settings_are_refused(per_day: int, floor: int) -> None:
    with pytest.raises(ValueError, match="must"):
        CreditBudget(per_day, floor)


def test_waiting_as_long_as_wait_says_is_always_enough() -> None:
    """A request that waited as told must then fit, not find itself a rounding error short and
    wait again (these times once came out so)."""
    budget = CreditBudget(1, floor=0)
    budget.spend(910.9877835080679)
    now = 19_311.439830767114
    told = budget.wait(now)
    assert told > 0
    assert budget.wait(now + told) == 0.0


def test_a_budget_lowered_below_what_was_spent_waits_until_enough_credits_age_out() -> None:
    """After a reload from 3 to 2 credits a day with 3 spent, one more fits only once two of
    them are older than 24 hours, not the oldest alone."""
    budget = CreditBudget(3, floor=0)
    for at in (0.0, 1.0, 2.0):
        budget.spend(at)
    budget.configure(2, floor=0)
    assert budget.wait(10.0) == pytest.approx(DAY_S + 1.0 - 10.0)
    assert budget.wait(DAY_S + 1.0 + 1e-3) == 0.0


def test_after_a_fall_of_the_stretch_a_small_waver_moves_no_job() -> None:
    """Once a clear fall was acted on, the plans made since are the ones to compare with: a
    stretch that then wavers by a few percent must not cost a pass over every job."""
    pace: Pace[str] = Pace()
    pace.plan("parked", now=0.0, gap=100.0, stretch=4.0)
    assert [key for key, _ in pace.sooner(now=1.0, stretch=1.0)] == ["parked"]
    pace.plan("wavered", now=10.0, gap=100.0, stretch=1.05)
    assert pace.sooner(now=11.0, stretch=1.0) == []
