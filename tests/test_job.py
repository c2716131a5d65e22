"""The classification table, row by row, on a virtual clock."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.kinds import MASS_CONVERT
from watcher.classify import Answer, Observation, classify
from watcher.config import JobSpec, PollingSettings
from watcher.job import Decision, JobState, apply_answer
from watcher.schedule import SAMPLES_KEPT, Sample
from watcher.zoho_api import MASS_UPDATE, Effect

SETTINGS = PollingSettings(
    interval=10.0, backoff_initial=1.0, backoff_max=60.0, not_found_attempts=3
)
COUNTS = {"failed_count": 0, "updated_count": 5, "not_updated_count": 0, "total_count": 10}


def new_job() -> JobState:
    return JobState(JobSpec("Leads", "1"), added_at=100.0)


def seen(status: str, **counts: int) -> Answer:
    return Answer(Effect.OBSERVED, 200, Observation(status, {**COUNTS, **counts}))


def apply(job: JobState, answer: Answer, now: float = 110.0) -> Decision:
    return apply_answer(job, answer, MASS_UPDATE, SETTINGS, now, random.Random(0))


def names(decision: Decision) -> list[str]:
    return [event.name for event in decision.events]


def test_first_observation_is_a_transition_from_nothing() -> None:
    decision = apply(new_job(), seen("RUNNING"))
    assert names(decision)[0] == "job.status_changed"
    assert decision.events[0].fields["previous_status"] is None
    assert decision.events[0].fields["updated_count"] == 5
    assert decision.next_poll_in == SETTINGS.interval


def test_a_repeated_status_within_the_same_tenth_emits_nothing() -> None:
    job = new_job()
    apply(job, seen("RUNNING"))
    decision = apply(job, seen("RUNNING", not_updated_count=3))
    assert decision.events == ()
    assert job.counts["not_updated_count"] == 3


def test_completed_ends_the_job_with_counts_and_duration() -> None:
    job = new_job()
    apply(job, seen("RUNNING"))
    decision = apply(job, seen("COMPLETED", updated_count=10), now=160.0)
    assert names(decision) == ["job.status_changed", "job.finished"]
    finished = decision.events[1]
    assert finished.level == "info"
    assert finished.fields["outcome"] == "completed"
    assert finished.fields["polls"] == 2
    assert finished.fields["duration_s"] == 60.0
    assert decision.next_poll_in is None


def test_completed_with_failures_is_a_warning_and_failed_an_error() -> None:
    warned = apply(new_job(), seen("COMPLETED", failed_count=2)).events[-1]
    failed = apply(new_job(), seen("FAILED")).events[-1]
    assert (warned.level, warned.fields["outcome"]) == ("warning", "completed")
    assert (failed.level, failed.fields["outcome"]) == ("error", "failed")


def test_not_found_finishes_after_the_configured_consecutive_answers() -> None:
    """The job is given up only after that many answers in a row, and its `job.finished` names
    Zoho's code as `error`, as the README promises for `not_found`: the user's clue to why."""
    job = new_job()
    gone = Answer(Effect.NOT_FOUND, 204, code="NO_CONTENT")
    first, second = apply(job, gone), apply(job, gone)
    assert names(first) == names(second) == ["job.poll_failed"]
    assert first.next_poll_in is not None
    assert second.next_poll_in is not None
    assert second.next_poll_in > first.next_poll_in * 0.8 * 1.5  # it backs off between them
    third = apply(job, gone)
    assert third.next_poll_in is None
    assert third.events[-1].fields["outcome"] == "not_found"
    assert third.events[-1].fields["error"] == "NO_CONTENT"


def test_a_status_row_resets_the_not_found_streak() -> None:
    job = new_job()
    gone = Answer(Effect.NOT_FOUND, 204, code="NO_CONTENT")
    apply(job, gone)
    apply(job, gone)
    apply(job, seen("SCHEDULED"))
    assert apply(job, gone).next_poll_in is not None


def test_rejection_ends_the_job_with_zoho_code() -> None:
    decision = apply(new_job(), Answer(Effect.REJECTED, 400, code="INVALID_MODULE"))
    assert decision.next_poll_in is None
    assert decision.events[-1].fields["outcome"] == "rejected"
    assert decision.events[-1].fields["error"] == "INVALID_MODULE"


def test_auth_failure_is_fatal() -> None:
    decision = apply(new_job(), Answer(Effect.AUTH, 401, code="INVALID_TOKEN"))
    assert decision.fatal
    assert names(decision) == ["auth.failed"]


def test_rate_limit_pauses_everybody_for_retry_after() -> None:
    decision = apply(new_job(), Answer(Effect.RATE_LIMITED, 429, code="X", retry_after=7.0))
    assert decision.pause_all_for == decision.next_poll_in == 7.0


def test_a_429_pauses_every_job_for_the_orgs_pause_not_this_jobs_own_backoff() -> None:
    """A job whose earlier failures made its backoff long must not hold the whole org for it."""
    job = new_job()
    job.failures = 5  # timeouts, say: its own next backoff is 32 s (jittered)
    limited = Answer(Effect.RATE_LIMITED, 429, code="X")
    decision = apply_answer(
        job, limited, MASS_UPDATE, SETTINGS, 110.0, random.Random(0), org_pause=1.5
    )
    assert decision.pause_all_for == decision.next_poll_in == 1.5  # it waits as every job does


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [(86_400.0, SETTINGS.backoff_max), (0.0, SETTINGS.backoff_initial)],
)
def test_retry_after_is_held_within_the_backoff_bounds(retry_after: float, delay: float) -> None:
    decision = apply(new_job(), Answer(Effect.RATE_LIMITED, 429, retry_after=retry_after))
    assert decision.next_poll_in == delay
    assert decision.pause_all_for == delay


def test_transient_failures_back_off_and_a_success_resets() -> None:
    job = new_job()
    failure = Answer(Effect.TRANSIENT, 503, code="http_503")
    delays = [apply(job, failure).next_poll_in for _ in range(4)]
    assert delays == sorted(delays)
    event = apply(job, failure).events[0]
    assert event.fields["attempt"] == 5
    assert event.fields["http_status"] == 503
    apply(job, seen("RUNNING"))
    assert job.failures == 0
    assert apply(job, failure).events[0].fields["attempt"] == 1


statuses = st.sampled_from(["SCHEDULED", "RUNNING", "COMPLETED", "FAILED"])


@given(st.lists(statuses, min_size=1, max_size=30))
def test_exactly_one_event_per_real_transition(sequence: list[str]) -> None:
    job = new_job()
    emitted: list[tuple[object, object]] = []
    for status in sequence:
        decision = apply(job, seen(status))
        emitted += [
            (e.fields["previous_status"], e.fields["status"])
            for e in decision.events
            if e.name == "job.status_changed"
        ]
        if decision.next_poll_in is None:
            break
    observed = sequence[: job.polls]
    expected = [
        (before, after)
        for before, after in zip([None, *observed], observed, strict=False)
        if before != after
    ]
    assert emitted == expected


def running(done: int, total: int = 1_000) -> Answer:
    return seen("RUNNING", updated_count=done, total_count=total)


def progress_events(decision: Decision) -> list[object]:
    return [e.fields["progress"] for e in decision.events if e.name == "job.progress"]


def test_status_changed_carries_progress_and_eta() -> None:
    job = new_job()
    first = apply(job, running(100), now=100.0).events[0]
    assert (first.fields["progress"], first.fields["eta_s"]) == (0.1, None)
    apply(job, running(200), now=110.0)
    done = apply(job, seen("COMPLETED", updated_count=1_000, total_count=1_000), now=120.0)
    assert done.events[0].fields["progress"] == 1.0
    assert done.events[0].fields["eta_s"] is None  # no pace is measured across a status change


def test_a_progress_event_for_each_tenth_crossed_and_one_for_a_jump() -> None:
    job = new_job()
    emitted = []
    for now, done in enumerate([0, 50, 99, 100, 150, 199, 200, 450, 460, 1_000]):
        emitted += progress_events(apply(job, running(done), now=100.0 + 10 * now))
    assert emitted == [0.1, 0.2, 0.45, 1.0]


def test_a_progress_event_has_counts_and_eta() -> None:
    job = new_job()
    apply(job, running(0), now=100.0)
    (event,) = [e for e in apply(job, running(100), now=110.0).events if e.name == "job.progress"]
    assert event.fields["eta_s"] == 90.0
    assert event.fields["updated_count"] == 100
    assert event.fields["job_id"] == "1"


def test_progress_events_can_be_turned_off() -> None:
    job = new_job()
    for now, done in enumerate([0, 300, 600, 900]):
        decision = apply_answer(
            job,
            running(done),
            MASS_UPDATE,
            SETTINGS,
            now * 10.0,
            random.Random(0),
            progress_events=False,
        )
        assert progress_events(decision) == []


def test_the_final_status_row_ends_the_job_without_a_progress_event() -> None:
    job = new_job()
    apply(job, running(500))
    assert progress_events(apply(job, seen("COMPLETED", updated_count=10, total_count=10))) == []


def test_the_job_keeps_a_bounded_history() -> None:
    """At no poll more than SAMPLES_KEPT: the schedule reads them all, and the state file keeps
    them for each of thousands of jobs."""
    job = new_job()
    for n in range(100):
        apply(job, running(n), now=100.0 + n)
        assert len(job.samples) <= SAMPLES_KEPT
    assert len(job.samples) == SAMPLES_KEPT
    assert job.samples[-1].done == 99


def test_a_waiting_job_is_polled_less_and_less_often_unless_the_schedule_is_fixed() -> None:
    adaptive, fixed = new_job(), new_job()
    gaps: dict[str, list[float]] = {"adaptive": [], "fixed": []}
    for job, schedule in ((adaptive, "adaptive"), (fixed, "fixed")):
        now = 100.0
        for _ in range(8):
            decision = apply_answer(
                job,
                seen("SCHEDULED"),
                MASS_UPDATE,
                replace(SETTINGS, schedule=schedule),
                now,
                random.Random(0),
            )
            assert decision.next_poll_in is not None
            gaps[schedule].append(decision.next_poll_in)
            now += decision.next_poll_in
    assert gaps["fixed"] == [SETTINGS.interval] * 8
    assert gaps["adaptive"][0] == SETTINGS.interval
    assert gaps["adaptive"][-1] > 3 * SETTINGS.interval


def test_counts_past_the_total_announce_no_progress_beyond_the_whole() -> None:
    job = JobState(JobSpec("Leads", "1"), added_at=0.0)
    progress = []
    for at, done in ((0.0, 1_000), (10.0, 1_100)):
        counts = {"failed_count": 0, "updated_count": done, "not_updated_count": 0}
        observation = Observation("RUNNING", {**counts, "total_count": 1_000})
        answer = Answer(Effect.OBSERVED, 200, observation)
        decision = apply_answer(job, answer, MASS_UPDATE, PollingSettings(), at, random.Random(0))
        progress += [e for e in decision.events if e.name == "job.progress"]
    assert len(progress) == 1  # the whole, announced once


def test_samples_kept_from_before_a_restart_widen_gaps_but_make_no_pace() -> None:
    """Until the counts change they are the job's idle time; then they go, for a pace across
    the downtime would rest on a wall clock that may have been stepped (an eta of 12 s where
    6,000 were left)."""
    settings = PollingSettings()
    kept = tuple(Sample(at, "RUNNING", 200, 100_000) for at in (0.0, 10.0, 20.0))
    job = JobState(JobSpec("Leads", "1"), added_at=0.0, status="RUNNING", samples=kept)
    job.restored = len(kept)

    def seen(at: float, done: int) -> Decision:
        counts = {"failed_count": 0, "updated_count": done, "total_count": 100_000}
        answer = Answer(Effect.OBSERVED, 200, Observation("RUNNING", counts))
        return apply_answer(job, answer, MASS_UPDATE, settings, at, random.Random(0))

    seen(3_600.0, 200)  # an hour later, unchanged: idle all that time
    assert (len(job.samples), job.restored) == (4, 3)
    seen(3_610.0, 6_330)
    assert [s.at for s in job.samples] == [3_600.0, 3_610.0]  # this run's alone
    assert job.restored == 0


def test_this_runs_samples_survive_the_first_change_after_the_restored_ones_aged_out() -> None:
    """The samples kept from a restart go at the first change; once the window has dropped them
    all, that change must drop none of this run's, the pace the next poll is planned by."""
    kept = tuple(Sample(at, "RUNNING", 100, 1_000) for at in (0.0, 1.0, 2.0))
    job = JobState(JobSpec("Leads", "1"), added_at=0.0, status="RUNNING", samples=kept)
    job.restored = len(kept)
    unchanged = [10.0 * n for n in range(1, SAMPLES_KEPT + 1)]
    for now in unchanged:  # the restored samples age out of the window
        apply(job, running(100), now=now)
    apply(job, running(200), now=100.0)
    assert [s.at for s in job.samples] == [*unchanged[1:], 100.0]
    assert job.restored == 0


def converting(status: str, converted: int, lost: int) -> Answer:
    row = {
        "Status": status,
        "Converted_Count": converted,
        "Not_Converted_Count": 100 - converted - lost,
        "Failed_Count": lost,
        "Total_Count": 100,
    }
    return classify(MASS_CONVERT, 200, {}, json.dumps({"data": [row]}).encode(), 0.0)


def test_another_kind_of_job_is_a_row_its_counts_read_by_their_roles() -> None:
    job = new_job()

    def step(answer: Answer, now: float) -> Decision:
        return apply_answer(job, answer, MASS_CONVERT, SETTINGS, now, random.Random(0))

    running = step(converting("IN PROGRESS", 25, 5), 110.0)
    assert names(running) == ["job.status_changed", "job.progress"]
    assert running.events[0].fields["progress"] == 0.3  # (converted + lost) / all
    assert running.events[0].fields["converted_count"] == 25
    assert [e.fields["progress"] for e in step(converting("IN PROGRESS", 45, 5), 120.0).events] == [
        0.5
    ]
    finished = step(converting("COMPLETED", 95, 5), 130.0).events[-1]
    assert (finished.name, finished.fields["outcome"]) == ("job.finished", "completed")
    assert finished.level == "warning"  # lost_count is its failed count


def test_a_clean_completion_of_another_kind_is_no_warning() -> None:
    job = new_job()
    done = apply_answer(
        job, converting("COMPLETED", 100, 0), MASS_CONVERT, SETTINGS, 0.0, random.Random(0)
    )
    assert done.events[-1].level == "info"


@pytest.mark.parametrize(
    "change",
    [
        {"terminal": {"DONE": "completed"}},  # a final status the row does not list
        {"processed": ("converted_count", "failed_count")},  # a count it does not define
        {"processed": ()},  # progress measured in nothing
        {"total": "total_count"},
        {"failed": "failed_count"},
    ],
)
def test_a_row_naming_what_it_does_not_define_is_refused_when_written(
    change: dict[str, object],
) -> None:
    with pytest.raises(ValueError, match="not all in"):
        replace(MASS_CONVERT, **change)


def test_a_429_holds_the_job_for_the_orgs_pause_and_says_so() -> None:
    """Met in a storm, a job waits out the org's longer pause: its next poll is said as it is."""
    job = new_job()
    limited = Answer(Effect.RATE_LIMITED, 429, None)
    decision = apply_answer(
        job, limited, MASS_UPDATE, SETTINGS, 110.0, random.Random(0), org_pause=7.5
    )
    assert decision.next_poll_in == decision.pause_all_for == 7.5
    assert decision.events[0].fields["retry_in_s"] == 7.5
    failed = Answer(Effect.TRANSIENT, 500, None)  # no 429: the org is not paused for it
    decision = apply_answer(
        job, failed, MASS_UPDATE, SETTINGS, 110.0, random.Random(0), org_pause=7.5
    )
    assert decision.next_poll_in is not None
    assert decision.next_poll_in < 7.5
