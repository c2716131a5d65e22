"""The chaos soak of bench/soak.py on a short run, and its checker on runs that break the rules.

The short run is the real thing scaled down: the CLI in a subprocess, every fault kind, the same
`check`. The checker tests make sure each invariant would catch the fault it names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bench.soak import (
    CREDENTIALS,
    DEFAULT_CHAOS,
    MAX_CONCURRENCY,
    RATE_LIMIT,
    Plan,
    WatcherRun,
    check,
    run_soak,
)
from tests.harness import PRINTED, SECRETS
from watcher.simulator import RequestRecord, Simulator

# Denser chaos than the long run, so that 150 jobs meet every kind of fault: each kind is drawn
# a dozen times or so in a run. The order of arrivals, and so of the draws, varies from run to
# run; at the long run's rates resets came out at zero about one run in twenty.
SHORT = Plan(
    jobs=150,
    minutes=0.3,
    seed=7,
    chaos=replace(
        DEFAULT_CHAOS,
        seed=7,
        hang=0.015,
        token_expiry=0.02,
        burst_429=0.01,
        reset=0.02,
        not_found=0.02,
        truncated=0.015,
        malformed=0.025,
        slow_refresh=0.8,
    ),
)
FAULT_KINDS = {
    "429",
    "server_error",
    "reset",
    "hang",
    "truncated",
    "malformed",
    "not_found",
    "token_expiry",
    "slow_refresh",
}


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_short_soak_keeps_every_invariant(tmp_path: Path) -> None:
    report, sim, run = await run_soak(SHORT, tmp_path)
    PRINTED.extend([*run.lines, run.stderr])
    SECRETS.update(
        [*sim.issued_tokens, CREDENTIALS["ZOHO_REFRESH_TOKEN"], CREDENTIALS["ZOHO_CLIENT_SECRET"]]
    )
    assert report.violations == []
    assert set(sim.faults) == FAULT_KINDS
    assert report.figures["outcomes"] == {"completed": 117, "failed": 30, "not_found": 3}


# --- the checker on made-up runs -----------------------------------------------------------------

JOB = ("Leads", "1")


def served(
    at: float, status: str | None, answer: str = "", delivered: bool = True
) -> RequestRecord:
    answer = answer or status or "500"
    http_status = 200 if delivered else None
    return RequestRecord(at, at + 0.01, *JOB, answer, http_status, 1, True, status)


def events(announced: list[str], outcome: str = "completed") -> list[dict[str, Any]]:
    changes = [
        {"event": "job.status_changed", "module": JOB[0], "job_id": JOB[1], "status": status}
        for status in announced
    ]
    finished = {"event": "job.finished", "module": JOB[0], "job_id": JOB[1], "outcome": outcome}
    return [*changes, finished]


def violations(records: list[RequestRecord], announced: list[str], **run: Any) -> list[str]:
    sim = Simulator()
    sim.add_timed_job(*JOB, duration=1.0)
    sim.requests.extend(records)
    lines = ["{}\n"]
    options: dict[str, Any] = {"exit_code": 0, "rss_kb": [(0.0, 100)], **run}
    watcher_run = WatcherRun(events(announced), lines, **options)
    return check(sim, [JOB], watcher_run, SHORT).violations


FAITHFUL = [
    served(0.0, "SCHEDULED"),
    served(0.1, None, "reset", delivered=False),
    served(0.2, "RUNNING", delivered=False),
    served(0.3, "RUNNING"),
    served(0.4, "COMPLETED"),
]


def test_checker_accepts_a_faithful_run() -> None:
    assert violations(FAITHFUL, ["SCHEDULED", "RUNNING", "COMPLETED"]) == []


@pytest.mark.parametrize(
    ("records", "announced", "run", "complaint"),
    [
        (FAITHFUL, ["SCHEDULED", "COMPLETED"], {}, "differs from"),
        (FAITHFUL, ["SCHEDULED", "RUNNING", "RUNNING", "COMPLETED"], {}, "repeats"),
        (FAITHFUL[:2], ["SCHEDULED", "RUNNING", "COMPLETED"], {}, "differs from"),
        ([*FAITHFUL, served(0.5, "COMPLETED")], ["SCHEDULED", "RUNNING", "COMPLETED"], {}, "after"),
        (
            [served(i / 100, "RUNNING") for i in range(RATE_LIMIT + 1)] + FAITHFUL[-1:],
            ["RUNNING", "COMPLETED"],
            {},
            "requests within",
        ),
        (
            [replace(r, in_flight=MAX_CONCURRENCY + 1) for r in FAITHFUL],
            ["SCHEDULED", "RUNNING", "COMPLETED"],
            {},
            "in flight",
        ),
        (
            FAITHFUL,
            ["SCHEDULED", "RUNNING", "COMPLETED"],
            {"rss_kb": [(0.0, 100), (5.0, 100), (10.0, 111)]},
            "RSS grew",
        ),
        (
            FAITHFUL,
            ["SCHEDULED", "RUNNING", "COMPLETED"],
            {"stderr": "Traceback (most recent call last):"},
            "traceback",
        ),
        (
            FAITHFUL,
            ["SCHEDULED", "RUNNING", "COMPLETED"],
            {"stderr": CREDENTIALS["ZOHO_CLIENT_SECRET"]},
            "secret",
        ),
    ],
)
def test_checker_catches(
    records: list[RequestRecord], announced: list[str], run: dict[str, Any], complaint: str
) -> None:
    found = violations(records, announced, **run)
    assert any(complaint in v for v in found), found


def test_checker_wants_exactly_one_finish_with_the_right_outcome() -> None:
    assert violations(FAITHFUL, ["SCHEDULED", "RUNNING", "COMPLETED"], exit_code=1)
    sim = Simulator()
    sim.add_timed_job(*JOB, duration=1.0, outcome="FAILED")
    sim.requests.extend(FAITHFUL)
    run = WatcherRun(events(["SCHEDULED", "RUNNING", "COMPLETED"]), exit_code=1)
    assert any("job.finished outcomes" in v for v in check(sim, [JOB], run, SHORT).violations)
