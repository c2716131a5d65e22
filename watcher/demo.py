"""`zoho-job-watcher demo`: the real watcher against the built-in simulator, in one process.

The jobs are picked to show each interesting path in under half a minute: steady progress to
COMPLETED, a FAILED job, a 429 storm that pauses everybody, a slow server, and an id Zoho does not
know.
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.config import parse_config
from watcher.events import EventLog
from watcher.service import Watcher, serve
from watcher.simulator import Simulator

DEMO_TOKEN = "demo-access-token"

CONFIG = """
zoho:
  api_domain: {url}
  auth:
    access_token: ${{DEMO_TOKEN}}
polling:
  interval: 1s
  rate_limit: 5
  rate_period: 1s
  max_concurrency: 3
  backoff_initial: 500ms
  backoff_max: 4s
  request_timeout: 5s
  not_found_attempts: 3
jobs:
  - {{module: Leads, job_id: "554023000000506003"}}
  - {{module: Deals, job_id: "554023000000506011"}}
  - {{module: Contacts, job_id: "554023000000506027"}}
  - {{module: Accounts, job_id: "554023000000506042"}}
  - {{module: Quotes, job_id: "554023000000999999"}}
"""


def _script(simulator: Simulator) -> None:
    simulator.add_timed_job(
        "Leads", "554023000000506003", duration=6.0, total=50_000, scheduled_for=1.5
    )
    simulator.add_job(
        "Deals",
        "554023000000506011",
        [
            "SCHEDULED:0,0,0,400",
            "RUNNING:120,0,0,400",
            "RUNNING:200,90,0,400",
            "FAILED:200,200,0,400",
        ],
    )
    simulator.add_job(
        "Contacts",
        "554023000000506027",
        ["RUNNING:10,0,0,1000", "429:2", "429", "RUNNING:600,0,0,1000", "COMPLETED:995,5,0,1000"],
    )
    simulator.add_job(
        "Accounts",
        "554023000000506042",
        ["slow:2:RUNNING:30,0,0,80", "slow:3:RUNNING:60,0,0,80", "slow:2:COMPLETED:80,0,0,80"],
    )
    # Quotes 554023000000999999 is not scripted: the simulator answers "not found" for it.


async def run_demo(log: EventLog, signalled: Sequence[int] = ()) -> int:
    """Exit 0 once every demo job has ended, whatever its outcome: those are the demo's point.
    `signalled` as for `serve`."""
    async with Simulator(tokens=(DEMO_TOKEN,)) as simulator:
        _script(simulator)
        config = parse_config(CONFIG.format(url=simulator.url), "demo", {"DEMO_TOKEN": DEMO_TOKEN})
        log.add_token(DEMO_TOKEN)
        watcher = Watcher(config, log, exit_when_done=True, outcomes_decide_exit=False)
        return await serve(watcher, signalled)
