"""Shared fixtures: a simulator per test, and the check that no test ever printed a secret."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import PRINTED, SECRETS
from watcher.simulator import Simulator


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator(tokens=("sim-token",)) as simulator:
        yield simulator


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything any test's watcher printed contains a secret the tests used."""
    leaked = sorted({secret for secret in SECRETS for text in PRINTED if secret in text})
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        count = len(leaked)
        print(f"\nSECRET LEAK: {count} secret(s) appeared in watcher output", flush=True)
