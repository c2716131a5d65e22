"""The watcher's Prometheus metrics, rendered by prometheus-client.

Each `Metrics` owns its registry rather than using the library's global one: tests and the demo run
several watchers in one process, and global collectors would clash (duplicate names) or mix their
numbers. Every label value the watcher knows of is created up front, so a series reads 0 from the
first scrape instead of appearing only once something happens (which breaks `rate()` and alerts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from watcher.credits import still_news
from watcher.zoho_api import MASS_UPDATE, Effect

JOB_STATUSES = (*sorted(MASS_UPDATE.statuses), "unknown", "not_found", "rejected")
POLL_RESULTS = tuple(effect.value for effect in Effect)
TOKEN_RESULTS = ("ok", "failed")
RELOAD_RESULTS = ("ok", "invalid")
# From a fast loopback answer (5 ms) to the longest request timeout worth having (30 s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """What the watcher has done so far, as counters and gauges; `render` is the scrape body."""

    def __init__(
        self,
        job_counts: Callable[[], Mapping[str, int]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`job_counts`, when given, is asked at each scrape: counting there costs nothing
        between scrapes, however many jobs there are."""
        # A `_created` timestamp beside every counter and histogram: series nobody asked for.
        # The switch is the library's, for the whole process.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # not annotated upstream
        self._job_counts = job_counts
        self._clock = clock
        self._credits_reading: tuple[float, int] | None = None  # (seen at, remaining)
        self.registry = CollectorRegistry()
        self._jobs = Gauge(
            "zoho_watcher_jobs",
            "Tracked jobs by the last status seen",
            ["status"],
            registry=self.registry,
        )
        self._polls = Counter(
            "zoho_watcher_polls_total",
            "Status polls by how they were classified",
            ["result"],
            registry=self.registry,
        )
        self._request_seconds = Histogram(
            "zoho_watcher_request_duration_seconds",
            "Time from sending a status request to having its answer",
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._rate_limit_wait = Counter(
            "zoho_watcher_rate_limit_wait_seconds_total",
            "Time requests waited for the shared rate limit, the credit budget or a 429 pause",
            registry=self.registry,
        )
        self._token_refreshes = Counter(
            "zoho_watcher_token_refreshes_total",
            "Access token refreshes by result",
            ["result"],
            registry=self.registry,
        )
        self._config_reloads = Counter(
            "zoho_watcher_config_reloads_total",
            "Configuration reloads by result",
            ["result"],
            registry=self.registry,
        )
        self._credits = Gauge(
            "zoho_watcher_api_credits_remaining",
            "API credits Zoho last reported as remaining (NaN when it has not said for an hour)",
            registry=self.registry,
        )
        self._credits.set_function(self._credits_now)
        self._job_statuses = dict.fromkeys(JOB_STATUSES)
        self.set_job_counts({})
        # Looking a label's child up costs more than counting with it: done once, not per poll.
        self._polls_by_result = {result: self._polls.labels(result) for result in POLL_RESULTS}
        for collector, values in (
            (self._token_refreshes, TOKEN_RESULTS),
            (self._config_reloads, RELOAD_RESULTS),
        ):
            for value in values:
                collector.labels(value)

    def set_job_counts(self, counts: Mapping[str, int]) -> None:
        """Replace all job counts: a status no job has any more must read 0, not its old count."""
        self._job_statuses.update(dict.fromkeys(counts))
        for status in self._job_statuses:
            self._jobs.labels(status=status).set(counts.get(status, 0))

    def poll_done(self, result: str, seconds: float | None) -> None:
        """Count one poll; `seconds` is None when no request went out (e.g. no token to send)."""
        polls = self._polls_by_result.get(result) or self._polls.labels(result)
        polls.inc()
        if seconds is not None:
            self._request_seconds.observe(seconds)

    def rate_limit_waited(self, seconds: float) -> None:
        self._rate_limit_wait.inc(seconds)

    def token_refreshed(self, result: str) -> None:
        self._token_refreshes.labels(result=result).inc()

    def config_reloaded(self, result: str) -> None:
        self._config_reloads.labels(result=result).inc()

    def credits_remaining(self, value: int, at: float | None = None) -> None:
        """What Zoho said, seen now or at `at` on the same clock (a reading kept from before a
        restart, which the budget still heeds)."""
        self._credits_reading = (self._clock() if at is None else at, value)

    def _credits_now(self) -> float:
        """NaN, not 0, when nothing is known: "no credits left" is an alarm. Zoho says only while
        more than half the day's credits are used, so a reading an hour old is no longer news
        (the credit budget stops heeding it then too) and must not keep an alert firing."""
        remaining = still_news(self._credits_reading, self._clock())
        return math.nan if remaining is None else float(remaining)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format; `generate_latest` writes version 0.0.4 of it, so say so."""
        if self._job_counts is not None:
            self.set_job_counts(self._job_counts())
        return generate_latest(self.registry), CONTENT_TYPE_PLAIN_0_0_4
