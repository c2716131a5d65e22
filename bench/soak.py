"""Chaos soak: the real watcher CLI against a faulty simulator, checked from what both recorded.

Thousands of timed jobs (some unknown to Zoho, some failing) are watched by `python -m watcher run
--exit-when-done` with a state file, while the in-process simulator injects 429 bursts, 5xx,
resets, hangs, truncated and malformed bodies, not-found answers, token expiry and slow refreshes.
The watcher's event stream and the simulator's request log must then agree on everything a user
relies on (see `check`), and the watcher's resident memory must stay flat.

    python bench/soak.py [--jobs 2000] [--minutes 10] [--seed 1] [--rates hang=0.01,reset=0.02]

Prints a table, writes bench/results/soak.json, exits 1 on any violation. tests/test_soak.py runs
the same code on a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# A bare `python bench/soak.py` must find the package without installing it.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from watcher.simulator import NOT_FOUND_SHAPES, Chaos, RequestRecord, Simulator  # noqa: E402
from watcher.zoho_api import MASS_UPDATE  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"

# Rates per API request (slow_refresh: per token request); each kind shows up in a ten-minute run
# without keeping the watcher from making progress. Token expiry least often: every expiry costs a
# refresh, and Zoho grants ten in ten minutes. At 0.002 a run needed a dozen or more, the watcher
# rightly held the rest back until the window let them through, and polled nothing meanwhile: the
# run took 18-19 minutes of its 21-minute deadline.
DEFAULT_CHAOS = Chaos(
    burst_429=0.003,
    server_error=0.02,
    reset=0.01,
    hang=0.003,
    truncated=0.01,
    malformed=0.01,
    not_found=0.01,
    token_expiry=0.0005,  # a token revoked after some 2,000 uses
    slow_refresh=0.5,
    refresh_delay=0.5,  # slow, but within the request timeout: a hang is another fault
)
MODULES = ("Leads", "Deals", "Contacts")
UNKNOWN_SHARE = 0.03  # jobs Zoho never heard of: they must end not_found
FAILED_SHARE = 0.2
RATE_LIMIT = 60
RATE_PERIOD_S = 1.0
MAX_CONCURRENCY = 5
NOT_FOUND_ATTEMPTS = 3
REQUEST_TIMEOUT_S = 1.0  # what a hang costs: one slot for this long
# Arrival times at the simulator lag the watcher's rate-limit clock unevenly: both event loops
# are busy (the watcher writing events, this process reading them). Measured: up to ~60 ms.
# The short soak in the suite met 60 in a 0.9 s window in every run, the limit itself: a stall of
# a tenth of a second on a loaded CI machine would fail it. So 0.2 s, three times that measure.
LOOPBACK_JITTER_S = 0.2
WARM_UP_SHARE = 0.2
RSS_GROWTH_LIMIT = 0.10
# Beyond its planned length, a run that has not ended has lost a job or hangs.
OVERRUN_FACTOR = 2.0
CREDENTIALS = {
    "ZOHO_REFRESH_TOKEN": "soak-refresh",
    "ZOHO_CLIENT_ID": "soak-client",
    "ZOHO_CLIENT_SECRET": "soak-secret",
}

Event = dict[str, Any]
Job = tuple[str, str]


@dataclass(frozen=True)
class Plan:
    """One soak run: how many jobs, how long they take to end, and the chaos they meet."""

    jobs: int = 2000
    minutes: float = 10.0
    seed: int = 1
    chaos: Chaos = DEFAULT_CHAOS

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0

    def polling(self) -> dict[str, object]:
        """Polling settings scaled to the run, so a short run is as dense as a long one."""
        return {
            "interval": f"{max(0.2, self.seconds / 150):.3f}s",
            "max_interval": f"{max(1.0, self.seconds / 20):.3f}s",
            "rate_limit": RATE_LIMIT,
            "rate_period": f"{RATE_PERIOD_S}s",
            "max_concurrency": MAX_CONCURRENCY,
            "backoff_initial": "250ms",
            "backoff_max": "2s",
            "request_timeout": f"{REQUEST_TIMEOUT_S}s",
            "not_found_attempts": NOT_FOUND_ATTEMPTS,
        }


@dataclass
class WatcherRun:
    """What the watcher process left behind: its output, exit code and memory over time."""

    events: list[Event] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    stderr: str = ""
    exit_code: int | None = None
    elapsed_s: float = 0.0
    rss_kb: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, kB)


@dataclass
class Report:
    """Figures of one run and every invariant it broke."""

    figures: dict[str, object]
    violations: list[str]


def add_jobs(sim: Simulator, plan: Plan) -> list[Job]:
    """Every job the watcher is told about; the unknown ones are left out of the simulator.

    Jobs end spread over the run (clocks start at each job's first poll), a few at once.
    """
    rng = random.Random(plan.seed)
    jobs = []
    for index in range(plan.jobs):
        job = (MODULES[index % len(MODULES)], f"{plan.seed}{index:07d}")
        jobs.append(job)
        if rng.random() < UNKNOWN_SHARE:
            continue
        total = rng.randint(10, 50_000)
        failed_job = rng.random() < FAILED_SHARE
        sim.add_timed_job(
            *job,
            duration=0.0 if rng.random() < 0.05 else rng.uniform(0.0, 0.85 * plan.seconds),
            total=total,
            scheduled_for=rng.uniform(0.0, 0.1 * plan.seconds) if rng.random() < 0.7 else 0.0,
            outcome="FAILED" if failed_job else "COMPLETED",
            failed=rng.randint(1, total) if failed_job else rng.randint(0, total // 100),
        )
    return jobs


def write_config(path: Path, url: str, jobs: Sequence[Job], plan: Plan) -> Path:
    auth = {
        "refresh_token": "${ZOHO_REFRESH_TOKEN}",
        "client_id": "${ZOHO_CLIENT_ID}",
        "client_secret": "${ZOHO_CLIENT_SECRET}",
        "accounts_url": url,
    }
    document = {
        "state_path": str(path.parent / "state.db"),
        "zoho": {"api_domain": url, "auth": auth},
        "polling": plan.polling(),
        "jobs": [{"module": module, "job_id": job_id} for module, job_id in jobs],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


async def run_watcher(config: Path, deadline_s: float, sample_every_s: float) -> WatcherRun:
    """Run the CLI to its end (killed past `deadline_s`), reading its output and sampling RSS."""
    env = {**os.environ, **CREDENTIALS, "PYTHONPATH": str(ROOT)}
    args = ("-m", "watcher", "run", "--config", str(config), "--exit-when-done")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    run = WatcherRun()
    started = time.monotonic()
    reading = asyncio.gather(_read_events(process, run), _read_stderr(process, run))
    try:
        async with asyncio.timeout(deadline_s):
            while process.returncode is None:
                _sample_rss(process.pid, time.monotonic() - started, run)
                try:
                    await asyncio.wait_for(asyncio.shield(process.wait()), sample_every_s)
                except TimeoutError:
                    continue
    except TimeoutError:
        process.kill()
    await reading
    run.exit_code = await process.wait()
    run.elapsed_s = time.monotonic() - started
    return run


async def _read_events(process: asyncio.subprocess.Process, run: WatcherRun) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        line = raw.decode()
        run.lines.append(line)
        try:
            run.events.append(json.loads(line))
        except ValueError:
            continue  # kept in `lines`: `check` reports it


async def _read_stderr(process: asyncio.subprocess.Process, run: WatcherRun) -> None:
    assert process.stderr is not None
    run.stderr = (await process.stderr.read()).decode()


def _sample_rss(pid: int, at: float, run: WatcherRun) -> None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return  # just exited
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            run.rss_kb.append((at, int(line.split()[1])))


async def run_soak(plan: Plan, workdir: Path) -> tuple[Report, Simulator, WatcherRun]:
    async with Simulator(
        tokens=(),
        refresh_token=CREDENTIALS["ZOHO_REFRESH_TOKEN"],
        client_id=CREDENTIALS["ZOHO_CLIENT_ID"],
        client_secret=CREDENTIALS["ZOHO_CLIENT_SECRET"],
        chaos=plan.chaos,
    ) as sim:
        jobs = add_jobs(sim, plan)
        config = write_config(workdir / "soak.yaml", sim.url, jobs, plan)
        deadline = OVERRUN_FACTOR * plan.seconds + 60.0
        run = await run_watcher(config, deadline, sample_every_s=max(0.5, plan.seconds / 200))
    return check(sim, jobs, run, plan), sim, run


def check(sim: Simulator, jobs: Sequence[Job], run: WatcherRun, plan: Plan) -> Report:
    """Every invariant of the soak, from the watcher's events and the simulator's records."""
    by_job: dict[Job, list[RequestRecord]] = defaultdict(list)
    for record in sim.requests:
        by_job[record.module or "", record.job_id or ""].append(record)
    events_by_job: dict[Job, list[Event]] = defaultdict(list)
    for event in run.events:
        if "job_id" in event:
            events_by_job[event.get("module", ""), event["job_id"]].append(event)
    violations: list[str] = []
    for job in jobs:
        expected = _expected_outcome(sim.final_status(*job))
        requests, events = by_job.get(job, []), events_by_job.get(job, [])
        violations += _check_finished(job, events, expected)
        violations += _check_transitions(job, events, sim.served(*job))
        violations += _check_no_late_requests(job, requests, sim.final_status(*job))
    rate = _max_per_window(sim.requests, RATE_PERIOD_S - LOOPBACK_JITTER_S)
    max_in_flight = max((r.in_flight for r in sim.requests), default=0)
    if rate > RATE_LIMIT:
        violations.append(f"{rate} requests within {RATE_PERIOD_S} s (limit {RATE_LIMIT})")
    if max_in_flight > MAX_CONCURRENCY:
        violations.append(f"{max_in_flight} requests in flight (cap {MAX_CONCURRENCY})")
    memory = _memory(run.rss_kb)
    if memory["growth"] > RSS_GROWTH_LIMIT:
        violations.append(f"RSS grew {memory['growth']:.1%} after warm-up")
    violations += _check_output(run, sim, jobs)
    figures: dict[str, object] = {
        "jobs": len(jobs),
        "minutes": round(run.elapsed_s / 60, 2),
        "requests": len(sim.requests),
        "faults": dict(sorted(sim.faults.items())),
        "429s": sum(1 for r in sim.requests if r.http_status == 429),
        "refreshes": sum(1 for e in run.events if e["event"] == "auth.token_refreshed"),
        "max_in_flight": max_in_flight,
        "max_per_window": rate,
        "max_per_window_exact": _max_per_window(sim.requests, RATE_PERIOD_S),
        "rss_kb": memory,
        "events": len(run.events),
        "outcomes": dict(Counter(e["outcome"] for e in run.events if e["event"] == "job.finished")),
        "violations": len(violations),
    }
    return Report(figures, violations)


def _expected_outcome(final_status: str | None) -> str:
    return "not_found" if final_status is None else MASS_UPDATE.terminal[final_status]


def _check_finished(job: Job, events: list[Event], expected: str) -> list[str]:
    outcomes = [e["outcome"] for e in events if e["event"] == "job.finished"]
    if outcomes != [expected]:
        return [f"{job}: job.finished outcomes {outcomes}, expected [{expected!r}]"]
    return []


def _check_transitions(job: Job, events: list[Event], served: list[str]) -> list[str]:
    """The announced statuses are exactly the changes among the statuses the job delivered."""
    announced = [e["status"] for e in events if e["event"] == "job.status_changed"]
    expected = _changes(served)
    if announced == expected:
        return []
    what = "repeats a status" if _changes(announced) != announced else "differs from"
    return [f"{job}: status_changed {announced} {what} the statuses served {expected}"]


def _changes(statuses: Iterable[str]) -> list[str]:
    changes: list[str] = []
    for status in statuses:
        if not changes or changes[-1] != status:
            changes.append(status)
    return changes


def _check_no_late_requests(
    job: Job, requests: list[RequestRecord], final_status: str | None
) -> list[str]:
    """Nothing may be asked about a job after the answer that ended it: its final status, or the
    not-found that made `not_found_attempts` in a row (an unknown job never shows a status)."""
    delivered = [i for i, r in enumerate(requests) if r.http_status is not None]
    if final_status is None:
        ends = [i for i in delivered if requests[i].answer in NOT_FOUND_SHAPES]
        end = ends[NOT_FOUND_ATTEMPTS - 1] if len(ends) >= NOT_FOUND_ATTEMPTS else None
    else:
        end = next((i for i in delivered if requests[i].status == final_status), None)
    late = len(requests) - 1 - end if end is not None else 0
    return [f"{job}: {late} request(s) after the answer that ended it"] if late else []


def _max_per_window(requests: Sequence[RequestRecord], window: float) -> int:
    """The most API requests that arrived within any `window` seconds."""
    arrivals = sorted(r.at for r in requests)
    return max(
        (bisect.bisect_left(arrivals, at + window) - i for i, at in enumerate(arrivals)),
        default=0,
    )


def _memory(samples: list[tuple[float, int]]) -> dict[str, float]:
    """RSS after warm-up against its value when warm-up ended; a leak shows as steady growth."""
    if not samples:
        return {"start": 0, "end": 0, "peak": 0, "growth": 0.0}
    warm_up_end = WARM_UP_SHARE * samples[-1][0]
    after = [kb for at, kb in samples if at >= warm_up_end]
    return {
        "start": samples[0][1],
        "after_warm_up": after[0],
        "end": samples[-1][1],
        "peak": max(kb for _, kb in samples),
        "growth": round(max(after) / after[0] - 1, 4),
    }


def _check_output(run: WatcherRun, sim: Simulator, jobs: Sequence[Job]) -> list[str]:
    problems = []
    expected_exit = 0 if all(sim.final_status(*job) == "COMPLETED" for job in jobs) else 1
    if run.exit_code != expected_exit:
        problems.append(f"watcher exit code {run.exit_code}, expected {expected_exit}")
    output = "".join(run.lines) + run.stderr
    if "Traceback" in output:
        problems.append("a traceback in the watcher's output")
    problems += [f"not a JSON event: {line[:120]!r}" for line in _not_json(run.lines)]
    secrets = [CREDENTIALS["ZOHO_REFRESH_TOKEN"], CREDENTIALS["ZOHO_CLIENT_SECRET"]]
    leaked = sum(1 for secret in [*secrets, *sim.issued_tokens] if secret in output)
    if leaked:
        problems.append(f"{leaked} secret(s) in the watcher's output")
    return problems


def _not_json(lines: Iterable[str]) -> list[str]:
    bad = []
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            bad.append(line)
    return bad


def parse_rates(text: str, seed: int) -> Chaos:
    """`name=value,...` over DEFAULT_CHAOS; names are the `Chaos` fields."""
    names = {f.name: f for f in dataclasses.fields(Chaos) if f.name != "seed"}
    changes: dict[str, Any] = {"seed": seed}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if name.strip() not in names:
            raise argparse.ArgumentTypeError(f"unknown rate {name!r}; known: {', '.join(names)}")
        changes[name.strip()] = int(value) if name.strip() == "burst_max" else float(value)
    return dataclasses.replace(DEFAULT_CHAOS, **changes)


def print_table(report: Report) -> None:
    rows = []
    for key, value in report.figures.items():
        if isinstance(value, dict):
            rows += [(f"{key}.{sub}", sub_value) for sub, sub_value in value.items()]
        else:
            rows.append((key, value))
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for violation in report.violations[:20]:
        print(f"VIOLATION: {violation}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=Plan.jobs)
    parser.add_argument("--minutes", type=float, default=Plan.minutes)
    parser.add_argument("--seed", type=int, default=Plan.seed)
    parser.add_argument("--rates", default="", help="e.g. hang=0.01,reset=0.02 over the defaults")
    args = parser.parse_args(argv)
    try:
        chaos = parse_rates(args.rates, args.seed)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        parser.error(str(exc))
    plan = Plan(args.jobs, args.minutes, args.seed, chaos)
    with tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        report, _, _ = asyncio.run(run_soak(plan, Path(workdir)))
    print_table(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "plan": {**dataclasses.asdict(plan), "polling": plan.polling()},
        "figures": report.figures,
        "violations": report.violations[:200],
    }
    RESULTS.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
