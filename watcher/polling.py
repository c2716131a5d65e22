"""The polls of a run, once it has a token: each answer taken, each job's next poll planned, and
the org's credits and pauses kept for all jobs alike.

The gate, the client and the scheduler need the first token's API domain, so they are made here,
with it; until then the jobs are only tracked.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING

import aiohttp

from watcher.auth import AuthFailed, TokenSource
from watcher.backoff import backoff_delay
from watcher.classify import Answer
from watcher.client import ZohoClient
from watcher.clock import to_monotonic
from watcher.config import Config, JobSpec, PollingSettings
from watcher.credits import DAY_S, REMAINING_TTL_S, CreditBudget, Demand, Pace
from watcher.ending import EXIT_AUTH, Ending
from watcher.events import EventLog
from watcher.job import Decision, JobState, apply_answer
from watcher.ratelimit import RequestGate
from watcher.schedule import resume_delay
from watcher.scheduler import Scheduler
from watcher.state import StateError, StateStore
from watcher.tracking import Tracker
from watcher.zoho_api import DEFAULT_API_DOMAIN, SERVED, Effect, JobKind

if TYPE_CHECKING:  # imported when a listener is configured: most runs never pay for aiohttp.web
    from watcher.metrics import Metrics

PACE_CHECK_S = 60.0  # how often a fallen stretch is looked for (see `Pace`)


class Poller:
    """Polls the tracked jobs through one gate, client and scheduler, and stretches every job's
    gap alike when the credit budget is tight.

    Made once there is a first token, from what the run started with for what only a restart
    applies (`started_with`), and from the current config for the rest (`reconfigure`).
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        tokens: TokenSource,
        *,
        config: Config,
        started_with: Config,
        tracker: Tracker,
        log: EventLog,
        ending: Ending,
        kind: JobKind,
        rng: random.Random,
        metrics: Metrics | None,
    ) -> None:
        self._config = config
        self._tracker = tracker
        self._log = log
        self._ending = ending
        self._kind = kind
        self._rng = rng
        self._metrics = metrics
        self._clock = asyncio.get_running_loop().time  # the scheduler's clock too
        self._budget = _credit_budget(config.polling, tracker.store)
        self._gate = RequestGate(
            config.polling.rate_limit,
            config.polling.rate_period,
            self._budget,
            metrics.rate_limit_waited if metrics is not None else None,
        )
        zoho = started_with.zoho
        api_domain = zoho.api_domain or tokens.api_domain or DEFAULT_API_DOMAIN
        self._client = ZohoClient(
            session, self._gate, tokens, api_domain, zoho.api_version, kind, heard=self._heard
        )
        concurrency = started_with.polling.max_concurrency
        self.scheduler = Scheduler(self._poll, concurrency, self._clock)
        self.demand = Demand()
        self._pace: Pace[JobSpec] = Pace()

    async def run(self) -> None:
        """Serve the polls until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.scheduler.run())
            group.create_task(self._keep_pace())

    async def _keep_pace(self) -> None:
        """Bring parked jobs forward when the stretch has fallen: checked every minute, as a
        reading expires or demand falls with no event to tell."""
        while True:
            await asyncio.sleep(PACE_CHECK_S)
            self.repace()

    def poll_first(self, specs: list[JobSpec]) -> None:
        """A new job at once; one the state file remembers, when its last run planned it.

        Each counts in the credit demand from now on: with its plan's gap, or with `interval`
        until its first answer sets one. Otherwise the first jobs polled after a start would
        find the demand small and take short gaps: the budget would not stretch them alike.
        """
        interval = self._config.polling.interval
        wall, now = time.time(), self._clock()
        for spec in specs:
            job = self._tracker.jobs[spec]
            delay = resume_delay(job.last_seen, job.next_poll_at, wall, interval)
            gap, seen, due = job.planned_gap, job.last_seen, job.next_poll_at
            if gap is not None and gap > 0:  # its pace when last seen with a status
                self.demand.plan(spec, gap)
                if job.failures == 0 and seen is not None and due is not None:
                    # As planned before the restart, and brought forward if the stretch falls.
                    stretched = max(gap, due - seen)
                    self._pace.plan(spec, now + delay - stretched, gap, stretched / gap)
            elif job.status is None and job.failures == 0:  # new: its first plan, most likely
                self.demand.plan(spec, interval)
            self.scheduler.schedule(spec, delay)

    def reconfigure(self, config: Config, removed: list[JobSpec]) -> None:
        """A reloaded config: the removed jobs' polls cancelled, its rate and budget applied."""
        self._config = config
        for spec in removed:
            self.scheduler.cancel(spec)
            self._unplan(spec)
        polling = config.polling
        self._budget.configure(polling.credits_per_day, polling.credits_floor)
        self._gate.set_rate(polling.rate_limit, polling.rate_period)

    def repace(self) -> None:
        """Bring forward the jobs whose plans the stretch, now fallen, had pushed back."""
        now = self._clock()
        stretch = self._budget.stretch(now, self.demand.per_s)
        wall = time.time()
        for spec, delay in self._pace.sooner(now, stretch):
            self.scheduler.schedule(spec, delay)
            if (job := self._tracker.jobs.get(spec)) is not None:
                job.next_poll_at = wall + delay  # for `/jobs`, `status` and a restart
                try:
                    self._tracker.replanned(job)
                except StateError as exc:
                    self._ending.state_failed(exc)
                    return

    def _unplan(self, spec: JobSpec) -> None:
        """`spec` will not be polled again: neither its pace nor its plan counts any more."""
        self.demand.drop(spec)
        self._pace.drop(spec)

    async def _poll(self, spec: JobSpec) -> None:
        job = self._tracker.jobs.get(spec)
        if job is None or job.outcome is not None:
            return
        answer = await self._ask(job)
        if answer is not None:
            await self._take(job, answer)

    async def _ask(self, job: JobState) -> Answer | None:
        """The job's status, asked once. None when there is nothing to take: the job was removed
        while its request waited (never sent), or the run is ending (a refused token, a state
        file that failed)."""
        finished = self._ending.finished

        def wanted() -> bool:
            """Not sent once the job is removed, nor once the run is ending: a refused fixed
            token must not go out again with the polls that were waiting for their turn."""
            return not finished.is_set() and self._tracker.tracks(job)

        try:
            return await self._client.poll(job.spec, wanted)
        except AuthFailed as exc:
            self._ending.auth_failed(exc.code)
        except StateError as exc:  # the refreshed token could not be kept
            self._ending.state_failed(exc)
        except Exception as exc:  # a bug of ours must not stop the other jobs: retry this one
            failed = Answer(Effect.TRANSIENT, None, code=f"internal_error:{type(exc).__name__}")
            self._heard(failed)
            return failed
        return None

    def _heard(self, answer: Answer) -> None:
        if self._metrics is not None:
            self._metrics.poll_done(answer.effect.value, answer.elapsed)

    async def _take(self, job: JobState, answer: Answer) -> None:
        """An answer's events, kept and said; the job's next poll, or its end."""
        job.last_seen = seen = time.time()
        now = self._clock()
        decision = self._decide(job, answer, now)
        if decision.fatal and self._ending.finished.is_set():
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
            self._ending.state_failed(exc)
            return
        if not self._tracker.tracks(job):  # removed meanwhile: what it answered is not ours now
            return
        self._polled(job.spec, answer, delay)
        if decision.fatal:
            self._ending.end("auth_failed", EXIT_AUTH)
        elif delay is not None:
            self.scheduler.schedule(job.spec, delay)
        else:
            self._unplan(job.spec)
            self._ending.check_done(self._tracker)

    def _decide(self, job: JobState, answer: Answer, now: float) -> Decision:
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
            org_pause=self._gate.refusal_pause(self._org_backoff) if limited else 0.0,
        )
        if decision.pause_all_for is not None:
            self._gate.refused(decision.pause_all_for)
        elif answer.effect in SERVED:
            self._gate.answered()
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
        spec = job.spec
        stretch = 1.0
        if answer.effect is Effect.OBSERVED:
            self.demand.plan(spec, next_poll_in)
            stretch = self._budget.stretch(now, self.demand.per_s)
        elif job.status is None:
            self.demand.drop(spec)
        return self._pace.plan(spec, now, next_poll_in, stretch)

    def _org_backoff(self, refusals: int) -> float:
        polling = self._config.polling
        return backoff_delay(refusals, polling.backoff_initial, polling.backoff_max, self._rng)

    def _credits_reported(self, remaining: int, now: float) -> None:
        """Zoho said how many API credits the org has left: a gauge always, and `credits.low`
        once each time it falls below the floor (not at every poll while it stays there)."""
        if self._metrics is not None:
            self._metrics.credits_remaining(remaining)
        if (store := self._tracker.store) is not None:  # a restart must slow down as much
            try:
                store.save_reading(time.time(), remaining)
            except StateError as exc:
                self._ending.state_failed(exc)
        if self._budget.remaining(now, remaining):
            floor = self._config.polling.credits_floor
            self._log.log("warning", "credits.low", remaining=remaining, floor=floor)


def _credit_budget(polling: PollingSettings, store: StateStore | None) -> CreditBudget:
    """The credit budget, with the credits spent and the reading of the org's credits kept from
    before a restart."""
    wall, now = time.time(), asyncio.get_running_loop().time()
    budget = CreditBudget(
        polling.credits_per_day,
        polling.credits_floor,
        spent_before=() if store is None else to_monotonic(store.spent, wall, now, DAY_S),
        on_spend=None if store is None else lambda: store.save_spent(time.time()),
    )
    if (kept := kept_reading(store)) is not None:
        budget.remaining(*kept)  # the drop it may start was said already
    return budget


def kept_reading(store: StateStore | None) -> tuple[float, int] | None:
    """What Zoho last said of the org's credits before a restart, if it still holds: when (on
    the loop's clock) and how many remained."""
    if store is None or store.reading is None:
        return None
    at, remaining = store.reading
    now = asyncio.get_running_loop().time()
    seen = to_monotonic((at,), time.time(), now, REMAINING_TTL_S)
    return (seen[0], remaining) if seen else None
