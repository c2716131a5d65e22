"""SIGKILL at random moments, fifty times, on one state file: nothing lost, nothing repeated
outside the at-least-once window, the state file intact. The loop and its checks live in
bench/crash_loop.py (which runs it longer); the checks are first shown to catch each breach."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.crash_loop import Expected, Loop, Run, crash_loop, figures, violations
from tests.harness import Event
from watcher.simulator import Simulator

KILLS = 50
A = ("Leads", "1")
B = ("Deals", "2")


async def test_fifty_sigkills_lose_nothing_and_repeat_only_replays(
    tmp_path: Path, sim: Simulator
) -> None:
    loop = await crash_loop(sim, tmp_path, kills=KILLS, seed=20261128, jobs=40)
    found = figures(loop)
    print(found)
    assert violations(loop) == []
    assert found["kills"] == KILLS  # the jobs outlasted the kills: every kill hit live work
    assert set(found["kills_by_mode"]) == {"requests", "events", "durable"}  # type: ignore[arg-type]
    ended_early = found["jobs_ended_before_the_final_run"]
    assert isinstance(ended_early, int)
    assert ended_early >= len(loop.expected) // 3  # many endings happened among the kills


# --- the checks catch what they claim to ----------------------------------------------------------


@dataclass
class Printed:
    """Stands in for a WatcherProcess: what a run printed and how it ended."""

    events: list[Event]
    stderr: str = ""
    not_json: list[str] = field(default_factory=list)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]


def changed(spec: tuple[str, str], previous: str | None, status: str, **extra: object) -> Event:
    module, job_id = spec
    fields = {"module": module, "job_id": job_id, "previous_status": previous, "status": status}
    return {"event": "job.status_changed", **fields, **extra}


def finished(spec: tuple[str, str], **extra: object) -> Event:
    module, job_id = spec
    fields = {"module": module, "job_id": job_id, "outcome": "completed", "status": "COMPLETED"}
    return {"event": "job.finished", **fields, **extra}


def healthy() -> Loop:
    """A killed run that ended A (its end replayed by the next run) and a final run that ended B;
    runs 0 and 1 each polled their job, with one token refresh in run 0."""
    killed = Printed([{"event": "watcher.started"}, changed(A, None, "COMPLETED"), finished(A)])
    final = Printed(
        [
            {"event": "watcher.started"},
            finished(A, replayed=True),
            changed(B, None, "COMPLETED"),
            finished(B),
        ]
    )
    runs = [
        Run(killed, "kill", "durable", -signal.SIGKILL, range(0, 1), range(0, 1)),  # type: ignore[arg-type]
        Run(final, "final", None, 0, range(1, 2), range(1, 1)),  # type: ignore[arg-type]
    ]
    expected = {A: Expected("completed", "COMPLETED"), B: Expected("completed", "COMPLETED")}
    status = [{"module": m, "job_id": j, "outcome": "completed"} for m, j in (A, B)]
    return Loop(expected, runs, [A, B], ["ok"], 0, status)  # type: ignore[arg-type]


def lose_a_finish(loop: Loop) -> None:
    for run in loop.runs:
        run.process.events[:] = [e for e in run.process.events if e.get("job_id") != B[1]]


def repeat_a_finish(loop: Loop) -> None:
    loop.runs[1].process.events[1] = finished(A)


def repeat_a_transition(loop: Loop) -> None:
    loop.runs[1].process.events.insert(2, changed(A, None, "COMPLETED"))


def replay_after_a_clean_stop(loop: Loop) -> None:
    loop.runs[0].stop, loop.runs[0].exit_code = "term", 0


def replay_after_polling(loop: Loop) -> None:
    events = loop.runs[1].process.events
    events.append(events.pop(1))


def replay_twice(loop: Loop) -> None:
    loop.runs[1].process.events.insert(1, finished(A, replayed=True))


def end_wrongly(loop: Loop) -> None:
    loop.runs[1].process.events[3] = {**finished(B), "outcome": "failed"}


def poll_after_the_end(loop: Loop) -> None:
    loop.requests[1] = A


def refresh_again(loop: Loop) -> None:
    loop.runs[1].tokens = range(1, 2)


def crash(loop: Loop) -> None:
    loop.runs[1].process.stderr = "Traceback (most recent call last):\n"
    loop.runs[1].exit_code = 1


def corrupt_the_state(loop: Loop) -> None:
    loop.integrity = ["*** in database main ***", "Page 7 is never used"]


def forget_a_job(loop: Loop) -> None:
    loop.status_jobs.pop()


@pytest.mark.parametrize(
    ("breach", "reported"),
    [
        (lose_a_finish, "job.finished lost"),
        (repeat_a_finish, "job.finished repeated without replayed"),
        (repeat_a_transition, "job.status_changed repeated without replayed"),
        (replay_after_a_clean_stop, "replayed events after a clean start or stop"),
        (replay_after_polling, "replayed event came after the run started polling"),
        (replay_twice, "the same event replayed twice"),
        (end_wrongly, "ended ["),
        (poll_after_the_end, "polled ('Leads', '1') after its job.finished"),
        (refresh_again, "run 1 refreshed the token run 0 had kept"),
        (crash, "run 1 printed a traceback"),
        (corrupt_the_state, "integrity_check"),
        (forget_a_job, "status --json shows 1 job(s)"),
    ],
)
def test_the_checks_catch_each_breach(breach: Callable[[Loop], None], reported: str) -> None:
    assert violations(healthy()) == []
    loop = healthy()
    breach(loop)
    found = violations(loop)
    assert any(reported in line for line in found), found
