"""Shared fixtures: a simulator per test, and the check that no test ever printed a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.harness import ACCESS_TOKEN, PRINTED, SECRETS
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything any test's watcher printed contains a secret the tests used."""
    leaked = sorted({secret for secret in SECRETS for text in PRINTED if secret in text})
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        count = len(leaked)
        print(f"\nSECRET LEAK: {count} secret(s) appeared in watcher output", flush=True)
