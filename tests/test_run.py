"""End to end: the real CLI against the simulator, one test per row of the classification table."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from tests.harness import ACCESS_TOKEN, WatcherProcess, write_config
from watcher.simulator import Simulator

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$")
JOB = ("Leads", "554023000000506003")


async def watch(
    tmp_path: Path, sim: Simulator, jobs: list[tuple[str, str]], *extra: str, **polling: object
) -> WatcherProcess:
    config = write_config(tmp_path / "watcher.yaml", sim.url, jobs, **polling)
    return await WatcherProcess.start("run", "--config", str(config), *extra)


async def watch_to_end(
    tmp_path: Path, sim: Simulator, jobs: list[tuple[str, str]], **polling: object
) -> tuple[int, WatcherProcess]:
    watcher = await watch(tmp_path, sim, jobs, "--exit-when-done", **polling)
    return await watcher.finish(), watcher


async def transitions(
    tmp_path: Path, sim: Simulator, script: list[str]
) -> tuple[WatcherProcess, list[tuple[object, object]]]:
    """JOB watched to its end through `script` (exit 0): the run, and each (previous, new)
    status its job.status_changed events announced."""
    sim.add_job(*JOB, script)
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 0
    changes = [(e["previous_status"], e["status"]) for e in watcher.named("job.status_changed")]
    return watcher, changes


def finished(watcher: WatcherProcess, job_id: str) -> dict[str, object]:
    (event,) = [e for e in watcher.named("job.finished") if e["job_id"] == job_id]
    return event


async def test_progress_to_completed_emits_each_transition_once(
    tmp_path: Path, sim: Simulator
) -> None:
    script = ["SCHEDULED", "SCHEDULED", "RUNNING:10,0,0,100", "RUNNING:50,0,0,100"]
    watcher, changes = await transitions(tmp_path, sim, [*script, "COMPLETED:100,0,0,100"])
    assert changes == [(None, "SCHEDULED"), ("SCHEDULED", "RUNNING"), ("RUNNING", "COMPLETED")]
    done = finished(watcher, JOB[1])
    assert (done["outcome"], done["status"], done["polls"]) == ("completed", "COMPLETED", 5)
    assert done["updated_count"] == 100
    assert len(sim.requests_for(*JOB)) == 5  # nothing after the terminal status
    assert [e["event"] for e in watcher.events][:2] == ["watcher.started", "job.added"]
    assert watcher.events[-1]["event"] == "watcher.stopped"


async def test_a_queued_or_suspended_job_is_a_status_like_any_other(
    tmp_path: Path, sim: Simulator
) -> None:
    """Zoho's OpenAPI description names QUEUED and SUSPENDED (paused) besides the four of its
    pages: each is a transition to announce, not a failed poll to back off from."""
    script = ["QUEUED", "RUNNING:10,0,0,100", "SUSPENDED:10,0,0,100", "RUNNING:50,0,0,100"]
    watcher, changes = await transitions(tmp_path, sim, [*script, "COMPLETED:100,0,0,100"])
    assert changes == [
        (None, "QUEUED"),
        ("QUEUED", "RUNNING"),
        ("RUNNING", "SUSPENDED"),
        ("SUSPENDED", "RUNNING"),
        ("RUNNING", "COMPLETED"),
    ]
    assert watcher.named("job.poll_failed") == []


async def test_every_line_is_json_with_event_level_and_utc_timestamp(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["RUNNING", "COMPLETED"])
    _, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert watcher.not_json == []
    for event in watcher.events:
        assert isinstance(event["event"], str)
        assert event["level"] in {"debug", "info", "warning", "error"}
        assert ISO_UTC.match(event["timestamp"]), event["timestamp"]
    assert all(isinstance(e["job_id"], str) for e in watcher.events if "job_id" in e)


async def test_failed_job_exits_1(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["RUNNING", "FAILED:3,7,0,10"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 1
    done = finished(watcher, JOB[1])
    assert (done["outcome"], done["level"], done["failed_count"]) == ("failed", "error", 7)


async def test_completed_with_failures_is_logged_as_warning(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["COMPLETED:95,5,0,100"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 0
    assert finished(watcher, JOB[1])["level"] == "warning"


@pytest.mark.parametrize("shape", ["notfound204", "notfound404", "notfound400"])
async def test_not_found_after_three_consecutive_answers(
    tmp_path: Path, sim: Simulator, shape: str
) -> None:
    sim.add_job(*JOB, [shape])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 1
    assert finished(watcher, JOB[1])["outcome"] == "not_found"
    assert len(sim.requests_for(*JOB)) == 3
    failures = watcher.named("job.poll_failed")
    assert [e["attempt"] for e in failures] == [1, 2]
    polls = sim.requests_for(*JOB)
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(polls)]
    assert gaps[1] > gaps[0]  # backing off between not-found answers


@pytest.mark.parametrize(
    "code",
    [
        "INVALID_MODULE",
        "MANDATORY_NOT_FOUND",
        "INVALID_URL_PATTERN",
        "NO_PERMISSION",
        "AUTHORIZATION_FAILED",
        "OAUTH_SCOPE_MISMATCH",
        "INVALID_REQUEST_METHOD",
    ],
)
async def test_documented_refusals_end_the_job_as_rejected(
    tmp_path: Path, sim: Simulator, code: str
) -> None:
    sim.add_job(*JOB, [code, "COMPLETED"])
    exit_code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert exit_code == 1
    done = finished(watcher, JOB[1])
    assert (done["outcome"], done["error"]) == ("rejected", code)
    assert len(sim.requests_for(*JOB)) == 1


async def test_a_misspelt_module_ends_its_job_after_one_poll_and_the_others_go_on(
    tmp_path: Path, sim: Simulator
) -> None:
    """Not scripted: the simulator, like Zoho, knows which modules the org has."""
    sim.add_job(*JOB, ["RUNNING", "COMPLETED"])
    typo = ("Leadz", "554023000000506999")
    exit_code, watcher = await watch_to_end(tmp_path, sim, [JOB, typo])
    assert exit_code == 1
    assert finished(watcher, JOB[1])["outcome"] == "completed"
    done = finished(watcher, typo[1])
    assert (done["outcome"], done["error"]) == ("rejected", "INVALID_MODULE")
    assert len(sim.requests_for(*typo)) == 1


@pytest.mark.parametrize("shape", ["data200:INVALID_MODULE", "top200:INVALID_MODULE"])
async def test_error_objects_with_http_200_are_understood(
    tmp_path: Path, sim: Simulator, shape: str
) -> None:
    sim.add_job(*JOB, [shape])
    _, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert finished(watcher, JOB[1])["outcome"] == "rejected"


@pytest.mark.parametrize("answer", ["INVALID_TOKEN", "AUTHENTICATION_FAILURE"])
async def test_refused_fixed_token_stops_with_exit_3(
    tmp_path: Path, sim: Simulator, answer: str
) -> None:
    sim.add_job(*JOB, [answer])
    other = ("Deals", "42")
    sim.add_job(*other, ["RUNNING"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB, other])
    assert code == 3
    assert watcher.named("auth.failed")[0]["level"] == "error"
    assert watcher.events[-1]["event"] == "watcher.stopped"


async def test_a_token_zoho_does_not_know_is_an_auth_failure(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["RUNNING"])
    sim.revoke_tokens()
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 3
    assert watcher.named("auth.failed")[0]["error"] == "INVALID_TOKEN"


async def test_a_refused_fixed_token_is_said_once_and_not_sent_again(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = [("Deals", str(n)) for n in range(1, 21)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING"])
    sim.revoke_tokens()
    code, watcher = await watch_to_end(tmp_path, sim, jobs, max_concurrency=5)
    assert code == 3
    assert len(watcher.named("auth.failed")) == 1
    # Those already on their way when the first 401 came back, and no more.
    assert len(sim.requests) <= 5


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", "INTERNAL_ERROR"),
        ("503", "http_503"),
        ("malformed", "malformed_response"),
        ("badstatus", "unknown_status"),
        ("reset", "connection_error"),
        ("hang", "timeout"),
        # 16 KiB that unpack to 16 MiB: not unpacked whole, not parsed (nor held in memory).
        ("bomb", "response_too_large"),
        ("huge", "response_too_large"),  # 2 MiB as they are
        ("hugecode", "unrecognised_code"),  # a server's 10,000-character code: not shown
    ],
)
async def test_transient_faults_back_off_and_recover(
    tmp_path: Path, sim: Simulator, fault: str, error: str
) -> None:
    sim.add_job(*JOB, [fault, fault, "COMPLETED"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB], request_timeout="300ms")
    assert code == 0
    failures = watcher.named("job.poll_failed")
    # aiohttp itself retries a GET once when a reused keep-alive connection turns out closed
    # (RFC 9112 9.3.1), so a reset may cost the job fewer failures than the script holds.
    expected = [(1, error)] if fault == "reset" else [(1, error), (2, error)]
    assert [(e["attempt"], e["error"]) for e in failures][: len(expected)] == expected
    assert all(e["level"] == "warning" and e["retry_in_s"] > 0 for e in failures)
    assert finished(watcher, JOB[1])["outcome"] == "completed"


@pytest.mark.parametrize("limited", ["429:1", "huge429"])  # huge429: a 2 MiB body, not read
async def test_retry_after_is_honoured_and_pauses_every_job(
    tmp_path: Path, sim: Simulator, limited: str
) -> None:
    sim.add_job(*JOB, ["RUNNING", limited, "COMPLETED"])
    others = [("Deals", str(n)) for n in range(1, 4)]
    for other in others:
        sim.add_job(*other, ["RUNNING"] * 12 + ["COMPLETED"])
    code, watcher = await watch_to_end(
        tmp_path, sim, [JOB, *others], interval="50ms", max_interval="200ms", backoff_max="2s"
    )
    assert code == 0
    limited = next(r for r in sim.requests if r.http_status == 429)
    # Requests already on the wire when the 429 was sent may still land just after it.
    during = [r for r in sim.requests if limited.done + 0.1 < r.at < limited.done + 0.95]
    assert during == []
    assert any(r.at >= limited.done + 0.95 for r in sim.requests), "polling resumed"
    failed = watcher.named("job.poll_failed")[0]
    assert (failed["http_status"], failed["retry_in_s"]) == (429, 1.0)


async def test_429_without_retry_after_backs_off_and_pauses(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["RUNNING", "429", "COMPLETED"])
    other = ("Deals", "7")
    sim.add_job(*other, ["RUNNING"] * 12 + ["COMPLETED"])
    code, watcher = await watch_to_end(
        tmp_path,
        sim,
        [JOB, other],
        interval="50ms",
        max_interval="200ms",
        backoff_initial="500ms",
        backoff_max="1s",
    )
    assert code == 0
    limited = next(r for r in sim.requests if r.http_status == 429)
    retry_in = watcher.named("job.poll_failed")[0]["retry_in_s"]
    assert 0.4 <= retry_in <= 0.5
    during = [r for r in sim.requests if limited.done + 0.1 < r.at < limited.done + retry_in * 0.95]
    assert during == []


async def test_a_429_storm_pauses_longer_each_time_however_many_jobs_meet_it(
    tmp_path: Path, sim: Simulator
) -> None:
    """Each job that meets the storm asks only for its own first backoff; the org's pause must
    still double with every pause that ends in another 429, or twenty fresh jobs would knock on
    a full org twenty times as often as one job."""
    jobs = [("Leads", str(n)) for n in range(1, 21)]
    for job in jobs:
        sim.add_job(*job, ["429"])  # the storm never ends
    config = write_config(
        tmp_path / "w.yaml",
        sim.url,
        jobs,
        rate_limit=1000,
        backoff_initial="50ms",
        backoff_max="5s",
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    await sim.wait_for(lambda s: bool(s.requests) and s.requests[-1].at >= s.requests[0].at + 1.0)
    watcher.process.terminate()
    assert await watcher.finish() == 0
    first = sim.requests[0].at
    within_a_second = [r for r in sim.requests if r.at < first + 1.0]
    assert {r.http_status for r in within_a_second} == {429}
    # Pauses of 0.05, 0.1, 0.2, 0.4 s (each at least 0.8 of that): five bursts of five workers.
    # Without the doubling, a pause of one first backoff after each burst: about a hundred.
    assert len(within_a_second) <= 30
    assert "Traceback" not in watcher.stderr


async def test_a_retry_after_of_zero_waits_the_first_backoff(
    tmp_path: Path, sim: Simulator
) -> None:
    """A busy server's "now" is no invitation to hammer it (and a zero gap must not break the
    pace bookkeeping either)."""
    sim.add_job(*JOB, ["429:0", "COMPLETED"])
    code, watcher = await watch_to_end(
        tmp_path, sim, [JOB], backoff_initial="300ms", backoff_max="1s"
    )
    assert code == 0
    assert watcher.named("job.poll_failed")[0]["retry_in_s"] == 0.3
    first, second = sim.requests_for(*JOB)
    assert second.at - first.done >= 0.25
    assert "Traceback" not in watcher.stderr


async def test_a_job_retrying_fast_does_not_stretch_the_others_under_a_budget(
    tmp_path: Path, sim: Simulator
) -> None:
    """The credit budget paces jobs by their planned gaps; a retry's short delay is no pace, or
    one failing job would slow every other by the ratio of its backoff to their interval."""
    failing, steady = ("Deals", "1"), ("Deals", "2")
    sim.add_job(*failing, ["500"] * 40 + ["COMPLETED"])
    sim.add_job(*steady, ["RUNNING"] * 10 + ["COMPLETED"])
    code, _ = await watch_to_end(
        tmp_path,
        sim,
        [failing, steady],
        schedule="fixed",
        interval="100ms",
        backoff_initial="1ms",
        backoff_max="2ms",
        credits_per_day=4_000_000,  # four times what 10 polls a second spend: no stretch due
    )
    assert code == 0
    polls = [r.at for r in sim.requests_for(*steady)]
    assert max(later - earlier for earlier, later in itertools.pairwise(polls)) < 0.5


async def test_requests_stay_within_rate_limit_and_concurrency(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = [("Leads", str(n)) for n in range(30)]
    for job in jobs:
        sim.add_job(*job, ["slow:0.05:RUNNING", "slow:0.05:RUNNING", "slow:0.05:COMPLETED"])
    code, _ = await watch_to_end(
        tmp_path, sim, jobs, rate_limit=20, rate_period="500ms", max_concurrency=3
    )
    assert code == 0
    assert sim.max_in_flight <= 3
    arrivals = sorted(r.at for r in sim.requests)
    assert len(arrivals) == 90
    # Any window a little shorter than the period holds at most rate_limit arrivals (the margin
    # absorbs loopback jitter between the client's clock and the server's).
    assert max(sum(1 for t in arrivals if s <= t < s + 0.45) for s in arrivals) <= 20


async def test_aiohttps_own_retry_after_a_reset_still_keeps_the_rate_limit(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = [("Leads", str(n)) for n in range(6)]
    for job in jobs:
        sim.add_job(*job, ["RUNNING", "reset"] * 4 + ["COMPLETED"])
    code, _ = await watch_to_end(
        tmp_path,
        sim,
        jobs,
        rate_limit=4,
        rate_period="500ms",
        schedule="fixed",
        interval="10ms",
        max_interval="10ms",
        backoff_initial="10ms",
        backoff_max="20ms",
    )
    assert code == 0
    assert sum(r.answer == "reset" for r in sim.requests) > len(jobs)  # aiohttp did re-send
    arrivals = sorted(r.at for r in sim.requests)
    assert max(sum(1 for t in arrivals if s <= t < s + 0.45) for s in arrivals) <= 4


async def test_a_redirected_poll_is_not_followed(tmp_path: Path, sim: Simulator) -> None:
    """Followed, a redirect would carry the token wherever it points."""
    sim.add_job(*JOB, ["redirect", "COMPLETED"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB])
    assert code == 0
    assert [e["error"] for e in watcher.named("job.poll_failed")] == ["http_302"]
    assert [r.answer for r in sim.requests] == ["redirect", "COMPLETED"]


async def test_duplicate_pairs_are_tracked_once(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["COMPLETED"])
    code, watcher = await watch_to_end(tmp_path, sim, [JOB, JOB])
    assert code == 0
    assert len(watcher.named("job.added")) == 1
    assert len(sim.requests_for(*JOB)) == 1


async def test_daemon_keeps_running_after_jobs_end_and_stops_on_sigterm(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB])
    await watcher.wait_event("job.finished")
    assert watcher.process.returncode is None
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    assert watcher.named("watcher.stopped")[0]["reason"] == "signal"


async def test_sigterm_with_requests_hanging_exits_0_within_5s(
    tmp_path: Path, sim: Simulator
) -> None:
    jobs = [("Leads", str(n)) for n in range(4)]
    for job in jobs:
        sim.add_job(*job, ["hang"])
    watcher = await watch(tmp_path, sim, jobs, request_timeout="10m", max_concurrency=4)
    await sim.wait_for(lambda s: len(s.requests) == 4)
    watcher.process.terminate()
    assert await watcher.finish(timeout=5) == 0
    assert watcher.events[-1]["event"] == "watcher.stopped"


async def test_log_level_filters_and_console_format_renders_for_people(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["500", "COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB], "--exit-when-done", "--log-level", "warning")
    assert await watcher.finish() == 0
    assert {e["level"] for e in watcher.events} == {"warning"}
    console = await watch(
        tmp_path, sim, [("Deals", "9")], "--exit-when-done", "--log-format", "console"
    )
    assert await console.finish() == 1
    assert console.events == []
    assert any("job.finished" in line for line in console.not_json)


async def test_debug_level_says_what_each_poll_found_and_when_the_next_comes(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["RUNNING", "500", "COMPLETED"])
    watcher = await watch(tmp_path, sim, [JOB], "--exit-when-done", "--log-level", "debug")
    assert await watcher.finish() == 0
    polled = [(e["result"], e["next_poll_in_s"]) for e in watcher.named("job.polled")]
    assert [result for result, _ in polled] == ["observed", "transient", "observed"]
    assert all(gap is not None and gap > 0 for _, gap in polled[:2])
    assert polled[2][1] is None
    assert len(polled) == len(sim.requests_for(*JOB))
    assert all(e["level"] == "debug" and e["job_id"] == JOB[1] for e in watcher.named("job.polled"))
    quiet = await watch(tmp_path, sim, [("Deals", "9")], "--exit-when-done")
    await quiet.finish()
    assert quiet.named("job.polled") == []


async def test_job_polled_gives_the_gap_the_credit_budget_stretched(
    tmp_path: Path, sim: Simulator
) -> None:
    """What the next credit is spent after, not what the schedule alone would have said."""
    sim.add_job(*JOB, ["RUNNING"])
    watcher = await watch(
        tmp_path, sim, [JOB], "--log-level", "debug", schedule="fixed", credits_per_day=8640
    )  # one job polled every 100 ms against 0.1 credit a second: gaps stretched a hundredfold
    polled = await watcher.wait_event("job.polled")
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert polled["next_poll_in_s"] == pytest.approx(10.0, rel=0.1)


async def test_the_token_never_reaches_the_output(tmp_path: Path, sim: Simulator) -> None:
    sim.add_job(*JOB, ["500", "INVALID_TOKEN"])
    watcher = await watch(tmp_path, sim, [JOB], "--exit-when-done", "--log-level", "debug")
    assert await watcher.finish() == 3
    printed = "".join(watcher.lines) + watcher.stderr
    assert ACCESS_TOKEN not in printed
    assert "Zoho-oauthtoken" not in printed


async def test_a_good_answer_ends_the_storm_so_the_next_429_pauses_briefly(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["429", "429", "429", "429", "RUNNING", "429", "COMPLETED"])
    code, _ = await watch_to_end(
        tmp_path,
        sim,
        [JOB],
        rate_limit=1000,
        interval="50ms",
        backoff_initial="100ms",
        backoff_max="5s",
    )
    assert code == 0
    last_429, completed = sim.requests_for(*JOB)[-2:]
    assert last_429.http_status == 429
    # A fresh storm: the first backoff (0.08-0.1 s), not the fifth pause in a row (1.28-1.6 s).
    assert completed.at - last_429.done < 0.6
