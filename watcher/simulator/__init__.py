"""A loopback-only stand-in for Zoho's mass-update status endpoint and its OAuth token endpoint.

The watcher must cope with every way Zoho answers (progress, throttling, three shapes of "not
found", error objects with HTTP 200, dead connections), and none of that can be provoked on the
real service at will. Here each job answers from a script of steps, any request can be hijacked
with `inject`, and every request is recorded, so tests assert on what the watcher actually sent:
how often, how concurrently, with which token.

`Simulator(chaos=Chaos(...))` adds random faults at given rates for soak runs, and records which
statuses each job actually delivered, so a checker can tell what the watcher could have seen.
"""

from watcher.simulator.chaos import TOKEN_MIN_USES, Chaos
from watcher.simulator.server import RequestRecord, Simulator
from watcher.simulator.steps import NOT_FOUND_SHAPES

__all__ = [
    "NOT_FOUND_SHAPES",
    "TOKEN_MIN_USES",
    "Chaos",
    "RequestRecord",
    "Simulator",
]
