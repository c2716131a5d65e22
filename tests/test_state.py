"""The state store: saves survive close, crash and SIGKILL; bad files are refused, untouched."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import re
import signal
import sqlite3
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from watcher.schedule import Sample
from watcher.state import (
    SCHEMA_VERSION,
    JobRecord,
    StateError,
    StateStore,
    StoredToken,
)
from watcher.state.schema import set_up
from watcher.status import show_status, state_file

ROOT = Path(__file__).resolve().parents[1]
TOKEN = StoredToken(
    "1000.secret-access-token.abc",
    expires_at=1_700_003_600.0,
    api_domain="x",
    issued_for="d1",
    asked=(1_700_000_000.0, 1_700_000_042.5),
)


def job(job_id: str = "554023000000506003", **changes: object) -> JobRecord:
    record = JobRecord(
        module="Leads",
        job_id=job_id,
        status="RUNNING",
        counts={"failed_count": 0, "updated_count": 10, "not_updated_count": None},
        emitted_status="RUNNING",
        outcome=None,
        error=None,
        polls=3,
        first_seen=1_700_000_000.25,
        last_seen=1_700_000_030.5,
        finished_at=None,
        removed_at=None,
    )
    return record._replace(**changes)


def finished(job_id: str, finished_at: float, removed_at: float | None) -> JobRecord:
    return job(job_id, outcome="completed", finished_at=finished_at, removed_at=removed_at)


def stored(path: Path, job_id: str) -> tuple[object, ...] | None:
    """The row as another process would read it now, bypassing the store."""
    with contextlib.closing(sqlite3.connect(path)) as other:
        row: tuple[object, ...] | None = other.execute(
            "SELECT status, polls FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
    return row


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture
def umask() -> Iterator[None]:
    """A permissive umask, so that a file SQLite created itself would not come out 0600."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def test_jobs_and_token_survive_close_and_reopen(path: Path) -> None:
    store = await StateStore.open(path)
    assert (store.jobs, store.token) == ({}, None)
    records = [
        job("1"),
        job("2", status=None, counts={}, emitted_status=None, polls=0, last_seen=None),
        finished("3", 1_700_000_100.0, 1_700_000_200.0)._replace(module="Deals"),
        job("4", status=None, outcome="rejected", error="INVALID_MODULE", finished_at=1.0),
    ]
    for record in records:
        store.save(record)
    await store.save_token(TOKEN)
    expected = {(r.module, r.job_id): r for r in records}
    assert (store.jobs, store.token) == (expected, TOKEN)
    await store.close()

    again = await StateStore.open(path)
    assert (again.jobs, again.token) == (expected, TOKEN)
    await again.close()


async def test_a_none_is_bound_as_null_by_an_adapter_found_at_once(path: Path) -> None:
    """Without an adapter registered for None, Python 3.11's sqlite3 builds and drops an
    AttributeError for every None a save binds (several a row): the store registers one, and a
    None still reaches the file as NULL."""
    assert (type(None), sqlite3.PrepareProtocol) in sqlite3.adapters
    store = await StateStore.open(path)
    await store.save_durably(job(status=None, last_seen=None))
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as other:
        row = other.execute("SELECT typeof(status), typeof(last_seen), polls FROM jobs").fetchone()
    assert row == ("null", "null", 3)


async def test_counts_any_json_can_hold_survive_a_reopen(path: Path) -> None:
    store = await StateStore.open(path)
    big = job("big", counts={"updated_count": 2**70, "failed_count": None})
    await store.save_durably(big)
    await store.close()
    reopened = await StateStore.open(path)
    assert reopened.jobs[("Leads", "big")].counts == {"updated_count": 2**70, "failed_count": None}
    await reopened.close()


async def test_the_last_save_of_a_job_wins(path: Path) -> None:
    store = await StateStore.open(path)
    for polls in (1, 2, 3):
        store.save(job(polls=polls))
    await store.close()
    again = await StateStore.open(path)
    assert [r.polls for r in again.jobs.values()] == [3]
    await again.close()


async def test_a_durable_save_is_visible_to_another_connection_when_it_returns(
    path: Path,
) -> None:
    store = await StateStore.open(path)
    await store.save_durably(job(status="QUEUED", polls=1))
    assert stored(path, job().job_id) == ("QUEUED", 1)
    await store.close()


async def test_a_durable_save_is_not_overtaken_by_an_earlier_lazy_one(path: Path) -> None:
    store = await StateStore.open(path)
    store.save(job(status="RUNNING", polls=4))
    await store.save_durably(job(status="COMPLETED", polls=5))
    assert stored(path, job().job_id) == ("COMPLETED", 5)
    await store.close()
    assert stored(path, job().job_id) == ("COMPLETED", 5)


async def test_concurrent_durable_saves_share_commits(path: Path) -> None:
    store = await StateStore.open(path)
    saves = 1000
    await asyncio.gather(*(store.save_durably(job(str(n))) for n in range(saves)))
    assert 1 <= store.commits <= saves // 10
    with sqlite3.connect(path) as other:
        assert other.execute("SELECT count(*) FROM jobs").fetchone() == (saves,)
    await store.close()


async def test_ten_thousand_lazy_saves_are_committed_together(path: Path) -> None:
    store = await StateStore.open(path)
    for n in range(10_000):
        store.save(job(str(n), polls=n))
    await store.close()
    again = await StateStore.open(path)
    assert len(again.jobs) == 10_000
    assert again.jobs[("Leads", "9999")].polls == 9999
    await again.close()


async def test_prune_forgets_jobs_out_of_the_config_since_before_the_cutoff(path: Path) -> None:
    """Finished ones by when they finished; the others (removed while running, or while their end
    was being saved) by when they were removed, or each would leave a record behind for good."""
    cutoff = 1_700_001_000.0
    store = await StateStore.open(path)
    records = [
        finished("old-removed", cutoff - 1, removed_at=cutoff + 5),  # these three go
        job("running-removed-long-ago", removed_at=cutoff - 1),
        job("end-unsaid-removed-long-ago", outcome="completed", removed_at=cutoff - 1),
        finished("at-cutoff-removed", cutoff, removed_at=cutoff),
        job("running-removed-at-cutoff", removed_at=cutoff),
        finished("new-removed", cutoff + 1, removed_at=cutoff + 5),
        finished("old-configured", cutoff - 1, removed_at=None),
        job("running-removed-lately", removed_at=cutoff + 1),
        job("running-configured", removed_at=None),
    ]
    for record in records:
        store.save(record)
    assert await store.prune(cutoff) == 3
    kept = {r.job_id for r in records[3:]}
    assert {job_id for _, job_id in store.jobs} == kept
    await store.close()
    again = await StateStore.open(path)
    assert {job_id for _, job_id in again.jobs} == kept
    await again.close()


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize("made_before", [False, True])
async def test_the_file_is_private_and_its_directory_created(
    tmp_path: Path, made_before: bool
) -> None:
    path = tmp_path / "not" / "yet" / "state.db"
    if made_before:  # by `touch`, say, or a volume's defaults: readable by all
        path.parent.mkdir(parents=True)
        path.touch(mode=0o644)
    store = await StateStore.open(path)
    await store.save_durably(job())
    await store.save_token(TOKEN)
    for name in ("state.db", "state.db-wal", "state.db.lock"):
        assert (path.parent / name).stat().st_mode & 0o777 == 0o600, name
    await store.close()


async def test_one_writer_at_a_time_and_readers_alongside(path: Path) -> None:
    store = await StateStore.open(path)
    with pytest.raises(StateError, match="another watcher is using it"):
        await StateStore.open(path)
    reader = await StateStore.open(path, writer=False)
    await reader.close()
    await store.close()
    await (await StateStore.open(path)).close()  # closed, the first let go of the lock


async def test_one_writer_even_when_the_second_reaches_the_file_by_a_symbolic_link(
    path: Path,
) -> None:
    """Each would poll every job and announce every change again."""
    store = await StateStore.open(path)
    (path.parent / "elsewhere").mkdir()
    link = path.parent / "elsewhere" / "other-name.db"
    link.symlink_to(path)
    with pytest.raises(StateError, match="another watcher is using it"):
        await StateStore.open(link)
    await store.close()


async def test_a_watcher_by_a_link_also_holds_the_lock_beside_the_link(path: Path) -> None:
    """Where earlier builds took it: one of those still on the file is refused too."""
    (path.parent / "elsewhere").mkdir()
    link = path.parent / "elsewhere" / "other-name.db"
    link.symlink_to(path)
    store = await StateStore.open(link)
    beside_link = os.open(link.with_name("other-name.db.lock"), os.O_RDWR)
    with pytest.raises(BlockingIOError):
        fcntl.flock(beside_link, fcntl.LOCK_EX | fcntl.LOCK_NB)
    await store.close()
    fcntl.flock(beside_link, fcntl.LOCK_EX | fcntl.LOCK_NB)  # let go at close
    os.close(beside_link)


async def test_a_directory_reached_by_a_link_is_locked_once(path: Path) -> None:
    (path.parent / "via").symlink_to(path.parent)
    store = await StateStore.open(path.parent / "via" / path.name)
    with pytest.raises(StateError, match="another watcher is using it"):
        await StateStore.open(path)
    await store.close()


async def test_a_file_that_cannot_be_made_private_is_refused(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_owner(descriptor: int, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchmod", not_owner)
    with pytest.raises(StateError, match=r"cannot make it private \(mode 0600\): Operation not"):
        await StateStore.open(path)


def random_bytes(path: Path) -> None:
    path.write_bytes(random.Random(4).randbytes(8192))


def truncated(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (n INTEGER, pad TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)", ((n, "x" * 200) for n in range(5000)))
    db.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def foreign(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    db.close()


def newer_schema(path: Path) -> None:
    asyncio.run(_close_new_store(path))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.close()


# The schema zoho-job-watcher 0.1 wrote as version 1, with one job it had finished.
SCHEMA_1 = """
PRAGMA application_id = 2053797681;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
INSERT INTO meta VALUES ('schema_version', '1');
CREATE TABLE jobs (
    module TEXT NOT NULL, job_id TEXT NOT NULL, status TEXT, counts TEXT NOT NULL,
    emitted_status TEXT, outcome TEXT, polls INTEGER NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL, finished_at REAL, removed_at REAL, PRIMARY KEY (module, job_id)
) WITHOUT ROWID;
CREATE TABLE token (
    id INTEGER PRIMARY KEY CHECK (id = 1), access_token TEXT NOT NULL, expires_at REAL NOT NULL,
    api_domain TEXT
);
INSERT INTO jobs VALUES ('Leads', '7', 'COMPLETED', '{"total_count": 7}', 'COMPLETED',
    'completed', 4, 1.0, 2.0, 2.0, NULL);
"""


def write_schema_1(path: Path, version: str = "1") -> None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(
            SCHEMA_1.replace("'schema_version', '1'", f"'schema_version', '{version}'")
        )


async def test_credits_spent_are_kept_in_order_until_forgotten(path: Path) -> None:
    store = await StateStore.open(path)
    for at in (30.0, 10.0, 20.0):
        store.save_spent(at)
    await store.close()
    again = await StateStore.open(path)
    assert again.spent == [10.0, 20.0, 30.0]
    again.save_spent(90.0)  # stamped by a wall clock that has since been set back
    again.forget_spent(before=20.0, now=40.0)
    await again.close()
    look = await StateStore.open(path, writer=False)
    assert look.spent == [20.0, 30.0, 40.0]  # the future one as spent now: it ages out
    await look.close()


async def test_a_file_of_schema_1_is_upgraded_and_keeps_its_jobs(path: Path) -> None:
    write_schema_1(path)
    store = await StateStore.open(path)
    kept = job("7", counts={"total_count": 7}, status="COMPLETED", emitted_status="COMPLETED")
    kept = kept._replace(outcome="completed", polls=4, first_seen=1.0, last_seen=2.0)
    assert store.jobs == {("Leads", "7"): kept._replace(finished_at=2.0)}
    await store.save_durably(job("8", outcome="rejected", error="NO_PERMISSION"))
    await store.save_durably(
        job("9")._replace(
            next_poll_at=1_700_000_100.0,
            planned_gap=60.0,
            failures=2,
            not_found=1,
            samples=(Sample(1_700_000_040.0, "RUNNING", 5, None),),
        )
    )
    store.save_spent(1_700_000_050.0)
    store.save_reading(1_700_000_060.0, 42)
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(SCHEMA_VERSION),
        )
    again = await StateStore.open(path)
    assert again.jobs[("Leads", "8")].error == "NO_PERMISSION"
    kept = again.jobs[("Leads", "9")]
    assert (kept.next_poll_at, kept.planned_gap, kept.failures, kept.not_found) == (
        1_700_000_100.0,
        60.0,
        2,
        1,
    )
    assert kept.samples == (Sample(1_700_000_040.0, "RUNNING", 5, None),)
    assert again.spent == [1_700_000_050.0]
    assert again.reading == (1_700_000_060.0, 42)
    await again.close()


async def test_an_upgrade_that_fails_leaves_the_file_as_it_was(path: Path) -> None:
    write_schema_1(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE jobs ADD COLUMN error TEXT")  # the upgrade's step then fails
    with pytest.raises(StateError, match=r"cannot bring it to schema version 3 \(duplicate col"):
        await StateStore.open(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "1",
        )


def test_a_look_does_not_upgrade_a_file_an_older_watcher_may_still_use(path: Path) -> None:
    write_schema_1(path)
    before = path.read_bytes()
    with pytest.raises(
        StateError, match="schema version 1, this zoho-job-watcher reads 3: run its watcher once"
    ):
        asyncio.run(StateStore.open(path, writer=False))
    assert path.read_bytes() == before


@pytest.mark.parametrize("make", [write_schema_1, lambda path: path.touch()])
async def test_a_set_up_another_opener_finished_first_is_not_done_again(
    path: Path, make: Callable[[Path], None]
) -> None:
    """Two watchers open an old or new file at once: both saw it needing work before the lock;
    the one that gets the lock second must find the work done, not fail on it."""
    make(path)
    late = sqlite3.connect(path, isolation_level=None)  # has seen the file as it was
    await (await StateStore.open(path)).close()  # the other opener, first to the lock
    with contextlib.closing(late):
        set_up(late, path)
    again = await StateStore.open(path)
    assert again.jobs.keys() <= {("Leads", "7")}
    await again.close()


def schema_0(path: Path) -> None:
    """A version no watcher wrote and none can upgrade."""
    write_schema_1(path, version="0")


def without_meta(path: Path) -> None:
    """Our mark in the header, but not all of our tables: a file we never wrote whole."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id = 2053797681")  # 0x7A6A7731, "zjw1"
        db.execute("CREATE TABLE jobs (module TEXT)")
    db.close()


def edited(*statements: str, with_job: bool = True) -> Callable[[Path], None]:
    """Makes a state file of ours (holding job "edited"), then edits it by hand."""

    def make(path: Path) -> None:
        asyncio.run(_close_new_store(path, *((job("edited"),) if with_job else ())))
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            for statement in statements:
                db.execute(statement)

    return make


SAMPLES_OF_JOB = "samples of job edited are not a list of status rows"
READING = "the last count of credits left is not [time, number]"


async def _close_new_store(path: Path, *records: JobRecord) -> None:
    store = await StateStore.open(path)
    for record in records:
        store.save(record)
    await store.close()


@pytest.mark.parametrize("kind", ["fifo", "directory"])
@pytest.mark.parametrize("writer", [True, False])
def test_what_is_no_regular_file_is_refused_at_once(path: Path, kind: str, writer: bool) -> None:
    """A FIFO would block the open for good (SIGTERM could not stop it)."""
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    with pytest.raises(StateError, match="not a regular file"):
        asyncio.run(asyncio.wait_for(StateStore.open(path, writer=writer), timeout=10))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no lock, no journal


@pytest.mark.parametrize("make", [random_bytes, foreign])
@pytest.mark.parametrize("writer", [True, False])
def test_someone_elses_file_keeps_its_mode(
    path: Path, make: Callable[[Path], None], writer: bool
) -> None:
    """A `state_path` pointed at the wrong file must not make it private (0600) as a side
    effect: only a file shown to be ours is."""
    make(path)
    path.chmod(0o644)
    with pytest.raises(StateError, match="is not a zoho-job-watcher state file"):
        asyncio.run(StateStore.open(path, writer=writer))
    assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (random_bytes, "is not a zoho-job-watcher state file"),
        (truncated, "malformed"),
        (foreign, "is not a zoho-job-watcher state file"),
        (newer_schema, "written by a newer zoho-job-watcher (schema version 99"),
        (without_meta, "has schema version none"),
        (schema_0, f"has schema version 0, this watcher knows {SCHEMA_VERSION}"),
        (
            edited("UPDATE jobs SET counts = '[1, 2]'"),
            "counts of job edited are not a JSON object",
        ),
        (
            edited(
                "INSERT INTO meta VALUES ('token_asked', '[\"yesterday\"]')",
                "INSERT INTO token VALUES (1, 'a', 1.0, NULL)",
                with_job=False,
            ),
            "token refreshes are not a list of numbers",
        ),
        (edited("""UPDATE jobs SET samples = '[[1.0, "RUNNING", "many", 10]]'"""), SAMPLES_OF_JOB),
        (edited("""UPDATE jobs SET samples = '[[NaN, "RUNNING", 1, 10]]'"""), SAMPLES_OF_JOB),
        (
            edited(f"""UPDATE jobs SET samples = '[[{"9" * 400}, "RUNNING", 1, 10]]'"""),
            SAMPLES_OF_JOB,
        ),
        # SQLite keeps any value in any column: a text where a time belongs failed later, as
        # a traceback (exit 1, which says a job failed).
        *(
            (edited(f"UPDATE jobs SET {column} = {value}"), f"the {column} of job 'edited' is")
            for column, value in [
                ("first_seen", "'2026-11-29'"),
                ("next_poll_at", "'abc'"),
                ("polls", "'many'"),
                ("removed_at", "'soon'"),
                ("outcome", "x'00'"),
            ]
        ),
        (edited("DROP TABLE jobs"), "is damaged (no such table: jobs)"),
        (
            edited("INSERT INTO token VALUES (1, 'a', 'soon', NULL)", with_job=False),
            "the kept token is not a token, a time and an API domain",
        ),
        (
            edited("""UPDATE jobs SET counts = '{"total_count": "a"}'"""),
            "counts of job 'edited' are not all counts",
        ),
        (edited("INSERT INTO meta VALUES ('credits_reading', '[Infinity, 5]')"), READING),
        (edited("INSERT INTO meta VALUES ('credits_reading', '{\"left\": 3}')"), READING),
    ],
)
def test_a_bad_file_is_refused_and_left_as_it_was(
    path: Path, make: Callable[[Path], None], problem: str
) -> None:
    make(path)
    before = path.read_bytes()
    with pytest.raises(StateError) as caught:
        asyncio.run(StateStore.open(path))
    message = str(caught.value)
    assert problem in message
    assert str(path) in message
    assert "move the file aside" in message
    assert "\n" not in message
    assert "Traceback" not in message
    assert path.read_bytes() == before


@pytest.mark.parametrize("where", ["under a file", "a directory"])
async def test_an_unusable_path_is_refused(tmp_path: Path, where: str) -> None:
    (tmp_path / "afile").write_text("")
    path = tmp_path / "afile" / "state.db" if where == "under a file" else tmp_path
    with pytest.raises(StateError) as caught:
        await StateStore.open(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message


def fill_up(path: Path) -> None:
    """From now on every save fails, as it would on a full disk."""
    with contextlib.closing(sqlite3.connect(path)) as other, other:
        other.execute(
            "CREATE TRIGGER full BEFORE INSERT ON jobs BEGIN SELECT RAISE(FAIL, 'disk full'); END"
        )


def copy_over(path: Path) -> None:
    """Replace the file with a copy of itself, as restoring a backup would: same content, a
    different file."""
    copy = path.with_name("copy.db")
    copy.write_bytes(path.read_bytes())
    copy.replace(path)


async def test_a_writer_failure_fails_pending_and_later_saves(path: Path) -> None:
    store = await StateStore.open(path)
    await store.save_durably(job("before"))
    fill_up(path)
    results = await asyncio.gather(
        *(store.save_durably(job(str(n))) for n in range(20)), return_exceptions=True
    )
    assert all(isinstance(result, StateError) for result in results)
    assert "disk full" in str(results[0])
    assert str(path) in str(results[0])
    with pytest.raises(StateError):
        store.save(job("after"))
    with pytest.raises(StateError):
        await store.save_durably(job("after"))
    with pytest.raises(StateError, match="disk full"):
        await store.close()


async def test_a_failed_save_nobody_waited_on_fails_close(path: Path) -> None:
    store = await StateStore.open(path)
    fill_up(path)
    store.save(job("lazy"))
    with pytest.raises(StateError, match="disk full"):
        await store.close()


def delete(path: Path) -> None:
    for file in path.parent.glob(f"{path.name}*"):
        file.unlink()


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [(delete, "deleted while the watcher ran"), (copy_over, "replaced while the watcher ran")],
)
async def test_a_state_file_deleted_or_replaced_while_running_fails_the_next_save(
    path: Path, tamper: Callable[[Path], None], problem: str
) -> None:
    """SQLite would write on into a file no restart will read."""
    store = await StateStore.open(path)
    await store.save_durably(job("before"))
    tamper(path)
    with pytest.raises(StateError, match=problem):
        await store.save_durably(job("after"))
    with pytest.raises(StateError):
        await store.close()


async def test_close_is_idempotent_and_later_saves_are_refused(path: Path) -> None:
    store = await StateStore.open(path)
    store.save(job())
    await asyncio.gather(store.close(), store.close())
    await store.close()
    with pytest.raises(StateError):
        store.save(job())
    assert stored(path, job().job_id) is not None


CRASH = """
import asyncio, os, signal, sys
from pathlib import Path
from watcher.state import JobRecord, StateStore

async def main() -> None:
    store = await StateStore.open(Path(sys.argv[1]))
    base = dict(module="Leads", status="COMPLETED", counts={"total_count": 7},
                emitted_status="COMPLETED", outcome="completed", error=None, polls=9,
                first_seen=1.0, last_seen=2.0, finished_at=2.0, removed_at=None)
    store.save(JobRecord(job_id="lazy", **base))
    await store.save_durably(JobRecord(job_id="durable", **base))
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_a_durable_save_survives_sigkill(path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH, str(path), env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    store = await StateStore.open(path)
    assert set(store.jobs) == {("Leads", "lazy"), ("Leads", "durable")}
    assert store.jobs[("Leads", "durable")].counts == {"total_count": 7}
    await store.close()


def test_a_stored_token_never_shows_in_its_repr() -> None:
    assert TOKEN.access_token not in repr(TOKEN)


async def test_the_writes_of_one_turn_of_the_event_loop_share_one_commit(path: Path) -> None:
    store = await StateStore.open(path)
    for n in range(100):
        store.save(job(str(n)))
    await store.save_durably(job("100"))
    assert store.commits == 1
    await store.close()


async def test_our_file_found_read_only_is_made_private_before_sqlite_opens_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite opens a file its owner may not write read-only, and keeps it so: made 0600 only
    afterwards (as a read-only backup restores it, 0444), the first save failed."""
    await (await StateStore.open(path)).close()
    os.chmod(path, 0o444)
    modes: list[int] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        modes.append(path.stat().st_mode & 0o777)
        return connect(*args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    store = await StateStore.open(path)
    await store.save_durably(job())
    await store.close()
    assert modes == [0o600]


async def test_a_save_whose_caller_was_cancelled_holds_back_no_other_in_its_commit(
    path: Path,
) -> None:
    """A stop cancels the polls waiting for their saves: the others of the same commit must still
    be told theirs is kept, or they would wait for ever."""
    store = await StateStore.open(path)
    first = store.save_durably(job("1"))
    second = store.save_durably(job("2"))  # the same turn of the loop: the same commit
    first.cancel()
    assert await asyncio.wait_for(second, 5) == 1
    await store.close()


async def test_the_state_file_runs_with_synchronous_normal(path: Path) -> None:
    """NORMAL in WAL mode: a crash of the process loses nothing, and a power cut at most the
    last commits, never the file."""
    store = await StateStore.open(path)
    (level,) = store._connection.execute("PRAGMA synchronous").fetchone()
    await store.close()
    assert level == 1


# --- `zoho-job-watcher status` ---


async def test_status_lists_every_job_oldest_first_without_the_schedule_samples(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await StateStore.open(path)
    samples = (Sample(1_700_000_000.0, "RUNNING", 0, 10),)
    store.save(job("newer", first_seen=1_700_000_200.0, samples=samples))
    store.save(job("older", first_seen=1_700_000_100.0))
    await store.close()
    await show_status(path, as_json=True)
    shown = json.loads(capsys.readouterr().out)
    assert [j["job_id"] for j in shown] == ["older", "newer"]
    assert all("samples" not in j for j in shown)  # the schedule's, not the user's


async def test_status_table_says_removed_and_shows_a_zero_zoho_gave(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await StateStore.open(path)
    counts = {"updated_count": 0, "failed_count": 0, "total_count": 0}
    store.save(job("7", counts=counts, removed_at=1_700_000_050.0))
    await store.close()
    await show_status(path, as_json=False)
    header, row = (re.split(r"\s{2,}", line) for line in capsys.readouterr().out.splitlines())
    shown = dict(zip(header, row, strict=True))
    assert (shown["OUTCOME"], shown["DONE"], shown["TOTAL"]) == ("removed", "0", "0")


async def test_status_reads_the_file_a_running_watcher_holds(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await StateStore.open(path)
    await running.save_durably(job("1"))
    try:
        await show_status(path, as_json=True)
    finally:
        await running.close()
    assert [j["job_id"] for j in json.loads(capsys.readouterr().out)] == ["1"]


def test_status_of_a_mistyped_state_path_says_there_is_no_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no state file at"):
        state_file(tmp_path / "typo.db")
    assert not (tmp_path / "typo.db").exists()
