"""The tracker's persistence order: an event's state is committed before the event goes out, and
the event is out before the save that records it went out."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from watcher.config import JobSpec
from watcher.events import EventLog
from watcher.job import status_changed
from watcher.schedule import Estimate
from watcher.state import StateStore
from watcher.tracking import Tracker


async def test_a_durable_event_is_written_before_record_returns(tmp_path: Path) -> None:
    store = await StateStore.open(tmp_path / "state.db")
    stream = io.StringIO()
    tracker = Tracker(EventLog(stream, "json", "info"), store, time.time, time.monotonic)
    spec = JobSpec("Leads", "554023000000506003")
    await tracker.track([spec])
    job = tracker.jobs[spec]
    job.status = "RUNNING"
    await tracker.record(job, [status_changed(job, None, Estimate(None, None))])
    # No turn of the event loop since the event: it went out with an explicit flush, before the
    # save of emitted_status was queued (the events' own batching would write it a turn later).
    written = [json.loads(line)["event"] for line in stream.getvalue().splitlines()]
    assert written[-1] == "job.status_changed"
    assert store.jobs[(spec.module, spec.job_id)].emitted_status == "RUNNING"
    await store.close()
