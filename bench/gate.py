"""What waiting at the rate limit costs: our RequestGate against asyncio-throttle's Throttler.

A watcher with many jobs spends most of its life held at the rate limit, with every worker waiting
for room. asyncio-throttle re-checks every 10 ms for each waiter; the gate sleeps until the moment
room comes free. Prints the CPU each used over the same window, and writes
bench/results/gate.json.

    python bench/gate.py [--workers 25] [--rate 10] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from asyncio_throttle.throttler import Throttler

from watcher.credits import CreditBudget
from watcher.ratelimit import RequestGate

RESULTS = Path(__file__).parent / "results" / "gate.json"


async def held(
    acquire: Callable[[], Awaitable[object]], workers: int, seconds: float
) -> dict[str, float]:
    """CPU seconds and acquisitions of `workers` coroutines taking turns for `seconds`."""
    acquired = 0

    async def worker() -> None:
        nonlocal acquired
        while True:
            await acquire()
            acquired += 1

    tasks = [asyncio.create_task(worker()) for _ in range(workers)]
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"acquired": acquired, "cpu_s": round(cpu, 4), "core_pct": round(100 * cpu / seconds, 2)}


async def compare(workers: int, rate: int, seconds: float) -> dict[str, dict[str, float]]:
    throttler = Throttler(rate_limit=rate, period=1.0)
    gate = RequestGate(rate, 1.0, CreditBudget(None, 0))
    return {
        "asyncio-throttle": await held(throttler.acquire, workers, seconds),  # type: ignore[no-untyped-call]
        "RequestGate": await held(gate.admit, workers, seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=25, help="waiters (Zoho's top edition: 25)")
    parser.add_argument("--rate", type=int, default=10, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    results = asyncio.run(compare(args.workers, args.rate, args.seconds))
    print(f"{args.workers} waiters held at {args.rate}/s for {args.seconds:g} s")
    for name, figures in results.items():
        print(
            f"{name:18} {figures['acquired']:6} acquired  {figures['cpu_s']:7.3f} s CPU"
            f"  {figures['core_pct']:5.2f} % of a core"
        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps({"workers": args.workers, "rate": args.rate, **results}, indent=2)
    )


if __name__ == "__main__":
    main()
