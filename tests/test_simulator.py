"""The simulator against a plain aiohttp client: every step kind, tokens, faults and records.

The rest of the suite trusts the simulator to look like Zoho, so each shape is checked here against
the spec's own table rather than against the simulator's.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest

from watcher.simulator import TOKEN_MIN_USES, Chaos, Simulator

TOKEN = "sim-token"
JOB = ("Leads", "554023000000506003")
OTHER = ("Deals", "42")
CREDENTIALS = {
    "grant_type": "refresh_token",
    "refresh_token": "sim-refresh",
    "client_id": "sim-client",
    "client_secret": "sim-secret",
}
DOCUMENTED_ERRORS = {
    "MANDATORY_NOT_FOUND": 400,
    "INVALID_URL_PATTERN": 404,
    "OAUTH_SCOPE_MISMATCH": 401,
    "NO_PERMISSION": 403,
    "AUTHORIZATION_FAILED": 400,
    "INVALID_MODULE": 400,
    "INVALID_REQUEST_METHOD": 400,
    "INTERNAL_ERROR": 500,
    "INVALID_TOKEN": 401,
    "AUTHENTICATION_FAILURE": 401,
    "TOO_MANY_REQUESTS": 429,
}
THROTTLED = {
    "error": "Access Denied",
    "error_description": "You have made too many requests continuously. "
    "Please try again after some time.",
}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def row(self) -> dict[str, Any]:
        row: dict[str, Any] = self.json()["data"][0]
        return row


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def status_url(sim: Simulator, job: tuple[str, str] = JOB, version: str = "v8") -> str:
    module, job_id = job
    return f"{sim.url}/crm/{version}/{module}/actions/mass_update?job_id={job_id}"


async def request(
    client: aiohttp.ClientSession,
    url: str,
    authorization: str | None = f"Zoho-oauthtoken {TOKEN}",
    method: str = "GET",
) -> Reply:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with client.request(method, url, headers=headers) as response:
        return Reply(response.status, response.headers, await response.read())


async def poll(
    client: aiohttp.ClientSession, sim: Simulator, job: tuple[str, str] = JOB, token: str = TOKEN
) -> Reply:
    return await request(client, status_url(sim, job), f"Zoho-oauthtoken {token}")


async def refresh(client: aiohttp.ClientSession, sim: Simulator, **form: str) -> dict[str, Any]:
    async with client.post(f"{sim.url}/oauth/v2/token", data={**CREDENTIALS, **form}) as response:
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def settled(sim: Simulator) -> bool:
    return all(r.done < math.inf for r in sim.requests)


def assert_error(document: Any, code: str) -> None:
    assert document["code"] == code
    assert document["status"] == "error"
    assert isinstance(document["details"], dict)
    assert isinstance(document["message"], str)
    assert document["message"]


def counts(row: Mapping[str, Any]) -> tuple[int, int, int, int]:
    names = ("Updated_Count", "Failed_Count", "Not_Updated_Count", "Total_Count")
    updated, failed, not_updated, total = (row[name] for name in names)
    return updated, failed, not_updated, total


# --- scripts -------------------------------------------------------------------------------------


async def test_script_gives_one_step_per_poll_and_repeats_the_last(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["SCHEDULED", "RUNNING:40,1,2,100", "COMPLETED"])
    rows = [(await poll(client, sim)).row() for _ in range(4)]
    assert [row["Status"] for row in rows] == ["SCHEDULED", "RUNNING", "COMPLETED", "COMPLETED"]
    assert [counts(row) for row in rows[:3]] == [(0, 0, 0, 100), (40, 1, 2, 100), (100, 0, 0, 100)]
    assert set(rows[0]) == {
        "Status",
        "Failed_Count",
        "Updated_Count",
        "Not_Updated_Count",
        "Total_Count",
    }
    records = sim.requests_for(*JOB)
    assert [r.answer for r in records] == ["SCHEDULED", "RUNNING:40,1,2,100", *["COMPLETED"] * 2]
    assert all(r.http_status == 200 and r.token_ok and r.at <= r.done for r in records)


@pytest.mark.parametrize(("code", "http_status"), DOCUMENTED_ERRORS.items())
async def test_documented_error_codes_come_with_their_http_status(
    sim: Simulator, client: aiohttp.ClientSession, code: str, http_status: int
) -> None:
    sim.add_job(*JOB, [code])
    reply = await poll(client, sim)
    assert reply.status == http_status
    assert_error(reply.json(), code)


@pytest.mark.parametrize(
    ("step", "http_status", "code", "retry_after"),
    [
        ("429", 429, "TOO_MANY_REQUESTS", None),
        ("429:2", 429, "TOO_MANY_REQUESTS", "2"),
        ("500", 500, "INTERNAL_ERROR", None),
    ],
)
async def test_throttling_and_internal_error(
    sim: Simulator,
    client: aiohttp.ClientSession,
    step: str,
    http_status: int,
    code: str,
    retry_after: str | None,
) -> None:
    sim.add_job(*JOB, [step])
    reply = await poll(client, sim)
    assert reply.status == http_status
    assert reply.headers.get("Retry-After") == retry_after
    assert_error(reply.json(), code)


@pytest.mark.parametrize("http_status", [502, 503, 504])
async def test_gateway_errors_are_plain_text(
    sim: Simulator, client: aiohttp.ClientSession, http_status: int
) -> None:
    sim.add_job(*JOB, [str(http_status)])
    reply = await poll(client, sim)
    assert reply.status == http_status
    assert reply.headers["Content-Type"].startswith("text/plain")
    with pytest.raises(ValueError, match="Expecting value"):
        reply.json()


async def test_malformed_is_truncated_json_with_200(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["malformed"])
    reply = await poll(client, sim)
    assert reply.status == 200
    assert reply.body.startswith(b'{"data"')
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        reply.json()


async def test_badstatus_and_nodata(sim: Simulator, client: aiohttp.ClientSession) -> None:
    sim.add_job(*JOB, ["badstatus", "nodata"])
    bad = await poll(client, sim)
    assert (bad.status, bad.row()["Status"]) == (200, "EXPLODED")
    empty = await poll(client, sim)
    assert (empty.status, empty.json()) == (200, {"data": []})


async def test_the_three_not_found_shapes(sim: Simulator, client: aiohttp.ClientSession) -> None:
    sim.add_job(*JOB, ["notfound204", "notfound404", "notfound400"])
    no_content = await poll(client, sim)
    assert (no_content.status, no_content.body) == (204, b"")
    empty = await poll(client, sim)
    assert empty.status == 404
    assert_error(empty.json(), "NOT_FOUND")
    assert empty.json()["message"] == "Empty response"
    invalid = await poll(client, sim)
    assert invalid.status == 400
    assert_error(invalid.json(), "INVALID_DATA")
    assert invalid.json()["details"] == {"param_name": "job_id"}


@pytest.mark.parametrize("where", ["data200", "top200"])
async def test_error_object_with_http_200(
    sim: Simulator, client: aiohttp.ClientSession, where: str
) -> None:
    sim.add_job(*JOB, [f"{where}:NO_PERMISSION"])
    reply = await poll(client, sim)
    assert reply.status == 200
    document = reply.json()
    assert_error(document["data"][0] if where == "data200" else document, "NO_PERMISSION")


async def test_slow_step_answers_late_with_the_inner_step(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["slow:0.2:429:1"])
    reply = await poll(client, sim)
    assert (reply.status, reply.headers["Retry-After"]) == (429, "1")
    (record,) = sim.requests
    assert record.answer == "slow:0.2:429:1"
    assert record.done - record.at >= 0.2


async def test_hang_is_recorded_without_status_when_the_client_gives_up(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["hang"])
    url = status_url(sim)
    headers = {"Authorization": f"Zoho-oauthtoken {TOKEN}"}
    with pytest.raises(TimeoutError):
        await client.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=0.2))
    await sim.wait_for(settled)
    (record,) = sim.requests
    assert (record.answer, record.http_status) == ("hang", None)
    assert record.done - record.at > 0.1  # over when the client left, not before


async def test_stop_is_prompt_with_requests_hanging(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["hang"])
    hanging = [asyncio.create_task(poll(client, sim)) for _ in range(3)]
    await sim.wait_for(lambda s: len(s.requests) == 3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sim.stop()
    assert loop.time() - started < 1.0
    assert settled(sim)
    for task in hanging:
        with pytest.raises(aiohttp.ClientConnectionError):
            await task
    assert {(r.answer, r.http_status) for r in sim.requests} == {("hang", None)}


async def test_reset_drops_the_connection_without_an_answer(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["reset", "reset", "RUNNING"])
    with pytest.raises(aiohttp.ClientConnectionError):
        await poll(client, sim)
    await sim.wait_for(settled)
    # aiohttp resends an idempotent GET once after a dropped connection: two requests, one error.
    assert [(r.answer, r.http_status) for r in sim.requests] == [("reset", None)] * 2
    assert (await poll(client, sim)).status == 200


# --- timed jobs ----------------------------------------------------------------------------------


async def test_timed_job_follows_the_clock_from_its_first_poll(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_timed_job(*JOB, duration=0.2, total=50, scheduled_for=0.1, failed=10)
    rows: list[dict[str, Any]] = []
    while not rows or rows[-1]["Status"] != "COMPLETED":
        rows.append((await poll(client, sim)).row())
    first = sim.requests[0].at
    for record, row in zip(sim.requests, rows, strict=True):
        running_for = record.at - first - 0.1
        if running_for < 0:
            assert (row["Status"], counts(row)) == ("SCHEDULED", (0, 0, 0, 50))
        elif running_for < 0.2:
            assert (row["Status"], counts(row)) == (
                "RUNNING",
                (int(40 * running_for / 0.2), 0, 0, 50),
            )
        else:
            assert (row["Status"], counts(row)) == ("COMPLETED", (40, 10, 0, 50))
    assert {row["Status"] for row in rows} == {"SCHEDULED", "RUNNING", "COMPLETED"}


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"duration": 0, "outcome": "FAILED", "failed": 30, "total": 50}, "FAILED:20,30,0,50"),
        ({"duration": 1, "scheduled_for": 60}, "SCHEDULED:0,0,0,100"),
        ({"duration": 60}, "RUNNING:0,0,0,100"),
    ],
)
async def test_timed_job_phases_at_the_first_poll(
    sim: Simulator, client: aiohttp.ClientSession, options: dict[str, Any], expected: str
) -> None:
    sim.add_timed_job(*JOB, **options)
    status, _, numbers = expected.partition(":")
    row = (await poll(client, sim)).row()
    assert (row["Status"], counts(row)) == (status, tuple(int(n) for n in numbers.split(",")))
    assert sim.requests[0].answer == expected


@pytest.mark.parametrize(
    "options",
    [
        {"duration": 1, "outcome": "RUNNING"},
        {"duration": -1},
        {"duration": 1, "scheduled_for": -1},
        {"duration": 1, "failed": 101},
    ],
)
def test_timed_job_rejects_impossible_settings(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"outcome|duration"):
        Simulator().add_timed_job(*JOB, **options)


# --- routing and unknown jobs --------------------------------------------------------------------


async def test_unknown_job_gets_the_configured_answer(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    assert (await poll(client, sim)).status == 204
    assert sim.requests[0].answer == "notfound204"
    assert (sim.requests[0].module, sim.requests[0].job_id) == JOB
    async with Simulator(unknown_job="notfound400") as strict:
        reply = await poll(client, strict)
        assert reply.status == 400
        assert_error(reply.json(), "INVALID_DATA")


async def test_a_module_the_org_lacks_is_refused_before_any_job_is_looked_for(
    client: aiohttp.ClientSession,
) -> None:
    async with Simulator(modules={"Leads", "Invoices_X"}) as sim:
        sim.add_job("Projects", "7", ["COMPLETED"])  # a scripted job's module is the org's too
        statuses = [
            (await poll(client, sim, job)).status
            for job in [("Leadz", "1"), ("Invoices_X", "1"), ("Projects", "7")]
        ]
        assert statuses == [400, 204, 200]
        assert_error((await poll(client, sim, ("Deals", "1"))).json(), "INVALID_MODULE")
        refused = [r.module for r in sim.requests if r.answer == "INVALID_MODULE"]
        assert refused == ["Leadz", "Deals"]


@pytest.mark.parametrize(
    ("url", "method", "code"),
    [
        ("/crm/v9/Leads/actions/mass_update?job_id=1", "GET", "INVALID_URL_PATTERN"),
        ("/crm/v8/Leads/actions/mass_delete?job_id=1", "GET", "INVALID_URL_PATTERN"),
        ("/crm/v8/Leads/actions/mass_update?job_id=1", "POST", "INVALID_REQUEST_METHOD"),
        ("/crm/v8/Leads/actions/mass_update", "GET", "MANDATORY_NOT_FOUND"),
    ],
)
async def test_malformed_requests_are_refused_without_using_a_step(
    sim: Simulator, client: aiohttp.ClientSession, url: str, method: str, code: str
) -> None:
    sim.add_job("Leads", "1", ["RUNNING", "COMPLETED"])
    reply = await request(client, sim.url + url, method=method)
    assert reply.status == DOCUMENTED_ERRORS[code]
    assert_error(reply.json(), code)
    assert sim.requests[0].answer == code
    assert (await poll(client, sim, ("Leads", "1"))).row()["Status"] == "RUNNING"


async def test_every_api_version_from_v2_to_v8_is_served(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    for version in ["v2", "v2.1", *(f"v{n}" for n in range(3, 9))]:
        assert (await request(client, status_url(sim, version=version))).status == 200


# --- access tokens on the API --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "AUTHENTICATION_FAILURE"),
        ("Zoho-oauthtoken not-a-token", "INVALID_TOKEN"),
        (f"Bearer {TOKEN}", "INVALID_TOKEN"),
        ("Zoho-oauthtoken", "INVALID_TOKEN"),
    ],
)
async def test_a_refused_token_does_not_use_a_script_step(
    sim: Simulator, client: aiohttp.ClientSession, authorization: str | None, code: str
) -> None:
    sim.add_job(*JOB, ["SCHEDULED", "RUNNING"])
    refused = await request(client, status_url(sim), authorization)
    assert refused.status == 401
    assert_error(refused.json(), code)
    assert (await poll(client, sim)).row()["Status"] == "SCHEDULED"
    assert [(r.answer, r.token_ok) for r in sim.requests] == [(code, False), ("SCHEDULED", True)]


async def test_revoked_tokens_are_refused_until_a_new_one_is_issued(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    issued = (await refresh(client, sim))["access_token"]
    sim.revoke_tokens()
    for token in (TOKEN, issued):
        reply = await poll(client, sim, token=token)
        assert reply.status == 401
        assert_error(reply.json(), "INVALID_TOKEN")
    fresh = (await refresh(client, sim))["access_token"]
    assert (await poll(client, sim, token=fresh)).status == 200


async def test_issued_tokens_wear_out_after_max_uses_but_configured_ones_do_not(
    client: aiohttp.ClientSession,
) -> None:
    async with Simulator(token_max_uses=2) as sim:
        sim.add_job(*JOB, ["RUNNING"])
        issued = (await refresh(client, sim))["access_token"]
        statuses = [(await poll(client, sim, token=issued)).status for _ in range(3)]
        assert statuses == [200, 200, 401]
        assert sim.requests[-1].answer == "INVALID_TOKEN"
        assert [(await poll(client, sim)).status for _ in range(3)] == [200] * 3


async def test_issued_tokens_expire_after_their_lifetime(client: aiohttp.ClientSession) -> None:
    async with Simulator(token_lifetime=0.3) as sim:
        sim.add_job(*JOB, ["slow:0.05:RUNNING"])  # paces the poller below without a sleep
        issued = (await refresh(client, sim))["access_token"]

        async def poll_until_refused() -> None:
            while (await poll(client, sim, token=issued)).status == 200:
                pass

        poller = asyncio.create_task(poll_until_refused())
        await sim.wait_for(lambda s: any(r.http_status == 401 for r in s.requests))
        await poller
        *accepted, refused = sim.requests
        issued_at = sim.token_requests[0].at
        assert accepted
        assert all(r.token_ok and r.http_status == 200 for r in accepted)
        assert (refused.answer, refused.http_status) == ("INVALID_TOKEN", 401)
        assert refused.at - issued_at >= 0.3


# --- token endpoint ------------------------------------------------------------------------------


async def test_token_endpoint_issues_a_fresh_working_token(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    grant = await refresh(client, sim)
    assert set(grant) == {"access_token", "expires_in", "api_domain", "token_type"}
    assert (grant["expires_in"], grant["api_domain"], grant["token_type"]) == (
        3600,
        sim.url,
        "Bearer",
    )
    assert (await poll(client, sim, token=grant["access_token"])).status == 200
    second = await refresh(client, sim)
    assert len({TOKEN, grant["access_token"], second["access_token"]}) == 3
    assert [r.answer for r in sim.token_requests] == ["ok", "ok"]
    assert sim.requests[0].token_ok


async def test_legacy_expiry_sends_seconds_and_milliseconds(
    client: aiohttp.ClientSession,
) -> None:
    async with Simulator(token_lifetime=60, legacy_expiry=True) as sim:
        grant = await refresh(client, sim)
        assert (grant["expires_in_sec"], grant["expires_in"]) == (60, 60_000)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"refresh_token": "wrong"}, "invalid_code"),
        ({"client_id": "wrong"}, "invalid_client"),
        ({"client_secret": "wrong"}, "invalid_client_secret"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
async def test_wrong_credentials_get_an_error_key_with_http_200(
    sim: Simulator, client: aiohttp.ClientSession, form: dict[str, str], error: str
) -> None:
    assert await refresh(client, sim, **form) == {"error": error}
    assert [r.answer for r in sim.token_requests] == [error]


async def test_scripted_token_answers_then_normal_service(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    steps = ["throttled", "invalid_code", "invalid_client", "invalid_client_secret", "ok"]
    sim.script_tokens(steps)
    answers = [await refresh(client, sim) for _ in range(6)]
    assert answers[:4] == [
        THROTTLED,
        {"error": "invalid_code"},
        {"error": "invalid_client"},
        {"error": "invalid_client_secret"},
    ]
    assert all("access_token" in answer for answer in answers[4:])
    assert [r.answer for r in sim.token_requests] == [*steps, "ok"]


async def test_slow_token_answer_still_checks_the_credentials(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.script_tokens(["slow:0.2", "slow:0"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert "access_token" in await refresh(client, sim)
    assert loop.time() - started >= 0.2
    assert await refresh(client, sim, client_secret="wrong") == {"error": "invalid_client_secret"}


@pytest.mark.parametrize("step", ["", "OK", "denied", "slow:", "slow:soon", "slow:-1"])
def test_unknown_token_steps_are_refused(step: str) -> None:
    with pytest.raises(ValueError, match="token step"):
        Simulator().script_tokens(["ok", step])


# --- inject, concurrency, waiting ----------------------------------------------------------------


async def test_inject_answers_the_next_requests_whatever_the_job(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    sim.add_job(*OTHER, ["COMPLETED"])
    sim.inject(["429", "notfound404"])
    assert (await poll(client, sim, token="unknown")).status == 401  # refused: injects untouched
    assert (await poll(client, sim, JOB)).status == 429
    assert (await poll(client, sim, OTHER)).status == 404
    assert (await poll(client, sim, JOB)).row()["Status"] == "RUNNING"
    assert (await poll(client, sim, OTHER)).row()["Status"] == "COMPLETED"
    assert [r.answer for r in sim.requests_for(*JOB)] == ["INVALID_TOKEN", "429", "RUNNING"]
    assert [r.answer for r in sim.requests_for(*OTHER)] == ["notfound404", "COMPLETED"]


async def test_in_flight_counts_concurrent_requests_in_arrival_order(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["hang"])
    sim.add_job(*OTHER, ["RUNNING"])
    for _ in range(2):
        await poll(client, sim, OTHER)  # one at a time: each finds only itself in flight
    hanging = [asyncio.create_task(poll(client, sim, JOB)) for _ in range(3)]
    await sim.wait_for(lambda s: len(s.requests) == 5)
    await poll(client, sim, OTHER)
    await sim.stop()
    for task in hanging:
        with pytest.raises(aiohttp.ClientConnectionError):
            await task
    assert [r.in_flight for r in sim.requests] == [1, 1, 1, 2, 3, 4]
    assert [r.answer for r in sim.requests] == ["RUNNING"] * 2 + ["hang"] * 3 + ["RUNNING"]
    assert sim.max_in_flight == 4


async def test_wait_for_times_out_with_a_readable_message_free_of_secrets() -> None:
    secrets = {"tok-123", "refresh-456", "client-789", "secret-0ab"}
    sim = Simulator(
        tokens=["tok-123"],
        refresh_token="refresh-456",
        client_id="client-789",
        client_secret="secret-0ab",
    )

    def never(_: Simulator) -> bool:
        return False

    async with sim:
        with pytest.raises(TimeoutError, match=r"never still false after 0\.05 s") as caught:
            await sim.wait_for(never, timeout=0.05)
    message = str(caught.value)
    assert "0 API requests" in message
    assert not any(secret in message + repr(sim) for secret in secrets)


# --- refusing bad input --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "localhost", "example.com"])
def test_only_loopback_addresses_are_bound(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        Simulator(host=host)


@pytest.mark.parametrize(
    "step",
    [
        "",
        "running",
        "RUNNING:1,2,3",
        "COMPLETED:1,2,3,4,5",
        "RUNNING:a,b,c,d",
        "429:soon",
        "501",
        "hang:1",
        "slow:2",
        "slow:x:RUNNING",
        "slow:-1:RUNNING",
        "slow:nan:RUNNING",
        "slow:1:NOPE",
        "data200:NOPE",
        "top200:",
    ],
)
def test_unparseable_steps_fail_fast_everywhere(step: str) -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match="unparseable script step"):
        sim.add_job(*JOB, ["RUNNING", step])
    with pytest.raises(ValueError, match="unparseable script step"):
        sim.inject([step])
    with pytest.raises(ValueError, match="unparseable script step"):
        Simulator(unknown_job=step)


def test_an_empty_script_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one step"):
        Simulator().add_job(*JOB, [])


# --- chaos ---------------------------------------------------------------------------------------


async def poll_outcome(client: aiohttp.ClientSession, sim: Simulator, job: tuple[str, str]) -> str:
    """The HTTP status as text, or what kept the answer from arriving."""
    try:
        return str((await poll(client, sim, job)).status)
    except aiohttp.ClientPayloadError:
        return "truncated"
    except aiohttp.ClientConnectionError:
        return "dropped"
    except TimeoutError:
        return "timeout"


async def chaos_answers(chaos: Chaos, polls: int) -> list[str]:
    async with (
        Simulator(tokens=(TOKEN,), chaos=chaos) as sim,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.2)) as session,
    ):
        sim.add_job(*JOB, ["RUNNING"])
        for _ in range(polls):
            await poll_outcome(session, sim, JOB)
        await sim.wait_for(settled)
        return [r.answer for r in sim.requests]


EVERY_FAULT = Chaos(
    seed=3,
    burst_429=0.1,
    server_error=0.1,
    reset=0.1,
    hang=0.1,
    truncated=0.1,
    malformed=0.1,
    not_found=0.1,
)


async def test_chaos_replays_from_its_seed() -> None:
    first = await chaos_answers(EVERY_FAULT, 40)
    assert first == await chaos_answers(EVERY_FAULT, 40)
    assert first != await chaos_answers(replace(EVERY_FAULT, seed=4), 40)
    assert {"RUNNING", "reset", "hang", "truncated"} <= set(first)


async def test_faults_never_change_a_jobs_progress_and_undelivered_statuses_do_not_count(
    client: aiohttp.ClientSession,
) -> None:
    script = ["SCHEDULED", "RUNNING:10,0,0,100", "RUNNING:60,0,0,100", "FAILED:60,40,0,100"]
    async with Simulator(tokens=(TOKEN,), chaos=EVERY_FAULT) as sim:
        sim.add_job(*JOB, script)
        timeout = aiohttp.ClientTimeout(total=0.2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while not sim.served(*JOB) or sim.served(*JOB)[-1] != "FAILED":
                await poll_outcome(session, sim, JOB)
        await sim.wait_for(settled)
        faults = [r for r in sim.requests if r.status is None]
        assert sim.served(*JOB) == ["SCHEDULED", "RUNNING", "RUNNING", "FAILED"]
        assert {r.answer for r in faults} >= {"reset", "hang", "truncated"}
        assert all(r.http_status is None for r in faults if r.answer in ("reset", "truncated"))
        assert sim.final_status(*JOB) == "FAILED"
        assert sim.final_status("Leads", "unknown") is None
        assert sum(sim.faults.values()) >= len(faults) - sim.faults["429"]


async def test_truncated_body_ends_before_its_content_length(
    sim: Simulator, client: aiohttp.ClientSession
) -> None:
    sim.add_job(*JOB, ["truncated", "RUNNING"])
    with pytest.raises(aiohttp.ClientPayloadError):
        await poll(client, sim)
    await sim.wait_for(settled)
    assert [(r.answer, r.http_status, r.status) for r in sim.requests] == [
        ("truncated", None, None)
    ]
    assert sim.served(*JOB) == []


async def test_a_known_job_never_answers_not_found_twice_without_a_status_between(
    client: aiohttp.ClientSession,
) -> None:
    async with Simulator(tokens=(TOKEN,), chaos=Chaos(not_found=1.0)) as sim:
        sim.add_job(*JOB, ["RUNNING"])
        replies = [(await poll(client, sim)).status for _ in range(6)]
        unknown = [(await poll(client, sim, OTHER)).status for _ in range(6)]
    assert set(replies[0::2]) <= {204, 404, 400}
    assert replies[1::2] == [200] * 3
    assert set(unknown) <= {204, 404, 400}
    assert sim.faults["not_found"] == 3 + 6


async def test_chaos_expires_only_tokens_that_served_a_while(
    client: aiohttp.ClientSession,
) -> None:
    async with Simulator(tokens=(TOKEN,), chaos=Chaos(token_expiry=1.0)) as sim:
        sim.add_job(*JOB, ["RUNNING"])
        replies = [(await poll(client, sim)).status for _ in range(TOKEN_MIN_USES + 2)]
        assert replies == [200] * TOKEN_MIN_USES + [401, 401]
        assert sim.faults["token_expiry"] == 1
        fresh = (await refresh(client, sim))["access_token"]
        assert (await poll(client, sim, token=fresh)).status == 200


async def test_chaos_slows_token_refreshes(client: aiohttp.ClientSession) -> None:
    chaos = Chaos(slow_refresh=1.0, refresh_delay=0.2)
    async with Simulator(chaos=chaos) as sim:
        assert "access_token" in await refresh(client, sim)
    (record,) = sim.token_requests
    assert (record.answer, sim.faults["slow_refresh"]) == ("ok", 1)
    assert record.done - record.at >= 0.2


@pytest.mark.parametrize(
    "options",
    [{"reset": 1.5}, {"hang": -0.1}, {"reset": 0.6, "hang": 0.6}, {"burst_max": 0}],
)
def test_chaos_refuses_impossible_rates(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="chaos"):
        Chaos(**options)
