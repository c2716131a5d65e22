"""The state file's tables, how a file of an older schema is brought up to this one, and how a
file that is not ours, or is damaged, is told apart from one that is."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from watcher.state.records import StateError, one_line

SCHEMA_VERSION = 3
# Marks the file as ours in SQLite's header, so another program's database is recognised as such
# instead of being mistaken for a damaged state file, or worse, written to.
APPLICATION_ID = 0x7A6A7731  # "zjw1"
# Run one by one inside `set_up`'s transaction (executescript would commit it first).
_SCHEMA = (
    f"PRAGMA application_id = {APPLICATION_ID}",
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


def count_tables(connection: sqlite3.Connection) -> int:
    (tables,) = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return int(tables)


def set_up(connection: sqlite3.Connection, path: Path) -> None:
    """Create the schema, or upgrade an older one, in one transaction under the write lock.

    What was seen before the lock is seen again under it: another watcher, or `status`, may be
    opening the same file at this moment and have done it first. Should anything fail, `load`
    closes the connection, which rolls the transaction back: the file is whole or untouched.
    """
    connection.execute("BEGIN IMMEDIATE")
    if count_tables(connection) == 0:
        statements: Sequence[str] = _SCHEMA
    else:
        version = check_version(connection, path)
        upgrades = [sql for step in range(version, SCHEMA_VERSION) for sql in _UPGRADES[step]]
        statements = [*upgrades, _SET_VERSION] if upgrades else []
    try:
        for statement in statements:
            connection.execute(statement)
    except sqlite3.Error as exc:
        raise StateError(
            f"state file {path}: cannot bring it to schema version {SCHEMA_VERSION}"
            f" ({one_line(exc)}); it is left as it was. Check that it is writable, or {_RECOVER}"
        ) from None
    connection.execute("COMMIT")


def check_version(connection: sqlite3.Connection, path: Path) -> int:
    """Which schema a file of ours holds: this watcher's or an older one it can upgrade. A newer
    watcher's file is not to be discarded, and one that does not say is not a file we wrote."""
    try:
        found = meta(connection, "schema_version")
    except sqlite3.OperationalError:  # our mark, but no meta table: not a file we wrote whole
        found = None
    version = int(found) if found is not None and found.isascii() and found.isdigit() else None
    if version is not None and version > SCHEMA_VERSION:
        raise StateError(
            f"state file {path} was written by a newer zoho-job-watcher (schema version {found},"
            f" this one knows {SCHEMA_VERSION}); run that version, or {_RECOVER}"
        )
    if version is None or (version < SCHEMA_VERSION and version not in _UPGRADES):
        raise damaged(
            path, f"has schema version {found or 'none'}, this watcher knows {SCHEMA_VERSION}"
        )
    return version


def meta(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def marked_ours(header: bytes) -> bool:
    """Whether an SQLite file's header carries our application id (bytes 68-71)."""
    return int.from_bytes(header[68:72], "big") == APPLICATION_ID


def unusable(path: Path, exc: Exception) -> StateError:
    """Only a damaged file is worth moving aside; a locked or unwritable one is not."""
    name = getattr(exc, "sqlite_errorname", "SQLITE_CORRUPT")  # not every sqlite3.Error has one
    if isinstance(exc, sqlite3.Error) and not name.startswith(_DAMAGED):
        return StateError(
            f"state file {path}: {one_line(exc)}; check that it is writable and that no other"
            " watcher uses it"
        )
    return damaged(path, f"is damaged ({one_line(exc)})")


def damaged(path: Path, problem: str) -> StateError:
    return StateError(f"state file {path} {problem}; {_RECOVER}")
