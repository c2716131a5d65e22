"""When to poll a job next, from what its polls have shown so far: pure, no I/O, no clock.

Every poll spends one of the org's API credits, so the adaptive schedule spends them where they
tell us something. While a job makes progress, the rate at which its done count approaches its
total predicts the finish, and the next poll goes there — a little early while the prediction is
shaky, so it can be corrected, or a little late once it is firm, so the finish is seen at once. A
job that shows no progress (still SCHEDULED, or stalled) is asked again after a gap that grows with
how long nothing has changed. Every gap stays within [interval, max_interval], which bounds how
late a finish is seen whatever the job does.

Status names never appear here: a change of status is just a change, so the same rules serve every
kind of Zoho job.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import NamedTuple

SCHEDULES = ("adaptive", "fixed")

# How many samples a job keeps: enough to see through noisy progress over the last few gaps, few
# enough that a change of pace (a stall, a resumption) soon dominates.
SAMPLES_KEPT = 8

# Without progress the next gap is this share of the time nothing has changed: the gaps grow by
# half each poll (from 10 s to 5 min in about a dozen), and a job that resumes and ends is seen
# within half of the time it had stood still.
WIDEN = 0.5

# With progress, never aim further ahead than this many times the span the pace was measured over:
# a pace seen for ten seconds says little about the next ten minutes.
LOOKAHEAD = 2.0

# Relative doubt about a pace measured over n gaps is at least this over n: one gap alone is no
# evidence of pace, and the doubt shrinks as more gaps agree.
FEW_GAPS_DOUBT = 1.0


class Sample(NamedTuple):
    """One status row; `done` (Updated_Count + Failed_Count) and `total` are None when unknown."""

    at: float  # seconds on the caller's clock (monotonic or virtual)
    status: str
    done: int | None
    total: int | None


class Estimate(NamedTuple):
    progress: float | None  # 0..1, None when unknown
    eta_s: float | None  # predicted seconds from the last sample to the finish, None if unknown


class _Fit(NamedTuple):
    """The job's pace over its recent samples: a prediction and how far to trust it."""

    eta_s: float  # seconds from the last sample to the finish, at the best pace seen lately
    doubt: float  # relative uncertainty of eta_s (0.1 means ±10 %)
    watched_s: float  # the span of samples the pace was measured over
    progressing: bool  # the last gap showed progress


def estimate(samples: Sequence[Sample]) -> Estimate:
    """How far along the job is and when it should end, for events and for the schedule."""
    if not samples:
        return Estimate(None, None)
    fit = _fit(samples)
    return Estimate(_progress(samples[-1]), None if fit is None else fit.eta_s)


def next_delay(
    samples: Sequence[Sample], interval: float, max_interval: float, schedule: str
) -> float:
    """Seconds until the next poll, always within [interval, max_interval]."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r} (expected one of {', '.join(SCHEDULES)})")
    if schedule == "fixed" or not samples:
        return interval
    fit = _fit(samples)
    if fit is None or not fit.progressing:
        delay = WIDEN * _unchanged_for(samples)
    else:
        delay = min(_aim(fit, interval), LOOKAHEAD * fit.watched_s)
    return min(max_interval, max(interval, delay))


def resume_delay(
    last_seen: float | None, next_poll_at: float | None, now: float, interval: float
) -> float:
    """Seconds until the first poll of a job a run starts with (times in epoch seconds).

    One a restart resumes is polled when the run before planned it, as if the watcher had not
    stopped: otherwise every restart would spend a credit per job, and a crash loop, or a rolling
    update of a watcher of ten thousand jobs, would spend a small org's day. That plan may be
    hours long (a retry Zoho asked for, gaps stretched to the credit budget); it is kept, but a
    wall clock set back meanwhile makes it no longer than it was. A file from before plans were
    kept: `interval` after the job was last seen. A job never seen: at once.
    """
    if last_seen is None:
        return 0.0
    if next_poll_at is not None:
        return min(max(0.0, next_poll_at - last_seen), max(0.0, next_poll_at - now))
    return min(interval, max(0.0, last_seen + interval - now))


def _aim(fit: _Fit, interval: float) -> float:
    """Just after the predicted finish once it is firm enough that a miss stays within
    `interval`; until then early by the doubt, to poll again with a better prediction.

    A poll that comes early costs one call and is followed `interval` later at most, so the
    finish is still seen within `interval`; a late one is late by its whole error.
    """
    spread = fit.eta_s * fit.doubt
    if 2.0 * spread <= interval:
        return fit.eta_s + spread
    return fit.eta_s - spread


def _progress(sample: Sample) -> float | None:
    if sample.done is None or not sample.total:
        return None
    return min(1.0, sample.done / sample.total)


def _fit(samples: Sequence[Sample]) -> _Fit | None:
    """The pace over the latest run of comparable samples; None while it cannot be told."""
    last = samples[-1]
    if last.done is None or last.total is None or len(samples) < 2:  # one sample shows no pace
        return None
    run = _comparable_run(samples, last.done)
    (started, first_done), (ended, last_done) = run[0], run[-1]
    if last_done == first_done:
        return None
    rates = [_rate(earlier, later) for earlier, later in itertools.pairwise(run)]
    overall = _rate(run[0], run[-1])
    # Stalls and noise only ever hold a job below the best pace it has shown, and it may get back
    # to that pace at any time: predict by the fastest gap, and count how far the average fell
    # short of it as doubt. Counts are whole records: a change of n in done is good to 1 in n.
    pace = max(rates)
    doubt = 1.0 - overall / pace + 1.0 / (last_done - first_done) + FEW_GAPS_DOUBT / len(rates)
    eta_s = max(0, last.total - last_done) / pace
    return _Fit(eta_s, doubt, ended - started, progressing=rates[-1] > 0.0)


def _comparable_run(samples: Sequence[Sample], last_done: int) -> list[tuple[float, int]]:
    """(at, done) of the latest samples comparable with the last one, oldest first.

    That means known counts, the same status and total, time moving on and done never going
    back: a pace measured across a status change (SCHEDULED → RUNNING) would count waiting time
    as work.
    """
    last = samples[-1]
    run = [(last.at, last_done)]
    for sample in itertools.islice(reversed(samples), 1, None):
        newer_at, newer_done = run[-1]
        if (
            (sample.status, sample.total) != (last.status, last.total)
            or sample.done is None
            or sample.done > newer_done
            or sample.at >= newer_at
        ):
            break
        run.append((sample.at, sample.done))
    run.reverse()
    return run


def _rate(earlier: tuple[float, int], later: tuple[float, int]) -> float:
    """Records per second between two points of a comparable run."""
    return (later[1] - earlier[1]) / (later[0] - earlier[0])


def _unchanged_for(samples: Sequence[Sample]) -> float:
    """Seconds since the job's status and counts were first seen as they are now."""
    return max(0.0, samples[-1].at - samples[unchanged_since(samples)].at)


def unchanged_since(samples: Sequence[Sample]) -> int:
    """The index of the first of the latest samples that saw the status and counts as they are
    now (the last one's, at the latest): what an idle job's widening gaps are measured from."""
    last = samples[-1][1:]
    since = len(samples) - 1
    while since > 0 and samples[since - 1][1:] == last:
        since -= 1
    return since
