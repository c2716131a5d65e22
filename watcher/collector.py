"""The cyclic garbage collector and ten thousand long-lived jobs.

Start-up builds objects that live as long as the watcher (a 10,000-job config's node tree while it
is read, then one state per job). Allocating them makes the collector scan the growing set over
and over without ever finding anything to free: a fifth to a half of the time those steps take.
So the collector is paused while they run, and what start-up built is then frozen out of its sight
for good. Reference counting frees everything as usual meanwhile.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """No cyclic collection inside the block; the collector resumes after it if it was on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def settle() -> None:
    """Everything alive now lives as long as the process: never walk it again at a collection."""
    gc.freeze()
