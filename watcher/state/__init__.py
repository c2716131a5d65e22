"""What the watcher remembers across restarts: every job it has seen and the access token.

The watcher runs for months and may be SIGKILLed at any moment, so the rule is that state is
committed before the event it records is emitted: at worst an event is emitted twice after a crash,
never lost. The file is SQLite in WAL mode with `synchronous=NORMAL`, which survives a crash of the
process (not of the machine) without an fsync per commit.

`store` keeps the file current while the watcher runs (commits never on the event loop);
`opening` claims, locks and loads it; `reading` checks what it holds; `schema` knows its tables.
Everything is read once, at open; nothing reads at run time.
"""

from watcher.state.opening import check_path, look_at
from watcher.state.records import (
    JobRecord,
    KeptSample,
    StateError,
    StoredToken,
    prunable,
    record_view,
)
from watcher.state.schema import SCHEMA_VERSION
from watcher.state.store import StateStore

__all__ = [
    "SCHEMA_VERSION",
    "JobRecord",
    "KeptSample",
    "StateError",
    "StateStore",
    "StoredToken",
    "check_path",
    "look_at",
    "prunable",
    "record_view",
]
