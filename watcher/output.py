"""stdout for the event stream, written once per turn of the event loop and never blocking it.

A reader that stalls (`run | less`, paused; a log shipper fallen behind) must not stop polling,
`/healthz` or a stop: lines it has no room for wait in a bounded backlog and go out as room comes.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import select
import socket
import stat
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, TextIO

BACKLOG_MAX = 32 * 2**20  # bytes of lines a stalled reader may hold back; then lines are dropped


class _Pipe:
    """A pipe or socket written without ever blocking the event loop. What the reader has no
    room for yet waits in a bounded backlog and goes out as room comes (`loop.add_writer`): a
    stalled reader (`run | less` paused, a slow log shipper) no longer stops polling, `/healthz`
    or SIGTERM. Past `BACKLOG_MAX` bytes, lines are dropped and counted.

    A pipe's reader that goes away (`run | head`, done) is noticed at once, not at the next
    line, which a job that stays as it is may not bring for hours of polls: `gone` hears it.
    """

    def __init__(
        self,
        outlet: _Outlet,
        loop: asyncio.AbstractEventLoop,
        dropped: Callable[[int], None],
        gone: Callable[[], None] | None,
    ) -> None:
        self._outlet = outlet
        self._loop = loop
        self._report_dropped = dropped  # hears how many, once the backlog has gone
        self._gone = gone
        self._backlog = bytearray()
        self._accepted = 0  # bytes taken so far; `_sent` of them have reached the kernel
        self._sent = 0
        self._waiting: deque[tuple[int, Callable[[], None]]] = deque()  # (position, callback)
        self._emptied: list[asyncio.Future[None]] = []  # settled once the backlog has gone
        self._dropped = 0  # lines dropped since the backlog last went, to report then
        self.lost = 0  # bytes of lines dropped in all
        self.broken: OSError | None = None
        if gone is not None:  # a pipe's write end is readable only in error: its reader left
            loop.add_reader(outlet.fd, self._reader_left)

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
            self._loop.add_writer(self._outlet.fd, self._drain)
        self._backlog += data

    def holding(self) -> bool:
        """Whether lines written wait for the reader to make room."""
        return self._sent < self._accepted

    @property
    def position(self) -> int:
        """Bytes taken or dropped so far: two `when_sent` made at the same position wait for
        the same lines, and one made after a drop never runs."""
        return self._accepted + self.lost

    def when_sent(self, callback: Callable[[], None]) -> bool:
        """Run `callback` once everything written so far has reached the kernel. While lines
        are being dropped it never runs, since what it waits for may be among them: False."""
        if self._dropped:
            return False
        if not self.holding():
            callback()
        else:
            self._waiting.append((self._accepted, callback))
        return True

    async def drained(self) -> None:
        """Wait until the backlog has gone out (the caller bounds the wait)."""
        while self._backlog and self.broken is None:
            done = self._loop.create_future()
            self._emptied.append(done)
            await done

    def close(self) -> None:
        """Write blocking again, now that nothing is held back."""
        self._loop.remove_writer(self._outlet.fd)
        self._loop.remove_reader(self._outlet.fd)
        self._outlet.close()

    def _reader_left(self) -> None:
        self._loop.remove_reader(self._outlet.fd)
        poll = select.poll()
        poll.register(self._outlet.fd, 0)  # errors are always reported
        if not any(events & select.POLLERR for _, events in poll.poll(0)):
            # Readable, not in error: our own end reads too (`1<>fifo`). Watched, it would wake
            # the loop for as long as lines sit in the pipe; the next line's failure will tell.
            return
        if self.broken is None:
            self.broken = BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        self._drain()  # nothing held back goes anywhere now: whoever waits for it, hears so
        assert self._gone is not None
        self._gone()

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
                    written = self._outlet.write(view[sent:end])
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
            self._loop.remove_writer(self._outlet.fd)
            for emptied in self._emptied:
                _settle(emptied)
            self._emptied.clear()
        while self._waiting and self._waiting[0][0] <= self._sent:
            self._waiting.popleft()[1]()
        if self._dropped and not self._backlog:
            count, self._dropped = self._dropped, 0
            self._report_dropped(count)


class Lines:
    """structlog's output (`_Logger` hands it each line through `msg`): rendered lines, written
    once per turn of the event loop; to a pipe or socket without blocking it (`_Pipe`)."""

    def __init__(
        self, stream: TextIO, dropped: Callable[[int], None], gone: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._dropped = dropped
        self._gone = gone  # hears that a pipe's reader left, before any line fails for it
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
            self._pipe = _pipe_for(self._stream, loop, self._dropped, self._reader_left)
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

    def when_out(self, callback: Callable[[], None]) -> bool:
        """Run `callback` once every line written so far is out of this process; False if it
        never will (see `_Pipe.when_sent`)."""
        if self._pipe is None:
            callback()
            return True
        return self._pipe.when_sent(callback)

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

    def _reader_left(self) -> None:
        assert self._pipe is not None
        self._broken = self._pipe.broken  # as if a line had been written: the next one fails
        self._gone()

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
    """What a failed write of event lines raises, without the frames that hold the data. A
    reader gone is a BrokenPipeError, also when it went with our lines unread (a TCP reset)."""
    if isinstance(exc, BrokenPipeError):
        return exc.with_traceback(None)
    if isinstance(exc, ConnectionResetError):
        return BrokenPipeError(exc.errno, exc.strerror)
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


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _pipe_for(
    stream: TextIO,
    loop: asyncio.AbstractEventLoop,
    dropped: Callable[[int], None],
    gone: Callable[[], None],
) -> _Pipe | None:
    """A `_Pipe` for `stream` if it is a pipe or socket; a file never blocks for long, and a
    terminal is left as it is (its mode is shared with the shell). `gone` hears a pipe's reader
    leave; a socket's leaving is seen at the next line (its read side may hold data for us)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file at all (tests' StringIO)
        return None
    info = os.fstat(fd)
    if not (stat.S_ISFIFO(info.st_mode) or stat.S_ISSOCK(info.st_mode)):
        return None
    outlet = _outlet_for(fd, info)
    if outlet is None:
        return None
    stream.flush()  # what the stream holds goes first
    return _Pipe(outlet, loop, dropped, gone if stat.S_ISFIFO(info.st_mode) else None)


class _Outlet(NamedTuple):
    """How `_Pipe` writes without blocking: `write` raises BlockingIOError rather than wait;
    `fd` is watched for room; `close` puts back what was changed."""

    fd: int
    write: Callable[[memoryview], int]
    close: Callable[[], None]


def _outlet_for(fd: int, info: os.stat_result) -> _Outlet | None:
    """Non-blocking writes to stdout at `fd`. A non-blocking flag belongs to the open file
    description, which stdout shares with everything that inherited it; when stderr is one of
    them (`2>&1 | ...`, systemd's journal), the flag would make stderr's writes fail on a full
    pipe too. Then a pipe is opened again (a description of our own) and a socket is sent to
    with MSG_DONTWAIT; None (blocking writes) where neither can be done."""
    if not _also_stderr(info):
        os.set_blocking(fd, False)  # one inherited non-blocking loses lines without this care
        return _Outlet(fd, functools.partial(os.write, fd), lambda: os.set_blocking(fd, True))
    if stat.S_ISSOCK(info.st_mode):
        sock = socket.socket(fileno=os.dup(fd))
        return _Outlet(sock.fileno(), lambda data: sock.send(data, socket.MSG_DONTWAIT), sock.close)
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # no /proc, or a named pipe without a reader
        return None
    return _Outlet(own, functools.partial(os.write, own), functools.partial(os.close, own))


def _also_stderr(info: os.stat_result) -> bool:
    """Whether stderr is the same pipe or socket as stdout (see `_outlet_for`)."""
    try:
        errors = os.fstat(2)
    except OSError:
        return False
    return (errors.st_dev, errors.st_ino) == (info.st_dev, info.st_ino)
