"""The one gate every request to Zoho passes: in-flight cap, org-wide pause, credits, rate.

Zoho's limits are per organisation, so they are enforced here once for all jobs. The rate itself
comes from asyncio-throttle; it is wrapped so the rest of the watcher does not depend on it (its
waiters poll every 10 ms, which is why only a bounded set of workers ever waits here).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from asyncio_throttle.throttler import Throttler

from watcher.credits import CreditBudget


class RequestGate:
    """`async with gate:` around each request to Zoho.

    The order matters: take an in-flight slot first, then wait out any pause, then take a rate
    token. Taking the rate token first would let requests that queued for a slot leave together,
    bunched above the rate.
    """

    def __init__(
        self,
        rate_limit: int,
        rate_period: float,
        max_concurrency: int,
        budget: CreditBudget,
        on_wait: Callable[[float], None] = lambda seconds: None,
    ) -> None:
        self._throttler = Throttler(rate_limit=rate_limit, period=rate_period)
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = asyncio.get_running_loop().time
        self._resume_at = 0.0
        self._budget = budget
        self._on_wait = on_wait

    def set_rate(self, rate_limit: int, rate_period: float) -> None:
        """Apply a reloaded rate from the next request on; the recent history still counts."""
        self._throttler.rate_limit = rate_limit
        self._throttler.period = rate_period

    def pause(self, seconds: float) -> None:
        """Hold every request not yet sent for `seconds` (Zoho said the whole org is too busy)."""
        self._resume_at = max(self._resume_at, self._clock() + seconds)

    async def __aenter__(self) -> None:
        started = self._clock()
        await self._slots.acquire()
        try:
            await self.admit()
        except BaseException:
            self._slots.release()
            raise
        self._on_wait(self._clock() - started)

    async def admit(self) -> None:
        """Wait until one more request may leave: no pause, a credit, a rate token; spend them.

        `async with gate` does this once; a request that goes out again inside the same slot
        (aiohttp's own retry on a dropped keep-alive connection) must do it again.
        """
        # Loops, not one sleep: another 429 may push the pause further while we wait.
        while (remaining := self._resume_at - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
        while (credit := self._budget.wait(self._clock())) > 0:  # noqa: ASYNC110
            await asyncio.sleep(credit)
        await self._throttler.acquire()  # type: ignore[no-untyped-call]
        self._budget.spend(self._clock())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._slots.release()
