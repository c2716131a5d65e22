"""The one gate every request to Zoho passes: in-flight cap, org-wide pause, credits, rate.

Zoho's limits are per organisation, so they are enforced here once for all jobs. The rate is a
sliding window: at most `rate_limit` requests in any `rate_period`. Only the send times of the
last `rate_limit` requests matter for that, so each check is one look at the oldest of them, and a
request that must wait sleeps until exactly the moment it may go (no polling). asyncio-throttle,
which this replaced, re-checks every 10 ms for each waiter: 2.3 % of a core for 25 workers held at
10 requests/s, against 0.04 % here (`python bench/gate.py`), and a watcher at its rate limit
spends its life in exactly that state.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType

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
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._rate_limit = rate_limit
        self._rate_period = rate_period
        self._sent: deque[float] = deque()  # send times of the last `rate_limit` requests
        self._slots = asyncio.Semaphore(max_concurrency)
        self._clock = asyncio.get_running_loop().time
        self._resume_at = 0.0
        self._budget = budget
        self._on_wait = on_wait

    def set_rate(self, rate_limit: int, rate_period: float) -> None:
        """Apply a reloaded rate from the next request on; the recent history still counts."""
        self._rate_limit = rate_limit
        self._rate_period = rate_period

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
        if self._on_wait is not None:
            self._on_wait(self._clock() - started)

    async def admit(self) -> None:
        """Wait until one more request may leave: no pause, a credit, room in the rate; take them.

        `async with gate` does this once; a request that goes out again inside the same slot
        (aiohttp's own retry on a dropped keep-alive connection) must do it again.
        """
        # Loops, not one sleep: another 429 may push the pause further while we wait, another
        # waiter may take the room that came free first, or a reload may change the rate.
        while (remaining := self._resume_at - self._clock()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(remaining)
        while (credit := self._budget.wait(self._clock())) > 0:  # noqa: ASYNC110
            await asyncio.sleep(credit)
        while (wait := self._rate_wait()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)
        self._budget.spend(self._clock())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._slots.release()

    def _rate_wait(self) -> float:
        """Seconds until one more request fits the rate; 0.0 if it fits now, its send recorded."""
        sent = self._sent
        while len(sent) > self._rate_limit:  # the limit was lowered: older sends no longer count
            sent.popleft()
        now = self._clock()
        if len(sent) == self._rate_limit:
            free_at = sent[0] + self._rate_period
            if free_at > now:
                return free_at - now
            sent.popleft()
        sent.append(now)
        return 0.0
