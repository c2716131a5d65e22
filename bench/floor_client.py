"""The floor of bench/scale.py: what any watcher of these jobs must do beyond the bare loop.

    python bench/floor_client.py CONFIG URLS_FILE CONCURRENCY    (token in $BENCH_TOKEN)

The bare client's requests, plus the three things the issue counts in the watcher's CPU and no
design can leave out: loading the config (the watcher's own loader), reading each answer's JSON,
and writing each job's three event lines (`job.added`, `job.status_changed`, `job.finished`,
with the watcher's fields) through the watcher's own event log. Nothing else: no schedule, no
rate limit, no token handling, no classification, no job state. Its CPU over the bare loop's is
the least ratio a watcher on this stack can measure, whatever its design. Exits 1 unless every
answer was 200 and the config names as many jobs as the file has URLs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson

from watcher.config import load_all
from watcher.events import Event, EventLog
from watcher.zoho_api import MASS_UPDATE


async def fetch_all(config_path: str, urls: list[str], concurrency: int, token: str) -> int:
    config = load_all(Path(config_path))
    if len(config.jobs) != len(urls):
        return 1
    log = EventLog(sys.stdout, "json", "info", config.zoho.auth.secrets())
    for spec in config.jobs:
        log.emit(Event("job.added", "info", {"module": spec.module, "job_id": spec.job_id}))
    headers = {"Authorization": f"Zoho-oauthtoken {token}"}
    started = time.monotonic()
    failures = 0

    async def worker(session: aiohttp.ClientSession, todo: Iterator[int]) -> None:
        nonlocal failures
        for index in todo:
            async with session.get(urls[index], headers=headers, allow_redirects=False) as response:
                body = await response.read()
                failures += response.status != 200
            row = orjson.loads(body)["data"][0]
            spec = config.jobs[index]
            status = row[MASS_UPDATE.status_field]
            counts = {ours: row.get(theirs) for ours, theirs in MASS_UPDATE.counts.items()}
            ids = {"module": spec.module, "job_id": spec.job_id}
            changed = {**ids, "previous_status": None, "status": status, **counts}
            log.emit(
                Event("job.status_changed", "info", {**changed, "progress": 1.0, "eta_s": None})
            )
            outcome = MASS_UPDATE.terminal[status]
            duration_s = round(time.monotonic() - started, 3)
            ended = {**ids, "outcome": outcome, "status": status, **counts, "polls": 1}
            log.emit(Event("job.finished", "info", {**ended, "duration_s": duration_s}))

    async with aiohttp.ClientSession() as session:
        todo = iter(range(len(urls)))
        await asyncio.gather(*(worker(session, todo) for _ in range(concurrency)))
    log.flush()
    return failures


def main() -> int:
    config_path, urls_file, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(urls_file) as lines:
        urls = lines.read().split()
    failures = asyncio.run(fetch_all(config_path, urls, concurrency, os.environ["BENCH_TOKEN"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
