"""Everything Zoho-specific, as data: endpoints, answer shapes, status names, error codes.

The rest of the watcher speaks in `Effect`s and outcomes. Supporting another Zoho asynchronous job
(mass delete, mass convert, ...) means adding a `JobKind` row here, not a new code path: its URL,
its status names, and which of its counts measure progress (tests/kinds.py holds one). The config
can name only MASS_UPDATE so far; the first other row to ship brings a `kind` key for jobs.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class Effect(enum.Enum):
    """What an answer from Zoho means for the job that was polled."""

    OBSERVED = "observed"  # a status row: record it
    NOT_FOUND = "not_found"  # Zoho does not know the job (yet?)
    REJECTED = "rejected"  # Zoho refuses the request for good: stop tracking
    AUTH = "auth"  # the access token is not (or no longer) accepted
    RATE_LIMITED = "rate_limited"  # the org's limit is hit: everybody waits
    TRANSIENT = "transient"  # try again later with backoff


# Answers that show Zoho served the request: the org is within its limits. (A 401 or a 5xx says
# nothing about them.)
SERVED = frozenset({Effect.OBSERVED, Effect.NOT_FOUND, Effect.REJECTED})


@dataclass(frozen=True)
class JobKind:
    """One kind of Zoho asynchronous job and how its status answer reads.

    `terminal` maps a final status to the outcome the watcher reports; `counts` maps the names the
    watcher uses in its events to Zoho's field names. Of those names, `processed` add up to the
    records the job has dealt with so far, well or not (what its progress and pace are measured
    in), `total` is all of its records, and `failed` the ones that failed: a job that completes
    with any is reported as a warning.
    """

    path: str  # formatted with version and module, each already quoted as a path segment
    id_param: str
    status_field: str
    statuses: frozenset[str]
    terminal: Mapping[str, str]
    counts: Mapping[str, str]
    processed: tuple[str, ...]
    total: str
    failed: str

    def __post_init__(self) -> None:
        """A row that names a status or count it does not define would quietly never end a job
        or never show progress: refused when the row is written, not found in production."""
        if not self.terminal.keys() <= self.statuses:
            raise ValueError(f"terminal statuses {sorted(self.terminal)} not all in statuses")
        roles = {*self.processed, self.total, self.failed}
        if not self.processed or not roles <= self.counts.keys():
            raise ValueError(f"counts {sorted(roles)} not all in counts {sorted(self.counts)}")


MASS_UPDATE = JobKind(
    path="/crm/{version}/{module}/actions/mass_update",
    id_param="job_id",
    status_field="Status",
    # As Zoho's OpenAPI description lists them (its HTML pages name only four): QUEUED waits
    # like SCHEDULED, SUSPENDED is paused; neither has ended.
    statuses=frozenset({"SCHEDULED", "QUEUED", "RUNNING", "SUSPENDED", "COMPLETED", "FAILED"}),
    terminal={"COMPLETED": "completed", "FAILED": "failed"},
    counts={
        "failed_count": "Failed_Count",
        "updated_count": "Updated_Count",
        "not_updated_count": "Not_Updated_Count",
        "total_count": "Total_Count",
    },
    processed=("updated_count", "failed_count"),
    total="total_count",
    failed="failed_count",
)

# Zoho's data centres: (accounts server, API domain). Tokens are issued per data centre.
DATA_CENTERS: Mapping[str, tuple[str, str]] = {
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    "cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    "uk": ("https://accounts.zoho.uk", "https://www.zohoapis.uk"),
}
CENTRE_OF_ACCOUNTS = {accounts: centre for centre, (accounts, _) in DATA_CENTERS.items()}
CENTRE_OF_API = {api: centre for centre, (_, api) in DATA_CENTERS.items()}
# Without a data centre, refresh mode still needs somewhere to refresh; Zoho's default is the US,
# and requests go to its API when neither the config nor Zoho's token answer names a domain.
DEFAULT_DATA_CENTER = "us"
DEFAULT_API_DOMAIN = DATA_CENTERS[DEFAULT_DATA_CENTER][1]

AUTH_HEADER = "Authorization"
AUTH_SCHEME = "Zoho-oauthtoken"


@dataclass(frozen=True)
class ErrorCode:
    """A documented error code: the HTTP status Zoho sends it with, and what it means to us."""

    http_status: int
    effect: Effect


# Documented error codes. A code not listed here falls back to its HTTP status (see
# `effect_of_http_status`): an undocumented 4xx is retried with backoff rather than abandoning a
# job the user cares about.
ERRORS: Mapping[str, ErrorCode] = {
    "INVALID_MODULE": ErrorCode(400, Effect.REJECTED),
    "MANDATORY_NOT_FOUND": ErrorCode(400, Effect.REJECTED),
    "INVALID_URL_PATTERN": ErrorCode(404, Effect.REJECTED),
    "NO_PERMISSION": ErrorCode(403, Effect.REJECTED),
    "AUTHORIZATION_FAILED": ErrorCode(400, Effect.REJECTED),
    "OAUTH_SCOPE_MISMATCH": ErrorCode(401, Effect.REJECTED),
    "INVALID_REQUEST_METHOD": ErrorCode(400, Effect.REJECTED),
    "NOT_SUPPORTED": ErrorCode(400, Effect.REJECTED),  # the module has no mass update
    "INVALID_TOKEN": ErrorCode(401, Effect.AUTH),
    "AUTHENTICATION_FAILURE": ErrorCode(401, Effect.AUTH),
    "INVALID_OAUTHTOKEN": ErrorCode(401, Effect.AUTH),  # the name in v4-v8's token-validity docs
    "TOO_MANY_REQUESTS": ErrorCode(429, Effect.RATE_LIMITED),
    "INTERNAL_ERROR": ErrorCode(500, Effect.TRANSIENT),
    "NOT_FOUND": ErrorCode(404, Effect.NOT_FOUND),
}

# 400 INVALID_DATA is "not found" unless it names a parameter other than the job id.
INVALID_DATA = "INVALID_DATA"

# The header Zoho documents nowhere but that any HTTP server may send with 429 or 503.
RETRY_AFTER = "Retry-After"
# Sent once half of the org's daily API credits are used: how many are left.
CREDITS_REMAINING = "X-API-CREDITS-REMAINING"


def effect_of_http_status(status: int) -> Effect:
    """The fallback meaning of an HTTP status when the body names no code we know.

    Anything unrecognised is transient: retrying with backoff costs a few calls, while giving up
    would abandon a job the user is waiting on.
    """
    if status == 429:
        return Effect.RATE_LIMITED
    if status == 401:
        return Effect.AUTH
    return Effect.TRANSIENT


# OAuth: the refresh-token grant at the accounts server of the org's data centre.
OAUTH_TOKEN_PATH = "/oauth/v2/token"
# Zoho issues at most this many access tokens per refresh token in this many seconds, and blocks
# token creation for the rest of the ten minutes past that.
OAUTH_TOKENS_PER_WINDOW = 10
OAUTH_TOKEN_WINDOW_S = 600.0
# Token errors that waiting cannot heal: the refresh token was revoked, or the client is wrong.
# Anything else (notably the throttle answer "Access Denied") is retried after a backoff.
OAUTH_PERMANENT_ERRORS = frozenset({"invalid_code", "invalid_client", "invalid_client_secret"})
