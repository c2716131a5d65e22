"""The event stream: JSON lines, leading keys first, levels, scrubbed secrets, batched writes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from watcher import output
from watcher.events import LEVELS, REDACTED, TOKENS_SCRUBBED, Event, EventLog

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_starts_with_timestamp_level_and_event_then_the_fields() -> None:
    stream = io.StringIO()
    EventLog(stream, "json", "info").log("info", "job.added", module="Leads", job_id="1")
    (line,) = lines(stream)
    assert list(line) == ["timestamp", "level", "event", "module", "job_id"]
    assert ISO_UTC.fullmatch(str(line["timestamp"]))
    assert (line["level"], line["event"], line["job_id"]) == ("info", "job.added", "1")


def test_a_field_cannot_overwrite_the_leading_keys() -> None:
    stream = io.StringIO()
    fields: dict[str, object] = {"level": "info", "event": "y", "timestamp": "z"}
    EventLog(stream, "json", "info").emit(Event("x", "warning", fields))
    (line,) = lines(stream)
    assert (line["level"], line["event"]) == ("warning", "x")
    assert ISO_UTC.fullmatch(str(line["timestamp"]))


def test_events_below_the_level_are_dropped() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "warning")
    log.log("info", "quiet")
    log.emit(Event("loud", "error", {"n": 1}))
    assert [line["event"] for line in lines(stream)] == ["loud"]
    assert [log.enabled(level) for level in LEVELS] == [False, False, True, True]


def test_values_json_cannot_encode_are_written_as_their_repr() -> None:
    stream = io.StringIO()
    EventLog(stream, "json", "info").log("info", "x", where=b"raw")
    assert lines(stream)[0]["where"] == "b'raw'"


def test_lines_are_compact_utf8_json() -> None:
    stream = io.StringIO()
    EventLog(stream, "json", "info").log("info", "x", error="DONNÉES_INVALIDES", n=1)
    assert stream.getvalue().endswith('"error":"DONNÉES_INVALIDES","n":1}\n')


def test_a_value_the_fast_encoder_refuses_still_makes_a_json_line() -> None:
    stream = io.StringIO()
    EventLog(stream, "json", "info").log("info", "x", big=2**70, odd="\ud800")
    (line,) = lines(stream)
    assert (line["event"], line["big"], line["odd"]) == ("x", 2**70, "\ud800")
    assert stream.getvalue().isascii()  # written so that any output encoding can take it


@pytest.mark.parametrize("fallback", [False, True])
def test_a_non_ascii_secret_is_scrubbed_from_utf8_and_ascii_lines(fallback: bool) -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info", secrets=["sécret-tōken"])
    extra = {"big": 2**70} if fallback else {}  # a value only the ASCII fallback can write
    log.log("info", "x", leaked="sécret-tōken", note="é", **extra)
    text = stream.getvalue()
    assert text.isascii() == fallback
    assert lines(stream)[0]["leaked"] == "***"
    assert "cret" not in text


def test_a_secret_no_utf8_can_hold_is_still_scrubbed() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info", secrets=["tok-\udcff-en"])  # from a non-UTF-8 env var
    log.log("info", "x", leaked="tok-\udcff-en")
    assert lines(stream)[0]["leaked"] == "***"


def test_the_cli_writes_utf8_whatever_the_locale_says() -> None:
    program = (
        "import argparse, asyncio\n"
        "from watcher.cli import _event_log\n"
        "args = argparse.Namespace(log_format='json', log_level='info')\n"
        "_event_log(args).log('info', 'x', error='DONNÉES')\n"
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, check=True)
    assert json.loads(done.stdout.decode("utf-8"))["error"] == "DONNÉES"


@pytest.mark.parametrize("secret", ["plain-token-123", 'quo"te\\slash', "ünïcode-tøken"])
def test_secrets_are_scrubbed_however_json_escapes_them(secret: str) -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info", [secret])
    log.log("error", "auth.failed", error=f"refused {secret}!", other="fine")
    (line,) = lines(stream)
    assert line["error"] == f"refused {REDACTED}!"
    assert line["other"] == "fine"
    assert secret not in stream.getvalue()


@pytest.mark.parametrize("secret", ["nbsp\xa0token-123", "both'and\"quotes", "tab\ttoken-45"])
def test_secrets_are_scrubbed_however_the_console_format_escapes_them(secret: str) -> None:
    """The console format writes values as their repr(): escapes no list of spellings foresees."""
    stream = io.StringIO()
    log = EventLog(stream, "console", "info", [secret])
    log.log("error", "auth.failed", error=f"refused {secret}!", problems=[f"x {secret}"])
    written = stream.getvalue()
    assert written.count(REDACTED) == 2, written
    assert repr(secret)[1:-1] not in written
    assert repr(f"refused {secret}!")[1:-1] not in written


def test_a_secret_inside_another_is_not_left_half_shown() -> None:
    inner, outer = "1000.inner-secret", "1000.inner-secret.and-more-of-it"
    for secrets in ([inner, outer], [outer, inner]):
        stream = io.StringIO()
        EventLog(stream, "json", "info", secrets).log("info", "x", note=f"<{outer}>")
        assert lines(stream)[0]["note"] == f"<{REDACTED}>"


def test_a_token_added_at_run_time_is_scrubbed_from_then_on() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "console", "info")
    log.add_token("fresh-token-456")
    log.log("info", "auth.token_refreshed", note="got fresh-token-456")
    assert "fresh-token-456" not in stream.getvalue()
    assert REDACTED in stream.getvalue()


def test_only_the_latest_run_time_tokens_are_looked_for_while_configured_secrets_stay() -> None:
    """Months of hourly refreshes must not make every line search thousands of dead tokens."""
    stream = io.StringIO()
    log = EventLog(stream, "json", "info", secrets=["configured-refresh-token"])
    tokens = [f"access-token-{n:04d}" for n in range(1000)]
    for token in tokens:
        log.add_token(token)
    log.log("info", "x", text=" ".join([*tokens, "configured-refresh-token"]))
    (line,) = lines(stream)
    words = str(line["text"]).split()
    assert words[-1 - TOKENS_SCRUBBED :] == [REDACTED] * (TOKENS_SCRUBBED + 1)
    assert words[: -1 - TOKENS_SCRUBBED] == tokens[:-TOKENS_SCRUBBED]  # expired hours ago


async def test_lines_of_one_turn_of_the_loop_are_written_together_after_it() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info")
    for n in range(3):
        log.log("info", "job.added", job_id=str(n))
    assert stream.getvalue() == ""
    await asyncio.sleep(0)  # one turn of the loop: the scheduled flush runs
    assert [line["job_id"] for line in lines(stream)] == ["0", "1", "2"]


async def test_flush_writes_pending_lines_at_once() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info")
    log.log("info", "job.finished")
    log.flush()
    assert [line["event"] for line in lines(stream)] == ["job.finished"]


async def test_one_flush_is_scheduled_per_turn_even_after_an_explicit_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    real_call_soon = loop.call_soon

    def counting_call_soon(callback: Any, *args: Any, **kwargs: Any) -> asyncio.Handle:
        scheduled.append(callback)
        return real_call_soon(callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", counting_call_soon)
    stream = io.StringIO()
    log = EventLog(stream, "json", "info")
    for n in range(3):  # as durable events do: a line, then a flush, within one turn
        log.log("info", "job.finished", job_id=str(n))
        log.flush()
    log.log("info", "last")
    monkeypatch.undo()
    assert len(scheduled) == 1
    await asyncio.sleep(0)  # the one scheduled flush runs
    assert [line["event"] for line in lines(stream)][-1] == "last"


async def test_a_stream_that_failed_in_a_scheduled_flush_fails_the_next_event() -> None:
    stream = io.StringIO()
    log = EventLog(stream, "json", "info")
    log.log("info", "first")
    stream.close()
    await asyncio.sleep(0)  # the scheduled flush meets the closed stream
    with pytest.raises(ValueError, match="closed"):
        log.log("info", "second")


def test_a_secret_too_short_to_be_a_credential_does_not_mangle_the_lines() -> None:
    stream = io.StringIO()
    EventLog(stream, "json", "info", secrets=["10"]).log("info", "x", interval_s=10.0, n=10)
    (line,) = lines(stream)
    assert (line["interval_s"], line["n"]) == (10.0, 10)


async def test_a_stop_after_lines_were_dropped_waits_only_until_the_reader_has_caught_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not the whole of LINES_OUT_S: what a drop took cannot come back, what is left can go."""
    monkeypatch.setattr(output, "BACKLOG_MAX", 100_000)
    read_end, write_end = os.pipe()
    stream = os.fdopen(write_end, "w")
    log = EventLog(stream, "json", "info")
    for n in range(3000):  # more than the pipe and the backlog hold: some are dropped
        log.log("info", "filler", n=n, pad="x" * 100)
        log.flush()
    assert log.lost() > 0
    loop = asyncio.get_running_loop()
    reading = loop.run_in_executor(None, _read_all, read_end)
    await asyncio.wait_for(log.drained(), timeout=1.0)
    stream.close()
    await reading


def _read_all(fd: int) -> None:
    with os.fdopen(fd, "rb") as reader:
        reader.read()


SHARED_WITH_STDERR = """
import asyncio, json, os, socket, sys
from watcher.events import EventLog

async def main() -> None:
    log = EventLog(sys.stdout, "json", "info")
    for n in range(3000):  # more than the pipe or socket holds
        log.log("info", "x", n=n, pad="a" * 200)
    log.flush()
    print(json.dumps([log.holding(), os.get_blocking(1), os.get_blocking(2)]), file=sys.argv[1])

sys.argv[1] = open(sys.argv[1], "w")
asyncio.run(main())
"""


@pytest.mark.parametrize("channel", ["pipe", "socket"])
def test_stderr_on_the_same_pipe_or_socket_stays_blocking_while_lines_are_held_back(
    tmp_path: Path, channel: str
) -> None:
    """`2>&1 | ...`, or systemd's journal: were the shared description made non-blocking for
    the event lines, a message on stderr would be lost to a full pipe."""
    if channel == "pipe":
        read_end, write_end = os.pipe()
    else:
        read_end, write_end = (end.detach() for end in socket.socketpair())
    found = tmp_path / "found.json"
    try:
        subprocess.run(
            [sys.executable, "-c", SHARED_WITH_STDERR, str(found)],
            stdout=write_end,
            stderr=write_end,
            check=True,
            timeout=60,
        )
    finally:
        os.close(read_end)
        os.close(write_end)
    assert json.loads(found.read_text()) == [True, True, True]  # held back, both blocking


class _StalledReader:
    """The far end of stdout, by hand: no room until `room`; what it read in `got`."""

    def __init__(self) -> None:
        self.room = False
        self.got = bytearray()

    def write(self, data: memoryview) -> int:
        if not self.room:
            raise BlockingIOError
        self.got += data
        return len(data)


@pytest.fixture
async def stalled(monkeypatch: pytest.MonkeyPatch) -> tuple[_StalledReader, list[int]]:
    """A stalled reader, and the drop counts reported; room comes only at `_drain` (by hand)."""
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "add_writer", lambda *_: None)
    monkeypatch.setattr(loop, "remove_writer", lambda *_: None)
    return _StalledReader(), []


def _pipe(reader: _StalledReader, reported: list[int]) -> output._Pipe:
    outlet = output._Outlet(-1, reader.write, lambda: None)
    return output._Pipe(outlet, asyncio.get_running_loop(), reported.append, None)


async def test_a_wait_for_lines_ends_once_exactly_those_lines_are_out(
    stalled: tuple[_StalledReader, list[int]],
) -> None:
    """A save waits for its event line to be out (`Tracker.record`): it must go on then."""
    reader, reported = stalled
    pipe = _pipe(reader, reported)
    pipe.write(b"line\n")
    ran: list[str] = []
    pipe.when_sent(lambda: ran.append("saved"))
    reader.room = True
    pipe._drain()
    assert (ran, bytes(reader.got)) == (["saved"], b"line\n")


async def test_lines_dropped_are_counted_one_by_one_and_no_wait_on_them_ends(
    stalled: tuple[_StalledReader, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`events.dropped` says how many lines were lost; a save waiting on lines that may be among
    them must not take them as said."""
    monkeypatch.setattr(output, "BACKLOG_MAX", 16)
    reader, reported = stalled
    pipe = _pipe(reader, reported)
    pipe.write(b"held back\n")
    pipe.write(b"a\nb\nc\n" * 3)  # no room for these nine: dropped
    ran: list[str] = []
    assert pipe.when_sent(lambda: ran.append("saved")) is False  # it says so: never runs
    reader.room = True
    pipe._drain()
    assert (reported, ran, bytes(reader.got)) == ([9], [], b"held back\n")


async def test_a_fifo_our_own_end_also_reads_is_not_watched_for_ever(tmp_path: Path) -> None:
    """`1<>fifo`: the end is readable while lines sit in the pipe, and never in error (it is a
    reader itself). Watched for its reader leaving, it would wake the loop at every turn."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    wakeups: list[None] = []

    class Counted(output._Pipe):
        def _reader_left(self) -> None:
            wakeups.append(None)
            super()._reader_left()

    outlet = output._Outlet(fd, lambda data: os.write(fd, data), lambda: None)
    gone: list[None] = []
    pipe = Counted(outlet, asyncio.get_running_loop(), lambda _: None, lambda: gone.append(None))
    pipe.write(b"a line nobody reads yet\n")
    for _ in range(20):
        await asyncio.sleep(0)
    pipe.close()
    os.close(fd)
    assert (len(wakeups), gone) == (1, [])
