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

import asyncio
import contextlib
import json
import os
import select
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from watcher.config import MASKED_LENGTH
from watcher.job import Event

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
REDACTED = "***"
TOKENS_SCRUBBED = 8  # run-time tokens looked for in every line: the latest, an hour's life each
_OURS = frozenset({"timestamp", "level", "event"})  # the leading keys, which fields cannot replace
BACKLOG_MAX = 32 * 2**20  # bytes of lines a stalled reader may hold back; then lines are dropped


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
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{micros:06d}Z"
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


class _Pipe:
    """A pipe or socket written without ever blocking the event loop. What the reader has no
    room for yet waits in a bounded backlog and goes out as room comes (`loop.add_writer`): a
    stalled reader (`run | less` paused, a slow log shipper) no longer stops polling, `/healthz`
    or SIGTERM. Past `BACKLOG_MAX` bytes, lines are dropped and counted."""

    def __init__(
        self, fd: int, loop: asyncio.AbstractEventLoop, dropped: Callable[[int], None]
    ) -> None:
        self._fd = fd
        self._loop = loop
        self._report_dropped = dropped  # hears how many, once the backlog has gone
        self._backlog = bytearray()
        self._accepted = 0  # bytes taken so far; `_sent` of them have reached the kernel
        self._sent = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()  # (position, callback)
        self._emptied: list[asyncio.Future[None]] = []  # settled once the backlog has gone
        self._dropped = 0  # lines dropped since the backlog last went, to report then
        self.lost = 0  # bytes of lines dropped in all
        self.broken: OSError | None = None
        os.set_blocking(fd, False)  # one inherited non-blocking loses lines without this care

    def write(self, data: bytes) -> None:
        if len(self._backlog) + len(data) > BACKLOG_MAX:
            self._dropped += data.count(b"\n")  # until the backlog has gone, see `when_sent`
            self.lost += len(data)
            return
        self._accepted += len(data)
        if not self._backlog:
            data = data[self._send(data) :]
            if not data:
                return
            self._loop.add_writer(self._fd, self._drain)
        self._backlog += data

    def holding(self) -> bool:
        """Whether lines written wait for the reader to make room."""
        return self._sent < self._accepted

    @property
    def position(self) -> int:
        """Bytes taken or dropped so far: two `when_sent` made at the same position wait for
        the same lines, and one made after a drop never runs."""
        return self._accepted + self.lost

    def when_sent(self, callback: Callable[[], None]) -> None:
        """Run `callback` once everything written so far has reached the kernel. While lines
        are being dropped it never runs: what it waits for may be among them."""
        if self._dropped:
            return
        if not self.holding():
            callback()
        else:
            self._waiting.append((self._accepted, callback))

    async def drained(self) -> None:
        """Wait until the backlog has gone out (the caller bounds the wait)."""
        while self._backlog and self.broken is None:
            done = self._loop.create_future()
            self._emptied.append(done)
            await done

    def close(self) -> None:
        """Write blocking again, now that nothing is held back."""
        self._loop.remove_writer(self._fd)
        os.set_blocking(self._fd, True)

    def _send(self, data: bytes | bytearray) -> int:
        """Write what the reader has room for, in whole lines of at most PIPE_BUF bytes where
        it can: a pipe takes such a write whole or not at all, so a line is never cut off if
        the process ends with some held back. How many bytes went."""
        sent = 0
        # Released on the way out, a failure included: an export still alive would make the
        # backlog a bytearray that can no longer be cut, and `_drain` would fail at every turn.
        with memoryview(data) as view:
            while sent < len(data):
                end = _line_end(data, sent)
                try:
                    written = os.write(self._fd, view[sent:end])
                except BlockingIOError:
                    break
                except OSError as exc:  # said at the next event
                    self.broken = _failure(exc)
                    return len(data)
                sent += written
                self._sent += written
                if sent < end:
                    break
        return sent

    def _drain(self) -> None:
        del self._backlog[: self._send(self._backlog)]
        if not self._backlog or self.broken is not None:
            self._backlog.clear()
            self._loop.remove_writer(self._fd)
            for emptied in self._emptied:
                _settle(emptied)
            self._emptied.clear()
        while self._waiting and self._waiting[0][0] <= self._sent:
            self._waiting.popleft()[1]()
        if self._dropped and not self._backlog:
            count, self._dropped = self._dropped, 0
            self._report_dropped(count)


class _Lines:
    """structlog's output (`_Logger` hands it each line through `msg`): rendered lines, written
    once per turn of the event loop; to a pipe or socket without blocking it (`_Pipe`)."""

    def __init__(self, stream: TextIO, dropped: Callable[[int], None]) -> None:
        self._stream = stream
        self._dropped = dropped
        self._pending: list[str] = []
        self._scheduled = False  # a flush is due at the end of this turn of the loop
        self._broken: OSError | ValueError | None = None  # a batch could not be written
        self._pipe: _Pipe | None = None
        self._looked = False  # whether the stream was looked at for a pipe yet
        self._stalled = False  # the reader was still stalled when the process began to end

    def msg(self, line: str) -> None:
        if self._broken is not None:
            raise self._broken
        self._pending.append(line)
        if self._scheduled:  # even if `flush` has emptied the batch since: one flush per turn
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (start-up errors, tests): write at once
            self.flush()
            return
        if not self._looked:  # once: a file or terminal stays as it is
            self._looked = True
            self._pipe = _pipe_for(self._stream, loop, self._dropped)
        loop.call_soon(self._flush_later)
        self._scheduled = True

    def flush(self) -> None:
        if self._stalled:  # nobody to write to any more, and no blocking write to risk
            self._pending.clear()
        elif self._pending:
            lines, self._pending = self._pending, []
            text = "\n".join(lines) + "\n"
            if self._pipe is not None:
                self._pipe.write(text.encode("utf-8", "backslashreplace"))
                self._broken = self._pipe.broken  # the reader went away: said at the next event
            else:
                try:
                    self._stream.write(text)
                    self._stream.flush()
                except OSError as exc:
                    raise _failure(exc) from None

    def holding(self) -> bool:
        return self._pipe is not None and self._pipe.holding()

    def written(self) -> int:
        return 0 if self._pipe is None else self._pipe.position

    def lost(self) -> int:
        return 0 if self._pipe is None else self._pipe.lost

    def when_out(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every line written so far is out of this process."""
        if self._pipe is None:
            callback()
        else:
            self._pipe.when_sent(callback)

    async def drained(self) -> None:
        self.flush()
        if self._pipe is not None:
            try:
                await self._pipe.drained()  # the caller bounds the wait
            finally:
                # Left as it was found, for whoever writes to it next. Lines still held back
                # are lost with the process, and so is any line after: the reader is stalled,
                # and a blocking write would keep the process from ending.
                self._stalled = self._pipe.holding()
                self._pipe.close()
                self._pipe = None

    def _flush_later(self) -> None:
        """A scheduled flush has no caller to tell: a dead stream (stdout closed) is reported to
        the next event instead, as if that one had been written directly."""
        self._scheduled = False
        try:
            self.flush()
        except (OSError, ValueError) as exc:
            self._broken = exc


class OutputFailed(OSError):
    """stdout takes no more lines, and not because its reader went away (that is a
    BrokenPipeError, and a quiet end): a full disk, a file past its size limit, an I/O error.
    The watcher cannot go on unheard, so it stops and says why on stderr."""


def _failure(exc: OSError) -> OSError:
    """What a failed write of event lines raises, without the frames that hold the data."""
    if isinstance(exc, BrokenPipeError | ConnectionResetError):
        return exc.with_traceback(None)
    return OutputFailed(exc.errno, exc.strerror)


def _line_end(data: bytes | bytearray, start: int) -> int:
    """Where the next write from `start` ends: after the last whole line within PIPE_BUF bytes,
    or, for a line longer than that, after it."""
    limit = start + select.PIPE_BUF
    if limit >= len(data):
        return len(data)
    cut = data.rfind(b"\n", start, limit)
    if cut < 0:
        cut = data.find(b"\n", limit)
    return len(data) if cut < 0 else cut + 1


def _also_stderr(info: os.stat_result) -> bool:
    """Whether stderr is the same pipe (`2>&1 | ...`): made non-blocking for our lines, it would
    be for every message on stderr too, which would then be lost to a full pipe."""
    try:
        errors = os.fstat(2)
    except OSError:
        return False
    return (errors.st_dev, errors.st_ino) == (info.st_dev, info.st_ino)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pipe_for(
    stream: TextIO, loop: asyncio.AbstractEventLoop, dropped: Callable[[int], None]
) -> _Pipe | None:
    """A `_Pipe` for `stream` if it is a pipe or socket; a file never blocks for long, and a
    terminal is left as it is (its mode is shared with the shell)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file at all (tests' StringIO)
        return None
    info = os.fstat(fd)
    if not (stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode)) or _also_stderr(info):
        return None
    stream.flush()  # what the stream holds goes first
    return _Pipe(fd, loop, dropped)


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
        self._lines = _Lines(stream, self._dropped)
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

    def add_token(self, token: str) -> None:
        """Scrub a token obtained at run time too (while it is among the latest few)."""
        self._scrub.add_token(token)

    def emit(self, event: Event) -> None:
        self._write(event.level, event.name, event.fields)

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

    def when_out(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every line written so far has left this process: at once,
        unless a stalled reader holds some back. (Lines emitted but not yet written, which go
        at the end of the loop's turn or at `flush`, are not waited for.)"""
        self._lines.when_out(callback)

    async def drained(self) -> None:
        """Wait for the lines a stalled reader holds back to go out (the caller bounds the
        wait: past it, what is still held back, and any line after, is lost with the process
        rather than the process stuck behind it)."""
        await self._lines.drained()
