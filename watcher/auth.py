"""Where the access token for each request comes from, and how it is kept valid for months.

Zoho access tokens live an hour, and Zoho allows only ten per refresh token per ten minutes before
blocking token creation for the rest of the ten minutes. So a refresh is a scarce, shared thing:
exactly one is ever in flight, every request that needs a token waits for that one, and a refresh
that fails for a reason that can heal backs off for minutes instead of trying again at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp

from watcher.backoff import backoff_delay
from watcher.bodies import read_capped
from watcher.classify import TOO_LARGE, code_of, failure_kind
from watcher.clock import to_monotonic, to_wall
from watcher.config import AuthSettings, Secret, url_problem
from watcher.events import Event
from watcher.proxy import proxy_for
from watcher.state import StoredToken
from watcher.zoho_api import (
    OAUTH_PERMANENT_ERRORS,
    OAUTH_TOKEN_PATH,
    OAUTH_TOKEN_WINDOW_S,
    OAUTH_TOKENS_PER_WINDOW,
)

# Refresh this long before expiry, but never more than a tenth of a token's life ahead.
REFRESH_AHEAD_S = 300.0
# Polls go on with the current token while that refresh runs, until this long before it dies
# (at most a sixtieth of its life): a request must reach Zoho while its token still lives.
USABLE_MARGIN_S = 30.0
DEFAULT_LIFETIME_S = 3600.0
MAX_LIFETIME_S = 24 * 3600.0


# The error of an `auth.refresh_failed` that sent no request: Zoho's limit on tokens was reached.
REFRESH_LIMIT = "refresh_limit"


class AuthFailed(Exception):
    """Zoho refused the credentials in a way waiting cannot heal. Carries only Zoho's code."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class TokenSource(Protocol):
    """Gives the token to send and hears when Zoho refused one.

    `api_domain` is the API domain the token issuer named, if it named one.
    """

    api_domain: str | None

    async def token(self) -> str: ...

    def usable(self) -> str | None:
        """The token to send now if one can be sent without waiting; None if `token` would wait."""
        ...

    async def rejected(self, token: str) -> bool:
        """Zoho refused `token`; True if a different token is now worth one retry."""
        ...

    async def refused_for_good(self, token: str) -> None:
        """Zoho refused `token`, and the run ends for it: it must not be sent again, not even
        by the next run."""
        ...

    async def close(self) -> None:
        """Stop any work in flight: the HTTP session it uses is about to close."""
        ...


class FixedToken:
    """A token given in the configuration: nothing can replace it once Zoho refuses it."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret
        self.api_domain: str | None = None

    async def token(self) -> str:
        return self._secret.reveal()

    def usable(self) -> str:
        return self._secret.reveal()

    async def rejected(self, token: str) -> bool:
        return False

    async def refused_for_good(self, token: str) -> None:
        return None  # the config's: the next run sends it again unless the config changes

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Grant:
    """A token answer: the token, seconds it lives, and the API domain Zoho named (if any)."""

    access_token: str = field(repr=False)
    expires_in: float
    api_domain: str | None


@dataclass(frozen=True)
class Refusal:
    """A token answer that gave no token. `permanent` refusals end the watcher."""

    code: str
    permanent: bool


def _issued_for(*credentials: str) -> str:
    """Which credentials a kept token was refreshed with, as a digest: a token kept by a run with
    other credentials (another client, another data centre's accounts server) may belong to
    another org, and its API domain with it, so it is not reused."""
    return hashlib.sha256("\0".join(credentials).encode()).hexdigest()


def read_token_answer(http_status: int, body: bytes | None) -> Grant | Refusal:
    """Pure reading of Zoho's token answer, in all the shapes its servers send (a `body` of None
    was too large to read: a failure to retry).

    Errors usually come with HTTP 200 and an `error` key; older servers send `expires_in_sec` and
    give `expires_in` in milliseconds.
    """
    if body is None:
        return Refusal(TOO_LARGE, False)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    if not isinstance(document, dict):
        return _unusable(http_status)
    error = document.get("error")
    if error is not None:
        code = code_of(error, "unknown_error")
        return Refusal(code, code in OAUTH_PERMANENT_ERRORS)
    token = document.get("access_token")
    if http_status != 200 or not isinstance(token, str) or not _sendable(token):
        return _unusable(http_status)
    return Grant(token, _lifetime(document), _api_domain(document.get("api_domain")))


def _sendable(token: str) -> bool:
    """Whether `token` can go in an Authorization header as it is: Zoho's are visible ASCII.
    One with a line break or a space would fail every request unsent, each failure looking
    like a bug of ours, until the token's hour was up."""
    return bool(token) and token.isascii() and token.isprintable() and " " not in token


def _api_domain(value: object) -> str | None:
    """The API domain the answer names, if it is one the config would accept: the token is sent
    there, so an http:// URL to another host (no TLS) or one with a path or query is ignored."""
    if not isinstance(value, str) or url_problem(value) is not None:
        return None
    return value.removesuffix("/")


def _unusable(http_status: int) -> Refusal:
    """An answer we cannot read: worth another try later, like any transient failure."""
    return Refusal("malformed_response" if http_status == 200 else f"http_{http_status}", False)


def _lifetime(document: dict[str, object]) -> float:
    """Seconds the token lives. A claimed life beyond a day is not believed: Zoho's last an hour,
    an infinite one would never be refreshed ahead, and a huge integer does not fit a float."""
    for key in ("expires_in_sec", "expires_in"):
        value = document.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if 0 < value <= MAX_LIFETIME_S:
            return float(value)
    return DEFAULT_LIFETIME_S


class RefreshingToken:
    """Access tokens from the refresh-token flow, one refresh at a time.

    `emit` receives the `auth.*` events; `on_token` hears every new token (so output can be
    scrubbed of it) before anybody uses it.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        auth: AuthSettings,
        emit: Callable[[Event], None],
        on_token: Callable[[str], None],
        rng: random.Random,
        stored: StoredToken | None = None,
        persist: Callable[[StoredToken], Awaitable[None]] | None = None,
    ) -> None:
        assert auth.refresh_token is not None
        assert auth.client_id is not None
        assert auth.client_secret is not None
        assert auth.accounts_url is not None
        self._session = session
        self._settings = auth
        self._form = {
            "grant_type": "refresh_token",
            "refresh_token": auth.refresh_token.reveal(),
            "client_id": auth.client_id.reveal(),
            "client_secret": auth.client_secret.reveal(),
        }
        self._url = f"{auth.accounts_url}{OAUTH_TOKEN_PATH}"
        self._proxy = proxy_for(self._url)
        form = self._form
        self._issued_for = _issued_for(self._url, form["client_id"], form["refresh_token"])
        self._emit = emit
        self._on_token = on_token
        self._rng = rng
        self._clock = asyncio.get_running_loop().time
        self._token: str | None = None
        self._refresh_at = 0.0  # when to start refreshing, in the background
        self._expires_at = 0.0  # when the token is no longer sent (USABLE_MARGIN_S before death)
        self._refused: str | None = None  # the last token Zoho refused
        self._failed: AuthFailed | None = None  # a refresh found the credentials dead for good
        self._refreshing: asyncio.Future[None] | None = None
        # When the latest refreshes were asked for: no more than Zoho grants in its window.
        self._asked: deque[float] = deque(maxlen=OAUTH_TOKENS_PER_WINDOW)
        self._persist = persist
        self._kept_as = ("", 0.0)  # the token as last kept, and when it dies (epoch seconds)
        self.api_domain: str | None = None
        if stored is not None and stored.issued_for == self._issued_for:
            self._reuse(stored)

    def _reuse(self, stored: StoredToken) -> None:
        """Start where a previous run with these credentials left off: its refreshes count in
        Zoho's window (a crash loop, or a restart policy after exit 3, must not spend more than
        Zoho's ten tokens per ten minutes), and its token, if it still has a useful life, spares
        one."""
        asked = to_monotonic(stored.asked, time.time(), self._clock(), OAUTH_TOKEN_WINDOW_S)
        self._asked.extend(asked)
        # Its life was not kept, and Zoho's last an hour: a wall clock set back since it was
        # kept must not make it live longer.
        left = min(stored.expires_at - time.time(), DEFAULT_LIFETIME_S)
        if left <= REFRESH_AHEAD_S:
            return
        self._kept_as = (stored.access_token, stored.expires_at)
        self._on_token(stored.access_token)
        self._hold(stored.access_token, left, DEFAULT_LIFETIME_S)
        self.api_domain = stored.api_domain

    def _hold(self, token: str, left: float, life: float) -> None:
        """Send `token` from now on; it dies in `left` seconds, of a `life` in all."""
        now = self._clock()
        self._token = token
        self._refresh_at = now + left - min(REFRESH_AHEAD_S, life / 10)
        self._expires_at = now + left - min(USABLE_MARGIN_S, life / 60)

    async def token(self) -> str:
        """The token to send now. A refresh that falls due runs in the background while the
        token still lives, so that a slow or throttled accounts server does not stop the polls
        minutes early; a token that died or that Zoho refused is not handed out again but waits
        for its successor. Credentials a refresh found dead end the run at the next poll."""
        if self._failed is not None:
            raise AuthFailed(self._failed.code)
        if (token := self.usable()) is not None:
            return token
        if self._token is None:
            await self._refresh("startup")
        elif self._token == self._refused:
            await self._refresh("rejected")
        else:
            await self._refresh("expiry")
        assert self._token is not None
        return self._token

    def usable(self) -> str | None:
        if self._failed is not None or self._token is None or self._token == self._refused:
            return None
        now = self._clock()
        if now >= self._expires_at:
            return None
        if now >= self._refresh_at:
            self._start_refresh("expiry")
        return self._token

    async def rejected(self, token: str) -> bool:
        if token == self._token:
            await self.refused_for_good(token)
            await self._refresh("rejected")
        return self._token != token

    async def refused_for_good(self, token: str) -> None:
        if token == self._token and token != self._refused:  # the first of its 401s
            self._refused = token
            await self._keep(token, 0.0)  # kept as dead: a restart must not take it back

    async def _refresh(self, reason: str) -> None:
        """Join the refresh in flight, or start one. A waiter that is cancelled (shutdown) does
        not cancel the refresh the others are waiting for."""
        await asyncio.shield(self._start_refresh(reason))

    def _start_refresh(self, reason: str) -> asyncio.Future[None]:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._refresh_until_granted(reason))
            self._refreshing.add_done_callback(self._refreshed)
        return self._refreshing

    async def close(self) -> None:
        """Cancel a refresh in flight: with its session closed it would fail, and that failure
        would be reported as Zoho's."""
        refreshing = self._refreshing
        if refreshing is not None:
            refreshing.cancel()
            await asyncio.wait({refreshing})

    def _refreshed(self, future: asyncio.Future[None]) -> None:
        self._refreshing = None
        if future.cancelled():
            return
        # Retrieved here, so that the failure of a refresh nobody awaited (one in the
        # background) is not logged as lost, and is kept for the next `token()` to raise.
        failure = future.exception()
        if isinstance(failure, AuthFailed):
            self._failed = failure

    async def _refresh_until_granted(self, reason: str) -> None:
        attempt = 0
        while True:
            if (held := self._over_limit_for()) > 0:  # tokens refused as fast as they come
                attempt += 1
                await self._retry_later(REFRESH_LIMIT, attempt, held)
                continue
            self._asked.append(self._clock())
            # Kept before it is sent: a request Zoho counts does not have to bring a token
            # back (throttled, cut off, or the run stopped while it was out) to count.
            await self._keep(*self._kept_as)
            answer = await self._ask()
            if isinstance(answer, Grant):
                await self._accept(answer, reason)
                return
            if answer.permanent:
                raise AuthFailed(answer.code)
            attempt += 1
            delay = backoff_delay(
                attempt,
                self._settings.refresh_backoff_initial,
                self._settings.refresh_backoff_max,
                self._rng,
            )
            await self._retry_later(answer.code, attempt, delay)

    def _over_limit_for(self) -> float:
        """Seconds until one more refresh keeps within Zoho's tokens per window; 0.0 if it does
        now. Past the limit Zoho would block new tokens for the rest of its window: waiting for the
        oldest refresh to age out costs less."""
        if len(self._asked) < OAUTH_TOKENS_PER_WINDOW:
            return 0.0
        return max(0.0, self._asked[0] + OAUTH_TOKEN_WINDOW_S - self._clock())

    async def _retry_later(self, error: str, attempt: int, delay: float) -> None:
        fields = {"error": error, "attempt": attempt, "retry_in_s": round(delay, 3)}
        self._emit(Event("auth.refresh_failed", "warning", fields))
        await asyncio.sleep(delay)

    async def _ask(self) -> Grant | Refusal:
        try:
            # Never followed: a redirect would carry the form, secrets and all, wherever it says.
            async with self._session.post(
                self._url, data=self._form, allow_redirects=False, proxy=self._proxy
            ) as response:
                return read_token_answer(response.status, await read_capped(response))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Refusal(failure_kind(exc), False)

    async def _keep(self, token: str, expires_at: float) -> None:
        """Keep `token`, dead at `expires_at`, with the refreshes asked for so far."""
        self._kept_as = (token, expires_at)
        if self._persist is None:
            return
        asked = tuple(to_wall(self._asked, self._clock(), time.time()))
        await self._persist(
            StoredToken(token, expires_at, self.api_domain, self._issued_for, asked)
        )

    async def _accept(self, grant: Grant, reason: str) -> None:
        self._on_token(grant.access_token)
        self.api_domain = grant.api_domain or self.api_domain
        await self._keep(grant.access_token, time.time() + grant.expires_in)
        self._hold(grant.access_token, grant.expires_in, grant.expires_in)
        fields = {"expires_in_s": round(grant.expires_in, 3), "reason": reason}
        self._emit(Event("auth.token_refreshed", "info", fields))
