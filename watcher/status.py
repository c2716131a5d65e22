"""`zoho-job-watcher status`: what the state file remembers, for people or for scripts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from watcher.job import done_of
from watcher.state import JobRecord, StateError, StateStore, look_at, record_view
from watcher.zoho_api import MASS_UPDATE

COLUMNS = ("MODULE", "JOB_ID", "STATUS", "OUTCOME", "DONE", "TOTAL", "POLLS", "LAST_SEEN", "ERROR")


def state_file(state_path: Path | None) -> Path:
    """The config's `state_path`, if there is a file to look at: a look must not create one (a
    mistyped path, say)."""
    if state_path is None:
        raise StateError("status: the config sets no state_path, so nothing is remembered")
    if not look_at(state_path):
        raise StateError(f"status: no state file at {state_path}")
    return state_path


async def show_status(state_path: Path, *, as_json: bool) -> int:
    """Print every job the state file knows, oldest first."""
    store = await StateStore.open(state_path, writer=False)
    records = sorted(store.jobs.values(), key=lambda record: record.first_seen)
    await store.close()
    if as_json:
        print(json.dumps([record_view(record) for record in records]))
    else:
        _print_table([_row(record) for record in records])
    return 0


def _row(record: JobRecord) -> tuple[str, ...]:
    last_seen = (
        datetime.fromtimestamp(record.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        if record.last_seen is not None
        else "-"
    )
    return (
        record.module,
        record.job_id,
        record.status or "-",
        record.outcome or ("removed" if record.removed_at is not None else "-"),
        _count(done_of(record.counts, MASS_UPDATE)),  # the one kind a state file holds so far
        _count(record.counts.get(MASS_UPDATE.total)),
        str(record.polls),
        last_seen,
        record.error or "-",
    )


def _count(count: int | None) -> str:
    """A count as shown: 0 is a count Zoho gave, "-" one it did not (yet)."""
    return "-" if count is None else str(count)


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(COLUMNS, *rows, strict=False)]
    for row in (COLUMNS, *rows):
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip())  # nothing, when started with stdout closed
