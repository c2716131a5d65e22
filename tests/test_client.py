"""ZohoClient against the simulator: what one poll sends, and when it sends nothing."""

from __future__ import annotations

import aiohttp

from tests.harness import ACCESS_TOKEN
from watcher.client import ZohoClient
from watcher.config import JobSpec
from watcher.credits import CreditBudget
from watcher.ratelimit import RequestGate
from watcher.simulator import Simulator
from watcher.zoho_api import MASS_UPDATE


class SlowToRefresh:
    """A token source whose token dies while the request waits at the gate, so that it is
    asked for again; the job stops being wanted while that ask waits (a refresh backing off)."""

    api_domain: str | None = None

    def __init__(self) -> None:
        self.asked = 0

    async def token(self) -> str:
        self.asked += 1
        return ACCESS_TOKEN

    def usable(self) -> str | None:
        return ACCESS_TOKEN if self.asked > 1 else None

    async def rejected(self, token: str) -> bool:
        return False

    async def refused_for_good(self, token: str) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_job_no_longer_wanted_once_its_token_is_in_hand_is_not_asked_about(
    sim: Simulator,
) -> None:
    sim.add_job("Leads", "1", ["RUNNING"])
    tokens = SlowToRefresh()
    async with aiohttp.ClientSession() as session:
        gate = RequestGate(10, 1.0, CreditBudget(None, 0))
        client = ZohoClient(session, gate, tokens, sim.url, "v2", MASS_UPDATE)
        answer = await client.poll(JobSpec("Leads", "1"), lambda: tokens.asked < 2)
    assert answer is None
    assert tokens.asked == 2
    assert sim.requests == []
