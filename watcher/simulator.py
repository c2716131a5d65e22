"""A loopback-only stand-in for Zoho's mass-update status endpoint and its OAuth token endpoint.

The watcher must cope with every way Zoho answers (progress, throttling, three shapes of "not
found", error objects with HTTP 200, dead connections), and none of that can be provoked on the
real service at will. Here each job answers from a script of steps, any request can be hijacked
with `inject`, and every request is recorded, so tests assert on what the watcher actually sent:
how often, how concurrently, with which token.

`Simulator(chaos=Chaos(...))` adds random faults at given rates for soak runs, and records which
statuses each job actually delivered, so a checker can tell what the watcher could have seen.
"""

from __future__ import annotations

import asyncio
import functools
import http
import ipaddress
import json
import math
import random
import re
import secrets
import socket
import struct
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from aiohttp import web
from yarl import URL

from watcher.zoho_api import AUTH_SCHEME, ERRORS, MASS_UPDATE, OAUTH_TOKEN_PATH

_STATUSES = tuple(sorted(MASS_UPDATE.statuses))
_OUTCOMES = tuple(sorted(MASS_UPDATE.terminal))
# Zoho's documented error codes for this endpoint, with the HTTP status each comes with.
_ERROR_STATUS = {code: error.http_status for code, error in ERRORS.items()}
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
_API_PATH = re.compile(r"/crm/v(?:[2-8]|2\.1)/([^/]+)/actions/mass_update")  # Zoho's versions
_COUNTS = re.compile(r"([0-9]+),([0-9]+),([0-9]+),([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
# The three ways Zoho says it does not know a job (step names, and `RequestRecord.answer`).
NOT_FOUND_SHAPES = ("notfound204", "notfound404", "notfound400")
_SERVER_ERRORS = ("500", "502", "503", "504")
_BAD_BODIES = ("malformed", "badstatus", "nodata")
# Chaos only expires a token that has served this many requests. The watcher retries a refused
# request once with a fresh token; a fresh token refused at once is a real failure, not expiry.
TOKEN_MIN_USES = 50


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


@dataclass(frozen=True)
class _Step:
    """A parsed script step: a canned HTTP answer, possibly late, or no answer at all."""

    text: str
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    retry_after: str | None = None
    delay: float = 0.0
    action: Literal["answer", "hang", "reset", "truncate"] = "answer"
    encoding: str | None = None  # the body's Content-Encoding, if it is compressed
    location: str | None = None  # where a redirect points
    reports: str | None = None  # the job status in the body, when it is a status row


def _json_step(text: str, status: int, document: object) -> _Step:
    return _Step(text, status, json.dumps(document).encode())


def _error(
    code: str, details: dict[str, str] | None = None, message: str = ""
) -> dict[str, object]:
    return {
        "code": code,
        "details": details or {},
        "message": message or code.lower().replace("_", " "),
        "status": "error",
    }


def _status_step(text: str, status: str, counts: Sequence[int]) -> _Step:
    updated, failed, not_updated, total = counts
    row = {
        "Status": status,
        "Failed_Count": failed,
        "Updated_Count": updated,
        "Not_Updated_Count": not_updated,
        "Total_Count": total,
    }
    reports = status if status in _STATUSES else None
    return replace(_json_step(text, 200, {"data": [row]}), reports=reports)


def _plain_step(code: int) -> _Step:
    return _Step(str(code), code, http.HTTPStatus(code).phrase.encode(), "text/plain")


_FIXED: dict[str, _Step] = {
    **{s: _status_step(s, s, (100 if s == "COMPLETED" else 0, 0, 0, 100)) for s in _STATUSES},
    **{code: _json_step(code, status, _error(code)) for code, status in _ERROR_STATUS.items()},
    "429": _json_step("429", 429, _error("TOO_MANY_REQUESTS")),
    "500": _json_step("500", 500, _error("INTERNAL_ERROR")),
    **{str(code): _plain_step(code) for code in (502, 503, 504)},
    "hang": _Step("hang", action="hang"),
    "reset": _Step("reset", action="reset"),
    "malformed": _Step("malformed", 200, b'{"data":[{"Status":"RUNN'),
    # Content-Length promises the whole row, half of it arrives, then the connection closes.
    "truncated": replace(
        _status_step("truncated", "RUNNING", (50, 0, 0, 100)), action="truncate", reports=None
    ),
    "badstatus": _status_step("badstatus", "EXPLODED", (0, 0, 0, 100)),
    "hugecode": _json_step("hugecode", 400, _error("X" * 10_000)),
    # Elsewhere on this server, so that a client that followed would be seen asking there.
    "redirect": _Step("redirect", 302, content_type=None, location="/moved"),
    "nodata": _json_step("nodata", 200, {"data": []}),
    "notfound204": _Step("notfound204", 204, content_type=None),
    "notfound404": _json_step("notfound404", 404, _error("NOT_FOUND", message="Empty response")),
    "notfound400": _json_step(
        "notfound400",
        400,
        _error("INVALID_DATA", {"param_name": "job_id"}, "the id given seems to be invalid"),
    ),
}


# Bodies no client should read whole, made when first asked for (and once): 16 KiB of deflate
# that unpacks to 16 MiB of spaces, and 2 MiB as they are (with a 200, or with a 429 that asks for
# a second's pause).
_LARGE: dict[str, Callable[[], _Step]] = {
    "bomb": functools.cache(
        lambda: _Step("bomb", 200, zlib.compress(b" " * (16 << 20), 9), encoding="deflate")
    ),
    "huge": functools.cache(lambda: _Step("huge", 200, b" " * (2 << 20))),
    "huge429": functools.cache(lambda: _Step("huge429", 429, b" " * (2 << 20), retry_after="1")),
}


def _parse_step(text: str) -> _Step:
    """Fail fast: a typo in a script would otherwise surface as a puzzling watcher failure."""
    large = _LARGE.get(text)
    step = large() if large is not None else _FIXED.get(text) or _parse_parametrised(text)
    if step is None:
        raise ValueError(f"unparseable script step: {text!r}")
    return step


def _parse_parametrised(text: str) -> _Step | None:
    head, _, arg = text.partition(":")
    if head in _STATUSES and (counts := _COUNTS.fullmatch(arg)):
        return _status_step(text, head, [int(n) for n in counts.groups()])
    if head == "429" and _DIGITS.fullmatch(arg):
        return replace(_FIXED["429"], text=text, retry_after=arg)
    if head in ("data200", "top200") and arg in _ERROR_STATUS:
        error = _error(arg)
        return _json_step(text, 200, {"data": [error]} if head == "data200" else error)
    if head == "slow":
        seconds, _, inner = arg.partition(":")
        delay = _seconds(seconds)
        if delay is not None:
            step = _parse_step(inner)
            return replace(step, text=text, delay=delay + step.delay)
    return None


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _json_number(value: float) -> float | int:
    """Zoho sends whole seconds as integers; keep that shape, but let tests use tiny lifetimes."""
    return int(value) if float(value).is_integer() else value


class _ScriptedJob:
    def __init__(self, steps: Iterable[_Step]) -> None:
        self._steps = deque(steps)
        if not self._steps:
            raise ValueError("a job script needs at least one step")

    def next_step(self, now: float) -> _Step:
        """One step per poll; the last one repeats forever."""
        return self._steps.popleft() if len(self._steps) > 1 else self._steps[0]

    @property
    def final_status(self) -> str | None:
        return self._steps[-1].reports


@dataclass
class _TimedJob:
    duration: float
    total: int
    scheduled_for: float
    outcome: str
    failed: int
    first_poll: float | None = None

    def next_step(self, now: float) -> _Step:
        """Progress follows the clock from the first poll, like a real job the watcher found."""
        if self.first_poll is None:
            self.first_poll = now
        running_for = now - self.first_poll - self.scheduled_for
        done = self.total - self.failed
        if running_for < 0:
            return _parse_step(f"SCHEDULED:0,0,0,{self.total}")
        if running_for < self.duration:
            return _parse_step(
                f"RUNNING:{int(done * running_for / self.duration)},0,0,{self.total}"
            )
        return _parse_step(f"{self.outcome}:{done},{self.failed},0,{self.total}")

    @property
    def final_status(self) -> str:
        return self.outcome


@dataclass
class _Grant:
    """An access token the simulator accepts, until a deadline or a number of uses."""

    expires_at: float
    uses_left: int | None
    used: int = 0

    def use(self, now: float) -> bool:
        if now >= self.expires_at or self.uses_left == 0:
            return False
        if self.uses_left is not None:
            self.uses_left -= 1
        self.used += 1
        return True


@dataclass(frozen=True)
class Chaos:
    """Random faults for soak runs, each at a rate (a chance per API request; `slow_refresh` per
    token request), all drawn from one `random.Random(seed)`: a run replays exactly as far as
    its requests arrive in the same order.

    Faults never change a job's true progress: a faulted request does not consume a script step.
    A job the simulator knows answers not-found at most once between two statuses it delivered,
    so a watcher that needs two not-founds in a row never mistakes it for an unknown job; unknown
    jobs answer one of the three not-found shapes at random.
    """

    seed: int = 0
    burst_429: float = 0.0  # starts a burst: this request and up to burst_max - 1 more get 429
    burst_max: int = 4
    retry_after: float = 0.5  # the share of 429s that carry "Retry-After: 1"
    server_error: float = 0.0  # 500 with Zoho's error body, or a plain-text 502/503/504
    reset: float = 0.0  # TCP reset, no answer
    hang: float = 0.0  # no answer until the client gives up
    truncated: float = 0.0  # the body ends before its Content-Length
    malformed: float = 0.0  # a complete answer the watcher cannot read as a status
    not_found: float = 0.0  # one of the three not-found shapes for a job that exists
    token_expiry: float = 0.0  # the token presented is revoked (after TOKEN_MIN_USES uses)
    slow_refresh: float = 0.0  # the token endpoint answers only after refresh_delay
    refresh_delay: float = 1.0

    def __post_init__(self) -> None:
        others = ("retry_after", "token_expiry", "slow_refresh")
        rates = {**self.request_faults(), **{name: getattr(self, name) for name in others}}
        bad = [name for name, rate in rates.items() if not 0.0 <= rate <= 1.0]
        if bad:
            raise ValueError(f"chaos rates must be within 0..1: {', '.join(bad)}")
        if sum(self.request_faults().values()) > 1.0:
            raise ValueError("chaos request fault rates add up to more than 1")
        if self.burst_max < 1 or not 0.0 <= self.refresh_delay < math.inf:
            raise ValueError("chaos needs burst_max >= 1 and a finite refresh_delay >= 0")

    def request_faults(self) -> dict[str, float]:
        """The faults one draw per request chooses from, with their rates."""
        names = ("burst_429", "server_error", "reset", "hang", "truncated", "malformed")
        return {name: getattr(self, name) for name in (*names, "not_found")}


class _ChaosState:
    """Chaos under way: the random draws, a 429 burst in progress, and what was injected."""

    def __init__(self, chaos: Chaos) -> None:
        self._chaos = chaos
        self._rng = random.Random(chaos.seed)
        self._burst_left = 0
        self._not_found_since_status: set[tuple[str, str]] = set()
        self.faults: Counter[str] = Counter()

    def fault(self, job: tuple[str, str], known: bool) -> _Step | None:
        """The fault this request meets, or None for the job's true answer."""
        if self._burst_left:
            self._burst_left -= 1
            return self._too_many()
        draw = self._rng.random()
        for kind, rate in self._chaos.request_faults().items():
            if draw < rate:
                return self._inject(kind, job, known)
            draw -= rate
        return None

    def _inject(self, kind: str, job: tuple[str, str], known: bool) -> _Step | None:
        if kind == "burst_429":
            self._burst_left = self._rng.randrange(self._chaos.burst_max)
            return self._too_many()
        if kind == "not_found" and known:
            if job in self._not_found_since_status:
                return None  # a second one in a row would be a lie about the job
            self._not_found_since_status.add(job)
        self.faults[kind] += 1
        choices = {
            "server_error": _SERVER_ERRORS,
            "malformed": _BAD_BODIES,
            "not_found": NOT_FOUND_SHAPES,
        }.get(kind, (kind,))
        return _FIXED[self._rng.choice(choices)]

    def _too_many(self) -> _Step:
        self.faults["429"] += 1
        return _parse_step("429:1" if self._rng.random() < self._chaos.retry_after else "429")

    def not_found_shape(self) -> _Step:
        return _FIXED[self._rng.choice(NOT_FOUND_SHAPES)]

    def delivered_status(self, job: tuple[str, str]) -> None:
        self._not_found_since_status.discard(job)

    def expires(self, grant: _Grant) -> bool:
        if grant.used < TOKEN_MIN_USES or self._rng.random() >= self._chaos.token_expiry:
            return False
        self.faults["token_expiry"] += 1
        return True

    def token_step(self) -> str:
        if self._rng.random() >= self._chaos.slow_refresh:
            return "ok"
        self.faults["slow_refresh"] += 1
        return f"slow:{self._chaos.refresh_delay}"


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
        self._unknown_job = _parse_step(unknown_job)
        self._modules = set(modules)  # the org's modules; any scripted job's module joins them
        self._org_credits = org_credits  # the org's daily credits; None: no credit header
        self._credits_left = org_credits or 0
        self._grants = {token: _Grant(math.inf, None) for token in tokens}
        self._jobs: dict[tuple[str, str], _ScriptedJob | _TimedJob] = {}
        self._injected: deque[_Step] = deque()
        self._token_script: deque[str] = deque()
        self._tokens_let_go = asyncio.Event()  # token requests are answered once it is set
        self._tokens_let_go.set()
        self._chaos = _ChaosState(chaos) if chaos is not None else None
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
        self._jobs[module, job_id] = _ScriptedJob(_parse_step(step) for step in script)
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
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, not {outcome!r}")
        if not (duration >= 0 and scheduled_for >= 0 and 0 <= failed <= total):
            raise ValueError("need duration >= 0, scheduled_for >= 0 and 0 <= failed <= total")
        self._jobs[module, job_id] = _TimedJob(duration, total, scheduled_for, outcome, failed)
        self._modules.add(module)

    def inject(self, steps: Sequence[str]) -> None:
        """Answer the next API requests with `steps`, whatever job they ask about."""
        self._injected.extend([_parse_step(step) for step in steps])  # all or nothing

    def script_tokens(self, steps: Sequence[str]) -> None:
        """Answer the next token requests with `steps`; "ok" and "slow:S" still check the form.
        "redirect" answers 307 to this endpoint again, as a hijacked accounts server might: a
        client that followed would send the secrets once more, wherever it was sent. "bomb",
        "huge" and "huge429" answer as the status steps of those names do."""
        for step in steps:
            known = step in ("ok", "redirect") or step in _LARGE or step in _TOKEN_ERRORS
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
        module, job_id, refusal = _route(request)
        step = token_refusal or refusal or self._next_step(module, job_id, at)
        token_ok = token_refusal is None
        record = RequestRecord(
            at, math.inf, module, job_id, step.text, None, self._in_flight, token_ok, step.reports
        )
        index = len(self.requests)
        self._publish(self.requests, record)
        status = None
        try:
            response = await _perform(request, step, self._spend_credit())
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

    def _token_refusal(self, header: str | None, now: float) -> _Step | None:
        """Checked before any script: a refused token must not use up a step meant for later."""
        if header is None:
            return _FIXED["AUTHENTICATION_FAILURE"]
        scheme, _, token = header.partition(" ")
        grant = self._grants.get(token) if scheme == AUTH_SCHEME else None
        if grant is not None and self._chaos is not None and self._chaos.expires(grant):
            del self._grants[token]
            grant = None
        return None if grant is not None and grant.use(now) else _FIXED["INVALID_TOKEN"]

    def _next_step(self, module: str | None, job_id: str | None, now: float) -> _Step:
        if self._injected:
            return self._injected.popleft()
        if module not in self._modules:  # Zoho checks the module before it looks for the job
            return _FIXED["INVALID_MODULE"]
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
                response = await _send(request, moved)
            elif step in _LARGE:
                response = await _perform(request, _LARGE[step](), None)
            else:
                body = self._issue_token() if step == "ok" else _TOKEN_ERRORS[step]
                response = await _send(request, web.json_response(body))
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
        self._grants[token] = _Grant(self._now() + self._token_lifetime, self._token_max_uses)
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
    return step.startswith("slow:") and _seconds(step.removeprefix("slow:")) is not None


def _route(request: web.Request) -> tuple[str | None, str | None, _Step | None]:
    """(module, job_id, Zoho's refusal if the request is not a well-formed status call)."""
    match = _API_PATH.fullmatch(request.path)
    if match is None:
        return None, None, _FIXED["INVALID_URL_PATTERN"]
    module, job_id = match[1], request.query.get("job_id") or None
    if request.method != "GET":
        return module, job_id, _FIXED["INVALID_REQUEST_METHOD"]
    if job_id is None:
        return module, None, _FIXED["MANDATORY_NOT_FOUND"]
    return module, job_id, None


async def _perform(
    request: web.Request, step: _Step, credits_left: int | None
) -> web.StreamResponse:
    if step.delay:
        await asyncio.sleep(step.delay)
    if step.action != "answer":
        if step.action == "reset":
            _reset(request)
        elif step.action == "truncate":
            await _truncate(request, step)
        await asyncio.Event().wait()  # never set: only the client leaving or stop() ends this
    headers = {"Retry-After": step.retry_after} if step.retry_after else {}
    if credits_left is not None:
        headers["X-API-CREDITS-REMAINING"] = str(credits_left)
    if step.encoding is not None:
        headers["Content-Encoding"] = step.encoding
    if step.location is not None:
        headers["Location"] = step.location
    body = step.body or None
    response = web.Response(
        status=step.status, body=body, content_type=step.content_type, headers=headers
    )
    return await _send(request, response)


async def _send(request: web.Request, response: web.Response) -> web.Response:
    """Write the answer before returning, so a record's `done` means "the client has it"."""
    await response.prepare(request)
    await response.write_eof()
    return response


async def _truncate(request: web.Request, step: _Step) -> None:
    """Promise the whole body, send half of it, then close: the answer ends early, cleanly."""
    response = web.StreamResponse(status=step.status, headers={"Content-Type": "application/json"})
    response.content_length = len(step.body)
    await response.prepare(request)
    await response.write(step.body[: len(step.body) // 2])
    if request.transport is not None:
        request.transport.close()


def _reset(request: web.Request) -> None:
    """Close with a TCP RST (linger 0), the way a dropped connection looks to the client."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
