"""The state file while the watcher runs: saves queued on the event loop, committed by a thread.

Commits never run on the event loop. One writer thread owns the connection and commits everything
queued since its last commit in one transaction (group commit), so ten thousand jobs polling cost a
handful of commits, not ten thousand. Writes reach it once per turn of the event loop, all of that
turn's together: a commit costs far more than a row, so the more each one carries, the better.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import operator
import os
import queue
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from watcher.state.opening import load
from watcher.state.records import (
    JOB_COLUMNS,
    JobKey,
    JobRecord,
    StateError,
    StoredToken,
    one_line,
    prunable,
)

# A saved row is the record's plain fields in this order, then its counts and samples as JSON: a
# tuple made by one C call, bound by position, for the one statement every poll runs.
_JSON_COLUMNS = ("counts", "samples")
_PLAIN_COLUMNS = tuple(name for name in JOB_COLUMNS if name not in _JSON_COLUMNS)
_plain_values = operator.attrgetter(*_PLAIN_COLUMNS)
_SAVE_JOB = (
    f"INSERT OR REPLACE INTO jobs ({', '.join((*_PLAIN_COLUMNS, *_JSON_COLUMNS))})"
    f" VALUES ({', '.join('?' * len(JOB_COLUMNS))})"
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

# Every None bound (a job not yet ended, never removed, ...: several a row) sends sqlite3 looking
# for a way to adapt it, which on Python 3.11 builds and drops an AttributeError each time: a
# quarter of the CPU of a save. An adapter registered for None is found at once. Process-wide,
# and it changes no value: None is still bound as NULL.
sqlite3.register_adapter(type(None), lambda value: value)


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
        loaded = await asyncio.to_thread(load, path, writer)
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
                self._failure = f"state file {self.path}: cannot save: {one_line(exc)}"
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
