"""How a run ends: the first cause wins, and with it the reason and the exit code that
`watcher.stopped` says and the process returns."""

from __future__ import annotations

import asyncio

from watcher.events import EventLog
from watcher.state import StateError
from watcher.tracking import Tracker

EXIT_OK = 0
EXIT_JOB_NOT_COMPLETED = 1
EXIT_CONFIG = 2
EXIT_AUTH = 3


class Ending:
    """Whatever ends the run first (a signal, every job ended, credentials refused for good, a
    state file that stopped taking writes) decides its reason and exit code. Causes after it
    change nothing and are not said: the polls a refused token failed would each say so again.
    """

    def __init__(self, log: EventLog, *, exit_when_done: bool, outcomes_decide_exit: bool) -> None:
        self._log = log
        self._exit_when_done = exit_when_done
        # Off where failures are expected (the demo): the exit code, in `watcher.stopped` too,
        # then says only whether the watcher itself ran well.
        self._outcomes_decide_exit = outcomes_decide_exit
        self.finished = asyncio.Event()
        self.reason = "signal"
        self.exit_code = EXIT_OK

    def end(self, reason: str, exit_code: int) -> None:
        if not self.finished.is_set():
            self.reason, self.exit_code = reason, exit_code
            self.finished.set()

    def check_done(self, tracker: Tracker) -> None:
        """With `--exit-when-done`, the end once no tracked job is left to poll."""
        if self._exit_when_done and tracker.unfinished == 0:
            outcomes = tracker.outcomes
            failed = self._outcomes_decide_exit and outcomes.total() != outcomes["completed"]
            self.end("all_jobs_ended", EXIT_JOB_NOT_COMPLETED if failed else EXIT_OK)

    def auth_failed(self, code: str) -> None:
        """Credentials Zoho will never accept: say so once and end the run with exit code 3."""
        if not self.finished.is_set():
            self._log.log("error", "auth.failed", error=code)
        self.end("auth_failed", EXIT_AUTH)

    def state_failed(self, exc: StateError) -> None:
        """The state file stopped taking writes: stop rather than run on without memory."""
        if not self.finished.is_set():
            self._log.log("error", "state.failed", error=str(exc))
        self.end("state_failed", EXIT_CONFIG)

    def last_writes_failed(self, exc: StateError) -> None:
        """Writes no save waited on failed, and nothing saved after them to hear of it: said at
        the end, and a clean end is no longer one, since the state file does not hold what
        happened."""
        if self.reason == "state_failed":  # said already
            return
        self._log.log("error", "state.failed", error=str(exc))
        if self.exit_code in (EXIT_OK, EXIT_JOB_NOT_COMPLETED):
            self.reason, self.exit_code = "state_failed", EXIT_CONFIG
