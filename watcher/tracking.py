"""The set of tracked jobs, and what is remembered of them across restarts.

The rule that makes restarts safe: the state that an event records is committed before the event
is emitted. A crash between the two means the event is emitted again after the restart — at least
once, never lost — and a job that had finished is neither polled nor announced again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from watcher.clock import to_monotonic
from watcher.config import JobSpec
from watcher.events import Event, EventLog
from watcher.job import JobState, finished_event, sample_of, status_changed, tenths_done
from watcher.schedule import Sample, estimate, unchanged_since
from watcher.state import JobRecord, KeptSample, StateError, StateStore, prunable
from watcher.zoho_api import JobKind

# Events whose loss would matter: their state is committed before they go out.
DURABLE_EVENTS = frozenset({"job.status_changed", "job.finished"})

_Key = tuple[str, str]  # a job as the store names it: (module, job_id)


class Tracker:
    """Tracked jobs by spec, their outcomes, and their persistence (when a store is given).

    `wall` is epoch time (what a restart can make sense of); `monotonic` is the scheduler's clock.
    """

    def __init__(
        self,
        log: EventLog,
        store: StateStore | None,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
        kind: JobKind,
    ) -> None:
        self._log = log
        self._kind = kind
        self.store = store
        self._wall = wall
        self._monotonic = monotonic
        self.jobs: dict[JobSpec, JobState] = {}
        self.outcomes: Counter[str] = Counter()
        # Saves waiting for held-back lines (see `_hold`): the batch of the latest point in the
        # stream, and for each job the batch its record waits in.
        self._batch: dict[_Key, JobRecord] = {}
        self._batch_at = -1
        self._held_in: dict[_Key, dict[_Key, JobRecord]] = {}
        # Jobs a durable line of which a stalled reader cost (dropped past the backlog): what
        # was said of them as the state file last heard (see `_said`), kept in every later save
        # so that the next run says again what was lost.
        self._unsaid: dict[JobSpec, tuple[str | None, float | None]] = {}
        # Jobs removed from the config in this run, as they were: one added again resumes from
        # here, not from the store, whose record may still wait behind held-back lines (or
        # there is no store). Forgotten as the store's are, `retention` on (see `untrack`).
        self._removed: dict[JobSpec, JobRecord] = {}

    @property
    def unfinished(self) -> int:
        return len(self.jobs) - self.outcomes.total()

    async def track(self, specs: Iterable[JobSpec]) -> list[JobSpec]:
        """Start tracking `specs`: new ones announced, known ones resumed from the store with any
        event they still owe. Returns the specs that need polling."""
        to_poll = []
        for spec in specs:
            if spec in self.jobs:
                continue
            record = self._removed.pop(spec, None) or self._stored(spec)
            job = self._resume(spec, record) if record else self._new(spec)
            self.jobs[spec] = job
            if job.outcome is not None and job.finished_at is not None:  # said before a restart
                self.outcomes[job.outcome] += 1
            if record is None or record.removed_at is not None:
                self._log.emit(Event("job.added", "info", job.fields()))
            owed = self._owed(job) if record else None  # a new job owes nothing
            if owed:
                await self.record(job, owed)
            else:  # nothing to announce again: just remember the job (most of ten thousand)
                self._save(job)
            if job.outcome is None:
                to_poll.append(spec)
        return to_poll

    def tracks(self, job: JobState) -> bool:
        """Whether `job` is still tracked. Its removal from the config is a job's last word: an
        answer that arrives after it is neither announced nor saved, nor counted as an end."""
        return self.jobs.get(job.spec) is job

    def untrack(self, specs: Iterable[JobSpec], forget_before: float = -math.inf) -> None:
        """Stop tracking `specs` (gone from the config); a finished one is pruned later. Those
        removed earlier that the store would prune by `forget_before` are forgotten now: only
        a removal adds to them, so each bounds them."""
        self._forget_removed(forget_before)
        for spec in specs:
            job = self.jobs.pop(spec, None)
            if job is None:
                continue
            if job.outcome is not None and job.finished_at is not None:  # counted once out
                self.outcomes[job.outcome] -= 1
            self._log.log("info", "job.removed", **job.fields())
            job.next_poll_at = job.planned_gap = None  # added again, it starts afresh
            self._removed[spec] = record = self.as_record(job, removed_at=self._wall())
            if self.store is not None:
                self._put(record)
            self._unsaid.pop(spec, None)

    def _forget_removed(self, before: float) -> None:
        for spec in [spec for spec, record in self._removed.items() if prunable(record, before)]:
            del self._removed[spec]

    def forget_missing(self, configured: Iterable[JobSpec]) -> None:
        """Jobs the store still tracks but the config no longer names (removed while we were
        down) are marked removed, so that retention can prune them."""
        if self.store is None:
            return
        configured = set(configured)
        for (module, job_id), record in list(self.store.jobs.items()):
            spec = JobSpec(module, job_id)
            if record.removed_at is None and spec not in configured:
                self._forget(spec, record)

    def _forget(self, spec: JobSpec, record: JobRecord) -> None:
        """Mark a job removed, saying first what it still owes: an end committed but never said
        (a crash between the two) happened all the same, removed from the config or not."""
        for event in self._owed(self._resume(spec, record)):
            self._log.emit(event)
        self._log.log("info", "job.removed", module=spec.module, job_id=spec.job_id)
        self._log.flush()  # out (or held back) before the save below records them as said
        now = self._wall()
        ended_at = record.finished_at or (now if record.outcome is not None else None)
        self._put(
            record._replace(
                emitted_status=record.status,
                finished_at=ended_at,
                removed_at=now,
                next_poll_at=None,
                planned_gap=None,
            )
        )

    async def record(self, job: JobState, events: Sequence[Event]) -> None:
        """Persist what `events` record, then emit them, then note that they went out.

        A stop that cancels this mid-commit still waits for the commit and emits: otherwise a
        clean stop would leave committed events unsaid until a restart replays them.
        """
        if not self.tracks(job):  # removed while its answer was on its way
            return
        store = self.store
        # Without a store nothing is durable: no commit to wait for, no flush to force.
        durable = store is not None and any(e.name in DURABLE_EVENTS for e in events)
        if store is not None and durable:
            saving = store.save_durably(self._committed(job, store))
            try:
                await asyncio.shield(saving)
            except asyncio.CancelledError:
                with contextlib.suppress(StateError):  # not committed: nothing to say
                    await saving
                    self._emit(job, events, durable)
                raise
        self._emit(job, events, durable)

    def _committed(self, job: JobState, store: StateStore) -> JobRecord:
        """What to commit before `job`'s events go out. While a stalled reader holds lines
        back, the transition last said is the last one the store heard of, not the last one
        written: saved as said, a line still held back would be lost with a stop, where now the
        next run says the change since what the reader last saw."""
        record = self.as_record(job)
        if self._log.holding():
            record = record._replace(emitted_status=self._said(job.spec)[0])
        return record

    def replanned(self, job: JobState) -> None:
        """Keep `job`'s new plan: nothing to say, nothing worse than a poll lost in a crash."""
        self._save(job)

    def _emit(self, job: JobState, events: Sequence[Event], durable: bool) -> None:
        if not self.tracks(job):  # removed while its state was being saved
            return
        lost = self._log.lost() if durable else 0
        for event in events:
            self._log.emit(event)
        if durable:
            self._log.flush()  # out (or held back) before the save below records them as said
            if self._log.lost() != lost:  # dropped past the backlog: never said
                self._unsaid.setdefault(job.spec, self._said(job.spec))
        job.emitted_status = job.status
        if job.outcome is not None and job.finished_at is None:
            job.finished_at = self._wall()
            self.outcomes[job.outcome] += 1
        self._save(job)

    def _said(self, spec: JobSpec) -> tuple[str | None, float | None]:
        """(emitted_status, finished_at) as the state file last heard them: saves wait behind
        held-back lines, so this is what a reader has been told."""
        said = self._stored(spec)
        return (None, None) if said is None else (said.emitted_status, said.finished_at)

    def _stored(self, spec: JobSpec) -> JobRecord | None:
        return None if self.store is None else self.store.jobs.get((spec.module, spec.job_id))

    def _new(self, spec: JobSpec) -> JobState:
        return JobState(spec, added_at=self._monotonic(), first_seen=self._wall())

    def _resume(self, spec: JobSpec, record: JobRecord) -> JobState:
        age = max(0.0, self._wall() - record.first_seen)
        return JobState(
            spec,
            added_at=self._monotonic() - age,
            first_seen=record.first_seen,
            status=record.status,
            counts=dict(record.counts),
            polls=record.polls,
            outcome=record.outcome,
            error=record.error,
            emitted_status=record.emitted_status,
            finished_at=record.finished_at,
            last_seen=record.last_seen,
            next_poll_at=record.next_poll_at,
            planned_gap=record.planned_gap,
            failures=record.failures,
            not_found=record.not_found,
            samples=self._on_monotonic(record.samples),
            restored=len(record.samples),
            tenths_reported=tenths_done(record.counts, self._kind),  # announced before the restart
        )

    def _owed(self, job: JobState) -> list[Event]:
        """Events whose state was committed but which may not have gone out before a crash.

        They carry `replayed: true`, so a reader can tell the one duplicate the at-least-once
        guarantee allows from a real repetition.
        """
        owed = []
        seen_at = self._seen_at(job)
        if job.status != job.emitted_status and job.status is not None:
            seen = estimate((sample_of(job.status, job.counts, seen_at, self._kind),))
            owed.append(status_changed(job, job.emitted_status, seen))
        if job.outcome is not None and job.finished_at is None:
            owed.append(finished_event(job, seen_at, self._kind))
        return [Event(e.name, e.level, {**e.fields, "replayed": True}) for e in owed]

    def _seen_at(self, job: JobState) -> float:
        """When the last answer came, on the monotonic clock: what a replayed event reports
        figures as of (its duration, its progress), not the restart, which may be hours on."""
        if job.last_seen is None:
            return self._monotonic()
        return job.added_at + max(0.0, job.last_seen - job.first_seen)

    def _save(self, job: JobState, removed_at: float | None = None) -> None:
        """Saved at once; or, while a stalled reader holds event lines back, once those lines
        are out, in the order of the saves: a job is recorded as having said what it said only
        when it has (or is said again after a restart), and never with an older record last."""
        if self.store is not None:
            self._put(self.as_record(job, removed_at))

    def _put(self, record: JobRecord) -> None:
        assert self.store is not None
        if self._log.holding():
            self._hold(record)
        else:
            self.store.save(record)

    def _hold(self, record: JobRecord) -> None:
        """Keep `record` for when the lines written so far are out. Saves made at the same point
        of the stream share one batch, and a job keeps only its latest record, in the latest
        batch: a stalled reader then costs one record per job, not one per poll. While lines
        are being dropped no batch would ever be saved: `record` is saved at once instead, with
        what was said of the job as the state file last heard it (the next run says the rest
        again), or a removal made then would never be kept, nor pruned."""
        key = (record.module, record.job_id)
        earlier = self._held_in.pop(key, None)
        if earlier is not None:
            del earlier[key]  # saved with a later batch, or now, instead: a replay at worst
        at = self._log.written()
        if at != self._batch_at:
            batch: dict[_Key, JobRecord] = {}
            if not self._log.when_out(functools.partial(self._save_held, batch)):
                assert self.store is not None
                said, finished_at = self._said(JobSpec(*key))
                self.store.save(record._replace(emitted_status=said, finished_at=finished_at))
                return
            self._batch, self._batch_at = batch, at
        self._batch[key] = record
        self._held_in[key] = self._batch

    def _save_held(self, batch: dict[_Key, JobRecord]) -> None:
        """A store that failed or closed meanwhile says so at its next save or its close; not
        recorded as said, the events are said again after a restart."""
        assert self.store is not None
        for key, record in batch.items():
            del self._held_in[key]
            with contextlib.suppress(StateError):
                self.store.save(record)

    def as_record(self, job: JobState, removed_at: float | None = None) -> JobRecord:
        emitted_status, finished_at = self._unsaid.get(
            job.spec, (job.emitted_status, job.finished_at)
        )
        return JobRecord(
            module=job.spec.module,
            job_id=job.spec.job_id,
            status=job.status,
            counts=job.counts,
            emitted_status=emitted_status,
            outcome=job.outcome,
            error=job.error,
            polls=job.polls,
            first_seen=job.first_seen,
            last_seen=job.last_seen,
            finished_at=finished_at,
            removed_at=removed_at,
            next_poll_at=job.next_poll_at,
            planned_gap=job.planned_gap,
            failures=job.failures,
            not_found=job.not_found,
            samples=self._kept_samples(job.samples),
        )

    def _kept_samples(self, samples: tuple[Sample, ...]) -> tuple[KeptSample, ...]:
        """What the state file keeps of a job's samples: those since its status and counts were
        last seen to change, on the epoch clock. That is what widens an idle job's gaps; a pace
        measured across a restart is not kept, for the downtime it would span is known only by a
        wall clock that may have been stepped meanwhile."""
        if not samples:
            return ()
        offset = self._wall() - self._monotonic()
        return tuple((s.at + offset, *s[1:]) for s in samples[unchanged_since(samples) :])

    def _on_monotonic(self, kept: tuple[KeptSample, ...]) -> tuple[Sample, ...]:
        """Kept samples back on the monotonic clock, where the schedule reads them: a restart
        goes on at the pace it had, instead of widening its gaps again from `interval`."""
        times = to_monotonic((at for at, *_ in kept), self._wall(), self._monotonic(), math.inf)
        return tuple(
            Sample(at, status, done, total)
            for at, (_, status, done, total) in zip(times, kept, strict=True)
        )
