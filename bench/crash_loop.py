"""Crash-restart loop: SIGKILL the real watcher at seeded random moments, restart it on the same
state file, and check from the event streams, the simulator's request log and the state file that
nothing was lost and nothing repeated beyond the at-least-once window.

Kill moments are counted, never timed: after a random number of simulator requests, of events the
run printed, or of durable events (`job.status_changed`, `job.finished`) it printed — the last
lands the kill right after a commit, where replays come from. Now and then a run is stopped with
SIGTERM instead: a clean stop must leave nothing to replay. The watcher refreshes its own token,
so the loop also shows that the kept token spares Zoho's scarce refreshes.

    python bench/crash_loop.py [--kills 300] [--seed 1] [--jobs N (default: 0.8 per kill)]

Prints the figures and any violation, writes bench/results/crash_loop.json, exits 1 on a
violation. tests/test_crash_loop.py runs the same loop with 50 kills.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# A bare `python bench/crash_loop.py` must find the packages without installing them.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness import (
    CREDENTIALS_ENV,
    PRINTED,
    Event,
    WatcherProcess,
    refresh_auth,
    write_config,
)
from watcher.simulator import Simulator

RESULTS = Path(__file__).resolve().parent / "results" / "crash_loop.json"
DURABLE = ("job.status_changed", "job.finished")
TERMINAL = ("COMPLETED", "FAILED")
MODULES = ("Leads", "Deals", "Contacts", "Accounts")
KILL_MODES = ("requests", "events", "durable")
# Jobs enough that some are still running at the last kill while most end during the loop.
JOBS_PER_KILL = 0.8
TERM_SHARE = 0.08  # share of stops that are SIGTERM rather than SIGKILL
# Fast polling, so that many polls fit between kills; the rate limit is never the bottleneck.
POLLING = {
    "interval": "20ms",
    "max_interval": "100ms",
    "rate_limit": 400,
    "backoff_initial": "20ms",
    "backoff_max": "100ms",
}

Spec = tuple[str, str]


@dataclass(frozen=True)
class Expected:
    """How a job must end: its outcome and the status its job.finished carries."""

    outcome: str
    status: str | None


@dataclass
class Run:
    """One watcher process; `requests` and `tokens` index the simulator's logs during its life."""

    process: WatcherProcess
    stop: str  # "kill", "term" or "final"
    mode: str | None = None
    exit_code: int | None = None
    requests: range = range(0)
    tokens: range = range(0)


@dataclass
class Loop:
    """Everything a loop observed, for `violations` and `figures`."""

    expected: dict[Spec, Expected]
    runs: list[Run] = field(default_factory=list)
    requests: list[tuple[str | None, str | None]] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    status_code: int | None = None
    status_jobs: list[dict[str, object]] = field(default_factory=list)
    wall_s: float = 0.0


def plan_jobs(sim: Simulator, rng: random.Random, count: int) -> dict[Spec, Expected]:
    """Scripted jobs of every ending (completed, failed, rejected, not found), some with transient
    errors on the way, and a few that follow the clock; scripts long enough to outlast the kills."""
    expected = {}
    for n in range(count):
        spec = (MODULES[n % len(MODULES)], str(7000 + n))
        shape = rng.choice(("completed", "completed", "failed", "flaky", "rejected", "timed"))
        if n == 0:
            shape = "not_found"
        expected[spec] = _plan_job(sim, spec, shape, rng)
    return expected


def _plan_job(sim: Simulator, spec: Spec, shape: str, rng: random.Random) -> Expected:
    if shape == "timed":
        outcome = rng.choice(TERMINAL)
        sim.add_timed_job(*spec, duration=rng.uniform(0.5, 8.0), outcome=outcome, failed=10)
        return Expected(outcome.lower(), outcome)
    if shape == "not_found":
        sim.add_job(*spec, ["notfound204"])
        return Expected("not_found", None)
    length = rng.randint(3, 40)
    running = [f"RUNNING:{100 * i // length},0,0,100" for i in range(length)]
    if shape == "flaky":
        for _ in range(length // 4 + 1):
            running.insert(rng.randrange(len(running) + 1), rng.choice(("500", "502", "reset")))
    script = ["SCHEDULED"] * rng.randint(0, 3) + running
    if shape == "rejected":
        sim.add_job(*spec, [*script, "INVALID_MODULE"])
        return Expected("rejected", "RUNNING")
    final = "FAILED" if shape == "failed" else "COMPLETED"
    sim.add_job(*spec, [*script, f"{final}:60,40,0,100"])
    return Expected(final.lower(), final)


async def crash_loop(sim: Simulator, workdir: Path, *, kills: int, seed: int, jobs: int) -> Loop:
    """Run the loop to `kills` SIGKILLs (fewer if every job ended first), then a final run with
    --exit-when-done, then the integrity check and `status --json` on the state file."""
    rng = random.Random(seed)
    loop = Loop(plan_jobs(sim, rng, jobs))
    state = workdir / "state.db"
    config = write_config(
        workdir / "watcher.yaml",
        sim.url,
        sorted(loop.expected),
        auth=refresh_auth(sim.url),
        api_domain=None,
        top={"state_path": str(state), "reload_interval": "1h"},
        **POLLING,
    )
    started = time.monotonic()
    while sum(run.stop == "kill" for run in loop.runs) < kills and not _all_finished(loop):
        stop = "term" if rng.random() < TERM_SHARE else "kill"
        await _one_run(loop, sim, config, stop, rng)
    await _one_run(loop, sim, config, "final", rng)
    loop.wall_s = time.monotonic() - started
    loop.requests = [(r.module, r.job_id) for r in sim.requests]
    loop.integrity = _integrity(state)
    loop.status_code, stdout = await _status(config)
    if loop.status_code == 0:
        loop.status_jobs = json.loads(stdout)
    return loop


async def _status(config: Path) -> tuple[int, str]:
    """`status --json`: one line that outgrows the harness's line reader for many jobs."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "watcher",
        "status",
        "--config",
        str(config),
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    stdout, stderr = await process.communicate()
    PRINTED.extend([stdout.decode(), stderr.decode()])
    assert process.returncode is not None
    return process.returncode, stdout.decode()


async def _one_run(loop: Loop, sim: Simulator, config: Path, stop: str, rng: random.Random) -> None:
    first_request, first_token = len(sim.requests), len(sim.token_requests)
    args = ("--exit-when-done",) if stop == "final" else ()
    process = await WatcherProcess.start("run", "--config", str(config), *args)
    run = Run(process, stop)
    loop.runs.append(run)
    if stop != "final":
        run.mode = rng.choice(KILL_MODES)
        await _first_of(_moment(run, sim, rng), process.wait_for(lambda _: _all_finished(loop)))
        if stop == "kill":
            process.kill()
        else:
            process.process.terminate()
    run.exit_code = await process.finish()
    run.requests = range(first_request, len(sim.requests))
    run.tokens = range(first_token, len(sim.token_requests))


def _moment(run: Run, sim: Simulator, rng: random.Random) -> Awaitable[object]:
    """What to wait for before stopping `run`, by its kill mode."""
    if run.mode == "requests":
        target = len(sim.requests) + rng.randint(1, 25)
        return sim.wait_for(lambda s: len(s.requests) >= target)
    names = DURABLE if run.mode == "durable" else None
    count = rng.randint(1, 4 if names else 10)
    return run.process.wait_for(
        lambda events: sum(names is None or e["event"] in names for e in events) >= count
    )


async def _first_of(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()  # a stream that ended early (a crash) fails the loop here
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _all_finished(loop: Loop) -> bool:
    announced = {_spec(e) for run in loop.runs for e in run.process.named("job.finished")}
    return announced >= loop.expected.keys()


def _integrity(state: Path) -> list[str]:
    connection = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
    try:
        return [row[0] for row in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()


def _spec(event: Event) -> Spec:
    return (event["module"], event["job_id"])


def _transition(event: Event) -> tuple[object, ...]:
    return (*_spec(event), event.get("previous_status"), event["status"])


# --- the checks ---------------------------------------------------------------------------------


def violations(loop: Loop) -> list[str]:
    """Every broken promise the loop observed, one line each; empty when all held."""
    return [
        *_process_violations(loop),
        *_event_violations(loop),
        *_replay_violations(loop),
        *_request_violations(loop),
        *_state_violations(loop),
    ]


def _process_violations(loop: Loop) -> list[str]:
    """Every run died of its signal (or ended with the right code), printing only JSON lines."""
    found = []
    failed = any(e.outcome != "completed" for e in loop.expected.values())
    wanted = {"kill": -signal.SIGKILL, "term": 0, "final": 1 if failed else 0}
    for index, run in enumerate(loop.runs):
        if run.exit_code != wanted[run.stop]:
            found.append(f"run {index} ({run.stop}) exited {run.exit_code}")
        if "Traceback" in run.process.stderr or run.process.not_json:
            found.append(f"run {index} printed a traceback or a line that is not JSON")
    return found


def _event_violations(loop: Loop) -> list[str]:
    """No job or terminal event lost, the right ending, no non-replayed repetition."""
    found = []
    events = [e for run in loop.runs for e in run.process.events]
    for spec, expected in sorted(loop.expected.items()):
        finished = [e for e in events if e["event"] == "job.finished" and _spec(e) == spec]
        if not finished:
            found.append(f"{spec}: job.finished lost")
        if sum(not e.get("replayed") for e in finished) > 1:
            found.append(f"{spec}: job.finished repeated without replayed: true")
        endings = {(e["outcome"], e["status"]) for e in finished}
        if endings - {(expected.outcome, expected.status)}:
            found.append(f"{spec}: ended {sorted(map(str, endings))}, expected {expected}")
        changes = [e for e in events if e["event"] == "job.status_changed" and _spec(e) == spec]
        fresh = [_transition(e) for e in changes if not e.get("replayed")]
        if len(fresh) != len(set(fresh)):
            found.append(f"{spec}: a job.status_changed repeated without replayed: true")
        if expected.status in TERMINAL and all(e["status"] != expected.status for e in changes):
            found.append(f"{spec}: job.status_changed to {expected.status} lost")
    return found


def _replay_violations(loop: Loop) -> list[str]:
    """Replays only where the at-least-once window allows them: first thing in a run, at most
    one per event and run, and never after a clean stop of a run that had got as far as polling
    (and so had said everything owed to it and everything it committed)."""
    found = []
    for index, run in enumerate(loop.runs):
        events = [e for e in run.process.events if e["event"].startswith("job.")]
        replayed = [e for e in events if e.get("replayed")]
        previous = loop.runs[index - 1] if index else None
        if replayed and (previous is None or (previous.stop != "kill" and _polled(previous))):
            found.append(f"run {index}: replayed events after a clean start or stop")
        if events[: len(replayed)] != replayed:
            found.append(f"run {index}: a replayed event came after the run started polling")
        keys = [(e["event"], *_transition(e)) for e in replayed]
        if len(keys) != len(set(keys)):
            found.append(f"run {index}: the same event replayed twice")
    return found


def _polled(run: Run) -> bool:
    """Whether `run` printed an event only a poll causes (so it had finished its start-up)."""
    caused = ("job.status_changed", "job.finished", "job.progress", "job.poll_failed")
    return any(e["event"] in caused and not e.get("replayed") for e in run.process.events)


def _request_violations(loop: Loop) -> list[str]:
    """No poll for a job once a run announced its end (replays included), and token refreshes
    only until a run had used a token: from then on the kept token serves every restart."""
    found = []
    for index, run in enumerate(loop.runs):
        ended_before = {
            _spec(e) for past in loop.runs[:index] for e in past.process.named("job.finished")
        }
        ended_before |= {_spec(e) for e in run.process.named("job.finished") if e.get("replayed")}
        asked = {loop.requests[i] for i in run.requests}
        for spec in sorted(ended_before & asked):
            found.append(f"run {index}: polled {spec} after its job.finished")
    used = [index for index, run in enumerate(loop.runs) if run.requests]
    refreshing = [index for index, run in enumerate(loop.runs) if run.tokens]
    if used and refreshing and max(refreshing) > used[0]:
        found.append(f"run {max(refreshing)} refreshed the token run {used[0]} had kept")
    return found


def _state_violations(loop: Loop) -> list[str]:
    """The state file is intact, and `status` shows every job with its outcome."""
    found = []
    if loop.integrity != ["ok"]:
        found.append(f"state file integrity_check: {loop.integrity[:3]}")
    if loop.status_code != 0:
        found.append(f"status --json exited {loop.status_code}")
    shown = {(job["module"], job["job_id"]): job["outcome"] for job in loop.status_jobs}
    wanted = {spec: expected.outcome for spec, expected in loop.expected.items()}
    if shown != wanted:
        found.append(f"status --json shows {len(shown)} job(s), not the expected outcomes")
    return found


# --- figures ------------------------------------------------------------------------------------


def figures(loop: Loop) -> dict[str, object]:
    """What the loop exercised: how often it killed, in which ways, and what was replayed."""
    events = [e for run in loop.runs for e in run.process.events]
    replayed = Counter(e["event"] for e in events if e.get("replayed"))
    killed = [run for run in loop.runs if run.stop == "kill"]
    first_ends = {
        _spec(e): index
        for index, run in reversed(list(enumerate(loop.runs)))
        for e in run.process.named("job.finished")
    }
    return {
        "kills": len(killed),
        "kills_by_mode": dict(Counter(run.mode for run in killed)),
        "clean_stops": sum(run.stop == "term" for run in loop.runs),
        "runs": len(loop.runs),
        "jobs": len(loop.expected),
        "outcomes": dict(Counter(e.outcome for e in loop.expected.values())),
        "jobs_ended_before_the_final_run": sum(
            index < len(loop.runs) - 1 for index in first_ends.values()
        ),
        "api_requests": len(loop.requests),
        "token_requests": sum(len(run.tokens) for run in loop.runs),
        "events": len(events),
        "replayed_job_finished": replayed["job.finished"],
        "replayed_job_status_changed": replayed["job.status_changed"],
        "wall_s": round(loop.wall_s, 1),
    }


async def _bench(kills: int, seed: int, jobs: int) -> tuple[dict[str, object], list[str]]:
    with tempfile.TemporaryDirectory() as workdir:
        async with Simulator() as sim:
            loop = await crash_loop(sim, Path(workdir), kills=kills, seed=seed, jobs=jobs)
    return figures(loop), violations(loop)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SIGKILL the watcher again and again.")
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, help="default: enough to outlast the kills")
    args = parser.parse_args(argv)
    # Each SIGKILL leaves the simulator an answer it cannot deliver; aiohttp logs each one.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    jobs = args.jobs or max(int(JOBS_PER_KILL * args.kills), 10)
    found, problems = asyncio.run(_bench(args.kills, args.seed, jobs))
    for key, value in found.items():
        print(f"{key:32} {value}")
    for problem in problems:
        print(f"VIOLATION  {problem}")
    print("PASS" if not problems else "FAIL")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {"arguments": vars(args), "figures": found, "violations": problems}
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
