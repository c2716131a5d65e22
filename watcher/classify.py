"""Turn one HTTP answer from Zoho into an `Answer`: pure, so every shape can be tested directly.

Zoho reports the same thing in several shapes (an error object at top level or inside `data[]`,
with HTTP 200 or a 4xx; "not found" in three different ways depending on the API version). This
module folds all of them into one `Effect` so the rest of the watcher never looks at a body.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import NamedTuple

import aiohttp
import orjson

from watcher.zoho_api import (
    CREDITS_REMAINING,
    ERRORS,
    INVALID_DATA,
    RETRY_AFTER,
    Effect,
    JobKind,
    effect_of_http_status,
)

Counts = Mapping[str, int | None]
_MAX_COUNT = 2**63  # what the event stream's JSON encoder can write as a number
_CODE = re.compile(r"[A-Za-z][A-Za-z_ ]{0,63}")  # see `code_of`
UNRECOGNISED = "unrecognised_code"
TOO_LARGE = "response_too_large"  # the code of an answer whose body was too large to read


class Observation(NamedTuple):
    """A status row as Zoho reported it, with counts under the watcher's own names."""

    status: str
    counts: Counts


class Answer(NamedTuple):
    """What one poll told us. `code` is Zoho's error code or a short name for what went wrong.

    The values made at every poll (this, `Observation`, `Sample`, `Event`, `Decision`) are named
    tuples: as immutable as a frozen dataclass, at a fifth of its cost to make, since a frozen
    dataclass's `__init__` sets each field through `object.__setattr__`.
    """

    effect: Effect
    http_status: int | None
    observation: Observation | None = None
    code: str | None = None
    retry_after: float | None = None
    elapsed: float | None = None  # seconds on the wire, when a request went out
    credits_remaining: int | None = None  # the org's API credits left, when Zoho said


def classify(
    kind: JobKind,
    http_status: int,
    headers: Mapping[str, str],
    body: bytes | None,
    now: float,
    elapsed: float | None = None,
) -> Answer:
    """Classify a complete HTTP answer; `now` (epoch seconds) only serves date-form Retry-After,
    `elapsed` (seconds on the wire) is passed through. A `body` of None was too large to read:
    the answer still means what its status and headers say (a 429 still pauses every job)."""
    effect, code, observation = _read(kind, http_status, body or b"")
    if body is None:
        code = TOO_LARGE
    retry_after, credits = headers.get(RETRY_AFTER), headers.get(CREDITS_REMAINING)
    return Answer(
        effect,
        http_status,
        observation,
        code,
        None if retry_after is None else parse_retry_after(retry_after, now),
        elapsed,
        None if credits is None else _credits(credits),
    )


def _read(
    kind: JobKind, http_status: int, body: bytes
) -> tuple[Effect, str | None, Observation | None]:
    """What the status and body say: the effect, Zoho's code or ours, the status row if any."""
    if http_status == 204:
        return Effect.NOT_FOUND, "NO_CONTENT", None
    ok = 200 <= http_status < 300
    document = _parse_json(body)
    row = _first_row(document)
    if _is_error(row):
        return _error_effect(kind, http_status, row)
    if _is_error(document):
        return _error_effect(kind, http_status, document)
    if not ok or not isinstance(document, dict):
        code = "malformed_response" if ok else f"http_{http_status}"
        return effect_of_http_status(http_status), code, None
    return _status_row(kind, row)


def _credits(value: str) -> int | None:
    """The org's remaining API credits, when the header says a plausible number."""
    text = value.strip()  # plain ASCII digits: str.isdigit also takes "²", which int() refuses
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if unusable."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
            if moment.tzinfo is None:  # asctime's form and "-0000": GMT, as every HTTP date
                moment = moment.replace(tzinfo=UTC)
            seconds = moment.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        return max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _parse_json(body: bytes) -> object:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:  # also for invalid UTF-8 and for nesting too deep
        return None


def _first_row(document: object) -> object:
    data = document.get("data") if isinstance(document, dict) else None
    if isinstance(data, list) and data:
        return data[0]
    return None


def _is_error(value: object) -> bool:
    return isinstance(value, dict) and (value.get("status") == "error" or "code" in value)


def _error_effect(
    kind: JobKind, http_status: int, error: object
) -> tuple[Effect, str | None, Observation | None]:
    assert isinstance(error, dict)
    code = code_of(error.get("code"), f"http_{http_status}")
    return _code_effect(kind, http_status, code, error.get("details")), code, None


def code_of(value: object, fallback: str) -> str:
    """A server's error code as our events give it: `fallback` if it is no text, UNRECOGNISED
    unless it is a code as Zoho writes them (words: INVALID_TOKEN, invalid_client, Access
    Denied). A server that echoes what it was sent (a proxy, a gateway) must not get a token or
    secret, or a part, a re-encoding or the upper case of one, into every poll's line: the
    scrubbing of every line finds only whole secrets, and Zoho's all hold digits."""
    if not isinstance(value, str) or not value:
        return fallback
    return value if _CODE.fullmatch(value) else UNRECOGNISED


def _code_effect(kind: JobKind, http_status: int, code: str, details: object) -> Effect:
    """A 5xx says the server failed and a 429 that the org is over its limit, whatever the body
    names: such an answer can neither end a job nor the watcher, nor escape the org-wide pause.
    Otherwise the code decides, where we know it."""
    if http_status >= 500 or http_status == 429:
        return effect_of_http_status(http_status)
    if code == INVALID_DATA and _about_param(details, kind.id_param):
        return Effect.NOT_FOUND
    known = ERRORS.get(code)
    return effect_of_http_status(http_status) if known is None else known.effect


def _about_param(details: object, param: str) -> bool:
    """Whether an INVALID_DATA is about the job id: unless it names another parameter. The id is
    the only value a status request carries besides the module, which has codes of its own;
    Zoho's example names it (`param_name`), while its schema allows no details at all."""
    if not isinstance(details, dict):
        return True
    named = details.get("param_name", details.get("api_name"))
    return named is None or named == param


def _status_row(kind: JobKind, row: object) -> tuple[Effect, str | None, Observation | None]:
    if not isinstance(row, dict):
        return Effect.TRANSIENT, "malformed_response", None
    status = row.get(kind.status_field)
    if not isinstance(status, str) or status not in kind.statuses:
        return Effect.TRANSIENT, "unknown_status", None
    # Counts are ints; anything else (missing, bool, text, beyond 64 bits) is reported as
    # unknown, not guessed. `type` rather than isinstance: a bool is an int subclass.
    counts = {
        ours: value if type(value := row.get(theirs)) is int and 0 <= value < _MAX_COUNT else None
        for ours, theirs in kind.counts.items()
    }
    return Effect.OBSERVED, None, Observation(status, counts)


def failure_kind(exc: BaseException) -> str:
    """A short, secret-free name for what went wrong on the wire (never the exception text)."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "truncated_response"
    # None of these heals by waiting, and each looks like any refused connection otherwise: a
    # missing CA bundle or an intercepting proxy, a proxy that refuses or cannot be reached, a
    # host name that does not resolve.
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls_error"
    if isinstance(exc, aiohttp.ClientHttpProxyError | aiohttp.ClientProxyConnectionError):
        return "proxy_error"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "dns_error"
    if isinstance(exc, aiohttp.ClientConnectionError):
        return "connection_error"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_response"
    return "client_error"
