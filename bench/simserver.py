"""The Zoho simulator in a process of its own, for bench/scale.py: its CPU must not count as ours.

    python bench/simserver.py --jobs 10000

Scripts `--jobs` jobs in each of two modules: those of `FINISHING` answer COMPLETED (a first poll
ends them: the flat-out phase), those of `RUNNING` answer RUNNING forever (the idle phase). Prints
the base URL on stdout, then answers each `stats` line on stdin with one JSON line (requests
served so far, the most ever in flight); exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from watcher.simulator import Simulator

TOKEN = "bench-token"
FINISHING = "Leads"
RUNNING = "Deals"
FIRST_ID = 554023000000000000  # Zoho job ids are long digit strings


def job_ids(count: int) -> list[str]:
    return [str(FIRST_ID + index) for index in range(count)]


async def serve(jobs: int) -> None:
    async with Simulator(tokens=(TOKEN,)) as simulator:
        for job_id in job_ids(jobs):
            simulator.add_job(FINISHING, job_id, ["COMPLETED"])
            simulator.add_job(RUNNING, job_id, ["RUNNING"])
        print(simulator.url, flush=True)
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        while line := await commands.readline():
            if line.strip() == b"stats":
                stats = {
                    "requests": len(simulator.requests),
                    "max_in_flight": simulator.max_in_flight,
                }
                print(json.dumps(stats), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    asyncio.run(serve(parser.parse_args().jobs))


if __name__ == "__main__":
    main()
