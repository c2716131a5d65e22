"""The watcher's lifecycle: start, poll every job until it ends, follow config edits, stop cleanly.

Data flows one way: config → scheduler → client → job state → events. This module wires those
together, decides when the run is over, and owns the order of shutdown: stop polling, flush the
state, then say `watcher.stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from watcher import collector
from watcher.auth import REFRESH_LIMIT, AuthFailed, FixedToken, RefreshingToken, TokenSource
from watcher.backoff import backoff_delay
from watcher.classify import Answer
from watcher.client import ZohoClient
from watcher.clock import to_monotonic
from watcher.config import Config, ConfigError, JobSpec
from watcher.credits import DAY_S, REMAINING_TTL_S, CreditBudget, Demand, Pace
from watcher.events import Event, EventLog
from watcher.job import Decision, JobState, apply_answer
from watcher.ratelimit import RequestGate
from watcher.reload import ConfigWatcher, check_gap
from watcher.schedule import resume_delay
from watcher.scheduler import Scheduler
from watcher.state import StateError, StateStore, record_view
from watcher.tracking import Tracker
from watcher.zoho_api import DEFAULT_API_DOMAIN, MASS_UPDATE, SERVED, Effect

if TYPE_CHECKING:  # imported when a listener is configured: most runs never pay for aiohttp.web
    from watcher.http import Health, HttpServer
    from watcher.metrics import Metrics

EXIT_OK = 0
EXIT_JOB_NOT_COMPLETED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3

PRUNE_EVERY_S = 3600.0
# A due job this overdue with no worker busy means the scheduler itself has stopped serving.
STUCK_AFTER_S = 60.0
PACE_CHECK_S = 60.0  # how often a fallen stretch is looked for (see `Pace`)
# How long a stop waits for event lines a stalled reader holds back (stops end within 5 s).
LINES_OUT_S = 2.0


class StartupError(Exception):
    """Something the watcher needs at start is unusable (state file, HTTP port): one line."""


@dataclass
class _Runtime:
    """What exists once a token is in hand: the gate, the client and the scheduler, and the
    credit bookkeeping that stretches every job's gap alike when the budget is tight."""

    gate: RequestGate
    client: ZohoClient
    scheduler: Scheduler[JobSpec]
    budget: CreditBudget
    demand: Demand
    pace: Pace[JobSpec]
    clock: Callable[[], float]  # the loop's monotonic clock, the scheduler's too

    def unplan(self, spec: JobSpec) -> None:
        """`spec` will not be polled again: neither its pace nor its plan counts any more."""
        self.demand.drop(spec)
        self.pace.drop(spec)


class Watcher:
    """Follows the configured jobs. `run` returns the process exit code; `stop` and `reload` may
    be called from signal handlers at any time."""

    def __init__(
        self,
        config: Config,
        log: EventLog,
        *,
        exit_when_done: bool = False,
        outcomes_decide_exit: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        self._config = config
        self._started_with = config  # what the settings only a restart applies still come from
        self._log = log
        self._exit_when_done = exit_when_done
        # Off where failures are expected (the demo): the exit code, in `watcher.stopped` too,
        # then says only whether the watcher itself ran well.
        self._outcomes_decide_exit = outcomes_decide_exit
        self._kind = MASS_UPDATE  # the one kind of job the config can name so far
        self._rng = rng or random.Random()
        # Counted only where they can be read: with no HTTP listener nobody can scrape them.
        self._metrics: Metrics | None = None
        self._finished = asyncio.Event()
        self._reload_requested = asyncio.Event()
        self._exit_code = EXIT_OK
        self._reason = "signal"
        self._tracker: Tracker
        self._runtime: _Runtime | None = None  # built once there is a first token

    def stop(self) -> None:
        """Stop taking new work; `run` cancels what is in flight, flushes state, returns 0."""
        self._end("signal", EXIT_OK)

    def reload(self) -> None:
        """Re-read the config files now (SIGHUP), and report a bad edit at once."""
        self._reload_requested.set()

    async def run(self) -> int:
        """Raises StartupError before anything is watched if the state file or port is unusable."""
        store = await self._open_store()
        self._log.when_reader_gone(lambda: self._end("output_closed", EXIT_OK))
        loop = asyncio.get_running_loop()
        self._tracker = Tracker(self._log, store, time.time, loop.time, self._kind)
        try:
            started, server = await self._until_stopped(self._start_http())
            try:
                if started:  # not stopped on the way: nothing said started, nothing to stop
                    await self._serve(server)
            finally:
                if server is not None:
                    await server.stop()
                await self._lines_out()
        finally:
            if store is not None:
                try:
                    await store.close()
                except StateError as exc:
                    self._last_writes_failed(exc)
        self._stopped()
        return self._exit_code

    async def _until_stopped(
        self, starting: Awaitable[HttpServer | None]
    ) -> tuple[bool, HttpServer | None]:
        """(True, what `starting` gives), unless a stop comes first: then it is cancelled (a
        name lookup that hangs, say) and the run ends as stopped, (False, None)."""
        started = asyncio.ensure_future(starting)
        stopping = asyncio.ensure_future(self._finished.wait())
        await asyncio.wait({started, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if started.done():
            return True, started.result()
        started.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            server = await started
            if server is not None:  # it bound as it was cancelled
                await server.stop()
        return False, None

    async def _lines_out(self) -> None:
        """Give the event lines a stalled reader holds back a moment to go out before the state
        file closes, so that what they record is saved as said; a stop still ends in time."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINES_OUT_S):
                await self._log.drained()

    async def _open_store(self) -> StateStore | None:
        if self._config.state_path is None:
            return None
        try:
            return await StateStore.open(self._config.state_path)
        except StateError as exc:
            raise StartupError(str(exc)) from None

    async def _start_http(self) -> HttpServer | None:
        settings = self._config.http
        if settings.port is None:
            return None
        from watcher.http import HttpServer
        from watcher.metrics import Metrics

        self._metrics = Metrics(self._job_counts)
        if (kept := self._kept_reading()) is not None:  # shown from the start, not the token
            self._metrics.credits_remaining(kept[1], at=kept[0])
        server = HttpServer(
            settings.host, settings.port, self._metrics, self._health, self._jobs_view
        )
        try:
            await server.start()
        except OSError as exc:
            where = _host_port(settings.host, settings.port)
            raise StartupError(f"http: cannot listen on {where}: {exc.strerror or exc}") from None
        return server

    async def _serve(self, server: HttpServer | None) -> None:
        timeout = aiohttp.ClientTimeout(total=self._config.polling.request_timeout)
        # Zoho's API sets no cookie we need; not keeping a jar saves work on every answer.
        jar = aiohttp.DummyCookieJar()
        # Host names resolved without threads (c-ares, through aiodns): a lookup in a thread
        # cannot be cancelled, and the interpreter waits for it at exit, so a DNS server that
        # does not answer would hold a stopped watcher for as long as its resolver retries,
        # past `docker stop`'s grace, into a SIGKILL.
        connector = aiohttp.TCPConnector(resolver=aiohttp.AsyncResolver())
        async with aiohttp.ClientSession(
            timeout=timeout, cookie_jar=jar, connector=connector
        ) as session:
            self._started(server)
            watching = asyncio.create_task(self._watch(session))
            ending = asyncio.create_task(self._finished.wait())
            await asyncio.wait({watching, ending}, return_when=asyncio.FIRST_COMPLETED)
            for task in (watching, ending):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _watch(self, session: aiohttp.ClientSession) -> None:
        """Get a token before the first poll, then serve the jobs until the run ends."""
        tokens = self._token_source(session)
        try:
            await self._watch_with(session, tokens)
        finally:
            await tokens.close()  # while the session is still open

    async def _watch_with(self, session: aiohttp.ClientSession, tokens: TokenSource) -> None:
        """The jobs first, as configured and as the state file remembers them: a run with none
        left to poll (`--exit-when-done`, every job ended before a restart) ends on what it
        remembers, with no token to ask for. Then the config followed, a token, and the polls.
        """
        try:
            with collector.paused():
                await self._tracker.track(self._config.jobs)
                self._tracker.forget_missing(self._config.jobs)
        except StateError as exc:
            self._state_failed(exc)
            return
        collector.settle()
        self._check_done()
        if self._finished.is_set():
            return
        async with asyncio.TaskGroup() as group:
            # Followed from now, not from the first token: that can take minutes of backoff
            # (the accounts server down, or Zoho's limit on tokens), and an edit or SIGHUP
            # meanwhile must still be answered, a removed job removed, a bad edit reported.
            group.create_task(self._follow_config())
            group.create_task(self._poll_when_authorised(session, tokens))

    async def _poll_when_authorised(
        self, session: aiohttp.ClientSession, tokens: TokenSource
    ) -> None:
        """A token, then the polls: of the jobs tracked by then, with any edit meanwhile."""
        try:
            await tokens.token()
        except AuthFailed as exc:
            self._auth_failed(exc.code)
            return
        except StateError as exc:
            self._state_failed(exc)
            return
        self._runtime = self._build(session, tokens)
        # Every job tracked by now that has not ended, edits made meanwhile included: none of
        # them has been polled yet.
        jobs = self._tracker.jobs
        self._poll_first([spec for spec, job in jobs.items() if job.outcome is None])
        async with asyncio.TaskGroup() as group:
            group.create_task(self._runtime.scheduler.run())
            group.create_task(self._prune())
            group.create_task(self._keep_pace())

    def _build(self, session: aiohttp.ClientSession, tokens: TokenSource) -> _Runtime:
        """The runtime, once there is a first token: from what the run started with for what
        only a restart applies (`_needs_restart`), even if an edit came while it waited."""
        zoho, polling = self._started_with.zoho, self._config.polling
        api_domain = zoho.api_domain or tokens.api_domain or DEFAULT_API_DOMAIN
        loop = asyncio.get_running_loop()
        store = self._tracker.store
        wall, now = time.time(), loop.time()
        budget = CreditBudget(
            polling.credits_per_day,
            polling.credits_floor,
            spent_before=() if store is None else to_monotonic(store.spent, wall, now, DAY_S),
            on_spend=None if store is None else lambda: store.save_spent(time.time()),
        )
        if (kept := self._kept_reading()) is not None:
            budget.remaining(*kept)  # the drop it may start was said already
        gate = RequestGate(
            polling.rate_limit,
            polling.rate_period,
            budget,
            self._metrics.rate_limit_waited if self._metrics is not None else None,
        )
        client = ZohoClient(
            session, gate, tokens, api_domain, zoho.api_version, self._kind, heard=self._heard
        )
        concurrency = self._started_with.polling.max_concurrency
        scheduler = Scheduler(self._poll, concurrency, loop.time)
        return _Runtime(gate, client, scheduler, budget, Demand(), Pace(), loop.time)

    def _kept_reading(self) -> tuple[float, int] | None:
        """What Zoho last said of the org's credits before a restart, if it still holds: when
        (on the loop's clock) and how many remained."""
        store = self._tracker.store
        if store is None or store.reading is None:
            return None
        at, remaining = store.reading
        now = asyncio.get_running_loop().time()
        seen = to_monotonic((at,), time.time(), now, REMAINING_TTL_S)
        return (seen[0], remaining) if seen else None

    def _token_source(self, session: aiohttp.ClientSession) -> TokenSource:
        auth = self._config.zoho.auth
        if auth.access_token is not None:
            return FixedToken(auth.access_token)
        store = self._tracker.store
        return RefreshingToken(
            session,
            auth,
            self._auth_event,
            self._log.add_token,
            self._rng,
            stored=store.token if store is not None else None,
            persist=store.save_token if store is not None else None,
        )

    def _auth_event(self, event: Event) -> None:
        self._log.emit(event)
        if self._metrics is not None and event.fields.get("error") != REFRESH_LIMIT:  # a request
            ok = event.name == "auth.token_refreshed"
            self._metrics.token_refreshed("ok" if ok else "failed")

    async def _track(self, specs: tuple[JobSpec, ...]) -> None:
        self._poll_first(await self._tracker.track(specs))

    def _poll_first(self, specs: list[JobSpec]) -> None:
        """A new job at once; one the state file remembers, when its last run planned it.

        Each counts in the credit demand from now on: with its plan's gap, or with `interval`
        until its first answer sets one. Otherwise the first jobs polled after a start would
        find the demand small and take short gaps: the budget would not stretch them alike.
        """
        if self._runtime is None:  # no token yet: polled first once there is one
            return
        runtime, interval = self._runtime, self._config.polling.interval
        wall, now = time.time(), runtime.clock()
        for spec in specs:
            job = self._tracker.jobs[spec]
            delay = resume_delay(job.last_seen, job.next_poll_at, wall, interval)
            gap, seen, due = job.planned_gap, job.last_seen, job.next_poll_at
            if gap is not None and gap > 0:  # its pace when last seen with a status
                runtime.demand.plan(spec, gap)
                if job.failures == 0 and seen is not None and due is not None:
                    # As planned before the restart, and brought forward if the stretch falls.
                    stretched = max(gap, due - seen)
                    runtime.pace.plan(spec, now + delay - stretched, gap, stretched / gap)
            elif job.status is None and job.failures == 0:  # new: its first plan, most likely
                runtime.demand.plan(spec, interval)
            runtime.scheduler.schedule(spec, delay)

    async def _poll(self, spec: JobSpec) -> None:
        job = self._tracker.jobs.get(spec)
        if job is None or job.outcome is not None or self._runtime is None:
            return
        answer = await self._ask(job, self._runtime)
        if answer is not None:
            await self._take(job, answer, self._runtime)

    async def _ask(self, job: JobState, runtime: _Runtime) -> Answer | None:
        """The job's status, asked once. None when there is nothing to take: the job was removed
        while its request waited (never sent), or the run is ending (a refused token, a state
        file that failed)."""

        def wanted() -> bool:
            """Not sent once the job is removed, nor once the run is ending: a refused fixed
            token must not go out again with the polls that were waiting for their turn."""
            return not self._finished.is_set() and self._tracker.tracks(job)

        try:
            return await runtime.client.poll(job.spec, wanted)
        except AuthFailed as exc:
            self._auth_failed(exc.code)
        except StateError as exc:  # the refreshed token could not be kept
            self._state_failed(exc)
        except Exception as exc:  # a bug of ours must not stop the other jobs: retry this one
            failed = Answer(Effect.TRANSIENT, None, code=f"internal_error:{type(exc).__name__}")
            self._heard(failed)
            return failed
        return None

    def _heard(self, answer: Answer) -> None:
        if self._metrics is not None:
            self._metrics.poll_done(answer.effect.value, answer.elapsed)

    async def _take(self, job: JobState, answer: Answer, runtime: _Runtime) -> None:
        """An answer's events, kept and said; the job's next poll, or its end."""
        job.last_seen = seen = time.time()
        now = runtime.clock()
        decision = self._decide(job, answer, runtime, now)
        if decision.fatal and self._finished.is_set():
            return  # a refused token, said once: the other polls it failed add nothing
        if not self._tracker.tracks(job):  # removed while its request was out: its plan too
            return
        # Planned before the save, which keeps the plan: a restart polls the job when planned.
        delay = None if decision.fatal else self._plan(job, answer, decision.next_poll_in, now)
        job.next_poll_at = None if delay is None else seen + delay
        if delay is not None and answer.effect is Effect.OBSERVED:
            job.planned_gap = decision.next_poll_in  # a retry keeps the pace it had
        try:
            await self._tracker.record(job, decision.events)
        except StateError as exc:
            self._state_failed(exc)
            return
        if not self._tracker.tracks(job):  # removed meanwhile: what it answered is not ours now
            return
        self._polled(job.spec, answer, delay)
        if decision.fatal:
            self._end("auth_failed", EXIT_AUTH)
        elif delay is not None:
            runtime.scheduler.schedule(job.spec, delay)
        else:
            runtime.unplan(job.spec)
            self._check_done()

    def _decide(self, job: JobState, answer: Answer, runtime: _Runtime, now: float) -> Decision:
        """What an answer means for the job, and for the whole org: its credits, its pause."""
        if answer.credits_remaining is not None:
            self._credits_reported(answer.credits_remaining, now)
        limited = answer.effect is Effect.RATE_LIMITED
        decision = apply_answer(
            job,
            answer,
            self._kind,
            self._config.polling,
            now,
            self._rng,
            progress_events=self._config.progress_events,
            org_pause=runtime.gate.refusal_pause(self._org_backoff) if limited else 0.0,
        )
        if decision.pause_all_for is not None:
            runtime.gate.refused(decision.pause_all_for)
        elif answer.effect in SERVED:
            runtime.gate.answered()
        return decision

    def _polled(self, spec: JobSpec, answer: Answer, delay: float | None) -> None:
        """At debug level, what each credit went on and when the next one will: the answer, and
        the gap the schedule, the backoff and the credit budget made of it. (Asked first: at
        any other level, building the line for nothing would cost every poll.)"""
        if not self._log.enabled("debug"):
            return
        next_poll_in_s = None if delay is None else round(delay, 3)
        fields = {"result": answer.effect.value, "next_poll_in_s": next_poll_in_s}
        self._log.log("debug", "job.polled", module=spec.module, job_id=spec.job_id, **fields)

    def _plan(
        self, job: JobState, answer: Answer, next_poll_in: float | None, now: float
    ) -> float | None:
        """Seconds until the job's next poll, its gap stretched to the credit budget; None once
        it has ended. A retry's delay is no pace to budget for, nor to stretch: its backoff
        already grows, and its event said when it comes. A job never seen with a status has no
        pace yet: it leaves the demand until it has one, so that its errors slow no other."""
        if next_poll_in is None:
            return None
        assert self._runtime is not None
        runtime, spec = self._runtime, job.spec
        stretch = 1.0
        if answer.effect is Effect.OBSERVED:
            runtime.demand.plan(spec, next_poll_in)
            stretch = runtime.budget.stretch(now, runtime.demand.per_s)
        elif job.status is None:
            runtime.demand.drop(spec)
        return runtime.pace.plan(spec, now, next_poll_in, stretch)

    async def _keep_pace(self) -> None:
        """Bring parked jobs forward when the stretch has fallen: checked every minute, as a
        reading expires or demand falls with no event to tell."""
        while True:
            await asyncio.sleep(PACE_CHECK_S)
            self._repace()

    def _repace(self) -> None:
        assert self._runtime is not None
        runtime = self._runtime
        now = runtime.clock()
        stretch = runtime.budget.stretch(now, runtime.demand.per_s)
        wall = time.time()
        for spec, delay in runtime.pace.sooner(now, stretch):
            runtime.scheduler.schedule(spec, delay)
            if (job := self._tracker.jobs.get(spec)) is not None:
                job.next_poll_at = wall + delay  # for `/jobs`, `status` and a restart
                try:
                    self._tracker.replanned(job)
                except StateError as exc:
                    self._state_failed(exc)
                    return

    def _org_backoff(self, refusals: int) -> float:
        polling = self._config.polling
        return backoff_delay(refusals, polling.backoff_initial, polling.backoff_max, self._rng)

    def _credits_reported(self, remaining: int, now: float) -> None:
        """Zoho said how many API credits the org has left: a gauge always, and `credits.low`
        once each time it falls below the floor (not at every poll while it stays there)."""
        assert self._runtime is not None
        if self._metrics is not None:
            self._metrics.credits_remaining(remaining)
        if (store := self._tracker.store) is not None:  # a restart must slow down as much
            try:
                store.save_reading(time.time(), remaining)
            except StateError as exc:
                self._state_failed(exc)
        if self._runtime.budget.remaining(now, remaining):
            floor = self._config.polling.credits_floor
            self._log.log("warning", "credits.low", remaining=remaining, floor=floor)

    async def _follow_config(self) -> None:
        """Re-read the config every `reload_interval` (content, not mtime) and on SIGHUP."""
        source = self._config.source
        if source is None:
            return
        follower = ConfigWatcher(source, self._config)
        await asyncio.to_thread(follower.look)  # the first look, which reads every file, now
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(check_gap(self._config.reload_interval, follower.cpu_s)):
                    await self._reload_requested.wait()
            asked = self._reload_requested.is_set()
            self._reload_requested.clear()
            try:
                config = await asyncio.to_thread(follower.check, report_now=asked)
            except ConfigError as exc:
                if self._metrics is not None:
                    self._metrics.config_reloaded("invalid")
                self._log.log("error", "config.invalid", problems=list(exc.problems))
                continue
            if config is not None:
                await self._apply(config)

    async def _apply(self, config: Config) -> None:
        """Take a reloaded config: new jobs start, dropped ones stop, the rest keep their place."""
        wanted = set(config.jobs)
        removed = [spec for spec in self._tracker.jobs if spec not in wanted]
        added = [spec for spec in config.jobs if spec not in self._tracker.jobs]
        restart = _needs_restart(self._started_with, config)
        self._config = config
        if (runtime := self._runtime) is not None:  # else built from this config, when it is
            for spec in removed:
                runtime.scheduler.cancel(spec)
                runtime.unplan(spec)
            polling = config.polling
            runtime.budget.configure(polling.credits_per_day, polling.credits_floor)
            runtime.gate.set_rate(polling.rate_limit, polling.rate_period)
        try:
            self._tracker.untrack(removed, forget_before=time.time() - self._config.retention)
            await self._track(tuple(added))
        except StateError as exc:
            self._state_failed(exc)
            return
        if self._metrics is not None:
            self._metrics.config_reloaded("ok")
        self._log.log(
            "info",
            "config.reloaded",
            added=len(added),
            removed=len(removed),
            restart_required=restart,
        )
        if runtime is not None:
            self._repace()  # the budget may just have been raised or lifted
        self._check_done()

    async def _prune(self) -> None:
        """Forget jobs that left the config, `retention` after they finished (or, if they never
        did, after they left)."""
        store = self._tracker.store
        if store is None:
            return
        while True:
            try:
                now = time.time()
                store.forget_spent(now - DAY_S, now)
                pruned = await store.prune(now - self._config.retention)
            except StateError as exc:
                self._state_failed(exc)
                return
            if pruned:
                self._log.log("info", "state.pruned", jobs=pruned)
            await asyncio.sleep(PRUNE_EVERY_S)

    def _check_done(self) -> None:
        if self._exit_when_done and self._tracker.unfinished == 0:
            outcomes = self._tracker.outcomes
            failed = self._outcomes_decide_exit and outcomes.total() != outcomes["completed"]
            self._end("all_jobs_ended", EXIT_JOB_NOT_COMPLETED if failed else EXIT_OK)

    def _auth_failed(self, code: str) -> None:
        """Credentials Zoho will never accept: say so once and end the run with exit code 3."""
        if not self._finished.is_set():
            self._log.log("error", "auth.failed", error=code)
        self._end("auth_failed", EXIT_AUTH)

    def _state_failed(self, exc: StateError) -> None:
        """The state file stopped taking writes: stop rather than run on without memory."""
        if not self._finished.is_set():
            self._log.log("error", "state.failed", error=str(exc))
        self._end("state_failed", EXIT_CONFIG)

    def _last_writes_failed(self, exc: StateError) -> None:
        """Writes no save waited on failed, and nothing saved after them to hear of it: said at
        the end, and a clean end is no longer one, since the state file does not hold what
        happened."""
        if self._reason == "state_failed":  # said already
            return
        self._log.log("error", "state.failed", error=str(exc))
        if self._exit_code in (EXIT_OK, EXIT_JOB_NOT_COMPLETED):
            self._reason, self._exit_code = "state_failed", EXIT_CONFIG

    def _end(self, reason: str, exit_code: int) -> None:
        if not self._finished.is_set():
            self._reason, self._exit_code = reason, exit_code
            self._finished.set()

    def _health(self) -> Health:
        from watcher.http import Health  # only ever asked by the listener, which imported it

        if self._reason == "auth_failed":
            return Health(False, "auth_failed")
        runtime = self._runtime
        if runtime is not None and runtime.scheduler.busy == 0:
            due = runtime.scheduler.next_due()
            if due is not None and asyncio.get_running_loop().time() - due > STUCK_AFTER_S:
                return Health(False, "scheduler_stuck")
        return Health(True, "ok")

    def _job_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self._tracker.jobs.values():
            key = job.outcome if job.outcome in ("not_found", "rejected") else job.status
            counts[key or "unknown"] = counts.get(key or "unknown", 0) + 1
        return counts

    def _jobs_view(self) -> list[dict[str, object]]:
        """In config order, also after a reload (which tracks the jobs it adds after the rest)."""
        jobs = self._tracker.jobs
        return [
            record_view(self._tracker.as_record(jobs[spec]))
            for spec in self._config.jobs
            if spec in jobs
        ]

    def _started(self, server: HttpServer | None) -> None:
        zoho, polling = self._config.zoho, self._config.polling
        listening = _host_port(self._config.http.host, server.port) if server is not None else None
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
            http=listening,
            state_path=_absolute(self._config.state_path),
        )

    def _stopped(self) -> None:
        self._log.log(
            "info",
            "watcher.stopped",
            reason=self._reason,
            exit_code=self._exit_code,
            outcomes={k: v for k, v in self._tracker.outcomes.items() if v},
            unfinished=self._tracker.unfinished,
        )
        self._log.flush()  # the last line: out before the process ends, not at the next loop turn


def _absolute(path: Path | None) -> str | None:
    """Where a relative path really is: it starts from the working directory, which a reader
    of the event cannot see."""
    return None if path is None else os.path.abspath(path)


def _host_port(host: str, port: int) -> str:
    """`host:port` that splits back into the two: an IPv6 address goes in brackets, as in a URL."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _needs_restart(old: Config, new: Config) -> list[str]:
    """Settings a reload cannot apply to a running watcher: the user must restart for them."""
    keys = []
    if old.zoho != new.zoho:
        keys.append("zoho")
    if old.polling.max_concurrency != new.polling.max_concurrency:
        keys.append("polling.max_concurrency")
    if old.polling.request_timeout != new.polling.request_timeout:
        keys.append("polling.request_timeout")
    for key in ("state_path", "http"):
        if getattr(old, key) != getattr(new, key):
            keys.append(key)
    return keys


async def serve(watcher: Watcher, signalled: Sequence[int] = ()) -> int:
    """Run until done or signalled: SIGTERM and SIGINT stop gracefully, SIGHUP reloads.
    `signalled` holds the signals that came before the loop listened: a stop signal among them
    stops it at once; a SIGHUP is dropped, for the first checks compare the files anyway.

    Once the run has ended its exit code is decided, and those signals are ignored: the loop's
    close would otherwise restore their default action, and a signal in the last moments of the
    process would end it as killed (143, 130, 129) after `watcher.stopped` said 0.
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, watcher.stop)
    loop.add_signal_handler(signal.SIGHUP, watcher.reload)
    if any(signum != signal.SIGHUP for signum in signalled):
        watcher.stop()
    try:
        return await watcher.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
            signal.signal(signum, signal.SIG_IGN)
