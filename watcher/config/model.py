"""What a valid configuration says, and the error that lists what is wrong with an invalid one.

Secrets are held as `Secret`, whose repr shows nothing, and every message that may quote a
configured value passes through `redact`: a token put under the wrong key must not be echoed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# Problems told per file (and per jobs_dir); the rest are counted.
PROBLEMS_SHOWN = 100
# Shorter secrets are not masked in messages or events: they would mangle ordinary words (and
# the JSON of every event line), and no real Zoho credential is that short.
MASKED_LENGTH = 8


@dataclass(frozen=True)
class Secret:
    """A secret string whose repr/str never show the value, so logging a setting cannot leak it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class AuthSettings:
    access_token: Secret | None
    refresh_token: Secret | None
    client_id: Secret | None
    client_secret: Secret | None
    accounts_url: str | None
    # Zoho blocks a client that refreshes too often, so a throttled or failed refresh waits.
    refresh_backoff_initial: float = 30.0
    refresh_backoff_max: float = 600.0

    @property
    def refreshes(self) -> bool:
        """True when tokens come from refreshing (the trio is set) rather than a fixed token."""
        return self.refresh_token is not None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, so output can be scrubbed of them."""
        candidates = (self.access_token, self.refresh_token, self.client_id, self.client_secret)
        return tuple(secret.reveal() for secret in candidates if secret is not None)


@dataclass(frozen=True)
class ZohoSettings:
    api_domain: str | None
    api_version: str
    data_center: str | None
    auth: AuthSettings


@dataclass(frozen=True)
class PollingSettings:
    interval: float = 10.0
    max_interval: float = 300.0
    rate_limit: int = 10
    rate_period: float = 1.0
    max_concurrency: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    request_timeout: float = 30.0
    not_found_attempts: int = 3
    schedule: str = "adaptive"
    credits_per_day: int | None = None
    credits_floor: int = 1000


class JobSpec(NamedTuple):
    """One job to watch. A tuple: it keys every per-job dict and the scheduler's queue, and a
    tuple is made, hashed and compared in C, where a frozen dataclass runs Python each time."""

    module: str
    job_id: str


@dataclass(frozen=True)
class HttpSettings:
    """Where the health and metrics listener binds; without a port there is no listener."""

    host: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class Config:
    zoho: ZohoSettings
    polling: PollingSettings
    jobs: tuple[JobSpec, ...]
    reload_interval: float = 5.0
    jobs_dir: Path | None = None
    state_path: Path | None = None
    retention: float = 168 * 3600.0
    progress_events: bool = True
    http: HttpSettings = field(default_factory=HttpSettings)
    source: Path | None = None  # the file it was loaded from, so a reload knows what to re-read
    # What load_all read, hashed (see Fingerprint); not part of what the config says.
    fingerprint: bytes | None = field(default=None, compare=False)


class ConfigError(Exception):
    """The problems found, each one line: '<source>:<line>: <key.path>: <problem>'.

    `shown` are the first ones; `more` were found beyond them, and `problems` ends with a line
    that counts them: a systematic mistake in ten thousand jobs needs a few examples, not ten
    thousand lines.
    """

    def __init__(
        self, shown: Iterable[str], *, more: int = 0, source: str = "", jobs_dir: Path | None = None
    ) -> None:
        self.shown = tuple(shown)
        self.jobs_dir = jobs_dir  # where jobs files were read, when they were the trouble
        self.found = len(self.shown) + more
        counted = (f"{source}: ... and {more} more problems",) if more else ()
        self.problems = (*self.shown, *counted)
        super().__init__("\n".join(self.problems))


def redact(problems: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """`problems` with every secret long enough to be unambiguous replaced by ***."""
    maskable = {text for text in secrets if len(text) >= MASKED_LENGTH}
    maskable |= {repr(text)[1:-1] for text in maskable}  # as a message quotes it, escaped
    longest_first = sorted(maskable, key=len, reverse=True)  # a secret may contain another
    redacted = []
    for problem in problems:
        for secret in longest_first:
            problem = problem.replace(secret, "***")
        redacted.append(problem)
    return redacted
