"""The event stream: one JSON object per line on stdout (or structlog's console format for people).

Every line carries `timestamp` (ISO-8601 UTC), `level` and `event` first, so that `tail`, `jq` and
log pipelines read it directly. Known secret values are scrubbed from every field as a last line of
defence: nothing should ever put one there, and if something does, it still does not leak.

Ten thousand jobs make tens of thousands of events, so a JSON line is one dict and one encoder
call, with no processor chain, and lines are written in batches, once per turn of the event loop,
rather than with one system call each. `flush` writes what is pending at once, for the moments
when an event must be out before something else happens (see `Tracker.record`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TextIO

from watcher.job import Event

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
REDACTED = "***"
_RANKS = {level: rank for rank, level in enumerate(LEVELS)}

_Record = dict[str, object]

# What structlog's JSONRenderer wrote (default separators, repr for anything else), with the
# encoder built once rather than per line.
_render_json: Callable[[_Record], str] = json.JSONEncoder(default=repr).encode


class _Clock:
    """ISO-8601 UTC timestamps with microseconds; the date and time of day are formatted once a
    second rather than for every event."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1e6):06d}Z"


class EventLog:
    """Where the watcher's events go, at or above `level`, in `fmt` ("json" or "console")."""

    def __init__(self, stream: TextIO, fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
        self._stream = stream
        self._min_rank = _RANKS[level]
        self._json = fmt == "json"
        self._render = _render_json if self._json else _console_renderer(stream)
        self._now = _Clock()
        # Each secret, and the text it becomes inside a JSON string: JSON escapes character by
        # character, so a secret anywhere in a value shows up in the line as that text.
        self._secrets: dict[str, str] = {}
        self.add_secrets(secrets)
        self._pending: list[str] = []
        self._broken: OSError | ValueError | None = None  # a batch could not be written

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub these values too (a token obtained at run time)."""
        self._secrets.update((s, json.dumps(s)[1:-1]) for s in secrets if s)

    def emit(self, event: Event) -> None:
        self._log(event.level, event.name, event.fields)

    def log(self, level: str, name: str, **fields: object) -> None:
        self._log(level, name, fields)

    def flush(self) -> None:
        """Write every pending line now."""
        if self._pending:
            lines, self._pending = self._pending, []
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()

    def _log(self, level: str, name: str, fields: Mapping[str, object]) -> None:
        if _RANKS[level] < self._min_rank:
            return
        now = self._now()
        record: _Record = {"timestamp": now, "level": level, "event": name, **fields}
        if len(record) != len(fields) + 3:  # a field is named like one of ours: ours win
            record.update(timestamp=now, level=level, event=name)
        self._write(self._render_scrubbed(record))

    def _render_scrubbed(self, record: _Record) -> str:
        if self._json:
            line = self._render(record)
            for escaped in self._secrets.values():
                if escaped in line:
                    break
            else:
                return line
        if not self._secrets:
            return self._render(record)
        return self._render({key: self._scrub(value) for key, value in record.items()})

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
        return value

    def _write(self, line: str) -> None:
        """Queue `line` for the end of this turn of the event loop; outside a loop, write it."""
        if self._broken is not None:
            raise self._broken
        self._pending.append(line)
        if len(self._pending) > 1:
            return  # a flush is already scheduled
        try:
            asyncio.get_running_loop().call_soon(self._flush_later)
        except RuntimeError:
            self.flush()

    def _flush_later(self) -> None:
        """A scheduled flush has no caller to tell: a dead stream (stdout closed) is reported to
        the next event instead, as if that one had been written directly."""
        try:
            self.flush()
        except (OSError, ValueError) as exc:
            self._broken = exc


def _console_renderer(stream: TextIO) -> Callable[[_Record], str]:
    import structlog  # only for people at a terminal: the JSON stream does without it

    renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    return lambda record: renderer(None, str(record["level"]), record)
