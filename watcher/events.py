"""The event stream: one JSON object per line on stdout (or structlog's console format for people).

Every line carries `timestamp` (ISO-8601 UTC), `level` and `event` first, so that `tail`, `jq` and
log pipelines read it directly. Known secret values are scrubbed from every rendered line as a
last line of defence: nothing should ever put one there, and if something does, it still does not
leak.

structlog renders; the chain is kept short because ten thousand jobs make tens of thousands of
events: each event dict starts with the leading keys (so every line starts with them), then one
processor stamps, the renderer (orjson: a sixth of the standard library's cost per line), one
scrub.
Lines are written in batches, once per turn of the event loop, rather than with one system call
each; `flush` writes what is pending at once, for the moments when an event must be out before
something else happens (see `Tracker.record`).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from watcher.config import MASKED_LENGTH
from watcher.output import Lines

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
REDACTED = "***"
TOKENS_SCRUBBED = 8  # run-time tokens looked for in every line: the latest, an hour's life each
_OURS = frozenset({"timestamp", "level", "event"})  # the leading keys, which fields cannot replace


def _json_line(_: WrappedLogger, __: str, event_dict: EventDict) -> str:
    """The renderer: one compact JSON line; anything JSON has no word for is written as its repr.

    orjson writes UTF-8, as JSON Lines are defined, and refuses what cannot be written that way
    (integers beyond 64 bits, lone surrogates), which no field of ours should hold; should one get
    there anyway, the standard library writes the line in plain ASCII rather than the event being
    lost. (structlog's JSONRenderer would only add a call around the same `dumps`.)
    """
    try:
        return orjson.dumps(event_dict, default=repr).decode()
    except orjson.JSONEncodeError:
        return _ascii_json(event_dict)


def _ascii_json(document: object) -> str:
    return json.dumps(document, default=repr, separators=(",", ":"))


class _Stamp:
    """Fills in the timestamp (UTC, microseconds). The date and time of day are formatted once a
    second rather than for every event."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
        # zfill rather than a format spec, which takes longer than the rest of the stamp
        event_dict["timestamp"] = self._prefix + str(micros).zfill(6) + "Z"
        return event_dict


class _Scrub:
    """Replaces any registered secret in a rendered line. A JSON string holds a secret as its
    escaped text (orjson's, or the ASCII of the fallback), so every spelling is looked for.

    The configured secrets are looked for in every line for good; tokens obtained at run time only
    while they are among the latest `TOKENS_SCRUBBED`. An access token dies within an hour, and a
    watcher that refreshes one every hour for months must not search every line for thousands of
    dead ones.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        self._fixed = frozenset().union(*map(_spellings, secrets))
        self._tokens: deque[frozenset[str]] = deque(maxlen=TOKENS_SCRUBBED)
        self._all = _longest_first(self._fixed)

    def add_token(self, token: str) -> None:
        self._tokens.append(_spellings(token))
        self._all = _longest_first(self._fixed.union(*self._tokens))

    def __call__(self, _: WrappedLogger, __: str, line: Any) -> Any:
        return self._replaced(line)

    def values(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        """The fields with every secret masked, for the console format: it writes values as
        their repr(), whose escapes no list of spellings can foresee."""
        return {key: self._masked(value) for key, value in event_dict.items()}

    def _replaced(self, text: str) -> str:
        for spelling in self._all:
            if spelling in text:
                text = text.replace(spelling, REDACTED)
        return text

    def _masked(self, value: object) -> object:
        if isinstance(value, str):
            return self._replaced(value)
        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]
        if isinstance(value, dict):
            return {key: self._masked(item) for key, item in value.items()}
        return value


def _longest_first(spellings: Iterable[str]) -> tuple[str, ...]:
    """A secret may contain another: masked first, the shorter would leave the rest of it."""
    return tuple(sorted(spellings, key=len, reverse=True))


def _spellings(secret: str) -> frozenset[str]:
    """How `secret` can appear in a JSON line: as itself, and as the inside of a JSON string. None
    for one too short to be a credential: masking it would mangle words and numbers in every
    line."""
    if len(secret) < MASKED_LENGTH:
        return frozenset()
    spellings = {secret, _ascii_json(secret)[1:-1]}
    with contextlib.suppress(orjson.JSONEncodeError):  # a lone surrogate: ASCII only
        spellings.add(orjson.dumps(secret).decode()[1:-1])
    return frozenset(spellings)


class Event(NamedTuple):
    """One line of the event stream, before rendering: what the job logic and the token source
    decide to say, without knowing how or where it is written."""

    name: str
    level: str
    fields: dict[str, object]


class _Logger(structlog.BoundLoggerBase):
    """A structlog wrapper class with one method: the chain, then the line to the output.

    It runs the chain itself rather than through `_process_event`, which for every event copies
    the bound context, copies the fields twice more (`update(**fields)`), and then tells apart the
    five shapes a chain may end in. Here the event dict is made once, already in line order, and
    the chain always ends in a line.
    """

    def write(self, level: str, name: str, fields: dict[str, object]) -> None:
        event_dict: Any = {"timestamp": None, "level": level, "event": name, **fields}
        for processor in self._processors:
            event_dict = processor(self._logger, level, event_dict)
        self._logger.msg(event_dict)


class EventLog:
    """Where the watcher's events go, at or above `level`, in `fmt` ("json" or "console")."""

    def __init__(self, stream: TextIO, fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
        self._scrub = _Scrub(secrets)
        self._lines = Lines(stream, self._dropped, self._reader_left)
        self._when_reader_gone: Callable[[], None] | None = None
        chain: list[Processor]
        if fmt == "json":
            chain = [_Stamp(), _json_line, self._scrub]
        else:
            console = structlog.dev.ConsoleRenderer(colors=stream.isatty())
            chain = [_Stamp(), self._scrub.values, console, self._scrub]
        self._enabled = frozenset(LEVELS[LEVELS.index(level) :])
        self._logger = _Logger(self._lines, chain, {})

    def _dropped(self, count: int) -> None:
        self.log("warning", "events.dropped", count=count)

    def when_reader_gone(self, callback: Callable[[], None]) -> None:
        """Have `callback` hear that the reader of a pipe went away (`run | head`, done), at
        once; the next event then fails with BrokenPipeError, as a write to it would."""
        self._when_reader_gone = callback

    def _reader_left(self) -> None:
        if self._when_reader_gone is not None:
            self._when_reader_gone()

    def add_token(self, token: str) -> None:
        """Scrub a token obtained at run time too (while it is among the latest few)."""
        self._scrub.add_token(token)

    def emit(self, event: Event) -> None:
        self._write(event.level, event.name, event.fields)

    def enabled(self, level: str) -> bool:
        """Whether events at `level` are written."""
        return level in self._enabled

    def log(self, level: str, name: str, **fields: object) -> None:
        self._write(level, name, fields)

    def _write(self, level: str, name: str, fields: dict[str, object]) -> None:
        if level not in self._enabled:
            return
        if not _OURS.isdisjoint(fields):  # a field named like one of ours: ours win
            fields = {key: value for key, value in fields.items() if key not in _OURS}
        self._logger.write(level, name, fields)

    def flush(self) -> None:
        """Write every pending line now."""
        self._lines.flush()

    def holding(self) -> bool:
        """Whether a stalled reader holds back lines already written (see `when_out`)."""
        return self._lines.holding()

    def written(self) -> int:
        """How far the lines written so far reach: two `when_out` made at the same point wait
        for the same lines."""
        return self._lines.written()

    def lost(self) -> int:
        """How much a stalled reader has cost so far: bytes of lines dropped past the backlog's
        bound (it grows with every drop)."""
        return self._lines.lost()

    def when_out(self, callback: Callable[[], None]) -> bool:
        """Run `callback` once every line written so far has left this process: at once,
        unless a stalled reader holds some back. (Lines emitted but not yet written, which go
        at the end of the loop's turn or at `flush`, are not waited for.) False, and it never
        runs, while lines are being dropped: which of them went out cannot be known."""
        return self._lines.when_out(callback)

    async def drained(self) -> None:
        """Wait for the lines a stalled reader holds back to go out (the caller bounds the
        wait: past it, what is still held back, and any line after, is lost with the process
        rather than the process stuck behind it)."""
        await self._lines.drained()
