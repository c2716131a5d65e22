"""What the watcher remembers across restarts: every job it has seen and the access token.

The watcher runs for months and may be SIGKILLed at any moment, so the rule is that state is
committed before the event it records is emitted: at worst an event is emitted twice after a crash,
never lost. The file is SQLite in WAL mode with `synchronous=NORMAL`, which survives a crash of the
process (not of the machine) without an fsync per commit.

Commits never run on the event loop. One writer thread owns the connection and commits everything
queued since its last commit in one transaction (group commit), so ten thousand jobs polling cost a
handful of commits, not ten thousand. Writes reach it once per turn of the event loop, all of that
turn's together: a commit costs far more than a row, so the more each one carries, the better.
Everything is read once, at open; nothing reads at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import math
import operator
import os
import queue
import sqlite3
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import orjson

SCHEMA_VERSION = 3
# Marks the file as ours in SQLite's header, so another program's database is recognised as such
# instead of being mistaken for a damaged state file, or worse, written to.
_APPLICATION_ID = 0x7A6A7731  # "zjw1"
# Run one by one inside `_set_up`'s transaction (executescript would commit it first).
_SCHEMA = (
    f"PRAGMA application_id = {_APPLICATION_ID}",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
    f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}')",
    """
    CREATE TABLE jobs (
        module TEXT NOT NULL,
        job_id TEXT NOT NULL,
        status TEXT,
        counts TEXT NOT NULL,
        emitted_status TEXT,
        outcome TEXT,
        error TEXT,
        polls INTEGER NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL,
        finished_at REAL,
        removed_at REAL,
        next_poll_at REAL,
        planned_gap REAL,
        failures INTEGER NOT NULL DEFAULT 0,
        not_found INTEGER NOT NULL DEFAULT 0,
        samples TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (module, job_id)
    ) WITHOUT ROWID
    """,
    # One row per API credit spent under a `credits_per_day` budget, so that the budget's
    # rolling 24 hours span restarts.
    "CREATE TABLE credits (at REAL NOT NULL)",
    "CREATE INDEX credits_at ON credits (at)",
    """
    CREATE TABLE token (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        access_token TEXT NOT NULL,
        expires_at REAL NOT NULL,
        api_domain TEXT
    )
    """,
)
# How a file of an older schema is brought up to this one, from each version to the next. Run
# inside the transaction that also records the new version, so an upgrade is whole or not at all.
_UPGRADES: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE jobs ADD COLUMN error TEXT",),  # 2: why a job ended not_found or rejected
    2: (  # 3: a job's plan, pace and failures in a row, and the credits spent
        "ALTER TABLE jobs ADD COLUMN next_poll_at REAL",
        "ALTER TABLE jobs ADD COLUMN planned_gap REAL",
        "ALTER TABLE jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN not_found INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN samples TEXT NOT NULL DEFAULT '[]'",
        "CREATE TABLE credits (at REAL NOT NULL)",
        "CREATE INDEX credits_at ON credits (at)",
    ),
}
_SET_VERSION = f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'"
_RECOVER = (
    "move the file aside to start fresh (the watcher then polls every configured job again"
    " and forgets finished jobs that are no longer in the config)"
)
# SQLITE_ERROR is a statement SQLite could not run: in a file of our schema, a table or column an
# edit took away.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_ERROR")


class StateError(Exception):
    """The state file cannot be used. The message is one line, names the file, never a token."""


# A `Sample` as the state file keeps it: (epoch seconds, status, done, total).
KeptSample = tuple[float, str, int | None, int | None]


class JobRecord(NamedTuple):
    """One job as last saved. Times are epoch seconds: they must mean something after a restart.

    A named tuple, not a frozen dataclass: one is made for every save, three times per job.
    """

    module: str
    job_id: str
    status: str | None  # last status seen
    counts: Mapping[str, int | None]
    emitted_status: str | None  # status of the last job.status_changed emitted
    outcome: str | None  # set once the job has finished
    error: str | None  # Zoho's code, when the outcome is not_found or rejected
    polls: int
    first_seen: float
    last_seen: float | None  # time of the last answer
    finished_at: float | None
    removed_at: float | None  # when it left the config; None while configured
    next_poll_at: float | None = None  # when its next poll was planned; None once it has ended
    planned_gap: float | None = None  # the gap that plan was made from, before any stretch
    failures: int = 0  # polls in a row without a status row, for backoff
    not_found: int = 0  # "not found" answers in a row
    samples: tuple[KeptSample, ...] = ()  # status rows its schedule reads (epoch seconds)


@dataclass(frozen=True)
class StoredToken:
    """An access token kept so that a restart need not refresh one. Its repr hides the token."""

    access_token: str = field(repr=False)
    expires_at: float  # epoch seconds
    api_domain: str | None
    issued_for: str = ""  # which credentials it was refreshed with (a digest: see auth.py)
    asked: tuple[float, ...] = ()  # when the latest refreshes were asked for (epoch seconds)


def record_view(record: JobRecord) -> dict[str, object]:
    """A job as `status --json` and `/jobs` show it: plain JSON types, no secret anywhere (and
    not the samples its schedule reads)."""
    view: dict[str, object] = record._asdict()
    view["counts"] = dict(record.counts)
    del view["samples"]
    return view


_JOB_COLUMNS = JobRecord._fields
# A saved row is the record's plain fields in this order, then its counts and samples as JSON: a
# tuple made by one C call, bound by position, for the one statement every poll runs.
_JSON_COLUMNS = ("counts", "samples")
_PLAIN_COLUMNS = tuple(name for name in _JOB_COLUMNS if name not in _JSON_COLUMNS)
_plain_values = operator.attrgetter(*_PLAIN_COLUMNS)
_SAVE_JOB = (
    f"INSERT OR REPLACE INTO jobs ({', '.join((*_PLAIN_COLUMNS, *_JSON_COLUMNS))})"
    f" VALUES ({', '.join('?' * len(_JOB_COLUMNS))})"
)
_DELETE_JOB = "DELETE FROM jobs WHERE module = ? AND job_id = ?"
_SPEND = "INSERT INTO credits (at) VALUES (?)"
_FORGET_SPENT = "DELETE FROM credits WHERE at < ?"
_SPENT_BY_NOW = "UPDATE credits SET at = ?1 WHERE at > ?1"
_SAVE_TOKEN = (
    "INSERT OR REPLACE INTO token (id, access_token, expires_at, api_domain) VALUES (1, ?, ?, ?)"
)
# Kept in `meta` rather than a column of `token`: the schema, and files already written, stay.
_SAVE_ISSUED_FOR = "INSERT OR REPLACE INTO meta (key, value) VALUES ('token_issued_for', ?)"
_SAVE_ASKED = "INSERT OR REPLACE INTO meta (key, value) VALUES ('token_asked', ?)"
_SAVE_READING = "INSERT OR REPLACE INTO meta (key, value) VALUES ('credits_reading', ?)"
_Params = Sequence[Any] | Mapping[str, Any]
JobKey = tuple[str, str]


class _Write(NamedTuple):
    """One statement for the writer thread, run once per parameter set inside its batch's
    transaction. `done` (None for a lazy save) receives the number of rows changed after commit."""

    sql: str
    params: Sequence[_Params]
    done: asyncio.Future[int] | None


class StateStore:
    """The state file, loaded into `jobs` and `token` at open and kept current by the saves.

    Saves are queued in call order and committed in that order, so a durable save is never
    overtaken by an earlier lazy one. Use `open`, not the constructor.
    """

    def __init__(
        self,
        path: Path,
        connection: sqlite3.Connection,
        jobs: dict[JobKey, JobRecord],
        token: StoredToken | None,
        spent: list[float],
        reading: tuple[float, int] | None,
        identity: tuple[int, int],
        locks: tuple[int, ...],
    ) -> None:
        self.path = path
        self.jobs = jobs
        self.token = token
        self.spent = spent  # when each credit kept at open was spent (epoch seconds, in order)
        self.reading = reading  # Zoho's last X-API-CREDITS-REMAINING: (epoch seconds, credits)
        self._identity = identity  # (device, inode) of the file opened
        self._locks = locks  # the descriptors holding the lock files, for a writer
        self.commits = 0  # transactions committed, so that group commit can be observed
        self._connection = connection
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[list[_Write] | None] = queue.SimpleQueue()
        self._gathering: list[_Write] = []  # this turn's writes, not yet handed to the writer
        self._failure: str | None = None  # set by the writer thread, never cleared
        self._stopped: asyncio.Future[None] | None = None
        self._writer = threading.Thread(target=self._serve, name="state-writer", daemon=True)
        self._writer.start()

    @classmethod
    async def open(cls, path: Path, *, writer: bool = True) -> StateStore:
        """Open or create the state file and load all of it; StateError if it cannot be used.

        A `writer` (the watcher) holds the file's lock until `close`, so that a second watcher
        is refused instead of polling every job again and announcing each change twice. A
        reader (`status`) takes no lock, and refuses a file of an older schema rather than
        upgrading it: a look must not make it unreadable to the older watcher still on it.
        """
        loaded = await asyncio.to_thread(_load, path, writer)
        return cls(path, *loaded)

    def save(self, record: JobRecord) -> None:
        """Queue `record` for the next commit: for changes whose loss in a crash costs nothing
        worse than a repeated poll. Raises StateError once the store has failed or closed."""
        self._save(record, None)

    def save_durably(self, record: JobRecord) -> asyncio.Future[int]:
        """Save `record`; the future is done once it is committed. Await it before emitting the
        event it records. (A future rather than a coroutine: no task to make for each save.)"""
        done: asyncio.Future[int] = self._loop.create_future()
        self._save(record, done)
        return done

    async def save_token(self, token: StoredToken) -> None:
        """Save `token` and return once it is committed: Zoho limits how often tokens may be
        refreshed, so a restart should find the one just obtained."""
        done = self._loop.create_future()
        self._put(_SAVE_ISSUED_FOR, [(token.issued_for,)], None)  # the same commit as the token
        self._put(_SAVE_ASKED, [(orjson.dumps(token.asked).decode(),)], None)
        self._put(_SAVE_TOKEN, [(token.access_token, token.expires_at, token.api_domain)], done)
        self.token = token
        await done

    def save_spent(self, at: float) -> None:
        """Queue one credit spent `at` (epoch seconds) for the next commit. Lost in a crash, it
        is one credit the budget does not count after the restart, no worse."""
        self._put(_SPEND, [(at,)], None)

    def save_reading(self, at: float, remaining: int) -> None:
        """Queue Zoho's latest count of the org's credits left, seen `at` (epoch seconds)."""
        self._put(_SAVE_READING, [(orjson.dumps([at, remaining]).decode(),)], None)
        self.reading = (at, remaining)

    def forget_spent(self, before: float, now: float) -> None:
        """Drop the credits spent before `before`: out of every budget's 24 hours. One stamped
        after `now` (by a wall clock set back since) is taken as spent `now`: it then ages out
        like the rest, where it would count for a whole day from every restart."""
        self._put(_FORGET_SPENT, [(before,)], None)
        self._put(_SPENT_BY_NOW, [(now,)], None)

    async def prune(self, before: float) -> int:
        """Forget jobs that have left the config and finished before `before`, and jobs removed
        before it that never finished.

        The records to delete are chosen here, from memory, which holds exactly what the queue
        will have written by the time the deletion runs; a job saved again after this call is
        therefore kept.
        """
        keys = [key for key, record in self.jobs.items() if prunable(record, before)]
        done: asyncio.Future[int] = self._loop.create_future()
        self._put(_DELETE_JOB, keys, done)
        for key in keys:
            del self.jobs[key]
        return await done

    async def close(self) -> None:
        """Commit everything queued and stop the writer. Safe to call more than once. StateError
        if any write failed, those no save waited on included."""
        if self._stopped is None:
            self._hand_over()
            self._queue.put(None)
            self._stopped = asyncio.ensure_future(asyncio.to_thread(self._writer.join))
        await asyncio.shield(self._stopped)
        for descriptor in self._locks:
            os.close(descriptor)  # the file is another watcher's to take now
        self._locks = ()
        if self._failure is not None:
            raise StateError(self._failure)

    def _save(self, record: JobRecord, done: asyncio.Future[int] | None) -> None:
        # Serialised now, on the loop: the writer thread must never read a caller's objects.
        samples = orjson.dumps(record.samples, default=tuple).decode()  # a Sample too
        row = (*_plain_values(record), _counts_json(record.counts), samples)
        self._put(_SAVE_JOB, [row], done)
        self.jobs[(record.module, record.job_id)] = record

    def _put(self, sql: str, params: Sequence[_Params], done: asyncio.Future[int] | None) -> None:
        if self._failure is not None:
            raise StateError(self._failure)
        if self._stopped is not None:
            raise StateError(f"state file {self.path}: saved to after close")
        self._gathering.append(_Write(sql, params, done))
        if len(self._gathering) == 1:
            self._loop.call_soon(self._hand_over)

    def _hand_over(self) -> None:
        if self._gathering:
            self._queue.put(self._gathering)
            self._gathering = []

    # --- the writer thread ---

    def _serve(self) -> None:
        stopping = False
        while not stopping:
            batch = self._take_batch()
            stopping = None in batch
            self._commit([write for writes in batch if writes is not None for write in writes])
        self._connection.close()

    def _take_batch(self) -> list[list[_Write] | None]:
        """Everything queued, waiting for the first item: what piled up during the last commit
        goes into the next one."""
        batch = [self._queue.get()]
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self._queue.get_nowait())
        return batch

    def _commit(self, writes: list[_Write]) -> None:
        """Commit `writes` in one transaction, then wake whoever waits on them. Once a commit has
        failed, every later write fails too: the watcher is expected to stop."""
        if not writes:
            return
        changed = [0] * len(writes)
        if self._failure is None:
            try:
                changed = self._execute(writes)
            except Exception as exc:  # whatever broke, the waiting saves must hear of it
                self._failure = f"state file {self.path}: cannot save: {_one_line(exc)}"
        waiting = [
            (w.done, count) for w, count in zip(writes, changed, strict=True) if w.done is not None
        ]
        if waiting:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_settle, waiting, self._failure)

    def _execute(self, writes: list[_Write]) -> list[int]:
        """Run the batch in one transaction; the row count each write changed."""
        self._check_same_file()
        connection = self._connection
        connection.execute("BEGIN")
        try:
            changed = [connection.executemany(write.sql, write.params).rowcount for write in writes]
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        self.commits += 1
        return changed

    def _check_same_file(self) -> None:
        """SQLite goes on writing to a state file deleted or replaced under it, into a file no
        restart will ever read: that is a save that cannot be made, like any other."""
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            raise StateError("it was deleted while the watcher ran") from None
        if (found.st_dev, found.st_ino) != self._identity:
            raise StateError("it was replaced while the watcher ran")


def _settle(waiting: list[tuple[asyncio.Future[int], int]], failure: str | None) -> None:
    for done, changed in waiting:
        if done.done():  # its caller was cancelled; the write itself still happened
            continue
        if failure is None:
            done.set_result(changed)
        else:
            done.set_exception(StateError(failure))


def _counts_json(counts: Mapping[str, int | None]) -> str:
    """orjson, a tenth of the standard library's cost; that one still writes what orjson
    refuses (a count beyond 64 bits, which only an edited state file could hold)."""
    try:
        return orjson.dumps(dict(counts)).decode()
    except orjson.JSONEncodeError:
        return json.dumps(dict(counts))


def prunable(record: JobRecord, before: float) -> bool:
    """Out of the config, and finished before `before`; or, never announced as finished (still
    running, or removed while its end was being saved), removed before it."""
    if record.removed_at is None:
        return False
    if record.outcome is None or record.finished_at is None:
        return record.removed_at < before
    return record.finished_at < before


# --- opening, in a worker thread ---


class _Loaded(NamedTuple):
    connection: sqlite3.Connection
    jobs: dict[JobKey, JobRecord]
    token: StoredToken | None
    spent: list[float]
    reading: tuple[float, int] | None
    identity: tuple[int, int]  # (device, inode): which file it is
    locks: tuple[int, ...]


def _load(path: Path, writer: bool) -> _Loaded:
    """Open the file, creating it if need be (and locking it, for a writer), and read all of it."""
    _claim(path, writer)
    locks = _lock(path) if writer else ()
    try:
        return _read_all(path, writer, locks)
    except BaseException:
        for descriptor in locks:
            os.close(descriptor)
        raise


def _read_all(path: Path, writer: bool, locks: tuple[int, ...]) -> _Loaded:
    try:
        connection = _connect(path, writer)
        opened = os.stat(path)
    except (sqlite3.Error, OSError) as exc:
        raise _unusable(path, exc) from None
    try:
        if _prepare(connection, path, writer):
            jobs, token = _read_jobs(connection), _read_token(connection)
            spent, reading = _read_spent(connection), _read_reading(connection)
        else:  # an empty file, looked at: nothing in it yet, and nothing written to it
            jobs, token, spent, reading = {}, None, [], None
        identity = (opened.st_dev, opened.st_ino)
        return _Loaded(connection, jobs, token, spent, reading, identity, locks)
    # ValueError, OverflowError: a record that does not decode (an edited file)
    except (sqlite3.Error, ValueError, OverflowError) as exc:
        connection.close()
        raise _unusable(path, exc) from None
    except BaseException:
        connection.close()
        raise


def _connect(path: Path, writer: bool) -> sqlite3.Connection:
    """A reader opens the file read-only and makes no file beside it: SQLite would leave a -wal
    and a -shm owned by whoever ran `status` (root, say, where the watcher cannot write them),
    and cannot make them at all on a read-only mount (a backup, a volume mounted `:ro`). With no
    -wal file, no watcher has the file open and the file holds everything, so it is read as it is
    (`immutable`); with one, through SQLite's own read-only WAL reading."""
    if writer:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    real = Path(os.path.realpath(path))  # SQLite keeps the -wal beside the file, not a link
    parameters = "mode=ro" if os.path.lexists(f"{real}-wal") else "immutable=1"
    uri = f"{real.as_uri()}?{parameters}"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def _lock(path: Path) -> tuple[int, ...]:
    """Take `<state file>.lock`, without waiting: the descriptors that hold it. A file of its
    own, because SQLite's locks on the state file are POSIX locks, with which a flock of that file
    would mix where flock is built on them (NFS). Beside the file itself, so that a second
    watcher reaching it by a symbolic link is refused; for a link, beside the link too (where it
    can be made), where earlier builds took it, so that one of those still on it is refused."""
    real = Path(os.path.realpath(path))
    names = [real.with_name(f"{real.name}.lock")]
    beside_link = path.with_name(f"{path.name}.lock")
    if Path(os.path.realpath(beside_link)) != names[0] and os.access(path.parent, os.W_OK):
        names.insert(0, beside_link)
    held: list[int] = []
    try:
        for name in names:
            held.append(_lock_file(path, name))
    except BaseException:
        for descriptor in held:
            os.close(descriptor)
        raise
    return tuple(held)


def _lock_file(path: Path, lock_path: Path) -> int:
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateError(
            f"state file {path}: cannot open its lock file {lock_path.name}: {exc.strerror};"
            " choose a writable location"
        ) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        held = exc.errno in (errno.EAGAIN, errno.EACCES)
        reason = "another watcher is using it" if held else f"cannot lock it: {exc.strerror}"
        raise StateError(f"state file {path}: {reason}; run one watcher per state file") from None
    return descriptor


def check_path(path: Path) -> None:
    """What `check-config` can tell of a state file without opening it for SQLite: StateError
    for what `run` would refuse at once (not a regular file, not an SQLite file). A missing one
    is fine: `run` creates it."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_look(path, exc) from None
    _claim(path, writer=False)


def look_at(path: Path) -> bool:
    """Whether there is a state file at `path` to look at; StateError if that cannot be told
    (a directory on the way the user may not enter, a name too long)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise _cannot_look(path, exc) from None
    return True


def _cannot_look(path: Path, exc: OSError) -> StateError:
    return StateError(f"state file {path}: cannot look at it: {exc.strerror}")


def _claim(path: Path, writer: bool) -> None:
    """Make sure `path` can be opened as a state file, changing nothing that is not one: a writer
    creates it (and its directory), 0600 before SQLite ever opens it, for SQLite would use the
    umask and its -wal and -shm files copy the file's mode. What is there already must be a
    regular file (a FIFO would block the open for good, a device is nobody's state) that is
    empty (`touch`, a volume's defaults) or an SQLite file: a `state_path` pointed at someone
    else's file is refused with that file untouched. `_prepare` checks the rest."""
    if writer:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"state file {path}: cannot create directory {path.parent}: {exc.strerror};"
                " choose a writable location"
            ) from None
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if writer else 0)
    not_a_file = StateError(f"state file {path}: not a regular file; choose a file's path")
    try:
        descriptor = os.open(path, flags, 0o600)
    except IsADirectoryError:
        raise not_a_file from None
    except OSError as exc:
        raise StateError(
            f"state file {path}: cannot open it: {exc.strerror}; choose a writable location"
        ) from None
    try:
        try:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise not_a_file
            header = os.read(descriptor, _HEADER_BYTES)
        except OSError as exc:  # an I/O error, say
            raise StateError(f"state file {path}: cannot read it: {exc.strerror}") from None
        if header and not header.startswith(_SQLITE_HEADER):
            raise _damaged(path, "is not a zoho-job-watcher state file")
        # New, made empty by someone else, or marked as ours: made private before SQLite opens
        # it, which it would do read-only if it found it so (restored from a read-only backup).
        if writer and (not header or _marked_ours(header)):
            _private(path, descriptor)
    finally:
        os.close(descriptor)


def _marked_ours(header: bytes) -> bool:
    """Whether an SQLite file's header carries our application id (bytes 68-71)."""
    return int.from_bytes(header[68:72], "big") == _APPLICATION_ID


def _private(path: Path, descriptor: int) -> None:
    """Mode 0600 for the file `path`, open at `descriptor`: it holds the access token."""
    try:
        os.fchmod(descriptor, 0o600)
    except OSError as exc:
        raise StateError(
            f"state file {path}: cannot make it private (mode 0600): {exc.strerror}; it holds"
            " the access token, so give the watcher's user its ownership"
        ) from None


def _make_private(path: Path) -> None:
    """The state file and whichever of its -wal and -shm files exist, 0600: a file of ours that
    was copied or restored with a wider mode keeps the token private too."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        try:
            descriptor = os.open(path.with_name(name), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise StateError(f"state file {path}: cannot open {name}: {exc.strerror}") from None
        try:
            _private(path.with_name(name), descriptor)
        finally:
            os.close(descriptor)


def _prepare(connection: sqlite3.Connection, path: Path, writer: bool) -> bool:
    """Check the file is an intact state file of ours before writing anything to it (a foreign
    or damaged file is left exactly as it was), then set it up for the writer. False for an
    empty file a reader found: a look must not turn it into a database."""
    problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise _damaged(path, f"fails its integrity check ({problems[0]})")
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    tables = _tables(connection)
    fresh = application_id == 0 and tables == 0
    if not fresh and application_id != _APPLICATION_ID:
        raise _damaged(path, "is not a zoho-job-watcher state file")
    if fresh and not writer:
        return False
    version = None if fresh else _check_version(connection, path)
    if version is not None and version < SCHEMA_VERSION and not writer:
        raise StateError(
            f"state file {path} has schema version {version}, this zoho-job-watcher reads"
            f" {SCHEMA_VERSION}: run its watcher once to upgrade the file, or use the version"
            " that wrote it"
        )
    if not writer:
        return True
    _make_private(path)  # ours, so ours to make private before anything is written
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    if version != SCHEMA_VERSION:
        _set_up(connection, path)
    return True


def _tables(connection: sqlite3.Connection) -> int:
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return int(tables)


def _set_up(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or upgrade an older one, in one transaction under the write lock.

    What was seen before the lock is seen again under it: another watcher, or `status`, may be
    opening the same file at this moment and have done it first. Should anything fail, `_load`
    closes the connection, which rolls the transaction back: the file is whole or untouched.
    """
    connection.execute("BEGIN IMMEDIATE")
    if _tables(connection) == 0:
        statements: Sequence[str] = _SCHEMA
    else:
        version = _check_version(connection, path)
        upgrades = [sql for step in range(version, SCHEMA_VERSION) for sql in _UPGRADES[step]]
        statements = [*upgrades, _SET_VERSION] if upgrades else []
    try:
        for statement in statements:
            connection.execute(statement)
    except sqlite3.Error as exc:
        raise StateError(
            f"state file {path}: cannot bring it to schema version {SCHEMA_VERSION}"
            f" ({_one_line(exc)}); it is left as it was. Check that it is writable, or {_RECOVER}"
        ) from None
    connection.execute("COMMIT")


def _check_version(connection: sqlite3.Connection, path: Path) -> int:
    """Which schema a file of ours holds: this watcher's or an older one it can upgrade. A newer
    watcher's file is not to be discarded, and one that does not say is not a file we wrote."""
    try:
        found = _meta(connection, "schema_version")
    except sqlite3.OperationalError:  # our mark, but no meta table: not a file we wrote whole
        found = None
    version = int(found) if found is not None and found.isascii() and found.isdigit() else None
    if version is not None and version > SCHEMA_VERSION:
        raise StateError(
            f"state file {path} was written by a newer zoho-job-watcher (schema version {found},"
            f" this one knows {SCHEMA_VERSION}); run that version, or {_RECOVER}"
        )
    if version is None or (version < SCHEMA_VERSION and version not in _UPGRADES):
        raise _damaged(
            path, f"has schema version {found or 'none'}, this watcher knows {SCHEMA_VERSION}"
        )
    return version


def _read_jobs(connection: sqlite3.Connection) -> dict[JobKey, JobRecord]:
    jobs: dict[JobKey, JobRecord] = {}
    for row in connection.execute(f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"):
        values = dict(zip(_JOB_COLUMNS, row, strict=True))
        values["counts"] = json.loads(values["counts"])
        if not isinstance(values["counts"], dict):
            raise ValueError(f"the counts of job {values['job_id']} are not a JSON object")
        values["samples"] = _samples(json.loads(values["samples"]), values["job_id"])
        _check_job(values)
        record = JobRecord(**values)
        jobs[(record.module, record.job_id)] = record
    return jobs


def _check_job(values: Mapping[str, Any]) -> None:
    """A ValueError naming the first value of a job's row that we would not have written: SQLite
    keeps whatever an edit put in, and a text where a time belongs failed only later, as a
    traceback."""
    for name, check in _ROW_CHECKS.items():
        if not check(values[name]):
            job_id = values["job_id"]
            raise ValueError(f"the {name} of job {job_id!r} is not a value the watcher writes")
    counts = values["counts"].values()  # Zoho's, any size JSON holds: not bound like ours
    if not all(n is None or (isinstance(n, int) and not isinstance(n, bool)) for n in counts):
        raise ValueError(f"the counts of job {values['job_id']!r} are not all counts")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _or_none(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _read_spent(connection: sqlite3.Connection) -> list[float]:
    return [float(at) for (at,) in connection.execute("SELECT at FROM credits ORDER BY at")]


def _samples(document: object, job_id: str) -> tuple[KeptSample, ...]:
    """The status rows a job was last seen with, as saved: [at, status, done, total] each."""
    if isinstance(document, list) and all(_is_sample(item) for item in document):
        return tuple((float(at), status, done, total) for at, status, done, total in document)
    raise ValueError(f"the samples of job {job_id} are not a list of status rows")


def _is_sample(item: object) -> bool:
    if not (isinstance(item, list) and len(item) == 4):
        return False
    at, status, done, total = item
    return _is_time(at) and isinstance(status, str) and all(map(_or_none(_is_count), (done, total)))


def _is_time(value: object) -> bool:
    """An epoch time as we write them: a finite float (an int only in float's range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) < 1e18 if isinstance(value, int) else math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


_ROW_CHECKS: Mapping[str, Callable[[object], bool]] = {
    "module": _is_text,
    "job_id": _is_text,
    **dict.fromkeys(("status", "emitted_status", "outcome", "error"), _or_none(_is_text)),
    "first_seen": _is_time,
    **dict.fromkeys(
        ("last_seen", "finished_at", "removed_at", "next_poll_at", "planned_gap"),
        _or_none(_is_time),
    ),
    **dict.fromkeys(("polls", "failures", "not_found"), _is_count),
}


def _read_reading(connection: sqlite3.Connection) -> tuple[float, int] | None:
    kept = _meta(connection, "credits_reading")
    if kept is None:
        return None
    reading = json.loads(kept)
    if not (
        isinstance(reading, list)
        and len(reading) == 2
        and _is_time(reading[0])
        and _is_count(reading[1])
    ):
        raise ValueError("the last count of credits left is not [time, number]")
    return float(reading[0]), reading[1]


def _read_token(connection: sqlite3.Connection) -> StoredToken | None:
    row = connection.execute("SELECT access_token, expires_at, api_domain FROM token").fetchone()
    if row is None:
        return None
    access_token, expires_at, api_domain = row
    if not (_is_text(access_token) and _is_time(expires_at) and _or_none(_is_text)(api_domain)):
        raise ValueError("the kept token is not a token, a time and an API domain")
    issued_for = _meta(connection, "token_issued_for") or ""
    asked = json.loads(_meta(connection, "token_asked") or "[]")
    if not (isinstance(asked, list) and all(isinstance(at, int | float) for at in asked)):
        raise ValueError("the times of the latest token refreshes are not a list of numbers")
    return StoredToken(access_token, expires_at, api_domain, issued_for, tuple(map(float, asked)))


def _meta(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _unusable(path: Path, exc: Exception) -> StateError:
    """Only a damaged file is worth moving aside; a locked or unwritable one is not."""
    name = getattr(exc, "sqlite_errorname", "SQLITE_CORRUPT")  # not every sqlite3.Error has one
    if isinstance(exc, sqlite3.Error) and not name.startswith(_DAMAGED):
        return StateError(
            f"state file {path}: {_one_line(exc)}; check that it is writable and that no other"
            " watcher uses it"
        )
    return _damaged(path, f"is damaged ({_one_line(exc)})")


# How every SQLite file begins (an empty file is one SQLite has not written yet), and how much
# of it holds the application id.
_SQLITE_HEADER = b"SQLite format 3\x00"
_HEADER_BYTES = 100


def _damaged(path: Path, problem: str) -> StateError:
    return StateError(f"state file {path} {problem}; {_RECOVER}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
