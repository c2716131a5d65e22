"""Run the real CLI in a subprocess and read its event stream as it comes.

Tests wait on events (`wait_for`), never on the clock. Everything a watcher process prints is also
kept in `PRINTED`, so that the suite can check that no secret it used ever reached any output.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

ACCESS_TOKEN = "sim-token"
REFRESH_TOKEN = "sim-refresh"
CLIENT_ID = "sim-client"
CLIENT_SECRET = "sim-secret"
CREDENTIALS_ENV = {
    "ZOHO_ACCESS_TOKEN": ACCESS_TOKEN,
    "ZOHO_REFRESH_TOKEN": REFRESH_TOKEN,
    "ZOHO_CLIENT_ID": CLIENT_ID,
    "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
}
# Every secret any test hands to the watcher (and every token a simulator issues, added as they
# are made); none may appear in anything printed.
SECRETS: set[str] = {ACCESS_TOKEN, REFRESH_TOKEN, CLIENT_SECRET}
PRINTED: list[str] = []
# Every watcher process started, so that one a failed test left running is stopped at its end
# (and what it printed checked for secrets) rather than polling on through the next tests.
STARTED: list[WatcherProcess] = []

Event = dict[str, Any]


LINE_LIMIT = 1 << 24  # `status --json` is one line, 0.3 KB a job


def refresh_auth(accounts_url: str, **extra: str) -> dict[str, str]:
    """The refresh-token trio, from the environment, refreshing at `accounts_url`."""
    return {
        "refresh_token": "${ZOHO_REFRESH_TOKEN}",
        "client_id": "${ZOHO_CLIENT_ID}",
        "client_secret": "${ZOHO_CLIENT_SECRET}",
        "accounts_url": accounts_url,
        **extra,
    }


def write_config(
    path: Path,
    url: str,
    jobs: Sequence[tuple[str, str]],
    auth: Mapping[str, str] | None = None,
    api_domain: str | None = "",
    top: Mapping[str, object] | None = None,
    **polling: object,
) -> Path:
    """A config file for the simulator at `url`; polling defaults are fast but realistic.

    `api_domain` defaults to `url`; None leaves it out (the token answer then names it). `top`
    adds top-level settings (state_path, http, reload_interval, ...).
    """
    settings: dict[str, object] = {
        "interval": "100ms",
        "max_interval": "300ms",
        "rate_limit": 50,
        "rate_period": "1s",
        "max_concurrency": 5,
        "backoff_initial": "50ms",
        "backoff_max": "400ms",
        "request_timeout": "2s",
    }
    settings.update(polling)
    zoho: dict[str, object] = {"auth": dict(auth or {"access_token": "${ZOHO_ACCESS_TOKEN}"})}
    if api_domain is not None:
        zoho["api_domain"] = api_domain or url
    document = {
        **(top or {}),
        "zoho": zoho,
        "polling": settings,
        "jobs": [{"module": module, "job_id": job_id} for module, job_id in jobs],
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


class WatcherProcess:
    """A running `python -m watcher ...` whose JSON events are parsed as they arrive."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self.lines: list[str] = []
        self.not_json: list[str] = []
        self.ended = False
        self.finished = False  # `finish` has seen it to its end
        self.stderr = ""
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        STARTED.append(self)

    @classmethod
    async def start(cls, *args: str, env: Mapping[str, str] | None = None) -> WatcherProcess:
        environment = {**os.environ, **CREDENTIALS_ENV, **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "watcher",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            limit=LINE_LIMIT,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode()
            PRINTED.append(line)
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                self.not_json.append(line)
                continue
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.ended = True
            self._changed.notify_all()

    async def wait_for(
        self, predicate: Callable[[list[Event]], bool], timeout: float = 20.0
    ) -> list[Event]:
        """Wait until the events so far satisfy `predicate` (or the stream ends: then fail)."""
        async with asyncio.timeout(timeout), self._changed:
            while not predicate(self.events):
                if self.ended:
                    raise AssertionError(f"the event stream ended first: {self.events[-3:]}")
                await self._changed.wait()
        return self.events

    async def wait_event(self, name: str, timeout: float = 20.0, **fields: object) -> Event:
        """The first event named `name` whose fields include `fields`."""
        matches: list[Event] = []

        def found(events: list[Event]) -> bool:
            matches[:] = [e for e in events if e["event"] == name and _has(e, fields)]
            return bool(matches)

        await self.wait_for(found, timeout)
        return matches[0]

    async def finish(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; its exit code."""
        async with asyncio.timeout(timeout):
            await self._reader
            assert self.process.stderr is not None
            self.stderr = (await self.process.stderr.read()).decode()
            PRINTED.append(self.stderr)
            code = await self.process.wait()
            self.finished = True
            return code

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]


def leaked_secrets(printed: Iterable[str], secrets: Iterable[str]) -> set[str]:
    """The `secrets` that occur anywhere in `printed`."""
    text = "\n".join(printed)
    return {secret for secret in secrets if secret in text}


def _has(event: Event, fields: Mapping[str, object]) -> bool:
    return all(event.get(key) == value for key, value in fields.items())


async def run_cli(*args: str, env: Mapping[str, str] | None = None) -> tuple[int, str, str]:
    """Run a short CLI command to the end: (exit code, stdout, stderr)."""
    watcher = await WatcherProcess.start(*args, env=env)
    code = await watcher.finish()
    return code, "".join(watcher.lines), watcher.stderr
