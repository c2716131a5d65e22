"""A job's record and the kept token, as the state file holds them and the watcher reads them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

JobKey = tuple[str, str]
# A `Sample` as the state file keeps it: (epoch seconds, status, done, total).
KeptSample = tuple[float, str, int | None, int | None]


class StateError(Exception):
    """The state file cannot be used. The message is one line, names the file, never a token."""


class JobRecord(NamedTuple):
    """One job as last saved. Times are epoch seconds: they must mean something after a restart.

    A named tuple, not a frozen dataclass: one is made for every save, three times per job.
    """

    module: str
    job_id: str
    status: str | None  # last status seen
    counts: Mapping[str, int | None]
    emitted_status: str | None  # status of the last job.status_changed emitted
    outcome: str | None  # set once the job has finished
    error: str | None  # Zoho's code, when the outcome is not_found or rejected
    polls: int
    first_seen: float
    last_seen: float | None  # time of the last answer
    finished_at: float | None
    removed_at: float | None  # when it left the config; None while configured
    next_poll_at: float | None = None  # when its next poll was planned; None once it has ended
    planned_gap: float | None = None  # the gap that plan was made from, before any stretch
    failures: int = 0  # polls in a row without a status row, for backoff
    not_found: int = 0  # "not found" answers in a row
    samples: tuple[KeptSample, ...] = ()  # status rows its schedule reads (epoch seconds)


@dataclass(frozen=True)
class StoredToken:
    """An access token kept so that a restart need not refresh one. Its repr hides the token."""

    access_token: str = field(repr=False)
    expires_at: float  # epoch seconds
    api_domain: str | None
    issued_for: str = ""  # which credentials it was refreshed with (a digest: see auth.py)
    asked: tuple[float, ...] = ()  # when the latest refreshes were asked for (epoch seconds)


JOB_COLUMNS = JobRecord._fields


def record_view(record: JobRecord) -> dict[str, object]:
    """A job as `status --json` and `/jobs` show it: plain JSON types, no secret anywhere (and
    not the samples its schedule reads)."""
    view: dict[str, object] = record._asdict()
    view["counts"] = dict(record.counts)
    del view["samples"]
    return view


def prunable(record: JobRecord, before: float) -> bool:
    """Out of the config, and finished before `before`; or, never announced as finished (still
    running, or removed while its end was being saved), removed before it."""
    if record.removed_at is None:
        return False
    if record.outcome is None or record.finished_at is None:
        return record.removed_at < before
    return record.finished_at < before


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
