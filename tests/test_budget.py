"""API credits end to end: the daily budget holds, and Zoho's low-credit header is heeded."""

from __future__ import annotations

import asyncio
import io
import json
import math
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.harness import ACCESS_TOKEN, WatcherProcess, refresh_auth, run_cli, write_config
from watcher import credits, polling, service
from watcher.config import load_all
from watcher.credits import RELAXED, Demand, Pace
from watcher.events import EventLog
from watcher.simulator import Simulator

JOBS = [("Leads", "1"), ("Deals", "2"), ("Contacts", "3")]


async def test_the_daily_budget_is_never_exceeded(tmp_path: Path, sim: Simulator) -> None:
    for job in JOBS:
        sim.add_job(*job, ["RUNNING"])
    config = write_config(tmp_path / "w.yaml", sim.url, JOBS, credits_per_day=2)
    watcher = await WatcherProcess.start("run", "--config", str(config))
    await sim.wait_for(lambda s: len(s.requests) >= 2)
    with pytest.raises(TimeoutError):  # a bounded look for a third request, which must not come
        await sim.wait_for(lambda s: len(s.requests) > 2, timeout=1.5)
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0


async def test_the_daily_budget_holds_across_a_restart(tmp_path: Path, sim: Simulator) -> None:
    """With a state file, credits spent before a restart count for their 24 hours: a crash loop
    or a redeploy must not start every run with a full day's budget."""
    for job in JOBS:
        sim.add_job(*job, ["RUNNING"])
    state = {"state_path": str(tmp_path / "state.db")}
    config = write_config(tmp_path / "w.yaml", sim.url, JOBS, top=state, credits_per_day=2)
    first = await WatcherProcess.start("run", "--config", str(config))
    await sim.wait_for(lambda s: len(s.requests) >= 2)
    first.process.terminate()
    assert await first.finish(timeout=5) == 0
    second = await WatcherProcess.start("run", "--config", str(config))
    await second.wait_event("watcher.started")
    with pytest.raises(TimeoutError):  # the job never polled is due at once; the budget is spent
        await sim.wait_for(lambda s: len(s.requests) > 2, timeout=1.5)
    second.process.terminate()
    assert await second.finish(timeout=5) == 0


async def test_gaps_stretched_to_the_budget_are_alike_and_outlive_a_restart(
    tmp_path: Path, sim: Simulator
) -> None:
    """Ten jobs at a 1 s interval would want 864,000 credits a day against 5,000: every gap
    stretches to about 173 s, the first job's as much as the last's, and a restart keeps the
    plans rather than poll each job again within `max_interval` (a round of credits per
    restart: a crash loop would spend the day's in minutes)."""
    jobs = [("Leads", str(n)) for n in range(1, 11)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING"])
    top = {"state_path": str(tmp_path / "state.db"), "reload_interval": "100ms"}
    polling = {"interval": "1s", "max_interval": "2s", "credits_per_day": 5000}
    config = write_config(tmp_path / "w.yaml", sim.url, jobs, top=top, **polling)
    first = await WatcherProcess.start("run", "--config", str(config))
    await sim.wait_for(lambda s: len(s.requests) >= len(jobs))
    first.process.terminate()
    assert await first.finish(timeout=5) == 0
    code, stdout, _ = await run_cli("status", "--config", str(config), "--json")
    assert code == 0
    gaps = [job["next_poll_at"] - job["last_seen"] for job in json.loads(stdout)]
    assert min(gaps) > 150  # alike: not 17 s for the first and 173 s for the last
    polled = len(sim.requests)
    second = await WatcherProcess.start("run", "--config", str(config))
    await second.wait_event("watcher.started")
    with pytest.raises(TimeoutError):  # a bounded look for an early poll, which must not come
        await sim.wait_for(lambda s: len(s.requests) > polled, timeout=3)
    # Plans kept from before the restart are brought forward like this run's own, once the
    # budget that stretched them is lifted.
    write_config(config, sim.url, jobs, top=top, interval="1s", max_interval="2s")
    await second.wait_event("config.reloaded")
    await sim.wait_for(lambda s: len(s.requests) >= polled + len(jobs), timeout=10)
    second.process.terminate()
    assert await second.finish(timeout=5) == 0


def test_demand_is_the_sum_of_poll_rates() -> None:
    demand = Demand()
    demand.plan("a", 10.0)
    demand.plan("b", 5.0)
    demand.plan("a", 20.0)  # re-planned: the old rate goes
    assert demand.per_s == pytest.approx(1 / 20 + 1 / 5)
    demand.drop("b")
    demand.drop("b")
    assert demand.per_s == pytest.approx(1 / 20)


def test_a_fallen_stretch_brings_parked_jobs_forward() -> None:
    pace: Pace[str] = Pace()
    assert pace.plan("parked", now=0.0, gap=10.0, stretch=1000.0) == 10_000.0  # credits were low
    assert pace.plan("unstretched", now=50.0, gap=10.0, stretch=1.0) == 10.0
    assert pace.sooner(now=100.0, stretch=1000.0 / RELAXED * 1.01) == []  # wavering: no pass
    assert pace.sooner(now=100.0, stretch=2.0) == [("parked", 0.0)]  # 0 + 10 x 2 is past
    assert pace.sooner(now=101.0, stretch=1.0) == []  # already due: not scheduled twice
    pace.drop("parked")
    assert pace.plan("later", now=200.0, gap=100.0, stretch=10.0) == 1000.0
    assert pace.sooner(now=250.0, stretch=1.0) == [("later", 50.0)]  # due at 200 + 100 x 1


def test_a_job_due_by_now_is_not_brought_forward_into_a_second_poll() -> None:
    """Due, it has left the queue for a worker (which may wait at the gate for a while):
    scheduled again, another worker would poll it at the same time."""
    pace: Pace[str] = Pace()
    pace.plan("in flight", now=0.0, gap=10.0, stretch=4.0)  # due at 40
    assert pace.sooner(now=41.0, stretch=1.0) == []


async def test_a_reload_that_lifts_the_budget_brings_parked_jobs_forward(
    tmp_path: Path, sim: Simulator
) -> None:
    """Planned under a budget of 30 a day, the next polls are hours away; lifted, they are not."""
    for job in JOBS:
        sim.add_job(*job, ["RUNNING"])
    path = tmp_path / "w.yaml"
    write_config(path, sim.url, JOBS, top={"reload_interval": "100ms"}, credits_per_day=30)
    watcher = await WatcherProcess.start("run", "--config", str(path))
    await sim.wait_for(lambda s: len(s.requests) >= len(JOBS))
    write_config(path, sim.url, JOBS, top={"reload_interval": "100ms"})
    await watcher.wait_event("config.reloaded")
    await sim.wait_for(lambda s: all(len(s.requests_for(*job)) >= 2 for job in JOBS), timeout=10)
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0


async def test_a_plan_brought_forward_is_the_plan_shown_and_kept(
    tmp_path: Path, sim: Simulator
) -> None:
    """Raised from 30 to 3,000 a day, the budget brings polls planned hours away to minutes
    away: `/jobs` (and the state file, for a restart) must say so, not the old plan."""
    for job in JOBS:
        sim.add_job(*job, ["RUNNING"])
    path = tmp_path / "w.yaml"
    top = {"reload_interval": "100ms", "http": {"port": 0}}
    write_config(path, sim.url, JOBS, top=top, credits_per_day=30)
    watcher = await WatcherProcess.start("run", "--config", str(path))
    started = await watcher.wait_event("watcher.started")
    await sim.wait_for(lambda s: len(s.requests) >= len(JOBS))
    write_config(path, sim.url, JOBS, top=top, credits_per_day=3000)
    await watcher.wait_event("config.reloaded")
    url = f"http://{started['http']}/jobs"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        jobs = await response.json()
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    gaps = [job["next_poll_at"] - job["last_seen"] for job in jobs]
    assert max(gaps) < 600  # 86.4 s: three jobs at 10 s against 3,000 a day, not 8,640 s


async def test_low_credits_warn_once_and_slow_down(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    sim = await sim_factory(org_credits=40)
    job = JOBS[0]
    sim.add_job(*job, ["RUNNING"])
    config = write_config(
        tmp_path / "w.yaml",
        sim.url,
        [job],
        credits_floor=15,
        schedule="fixed",
        interval="20ms",
        max_interval="20ms",
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    low = await watcher.wait_event("credits.low")
    assert (low["level"], low["floor"], low["remaining"]) == ("warning", 15, 14)
    await sim.wait_for(lambda s: len(s.requests) >= 40)  # the org's credits are gone
    at = [r.at for r in sim.requests]
    # Gaps stretched by floor / remaining (15 at the end): against the 20 ms interval, not a
    # measured early gap, which a loaded machine can double.
    assert at[-1] - at[-2] > 8 * 0.020
    assert len(watcher.named("credits.low")) == 1  # said once, not at every poll
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0


async def test_credits_gauge_follows_the_header(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    sim = await sim_factory(org_credits=10)
    sim.add_job("Leads", "1", ["RUNNING"] * 7 + ["COMPLETED"])
    config = write_config(
        tmp_path / "w.yaml", sim.url, [("Leads", "1")], top={"http": {"port": 0}}, credits_floor=0
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    started = await watcher.wait_event("watcher.started")
    await watcher.wait_event("job.finished")
    url = f"http://{started['http']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    assert "zoho_watcher_api_credits_remaining 2.0" in text
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0


async def test_a_low_credit_reading_outlives_a_restart(
    tmp_path: Path,
    sim_factory: Callable[..., Awaitable[Simulator]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forgotten at a restart, the org would look flush again: the next pace check would bring
    every job parked under the floor forward, into an org out of credits."""
    monkeypatch.setattr(polling, "PACE_CHECK_S", 0.05)
    sim = await sim_factory(org_credits=1)  # every answer says 0 credits are left
    sim.add_job("Leads", "1", ["RUNNING"])
    top = {"state_path": str(tmp_path / "state.db")}
    path = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")], top=top, credits_floor=1000)
    env = {"ZOHO_ACCESS_TOKEN": ACCESS_TOKEN}
    for run in ("first", "after a restart"):
        watcher = service.Watcher(load_all(path, env), EventLog(io.StringIO(), "json", "info"))
        running = asyncio.create_task(watcher.run())
        if run == "first":  # its next poll is parked a thousand intervals away
            await sim.wait_for(lambda s: len(s.requests) == 1)
        else:
            with pytest.raises(TimeoutError):  # twenty pace checks, and still parked
                await sim.wait_for(lambda s: len(s.requests) > 1, timeout=1)
        watcher.stop()
        assert await running == 0


async def test_the_credits_gauge_shows_a_kept_reading_after_a_restart(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """The budget still heeds what Zoho said before the restart: an alert on the gauge must not
    clear while the watcher stays slowed down by it."""
    sim = await sim_factory(org_credits=1)  # every answer says 0 credits are left
    sim.add_job("Leads", "1", ["RUNNING"])
    top = {"state_path": str(tmp_path / "state.db"), "http": {"port": 0}}
    path = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")], top=top, credits_floor=1000)
    first = await WatcherProcess.start("run", "--config", str(path))
    await first.wait_event("credits.low")
    first.process.terminate()
    assert await first.finish(timeout=5) == 0
    again = await WatcherProcess.start("run", "--config", str(path))
    started = await again.wait_event("watcher.started")
    url = f"http://{started['http']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    again.process.terminate()
    assert await again.finish(timeout=5) == 0
    assert len(sim.requests) == 1  # parked: no answer has said it again
    assert "zoho_watcher_api_credits_remaining 0.0" in text


async def test_the_kept_reading_shows_while_the_first_token_is_awaited(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """The accounts server can hold the first token for minutes: the gauge shows what the state
    file holds from the start, not once a token has come."""
    sim = await sim_factory(tokens=(), org_credits=1)
    sim.add_job("Leads", "1", ["RUNNING"])
    top = {"state_path": str(tmp_path / "state.db"), "http": {"port": 0}}
    auth = refresh_auth(sim.url)
    path = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")], auth=auth, top=top)
    first = await WatcherProcess.start("run", "--config", str(path))
    await first.wait_event("credits.low")
    first.process.terminate()
    assert await first.finish(timeout=5) == 0
    with sqlite3.connect(tmp_path / "state.db") as db:  # no kept token: the next run asks
        db.execute("DELETE FROM token")
    sim.hold_tokens()
    again = await WatcherProcess.start("run", "--config", str(path))
    started = await again.wait_event("watcher.started")
    await sim.wait_for(lambda s: s.token_arrivals == 1)
    url = f"http://{started['http']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    again.process.terminate()
    assert await again.finish(timeout=5) == 0
    assert "zoho_watcher_api_credits_remaining 0.0" in text


async def test_an_aged_out_credit_reading_brings_a_parked_job_forward(
    tmp_path: Path,
    sim_factory: Callable[..., Awaitable[Simulator]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No answer tells the watcher that a low reading has gone stale: the periodic pace check
    does. Without it the job would sit out the gap stretched by floor / remaining (100 s here)."""
    monkeypatch.setattr(polling, "PACE_CHECK_S", 0.05)
    monkeypatch.setattr(credits, "REMAINING_TTL_S", 0.3)
    sim = await sim_factory(org_credits=1)  # every answer says 0 credits are left
    sim.add_job("Leads", "1", ["RUNNING"])
    path = write_config(
        tmp_path / "w.yaml", sim.url, [("Leads", "1")], credits_floor=1000, schedule="fixed"
    )
    config = load_all(path, {"ZOHO_ACCESS_TOKEN": ACCESS_TOKEN})
    watcher = service.Watcher(config, EventLog(io.StringIO(), "json", "info", [ACCESS_TOKEN]))
    running = asyncio.create_task(watcher.run())
    await sim.wait_for(lambda s: len(s.requests) >= 2, timeout=10)
    watcher.stop()
    assert await running == 0


async def test_a_retry_comes_when_its_event_said_whatever_the_credits(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Gaps stretch while credits are low (here five times), but a retry keeps its backoff."""
    sim = await sim_factory(org_credits=4)  # from the third answer on, 1 credit left
    sim.add_job("Leads", "1", ["RUNNING:1,0,0,100"] * 3 + ["500", "RUNNING:1,0,0,100"])
    config = write_config(
        tmp_path / "w.yaml",
        sim.url,
        [("Leads", "1")],
        credits_floor=5,
        schedule="fixed",
        backoff_initial="200ms",
        backoff_max="200ms",
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    failed = await watcher.wait_event("job.poll_failed")
    await sim.wait_for(lambda s: len(s.requests) >= 5)
    failing, retry = sim.requests[3:5]
    assert retry.at - failing.done < failed["retry_in_s"] + 0.3  # not five times that
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0


async def test_a_job_removed_while_its_request_is_out_leaves_no_demand(
    tmp_path: Path, sim: Simulator
) -> None:
    """Its answer, arriving after the removal, must not plan it again: a ghost's demand would
    stretch every remaining job's gap under a budget, more with every such removal."""
    gone, kept = ("Leads", "1001"), ("Deals", "2002")
    sim.add_job(*gone, ["RUNNING", "slow:1:RUNNING"])
    sim.add_job(*kept, ["RUNNING"])
    path = tmp_path / "w.yaml"
    settings = {"schedule": "fixed", "interval": "100ms", "max_interval": "300ms"}
    write_config(path, sim.url, [gone, kept], **settings)
    env = {"ZOHO_ACCESS_TOKEN": ACCESS_TOKEN}
    watcher = service.Watcher(load_all(path, env), EventLog(io.StringIO(), "json", "info"))
    running = asyncio.create_task(watcher.run())
    await sim.wait_for(lambda s: len(s.requests_for(*gone)) == 2)  # its slow answer on its way
    write_config(path, sim.url, [kept], **settings)
    await watcher._apply(load_all(path, env))  # as a reload does (white box: no waiting on one)
    await sim.wait_for(lambda s: s.requests_for(*gone)[-1].done < math.inf, timeout=5)
    polled = len(sim.requests_for(*kept))  # two more polls of it: the late answer was taken
    await sim.wait_for(lambda s: len(s.requests_for(*kept)) >= polled + 2, timeout=5)
    watcher.stop()
    assert await running == 0
    assert watcher._poller is not None
    assert watcher._poller.demand.per_s == pytest.approx(1 / 0.1)  # the kept job's alone


async def test_jobs_never_seen_with_a_status_leave_no_demand(
    tmp_path: Path, sim: Simulator
) -> None:
    """Counted at `interval` from the start, until their first answer: one that only ever fails
    has no pace to budget for, and must not slow the healthy ones."""
    healthy, failing = ("Leads", "1"), [("Deals", str(n)) for n in range(2, 6)]
    sim.add_job(*healthy, ["RUNNING"])
    for job in failing:
        sim.add_job(*job, ["500"])
    path = write_config(
        tmp_path / "w.yaml",
        sim.url,
        [healthy, *failing],
        top={"state_path": str(tmp_path / "state.db")},
        schedule="fixed",
        interval="100ms",
        backoff_initial="5s",
        backoff_max="5s",
        credits_per_day=864_000,
    )
    env = {"ZOHO_ACCESS_TOKEN": ACCESS_TOKEN}
    for run in ("first", "after a restart, their retries still to come"):
        watcher = service.Watcher(load_all(path, env), EventLog(io.StringIO(), "json", "info"))
        running = asyncio.create_task(watcher.run())
        if run == "first":
            await sim.wait_for(lambda s: all(s.requests_for(*job) for job in failing))
        polled = len(sim.requests_for(*healthy))  # two more: every answer so far was taken
        await sim.wait_for(lambda s, n=polled: len(s.requests_for(*healthy)) >= n + 2)
        watcher.stop()
        assert await running == 0
        assert watcher._poller is not None
        assert watcher._poller.demand.per_s == pytest.approx(1 / 0.1), run  # the healthy one's


async def test_a_failed_save_met_while_keeping_a_credit_reading_stops_the_watcher_cleanly(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Every answer says how many credits are left, and each such count is kept: the first
    keep after a save failed must stop the watcher with state.failed and exit 2, as any save
    does, not with a traceback."""
    sim = await sim_factory(org_credits=100)  # Zoho's count comes from the 50th answer on
    sim.add_job("Leads", "1", ["RUNNING"])
    state_path = tmp_path / "state.db"
    config = write_config(
        tmp_path / "w.yaml",
        sim.url,
        [("Leads", "1")],
        top={"state_path": str(state_path)},
        schedule="fixed",
        interval="5ms",
        max_interval="5ms",
        rate_limit=1000,
        credits_floor=0,
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    await sim.wait_for(lambda s: len(s.requests) >= 60, timeout=20)
    with sqlite3.connect(state_path) as state:  # every save fails from now on
        state.execute(
            "CREATE TRIGGER full BEFORE INSERT ON jobs BEGIN SELECT RAISE(FAIL, 'disk full'); END"
        )
    state.close()
    assert await watcher.finish(timeout=10) == 2
    (failed,) = watcher.named("state.failed")
    assert "disk full" in failed["error"]
    assert "Traceback" not in watcher.stderr
