"""The baseline of bench/scale.py: the least an aiohttp program can do to make the same requests.

    python bench/bare_client.py URLS_FILE CONCURRENCY    (token in $BENCH_TOKEN)

GETs each URL of the file once, `CONCURRENCY` at a time, with the watcher's header, and reads each
body. Nothing else: no parsing, no logging, no scheduling. Exits 1 unless every answer was 200.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator

import aiohttp


async def fetch_all(urls: list[str], concurrency: int, token: str) -> int:
    headers = {"Authorization": f"Zoho-oauthtoken {token}"}
    failures = 0

    async def worker(session: aiohttp.ClientSession, todo: Iterator[str]) -> None:
        nonlocal failures
        for url in todo:
            async with session.get(url, headers=headers, allow_redirects=False) as response:
                await response.read()
                failures += response.status != 200

    async with aiohttp.ClientSession() as session:
        todo = iter(urls)
        await asyncio.gather(*(worker(session, todo) for _ in range(concurrency)))
    return failures


def main() -> int:
    urls_file, concurrency = sys.argv[1], int(sys.argv[2])
    with open(urls_file) as lines:
        urls = lines.read().split()
    failures = asyncio.run(fetch_all(urls, concurrency, os.environ["BENCH_TOKEN"]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
