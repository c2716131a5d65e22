"""OAuth through the CLI and the simulator: refresh at start, on expiry, on 401, one at a time."""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from tests.harness import (
    CLIENT_SECRET,
    SECRETS,
    WatcherProcess,
    refresh_auth,
    write_config,
)
from watcher.auth import Grant, RefreshingToken, Refusal, read_token_answer
from watcher.config import AuthSettings, Secret, parse_config
from watcher.simulator import Simulator
from watcher.state import StoredToken

JOB = ("Leads", "554023000000506003")
SimFactory = Callable[..., Awaitable[Simulator]]


async def watch(
    tmp_path: Path,
    sim: Simulator,
    jobs: list[tuple[str, str]],
    *extra: str,
    auth: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    **polling: object,
) -> WatcherProcess:
    config = write_config(
        tmp_path / "watcher.yaml",
        sim.url,
        jobs,
        auth=auth or refresh_auth(sim.url, refresh_backoff_initial="100ms"),
        **polling,
    )
    return await WatcherProcess.start(
        "run", "--config", str(config), "--exit-when-done", *extra, env=env
    )


def refreshes(watcher: WatcherProcess) -> list[str]:
    return [str(e["reason"]) for e in watcher.named("auth.token_refreshed")]


async def test_a_token_is_fetched_before_the_first_poll(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["RUNNING", "COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert refreshes(watcher) == ["startup"]
    names = [e["event"] for e in watcher.events]
    assert names.index("auth.token_refreshed") < names.index("job.status_changed")
    assert watcher.named("auth.token_refreshed")[0]["expires_in_s"] == 3600
    assert [r.answer for r in sim.token_requests] == ["ok"]
    assert all(r.token_ok for r in sim.requests)


async def test_refreshes_ahead_of_expiry(tmp_path: Path, sim_factory: SimFactory) -> None:
    sim = await sim_factory(token_lifetime=1.0)
    sim.add_job(*JOB, ["RUNNING"] * 25 + ["COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert refreshes(watcher)[0] == "startup"
    assert "expiry" in refreshes(watcher)
    assert all(r.token_ok for r in sim.requests), "never sent an expired token"


@pytest.mark.parametrize("code", ["INVALID_TOKEN", "AUTHENTICATION_FAILURE"])
async def test_a_refused_token_is_refreshed_and_the_request_retried(
    tmp_path: Path, sim: Simulator, code: str
) -> None:
    sim.add_job(*JOB, ["RUNNING", code, "COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert refreshes(watcher) == ["startup", "rejected"]
    assert watcher.named("job.poll_failed") == []
    assert [r.answer for r in sim.requests_for(*JOB)] == ["RUNNING", code, "COMPLETED"]


async def test_a_token_used_up_is_refreshed(tmp_path: Path, sim_factory: SimFactory) -> None:
    sim = await sim_factory(token_max_uses=3)
    sim.add_job(*JOB, ["RUNNING"] * 6 + ["COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert refreshes(watcher) == ["startup", "rejected", "rejected"]


async def test_twenty_concurrent_401s_cause_one_refresh(tmp_path: Path, sim: Simulator) -> None:
    jobs = [("Deals", str(n)) for n in range(20)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING"] * 3 + ["COMPLETED"])
    sim.script_tokens(["ok", "slow:0.5"])  # the second refresh takes a while: all 401s meet it
    watcher = await watch(tmp_path, sim, jobs, max_concurrency=20, rate_limit=200)
    await sim.wait_for(lambda s: len(s.requests) >= 20)
    sim.revoke_tokens()
    assert await watcher.finish() == 0
    refused = [r for r in sim.requests if not r.token_ok]
    assert 0 < len(refused) <= 20  # those on their way when the first 401 came back
    assert all(r.at < sim.token_requests[1].done for r in refused), "all waited for one refresh"
    assert refreshes(watcher) == ["startup", "rejected"]
    assert len(sim.token_requests) == 2


async def test_a_refused_token_is_not_sent_again_while_its_successor_is_fetched(
    tmp_path: Path, sim: Simulator
) -> None:
    slow, others = ("Deals", "1"), [("Deals", "2"), ("Deals", "3")]
    sim.add_job(*slow, ["RUNNING", "slow:1:RUNNING", "RUNNING"])
    for job in others:
        sim.add_job(*job, ["RUNNING"])
    sim.script_tokens(["ok", "slow:1.5"])
    watcher = await watch(
        tmp_path, sim, [slow, *others], interval="50ms", max_interval="50ms", max_concurrency=2
    )
    await sim.wait_for(lambda s: len(s.requests_for(*slow)) == 2)  # one worker busy for 1 s
    sim.revoke_tokens()  # the other worker meets the 401 and the refresh begins
    await sim.wait_for(lambda s: len(s.token_requests) == 2)
    await sim.wait_for(
        lambda s: s.requests[-1].token_ok and s.requests[-1].at > s.token_requests[1].done
    )
    watcher.process.terminate()
    assert await watcher.finish() == 0
    refresh = sim.token_requests[1]
    # The slow job's worker, free again while the refresh still runs, must wait for the new
    # token rather than send the refused one. (A request that had its token before the 401
    # came back may still land just after the refresh began.)
    late = [r for r in sim.requests if not r.token_ok and r.at > refresh.at + 0.1]
    assert late == []
    assert refreshes(watcher) == ["startup", "rejected"]


async def test_a_refresh_falling_due_runs_while_polls_go_on_with_the_live_token(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Refreshing 5 minutes ahead must not stop every poll for as long as a slow or throttled
    accounts server takes: the current token still has those minutes to live."""
    sim = await sim_factory(token_lifetime=8.0)  # refreshed 0.8 s ahead, sent until 7.87 s
    sim.add_job(*JOB, ["RUNNING"])
    sim.script_tokens(["ok", "slow:0.6"])
    watcher = await watch(tmp_path, sim, [JOB], interval="50ms", max_interval="50ms")
    await sim.wait_for(lambda s: len(s.token_requests) == 2, timeout=20)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    refresh = sim.token_requests[1]
    meanwhile = [r for r in sim.requests if refresh.at + 0.05 < r.at < refresh.done - 0.05]
    assert meanwhile, "polls went on while the refresh ran"
    assert all(r.token_ok for r in sim.requests)
    assert refreshes(watcher) == ["startup", "expiry"]


async def test_credentials_a_background_refresh_finds_revoked_end_the_run_at_once(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Nobody awaits a refresh made ahead of time: its verdict must still end the run (exit 3),
    not be asked for again at every poll until the token dies."""
    sim = await sim_factory(token_lifetime=5.0)
    sim.add_job(*JOB, ["RUNNING"])
    sim.script_tokens(["ok", "invalid_code"])
    watcher = await watch(tmp_path, sim, [JOB], interval="50ms", max_interval="50ms")
    assert await watcher.finish(timeout=20) == 3
    assert [r.answer for r in sim.token_requests] == ["ok", "invalid_code"]
    assert watcher.named("auth.failed")[0]["error"] == "invalid_code"
    assert all(r.at < sim.token_requests[1].done + 0.1 for r in sim.requests)


async def test_tokens_refused_as_fast_as_they_come_never_spend_more_than_zoho_grants(
    tmp_path: Path, sim_factory: Callable[..., Awaitable[Simulator]]
) -> None:
    """Zoho grants ten tokens per refresh token in ten minutes and blocks the client for up to
    half an hour past that; an eleventh refresh waits for the first to age out instead."""
    sim = await sim_factory(token_max_uses=1)  # every token is refused at its second use
    sim.add_job(*JOB, ["RUNNING"])
    watcher = await watch(tmp_path, sim, [JOB], interval="50ms", max_interval="50ms")
    held = await watcher.wait_event("auth.refresh_failed", error="refresh_limit")
    assert 590 < held["retry_in_s"] <= 600
    assert len(sim.token_requests) == 10
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert len(sim.token_requests) == 10


async def test_a_token_answer_too_large_or_with_a_huge_error_is_a_failure_to_retry(
    tmp_path: Path, sim: Simulator
) -> None:
    """16 KiB that unpack to 16 MiB are not unpacked whole; a server's 10,000-character error is
    not shown."""
    sim.add_job(*JOB, ["COMPLETED"])
    sim.script_tokens(["bomb", "hugeerror", "ok"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    errors = [e["error"] for e in watcher.named("auth.refresh_failed")]
    assert errors == ["response_too_large", "unrecognised_code"]
    assert refreshes(watcher) == ["startup"]


@pytest.mark.parametrize("when", ["startup", "running"])
async def test_a_throttled_refresh_backs_off_and_jobs_finish_afterwards(
    tmp_path: Path, sim: Simulator, when: str
) -> None:
    jobs = [JOB, ("Deals", "9")]
    for job in jobs:
        sim.add_job(*job, ["RUNNING", "RUNNING", "COMPLETED"])
    throttled = ["throttled", "throttled", "ok"]
    sim.script_tokens(throttled if when == "startup" else ["ok", *throttled])
    watcher = await watch(tmp_path, sim, jobs)
    if when == "running":
        await sim.wait_for(lambda s: len(s.requests) >= 2)
        sim.revoke_tokens()
    assert await watcher.finish() == 0
    failures = watcher.named("auth.refresh_failed")
    assert [e["attempt"] for e in failures] == [1, 2]
    assert all(e["level"] == "warning" and e["error"] == "Access Denied" for e in failures)
    assert failures[1]["retry_in_s"] > failures[0]["retry_in_s"]
    gap = sim.token_requests[-1].at - sim.token_requests[-2].at
    assert gap >= failures[1]["retry_in_s"] * 0.9  # waited, no tight loop
    assert watcher.named("job.poll_failed") == []  # waiting for a token is no job failure
    assert {e["outcome"] for e in watcher.named("job.finished")} == {"completed"}


async def test_a_redirected_refresh_is_not_followed(tmp_path: Path, sim: Simulator) -> None:
    """Following it would send the refresh token and client secret wherever it pointed."""
    sim.add_job(*JOB, ["COMPLETED"])
    sim.script_tokens(["redirect", "ok"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert [e["error"] for e in watcher.named("auth.refresh_failed")] == ["http_307"]
    assert [r.answer for r in sim.token_requests] == ["redirect", "ok"]
    assert sim.token_arrivals == 2  # the watcher's two requests: no third, to the new address


@pytest.mark.parametrize("code", ["invalid_code", "invalid_client", "invalid_client_secret"])
@pytest.mark.parametrize("when", ["startup", "running"])
async def test_permanent_refresh_errors_exit_3(
    tmp_path: Path, sim: Simulator, code: str, when: str
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    sim.script_tokens([code] if when == "startup" else ["ok", code])
    watcher = await watch(tmp_path, sim, [JOB])
    if when == "running":
        await sim.wait_for(lambda s: len(s.requests) >= 1)
        sim.revoke_tokens()
    assert await watcher.finish() == 3
    (failed,) = watcher.named("auth.failed")
    assert (failed["error"], failed["level"]) == (code, "error")
    assert watcher.events[-1]["event"] == "watcher.stopped"


async def test_a_revoked_refresh_token_is_invalid_code(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    watcher = await watch(tmp_path, sim, [JOB], env={"ZOHO_REFRESH_TOKEN": "revoked-refresh"})
    assert await watcher.finish() == 3
    assert watcher.named("auth.failed")[0]["error"] == "invalid_code"
    assert sim.requests == []


async def test_secrets_from_files(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["COMPLETED"])
    secret_file = tmp_path / "client_secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    auth = refresh_auth(sim.url)
    del auth["client_secret"]
    auth["client_secret_file"] = str(secret_file)
    watcher = await watch(tmp_path, sim, [JOB], auth=auth)
    assert await watcher.finish() == 0
    assert [r.answer for r in sim.token_requests] == ["ok"]


async def test_api_domain_comes_from_the_token_answer(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["COMPLETED"])
    config = write_config(
        tmp_path / "watcher.yaml", sim.url, [JOB], auth=refresh_auth(sim.url), api_domain=None
    )
    watcher = await WatcherProcess.start("run", "--config", str(config), "--exit-when-done")
    assert await watcher.finish() == 0
    assert len(sim.requests_for(*JOB)) == 1


async def test_legacy_expiry_fields_are_read_in_seconds(
    tmp_path: Path, sim_factory: SimFactory
) -> None:
    sim = await sim_factory(legacy_expiry=True, token_lifetime=1800.0)
    sim.add_job(*JOB, ["COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    assert await watcher.finish() == 0
    assert watcher.named("auth.token_refreshed")[0]["expires_in_s"] == 1800


async def test_sigterm_while_waiting_for_a_refresh_exits_0_promptly(
    tmp_path: Path, sim: Simulator
) -> None:
    """...and says nothing of the refresh it cut short: a failure there would not be Zoho's."""
    sim.add_job(*JOB, ["RUNNING"])
    sim.script_tokens(["slow:60"])
    watcher = await watch(tmp_path, sim, [JOB])
    await sim.wait_for(lambda s: s.token_arrivals == 1)  # the refresh is on its way
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    assert watcher.named("auth.refresh_failed") == []
    assert watcher.named("watcher.stopped")[0]["reason"] == "signal"


async def test_no_secret_in_output_at_debug_level(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["INVALID_TOKEN", "500", "COMPLETED"])
    sim.script_tokens(["ok", "throttled", "ok"])
    watcher = await watch(tmp_path, sim, [JOB], "--log-level", "debug")
    assert await watcher.finish() == 0
    printed = "".join(watcher.lines) + watcher.stderr
    for secret in {*SECRETS, *sim.issued_tokens}:
        assert secret not in printed


@pytest.mark.parametrize(
    ("data_center", "accounts", "api"),
    [
        ("us", "https://accounts.zoho.com", "https://www.zohoapis.com"),
        ("eu", "https://accounts.zoho.eu", "https://www.zohoapis.eu"),
        ("in", "https://accounts.zoho.in", "https://www.zohoapis.in"),
        ("au", "https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
        ("jp", "https://accounts.zoho.jp", "https://www.zohoapis.jp"),
        ("ca", "https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
        ("cn", "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
        ("sa", "https://accounts.zoho.sa", "https://www.zohoapis.sa"),
        ("uk", "https://accounts.zoho.uk", "https://www.zohoapis.uk"),
    ],
)
def test_data_center_mapping(data_center: str, accounts: str, api: str) -> None:
    text = (
        f"zoho:\n  data_center: {data_center}\n  auth:\n"
        "    refresh_token: r\n    client_id: c\n    client_secret: s\n"
    )
    zoho = parse_config(text, "test", {}).zoho
    assert (zoho.auth.accounts_url, zoho.api_domain) == (accounts, api)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            200,
            b'{"access_token": "t", "expires_in": 3600, "api_domain": "https://x"}',
            Grant("t", 3600.0, "https://x"),
        ),
        (
            200,
            b'{"access_token": "t", "expires_in_sec": 3600, "expires_in": 3600000}',
            Grant("t", 3600.0, None),
        ),
        # A life of none is not believed: it would be refreshed at once, and again, in a loop.
        (
            200,
            b'{"access_token": "t", "expires_in": 0, "expires_in_sec": 0}',
            Grant("t", 3600.0, None),
        ),
        (200, b'{"error": "invalid_code"}', Refusal("invalid_code", True)),
        (200, b'{"error": "invalid_client"}', Refusal("invalid_client", True)),
        (200, b'{"error": "invalid_client_secret"}', Refusal("invalid_client_secret", True)),
        (
            200,
            b'{"error": "Access Denied", "error_description": "too many"}',
            Refusal("Access Denied", False),
        ),
        (502, b"<html>bad gateway</html>", Refusal("http_502", False)),
        (200, b"{not json", Refusal("malformed_response", False)),
        (200, b'{"token_type": "Bearer"}', Refusal("malformed_response", False)),
        # Not sendable in a header: every request would fail unsent until the hour was up.
        (200, b'{"access_token": "1000.a\\r\\nX-Evil: 1"}', Refusal("malformed_response", False)),
        (200, b'{"access_token": "1000.a b"}', Refusal("malformed_response", False)),
        (200, b'{"access_token": "1000.\\u00e9"}', Refusal("malformed_response", False)),
    ],
)
def test_token_answers(status: int, body: bytes, expected: Grant | Refusal) -> None:
    assert read_token_answer(status, body) == expected


async def test_requests_held_up_by_a_refresh_do_not_leave_together_past_the_rate(
    tmp_path: Path, sim_factory: SimFactory
) -> None:
    """Let through by the gate, then waiting for the token that died meanwhile, they would all
    leave at once when it came, with those let through while they waited: twice the rate."""
    sim = await sim_factory(token_lifetime=2.0)
    jobs = [("Leads", str(n)) for n in range(1, 41)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING"])
    sim.script_tokens(["ok", "slow:1"])
    polling = {"interval": "100ms", "max_interval": "100ms", "max_concurrency": 10}
    watcher = await watch(tmp_path, sim, jobs, rate_limit=10, rate_period="1s", **polling)

    def past_the_refresh(s: Simulator) -> bool:
        refreshed = s.token_requests[1].done if len(s.token_requests) > 1 else math.inf
        return any(r.at > refreshed + 1.5 for r in s.requests)

    await sim.wait_for(past_the_refresh, timeout=30)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    sent = sorted(r.at for r in sim.requests)
    assert max(bisect.bisect_left(sent, at + 0.8) - i for i, at in enumerate(sent)) <= 10


async def test_a_token_that_expires_while_a_request_waits_for_the_gate_is_not_sent(
    tmp_path: Path, sim_factory: SimFactory
) -> None:
    """A rate-limit wait longer than the token's life: the request must carry a live token."""
    sim = await sim_factory(token_lifetime=1.0)
    sim.add_job(*JOB, ["RUNNING", "RUNNING", "COMPLETED"])
    watcher = await watch(
        tmp_path, sim, [JOB], rate_limit=1, rate_period="1500ms", max_concurrency=1
    )
    assert await watcher.finish() == 0
    assert all(r.token_ok for r in sim.requests)


class Sources:
    """Token sources refreshing at the simulator, as one run after another would: each hears its
    tokens in `heard` and keeps them in `kept`, as the state file would."""

    def __init__(self, sim: Simulator, session: aiohttp.ClientSession) -> None:
        secrets = (Secret("sim-refresh"), Secret("sim-client"), Secret("sim-secret"))
        self._settings = AuthSettings(None, *secrets, sim.url)
        self._session = session
        self.heard: list[str] = []
        self.kept: list[StoredToken] = []

    def start(self, stored: StoredToken | None = None) -> RefreshingToken:
        return RefreshingToken(
            self._session,
            self._settings,
            lambda _: None,
            self.heard.append,
            random.Random(0),
            stored,
            self._keep,
        )

    async def _keep(self, token: StoredToken) -> None:
        self.kept.append(token)

    async def token_kept(self) -> StoredToken:
        """A run that gets a token and ends: what it kept."""
        source = self.start()
        await source.token()
        await source.close()
        return self.kept[-1]


@pytest.fixture
async def sources(sim: Simulator) -> AsyncIterator[Sources]:
    async with aiohttp.ClientSession() as session:
        yield Sources(sim, session)


async def test_every_token_is_heard_before_use_refreshed_or_kept(
    sources: Sources, sim: Simulator
) -> None:
    """Heard, a token is scrubbed from every line: one nobody heard could be printed."""
    fresh = await sources.start().token()
    assert sources.heard == [fresh]
    kept = await sources.token_kept()
    sources.heard.clear()
    source = sources.start(replace(kept, expires_at=time.time() + 3000))
    assert await source.token() == kept.access_token
    assert sources.heard == [kept.access_token]
    assert len(sim.token_requests) == 2  # the kept one cost none


async def test_a_token_kept_with_other_credentials_or_about_to_die_is_not_taken_back(
    sources: Sources, sim: Simulator
) -> None:
    """Another client or data centre may be another org: neither its token nor its API domain
    is ours. One with less than the refresh margin left would die right after the start."""
    kept = await sources.token_kept()
    elsewhere = replace(kept, api_domain="https://www.zohoapis.eu", issued_for="someone-else")
    for stored in (elsewhere, replace(kept, expires_at=time.time() + 200)):
        before = len(sim.token_requests)
        source = sources.start(stored)
        assert await source.token() != kept.access_token
        assert len(sim.token_requests) == before + 1
        assert source.api_domain == sim.url


async def test_a_refused_token_is_kept_as_dead(sources: Sources) -> None:
    source = sources.start()
    first = await source.token()
    assert await source.rejected(first)
    assert any(k.access_token == first and k.expires_at == 0.0 for k in sources.kept)
    assert sources.kept[-1].access_token != first


async def test_a_waiter_cancelled_does_not_cancel_the_refresh_the_others_wait_for(
    sources: Sources, sim: Simulator
) -> None:
    """A job removed by a reload while its poll waits for the refresh: the other polls waiting
    for the same refresh must still get the token, without a second refresh."""
    sim.script_tokens(["slow:0.3"])
    source = sources.start()
    leaving = asyncio.ensure_future(source.token())
    staying = asyncio.ensure_future(source.token())
    await sim.wait_for(lambda s: s.token_arrivals == 1)
    leaving.cancel()
    assert await staying == sources.heard[0]
    assert len(sim.token_requests) == 1
    await source.close()


async def test_a_token_is_not_handed_out_in_its_last_seconds(
    sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent in its last moments, a token reaches Zoho dead: 10 s of life, not sent at 9.9 s."""
    sim = await sim_factory(token_lifetime=10.0)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        with monkeypatch.context() as clock:
            now = [loop.time()]
            clock.setattr(loop, "time", lambda: now[0])  # still while the token comes
            source = Sources(sim, session).start()
            token = await source.token()
            now[0] += 9.0
            assert source.usable() == token
            now[0] += 0.9
            assert source.usable() is None
        await source.close()


async def test_a_kept_token_is_not_held_past_an_hour_whatever_the_wall_clock_says(
    sources: Sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zoho's tokens live an hour. One kept with an hour to live, then the wall clock set back
    five hours (an NTP correction) before the restart: held for six, it would go out dead for
    five, every poll a 401 and a credit."""
    kept = await sources.token_kept()
    loop, wall = asyncio.get_running_loop(), time.time()
    with monkeypatch.context() as clocks:
        now = [loop.time()]
        clocks.setattr(loop, "time", lambda: now[0])
        clocks.setattr(time, "time", lambda: wall - 5 * 3600)
        second = sources.start(kept)
        assert second.usable() == kept.access_token
        now[0] += 3600
        assert second.usable() is None
