"""Ten thousand jobs in one watcher: CPU when polling flat out against a bare aiohttp loop, and
CPU and memory when no job is due.

    python bench/scale.py [--jobs 10000] [--concurrency 10] [--idle-seconds 60] [--rounds 3]
                          [--state]

Every process is separate: the simulator (bench/simserver.py), the bare client
(bench/bare_client.py) and the watcher (`python -m watcher run`, events written to a file), so
each one's CPU is its own (os.wait4's rusage, or /proc for a window of a running process).

- Flat out: every job answers COMPLETED, so the watcher's whole run — start-up, config load, one
  poll per job, three events per job, exit — is compared with the bare client making the same
  requests, with the same header and concurrency, to the same server, in the same rounds. The
  floor client (bench/floor_client.py) runs in the same rounds too: the bare loop plus only what
  no watcher can leave out (the config load, each answer's JSON, each job's three event lines).
  Its ratio is the least any design on this stack can measure; it is shown, not a target.
- Idle: every job answers RUNNING and the schedule is fixed at an hour, so once each job has been
  polled once nothing is due; the watcher's CPU is then measured over `--idle-seconds`, and then
  the CPU it takes to notice, re-read and apply its config with one job added (a reload). Once
  more with the jobs in a jobs_dir, a file each, which every reload check looks at.

`--state` runs each watcher phase a second time with a state file. Prints a table, writes
bench/results/scale.json, exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import IO

# A bare `python bench/scale.py` must find the package without installing it (and finds
# simserver.py beside it as the script's own directory).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from simserver import FINISHING, RUNNING, TOKEN, job_ids

from watcher.config import load_all
from watcher.zoho_api import MASS_UPDATE

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"

# Targets, from the issue (on a 2-core machine).
CPU_RATIO_TARGET = 1.5  # watcher CPU / bare aiohttp CPU, flat out
IDLE_CPU_TARGET = 1.0  # % of one core when nothing is due
RSS_TARGET_MB = 100.0  # peak resident memory, idle phase

BARE, WATCHER, WITH_STATE = "bare aiohttp", "watcher", "watcher + state"
FLOOR = "floor: config+JSON+events"  # the bare loop and what no watcher can skip; no target
JOB_FILES = "watcher, a file a job"  # idle only: the jobs in jobs_dir, one file each
ROUND_TIMEOUT_S = 600.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """What one process cost: CPU seconds (user + sys), wall seconds, peak RSS in MB."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float


@dataclass(frozen=True)
class Idle:
    """A watcher with nothing due, measured over a window after its first round of polls."""

    cpu_percent: float
    window_s: float
    rss_mb: float
    peak_rss_mb: float
    first_round_s: float
    reload_cpu_s: float  # noticing, re-reading and applying the config with one job more
    peak_rss_after_reload_mb: float


class SimServer:
    """bench/simserver.py in a subprocess; `served()` asks how many requests it has answered."""

    def __init__(self, jobs: int) -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "simserver.py"), "--jobs", str(jobs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self._line().strip()

    def served(self) -> int:
        self._stdin().write("stats\n")
        self._stdin().flush()
        requests: int = json.loads(self._line())["requests"]
        return requests

    def close(self) -> None:
        self._stdin().close()
        self._process.wait(timeout=30)

    def _stdin(self) -> IO[str]:
        assert self._process.stdin is not None
        return self._process.stdin

    def _line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("simserver exited")
        return line


@contextmanager
def sim_server(jobs: int) -> Iterator[SimServer]:
    server = SimServer(jobs)
    try:
        yield server
    finally:
        server.close()


def write_config(
    path: Path,
    url: str,
    module: str,
    args: argparse.Namespace,
    polling: dict[str, str],
    state_path: Path | None,
) -> Path:
    """A config in the block style people write, the token from the environment as advised."""
    lines = [
        "zoho:",
        f"  api_domain: {url}",
        "  auth:",
        "    access_token: ${BENCH_TOKEN}",
        "polling:",
        # The rate limit must not be what is measured: the comparison is CPU.
        "  rate_limit: 1000000",
        "  rate_period: 1s",
        f"  max_concurrency: {args.concurrency}",
        *(f"  {key}: {value}" for key, value in polling.items()),
    ]
    if state_path is not None:
        lines.append(f"state_path: {state_path}")
    lines.append("jobs:")
    for job_id in job_ids(args.jobs):
        lines += [f"  - module: {module}", f'    job_id: "{job_id}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def urls(url: str, module: str, count: int) -> list[str]:
    """The exact URLs the watcher requests."""
    path = MASS_UPDATE.path.format(version="v2", module=module)
    return [f"{url}{path}?{MASS_UPDATE.id_param}={job_id}" for job_id in job_ids(count)]


def measure(argv: Sequence[str], stdout: IO[str] | int, expect: int) -> Usage:
    """Run `argv` to the end; its own CPU and peak RSS, from the kernel's accounting."""
    env = {**os.environ, "BENCH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=stdout, env=env, cwd=ROOT)
    _, status, rusage = os.wait4(process.pid, 0)
    wall = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != expect:
        raise RuntimeError(f"{argv[1:4]} exited {process.returncode}, expected {expect}")
    return Usage(rusage.ru_utime + rusage.ru_stime, wall, rusage.ru_maxrss / 1024)


def watcher_argv(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "watcher", "run", "--config", str(config), *extra]


def flat_out(server: SimServer, argv: Sequence[str], events: Path, jobs: int) -> Usage:
    """A run of the watcher, or of the floor client, that writes each job's events to `events`."""
    before = server.served()
    with events.open("w") as sink:
        usage = measure(argv, sink, expect=0)
    check_counts(server.served() - before, count_events(events, "job.finished"), jobs)
    return usage


def bare(server: SimServer, urls_file: Path, concurrency: int, jobs: int) -> Usage:
    before = server.served()
    argv = [sys.executable, str(ROOT / "bench" / "bare_client.py"), str(urls_file)]
    usage = measure([*argv, str(concurrency)], subprocess.DEVNULL, expect=0)
    check_counts(server.served() - before, jobs, jobs)
    return usage


def floor_argv(config: Path, urls_file: Path, concurrency: int) -> list[str]:
    """The floor client on the watcher's own config and the bare client's URLs."""
    client = ROOT / "bench" / "floor_client.py"
    return [sys.executable, str(client), str(config), str(urls_file), str(concurrency)]


def check_counts(requests: int, finished: int, jobs: int) -> None:
    if requests != jobs or finished != jobs:
        raise RuntimeError(f"expected {jobs} requests and jobs, got {requests} and {finished}")


def count_events(events: Path, name: str) -> int:
    with events.open() as lines:
        return sum(json.loads(line)["event"] == name for line in lines)


def add_to_config(config: Path, job_id: str) -> None:
    with config.open("a") as more:
        more.write(f'  - module: {RUNNING}\n    job_id: "{job_id}"\n')


def add_job_file(jobs_dir: Path, job_id: str) -> None:
    (jobs_dir / f"{job_id}.yaml").write_text(
        f'jobs:\n  - module: {RUNNING}\n    job_id: "{job_id}"\n'
    )


def write_files_config(tmp: Path, url: str, args: argparse.Namespace) -> Path:
    """The idle phase's jobs, one file each in a jobs_dir, as a tool adding jobs one by one
    leaves them: every reload check then looks at ten thousand files."""
    jobs_dir = tmp / "jobs.d"
    jobs_dir.mkdir()
    for job_id in job_ids(args.jobs):
        add_job_file(jobs_dir, job_id)
    none = argparse.Namespace(jobs=0, concurrency=args.concurrency)
    slow = {"interval": "1h", "max_interval": "1h", "schedule": "fixed"}
    config = write_config(tmp / "files.yaml", url, RUNNING, none, slow, None)
    config.write_text(config.read_text().replace("jobs:\n", f"jobs_dir: {jobs_dir}\njobs: []\n"))
    return config


def idle(
    config: Path, events: Path, jobs: int, window_s: float, add: Callable[[str], None]
) -> Idle:
    """Start the watcher, wait for its first round (one job.status_changed per job), watch its
    CPU over `window_s` seconds, then `add` a job and measure the reload."""
    env = {**os.environ, "BENCH_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    started = time.monotonic()
    with events.open("w") as sink:
        process = subprocess.Popen(watcher_argv(config), stdout=sink, env=env, cwd=ROOT)
    try:
        wait_for_events(events, "job.status_changed", jobs, process)
        first_round = time.monotonic() - started
        time.sleep(1.0)  # the last polls' state writes and events settle
        ticks, at = cpu_ticks(process.pid), time.monotonic()
        time.sleep(window_s)
        ticks, at = cpu_ticks(process.pid) - ticks, time.monotonic() - at
        memory = proc_status(process.pid)
        reload_ticks = cpu_ticks(process.pid)
        add(job_ids(jobs + 1)[-1])
        wait_for_events(events, "config.reloaded", 1, process)
        reload_ticks = cpu_ticks(process.pid) - reload_ticks
        after_reload = proc_status(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
    if process.returncode != 0:
        raise RuntimeError(f"idle watcher exited {process.returncode}")
    return Idle(
        cpu_percent=100 * ticks / CLOCK_TICKS / at,
        window_s=at,
        rss_mb=memory["VmRSS"],
        peak_rss_mb=memory["VmHWM"],
        first_round_s=first_round,
        reload_cpu_s=reload_ticks / CLOCK_TICKS,
        peak_rss_after_reload_mb=after_reload["VmHWM"],
    )


def wait_for_events(events: Path, name: str, count: int, process: subprocess.Popen[bytes]) -> None:
    needle = f'"event":"{name}"'  # the watcher writes compact JSON
    seen, deadline = 0, time.monotonic() + ROUND_TIMEOUT_S
    with events.open() as stream:
        while seen < count:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"watcher: {seen}/{count} {name} events, then gave up")
            chunk = stream.read()
            seen += chunk.count(needle)
            if not chunk:
                time.sleep(0.2)


def cpu_ticks(pid: int) -> int:
    """utime + stime of `pid`, in clock ticks (the command name may hold spaces: split after)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of `pid`, in MB."""
    memory = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            memory[key] = int(value.split()[0]) / 1024
    return memory


def median_usage(runs: Sequence[Usage]) -> Usage:
    return Usage(
        statistics.median(run.cpu_s for run in runs),
        statistics.median(run.wall_s for run in runs),
        max(run.peak_rss_mb for run in runs),
    )


def config_load_s(config: Path) -> float:
    os.environ["BENCH_TOKEN"] = TOKEN
    started = time.process_time()
    load_all(config)
    return time.process_time() - started


@dataclass(frozen=True)
class Configs:
    flat: Path  # jobs that end at their first poll
    idle: Path  # jobs that run on, polled hourly


def write_configs(tmp: Path, name: str, url: str, args: argparse.Namespace) -> Configs:
    label = name.replace(" + ", "_")
    fast = {"interval": "10s", "max_interval": "5m", "request_timeout": "30s"}
    slow = {"interval": "1h", "max_interval": "1h", "schedule": "fixed"}

    def config(phase: str, module: str, polling: dict[str, str]) -> Path:
        state = tmp / f"{label}-{phase}.db" if name == WITH_STATE else None  # one file per phase
        return write_config(tmp / f"{label}-{phase}.yaml", url, module, args, polling, state)

    return Configs(config("flat", FINISHING, fast), config("idle", RUNNING, slow))


def flat_out_rounds(
    server: SimServer, configs: dict[str, Configs], tmp: Path, args: argparse.Namespace
) -> dict[str, list[Usage]]:
    """Bare client and each watcher in turn, `args.rounds` times."""
    urls_file = tmp / "urls.txt"
    urls_file.write_text("\n".join(urls(server.url, FINISHING, args.jobs)) + "\n")
    events = tmp / "events.jsonl"
    rounds: dict[str, list[Usage]] = {BARE: [], FLOOR: [], **{name: [] for name in configs}}
    for _ in range(args.rounds):
        rounds[BARE].append(bare(server, urls_file, args.concurrency, args.jobs))
        lowest = floor_argv(configs[WATCHER].flat, urls_file, args.concurrency)
        rounds[FLOOR].append(flat_out(server, lowest, events, args.jobs))
        for name, config in configs.items():
            for db in tmp.glob("*.db*"):
                db.unlink()  # a first poll of every job: nothing remembered
            argv = watcher_argv(config.flat, "--exit-when-done")
            rounds[name].append(flat_out(server, argv, events, args.jobs))
    return rounds


@dataclass(frozen=True)
class Results:
    args: argparse.Namespace
    config_load_s: float
    flat_out: dict[str, list[Usage]]  # every round, by who ran
    idle: dict[str, Idle]

    def median(self, name: str) -> Usage:
        return median_usage(self.flat_out[name])

    def ratio(self, name: str) -> float:
        return self.median(name).cpu_s / self.median(BARE).cpu_s

    def as_json(self) -> dict[str, object]:
        return {
            "jobs": self.args.jobs,
            "concurrency": self.args.concurrency,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "machine": platform.machine(),
            "config_load_s": self.config_load_s,
            "flat_out": {
                name: {
                    "median": asdict(self.median(name)),
                    "ratio": self.ratio(name),
                    "rounds": [asdict(run) for run in runs],
                }
                for name, runs in self.flat_out.items()
            },
            "idle": {name: asdict(measured) for name, measured in self.idle.items()},
            "missed": verdicts(self),
        }


def run(args: argparse.Namespace, tmp: Path) -> Results:
    # Measure the watcher as installed, with its modules compiled, not compiled at every start
    # (the environment may well say PYTHONDONTWRITEBYTECODE).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "watcher")], check=True)
    names = (WATCHER, WITH_STATE) if args.state else (WATCHER,)
    with sim_server(args.jobs) as server:
        configs = {name: write_configs(tmp, name, server.url, args) for name in names}
        # Written now, long before they are watched, as a tool that drops job files leaves them
        # (a file changed within two seconds of a look is read again at the next).
        files = write_files_config(tmp, server.url, args)
        load_s = config_load_s(configs[WATCHER].flat)
        rounds = flat_out_rounds(server, configs, tmp, args)
        idle_runs = {
            name: idle(
                config.idle,
                tmp / "idle.jsonl",
                args.jobs,
                args.idle_seconds,
                functools.partial(add_to_config, config.idle),
            )
            for name, config in configs.items()
        }
        idle_runs[JOB_FILES] = idle(
            files,
            tmp / "idle.jsonl",
            args.jobs,
            args.idle_seconds,
            functools.partial(add_job_file, tmp / "jobs.d"),
        )
    return Results(args, load_s, rounds, idle_runs)


def verdicts(results: Results) -> list[str]:
    """The targets missed, one line each."""
    missed = []
    for name in results.flat_out:
        ratio = results.ratio(name)
        if name not in (BARE, FLOOR) and ratio > CPU_RATIO_TARGET:
            missed.append(f"{name}: flat-out CPU {ratio:.2f}x bare > {CPU_RATIO_TARGET}x")
    for name, measured in results.idle.items():
        if measured.cpu_percent > IDLE_CPU_TARGET:
            missed.append(f"{name}: idle CPU {measured.cpu_percent:.2f} % > {IDLE_CPU_TARGET} %")
        if measured.peak_rss_mb > RSS_TARGET_MB:
            missed.append(f"{name}: peak RSS {measured.peak_rss_mb:.0f} MB > {RSS_TARGET_MB} MB")
    return missed


def table(results: Results) -> str:
    jobs = results.args.jobs
    lines = [
        f"scale: {jobs:,} jobs, concurrency {results.args.concurrency}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}; config load {results.config_load_s:.2f} s CPU",
        "",
        f"{'flat out (median of rounds)':<28}{'CPU s':>8}{'µs/job':>8}{'wall s':>8}"
        f"{'peak MB':>9}{'vs bare':>9}",
    ]
    for name in results.flat_out:
        median = results.median(name)
        lines.append(
            f"  {name:<26}{median.cpu_s:>8.2f}{median.cpu_s / jobs * 1e6:>8.0f}"
            f"{median.wall_s:>8.2f}{median.peak_rss_mb:>9.0f}{results.ratio(name):>8.2f}x"
        )
    lines += [
        "",
        f"{'idle (nothing due)':<28}{'CPU %':>8}{'window s':>9}{'RSS MB':>8}{'peak MB':>9}"
        f"{'reload s':>10}{'then MB':>9}",
    ]
    for name, measured in results.idle.items():
        lines.append(
            f"  {name:<26}{measured.cpu_percent:>8.2f}{measured.window_s:>9.0f}"
            f"{measured.rss_mb:>8.0f}{measured.peak_rss_mb:>9.0f}"
            f"{measured.reload_cpu_s:>10.2f}{measured.peak_rss_after_reload_mb:>9.0f}"
        )
    lines.append(
        f"\ntargets: flat-out CPU <= {CPU_RATIO_TARGET}x bare, idle CPU <= {IDLE_CPU_TARGET} %,"
        f" idle peak RSS <= {RSS_TARGET_MB:.0f} MB"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3, help="flat-out rounds; medians count")
    parser.add_argument("--state", action="store_true", help="also run with a state file")
    args = parser.parse_args()
    with TemporaryDirectory(prefix="scale-bench-") as tmp:
        results = run(args, Path(tmp))
    missed = verdicts(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results.as_json(), indent=2) + "\n")
    print(table(results))
    for line in missed:
        print(f"MISSED {line}")
    print("all targets met" if not missed else f"{len(missed)} target(s) missed")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
