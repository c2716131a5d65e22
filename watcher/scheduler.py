"""When each job is polled: a due-time queue served by a bounded set of workers.

Waiting jobs cost nothing: they are entries in a heap, not sleeping coroutines, so ten thousand of
them add no timers and no wake-ups. Only `workers` coroutines ever wait on the rate limiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class DueQueue(Generic[K]):
    """Keys ordered by due time, earliest first; equal times in the order they were scheduled.

    Rescheduling or cancelling a key leaves its old heap entry behind; such stale entries are
    recognised by their sequence number and skipped when they reach the top.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._current: dict[K, int] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, key: K) -> bool:
        return key in self._current

    def schedule(self, key: K, due: float) -> None:
        seq = next(self._seq)
        self._current[key] = seq
        heapq.heappush(self._heap, (due, seq, key))

    def cancel(self, key: K) -> None:
        self._current.pop(key, None)

    def next_due(self) -> float | None:
        """The earliest due time, or None when nothing is scheduled."""
        while self._heap:
            due, seq, key = self._heap[0]
            if self._current.get(key) == seq:
                return due
            heapq.heappop(self._heap)
        return None

    def pop(self) -> K:
        """Remove and return the earliest key; call only after `next_due` returned a time."""
        _, _, key = heapq.heappop(self._heap)
        del self._current[key]
        return key

    def pop_due(self, now: float) -> K | None:
        """Remove and return the earliest key if it is due by `now`; None if none is."""
        due = self.next_due()
        return self.pop() if due is not None and due <= now else None


class Scheduler(Generic[K]):
    """Calls `poll(key)` for each key when it falls due, at most `workers` at a time."""

    def __init__(
        self,
        poll: Callable[[K], Awaitable[None]],
        workers: int,
        clock: Callable[[], float],
    ) -> None:
        self._poll = poll
        self._workers = workers
        self._clock = clock
        self._queue: DueQueue[K] = DueQueue()
        self._wake = asyncio.Event()
        self.busy = 0  # workers inside `poll` right now

    def schedule(self, key: K, delay: float) -> None:
        """Poll `key` after `delay` seconds, replacing any earlier plan for it."""
        self._queue.schedule(key, self._clock() + delay)
        self._wake.set()

    def cancel(self, key: K) -> None:
        self._queue.cancel(key)

    def next_due(self) -> float | None:
        """When the earliest scheduled key falls due (on the scheduler's clock), if any."""
        return self._queue.next_due()

    async def run(self) -> None:
        """Serve due keys until cancelled."""
        async with asyncio.TaskGroup() as group:
            for _ in range(self._workers):
                group.create_task(self._work())

    async def _work(self) -> None:
        """One worker: one poll at a time, so `workers` is also the cap on requests in flight."""
        while True:
            key = self._queue.pop_due(self._clock())
            if key is None:
                await self._until_due()
                continue
            self.busy += 1
            try:
                await self._poll(key)
            finally:
                self.busy -= 1

    async def _until_due(self) -> None:
        """Sleep until the earliest key falls due or another is scheduled."""
        due = self._queue.next_due()
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None if due is None else due - self._clock()):
                await self._wake.wait()
