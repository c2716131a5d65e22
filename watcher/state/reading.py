"""Reading a state file back, once, at open. Every value is checked against what the watcher
writes: SQLite keeps whatever an edit put in, which would otherwise fail later, as a traceback."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from watcher.state.records import JOB_COLUMNS, JobKey, JobRecord, KeptSample, StoredToken
from watcher.state.schema import meta


def read_jobs(connection: sqlite3.Connection) -> dict[JobKey, JobRecord]:
    jobs: dict[JobKey, JobRecord] = {}
    for row in connection.execute(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs"):
        values = dict(zip(JOB_COLUMNS, row, strict=True))
        values["counts"] = json.loads(values["counts"])
        if not isinstance(values["counts"], dict):
            raise ValueError(f"the counts of job {values['job_id']} are not a JSON object")
        values["samples"] = _samples(json.loads(values["samples"]), values["job_id"])
        _check_job(values)
        record = JobRecord(**values)
        jobs[(record.module, record.job_id)] = record
    return jobs


def _check_job(values: Mapping[str, Any]) -> None:
    """A ValueError naming the first value of a job's row that we would not have written: SQLite
    keeps whatever an edit put in, and a text where a time belongs failed only later, as a
    traceback."""
    for name, check in _ROW_CHECKS.items():
        if not check(values[name]):
            job_id = values["job_id"]
            raise ValueError(f"the {name} of job {job_id!r} is not a value the watcher writes")
    counts = values["counts"].values()  # Zoho's, any size JSON holds: not bound like ours
    if not all(n is None or (isinstance(n, int) and not isinstance(n, bool)) for n in counts):
        raise ValueError(f"the counts of job {values['job_id']!r} are not all counts")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _or_none(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def read_spent(connection: sqlite3.Connection) -> list[float]:
    return [float(at) for (at,) in connection.execute("SELECT at FROM credits ORDER BY at")]


def _samples(document: object, job_id: str) -> tuple[KeptSample, ...]:
    """The status rows a job was last seen with, as saved: [at, status, done, total] each."""
    if isinstance(document, list) and all(_is_sample(item) for item in document):
        return tuple((float(at), status, done, total) for at, status, done, total in document)
    raise ValueError(f"the samples of job {job_id} are not a list of status rows")


def _is_sample(item: object) -> bool:
    if not (isinstance(item, list) and len(item) == 4):
        return False
    at, status, done, total = item
    return _is_time(at) and isinstance(status, str) and all(map(_or_none(_is_count), (done, total)))


def _is_time(value: object) -> bool:
    """An epoch time as we write them: a finite float (an int only in float's range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 1e18 if isinstance(value, int) else math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


_ROW_CHECKS: Mapping[str, Callable[[object], bool]] = {
    "module": _is_text,
    "job_id": _is_text,
    **dict.fromkeys(("status", "emitted_status", "outcome", "error"), _or_none(_is_text)),
    "first_seen": _is_time,
    **dict.fromkeys(
        ("last_seen", "finished_at", "removed_at", "next_poll_at", "planned_gap"),
        _or_none(_is_time),
    ),
    **dict.fromkeys(("polls", "failures", "not_found"), _is_count),
}


def read_reading(connection: sqlite3.Connection) -> tuple[float, int] | None:
    kept = meta(connection, "credits_reading")
    if kept is None:
        return None
    reading = json.loads(kept)
    if not (
        isinstance(reading, list)
        and len(reading) == 2
        and _is_time(reading[0])
        and _is_count(reading[1])
    ):
        raise ValueError("the last count of credits left is not [time, number]")
    return float(reading[0]), reading[1]


def read_token(connection: sqlite3.Connection) -> StoredToken | None:
    row = connection.execute("SELECT access_token, expires_at, api_domain FROM token").fetchone()
    if row is None:
        return None
    access_token, expires_at, api_domain = row
    if not (_is_text(access_token) and _is_time(expires_at) and _or_none(_is_text)(api_domain)):
        raise ValueError("the kept token is not a token, a time and an API domain")
    issued_for = meta(connection, "token_issued_for") or ""
    asked = json.loads(meta(connection, "token_asked") or "[]")
    if not (isinstance(asked, list) and all(isinstance(at, int | float) for at in asked)):
        raise ValueError("the times of the latest token refreshes are not a list of numbers")
    return StoredToken(access_token, expires_at, api_domain, issued_for, tuple(map(float, asked)))
