"""The request gate: org-wide pause and a sliding-window rate that never polls."""

from __future__ import annotations

import asyncio

import pytest

from watcher import ratelimit
from watcher.credits import CreditBudget
from watcher.ratelimit import RequestGate

NO_BUDGET = CreditBudget(None, 0)


async def pass_through(gate: RequestGate, sent: list[float]) -> None:
    await gate.admit()
    sent.append(asyncio.get_running_loop().time())


def most_in_any_window(sent: list[float], period: float) -> int:
    """The most sends within any `period` starting at a send (a hair short, for float noise)."""
    return max(sum(1 for t in sent if start <= t < start + period - 1e-3) for start in sent)


async def test_no_more_than_the_rate_in_any_period() -> None:
    gate = RequestGate(rate_limit=3, rate_period=0.1, budget=NO_BUDGET)
    sent: list[float] = []
    await asyncio.gather(*(pass_through(gate, sent) for _ in range(9)))
    assert len(sent) == 9
    assert most_in_any_window(sent, 0.1) == 3
    assert sent[-1] - sent[0] >= 0.2 - 1e-3  # three full windows


async def test_a_request_that_must_wait_sleeps_once_until_its_slot_frees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sleeps: list[float | None] = []
    real_timeout = asyncio.timeout

    def recording_timeout(delay: float | None) -> asyncio.Timeout:
        sleeps.append(delay)
        return real_timeout(delay)

    gate = RequestGate(rate_limit=1, rate_period=0.2, budget=NO_BUDGET)
    await pass_through(gate, [])
    monkeypatch.setattr(ratelimit.asyncio, "timeout", recording_timeout)
    await pass_through(gate, [])
    monkeypatch.undo()
    assert len(sleeps) <= 2  # one sleep, and at most one more for a timer firing a hair early
    assert sleeps[0] is not None
    assert 0.15 < sleeps[0] <= 0.2


async def test_a_reload_that_lifts_the_budget_frees_a_request_waiting_a_day() -> None:
    budget = CreditBudget(1, 0)
    gate = RequestGate(rate_limit=1000, rate_period=1.0, budget=budget)
    await gate.admit()  # the day's one credit
    waiting = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    assert not waiting.done()
    budget.configure(None, 0)
    gate.set_rate(1000, 1.0)
    await asyncio.wait_for(waiting, timeout=5)


async def test_a_rate_lowered_then_raised_still_counts_every_recent_send() -> None:
    gate = RequestGate(rate_limit=2, rate_period=0.3, budget=NO_BUDGET)
    sent: list[float] = []
    await asyncio.gather(*(pass_through(gate, sent) for _ in range(2)))
    gate.set_rate(1, 0.3)
    waiting = asyncio.ensure_future(pass_through(gate, sent))
    await asyncio.sleep(0)  # checked against the lowered rate: it waits
    gate.set_rate(2, 0.3)
    await asyncio.gather(waiting, pass_through(gate, sent))
    assert most_in_any_window(sent, 0.3) == 2


async def test_a_lowered_rate_applies_to_the_next_request() -> None:
    gate = RequestGate(rate_limit=5, rate_period=0.1, budget=NO_BUDGET)
    sent: list[float] = []
    await asyncio.gather(*(pass_through(gate, sent) for _ in range(4)))
    gate.set_rate(2, 0.1)
    await asyncio.gather(*(pass_through(gate, sent) for _ in range(4)))
    later = sent[4:]
    assert later[0] - sent[0] >= 0.1 - 1e-3  # the earlier four still count against the new rate
    assert most_in_any_window(later, 0.1) == 2


async def test_a_pause_holds_requests_and_counts_as_waiting() -> None:
    waited: list[float] = []
    gate = RequestGate(rate_limit=1000, rate_period=1.0, budget=NO_BUDGET, on_wait=waited.append)
    gate.refused(0.1)
    sent: list[float] = []
    started = asyncio.get_running_loop().time()
    await pass_through(gate, sent)
    assert sent[0] - started >= 0.1 - 1e-3
    assert waited[0] >= 0.1 - 1e-3


async def test_each_pause_that_ends_in_another_429_is_longer_and_one_burst_counts_once() -> None:
    gate = RequestGate(rate_limit=1000, rate_period=1.0, budget=NO_BUDGET)
    counted: list[int] = []

    def backoff(refusals: int) -> float:
        counted.append(refusals)
        return 0.01 * 2**refusals

    def refused() -> float:
        pause = gate.refusal_pause(backoff)
        gate.refused(pause)
        return pause

    assert refused() == 0.02
    # The same burst's 429, while its pause is on: what is left of it, which the jobs that met
    # the first were told; no new backoff that could end later.
    assert 0.0 < refused() <= 0.02
    gate.answered()  # the same burst's 200, sent before the pause: says nothing of the storm
    await gate.admit()
    assert refused() == 0.04  # the next burst: the org is still over its limit
    await gate.admit()
    gate.answered()
    assert refused() == 0.02  # a storm after a good answer starts afresh
    gate.refused(0.5)  # a longer Retry-After
    assert 0.45 < gate.refusal_pause(backoff) <= 0.5  # what is left of it, now the longer
    assert counted == [1, 2, 1]


async def test_a_request_no_longer_wanted_is_turned_away_and_takes_nothing() -> None:
    gate = RequestGate(rate_limit=1, rate_period=0.05, budget=CreditBudget(2, 0))
    await gate.admit()  # the first of the day's two credits
    assert await gate.admit(lambda: False) is False
    # The second credit is still there; spent, this would wait a day.
    assert await asyncio.wait_for(gate.admit(), timeout=5) is True


async def test_a_reload_to_a_longer_period_still_counts_what_was_sent_within_it() -> None:
    """Twenty sent under 5 per 50 ms fill a limit of 20 per second: the next must wait."""
    gate = RequestGate(rate_limit=5, rate_period=0.05, budget=CreditBudget(None, 0))
    for _ in range(20):
        await gate.admit()
    gate.set_rate(20, 1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(gate.admit(), timeout=0.3)


async def test_a_reload_past_the_sends_kept_still_holds_the_rate() -> None:
    """The gate keeps at least as many send times as the limit: with fewer, the limit would
    never be reached, and no request would ever wait."""
    gate = RequestGate(rate_limit=10, rate_period=60.0, budget=CreditBudget(None, 0))
    limit = ratelimit.SENDS_KEPT + 1
    gate.set_rate(limit, 60.0)
    for _ in range(limit):
        await gate.admit()
    waiting = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    assert not waiting.done()  # one more in the period waits
    waiting.cancel()


async def test_a_very_high_limit_keeps_only_the_sends_that_can_count() -> None:
    """A limit set very high, as "no limit", must not hold every send for months: memory would
    grow by a float per request for the life of the process."""
    gate = RequestGate(rate_limit=10**9, rate_period=1e-9, budget=CreditBudget(None, 0))
    for _ in range(3 * ratelimit.SENDS_KEPT):
        await gate.admit()
    assert len(gate._sent) <= ratelimit.SENDS_KEPT + 1  # white box: the history itself


async def test_a_reload_to_a_longer_period_still_counts_sends_let_go_of() -> None:
    """Past SENDS_KEPT, sends older than the period are let go of; a longer period after a
    reload would count them, so the gate waits rather than pass the limit."""
    limit = ratelimit.SENDS_KEPT + 500
    gate = RequestGate(rate_limit=limit, rate_period=0.05, budget=CreditBudget(None, 0))
    for _ in range(limit):
        await gate.admit()
    await asyncio.sleep(0.1)  # every one of them older than the period
    await gate.admit()  # lets go of the oldest
    gate.set_rate(limit, 10.0)
    waiting = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    assert not waiting.done()  # limit + 1 sent within the new period: no more for now
    waiting.cancel()


async def test_a_429_of_the_same_burst_keeps_the_pause_the_first_ones_were_told() -> None:
    """Backoffs are jittered: a second draw for the same burst could end later than the pause
    the jobs that met its first 429 were told, and they would be polled later than they said."""
    gate = RequestGate(rate_limit=1000, rate_period=1.0, budget=NO_BUDGET)
    draws = iter([0.2, 0.3])
    first = gate.refusal_pause(lambda _: next(draws))
    gate.refused(first)
    second = gate.refusal_pause(lambda _: next(draws))
    gate.refused(second)
    assert 0.0 < second <= first == 0.2


async def test_a_shorter_retry_after_of_the_same_burst_does_not_cut_the_pause_short() -> None:
    """Another 429 of the burst asking for less must not end the pause the first one asked
    for: requests would then hit an org still over its limit."""
    waited: list[float] = []
    gate = RequestGate(rate_limit=1000, rate_period=1.0, budget=NO_BUDGET, on_wait=waited.append)
    gate.refused(0.2)
    gate.refused(0.01)  # answered while the first pause is on
    await gate.admit()
    assert waited[0] >= 0.2 - 1e-3


async def test_a_limit_above_the_sends_kept_is_reached_without_waiting() -> None:
    """Trimming the history past SENDS_KEPT must let go only of sends older than the period:
    those within it still count, and dropping them would make requests under the limit wait."""
    limit = ratelimit.SENDS_KEPT + 5
    gate = RequestGate(rate_limit=limit, rate_period=60.0, budget=NO_BUDGET)
    for _ in range(limit):
        assert await asyncio.wait_for(gate.admit(), timeout=5)
    waiting = asyncio.ensure_future(gate.admit())
    await asyncio.sleep(0)
    assert not waiting.done()  # the limit itself still holds
    waiting.cancel()
