"""The due-time queue: earliest first, ties oldest first, rescheduling and cancelling."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from watcher.scheduler import DueQueue, Scheduler


def drain(queue: DueQueue[str]) -> list[str]:
    order = []
    while queue.next_due() is not None:
        order.append(queue.pop())
    return order


def test_earliest_due_first_and_ties_in_scheduling_order() -> None:
    queue: DueQueue[str] = DueQueue()
    for key, due in [("c", 5.0), ("a", 1.0), ("b", 5.0), ("d", 0.5)]:
        queue.schedule(key, due)
    assert drain(queue) == ["d", "a", "c", "b"]


def test_rescheduling_replaces_the_old_time() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    queue.schedule("a", 3.0)
    assert len(queue) == 2
    assert drain(queue) == ["b", "a"]


def test_cancelled_keys_never_come_out() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    queue.cancel("a")
    assert "a" not in queue
    assert drain(queue) == ["b"]


def test_only_keys_due_by_now_are_popped() -> None:
    queue: DueQueue[str] = DueQueue()
    queue.schedule("a", 2.0)
    queue.schedule("b", 1.0)
    queue.schedule("b", 3.0)  # its stale entry at 1.0 must not make it due early
    assert queue.pop_due(1.5) is None
    assert queue.pop_due(2.0) == "a"
    assert queue.pop_due(2.5) is None
    assert queue.pop_due(3.0) == "b"
    assert queue.pop_due(9.0) is None


@given(st.lists(st.tuples(st.integers(0, 20), st.floats(0, 100)), max_size=60))
def test_drains_in_due_order_with_each_key_once(plan: list[tuple[int, float]]) -> None:
    queue: DueQueue[int] = DueQueue()
    latest: dict[int, float] = {}
    for key, due in plan:
        queue.schedule(key, due)
        latest[key] = due
    order = drain(queue)
    assert sorted(order) == sorted(latest)
    dues = [latest[key] for key in order]
    assert dues == sorted(dues)


async def test_scheduler_serves_due_keys_with_bounded_workers() -> None:
    loop = asyncio.get_running_loop()
    served: list[str] = []
    running = 0
    peak = 0
    all_served = asyncio.Event()

    async def poll(key: str) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0)
        served.append(key)
        running -= 1
        if len(served) == 6:
            all_served.set()

    scheduler: Scheduler[str] = Scheduler(poll, workers=2, clock=loop.time)
    for index, key in enumerate("abcdef"):
        scheduler.schedule(key, 0.001 * index)
    task = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(all_served.wait(), 5)
    task.cancel()
    assert sorted(served) == list("abcdef")
    assert peak <= 2


async def test_a_key_scheduled_while_every_worker_sleeps_is_polled() -> None:
    polled = asyncio.Event()

    async def poll(key: str) -> None:
        polled.set()

    scheduler: Scheduler[str] = Scheduler(poll, workers=2, clock=asyncio.get_running_loop().time)
    running = asyncio.create_task(scheduler.run())
    for _ in range(3):  # run() starts, makes its workers, and they sleep on an empty queue
        await asyncio.sleep(0)
    scheduler.schedule("a", 0.0)
    try:
        await asyncio.wait_for(polled.wait(), 5)
    finally:
        running.cancel()


async def test_a_worker_back_from_its_poll_no_longer_counts_as_busy() -> None:
    """The health check calls the scheduler stuck only while no worker is inside a poll: a count
    that never came back down would hide a stuck scheduler for good."""
    busy_while_polling: list[int] = []
    both_polled = asyncio.Event()

    async def poll(key: str) -> None:
        busy_while_polling.append(scheduler.busy)
        if len(busy_while_polling) == 2:
            both_polled.set()

    scheduler: Scheduler[str] = Scheduler(poll, workers=1, clock=asyncio.get_running_loop().time)
    scheduler.schedule("a", 0.0)
    scheduler.schedule("b", 0.0)
    running = asyncio.create_task(scheduler.run())
    try:
        await asyncio.wait_for(both_polled.wait(), 5)
    finally:
        running.cancel()
    assert busy_while_polling == [1, 1]
    assert scheduler.busy == 0
