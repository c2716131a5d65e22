"""One status request to Zoho: URL, auth header, the shared gate, and classification.

Every failure a request can meet comes back as an `Answer` — nothing here raises for Zoho's or the
network's sake — so the job logic has a single input to reason about.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from yarl import URL

from watcher.auth import TokenSource
from watcher.bodies import read_capped
from watcher.classify import Answer, classify, failure_kind
from watcher.config import JobSpec
from watcher.proxy import proxy_for
from watcher.ratelimit import RequestGate
from watcher.zoho_api import AUTH_HEADER, AUTH_SCHEME, Effect, JobKind


class ZohoClient:
    """Polls the status of Zoho jobs of one kind through the shared `RequestGate`.

    `heard` hears every answer, one a poll asks again for included (refused for its token,
    then sent with a fresh one): what the metrics count is what Zoho was sent.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        gate: RequestGate,
        tokens: TokenSource,
        api_domain: str,
        api_version: str,
        kind: JobKind,
        wall_clock: Callable[[], float] = time.time,
        heard: Callable[[Answer], None] | None = None,
    ) -> None:
        self._proxy = proxy_for(api_domain)
        self._heard = heard
        self._session = session
        self._gate = gate
        self._tokens = tokens
        self._api_domain = URL(api_domain)
        self._api_version = api_version
        self._kind = kind
        self._wall_clock = wall_clock
        self._paths: dict[str, str] = {}  # per module: the URL's path, encoded

    def url(self, spec: JobSpec) -> URL:
        """The status URL; module and id can only ever fill their own path segment or value.

        Built from parts this client has already percent-encoded, so yarl need not parse it
        again. ValueError for a module that cannot be a segment at all (the config refuses them).
        """
        path = self._paths.get(spec.module)
        if path is None:
            path = self._paths[spec.module] = self._kind.path.format(
                version=_segment(self._api_version), module=_segment(spec.module)
            )
        job_id = spec.job_id
        if not (job_id.isascii() and job_id.isdigit()):  # Zoho's ids are digits: nothing to quote
            job_id = quote(job_id, safe="")
        query = f"{self._kind.id_param}={job_id}"
        base = self._api_domain
        return URL.build(
            scheme=base.scheme,
            authority=base.raw_authority,
            path=path,
            query_string=query,
            encoded=True,
        )

    async def poll(self, spec: JobSpec, wanted: Callable[[], bool]) -> Answer | None:
        """Ask for the job's status once; after a refused token, once more with a fresh one.

        None if nothing was asked: the job was no longer `wanted()` when its turn came.
        """
        sent = await self._request(spec, wanted)
        if (
            sent is not None
            and sent[0].effect is Effect.AUTH
            and await self._tokens.rejected(sent[1])
        ):
            sent = await self._request(spec, wanted)
            if sent is not None and sent[0].effect is Effect.AUTH:  # the fresh one too: the end
                await self._tokens.refused_for_good(sent[1])
        return None if sent is None else sent[0]

    async def _request(
        self, spec: JobSpec, wanted: Callable[[], bool]
    ) -> tuple[Answer, str] | None:
        """One request, and the token it carried; None if the gate turned it away unsent.

        The gate lets a request go only with a usable token in hand, so that it leaves at once.
        A wait at the gate (the rate, a 429 pause, the credit budget) can outlast a token's life;
        a request that took its slot and then waited for the refresh would leave with all the
        others that did, on slots aged meanwhile, exceeding the rate. Turned away for want of a
        token, it takes nothing, waits for the refresh, and asks the gate again.
        """
        try:
            url = self.url(spec)
        except ValueError:
            return self._answer(Answer(Effect.REJECTED, None, code="invalid_module")), ""
        tokens = self._tokens
        while True:
            await tokens.token()
            if await self._gate.admit(lambda: wanted() and tokens.usable() is not None):
                if (token := tokens.usable()) is not None:
                    break
            elif not wanted():
                return None
        headers = {AUTH_HEADER: f"{AUTH_SCHEME} {token}"}
        sent = time.monotonic()
        try:
            async with self._session.get(
                url,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
                middlewares=(_ResendsAdmitted(self._gate),),
            ) as response:
                body = await read_capped(response)
                status, response_headers = response.status, response.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            elapsed = time.monotonic() - sent
            failed = Answer(Effect.TRANSIENT, None, code=failure_kind(exc), elapsed=elapsed)
            return self._answer(failed), token
        elapsed = time.monotonic() - sent
        now = self._wall_clock()
        answer = classify(self._kind, status, response_headers, body, now, elapsed)
        return self._answer(answer), token

    def _answer(self, answer: Answer) -> Answer:
        if self._heard is not None:
            self._heard(answer)
        return answer


def _segment(text: str) -> str:
    """`text` as one path segment. Quoting cannot protect "", "." or "..": URL libraries (yarl
    among them, even for %2E) and servers resolve them, which would move the request elsewhere."""
    if text in ("", ".", ".."):
        raise ValueError(f"{text!r} cannot be a path segment")
    return quote(text, safe="")


class _ResendsAdmitted:
    """Sends each re-send of one request through the gate's rate limit and credit budget.

    aiohttp re-sends a GET by itself when a reused keep-alive connection turns out closed (RFC 9112
    9.3.1). The first attempt was admitted before the request began; any later one is a request to
    Zoho like any other and must be admitted too, or resets would let requests past the limit.
    """

    def __init__(self, gate: RequestGate) -> None:
        self._gate = gate
        self._attempts = 0

    async def __call__(
        self, request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        self._attempts += 1
        if self._attempts > 1:
            await self._gate.admit()
        return await handler(request)
