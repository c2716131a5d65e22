"""Start-up pauses the cyclic collector and then freezes what it built."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from watcher import collector


@pytest.fixture
def collector_state() -> Iterator[None]:
    """Whatever a test does to the collector is undone after it."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.mark.usefixtures("collector_state")
def test_paused_stops_collection_inside_and_resumes_after() -> None:
    gc.enable()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_state")
def test_paused_leaves_a_collector_that_was_off_off() -> None:
    gc.disable()
    with collector.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


@pytest.mark.usefixtures("collector_state")
def test_paused_resumes_after_an_error_too() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collector.paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


@pytest.mark.usefixtures("collector_state")
def test_settle_takes_what_lives_now_out_of_the_collectors_sight() -> None:
    kept = [[index] for index in range(1000)]
    gc.unfreeze()
    collector.settle()
    assert gc.get_freeze_count() >= len(kept)
