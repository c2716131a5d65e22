"""The one gate every request to Zoho passes: org-wide pause, credits, rate.

Zoho's limits are per organisation, so they are enforced here once for all jobs. The rate is a
sliding window: at most `rate_limit` requests in any `rate_period`. Room comes when the send
`rate_limit` back ages out, so each check looks at that one, and a request that must wait sleeps
until exactly the moment it may go (no polling), or until a reload changes the limits. The last
SENDS_KEPT sends are kept whatever the limits, so that a reload to a longer period or a higher
limit still counts what was sent within it. asyncio-throttle,
which this replaced, re-checks every 10 ms for each waiter: 2.3 % of a core for 25 workers held at
10 requests/s, against 0.04 % here (`python bench/gate.py`), and a watcher at its rate limit
spends its life in exactly that state.

The cap on requests in flight is not kept here: it is the scheduler's number of workers, each of
which has at most one request out.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Callable

from watcher.credits import CreditBudget

# Send times kept at least, whatever the limit: a reload up to this limit is exact at once.
SENDS_KEPT = 1000


class RequestGate:
    """`await gate.admit()` before each request to Zoho, aiohttp's own re-sends included."""

    def __init__(
        self,
        rate_limit: int,
        rate_period: float,
        budget: CreditBudget,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._rate_limit = rate_limit
        self._rate_period = rate_period
        # Latest last: the last SENDS_KEPT, and any younger than the period (see `_rate_wait`).
        self._sent: deque[float] = deque()
        self._let_go = -math.inf  # the latest send let go of: older than the period then
        self._clock = asyncio.get_running_loop().time
        self._resume_at = 0.0
        self._refusals = 0  # pauses in a row that ended in another 429
        self._budget = budget
        self._on_wait = on_wait
        self._changed = asyncio.Event()  # set, then replaced, when the limits change

    def set_rate(self, rate_limit: int, rate_period: float) -> None:
        """Apply reloaded limits, this rate and whatever the budget was just configured to: the
        recent history still counts, and requests already waiting check again at once (a wait
        for the credit budget can be a day long, and the reload may have lifted it)."""
        self._rate_limit = rate_limit
        self._rate_period = rate_period
        self._changed.set()
        self._changed = asyncio.Event()

    def refusal_pause(self, backoff: Callable[[int], float]) -> float:
        """How long a 429 answered now holds every request, at least: `backoff(n)`, where n
        counts the pauses in a row that ended in another 429. Without that count, every fresh job
        that meets the storm would ask for only its own first backoff, and the more jobs the
        watcher tracks the harder it would hammer an org that is already over its limit. A 429 of
        the burst whose pause is still on adds nothing: what is left of that pause, which the jobs
        that met it were told. The job that met the 429 waits as long (its next poll is said as
        it will be), and asks `refused` for it."""
        now = self._clock()
        if now < self._resume_at:
            return self._resume_at - now
        return backoff(self._refusals + 1)

    def refused(self, seconds: float) -> None:
        """Zoho answered 429, so the whole org is over its limit: hold every request not yet sent
        for `seconds` (see `refusal_pause`). The 429s of one burst, answered while the pause
        they caused is still on, count once; a shorter one does not cut the pause short."""
        now = self._clock()
        if now >= self._resume_at:
            self._refusals += 1
        self._resume_at = max(self._resume_at, now + seconds)

    def answered(self) -> None:
        """Zoho served a request: the org is within its limit again, if that request went out
        after the last pause (one sent before it says nothing about the storm)."""
        if self._clock() >= self._resume_at:
            self._refusals = 0

    async def admit(self, wanted: Callable[[], bool] = lambda: True) -> bool:
        """Wait until one more request may leave: no pause, a credit, room in the rate; take them.

        Every check is made again after any wait: another 429 may push the pause further, another
        request may take the room that came free first, or a reload may change the rate. A request
        no longer `wanted()` (its job was removed while it waited: a pause or the credit budget
        can hold it for hours) takes nothing and is turned away: False.
        """
        started = now = self._clock()
        while True:
            if not wanted():
                return False
            wait = self._wait(now)
            if wait <= 0:
                break
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await changed.wait()
            now = self._clock()
        if self._on_wait is not None:
            self._on_wait(now - started)
        return True

    def _wait(self, now: float) -> float:
        """Seconds to wait before a request may leave; 0.0 if it may leave now, its credit spent
        and its send recorded."""
        wait = self._resume_at - now
        if wait <= 0:
            wait = self._budget.wait(now)
        if wait <= 0:
            wait = self._rate_wait(now)
        if wait <= 0:
            self._budget.spend(now)
        return wait

    def _rate_wait(self, now: float) -> float:
        """Seconds until one more request fits the rate; 0.0 if it fits now, its send recorded."""
        sent, limit, period = self._sent, self._rate_limit, self._rate_period
        if len(sent) >= limit and (wait := sent[-limit] + period - now) > 0:
            return wait
        # Sends let go of (below) that a reload to a longer period would still count: not
        # knowing how many, wait until the last of them is out of the period.
        if len(sent) < limit and (wait := self._let_go + period - now) > 0:
            return wait
        sent.append(now)
        # Beyond the last SENDS_KEPT, a send older than the period counts for nothing: kept, a
        # limit set very high ("no limit") would hold every send for the life of the process.
        while len(sent) > SENDS_KEPT and sent[0] + period <= now:
            self._let_go = sent.popleft()
        return 0.0
