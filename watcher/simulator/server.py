"""The simulator itself: an aiohttp server on loopback with Zoho's status and token endpoints, and
the record of every request, for tests to assert on what the watcher actually sent."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import secrets
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from aiohttp import web
from yarl import URL

from watcher.simulator.answers import perform, route, send
from watcher.simulator.chaos import Chaos, ChaosState
from watcher.simulator.jobs import Grant, ScriptedJob, TimedJob
from watcher.simulator.steps import FIXED, LARGE, OUTCOMES, Step, parse_step, seconds_in
from watcher.zoho_api import AUTH_SCHEME, OAUTH_TOKEN_PATH

_TOKEN_ERRORS: Mapping[str, dict[str, str]] = {
    "invalid_code": {"error": "invalid_code"},
    "invalid_client": {"error": "invalid_client"},
    "invalid_client_secret": {"error": "invalid_client_secret"},
    "unsupported_grant_type": {"error": "unsupported_grant_type"},
    # A server's "code" a hundred times longer than any of Zoho's.
    "hugeerror": {"error": "E" * 10_000},
    "throttled": {
        "error": "Access Denied",
        "error_description": "You have made too many requests continuously. "
        "Please try again after some time.",
    },
}
# The API names of Zoho CRM's standard modules; an org's custom modules are given as `modules`.
STANDARD_MODULES = frozenset(
    {
        "Leads", "Contacts", "Accounts", "Deals", "Tasks", "Events", "Calls", "Products",
        "Quotes", "Sales_Orders", "Purchase_Orders", "Invoices", "Campaigns", "Vendors",
        "Price_Books", "Cases", "Solutions", "Appointments__s", "Services__s",
    }
)  # fmt: skip


@dataclass(frozen=True)
class RequestRecord:
    """One API call, timed with `loop.time()`.

    It is listed on arrival (so tests can wait for requests that hang) with `done=math.inf` and
    `http_status=None`, then replaced when it is over; `http_status` stays None if no answer went
    out (reset, hang, client gone). `in_flight` counts API requests, this one included.
    """

    at: float
    done: float
    module: str | None
    job_id: str | None
    answer: str
    http_status: int | None
    in_flight: int
    token_ok: bool
    status: str | None = None  # the job status the answer reports, if it is a status row


@dataclass(frozen=True)
class TokenRecord:
    """One call to the token endpoint; `answer` is "ok", an error key, or "gone" (client left)."""

    at: float
    done: float
    answer: str


_Record = TypeVar("_Record", RequestRecord, TokenRecord)


class Simulator:
    """Zoho, as far as the watcher can tell; start it with `async with Simulator() as sim`.

    Configured `tokens` never expire (only `revoke_tokens` or chaos ends them); tokens issued by
    the token endpoint live `token_lifetime` seconds or `token_max_uses` API calls.
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] = ("sim-token",),
        refresh_token: str = "sim-refresh",
        client_id: str = "sim-client",
        client_secret: str = "sim-secret",
        token_lifetime: float = 3600.0,
        token_max_uses: int | None = None,
        legacy_expiry: bool = False,
        unknown_job: str = "notfound204",
        modules: Iterable[str] = STANDARD_MODULES,
        org_credits: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        chaos: Chaos | None = None,
    ) -> None:
        if not _is_loopback(host):
            raise ValueError(f"the simulator only binds loopback addresses, not {host!r}")
        self._host = host
        self._port = port
        self._credentials = (refresh_token, client_id, client_secret)
        self._token_lifetime = token_lifetime
        self._token_max_uses = token_max_uses
        self._legacy_expiry = legacy_expiry
        self._unknown_job = parse_step(unknown_job)
        self._modules = set(modules)  # the org's modules; any scripted job's module joins them
        self._org_credits = org_credits  # the org's daily credits; None: no credit header
        self._credits_left = org_credits or 0
        self._grants = {token: Grant(math.inf, None) for token in tokens}
        self._jobs: dict[tuple[str, str], ScriptedJob | TimedJob] = {}
        self._injected: deque[Step] = deque()
        self._token_script: deque[str] = deque()
        self._tokens_let_go = asyncio.Event()  # token requests are answered once it is set
        self._tokens_let_go.set()
        self._chaos = ChaosState(chaos) if chaos is not None else None
        self._in_flight = 0
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.requests: list[RequestRecord] = []
        self.token_requests: list[TokenRecord] = []  # listed once over
        self.token_arrivals = 0  # token requests that arrived, answered or not (one may hang)
        self.issued_tokens: list[str] = []  # so tests can check none of them was ever printed
        self.max_in_flight = 0

    def add_job(self, module: str, job_id: str, script: Sequence[str]) -> None:
        self._jobs[module, job_id] = ScriptedJob(parse_step(step) for step in script)
        self._modules.add(module)

    def add_timed_job(
        self,
        module: str,
        job_id: str,
        *,
        duration: float,
        total: int = 100,
        scheduled_for: float = 0.0,
        outcome: str = "COMPLETED",
        failed: int = 0,
    ) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, not {outcome!r}")
        if not (duration >= 0 and scheduled_for >= 0 and 0 <= failed <= total):
            raise ValueError("need duration >= 0, scheduled_for >= 0 and 0 <= failed <= total")
        self._jobs[module, job_id] = TimedJob(duration, total, scheduled_for, outcome, failed)
        self._modules.add(module)

    def inject(self, steps: Sequence[str]) -> None:
        """Answer the next API requests with `steps`, whatever job they ask about."""
        self._injected.extend([parse_step(step) for step in steps])  # all or nothing

    def script_tokens(self, steps: Sequence[str]) -> None:
        """Answer the next token requests with `steps`; "ok" and "slow:S" still check the form.
        "redirect" answers 307 to this endpoint again, as a hijacked accounts server might: a
        client that followed would send the secrets once more, wherever it was sent. "bomb",
        "huge" and "huge429" answer as the status steps of those names do."""
        for step in steps:
            known = step in ("ok", "redirect") or step in LARGE or step in _TOKEN_ERRORS
            if not known and not _is_slow_token_step(step):
                raise ValueError(f"unparseable token step: {step!r}")
        self._token_script.extend(steps)

    def hold_tokens(self) -> None:
        """Hold every token request that arrives from now on until `release_tokens`: a watcher
        waiting for its first token for as long as a test needs."""
        self._tokens_let_go.clear()

    def release_tokens(self) -> None:
        self._tokens_let_go.set()

    def revoke_tokens(self) -> None:
        self._grants.clear()

    def requests_for(self, module: str, job_id: str) -> list[RequestRecord]:
        return [r for r in self.requests if (r.module, r.job_id) == (module, job_id)]

    def served(self, module: str, job_id: str) -> list[str]:
        """The statuses the job's answers reported, in order, counting only answers that went out
        whole: what the watcher can have seen of the job."""
        return [
            r.status
            for r in self.requests_for(module, job_id)
            if r.status is not None and r.http_status is not None
        ]

    def final_status(self, module: str, job_id: str) -> str | None:
        """The status the job ends in; None if the simulator does not know the job (it answers
        not-found) or its script ends on something other than a status."""
        job = self._jobs.get((module, job_id))
        return None if job is None else job.final_status

    @property
    def faults(self) -> Counter[str]:
        """Faults chaos injected, by kind (the `Chaos` field names, and "429" per answer)."""
        return self._chaos.faults if self._chaos is not None else Counter()

    async def wait_for(
        self,
        predicate: Callable[[Simulator], bool],
        timeout: float = 10.0,  # noqa: ASYNC109 - part of the agreed API, like the harness's
    ) -> None:
        """Wait until `predicate(self)` holds; it is re-checked on every arrival and answer."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate(self):
                    await self._changed.wait()
        except TimeoutError:
            recent = [r.answer for r in self.requests[-5:]]
            raise TimeoutError(
                f"simulator: {getattr(predicate, '__qualname__', 'condition')} still false after "
                f"{timeout} s; {len(self.requests)} API requests (last answers {recent}), "
                f"{len(self.token_requests)} token requests"
            ) from None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post(OAUTH_TOKEN_PATH, self._token_endpoint)
        app.router.add_route("*", "/{path:.*}", self._api_endpoint)
        # Without handler_cancellation a hanging handler would never learn that the client left.
        self._runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()
        port = self._runner.addresses[0][1]
        self.url = str(URL.build(scheme="http", host=self._host, port=port))
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
            # cleanup() cancels hanging handlers without waiting: let their records settle too.
            await self.wait_for(lambda s: s._in_flight == 0, timeout=1.0)

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _api_endpoint(self, request: web.Request) -> web.StreamResponse:
        """Every path lands here, so a wrong URL gets Zoho's refusal rather than aiohttp's 404."""
        at = self._now()
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        token_refusal = self._token_refusal(request.headers.get("Authorization"), at)
        module, job_id, refusal = route(request)
        step = token_refusal or refusal or self._next_step(module, job_id, at)
        token_ok = token_refusal is None
        record = RequestRecord(
            at, math.inf, module, job_id, step.text, None, self._in_flight, token_ok, step.reports
        )
        index = len(self.requests)
        self._publish(self.requests, record)
        status = None
        try:
            response = await perform(request, step, self._spend_credit())
            status = response.status
            if step.reports is not None and self._chaos is not None:
                self._chaos.delivered_status((module or "", job_id or ""))
            return response
        finally:
            self._in_flight -= 1
            self.requests[index] = replace(record, done=self._now(), http_status=status)
            self._notify()

    def _spend_credit(self) -> int | None:
        """Like Zoho: every call spends a credit, and the header shows once half are used."""
        if self._org_credits is None:
            return None
        self._credits_left = max(0, self._credits_left - 1)
        return self._credits_left if self._credits_left < self._org_credits / 2 else None

    def _token_refusal(self, header: str | None, now: float) -> Step | None:
        """Checked before any script: a refused token must not use up a step meant for later."""
        if header is None:
            return FIXED["AUTHENTICATION_FAILURE"]
        scheme, _, token = header.partition(" ")
        grant = self._grants.get(token) if scheme == AUTH_SCHEME else None
        if grant is not None and self._chaos is not None and self._chaos.expires(grant):
            del self._grants[token]
            grant = None
        return None if grant is not None and grant.use(now) else FIXED["INVALID_TOKEN"]

    def _next_step(self, module: str | None, job_id: str | None, now: float) -> Step:
        if self._injected:
            return self._injected.popleft()
        if module not in self._modules:  # Zoho checks the module before it looks for the job
            return FIXED["INVALID_MODULE"]
        key = (module or "", job_id or "")
        job = self._jobs.get(key)
        if self._chaos is None:
            return job.next_step(now) if job is not None else self._unknown_job
        fault = self._chaos.fault(key, known=job is not None)
        if fault is not None:
            return fault
        return job.next_step(now) if job is not None else self._chaos.not_found_shape()

    async def _token_endpoint(self, request: web.Request) -> web.StreamResponse:
        at = self._now()
        answer = "gone"
        self.token_arrivals += 1
        self._notify()
        try:
            await self._tokens_let_go.wait()
            step = self._token_script.popleft() if self._token_script else self._token_step()
            if _is_slow_token_step(step):
                await asyncio.sleep(float(step.removeprefix("slow:")))
                step = "ok"
            if step == "ok":
                step = self._credential_error(await request.post()) or "ok"
            response: web.StreamResponse
            if step == "redirect":
                moved = web.Response(status=307, headers={"Location": f"{request.url}?moved=1"})
                response = await send(request, moved)
            elif step in LARGE:
                response = await perform(request, LARGE[step](), None)
            else:
                body = self._issue_token() if step == "ok" else _TOKEN_ERRORS[step]
                response = await send(request, web.json_response(body))
            answer = step
            return response
        finally:
            self._publish(self.token_requests, TokenRecord(at, self._now(), answer))

    def _token_step(self) -> str:
        return "ok" if self._chaos is None else self._chaos.token_step()

    def _credential_error(self, form: Mapping[str, object]) -> str | None:
        refresh_token, client_id, client_secret = self._credentials
        if form.get("client_id") != client_id:
            return "invalid_client"
        if form.get("client_secret") != client_secret:
            return "invalid_client_secret"
        if form.get("grant_type") != "refresh_token":
            return "unsupported_grant_type"
        if form.get("refresh_token") != refresh_token:
            return "invalid_code"
        return None

    def _issue_token(self) -> dict[str, object]:
        token = secrets.token_urlsafe(24)
        self.issued_tokens.append(token)
        self._grants[token] = Grant(self._now() + self._token_lifetime, self._token_max_uses)
        lifetime = _json_number(self._token_lifetime)
        expiry: dict[str, object] = (
            {"expires_in_sec": lifetime, "expires_in": _json_number(self._token_lifetime * 1000)}
            if self._legacy_expiry
            else {"expires_in": lifetime}
        )
        return {"access_token": token, **expiry, "api_domain": self.url, "token_type": "Bearer"}

    def _publish(self, records: list[_Record], record: _Record) -> None:
        records.append(record)
        self._notify()

    def _notify(self) -> None:
        """Wake every `wait_for`: they wait on the old event, later ones on a fresh one."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()


def _is_loopback(host: str) -> bool:
    """Only IP literals: a name like "localhost" may resolve to several (or odd) addresses."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_slow_token_step(step: str) -> bool:
    return step.startswith("slow:") and seconds_in(step.removeprefix("slow:")) is not None


def _json_number(value: float) -> float | int:
    """Zoho sends whole seconds as integers; keep that shape, but let tests use tiny lifetimes."""
    return int(value) if float(value).is_integer() else value
