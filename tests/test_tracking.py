"""The tracker's persistence order: an event's state is committed before the event goes out, and
the event is out before the save that records it went out."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.kinds import MASS_CONVERT
from watcher import output
from watcher.config import JobSpec
from watcher.events import EventLog
from watcher.job import JobState, finished_event, status_changed
from watcher.schedule import Estimate, Sample
from watcher.state import JobRecord, StateStore
from watcher.tracking import Tracker
from watcher.zoho_api import MASS_UPDATE, JobKind


async def one_tracked_job(tmp_path: Path) -> tuple[StateStore, io.StringIO, Tracker, JobState]:
    """A tracker with a state file and one job, tracked: its `job.added` is out."""
    store = await StateStore.open(tmp_path / "state.db")
    stream = io.StringIO()
    tracker = Tracker(
        EventLog(stream, "json", "info"), store, time.time, time.monotonic, MASS_UPDATE
    )
    spec = JobSpec("Leads", "554023000000506003")
    await tracker.track([spec])
    return store, stream, tracker, tracker.jobs[spec]


async def stored(
    tmp_path: Path,
    status: str,
    outcome: str,
    done: int,
    first_seen: float,
    last_seen: float,
    finished_at: float | None = None,
) -> tuple[StateStore, io.StringIO, Tracker]:
    """A state file holding Leads/1 as a crash between the commit of its end and the lines
    saying it leaves it (it was RUNNING when last said; given `finished_at`, its `job.finished`
    had gone out), and a tracker on it."""
    store = await StateStore.open(tmp_path / "state.db")
    counts = {"failed_count": 10 - done, "updated_count": done, "not_updated_count": 0}
    record = JobRecord(
        *("Leads", "1", status, {**counts, "total_count": 10}, "RUNNING", outcome, None, 3),
        *(first_seen, last_seen, finished_at, None),
    )
    await store.save_durably(record)
    stream = io.StringIO()
    return (
        store,
        stream,
        Tracker(EventLog(stream, "json", "info"), store, time.time, time.monotonic, MASS_UPDATE),
    )


async def test_a_durable_event_is_written_before_record_returns(tmp_path: Path) -> None:
    store, stream, tracker, job = await one_tracked_job(tmp_path)
    spec = job.spec
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    # No turn of the event loop since the event: it went out with an explicit flush, before the
    # save of emitted_status was queued (the events' own batching would write it a turn later).
    written = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert written[-1] == "job.status_changed"
    assert store.jobs[(spec.module, spec.job_id)].emitted_status == "RUNNING"
    await store.close()


async def test_a_job_removed_during_its_durable_save_says_nothing_and_stays_removed(
    tmp_path: Path,
) -> None:
    store, stream, tracker, job = await one_tracked_job(tmp_path)
    spec = job.spec
    job.status, job.outcome = "COMPLETED", "completed"
    recording = asyncio.ensure_future(
        tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    )
    await asyncio.sleep(0)  # the durable save is queued; its commit is still to come
    tracker.untrack([spec])
    await recording
    await store.close()
    written = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert written == ["job.added", "job.removed"]
    assert tracker.outcomes.total() == 0
    again = await StateStore.open(tmp_path / "state.db")
    assert again.jobs[(spec.module, spec.job_id)].removed_at is not None
    assert await again.prune(time.time() + 1) == 1  # its end was never said: gone by removal
    await again.close()


async def test_a_job_keeps_its_planned_poll_until_it_is_removed(tmp_path: Path) -> None:
    """Added again later, it starts afresh rather than waiting for a plan it left behind."""
    store, _, tracker, job = await one_tracked_job(tmp_path)
    key = (job.spec.module, job.spec.job_id)
    job.next_poll_at = time.time() + 250.0
    await tracker.record(job, [])
    assert store.jobs[key].next_poll_at == job.next_poll_at
    tracker.untrack([job.spec])
    await store.close()
    again = await StateStore.open(tmp_path / "state.db")
    assert again.jobs[key].next_poll_at is None
    await again.close()


async def test_a_restart_keeps_the_samples_since_the_last_change_and_no_pace_across_it(
    tmp_path: Path,
) -> None:
    """Enough to go on widening an idle job's gaps; a pace measured across the downtime would
    rest on the wall clock, which may have been stepped meanwhile (an eta of 530 s for 6,330)."""
    store, _, tracker, job = await one_tracked_job(tmp_path)
    now = time.monotonic()
    job.status = "RUNNING"
    job.samples = (
        Sample(now - 40.0, "RUNNING", 20, 100),  # as now, but before the pause
        Sample(now - 30.0, "SUSPENDED", 20, 100),
        Sample(now - 20.0, "RUNNING", 20, 100),  # the last change
        Sample(now - 10.0, "RUNNING", 20, 100),
        Sample(now, "RUNNING", 20, 100),
    )
    await tracker.record(job, [])
    await store.close()
    again = await StateStore.open(tmp_path / "state.db")
    resumed = Tracker(
        EventLog(io.StringIO(), "json", "info"), again, time.time, time.monotonic, MASS_UPDATE
    )
    await resumed.track([job.spec])
    kept = resumed.jobs[job.spec].samples
    assert [(s.status, s.done) for s in kept] == [("RUNNING", 20)] * 3
    assert resumed.jobs[job.spec].restored == 3
    assert [round(b.at - a.at, 3) for a, b in itertools.pairwise(kept)] == [10.0, 10.0]
    assert abs(time.monotonic() - kept[-1].at) < 5
    await again.close()


async def test_an_answer_for_a_removed_job_is_neither_said_nor_saved(tmp_path: Path) -> None:
    store, stream, tracker, job = await one_tracked_job(tmp_path)
    spec = job.spec
    tracker.untrack([spec])
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    await store.close()
    assert "job.status_changed" not in stream.getvalue()
    again = await StateStore.open(tmp_path / "state.db")
    record = again.jobs[(spec.module, spec.job_id)]
    assert (record.status, record.removed_at is not None) == (None, True)
    await again.close()


@pytest.mark.parametrize(
    ("kind", "counts"),
    [
        (MASS_UPDATE, {"updated_count": 68, "failed_count": 2, "total_count": 100}),
        (MASS_CONVERT, {"converted_count": 68, "lost_count": 2, "all_count": 100}),
    ],
)
async def test_a_resumed_job_does_not_announce_again_the_tenths_it_had_reached(
    tmp_path: Path, kind: JobKind, counts: dict[str, int]
) -> None:
    store, _, tracker, job = await one_tracked_job(tmp_path)
    job.status = "RUNNING"
    job.counts = dict(counts)
    await tracker.record(job, [])
    await store.close()
    again = await StateStore.open(tmp_path / "state.db")
    resumed = Tracker(
        EventLog(io.StringIO(), "json", "info"), again, time.time, time.monotonic, kind
    )
    await resumed.track([job.spec])
    assert resumed.jobs[job.spec].tenths_reported == 7  # job.progress comes again at 80 %
    await again.close()


async def test_a_replayed_job_finished_says_why_the_job_ended(tmp_path: Path) -> None:
    """A crash after the outcome was saved and before its event went out: the replay says it."""
    store, _, tracker, job = await one_tracked_job(tmp_path)
    job.outcome, job.error = "rejected", "NO_PERMISSION"
    await store.save_durably(tracker.as_record(job))  # and no finished_at: the event is owed
    await store.close()
    again = await StateStore.open(tmp_path / "state.db")
    stream = io.StringIO()
    resumed = Tracker(
        EventLog(stream, "json", "info"), again, time.time, time.monotonic, MASS_UPDATE
    )
    await resumed.track([job.spec])
    await again.close()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    finished = [event for event in events if event["event"] == "job.finished"]
    assert [(e["outcome"], e["error"], e["replayed"]) for e in finished] == [
        ("rejected", "NO_PERMISSION", True)
    ]


async def test_replayed_events_give_the_figures_of_their_answer_not_of_the_restart(
    tmp_path: Path,
) -> None:
    """A crash between the commit of a finish and its lines, and a restart an hour later: the
    job took 12.5 s, and its last answer said 10 of 10 records were done."""
    first_seen = time.time() - 3600.0
    store, stream, resumed = await stored(
        tmp_path, "COMPLETED", "completed", 10, first_seen, first_seen + 12.5
    )
    await resumed.track([JobSpec("Leads", "1")])
    await store.close()
    events = {e["event"]: e for e in map(json.loads, stream.getvalue().splitlines())}
    assert events["job.status_changed"]["progress"] == 1.0
    assert events["job.finished"]["duration_s"] == 12.5


class Stalled:
    """An event log on a pipe whose reader reads nothing until `read_again`: it already holds
    back `lines` lines (past the backlog's bound, some are dropped)."""

    def __init__(self, lines: int = 2000) -> None:
        self._read_end, write_end = os.pipe()
        self._stream = os.fdopen(write_end, "w")
        self.log = EventLog(self._stream, "json", "info")
        for n in range(lines):
            self.log.log("info", "filler", n=n, pad="x" * 100)
            self.log.flush()
        assert self.log.holding()

    async def read_again(self) -> None:
        """Until nothing is held back any more."""
        loop = asyncio.get_running_loop()
        while self.log.holding():
            await loop.run_in_executor(None, os.read, self._read_end, 1 << 16)

    def close(self) -> None:
        self._stream.close()
        os.close(self._read_end)


async def tracked_behind_a_stalled_reader(
    tmp_path: Path, lines: int = 2000
) -> tuple[StateStore, Stalled, Tracker, JobState]:
    """A tracker with a state file and one job, Leads/1, whose event log's reader is stalled
    (holding back `lines` lines)."""
    store = await StateStore.open(tmp_path / "state.db")
    stalled = Stalled(lines)
    tracker = Tracker(stalled.log, store, time.time, time.monotonic, MASS_UPDATE)
    spec = JobSpec("Leads", "1")
    await tracker.track([spec])
    return store, stalled, tracker, tracker.jobs[spec]


async def kept(tmp_path: Path) -> JobRecord:
    """The one job the state file holds, as the next run reads it."""
    again = await StateStore.open(tmp_path / "state.db")
    (record,) = again.jobs.values()
    await again.close()
    return record


async def test_a_stalled_reader_costs_one_held_save_per_job_not_one_per_poll(
    tmp_path: Path,
) -> None:
    """Polls that said nothing still save their job; while the reader is stalled those saves
    wait for the lines before them. A quiet watcher would otherwise grow for as long as the
    stall lasts (about 0.7 KB a poll). Once the reader reads, the latest record is saved."""
    store = await StateStore.open(tmp_path / "state.db")
    specs = [JobSpec("Leads", str(n)) for n in range(1, 4)]
    stalled = Stalled()
    tracker = Tracker(stalled.log, store, time.time, time.monotonic, MASS_UPDATE)
    await tracker.track(specs)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(5000):
            for spec in specs:
                job = tracker.jobs[spec]
                job.polls += 1
                await tracker.record(job, ())
        grown = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
    assert sum(stat.size_diff for stat in grown) < 200_000  # 15,000 saves held: 7 MB before
    await stalled.read_again()
    stalled.close()
    assert {store.jobs[spec].polls for spec in specs} == {5000}
    await store.close()


async def test_transitions_held_back_by_a_stalled_reader_are_said_again_from_the_last_one_out(
    tmp_path: Path,
) -> None:
    """Two transitions behind a stalled reader, then a stop: neither line went out, so the state
    file must not say the first one did (the next run would then skip it)."""
    store, stalled, tracker, job = await tracked_behind_a_stalled_reader(tmp_path)
    for previous, status in ((None, "SCHEDULED"), ("SCHEDULED", "RUNNING")):
        job.status = status
        await tracker.record(job, [status_changed(job, previous, Estimate(None, None))])
    await store.close()
    stalled.close()
    record = await kept(tmp_path)
    assert (record.status, record.emitted_status) == ("RUNNING", None)


async def test_an_end_owed_by_a_job_removed_while_the_watcher_was_down_is_said_first(
    tmp_path: Path,
) -> None:
    """Killed between the commit of a failure and its lines, then the job left the config: the
    failure happened all the same, and is said (replayed) before the job's removal."""
    seen = time.time() - 60.0
    store, stream, tracker = await stored(tmp_path, "FAILED", "failed", 1, seen, seen)
    tracker.forget_missing([])
    await store.close()
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e.get("replayed")) for e in events] == [
        ("job.status_changed", True),
        ("job.finished", True),
        ("job.removed", None),
    ]
    record = await kept(tmp_path)
    assert (record.emitted_status, record.finished_at is not None) == ("FAILED", True)
    assert record.removed_at is not None
    assert tracker.outcomes.total() == 0  # not the config's: no part of the exit code


async def test_an_owed_end_held_back_by_a_stalled_reader_is_not_recorded_as_said(
    tmp_path: Path,
) -> None:
    """The same removal, its lines stuck behind a stalled reader at the stop: said again next
    time, not recorded as said and lost."""
    seen = time.time() - 60.0
    store, _, _ = await stored(tmp_path, "FAILED", "failed", 1, seen, seen)
    stalled = Stalled()
    Tracker(stalled.log, store, time.time, time.monotonic, MASS_UPDATE).forget_missing([])
    await store.close()
    stalled.close()
    record = await kept(tmp_path)
    assert (record.emitted_status, record.finished_at) == ("RUNNING", None)


async def test_a_transition_whose_line_a_stalled_reader_cost_is_said_again_by_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dropped past the backlog's bound, the line was never said: however the job is saved
    later, the state file must not record it as said."""
    monkeypatch.setattr(output, "BACKLOG_MAX", 100_000)
    # more than the pipe and the backlog hold
    store, stalled, tracker, job = await tracked_behind_a_stalled_reader(tmp_path, lines=3000)
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    await stalled.read_again()  # the dropped line does not come back
    await tracker.record(job, ())  # a later poll that said nothing saves the job again
    await store.close()
    stalled.close()
    record = await kept(tmp_path)
    assert (record.status, record.emitted_status) == ("RUNNING", None)


async def test_a_finished_job_removed_from_the_config_no_longer_counts_as_ended() -> None:
    """Else `--exit-when-done` ends before a job added in its place is polled, and a removed
    failed job still makes the run exit 1."""
    tracker = Tracker(
        EventLog(io.StringIO(), "json", "info"), None, time.time, time.monotonic, MASS_UPDATE
    )
    old, new = JobSpec("Leads", "1"), JobSpec("Leads", "2")
    await tracker.track([old])
    job = tracker.jobs[old]
    job.status, job.outcome = "FAILED", "failed"
    await tracker.record(job, [finished_event(job, 0.0, MASS_UPDATE)])
    tracker.untrack([old])
    await tracker.track([new])
    assert tracker.unfinished == 1
    assert tracker.outcomes.total() == 0


async def test_a_job_added_again_behind_a_stalled_reader_resumes_from_its_removal(
    tmp_path: Path,
) -> None:
    """Its removal's save still waits behind held-back lines: the store's record is older than
    the job. Added again, it is announced as added, and its transition is not said twice."""
    store, stalled, tracker, job = await tracked_behind_a_stalled_reader(tmp_path)
    spec = job.spec
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    tracker.untrack([spec])
    said: list[str] = []
    emit = stalled.log.emit
    stalled.log.emit = lambda event: (said.append(event.name), emit(event))[1]  # type: ignore[method-assign]
    assert await tracker.track([spec]) == [spec]
    assert (said, tracker.jobs[spec].emitted_status) == (["job.added"], "RUNNING")
    await stalled.read_again()
    stalled.close()
    await store.close()


async def test_jobs_removed_in_this_run_are_forgotten_after_retention() -> None:
    """Without a state file they are kept in memory: for `retention`, as the store keeps them,
    not for the months the watcher runs."""
    clock = [1000.0]
    tracker = Tracker(
        EventLog(io.StringIO(), "json", "info"), None, lambda: clock[0], time.monotonic, MASS_UPDATE
    )
    spec = JobSpec("Leads", "1")
    await tracker.track([spec])
    job = tracker.jobs[spec]
    job.status, job.outcome = "COMPLETED", "completed"
    await tracker.record(job, [finished_event(job, time.monotonic(), MASS_UPDATE)])
    tracker.untrack([spec])
    clock[0] = 2000.0
    tracker.untrack([], forget_before=1000.0)  # finished at 1000: within retention
    assert await tracker.track([spec]) == []  # resumed: finished, nothing to poll
    tracker.untrack([spec])
    tracker.untrack([], forget_before=1000.5)
    assert await tracker.track([spec]) == [spec]  # forgotten: a new job


@pytest.mark.parametrize("end_said", [False, True])
async def test_an_end_resumed_after_a_restart_counts_once(tmp_path: Path, end_said: bool) -> None:
    """Whether its `job.finished` went out before the restart or is replayed after it, a job's
    end counts once: counted twice, `--exit-when-done` would exit while another job still runs."""
    seen = time.time() - 60.0
    finished_at = seen + 55.0 if end_said else None
    store, _, tracker = await stored(
        tmp_path, "COMPLETED", "completed", 10, seen, seen + 50.0, finished_at
    )
    await tracker.track([JobSpec("Leads", "1"), JobSpec("Leads", "2")])
    await store.close()
    assert tracker.outcomes["completed"] == 1
    assert tracker.unfinished == 1


async def test_a_wall_clock_set_back_across_a_restart_gives_no_negative_duration(
    tmp_path: Path,
) -> None:
    """Set back an hour while the watcher was down, the clock puts the job's first sighting in
    the future: its age so far is then nothing, and its duration never negative."""
    store, _, _, job = await one_tracked_job(tmp_path)
    await store.close()
    again = await StateStore.open(tmp_path / "state.db")
    log = EventLog(io.StringIO(), "json", "info")
    resumed = Tracker(log, again, lambda: time.time() - 3600.0, time.monotonic, MASS_UPDATE)
    await resumed.track([job.spec])
    await again.close()
    finished = finished_event(resumed.jobs[job.spec], time.monotonic(), MASS_UPDATE)
    assert finished.fields["duration_s"] >= 0


async def test_a_replayed_end_never_has_a_negative_duration(tmp_path: Path) -> None:
    """A job last seen before it was first seen (the wall clock stepped back while it ran):
    the replayed `job.finished` says it took no time, not minus nine minutes."""
    seen = time.time() - 60.0
    store, stream, tracker = await stored(tmp_path, "COMPLETED", "completed", 10, seen, seen - 540)
    await tracker.track([JobSpec("Leads", "1")])
    await store.close()
    events = {e["event"]: e for e in map(json.loads, stream.getvalue().splitlines())}
    assert events["job.finished"]["duration_s"] >= 0


async def test_a_lost_line_said_again_on_a_re_add_is_recorded_as_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transition a stalled reader cost is replayed when its job is removed and added back;
    from then on the state file must know it was said, or every later run says it again."""
    monkeypatch.setattr(output, "BACKLOG_MAX", 100_000)
    store, stalled, tracker, job = await tracked_behind_a_stalled_reader(tmp_path, lines=3000)
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])  # dropped
    await stalled.read_again()
    tracker.untrack([job.spec])
    await tracker.track([job.spec])  # added back: the lost transition is replayed
    await store.close()
    stalled.close()
    record = await kept(tmp_path)
    assert (record.status, record.emitted_status) == ("RUNNING", "RUNNING")


async def test_a_removal_made_while_lines_are_dropped_is_kept_and_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines dropped past the backlog's bound: no save could wait for them to go out. A removal
    made then must still be kept, or retention would never prune the job, and the next run
    would say `job.removed` again."""
    monkeypatch.setattr(output, "BACKLOG_MAX", 100_000)
    store, stalled, tracker, job = await tracked_behind_a_stalled_reader(tmp_path, lines=3000)
    assert stalled.log.lost() > 0  # being dropped now
    tracker.untrack([job.spec])
    await stalled.read_again()
    stalled.close()
    assert await store.prune(time.time() + 1) == 1
    await store.close()
