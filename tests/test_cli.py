"""The command line itself: bad input ends in clear lines and exit 2, and the demo works."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.harness import CREDENTIALS_ENV, WatcherProcess, run_cli, write_config
from watcher.simulator import Simulator

GOOD = """
zoho:
  api_domain: http://127.0.0.1:9
  auth: {access_token: "${ZOHO_ACCESS_TOKEN}"}
jobs:
  - {module: Leads, job_id: "1"}
"""

BAD = {
    "unknown key": ("polling: {intervall: 10s}", "polling: unknown key 'intervall'"),
    "bad duration": ("polling: {interval: 10 parsecs}", "polling.interval"),
    "non-positive": ("polling: {rate_limit: 0}", "polling.rate_limit"),
    "wrong type": ("polling: {max_concurrency: many}", "polling.max_concurrency"),
    "bad module": ("jobs: [{module: 'Le ads', job_id: '1'}]", "jobs[0].module"),
    "non-digit id": ("jobs: [{module: Leads, job_id: 12ab}]", "jobs[0].job_id"),
    "unset variable": ("zoho: {auth: {access_token: '${NOT_SET_ANYWHERE}'}}", "NOT_SET_ANYWHERE"),
    "invalid yaml": ("jobs: [", "invalid YAML"),
    "http to a remote host": ("zoho: {api_domain: 'http://example.com'}", "zoho.api_domain"),
}


def config_with(tmp_path: Path, override: str) -> Path:
    """The good config with one top-level section replaced by `override`."""
    document = yaml.safe_load(GOOD)
    try:
        replacement = yaml.safe_load(override)
    except yaml.YAMLError:
        path = tmp_path / "broken.yaml"
        path.write_text(override)
        return path
    for key, value in replacement.items():
        if key == "zoho":
            document["zoho"]["auth"].update(value.get("auth", {}))
            document["zoho"].update({k: v for k, v in value.items() if k != "auth"})
        else:
            document[key] = value
    path = tmp_path / "watcher.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("command", ["run", "check-config"])
async def test_bad_config_is_one_line_per_problem_and_exit_2(
    tmp_path: Path, case: str, command: str
) -> None:
    override, expected = BAD[case]
    path = config_with(tmp_path, override)
    code, stdout, stderr = await run_cli(command, "--config", str(path))
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert expected in lines[0]
    assert "Traceback" not in stderr


async def test_version_names_the_installed_release() -> None:
    """What to quote in a bug report; the release pyproject.toml gives, not a copy of it."""
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert await run_cli("--version") == (
        0,
        f"zoho-job-watcher {project['project']['version']}\n",
        "",
    )


async def test_missing_config_file(tmp_path: Path) -> None:
    code, _, stderr = await run_cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert "nope.yaml" in stderr
    assert "not found" in stderr


async def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(GOOD + "polling: {interval: x, rate_limit: -1, typo: 1}\n")
    code, _, stderr = await run_cli("check-config", "--config", str(path))
    assert code == 2
    assert len(stderr.strip().splitlines()) == 3


async def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(GOOD)
    code, stdout, stderr = await run_cli("check-config", "--config", str(path))
    assert (code, stderr) == (0, "")
    assert "1 job" in stdout


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ("a-directory", ": not a regular file; choose a file's path"),
        ("notes.txt", " is not a zoho-job-watcher state file; move the file aside"),
        ("new/state.db", None),  # `run` makes it, and its directory
    ],
)
async def test_check_config_refuses_a_state_path_run_would_refuse(
    tmp_path: Path, state: str, problem: str | None
) -> None:
    (tmp_path / "a-directory").mkdir()
    (tmp_path / "notes.txt").write_text("not a database\n")
    path = tmp_path / "watcher.yaml"
    path.write_text(GOOD + f"state_path: {tmp_path / state}\n")
    code, _, stderr = await run_cli("check-config", "--config", str(path))
    if problem is None:
        assert (code, stderr) == (0, "")
    else:
        assert code == 2
        assert stderr.startswith(f"zoho-job-watcher: state file {tmp_path / state}{problem}")
        assert len(stderr.splitlines()) == 1
    assert not (tmp_path / "new").exists()  # a check creates nothing


async def test_the_shipped_example_config_validates() -> None:
    example = Path(__file__).parent.parent / "config" / "watcher.example.yaml"
    code, _, stderr = await run_cli("check-config", "--config", str(example))
    assert (code, stderr) == (0, "")


@pytest.mark.parametrize("args", [[], ["run"], ["frobnicate"], ["run", "--config"]])
async def test_usage_errors_exit_2_without_traceback(args: list[str]) -> None:
    code, _, stderr = await run_cli(*args)
    assert code == 2
    assert "usage:" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", ["run", "check-config", "status"])
async def test_empty_config_path_is_a_usage_error(command: str) -> None:
    """Not "cannot read config file: Is a directory" about ".", the path "" turns into."""
    code, _, stderr = await run_cli(command, "--config", "")
    assert code == 2
    assert stderr.splitlines()[-1].endswith("error: argument --config: an empty path names no file")


async def test_demo_shows_every_path_and_exits_0_within_30s() -> None:
    demo = await WatcherProcess.start("demo")
    assert await demo.finish(timeout=30) == 0
    outcomes = {e["module"]: e["outcome"] for e in demo.named("job.finished")}
    assert outcomes == {
        "Leads": "completed",
        "Deals": "failed",
        "Contacts": "completed",
        "Accounts": "completed",
        "Quotes": "not_found",
    }
    assert any(e["http_status"] == 429 for e in demo.named("job.poll_failed"))
    stopped = demo.events[-1]
    assert (stopped["event"], stopped["exit_code"]) == ("watcher.stopped", 0)  # as the process
    assert demo.not_json == []


@pytest.mark.parametrize("command", ["run", "status"])
async def test_stdout_closed_early_ends_quietly(
    tmp_path: Path, sim: Simulator, command: str
) -> None:
    """`zoho-job-watcher run ... | head -1`: once nobody reads, stop quietly, no traceback."""
    jobs = [("Leads", str(n)) for n in range(1, 40)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING"] * 5 + ["COMPLETED"])
    state = tmp_path / "state.db"
    config = write_config(tmp_path / "w.yaml", sim.url, jobs, top={"state_path": str(state)})
    if command == "status":  # something to show first
        assert (await run_cli("run", "--config", str(config), "--exit-when-done"))[0] == 0
    watcher = f"{sys.executable} -m watcher {command} --config {config}"
    shell = await asyncio.create_subprocess_shell(
        f"{watcher} | head -c 1 > /dev/null; echo ${{PIPESTATUS[0]}} >&2",
        executable="/bin/bash",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    _, stderr = await asyncio.wait_for(shell.communicate(), timeout=60)
    *printed, code = stderr.decode().splitlines()
    assert (code, printed) == ("0", [])


@pytest.mark.parametrize(
    ("command", "broken", "code"),
    [
        ("run", False, 0),
        ("demo", False, 0),
        ("check-config", False, 0),
        ("status", False, 0),
        ("run", True, 2),
    ],
)
async def test_stdout_closed_from_the_start_ends_quietly(
    tmp_path: Path, command: str, broken: bool, code: int
) -> None:
    """As if nobody read it any more; a broken config is still reported, on stderr."""
    state = tmp_path / "state.db"
    state.touch()  # nothing remembered: `status` shows only its header
    config = write_config(
        tmp_path / "w.yaml", "http://127.0.0.1:9", [("Leads", "1")], top={"state_path": str(state)}
    )
    if broken:
        config.write_text(config.read_text().replace("interval: 100ms", "interval: soon"))
    options = () if command == "demo" else ("--config", str(config))
    shell = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        'exec "$@" >&-',  # fd 1 closed: Python starts with sys.stdout None
        "sh",
        *(sys.executable, "-m", "watcher", command, *options),
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    _, stderr = await asyncio.wait_for(shell.communicate(), timeout=60)
    assert shell.returncode == code
    assert (b"polling.interval: not a duration" in stderr) is broken
    assert b"Traceback" not in stderr
    assert (stderr == b"") is not broken


@pytest.mark.parametrize("command", ["run", "check-config", "status"])
@pytest.mark.parametrize(
    ("state_path", "problem"),
    [
        ("{tmp}/" + "a" * 300 + "/s.db", "cannot"),  # too long a name: cannot even look
        ("/proc/self/mem", "cannot read it: Input/output error"),  # a file that fails to read
    ],
)
async def test_a_state_file_that_cannot_be_looked_at_or_read_is_one_line(
    tmp_path: Path, command: str, state_path: str, problem: str
) -> None:
    """Not "cannot write to stdout", and not a traceback: the state file is the trouble."""
    top = {"state_path": state_path.format(tmp=tmp_path)}
    config = write_config(tmp_path / "w.yaml", "http://127.0.0.1:9", [("Leads", "1")], top=top)
    code, stdout, stderr = await run_cli(command, "--config", str(config))
    assert (code, stdout, stderr.count("\n")) == (2, "", 1)
    assert stderr.startswith("zoho-job-watcher: state file ")
    assert problem in stderr


async def test_a_reader_that_resets_its_tcp_connection_ends_the_watcher_quietly(
    tmp_path: Path, sim: Simulator
) -> None:
    """A log reader on a TCP socket that dies with our lines unread in its buffer sends a reset,
    not a FIN: it has gone all the same, and exit 1 would say a job failed."""
    sim.add_job("Leads", "1", ["RUNNING"])
    config = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")], schedule="fixed")
    listener = socket.create_server(("127.0.0.1", 0))
    ours = socket.create_connection(listener.getsockname())
    reader, _ = listener.accept()
    listener.close()
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "watcher", "run", "--config", str(config)),
            *("--log-level", "debug"),  # a job.polled line every 100 ms
            stdout=ours.fileno(),
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **CREDENTIALS_ENV},
        )
        ours.close()
        loop = asyncio.get_running_loop()
        reader.setblocking(False)
        assert b"watcher.started" in await asyncio.wait_for(loop.sock_recv(reader, 4096), 30)
        await sim.wait_for(lambda s: len(s.requests) >= 3)  # more lines, unread
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        reader.close()  # with lines unread and no linger: a reset
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, stderr) == (0, b"")


@pytest.mark.parametrize("command", ["run", "demo", "check-config", "status", "--version"])
async def test_a_stdout_that_takes_no_more_lines_stops_the_watcher_with_one_line(
    tmp_path: Path, sim: Simulator, command: str
) -> None:
    """`run > events.jsonl` on a full disk: no traceback, not exit 1 (which says a job failed),
    and nothing tracked is lost: the next run, heard, says how the job ended."""
    sim.add_job("Leads", "1", ["COMPLETED"])
    state = tmp_path / "state.db"
    config = write_config(
        tmp_path / "w.yaml", sim.url, [("Leads", "1")], top={"state_path": str(state)}
    )
    if command == "status":  # something to show
        assert (await run_cli("run", "--config", str(config), "--exit-when-done"))[0] == 0
    options = {
        "demo": (),
        "--version": (),
        "run": ("--config", str(config), "--exit-when-done"),
    }.get(command, ("--config", str(config)))
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "watcher", command, *options),
            stdout=full,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **CREDENTIALS_ENV},
        )
    finally:
        os.close(full)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    said = b"zoho-job-watcher: cannot write to stdout: No space left on device\n"
    assert (process.returncode, stderr) == (2, said)
    if command == "run":
        code, stdout, _ = await run_cli("run", "--config", str(config), "--exit-when-done")
        assert code == 0
        assert '"event":"job.finished"' in stdout


SIGNALS_WHILE_LOADING = """
import os, signal, sys
import watcher.__main__ as entry
assert "watcher.cli" not in sys.modules, "the handlers come before the heavy imports"
import watcher.cli as cli
load_all = cli.load_all
def load_all_after_signals(*args, **kwargs):
    for name in os.environ["SEND"].split():
        os.kill(os.getpid(), getattr(signal, name))  # before `serve` has a handler for it
    return load_all(*args, **kwargs)
cli.load_all = load_all_after_signals
sys.exit(entry.main())
"""


async def signalled_while_loading(send: str, *args: str) -> tuple[int | None, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIGNALS_WHILE_LOADING,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV, "SEND": send},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stdout, stderr


@pytest.mark.parametrize(
    ("send", "answer", "options", "said"),
    [
        # Not fatal, and nothing lost: the first checks compare the files with what was loaded.
        ("SIGHUP", "COMPLETED", ("--exit-when-done",), [b'"event":"job.finished"']),
        # As PID 1 a signal nobody handles is dropped: `docker stop` would end in a SIGKILL.
        ("SIGTERM SIGINT", "RUNNING", (), [b'"event":"watcher.stopped"', b'"reason":"signal"']),
    ],
)
async def test_a_signal_while_the_config_loads_is_acted_on_once_the_run_starts(
    tmp_path: Path,
    sim: Simulator,
    send: str,
    answer: str,
    options: tuple[str, ...],
    said: list[bytes],
) -> None:
    sim.add_job("Leads", "1", [answer])
    config = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")])
    code, stdout, stderr = await signalled_while_loading(
        send, "run", "--config", str(config), *options
    )
    assert (code, stderr) == (0, b"")
    assert all(text in stdout for text in said)


SIGNALS_AFTER_THE_RUN = """
import os, signal, sys
import watcher.__main__ as entry
import watcher.cli as cli
command = cli._command
def command_then_signalled(*args):
    code = command(*args)  # the run has ended; the process has not yet
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        os.kill(os.getpid(), getattr(signal, name))
    return code
cli._command = command_then_signalled
sys.exit(entry.main())
"""


async def test_a_signal_after_the_run_has_ended_does_not_change_its_exit_code(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job("Leads", "1", ["COMPLETED"])
    config = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")])
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SIGNALS_AFTER_THE_RUN),
        *("run", "--config", str(config), "--exit-when-done"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (process.returncode, stderr) == (0, b"")
    assert b'"event":"watcher.stopped"' in stdout


async def test_a_stop_while_a_short_command_runs_ends_it_as_the_signal_ends_any_process(
    tmp_path: Path, sim: Simulator
) -> None:
    config = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")])
    code, stdout, stderr = await signalled_while_loading(
        "SIGINT", "check-config", "--config", str(config)
    )
    assert (code, stdout, stderr) == (-signal.SIGINT, b"", b"")  # no KeyboardInterrupt traceback


SIGHUP_WHILE_IMPORTING = """
import os, signal, sys
import watcher.__main__ as entry
class SignalOnImport:  # the moment `watcher.cli` is imported: handlers in place, nothing else
    def find_spec(self, name, path, target=None):
        if name == "watcher.cli":
            os.kill(os.getpid(), signal.SIGHUP)
        return None
sys.meta_path.insert(0, SignalOnImport())
sys.exit(entry.main())
"""


async def test_a_sighup_while_a_short_command_starts_ends_it_too(tmp_path: Path) -> None:
    config = write_config(tmp_path / "w.yaml", "http://127.0.0.1:9", [("Leads", "1")])
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SIGHUP_WHILE_IMPORTING, "check-config", "--config", str(config)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert (process.returncode, stdout, stderr) == (-signal.SIGHUP, b"", b"")
