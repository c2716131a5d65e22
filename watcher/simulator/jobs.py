"""What the simulated org holds: jobs answering from a script or from the clock, and the access
tokens it accepts."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from watcher.simulator.steps import Step, parse_step


class ScriptedJob:
    def __init__(self, steps: Iterable[Step]) -> None:
        self._steps = deque(steps)
        if not self._steps:
            raise ValueError("a job script needs at least one step")

    def next_step(self, now: float) -> Step:
        """One step per poll; the last one repeats forever."""
        return self._steps.popleft() if len(self._steps) > 1 else self._steps[0]

    @property
    def final_status(self) -> str | None:
        return self._steps[-1].reports


@dataclass
class TimedJob:
    duration: float
    total: int
    scheduled_for: float
    outcome: str
    failed: int
    first_poll: float | None = None

    def next_step(self, now: float) -> Step:
        """Progress follows the clock from the first poll, like a real job the watcher found."""
        if self.first_poll is None:
            self.first_poll = now
        running_for = now - self.first_poll - self.scheduled_for
        done = self.total - self.failed
        if running_for < 0:
            return parse_step(f"SCHEDULED:0,0,0,{self.total}")
        if running_for < self.duration:
            return parse_step(f"RUNNING:{int(done * running_for / self.duration)},0,0,{self.total}")
        return parse_step(f"{self.outcome}:{done},{self.failed},0,{self.total}")

    @property
    def final_status(self) -> str:
        return self.outcome


@dataclass
class Grant:
    """An access token the simulator accepts, until a deadline or a number of uses."""

    expires_at: float
    uses_left: int | None
    used: int = 0

    def use(self, now: float) -> bool:
        if now >= self.expires_at or self.uses_left == 0:
            return False
        if self.uses_left is not None:
            self.uses_left -= 1
        self.used += 1
        return True
