"""Opening a state file, in a worker thread: claiming its path (a regular file, ours, private),
the lock that keeps a second watcher out, and reading all of it."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import stat
from pathlib import Path
from typing import NamedTuple

from watcher.state.reading import read_jobs, read_reading, read_spent, read_token
from watcher.state.records import JobKey, JobRecord, StateError, StoredToken
from watcher.state.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    check_version,
    count_tables,
    damaged,
    marked_ours,
    set_up,
    unusable,
)

# How every SQLite file begins (an empty file is one SQLite has not written yet), and how much
# of it holds the application id.
_SQLITE_HEADER = b"SQLite format 3\x00"
_HEADER_BYTES = 100


class _Loaded(NamedTuple):
    connection: sqlite3.Connection
    jobs: dict[JobKey, JobRecord]
    token: StoredToken | None
    spent: list[float]
    reading: tuple[float, int] | None
    identity: tuple[int, int]  # (device, inode): which file it is
    locks: tuple[int, ...]


def load(path: Path, writer: bool) -> _Loaded:
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
        raise unusable(path, exc) from None
    try:
        if _prepare(connection, path, writer):
            jobs, token = read_jobs(connection), read_token(connection)
            spent, reading = read_spent(connection), read_reading(connection)
        else:  # an empty file, looked at: nothing in it yet, and nothing written to it
            jobs, token, spent, reading = {}, None, [], None
        identity = (opened.st_dev, opened.st_ino)
        return _Loaded(connection, jobs, token, spent, reading, identity, locks)
    # ValueError, OverflowError: a record that does not decode (an edited file)
    except (sqlite3.Error, ValueError, OverflowError) as exc:
        connection.close()
        raise unusable(path, exc) from None
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
            raise damaged(path, "is not a zoho-job-watcher state file")
        # New, made empty by someone else, or marked as ours: made private before SQLite opens
        # it, which it would do read-only if it found it so (restored from a read-only backup).
        if writer and (not header or marked_ours(header)):
            _private(path, descriptor)
    finally:
        os.close(descriptor)


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
        raise damaged(path, f"fails its integrity check ({problems[0]})")
    (application_id,) = connection.execute("PRAGMA application_id").fetchone()
    tables = count_tables(connection)
    fresh = application_id == 0 and tables == 0
    if not fresh and application_id != APPLICATION_ID:
        raise damaged(path, "is not a zoho-job-watcher state file")
    if fresh and not writer:
        return False
    version = None if fresh else check_version(connection, path)
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
        set_up(connection, path)
    return True
