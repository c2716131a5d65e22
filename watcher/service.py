"""The watcher's lifecycle: start, poll every job until it ends, follow config edits, stop cleanly.

Data flows one way: config → scheduler → client → job state → events. This module wires those
together (the polls themselves are `polling.Poller`'s), follows the config, and owns the order of
shutdown: stop polling, flush the state, then say `watcher.stopped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from watcher import collector
from watcher.auth import REFRESH_LIMIT, AuthFailed, FixedToken, RefreshingToken, TokenSource
from watcher.config import Config, ConfigError
from watcher.credits import DAY_S
from watcher.ending import EXIT_OK, Ending
from watcher.events import Event, EventLog
from watcher.polling import Poller, kept_reading
from watcher.reload import ConfigWatcher, check_gap
from watcher.state import StateError, StateStore, record_view
from watcher.tracking import Tracker
from watcher.zoho_api import MASS_UPDATE

if TYPE_CHECKING:  # imported when a listener is configured: most runs never pay for aiohttp.web
    from watcher.http import Health, HttpServer
    from watcher.metrics import Metrics

PRUNE_EVERY_S = 3600.0
# A due job this overdue with no worker busy means the scheduler itself has stopped serving.
STUCK_AFTER_S = 60.0
# How long a stop waits for event lines a stalled reader holds back (stops end within 5 s).
LINES_OUT_S = 2.0


class StartupError(Exception):
    """Something the watcher needs at start is unusable (state file, HTTP port): one line."""


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
        self._ending = Ending(
            log, exit_when_done=exit_when_done, outcomes_decide_exit=outcomes_decide_exit
        )
        self._kind = MASS_UPDATE  # the one kind of job the config can name so far
        self._rng = rng or random.Random()
        # Counted only where they can be read: with no HTTP listener nobody can scrape them.
        self._metrics: Metrics | None = None
        self._reload_requested = asyncio.Event()
        self._tracker: Tracker
        self._poller: Poller | None = None  # made once there is a first token

    def stop(self) -> None:
        """Stop taking new work; `run` cancels what is in flight, flushes state, returns 0."""
        self._ending.end("signal", EXIT_OK)

    def reload(self) -> None:
        """Re-read the config files now (SIGHUP), and report a bad edit at once."""
        self._reload_requested.set()

    async def run(self) -> int:
        """Raises StartupError before anything is watched if the state file or port is unusable."""
        store = await self._open_store()
        self._log.when_reader_gone(lambda: self._ending.end("output_closed", EXIT_OK))
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
                    self._ending.last_writes_failed(exc)
        self._stopped()
        return self._ending.exit_code

    async def _until_stopped(
        self, starting: Awaitable[HttpServer | None]
    ) -> tuple[bool, HttpServer | None]:
        """(True, what `starting` gives), unless a stop comes first: then it is cancelled (a
        name lookup that hangs, say) and the run ends as stopped, (False, None)."""
        started = asyncio.ensure_future(starting)
        stopping = asyncio.ensure_future(self._ending.finished.wait())
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
        if (kept := kept_reading(self._tracker.store)) is not None:  # shown from the start
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
            ending = asyncio.create_task(self._ending.finished.wait())
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
            self._ending.state_failed(exc)
            return
        collector.settle()
        self._ending.check_done(self._tracker)
        if self._ending.finished.is_set():
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
            self._ending.auth_failed(exc.code)
            return
        except StateError as exc:
            self._ending.state_failed(exc)
            return
        self._poller = poller = Poller(
            session,
            tokens,
            config=self._config,
            started_with=self._started_with,
            tracker=self._tracker,
            log=self._log,
            ending=self._ending,
            kind=self._kind,
            rng=self._rng,
            metrics=self._metrics,
        )
        # Every job tracked by now that has not ended, edits made meanwhile included: none of
        # them has been polled yet.
        jobs = self._tracker.jobs
        poller.poll_first([spec for spec, job in jobs.items() if job.outcome is None])
        async with asyncio.TaskGroup() as group:
            group.create_task(poller.run())
            group.create_task(self._prune())

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
        if (poller := self._poller) is not None:  # else made from this config, when it is
            poller.reconfigure(config, removed)
        try:
            self._tracker.untrack(removed, forget_before=time.time() - self._config.retention)
            tracked = await self._tracker.track(tuple(added))
        except StateError as exc:
            self._ending.state_failed(exc)
            return
        if self._poller is not None:  # else polled first once there is a token
            self._poller.poll_first(tracked)
        if self._metrics is not None:
            self._metrics.config_reloaded("ok")
        self._log.log(
            "info",
            "config.reloaded",
            added=len(added),
            removed=len(removed),
            restart_required=restart,
        )
        if poller is not None:
            poller.repace()  # the budget may just have been raised or lifted
        self._ending.check_done(self._tracker)

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
                self._ending.state_failed(exc)
                return
            if pruned:
                self._log.log("info", "state.pruned", jobs=pruned)
            await asyncio.sleep(PRUNE_EVERY_S)

    def _health(self) -> Health:
        from watcher.http import Health  # only ever asked by the listener, which imported it

        if self._ending.reason == "auth_failed":
            return Health(False, "auth_failed")
        if self._poller is not None and self._poller.scheduler.busy == 0:
            due = self._poller.scheduler.next_due()
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
            reason=self._ending.reason,
            exit_code=self._ending.exit_code,
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
