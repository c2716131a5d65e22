"""Random faults for soak runs, drawn from one seeded generator so that a run can be replayed."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from watcher.simulator.jobs import Grant
from watcher.simulator.steps import FIXED, NOT_FOUND_SHAPES, Step, parse_step

_SERVER_ERRORS = ("500", "502", "503", "504")
_BAD_BODIES = ("malformed", "badstatus", "nodata")
# Chaos only expires a token that has served this many requests. The watcher retries a refused
# request once with a fresh token; a fresh token refused at once is a real failure, not expiry.
TOKEN_MIN_USES = 50


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


class ChaosState:
    """Chaos under way: the random draws, a 429 burst in progress, and what was injected."""

    def __init__(self, chaos: Chaos) -> None:
        self._chaos = chaos
        self._rng = random.Random(chaos.seed)
        self._burst_left = 0
        self._not_found_since_status: set[tuple[str, str]] = set()
        self.faults: Counter[str] = Counter()

    def fault(self, job: tuple[str, str], known: bool) -> Step | None:
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

    def _inject(self, kind: str, job: tuple[str, str], known: bool) -> Step | None:
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
        return FIXED[self._rng.choice(choices)]

    def _too_many(self) -> Step:
        self.faults["429"] += 1
        return parse_step("429:1" if self._rng.random() < self._chaos.retry_after else "429")

    def not_found_shape(self) -> Step:
        return FIXED[self._rng.choice(NOT_FOUND_SHAPES)]

    def delivered_status(self, job: tuple[str, str]) -> None:
        self._not_found_since_status.discard(job)

    def expires(self, grant: Grant) -> bool:
        if grant.used < TOKEN_MIN_USES or self._rng.random() >= self._chaos.token_expiry:
            return False
        self.faults["token_expiry"] += 1
        return True

    def token_step(self) -> str:
        if self._rng.random() >= self._chaos.slow_refresh:
            return "ok"
        self.faults["slow_refresh"] += 1
        return f"slow:{self._chaos.refresh_delay}"
