"""A tracked job and what each answer does to it: pure logic, no I/O, time passed in.

`apply_answer` is the whole of the classification table of the design: given the job, the answer
to one poll and the settings, it updates the job and returns a `Decision` — the events to emit,
when to poll next (or never), whether every request must pause, whether the watcher must stop.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import NamedTuple

from watcher.backoff import backoff_delay
from watcher.classify import Answer, Counts, Observation
from watcher.config import JobSpec, PollingSettings
from watcher.events import Event
from watcher.schedule import SAMPLES_KEPT, Estimate, Sample, estimate, next_delay
from watcher.zoho_api import Effect, JobKind


@dataclass(slots=True)
class JobState:
    """What the watcher knows about one job.

    `added_at` is on the scheduler's monotonic clock (durations); the other times are epoch
    seconds, which keep their meaning across a restart.
    """

    spec: JobSpec
    added_at: float
    status: str | None = None
    counts: Counts = field(default_factory=dict)
    polls: int = 0
    failures: int = 0  # consecutive polls without a status row, for backoff
    not_found: int = 0  # consecutive "not found" answers
    outcome: str | None = None
    error: str | None = None  # Zoho's code when the outcome is not_found or rejected
    first_seen: float = 0.0
    last_seen: float | None = None
    next_poll_at: float | None = None  # when the next poll is planned; None once it has ended
    # The gap of the job's last plan from a status (its pace), before any stretch for the
    # credit budget; a retry's plan, a backoff, leaves it as it was.
    planned_gap: float | None = None
    emitted_status: str | None = None  # the status of the last job.status_changed that went out
    finished_at: float | None = None  # when job.finished went out
    samples: tuple[Sample, ...] = ()  # the latest SAMPLES_KEPT; a tuple: none costs nothing
    restored: int = 0  # how many of the first samples were kept from before a restart
    tenths_reported: int = 0  # the highest tenth of the total a job.progress event announced

    def fields(self) -> dict[str, object]:
        return {"module": self.spec.module, "job_id": self.spec.job_id}


class Decision(NamedTuple):
    """What the scheduler must do after a poll. `next_poll_in` is None once the job has ended."""

    events: tuple[Event, ...]
    next_poll_in: float | None
    pause_all_for: float | None = None
    fatal: bool = False


def apply_answer(
    job: JobState,
    answer: Answer,
    kind: JobKind,
    settings: PollingSettings,
    now: float,
    rng: random.Random,
    *,
    progress_events: bool = True,
    org_pause: float = 0.0,
) -> Decision:
    """Update `job` with the answer to one poll and decide what happens next. `org_pause`: how
    long a 429 answered now holds every request at least (`RequestGate.refusal_pause`)."""
    job.polls += 1
    if answer.effect is Effect.OBSERVED:
        assert answer.observation is not None
        return _observed(job, answer.observation, kind, settings, now, progress_events)
    if answer.effect is Effect.NOT_FOUND:
        job.not_found += 1
        if job.not_found >= settings.not_found_attempts:
            return _finish(job, "not_found", now, kind, error=answer.code)
    if answer.effect is Effect.REJECTED:
        return _finish(job, "rejected", now, kind, error=answer.code)
    if answer.effect is Effect.AUTH:
        event = Event("auth.failed", "error", {**job.fields(), "error": answer.code})
        return Decision((event,), next_poll_in=None, fatal=True)
    return _retry_later(job, answer, settings, rng, org_pause)


def _observed(
    job: JobState,
    observation: Observation,
    kind: JobKind,
    settings: PollingSettings,
    now: float,
    progress_events: bool,
) -> Decision:
    job.failures = 0
    job.not_found = 0
    sample = sample_of(observation.status, observation.counts, now, kind)
    _remember(job, sample)
    seen = estimate(job.samples)
    previous, job.status, job.counts = job.status, observation.status, observation.counts
    events = [status_changed(job, previous, seen)] if job.status != previous else []
    outcome = kind.terminal.get(observation.status)
    if outcome is not None:
        return _finish(job, outcome, now, kind, events)
    if progress_events:
        events.extend(_progress(job, seen, kind))
    delay = next_delay(job.samples, settings.interval, settings.max_interval, settings.schedule)
    return Decision(tuple(events), next_poll_in=delay)


def _remember(job: JobState, sample: Sample) -> None:
    """Add `sample` to the latest SAMPLES_KEPT. Those kept from before a restart go at the first
    change: they may widen an idle job's gaps, but a pace measured across the downtime would
    rest on a wall clock that may have been stepped meanwhile."""
    if job.restored and sample[1:] != job.samples[-1][1:]:
        job.samples, job.restored = job.samples[job.restored :], 0
    samples = (*job.samples, sample)
    if len(samples) > SAMPLES_KEPT:
        samples = samples[-SAMPLES_KEPT:]
        job.restored = max(0, job.restored - 1)
    job.samples = samples


def sample_of(status: str, counts: Counts, at: float, kind: JobKind) -> Sample:
    """What the schedule and the estimates read of a status row seen `at`."""
    return Sample(at, status, done_of(counts, kind), counts.get(kind.total))


def done_of(counts: Counts, kind: JobKind) -> int | None:
    """The records a job has processed so far, well or not: what its progress and its pace are
    measured in. None while the counts cannot say."""
    done = 0
    for name in kind.processed:
        if (count := counts.get(name)) is None:
            return None
        done += count
    return done


def status_changed(job: JobState, previous: str | None, seen: Estimate) -> Event:
    """The transition event from `previous` to the job's current status and counts."""
    fields = {
        **job.fields(),
        "previous_status": previous,
        "status": job.status,
        **job.counts,
        **_estimate_fields(seen),
    }
    return Event("job.status_changed", "info", fields)


def _progress(job: JobState, seen: Estimate, kind: JobKind) -> list[Event]:
    """One job.progress event when the job has crossed another tenth of its total since the last
    one, announcing only the highest when a poll jumps several: a heartbeat, not a flood."""
    tenths = tenths_done(job.counts, kind)
    if tenths <= job.tenths_reported:
        return []
    job.tenths_reported = tenths
    fields = {**job.fields(), **_estimate_fields(seen), **job.counts}
    return [Event("job.progress", "info", fields)]


def tenths_done(counts: Counts, kind: JobKind) -> int:
    """How many whole tenths of its total a job's counts say are done (0 when they cannot say).
    Whole numbers: 3 of 10 must count as 3 tenths, which 0.3 * 10 does not."""
    done, total = done_of(counts, kind), counts.get(kind.total)
    if done is None or not total:
        return 0
    return min(10, done * 10 // total)


def _estimate_fields(seen: Estimate) -> dict[str, object]:
    progress = None if seen.progress is None else round(seen.progress, 3)
    eta_s = None if seen.eta_s is None else round(seen.eta_s, 1)
    return {"progress": progress, "eta_s": eta_s}


def _finish(
    job: JobState,
    outcome: str,
    now: float,
    kind: JobKind,
    events: list[Event] | None = None,
    error: str | None = None,
) -> Decision:
    job.outcome = outcome
    job.error = error
    return Decision((*(events or ()), finished_event(job, now, kind)), next_poll_in=None)


def finished_event(job: JobState, now: float, kind: JobKind) -> Event:
    """The `job.finished` event of a job whose outcome is set; `now` on the monotonic clock."""
    fields: dict[str, object] = {
        **job.fields(),
        "outcome": job.outcome,
        "status": job.status,
        **job.counts,
        "polls": job.polls,
        "duration_s": round(now - job.added_at, 3),
    }
    if job.error is not None:
        fields["error"] = job.error
    return Event("job.finished", _finished_level(job, kind), fields)


def _finished_level(job: JobState, kind: JobKind) -> str:
    """Anything but a clean completion is worth a human's attention."""
    if job.outcome != "completed":
        return "error"
    return "warning" if job.counts.get(kind.failed) else "info"


def _retry_later(
    job: JobState,
    answer: Answer,
    settings: PollingSettings,
    rng: random.Random,
    org_pause: float,
) -> Decision:
    """Transient trouble, rate limiting or a not-yet-conclusive not-found: back off and retry.

    A Retry-After is honoured within `backoff_initial`…`backoff_max`: one odd header can neither
    park the watcher for days nor, saying 0, have it hammer a server that has just said it is
    too busy. A 429 pauses every job, this one too, for what it asked or the org's pause if
    longer: the limit is the org's. Never for this job's own backoff, which its earlier
    failures may have made long, and which would hold every other job as long.
    """
    job.failures += 1
    delay = backoff_delay(job.failures, settings.backoff_initial, settings.backoff_max, rng)
    if answer.retry_after is not None:
        delay = min(max(answer.retry_after, settings.backoff_initial), settings.backoff_max)
    pause = None
    if answer.effect is Effect.RATE_LIMITED:
        told = 0.0 if answer.retry_after is None else delay
        delay = pause = max(told, org_pause)
    fields: dict[str, object] = {
        **job.fields(),
        "error": answer.code,
        "http_status": answer.http_status,
        "attempt": job.failures,
        "retry_in_s": round(delay, 3),
    }
    event = Event("job.poll_failed", "warning", fields)
    return Decision((event,), next_poll_in=delay, pause_all_for=pause)
