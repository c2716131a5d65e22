"""The poll schedule: its bounds and properties on a virtual clock, and what it estimates."""

from __future__ import annotations

import itertools
import math
from collections import deque

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.schedule import SAMPLES_KEPT, Estimate, Sample, estimate, next_delay, resume_delay

INTERVAL, MAX_INTERVAL = 10.0, 300.0


def delay(samples: list[Sample], schedule: str = "adaptive") -> float:
    return next_delay(samples, INTERVAL, MAX_INTERVAL, schedule)


def steady(times: list[float], total: int = 10_000, per_s: float = 10.0) -> list[Sample]:
    return [Sample(at, "RUNNING", math.floor(at * per_s), total) for at in times]


counts = st.none() | st.integers(0, 10**6)
samples = st.lists(
    st.builds(
        Sample,
        at=st.floats(-1e6, 1e6, allow_nan=False),
        status=st.sampled_from(["SCHEDULED", "RUNNING"]),
        done=counts,
        total=counts,
    ),
    max_size=SAMPLES_KEPT,
)
bounds = st.tuples(st.floats(0.01, 3600.0), st.floats(1.0, 100.0)).map(
    lambda pair: (pair[0], pair[0] * pair[1])
)


@given(samples, bounds, st.sampled_from(["adaptive", "fixed"]))
def test_the_delay_stays_within_interval_and_max_interval(
    history: list[Sample], limits: tuple[float, float], schedule: str
) -> None:
    interval, max_interval = limits
    assert interval <= next_delay(history, interval, max_interval, schedule) <= max_interval


@given(samples, bounds)
def test_fixed_is_always_the_interval(history: list[Sample], limits: tuple[float, float]) -> None:
    assert next_delay(history, *limits, "fixed") == limits[0]


@given(bounds, st.sampled_from(["SCHEDULED", "RUNNING"]), st.none() | st.integers(0, 100))
def test_without_progress_the_gap_widens_steadily_to_max_interval(
    limits: tuple[float, float], status: str, done: int | None
) -> None:
    interval, max_interval = limits
    history: deque[Sample] = deque(maxlen=SAMPLES_KEPT)
    now, gaps = 0.0, []
    for _ in range(40):
        history.append(Sample(now, status, done, None if done is None else 100))
        gaps.append(next_delay(history, interval, max_interval, "adaptive"))
        now += gaps[-1]
    assert gaps == sorted(gaps)
    assert gaps[0] == interval
    assert gaps[-1] == max_interval
    assert all(later <= 1.5 * earlier * (1 + 1e-9) for earlier, later in itertools.pairwise(gaps))


@given(
    interval=st.floats(1.0, 60.0),
    widening=st.floats(1.0, 30.0),
    duration=st.floats(1.0, 20_000.0),
    already=st.floats(0.0, 0.99),
    per_s=st.floats(0.1, 1000.0),
)
def test_a_steady_job_is_seen_done_within_one_interval_of_its_finish(
    interval: float, widening: float, duration: float, already: float, per_s: float
) -> None:
    """Counts are whole records, so the finish is only known to within one record's time."""
    total = max(1, round(duration * per_s))
    started = -already * duration
    finish = started + duration
    history: deque[Sample] = deque(maxlen=SAMPLES_KEPT)
    now = 0.0
    while now < finish:
        history.append(
            Sample(now, "RUNNING", math.floor(total * (now - started) / duration), total)
        )
        now += next_delay(history, interval, interval * widening, "adaptive")
    assert now - finish <= interval + duration / total


def test_a_long_steady_job_costs_a_few_calls_per_max_interval() -> None:
    history: deque[Sample] = deque(maxlen=SAMPLES_KEPT)
    now, polls, finish = 0.0, 0, 3600.0
    while now < finish:
        history.append(steady([now], total=36_000)[0])
        now += delay(list(history))
        polls += 1
    assert polls <= finish / MAX_INTERVAL + 8  # a fixed 10 s schedule would poll 360 times
    assert now - finish <= INTERVAL


def test_the_estimate_of_a_steady_job_predicts_its_finish() -> None:
    seen = estimate(steady([0.0, 10.0, 30.0, 70.0]))
    assert seen.progress == pytest.approx(0.07)
    assert seen.eta_s == pytest.approx(930.0)


def test_the_first_gaps_look_only_a_little_further_ahead_than_the_pace_was_watched() -> None:
    assert delay(steady([0.0, 10.0])) == INTERVAL  # one gap is no evidence of pace
    history = steady([0.0, 10.0, 20.0])
    assert estimate(history).eta_s == pytest.approx(980.0)
    assert delay(history) == 40.0


def test_an_uncertain_prediction_polls_before_it_and_a_firm_one_just_after() -> None:
    times = [0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0, 210.0]
    firm = steady(times, total=2_400)
    noisy = [
        Sample(at, "RUNNING", done, 3_000)
        for at, done in zip(times, [0, 100, 700, 900, 1_000, 1_600, 1_700, 2_000], strict=True)
    ]
    assert estimate(firm).eta_s == pytest.approx(30.0)
    assert 30.0 < delay(firm) <= 30.0 + INTERVAL / 2
    assert estimate(noisy).eta_s == pytest.approx(50.0)  # at the best pace seen: 600 in 30 s
    assert INTERVAL < delay(noisy) < 50.0 / 2


def test_a_stall_does_not_drag_the_prediction_once_the_job_resumes() -> None:
    times = [0.0, 10.0, 20.0, 40.0, 80.0, 120.0]
    done = [0, 100, 200, 200, 200, 600]
    history = [Sample(at, "RUNNING", count, 10_000) for at, count in zip(times, done, strict=True)]
    assert estimate(history).eta_s == pytest.approx(9_400 / 10.0)


def test_no_pace_is_measured_across_a_change_of_status() -> None:
    history = [Sample(0.0, "SCHEDULED", 0, 1_000), Sample(10.0, "RUNNING", 500, 1_000)]
    assert estimate(history) == Estimate(progress=0.5, eta_s=None)
    assert delay(history) == INTERVAL


def test_unknown_counts_give_no_estimate_and_a_widening_gap() -> None:
    history = [Sample(at, "RUNNING", None, None) for at in (0.0, 10.0, 20.0, 30.0)]
    assert estimate(history) == Estimate(None, None)
    assert delay(history) == 15.0


def test_an_empty_history_polls_at_the_interval() -> None:
    assert estimate([]) == Estimate(None, None)
    assert delay([]) == INTERVAL


def test_an_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown schedule 'eager'"):
        delay([], "eager")


def resumed(last_seen: float | None, next_poll_at: float | None, now: float = 1000.0) -> float:
    return resume_delay(last_seen, next_poll_at, now, INTERVAL)


def test_a_resumed_job_is_polled_when_the_run_before_planned_it() -> None:
    assert resumed(None, None) == 0.0  # never seen: at once
    assert resumed(990.0, 1100.0) == 100.0  # planned 100 s after the restart
    assert resumed(990.0, 4590.0) == 3590.0  # an hour's gap, stretched to a budget: kept
    assert resumed(700.0, 900.0) == 0.0  # overdue: at once


def test_a_plan_from_a_file_that_kept_none_comes_an_interval_after_the_job_was_last_seen() -> None:
    assert resumed(997.0, None) == 7.0  # seen 3 s before the restart
    assert resumed(900.0, None) == 0.0  # overdue: at once


@given(
    last_seen=st.floats(-1e9, 1e9),
    gap=st.floats(0.0, 1e6),
    now=st.floats(-1e9, 1e9),
    interval=st.floats(0.01, 1e5),
)
def test_a_resumed_job_waits_no_longer_than_its_plan_whatever_the_clock_did(
    last_seen: float, gap: float, now: float, interval: float
) -> None:
    """A wall clock stepped back puts the plan further off than it was made: no longer wait
    for all that."""
    assert 0.0 <= resume_delay(last_seen, last_seen + gap, now, interval) <= gap + 1e-6
    assert 0.0 <= resume_delay(last_seen, None, now, interval) <= interval


def test_a_stall_after_progress_is_looked_at_again_soon() -> None:
    """The widening gap counts from when the counts stopped moving, not from the status change:
    half of the 100 s stalled, not half of the 300 s RUNNING."""
    history = [
        Sample(at, "RUNNING", done, 10_000)
        for at, done in [(0.0, 0), (100.0, 100), (200.0, 200), (300.0, 200)]
    ]
    assert next_delay(history, 10.0, 300.0, "adaptive") == 50.0


def test_no_pace_is_measured_across_counts_that_went_back() -> None:
    history = [
        Sample(at, "RUNNING", done, 1_000)
        for at, done in [(0.0, 0), (10.0, 500), (20.0, 100), (30.0, 200)]
    ]
    assert estimate(history).eta_s == pytest.approx(80.0)  # 800 left at 10/s, not at 50/s


def test_a_prediction_that_could_be_off_by_more_than_half_an_interval_is_polled_before_it() -> None:
    """Aimed after its predicted finish, a poll may be late by twice the doubt; once that is more
    than an interval, the finish would be seen later than the interval promises."""
    history = steady([0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0], total=1_300)
    assert estimate(history).eta_s == pytest.approx(60.0)  # doubt about 14 %: ± 8.7 s
    assert delay(history) < 60.0


def test_a_pace_measured_over_few_records_makes_a_less_firm_prediction() -> None:
    """Counts are whole records: 7 records done say less about the pace than 700 in the same
    time, so the poll comes earlier, to correct the prediction before the finish."""
    times = [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    few, many = steady(times, total=20, per_s=0.1), steady(times, total=2_000)
    assert estimate(few).eta_s == pytest.approx(estimate(many).eta_s)
    assert delay(few) < delay(many)


def test_a_stall_within_the_run_still_counts_as_time_the_pace_was_watched() -> None:
    """The lookahead grows with how long the pace was watched: a pause of the counts midway must
    not shrink that to the streak since, which would poll a long job more often than needed."""
    done = [0, 100, 100, 100, 100, 200, 300]
    history = [Sample(10.0 * n, "RUNNING", count, 10_000) for n, count in enumerate(done)]
    assert delay(history) == pytest.approx(2 * 60.0)  # not 2 x the 20 s since the stall


def test_two_samples_at_the_same_moment_do_not_crash_the_schedule() -> None:
    """Two answers can be stamped with the same clock reading; a pace over no time at all would
    divide by zero and stop the schedule."""
    history = [Sample(0.0, "RUNNING", 5, 100), Sample(10.0, "RUNNING", 5, 100)]
    history.append(Sample(10.0, "RUNNING", 6, 100))
    assert INTERVAL <= delay(history) <= MAX_INTERVAL
    assert estimate(history).progress == pytest.approx(0.06)


def test_counts_past_the_total_read_as_done_not_beyond() -> None:
    """Zoho's counts can overshoot the total; the job is then done, neither 120 % done nor due
    to finish in negative time."""
    history = [Sample(0.0, "RUNNING", 5, 10), Sample(10.0, "RUNNING", 12, 10)]
    assert estimate(history) == Estimate(progress=1.0, eta_s=0.0)


def test_a_job_of_no_records_has_no_progress_and_does_not_crash_the_estimate() -> None:
    """A mass update whose criteria match no records reports a total of 0: 0 of 0 is no
    fraction, and must not crash the estimate every event of the job carries."""
    history = [Sample(0.0, "RUNNING", 0, 0), Sample(10.0, "RUNNING", 0, 0)]
    assert estimate(history) == Estimate(None, None)
    assert delay(history) == INTERVAL
