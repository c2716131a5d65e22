"""The watcher's lifecycle: start, poll every job until it ends, stop cleanly.

Data flows one way: config → scheduler → client → job state → events. This module only wires
those together and decides when the whole run is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
from collections import Counter

import aiohttp

from watcher.auth import AuthFailed, FixedToken, RefreshingToken, TokenSource
from watcher.classify import Answer
from watcher.client import ZohoClient
from watcher.config import Config, JobSpec
from watcher.events import EventLog
from watcher.job import JobState, apply_answer
from watcher.ratelimit import RequestGate
from watcher.scheduler import Scheduler
from watcher.zoho_api import DEFAULT_API_DOMAIN, MASS_UPDATE, Effect, JobKind

EXIT_OK = 0
EXIT_JOB_NOT_COMPLETED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3


class Watcher:
    """Follows the configured jobs. `run` returns the process exit code; `stop` may be called from
    a signal handler at any time."""

    def __init__(
        self,
        config: Config,
        log: EventLog,
        *,
        exit_when_done: bool = False,
        kind: JobKind = MASS_UPDATE,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._log = log
        self._exit_when_done = exit_when_done
        self._kind = kind
        self._rng = rng or random.Random()
        self._jobs: dict[JobSpec, JobState] = {}
        self._outcomes: Counter[str] = Counter()
        self._finished = asyncio.Event()
        self._exit_code = EXIT_OK
        self._reason = "signal"
        # Built by _watch once a token is in hand; only _watch's own tasks use them.
        self._gate: RequestGate
        self._client: ZohoClient
        self._scheduler: Scheduler[JobSpec]

    def stop(self) -> None:
        """Stop taking new work; `run` cancels what is in flight and returns 0."""
        self._end("signal", EXIT_OK)

    async def run(self) -> int:
        timeout = aiohttp.ClientTimeout(total=self._config.polling.request_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._started()
            watching = asyncio.create_task(self._watch(session))
            ending = asyncio.create_task(self._finished.wait())
            await asyncio.wait({watching, ending}, return_when=asyncio.FIRST_COMPLETED)
            for task in (watching, ending):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._stopped()
        return self._exit_code

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        """Get a token before the first poll, then serve the jobs until the run ends."""
        tokens = self._token_source(session)
        try:
            await tokens.token()
        except AuthFailed as exc:
            self._auth_failed(exc.code)
            return
        zoho, polling = self._config.zoho, self._config.polling
        api_domain = zoho.api_domain or tokens.api_domain or DEFAULT_API_DOMAIN
        self._gate = RequestGate(polling.rate_limit, polling.rate_period, polling.max_concurrency)
        self._client = ZohoClient(
            session, self._gate, tokens, api_domain, zoho.api_version, self._kind
        )
        loop = asyncio.get_running_loop()
        self._scheduler = Scheduler(self._poll, polling.max_concurrency, loop.time)
        for spec in self._config.jobs:
            self._add(spec, loop.time())
        self._check_done()
        await self._scheduler.run()

    def _token_source(self, session: aiohttp.ClientSession) -> TokenSource:
        auth = self._config.zoho.auth
        if auth.access_token is not None:
            return FixedToken(auth.access_token)
        return RefreshingToken(
            session,
            auth,
            self._log.emit,
            lambda token: self._log.add_secrets([token]),
            self._rng,
        )

    def _add(self, spec: JobSpec, now: float) -> None:
        self._jobs[spec] = JobState(spec, added_at=now)
        self._log.log("info", "job.added", module=spec.module, job_id=spec.job_id)
        self._scheduler.schedule(spec, 0.0)

    async def _poll(self, spec: JobSpec) -> None:
        job = self._jobs.get(spec)
        if job is None or job.outcome is not None:
            return
        try:
            answer = await self._client.poll(spec)
        except AuthFailed as exc:
            self._auth_failed(exc.code)
            return
        except Exception as exc:  # a bug of ours must not stop the other jobs: retry this one
            answer = Answer(Effect.TRANSIENT, None, code=f"internal_error:{type(exc).__name__}")
        now = asyncio.get_running_loop().time()
        decision = apply_answer(job, answer, self._kind, self._config.polling, now, self._rng)
        for event in decision.events:
            self._log.emit(event)
        if decision.pause_all_for is not None:
            self._gate.pause(decision.pause_all_for)
        if decision.fatal:
            self._end("auth_failed", EXIT_AUTH)
        elif decision.next_poll_in is not None:
            self._scheduler.schedule(spec, decision.next_poll_in)
        else:
            self._outcomes[str(job.outcome)] += 1
            self._check_done()

    def _auth_failed(self, code: str) -> None:
        """Credentials Zoho will never accept: say so once and end the run with exit code 3."""
        if not self._finished.is_set():
            self._log.log("error", "auth.failed", error=code)
        self._end("auth_failed", EXIT_AUTH)

    def _check_done(self) -> None:
        if self._exit_when_done and self._outcomes.total() == len(self._jobs):
            failed = self._outcomes.total() != self._outcomes["completed"]
            self._end("all_jobs_ended", EXIT_JOB_NOT_COMPLETED if failed else EXIT_OK)

    def _end(self, reason: str, exit_code: int) -> None:
        if not self._finished.is_set():
            self._reason, self._exit_code = reason, exit_code
            self._finished.set()

    def _started(self) -> None:
        zoho, polling = self._config.zoho, self._config.polling
        self._log.log(
            "info",
            "watcher.started",
            jobs=len(self._config.jobs),
            api_domain=zoho.api_domain,
            api_version=zoho.api_version,
            interval_s=polling.interval,
            rate_limit=polling.rate_limit,
            rate_period_s=polling.rate_period,
            max_concurrency=polling.max_concurrency,
            exit_when_done=self._exit_when_done,
        )

    def _stopped(self) -> None:
        unfinished = len(self._jobs) - self._outcomes.total()
        self._log.log(
            "info",
            "watcher.stopped",
            reason=self._reason,
            exit_code=self._exit_code,
            outcomes=dict(self._outcomes),
            unfinished=unfinished,
        )


async def serve(watcher: Watcher) -> int:
    """Run until done or signalled: SIGTERM and SIGINT both mean a graceful stop."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, watcher.stop)
    return await watcher.run()
