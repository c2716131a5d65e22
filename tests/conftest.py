"""Shared fixtures: a simulator per test, and the check that no test ever printed a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from tests.harness import ACCESS_TOKEN, PRINTED, SECRETS, STARTED, leaked_secrets
from watcher.simulator import Simulator


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    """Start simulators with any options; every token they issue joins the secrets to check."""
    started: list[Simulator] = []

    async def start(**options: Any) -> Simulator:
        simulator = Simulator(**{"tokens": (ACCESS_TOKEN,), **options})
        await simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        SECRETS.update(simulator.issued_tokens)
        await simulator.stop()


@pytest.fixture
async def sim(sim_factory: Callable[..., Awaitable[Simulator]]) -> Simulator:
    return await sim_factory()


@pytest.fixture(autouse=True)
def no_secret_in_output() -> Iterator[None]:
    """Fail the test (at teardown, so after every simulator has named its tokens) if anything a
    watcher printed during it contains a secret the tests used. The secrets are not shown."""
    start = len(PRINTED)
    yield
    leaked = leaked_secrets(PRINTED[start:], SECRETS)
    if leaked:
        pytest.fail(
            f"SECRET LEAK: {len(leaked)} secret(s) appeared in watcher output", pytrace=False
        )


@pytest_asyncio.fixture(autouse=True)
async def no_watcher_left(no_secret_in_output: None) -> AsyncIterator[None]:
    """A watcher a test started and did not see to its end (it failed first) is killed with the
    test, its output checked too: left running, it would load the machine for later tests."""
    start = len(STARTED)
    yield
    for watcher in STARTED[start:]:
        if not watcher.finished:
            watcher.kill()
            await watcher.finish()
    del STARTED[start:]
