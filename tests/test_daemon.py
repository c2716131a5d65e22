"""The long-lived service: jobs added and removed while it runs, restarts, health and metrics."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import (
    ACCESS_TOKEN,
    CREDENTIALS_ENV,
    PRINTED,
    Event,
    WatcherProcess,
    refresh_auth,
    run_cli,
    write_config,
)
from watcher import client, service
from watcher.config import load_all
from watcher.events import EventLog
from watcher.simulator import Simulator
from watcher.state import StateError, StateStore

A = ("Leads", "1001")
B = ("Deals", "2002")
C = ("Contacts", "3003")


class Daemon:
    """One config file and state file, and the watcher processes run on them in turn."""

    def __init__(self, tmp_path: Path, sim: Simulator, **top: Any) -> None:
        self.tmp_path = tmp_path
        self.sim = sim
        self.config = tmp_path / "watcher.yaml"
        self.top: dict[str, Any] = {
            "reload_interval": "200ms",
            "state_path": str(tmp_path / "state.db"),
            **top,
        }
        self.runs: list[WatcherProcess] = []

    def write(self, jobs: list[tuple[str, str]], **polling: object) -> None:
        write_config(self.config, self.sim.url, jobs, top=self.top, **polling)

    async def start(self, *args: str) -> WatcherProcess:
        watcher = await WatcherProcess.start("run", "--config", str(self.config), *args)
        self.runs.append(watcher)
        return watcher

    def events(self, name: str) -> list[Event]:
        return [e for run in self.runs for e in run.named(name)]


async def test_a_job_added_to_the_file_is_picked_up(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["RUNNING", "COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed", module=A[0])
    daemon.write([A, B])
    reloaded = await watcher.wait_event("config.reloaded")
    assert (reloaded["added"], reloaded["removed"]) == (1, 0)
    await watcher.wait_event("job.finished", job_id=B[1], outcome="completed")
    assert len(watcher.named("job.added")) == 2
    watcher.process.terminate()
    assert await watcher.finish() == 0


@pytest.mark.parametrize("state", [True, False], ids=["state file", "no state file"])
async def test_a_job_removed_and_added_again_resumes_where_it_was(
    tmp_path: Path, sim: Simulator, state: bool
) -> None:
    """A jobs file renamed away and back, a ConfigMap key moved between files: the job is
    announced as added again, but its end is not said (nor paid for) twice, nor its
    transitions."""
    sim.add_job(*A, ["COMPLETED"])
    sim.add_job(*B, ["RUNNING"])
    sim.add_job(*C, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, **({} if state else {"state_path": None}))
    daemon.write([A, B, C])
    watcher = await daemon.start()
    await watcher.wait_event("job.finished", job_id=A[1])
    await watcher.wait_event("job.status_changed", job_id=B[1])
    daemon.write([C])
    await watcher.wait_event("config.reloaded", removed=2)
    polls_of_b = len(sim.requests_for(*B))
    daemon.write([A, B, C])
    await watcher.wait_event("config.reloaded", added=2)
    await sim.wait_for(lambda s: len(s.requests_for(*B)) > polls_of_b)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert [e["job_id"] for e in watcher.named("job.added")] == [A[1], B[1], C[1], A[1], B[1]]
    assert [e["job_id"] for e in watcher.named("job.finished")] == [A[1]]
    changes = [e["job_id"] for e in watcher.named("job.status_changed")]
    assert sorted(changes) == sorted([A[1], B[1], C[1]])
    assert len(sim.requests_for(*A)) == 1


async def test_a_job_removed_longer_than_retention_ago_is_new_when_added_again(
    tmp_path: Path, sim: Simulator
) -> None:
    """Without a state file too, removed jobs are kept in memory for `retention` only."""
    sim.add_job(*A, ["COMPLETED"])
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, state_path=None, retention="1ms")
    daemon.write([A, B])
    watcher = await daemon.start()
    await watcher.wait_event("job.finished", job_id=A[1])
    daemon.write([B])
    await watcher.wait_event("job.removed", job_id=A[1])
    daemon.write([])  # this removal forgets A, removed long enough ago
    await watcher.wait_event("job.removed", job_id=B[1])
    daemon.write([A])
    await sim.wait_for(lambda s: len(s.requests_for(*A)) == 2)
    await watcher.wait_for(lambda events: len(watcher.named("job.finished")) == 2)
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_restart_required_lists_what_still_awaits_a_restart(
    tmp_path: Path, sim: Simulator
) -> None:
    """Compared with what the process runs on, not with the last reload: a later edit (a job
    added) must not make a pending restart look done."""
    for job in (A, B):
        sim.add_job(*job, ["RUNNING"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed", module=A[0])
    said: list[list[str]] = []
    for jobs, concurrency in (([A], 2), ([A, B], 2), ([A, B], 5)):  # 5: the started value
        reloads = len(said)
        daemon.write(jobs, max_concurrency=concurrency)
        await watcher.wait_for(
            lambda events, reloads=reloads: (
                sum(e["event"] == "config.reloaded" for e in events) > reloads
            )
        )
        said.append(watcher.named("config.reloaded")[-1]["restart_required"])
    assert said == [["polling.max_concurrency"], ["polling.max_concurrency"], []]
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_a_file_dropped_in_jobs_dir_is_picked_up(tmp_path: Path, sim: Simulator) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim, jobs_dir=str(jobs_dir))
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed", module=A[0])
    (jobs_dir / ".partial.yaml").write_text("jobs: [{module: Deals")  # hidden: ignored
    (jobs_dir / "mass-update-2002.yaml").write_text(
        "jobs:\n  - module: Deals\n    job_id: '2002'\n"
    )
    await watcher.wait_event("job.finished", job_id=B[1])
    assert watcher.named("config.invalid") == []
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_removal_stops_polls(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, B])
    watcher = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= 2)
    daemon.write([B])
    await watcher.wait_event("job.removed", job_id=A[1])
    polls_of_a = len(sim.requests_for(*A))
    polls_of_b = len(sim.requests_for(*B))
    await sim.wait_for(lambda s: len(s.requests_for(*B)) >= polls_of_b + 5)
    assert len(sim.requests_for(*A)) <= polls_of_a + 1  # at most one already on its way
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_an_answer_arriving_after_its_job_was_removed_is_dropped(
    tmp_path: Path, sim: Simulator
) -> None:
    """The removal is the job's last word: its late answer neither announces it, nor counts it
    as ended (which would end an --exit-when-done run early), nor undoes the removal in the
    state file (which would keep it there for good)."""
    sim.add_job(*A, ["slow:1:COMPLETED"])  # inside the 2 s request timeout
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    daemon.write([A, B])
    watcher = await daemon.start("--exit-when-done")
    await sim.wait_for(lambda s: len(s.requests_for(*A)) == 1)  # A's answer is on its way
    daemon.write([B])
    watcher.process.send_signal(signal.SIGHUP)
    await watcher.wait_event("job.removed", job_id=A[1])
    await sim.wait_for(lambda s: s.served(*A) == ["COMPLETED"])
    polls_of_b = len(sim.requests_for(*B))
    await sim.wait_for(lambda s: len(s.requests_for(*B)) >= polls_of_b + 3)  # after A's answer
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert [e["event"] for e in watcher.events if e.get("job_id") == A[1]] == [
        "job.added",
        "job.removed",
    ]
    assert watcher.named("watcher.stopped")[0]["reason"] == "signal"
    with sqlite3.connect(daemon.top["state_path"]) as state:
        query = "SELECT removed_at FROM jobs WHERE job_id = ?"
        assert state.execute(query, (A[1],)).fetchone()[0] is not None


async def reload_with(daemon: Daemon, watcher: WatcherProcess, jobs: list[tuple[str, str]]) -> None:
    daemon.write(jobs, backoff_max="10s")
    watcher.process.send_signal(signal.SIGHUP)


async def test_a_poll_waiting_out_a_pause_is_not_sent_once_its_job_is_removed(
    tmp_path: Path, sim: Simulator
) -> None:
    """A 429's pause (or the credit budget) can hold a request for a long time; a job removed
    meanwhile must not still cost a request when the wait is over."""
    sim.add_job(*A, ["RUNNING", "429:2", "COMPLETED"])
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    daemon.write([A], backoff_max="10s")
    watcher = await daemon.start("--exit-when-done")
    await watcher.wait_event("job.poll_failed", job_id=A[1])  # every request now waits 2 s
    await reload_with(daemon, watcher, [A, B])
    await watcher.wait_event("job.added", job_id=B[1])  # due at once: its poll waits in the gate
    await reload_with(daemon, watcher, [A])
    await watcher.wait_event("job.removed", job_id=B[1])
    assert await watcher.finish() == 0  # A completed after the pause
    assert sim.requests_for(*B) == []


async def test_a_job_removed_and_added_again_during_a_pause_is_polled_once_at_a_time(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["RUNNING", "429:3", "COMPLETED"])
    sim.add_job(*B, ["slow:0.3:COMPLETED"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    daemon.write([A], backoff_max="10s")
    watcher = await daemon.start("--exit-when-done")
    await watcher.wait_event("job.poll_failed", job_id=A[1])
    await reload_with(daemon, watcher, [A, B])
    await watcher.wait_event("job.added", job_id=B[1])
    await reload_with(daemon, watcher, [A])
    await watcher.wait_event("job.removed", job_id=B[1])
    await reload_with(daemon, watcher, [A, B])
    await watcher.wait_for(
        lambda events: len([e for e in events if e["event"] == "job.added"]) == 3
    )
    assert await watcher.finish() == 0
    # The poll of the removed job stayed behind: one request, not two at once.
    assert len(sim.requests_for(*B)) == 1
    assert [e["outcome"] for e in watcher.named("job.finished")] == ["completed", "completed"]


async def test_saves_failing_after_every_job_ended_stop_the_watcher_with_exit_2(
    tmp_path: Path, sim: Simulator
) -> None:
    """Removals save without waiting, so nothing hears when such a save fails; the next save
    (another removal) or the final flush must say so, in one line, not a traceback."""
    for job in (A, B, C):
        sim.add_job(*job, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, B, C])
    watcher = await daemon.start()
    await watcher.wait_for(
        lambda events: len([e for e in events if e["event"] == "job.finished"]) == 3
    )
    with sqlite3.connect(daemon.top["state_path"]) as state:  # every save fails from now on
        state.execute(
            "CREATE TRIGGER full BEFORE INSERT ON jobs BEGIN SELECT RAISE(FAIL, 'disk full'); END"
        )
    state.close()
    for jobs in ([B, C], [C]):  # removals, whose saves nobody waits on
        if watcher.named("state.failed"):
            break
        reloads = len(watcher.named("config.reloaded"))
        daemon.write(jobs)
        await watcher.wait_for(
            lambda events, reloads=reloads: (
                any(e["event"] == "state.failed" for e in events)
                or sum(e["event"] == "config.reloaded" for e in events) > reloads
            )
        )
    if not watcher.named("state.failed"):
        watcher.process.terminate()  # no save has heard of the failure yet: the final flush does
    assert await watcher.finish() == 2
    (failed,) = watcher.named("state.failed")
    assert "disk full" in failed["error"]
    assert watcher.named("watcher.stopped")[0]["reason"] == "state_failed"
    assert "Traceback" not in watcher.stderr


async def test_a_broken_edit_is_refused_while_watching_goes_on(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["RUNNING"] * 200 + ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed")
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("interval: 100ms", "interval: soon"))
    invalid = await watcher.wait_event("config.invalid")
    assert invalid["level"] == "error"
    assert any("polling.interval" in problem for problem in invalid["problems"])
    before = len(sim.requests_for(*A))
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= before + 3)  # still watching
    assert len(watcher.named("config.invalid")) == 1  # said once, not every interval
    daemon.write([A, B])
    sim.add_job(*B, ["COMPLETED"])
    await watcher.wait_event("job.finished", job_id=B[1])
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_an_edit_made_while_the_watcher_starts_is_picked_up(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["COMPLETED"])
    sim.script_tokens(["slow:1.5"])  # start-up waits for a token: the user edits meanwhile
    daemon = Daemon(tmp_path, sim)
    auth = refresh_auth(sim.url)
    write_config(daemon.config, sim.url, [A], auth=auth, top=daemon.top)
    watcher = await daemon.start()
    await watcher.wait_event("watcher.started")
    write_config(daemon.config, sim.url, [A, B], auth=auth, top=daemon.top)
    await watcher.wait_event("job.finished", job_id=B[1], outcome="completed")
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_edits_are_taken_while_the_first_token_is_awaited_and_polled_once_it_comes(
    tmp_path: Path, sim: Simulator
) -> None:
    """The accounts server can hold the first token for minutes (its backoff, Zoho's limit on
    tokens): a SIGHUP meanwhile is answered, a bad edit reported, a removed job never polled."""
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["COMPLETED"])
    sim.hold_tokens()
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    auth = refresh_auth(sim.url)
    write_config(daemon.config, sim.url, [A], auth=auth, top=daemon.top)
    watcher = await daemon.start()
    await sim.wait_for(lambda s: s.token_arrivals == 1)
    daemon.config.write_text("polling: [\n")  # cut off mid-edit
    watcher.process.send_signal(signal.SIGHUP)
    await watcher.wait_event("config.invalid")
    # What only a restart applies stays as the run started, though nothing was built yet.
    dead = "http://127.0.0.1:9"
    write_config(daemon.config, sim.url, [B], auth=auth, top=daemon.top, api_domain=dead)
    watcher.process.send_signal(signal.SIGHUP)
    reloaded = await watcher.wait_event("config.reloaded", added=1, removed=1)
    assert reloaded["restart_required"] == ["zoho"]
    assert [e["job_id"] for e in watcher.named("job.removed")] == [A[1]]
    assert watcher.named("auth.token_refreshed") == []
    sim.release_tokens()
    await watcher.wait_event("job.finished", job_id=B[1], outcome="completed")
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert sim.requests_for(*A) == []


async def test_a_changed_secret_file_is_seen_on_sighup_as_needing_a_restart(
    tmp_path: Path, sim: Simulator
) -> None:
    """As the README says: secret files are read at start, and not among what checks compare."""
    sim.add_job(*A, ["RUNNING"])
    token_file = tmp_path / "token"
    token_file.write_text(ACCESS_TOKEN)
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    auth = {"access_token_file": str(token_file)}
    write_config(daemon.config, sim.url, [A], auth=auth, top=daemon.top)
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed")
    token_file.write_text(ACCESS_TOKEN + "2")
    watcher.process.send_signal(signal.SIGHUP)
    reloaded = await watcher.wait_event("config.reloaded")
    assert reloaded["restart_required"] == ["zoho"]
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_a_job_meeting_a_429_storm_says_when_it_will_really_be_polled(
    tmp_path: Path, sim: Simulator
) -> None:
    """A job added in the storm asks its own first backoff; the org's pause, doubled at each
    429 in a row, holds it longer, and its `retry_in_s` must say so, not the shorter figure."""
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    polling = {"interval": "5s", "max_interval": "10s", "backoff_initial": "250ms"}
    sim.inject(["429"] * 4)
    daemon.write([A], **polling, backoff_max="4s")
    watcher = await daemon.start()
    await watcher.wait_for(lambda events: len(watcher.named("job.poll_failed")) == 3)
    daemon.write([A, B], **polling, backoff_max="4s")
    watcher.process.send_signal(signal.SIGHUP)
    failed = await watcher.wait_event("job.poll_failed", job_id=B[1])
    await sim.wait_for(lambda s: len(s.requests_for(*B)) == 2)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    first, second = sim.requests_for(*B)
    assert failed["retry_in_s"] >= 0.25 * 2**3 * 0.5  # the fourth pause in a row, jittered
    assert second.at - first.done == pytest.approx(failed["retry_in_s"], abs=0.3)


async def test_sighup_reloads_at_once(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["RUNNING"])
    sim.add_job(*B, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed")
    daemon.write([A, B])
    watcher.process.send_signal(signal.SIGHUP)
    await watcher.wait_event("job.finished", job_id=B[1])
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_a_restart_does_not_poll_a_job_again_before_its_interval(
    tmp_path: Path, sim: Simulator
) -> None:
    """Each restart would otherwise spend a credit per job: a crash loop, or a rolling update of
    ten thousand jobs, would spend a small org's day."""
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A], interval="1500ms", max_interval="3s")
    first = await daemon.start()
    await first.wait_event("job.status_changed")
    first.process.terminate()
    assert await first.finish() == 0
    second = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) == 2, timeout=10)
    seen, again = sim.requests
    assert again.at - seen.done >= 1.5 - 0.05  # the interval, from the answer (wall clock)
    second.process.terminate()
    assert await second.finish() == 0


async def test_a_restart_polls_a_job_when_the_run_before_planned_it(
    tmp_path: Path, sim: Simulator
) -> None:
    """Here a retry Zoho asked for in 3 s, longer than `interval`: polled sooner, it would spend
    a credit the plan did not, and tell a busy Zoho nothing new."""
    sim.add_job(*A, ["429:3", "RUNNING"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A], interval="500ms", max_interval="5s", backoff_max="5s")
    first = await daemon.start()
    failed = await first.wait_event("job.poll_failed")
    assert failed["retry_in_s"] == 3.0
    first.process.terminate()
    assert await first.finish() == 0
    second = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) == 2, timeout=10)
    refused, again = sim.requests
    assert again.at - refused.done >= 3.0 - 0.05  # as planned, not `interval` after it
    assert again.at - refused.done < 3.0 + 2.0
    second.process.terminate()
    assert await second.finish() == 0


async def test_a_restart_goes_on_at_the_pace_and_backoff_the_job_had(
    tmp_path: Path, sim: Simulator
) -> None:
    """A SCHEDULED job's gaps had widened, a failing job's backoff had grown: started again
    from `interval` and attempt 1, each restart of a rolling update would cost every idle job
    about nine more polls in the hour after it."""
    sim.add_job(*A, ["SCHEDULED"])
    sim.add_job(*B, ["500"])
    daemon = Daemon(tmp_path, sim)
    settings = {"interval": "50ms", "max_interval": "1s", "backoff_initial": "50ms"}
    daemon.write([A, B], backoff_max="1s", **settings)
    first = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= 8, timeout=10)  # gaps near 1 s
    first.process.terminate()
    assert await first.finish() == 0
    attempts = [e["attempt"] for e in first.named("job.poll_failed")]
    polled = len(sim.requests_for(*A))
    second = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= polled + 2, timeout=10)
    again, after = sim.requests_for(*A)[polled : polled + 2]
    assert after.at - again.at > 0.5  # the widened gap, not `interval`
    failed = await second.wait_event("job.poll_failed")
    assert failed["attempt"] == attempts[-1] + 1
    second.process.terminate()
    assert await second.finish() == 0


async def test_a_relative_state_path_is_shown_where_it_really_is(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It starts from the working directory, which a reader of the event cannot see."""
    sim.add_job(*A, ["COMPLETED"])
    monkeypatch.chdir(tmp_path)  # the watcher's working directory
    config = write_config(tmp_path / "w.yaml", sim.url, [A], top={"state_path": "rel-state.db"})
    watcher = await WatcherProcess.start("run", "--config", str(config), "--exit-when-done")
    assert await watcher.finish() == 0
    assert watcher.named("watcher.started")[0]["state_path"] == str(tmp_path / "rel-state.db")


async def test_restart_resumes_without_repeating_events(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["FAILED:1,9,0,10"])
    sim.add_job(*B, ["SCHEDULED", "SCHEDULED", "RUNNING"] + ["RUNNING"] * 20 + ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, B])
    first = await daemon.start()
    await first.wait_event("job.finished", job_id=A[1])
    await first.wait_event("job.status_changed", job_id=B[1], status="RUNNING")
    first.process.terminate()
    assert await first.finish() == 0
    polls_of_a = len(sim.requests_for(*A))
    second = await daemon.start("--exit-when-done")
    assert await second.finish() == 1  # A failed in the first run: remembered
    assert len(sim.requests_for(*A)) == polls_of_a  # finished: never polled again
    assert second.named("job.added") == []
    assert [e["job_id"] for e in daemon.events("job.finished")] == [A[1], B[1]]
    changes = [(e["previous_status"], e["status"]) for e in daemon.events("job.status_changed")]
    assert changes.count(("SCHEDULED", "RUNNING")) == 1
    assert ("RUNNING", "COMPLETED") in changes


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def run_into(
    daemon: Daemon, stdout: int, stderr: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`run` on the daemon's config, its event lines written to the descriptor `stdout`."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "watcher", "run", "--config", str(daemon.config)),
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, **CREDENTIALS_ENV},
    )


def more_lines_than_a_pipe_holds(
    tmp_path: Path, sim: Simulator
) -> tuple[Daemon, list[tuple[str, str]]]:
    """1,500 jobs, each ending at its first poll: three lines a job, over a megabyte in all."""
    jobs = [("Deals", str(n)) for n in range(1, 1501)]
    for job in jobs:
        sim.add_job(*job, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    write_config(daemon.config, sim.url, jobs, top=daemon.top, rate_limit=100000)
    return daemon, jobs


def _channel(kind: str) -> tuple[int, int]:
    """(read end, write end) of a pipe or of a pair of connected sockets."""
    if kind == "pipe":
        return os.pipe()
    reading, writing = socket.socketpair()
    return reading.detach(), writing.detach()


def _read_to_the_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("channel", "stderr_too"), [("pipe", False), ("pipe", True), ("socket", True)]
)
async def test_a_stalled_reader_stops_neither_polling_nor_a_stop_and_loses_no_event(
    tmp_path: Path, sim: Simulator, channel: str, stderr_too: bool
) -> None:
    """`run | less`, paused; or a log shipper that has fallen behind. The pipe fills after a few
    hundred lines: the polls, and SIGTERM, must go on regardless; and what the lines still held
    back at the stop record is not saved as said, so the next run says it (at least once).
    The same with stderr on the same pipe (`2>&1 | ...`) or socket (systemd's journal), whose
    writes must stay blocking: a full pipe would lose them."""
    daemon, jobs = more_lines_than_a_pipe_holds(tmp_path, sim)
    read_end, write_end = _channel(channel)
    try:
        process = await run_into(
            daemon, write_end, write_end if stderr_too else asyncio.subprocess.PIPE
        )
        await sim.wait_for(lambda s: len(s.requests) == len(jobs), timeout=60)
        process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=5)
        assert (process.returncode, stderr) == (0, None if stderr_too else b"")
        assert os.get_blocking(write_end)  # left as found, for whoever writes to it next
        os.close(write_end)
        printed = _read_to_the_end(read_end).decode()
        PRINTED.append(printed)
        said = [json.loads(line) for line in printed.splitlines()]
    finally:
        os.close(read_end)
    finished = {e["job_id"] for e in said if e["event"] == "job.finished"}
    assert len(finished) < len(jobs)  # most were held back when the stop came
    again = await daemon.start("--exit-when-done")
    assert await again.finish() == 0
    replayed = {e["job_id"] for e in again.named("job.finished")}
    assert finished | replayed == {job_id for _, job_id in jobs}
    assert len(sim.requests) == len(jobs)  # nothing polled twice: only said again


async def test_a_stalled_reader_that_goes_away_ends_the_watcher_quietly(
    tmp_path: Path, sim: Simulator
) -> None:
    """`run | less`, paused, then quit: the lines held back can go nowhere now. The watcher ends
    at its next event, as with any closed stdout, without a word on stderr meanwhile."""
    daemon, jobs = more_lines_than_a_pipe_holds(tmp_path, sim)
    read_end, write_end = os.pipe()
    process = await run_into(daemon, write_end)
    os.close(write_end)
    await sim.wait_for(lambda s: len(s.requests) == len(jobs), timeout=60)
    os.close(read_end)  # the reader goes away with lines still held back
    write_config(daemon.config, sim.url, jobs[1:], top=daemon.top, rate_limit=100000)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)  # the reload's event
    assert (process.returncode, stderr) == (0, b"")


async def test_a_pipe_reader_that_goes_away_ends_the_watcher_at_once(
    tmp_path: Path, sim: Simulator
) -> None:
    """`run | head`: head leaves once it has its lines. A job that stays as it is brings no next
    line to fail for hours, and its polls would spend credits meanwhile for nobody."""
    sim.add_job(*A, ["RUNNING:10,0,0,100"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    read_end, write_end = os.pipe()
    process = await run_into(daemon, write_end)
    os.close(write_end)
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= 3)  # it has said all it will
    os.close(read_end)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=10)
    assert (process.returncode, stderr) == (0, b"")
    store = await StateStore.open(tmp_path / "state.db")  # closed as after any stop
    assert store.jobs[A].status == "RUNNING"
    await store.close()


SMALL_BACKLOG = """
import sys
import watcher.__main__ as entry
import watcher.output as output
output.BACKLOG_MAX = 20_000
sys.exit(entry.main())
"""


async def test_lines_a_stalled_reader_had_no_room_for_are_counted_once_it_reads_again(
    tmp_path: Path, sim: Simulator
) -> None:
    daemon, jobs = more_lines_than_a_pipe_holds(tmp_path, sim)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", SMALL_BACKLOG, "run", "--config", str(daemon.config)),
        stdout=asyncio.subprocess.PIPE,  # not read for now: the pipe fills
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **CREDENTIALS_ENV},
    )
    assert process.stdout is not None
    await sim.wait_for(lambda s: len(s.requests) == len(jobs), timeout=60)
    said: list[Event] = []
    while not said or said[-1]["event"] != "events.dropped":  # reading again drains the backlog
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
        PRINTED.append(line.decode())
        said.append(json.loads(line))
    assert said[-1]["level"] == "warning"
    process.terminate()
    rest, stderr = await asyncio.wait_for(process.communicate(), timeout=5)
    assert (process.returncode, stderr) == (0, b"")
    PRINTED.append(rest.decode())
    said += [json.loads(line) for line in rest.splitlines()]  # answers still on their way
    # watcher.started and three lines a job: each either said or counted as dropped.
    counts = [e["count"] for e in said if e["event"] == "events.dropped"]
    lines = [e for e in said if e["event"] not in ("events.dropped", "watcher.stopped")]
    assert len(lines) + sum(counts) == 1 + 3 * len(jobs)
    # A dropped line was never said: the next run says it.
    finished = {e["job_id"] for e in said if e["event"] == "job.finished"}
    again = await daemon.start("--exit-when-done")
    assert await again.finish() == 0
    replayed = {e["job_id"] for e in again.named("job.finished")}
    assert finished | replayed == {job_id for _, job_id in jobs}


async def test_healthz_metrics_and_jobs(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["RUNNING:10,0,0,100", "RUNNING:20,0,0,100"])
    sim.add_job(*B, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim, http={"host": "127.0.0.1", "port": 0})
    daemon.write([A, B])
    watcher = await daemon.start()
    started = await watcher.wait_event("watcher.started")
    base = f"http://{started['http']}"
    await watcher.wait_event("job.finished", job_id=B[1])
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= 3)
    assert await http_get(f"{base}/healthz") == (200, '{"status": "ok"}')
    status, text = await http_get(f"{base}/metrics")
    assert status == 200
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("zoho_watcher_jobs", (("status", "RUNNING"),))] == 1
    assert samples[("zoho_watcher_jobs", (("status", "COMPLETED"),))] == 1
    assert samples[("zoho_watcher_polls_total", (("result", "observed"),))] >= 4
    assert samples[("zoho_watcher_request_duration_seconds_count", ())] >= 4
    assert ("zoho_watcher_rate_limit_wait_seconds_total", ()) in samples
    status, text = await http_get(f"{base}/jobs")
    jobs = {job["job_id"]: job for job in json.loads(text)}
    assert jobs[B[1]]["outcome"] == "completed"
    assert jobs[A[1]]["status"] == "RUNNING"
    assert "sim-token" not in text
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_every_request_is_counted_one_refused_for_its_token_and_sent_again_included(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """A token refused (401), refreshed, and the poll sent again: two requests Zoho was sent."""
    sim = await sim_factory(tokens=(), token_max_uses=3)
    sim.add_job(*A, ["RUNNING:10,0,0,100"] * 8 + ["COMPLETED"])
    daemon = Daemon(tmp_path, sim, http={"port": 0})
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    watcher = await daemon.start()
    await watcher.wait_event("job.finished", job_id=A[1])
    _, text = await http_get(f"http://{watcher.named('watcher.started')[0]['http']}/metrics")
    watcher.process.terminate()
    assert await watcher.finish() == 0
    samples = {
        (sample.name, tuple(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    refused = sum(not request.token_ok for request in sim.requests)
    assert refused >= 2
    assert samples["zoho_watcher_polls_total", ("auth",)] == refused
    assert samples["zoho_watcher_polls_total", ("observed",)] == len(sim.requests) - refused
    assert samples["zoho_watcher_request_duration_seconds_count", ()] == len(sim.requests)


async def test_a_bug_of_ours_met_by_one_poll_is_retried_said_and_counted(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other jobs, and this one, go on: the poll is a transient failure like any other."""
    sim.add_job(*A, ["RUNNING"])
    real_classify, calls = client.classify, []

    def classify_failing_once(*args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("a bug")
        return real_classify(*args)

    monkeypatch.setattr(client, "classify", classify_failing_once)
    path = write_config(tmp_path / "w.yaml", sim.url, [A], top={"http": {"port": 0}})
    stream = io.StringIO()
    watcher = service.Watcher(load_all(path, CREDENTIALS_ENV), EventLog(stream, "json", "info"))
    running = asyncio.create_task(watcher.run())
    await sim.wait_for(lambda s: len(s.served(*A)) == 2)  # asked again, and answered
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    _, text = await http_get(f"http://{events[0]['http']}/metrics")
    watcher.stop()
    assert await running == 0
    failed = [e for e in events if e["event"] == "job.poll_failed"]
    assert [e["error"] for e in failed] == ["internal_error:RuntimeError"]
    assert 'zoho_watcher_polls_total{result="transient"} 1.0' in text


async def test_jobs_are_listed_in_config_order_after_a_reload_too(
    tmp_path: Path, sim: Simulator
) -> None:
    for job in (A, B, C):
        sim.add_job(*job, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, http={"host": "127.0.0.1", "port": 0})
    daemon.write([A, B])
    watcher = await daemon.start()
    started = await watcher.wait_event("watcher.started")
    daemon.write([A, C, B])
    await watcher.wait_event("config.reloaded")
    _, text = await http_get(f"http://{started['http']}/jobs")
    assert [job["job_id"] for job in json.loads(text)] == [A[1], C[1], B[1]]
    watcher.process.terminate()
    assert await watcher.finish() == 0


def _no_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return True
    return False


@pytest.mark.skipif(_no_ipv6_loopback(), reason="this machine has no IPv6 loopback")
async def test_an_ipv6_listener_is_named_so_that_it_can_be_reached(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, http={"host": "::1", "port": 0})
    daemon.write([A])
    watcher = await daemon.start()
    started = await watcher.wait_event("watcher.started")
    assert started["http"].startswith("[::1]:")
    assert await http_get(f"http://{started['http']}/healthz") == (200, '{"status": "ok"}')
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_a_malformed_request_to_the_listener_prints_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    """A port scanner or a confused probe gets its 400; stderr stays free of aiohttp's
    tracebacks, and stdout of anything but events."""
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, http={"host": "127.0.0.1", "port": 0})
    daemon.write([A])
    watcher = await daemon.start()
    host, port = (await watcher.wait_event("watcher.started"))["http"].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert b" 400 " in await reader.readline()
    writer.close()
    base = f"http://{host}:{port}"
    assert await http_get(f"{base}/healthz") == (200, '{"status": "ok"}')
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert watcher.stderr == ""


async def test_status_command_shows_the_state(tmp_path: Path, sim: Simulator) -> None:
    empty = ("Tasks", "4004")  # a mass update of no record at all
    sim.add_job(*A, ["COMPLETED:7,3,0,10"])
    sim.add_job(*B, ["RUNNING:4,0,0,8"])
    sim.add_job(*C, ["NO_PERMISSION"])
    sim.add_job(*empty, ["COMPLETED:0,0,0,0"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, B, C, empty])
    watcher = await daemon.start()
    for module, _ in (A, C, empty):
        await watcher.wait_event("job.finished", module=module)
    await sim.wait_for(lambda s: len(s.requests_for(*B)) >= 2)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    code, stdout, _ = await run_cli("status", "--config", str(daemon.config), "--json")
    assert code == 0
    jobs = {job["job_id"]: job for job in json.loads(stdout)}
    assert (jobs[A[1]]["outcome"], jobs[A[1]]["counts"]["failed_count"]) == ("completed", 3)
    assert (jobs[B[1]]["status"], jobs[B[1]]["outcome"]) == ("RUNNING", None)
    assert (jobs[C[1]]["outcome"], jobs[C[1]]["error"]) == ("rejected", "NO_PERMISSION")
    assert jobs[A[1]]["error"] is None
    code, table, _ = await run_cli("status", "--config", str(daemon.config))
    assert code == 0
    header, *lines = [line.split() for line in table.splitlines()]
    assert (header[:4], header[-1]) == (["MODULE", "JOB_ID", "STATUS", "OUTCOME"], "ERROR")
    rows = {row[1]: row for row in lines}
    assert (rows[A[1]][:4], rows[A[1]][-1]) == (["Leads", A[1], "COMPLETED", "completed"], "-")
    assert (rows[A[1]][4:6], rows[C[1]][4:6]) == (["10", "10"], ["-", "-"])  # DONE, TOTAL
    assert rows[empty[1]][4:6] == ["0", "0"]  # counts Zoho gave, zero or not
    assert (rows[C[1]][:4], rows[C[1]][-1]) == (
        ["Contacts", C[1], "-", "rejected"],
        "NO_PERMISSION",
    )


async def test_status_needs_only_the_state_file_not_the_credentials(
    tmp_path: Path, sim: Simulator
) -> None:
    """An admin's shell rarely has the service's secrets: `status` reads only state_path."""
    sim.add_job(*A, ["COMPLETED"])
    state = tmp_path / "state.db"
    auth = {"access_token": "${SERVICE_ONLY_TOKEN}"}
    config = write_config(
        tmp_path / "w.yaml", sim.url, [A], auth=auth, top={"state_path": str(state)}
    )
    watcher = await WatcherProcess.start(
        "run", "--config", str(config), "--exit-when-done", env={"SERVICE_ONLY_TOKEN": "sim-token"}
    )
    assert await watcher.finish() == 0
    code, stdout, stderr = await run_cli("status", "--config", str(config), "--json")
    assert (code, stderr) == (0, "")
    assert [job["outcome"] for job in json.loads(stdout)] == ["completed"]


async def _state_after_a_clean_run(tmp_path: Path, sim: Simulator) -> Daemon:
    """A state file its watcher closed cleanly: no -wal or -shm file beside it."""
    sim.add_job(*A, ["COMPLETED:7,3,0,10"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    watcher = await daemon.start("--exit-when-done")
    assert await watcher.finish() == 0
    assert sorted(os.listdir(tmp_path)) == ["state.db", "state.db.lock", "watcher.yaml"]
    return daemon


async def test_status_makes_no_file_beside_the_state_file(tmp_path: Path, sim: Simulator) -> None:
    """A -wal and -shm made by whoever looked (root, say) would be theirs, and the watcher's
    user could not open the file again."""
    daemon = await _state_after_a_clean_run(tmp_path, sim)
    code, stdout, stderr = await run_cli("status", "--config", str(daemon.config), "--json")
    assert (code, [job["outcome"] for job in json.loads(stdout)], stderr) == (0, ["completed"], "")
    assert sorted(os.listdir(tmp_path)) == ["state.db", "state.db.lock", "watcher.yaml"]


@pytest.mark.skipif(
    shutil.which("unshare") is None
    or subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode,
    reason="needs unshare -rm (user and mount namespaces)",
)
async def test_status_reads_a_state_file_on_a_read_only_mount(
    tmp_path: Path, sim: Simulator
) -> None:
    """A backup, or the state volume mounted `:ro` into a debugging container."""
    daemon = await _state_after_a_clean_run(tmp_path, sim)
    read_only = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    status = ("watcher", "status", "--config", str(daemon.config), "--json")
    ran = await asyncio.create_subprocess_exec(
        *("unshare", "-rm", "sh", "-c", read_only, "sh", str(tmp_path), sys.executable, "-m"),
        *status,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(ran.communicate(), 60)
    assert (ran.returncode, stderr) == (0, b"")
    assert [job["counts"]["failed_count"] for job in json.loads(stdout)] == [3]


@pytest.mark.parametrize("linked", [False, True], ids=["file", "symbolic link"])
async def test_status_reads_a_state_file_its_watcher_is_writing(
    tmp_path: Path, sim: Simulator, linked: bool
) -> None:
    """While a watcher runs, the latest of what it saved is in the -wal file: beside the file
    itself when `state_path` is a symbolic link to it."""
    sim.add_job(*A, ["RUNNING:1,0,0,10", "RUNNING:2,0,0,10"])
    daemon = Daemon(tmp_path, sim)
    if linked:
        (tmp_path / "real").mkdir()
        (tmp_path / "state.db").symlink_to(tmp_path / "real" / "state.db")
    daemon.write([A], interval="100ms")
    watcher = await daemon.start()
    await watcher.wait_event("job.progress", progress=0.2)
    await sim.wait_for(lambda s: len(s.requests_for(*A)) >= 3)
    code, stdout, _ = await run_cli("status", "--config", str(daemon.config), "--json")
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert (code, [job["counts"]["updated_count"] for job in json.loads(stdout)]) == (0, [2])


@pytest.mark.parametrize(
    ("state_path", "problem"),
    [(None, "sets no state_path"), ("not/there/state.db", "no state file at")],
)
async def test_status_without_a_state_file_says_so_and_creates_none(
    tmp_path: Path, sim: Simulator, state_path: str | None, problem: str
) -> None:
    top = {} if state_path is None else {"state_path": str(tmp_path / state_path)}
    config = write_config(tmp_path / "watcher.yaml", sim.url, [A], top=top)
    code, stdout, stderr = await run_cli("status", "--config", str(config))
    assert (code, stdout) == (2, "")
    assert problem in stderr
    assert "\n" not in stderr.strip()
    assert not (tmp_path / "not").exists()


async def test_status_on_an_empty_state_file_shows_nothing_and_leaves_it_empty(
    tmp_path: Path, sim: Simulator
) -> None:
    """A watcher that created the file and died at once, or `touch state.db`: a look must not
    turn it into a database (world-readable, at that)."""
    state = tmp_path / "state.db"
    state.touch(mode=0o644)
    config = write_config(tmp_path / "w.yaml", sim.url, [A], top={"state_path": str(state)})
    code, stdout, stderr = await run_cli("status", "--config", str(config), "--json")
    assert (code, json.loads(stdout), stderr) == (0, [], "")
    assert (os.stat(state).st_size, sorted(os.listdir(tmp_path))) == (0, ["state.db", "w.yaml"])


async def test_status_leaves_an_older_schema_for_the_watcher_to_upgrade(
    tmp_path: Path, sim: Simulator
) -> None:
    """A look with a newer CLI must not lock out the older watcher still running on the file."""
    state = tmp_path / "state.db"
    with sqlite3.connect(state) as db:
        db.execute("PRAGMA application_id = 2053797681")  # "zjw1": ours
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.close()
    before = state.read_bytes()
    config = write_config(tmp_path / "watcher.yaml", sim.url, [A], top={"state_path": str(state)})
    code, stdout, stderr = await run_cli("status", "--config", str(config))
    assert (code, stdout, stderr.count("\n")) == (2, "", 1)
    assert "schema version 1, this zoho-job-watcher reads 3: run its watcher once" in stderr
    assert state.read_bytes() == before


@pytest.mark.parametrize("damage", ["garbage", "directory"])
async def test_an_unusable_state_file_is_one_line_and_exit_2(
    tmp_path: Path, sim: Simulator, damage: str
) -> None:
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    state = tmp_path / "state.db"
    if damage == "garbage":
        state.write_bytes(os.urandom(4096))
    else:
        state.mkdir()
    code, stdout, stderr = await run_cli("run", "--config", str(daemon.config))
    assert code == 2
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1
    assert str(state) in stderr
    assert "Traceback" not in stderr
    if damage == "garbage":
        assert "move the file aside" in stderr


async def test_a_second_watcher_on_the_same_state_file_is_refused(
    tmp_path: Path, sim: Simulator
) -> None:
    """Both would poll every job and announce every change: twice the credits, twice the events.
    A look with `status` is still welcome, and once the first has stopped the file is free."""
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    first = await daemon.start()
    await first.wait_event("watcher.started")
    code, stdout, stderr = await run_cli("run", "--config", str(daemon.config))
    assert (code, stdout) == (2, "")
    assert stderr.strip().splitlines() == [
        f"zoho-job-watcher: state file {tmp_path / 'state.db'}: another watcher is using it;"
        " run one watcher per state file"
    ]
    assert (await run_cli("status", "--config", str(daemon.config)))[0] == 0
    first.process.terminate()
    assert await first.finish() == 0
    second = await daemon.start("--exit-when-done")
    await second.wait_event("watcher.started")
    second.process.terminate()
    assert await second.finish() == 0


async def test_a_kept_token_spares_a_refresh_after_restart(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*A, ["RUNNING"] * 4 + ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    first = await daemon.start()
    await first.wait_event("job.status_changed")
    first.kill()
    await first.finish()
    second = await daemon.start("--exit-when-done")
    assert await second.finish() == 0
    assert len(sim.token_requests) == 1
    assert second.named("auth.token_refreshed") == []
    assert all(r.token_ok for r in sim.requests)


async def test_a_kept_token_is_not_reused_with_other_credentials(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Pointing the config at another org's accounts server must not keep polling the old org
    with the old org's token until it expires."""
    old, new = await sim_factory(), await sim_factory()
    old.add_job(*A, ["COMPLETED"])
    new.add_job(*B, ["COMPLETED"])
    daemon = Daemon(tmp_path, old)
    write_config(daemon.config, old.url, [A], auth=refresh_auth(old.url), top=daemon.top)
    assert await (await daemon.start("--exit-when-done")).finish() == 0
    write_config(daemon.config, new.url, [B], auth=refresh_auth(new.url), top=daemon.top)
    second = await daemon.start("--exit-when-done")
    assert await second.finish() == 0
    assert len(new.token_requests) == 1
    assert [r.job_id for r in old.requests] == [A[1]]
    assert all(r.token_ok for r in new.requests)


async def test_a_run_whose_jobs_all_ended_before_asks_for_no_token(
    tmp_path: Path, sim: Simulator
) -> None:
    """`--exit-when-done` after a restart ends on the remembered outcomes, even while the
    accounts server is down or the refresh token revoked: there is nothing left to poll."""
    sim.add_job(*A, ["COMPLETED"])
    sim.add_job(*B, ["FAILED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, B])
    assert await (await daemon.start("--exit-when-done")).finish() == 1
    sim.script_tokens(["invalid_code"])
    write_config(daemon.config, sim.url, [A, B], auth=refresh_auth(sim.url), top=daemon.top)
    second = await daemon.start("--exit-when-done")
    assert await second.finish() == 1
    (stopped,) = second.named("watcher.stopped")
    assert (stopped["reason"], stopped["outcomes"]) == (
        "all_jobs_ended",
        {"completed": 1, "failed": 1},
    )
    assert sim.token_requests == []
    assert len(sim.requests) == 2  # the first run's two polls


async def test_a_refused_token_kept_in_the_state_file_is_not_taken_back_after_a_restart(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["RUNNING"])
    sim.script_tokens(["ok", "invalid_code"])  # the refresh after the 401 finds the grant revoked
    daemon = Daemon(tmp_path, sim)
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    first = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) >= 2)
    sim.revoke_tokens()
    assert await first.finish() == 3
    refused = len(sim.requests)
    second = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) > refused)
    second.process.terminate()
    assert await second.finish() == 0
    assert sim.requests[refused].token_ok  # a fresh token, not the one Zoho refused
    assert [e["reason"] for e in second.named("auth.token_refreshed")] == ["startup"]


async def test_refreshes_before_a_restart_count_in_zohos_window(
    tmp_path: Path, sim: Simulator
) -> None:
    """A restart policy after exit 3 (a token refused right after its refresh) would otherwise
    ask for a token per restart, past Zoho's ten per ten minutes: Zoho then blocks the client,
    and every other integration on it."""
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, http={"port": 0})
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    first = await daemon.start()
    await first.wait_event("job.status_changed")
    first.process.terminate()
    assert await first.finish() == 0
    store = await StateStore.open(tmp_path / "state.db")
    kept = store.token
    assert kept is not None
    assert len(kept.asked) == 1  # the refresh at start
    assert time.time() - 60 < kept.asked[0] <= time.time()
    # As if nine more runs had each refreshed once in the last minute, the last token refused.
    asked = tuple(time.time() - 60 + n for n in range(10))
    await store.save_token(replace(kept, expires_at=0.0, asked=asked))
    await store.close()
    granted = len(sim.token_requests)
    second = await daemon.start()
    held = await second.wait_event("auth.refresh_failed")
    assert held["error"] == "refresh_limit"
    assert 500 < held["retry_in_s"] <= 540  # until the first of the ten is ten minutes old
    url = f"http://{second.named('watcher.started')[0]['http']}/metrics"
    _, metrics = await http_get(url)
    assert 'zoho_watcher_token_refreshes_total{result="failed"} 0.0' in metrics  # none was sent
    second.process.terminate()
    assert await second.finish() == 0
    assert len(sim.token_requests) == granted


@pytest.mark.parametrize("answer", ["throttled", "slow:30"])
async def test_a_refresh_counts_in_zohos_window_across_a_restart_before_any_token_came_back(
    tmp_path: Path, sim: Simulator, answer: str
) -> None:
    """Zoho counts a token request whether or not it brings a token back: throttled ("Access
    Denied"), or cut off by a stop (a deploy, a node drain) while it was out. Forgotten, each
    restart would ask again at once, past Zoho's ten per ten minutes."""
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim)
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    sim.script_tokens([answer])
    first = await daemon.start()
    await sim.wait_for(lambda s: s.token_arrivals == 1)
    first.process.terminate()
    assert await first.finish() == 0
    assert first.named("auth.token_refreshed") == []
    store = await StateStore.open(tmp_path / "state.db")
    kept = store.token
    await store.close()
    assert kept is not None
    assert len(kept.asked) == 1
    assert time.time() - 60 < kept.asked[0] <= time.time()


async def test_a_token_refused_again_after_its_refresh_is_not_sent_by_the_next_run(
    tmp_path: Path, sim: Simulator
) -> None:
    """401, a refresh, and a 401 again for the fresh token: exit 3. A restart policy then starts
    the next run, which must ask for a token rather than send the refused one (once per
    worker, and each a credit)."""
    sim.add_job(*A, ["RUNNING", "INVALID_TOKEN", "INVALID_TOKEN", "RUNNING"])
    daemon = Daemon(tmp_path, sim)
    write_config(daemon.config, sim.url, [A], auth=refresh_auth(sim.url), top=daemon.top)
    first = await daemon.start()
    assert await first.finish() == 3
    assert [e["reason"] for e in first.named("auth.token_refreshed")] == ["startup", "rejected"]
    store = await StateStore.open(tmp_path / "state.db")
    kept = store.token
    await store.close()
    assert kept is not None
    assert kept.expires_at == 0.0  # kept as dead
    polled = len(sim.requests)
    second = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) > polled)
    second.process.terminate()
    assert await second.finish() == 0
    assert [e["reason"] for e in second.named("auth.token_refreshed")] == ["startup"]
    assert len(sim.token_requests) == 3
    assert sim.token_requests[2].done <= sim.requests[polled].at  # a fresh token first


async def test_finished_jobs_that_left_the_config_are_pruned(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["COMPLETED"])
    sim.add_job(*B, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, retention="1ms")
    daemon.write([A, B])
    first = await daemon.start()
    await first.wait_event("job.finished")
    daemon.write([B])
    await first.wait_event("job.removed")
    first.process.terminate()
    await first.finish()
    second = await daemon.start()
    pruned = await second.wait_event("state.pruned")
    assert pruned["jobs"] == 1
    second.process.terminate()
    assert await second.finish() == 0
    code, stdout, _ = await run_cli("status", "--config", str(daemon.config), "--json")
    assert code == 0
    assert [job["job_id"] for job in json.loads(stdout)] == [B[1]]


async def test_sigterm_during_a_burst_flushes_state_and_exits_0(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = [("Leads", str(n)) for n in range(60)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING", "slow:0.2:RUNNING", "COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write(jobs, max_concurrency=10, rate_limit=500)
    watcher = await daemon.start()
    await sim.wait_for(lambda s: len(s.requests) >= 70)
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    code, stdout, _ = await run_cli("status", "--config", str(daemon.config), "--json")
    assert code == 0
    remembered = json.loads(stdout)
    assert len(remembered) == 60
    assert all(job["status"] == "RUNNING" or job["outcome"] for job in remembered)


async def test_sigterm_during_a_reload_exits_0_promptly(tmp_path: Path, sim: Simulator) -> None:
    jobs = [("Leads", str(n)) for n in range(2000)]  # a reload with real work to do
    sim.add_job(*A, ["RUNNING"])
    daemon = Daemon(tmp_path, sim, reload_interval="1h")
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.status_changed")
    daemon.write([A, *jobs])
    watcher.process.send_signal(signal.SIGHUP)
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    assert watcher.events[-1]["event"] == "watcher.stopped"


async def test_a_job_added_after_every_other_ended_is_polled(
    tmp_path: Path, sim: Simulator
) -> None:
    """No worker is busy to notice it: the new job must wake one."""
    sim.add_job(*A, ["COMPLETED"])
    sim.add_job(*B, ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A])
    watcher = await daemon.start()
    await watcher.wait_event("job.finished", job_id=A[1])
    daemon.write([A, B])
    await watcher.wait_event("config.reloaded")
    await watcher.wait_event("job.finished", job_id=B[1], timeout=10)
    watcher.process.terminate()
    assert await watcher.finish() == 0


async def test_removing_a_failed_job_does_not_end_an_exit_when_done_run(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*A, ["FAILED"])
    sim.add_job(*C, ["RUNNING"] * 40 + ["COMPLETED"])
    daemon = Daemon(tmp_path, sim)
    daemon.write([A, C])
    watcher = await daemon.start("--exit-when-done")
    await watcher.wait_event("job.finished", job_id=A[1])
    daemon.write([C])
    await watcher.wait_event("config.reloaded")
    await watcher.wait_event("job.finished", job_id=C[1])  # C is still watched to its end
    assert await watcher.finish() == 0  # the failed job left the config


async def test_a_failed_last_save_makes_a_run_that_would_exit_1_exit_2(
    tmp_path: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 1 says which jobs failed; with the state file no longer holding what happened, the
    exit code must say that instead. (A full disk at the last commit, simulated at the store's
    edge.)"""
    sim.add_job(*A, ["FAILED"])
    really_close = StateStore.close

    async def failing_close(self: StateStore) -> None:
        await really_close(self)
        raise StateError("state file x: cannot save: disk full")

    monkeypatch.setattr(StateStore, "close", failing_close)
    path = write_config(
        tmp_path / "w.yaml", sim.url, [A], top={"state_path": str(tmp_path / "s.db")}
    )
    config = load_all(path, {"ZOHO_ACCESS_TOKEN": ACCESS_TOKEN})
    out = io.StringIO()
    log = EventLog(out, "json", "info", [ACCESS_TOKEN])
    watcher = service.Watcher(config, log, exit_when_done=True)
    assert await asyncio.wait_for(watcher.run(), 20) == 2
    assert '"state.failed"' in out.getvalue()
