"""Command line: `run`, `check-config`, `status`, `demo`. Bad input: one line each, exit 2."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from watcher.config import Config, ConfigError, load_all, load_state_path, redact
from watcher.ending import EXIT_CONFIG, EXIT_OK
from watcher.events import FORMATS, LEVELS, EventLog
from watcher.output import OutputFailed
from watcher.service import StartupError, Watcher, serve
from watcher.state import StateError, check_path
from watcher.status import show_status, state_file

PROG = "zoho-job-watcher"


def main(argv: Sequence[str] | None = None, signalled: Sequence[int] = ()) -> int:
    """`signalled`: the signals noted since the process started (see `__main__`); `run` and
    `demo` stop at once on a stop signal, the short commands end as those signals end a process."""
    code = EXIT_OK
    try:
        return _command(_parser().parse_args(argv), signalled)
    except* BrokenPipeError:  # stdout closed (`| head`): nobody reads what we write any more
        pass
    except* OutputFailed as failed:  # a full disk, say: the events go nowhere any more
        reason = _first(failed).strerror
        print(f"{PROG}: cannot write to stdout: {reason}", file=sys.stderr)
        code = EXIT_CONFIG
    if sys.stdout is not None:  # Python's own flush at exit would meet the dead stdout again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return code


def _first(group: BaseExceptionGroup[OutputFailed]) -> OutputFailed:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


def _command(args: argparse.Namespace, signalled: Sequence[int]) -> int:
    if args.command == "demo":
        from watcher.demo import run_demo  # the simulator is only imported when asked for

        return asyncio.run(run_demo(_event_log(args), signalled))
    if args.command != "run":
        _default_signals(signalled)
    if args.command == "check-config":
        with _printing():
            return _check_config(args.config)
    if args.command == "status":
        with _printing():
            return _status(args.config, as_json=args.json)
    try:
        config = load_all(args.config)
    except ConfigError as exc:
        return _config_failed(exc)
    try:
        log = _event_log(args, config.zoho.auth.secrets())
        watcher = Watcher(config, log, exit_when_done=args.exit_when_done)
        return asyncio.run(serve(watcher, signalled))
    except StartupError as exc:
        return _startup_failed(exc, config.zoho.auth.secrets())


def _startup_failed(exc: StartupError | StateError, secrets: Sequence[str]) -> int:
    """It may quote a setting: a secret put there stays unsaid."""
    (said,) = redact([str(exc)], secrets)
    print(f"{PROG}: {said}", file=sys.stderr)
    return EXIT_CONFIG


@contextlib.contextmanager
def _printing() -> Iterator[None]:
    """A short command's output fails as the event stream does (see OutputFailed): one line on
    stderr and exit 2 for a full disk, a quiet end for a reader gone."""
    try:
        yield
        if sys.stdout is not None:  # what is still buffered fails here, not at exit
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except ConnectionResetError as exc:  # a reader gone with our lines unread (a TCP reset)
        raise BrokenPipeError(exc.errno, exc.strerror) from None
    except OSError as exc:
        raise OutputFailed(exc.errno, exc.strerror) from None


def _default_signals(signalled: Sequence[int]) -> None:
    """A short command has nothing to wind down: a stop signal ends it as it ends any process,
    the one that came while the program started included."""
    for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(stop, signal.SIG_DFL)
    for signum in signalled[:1]:
        signal.raise_signal(signum)


def _status(path: Path, *, as_json: bool) -> int:
    try:
        state_path = load_state_path(path)
    except ConfigError as exc:
        return _config_failed(exc)
    try:
        return asyncio.run(show_status(state_file(state_path), as_json=as_json))
    except StateError as exc:
        return _startup_failed(exc, _known_secrets(path))


def _known_secrets(path: Path) -> Sequence[str]:
    """The secrets the config names, as far as this shell can read them (`status` needs none,
    but its messages quote the state file's path, where one may have been put)."""
    try:
        return load_all(path).zoho.auth.secrets()
    except ConfigError:
        return ()


def _check_config(path: Path) -> int:
    try:
        config: Config = load_all(path)
    except ConfigError as exc:
        return _config_failed(exc)
    if config.state_path is not None:  # what `run` would refuse before watching anything
        try:
            check_path(config.state_path)
        except StateError as exc:
            return _startup_failed(exc, config.zoho.auth.secrets())
    print(f"{path}: OK, {len(config.jobs)} job(s)")
    return EXIT_OK


def _config_failed(exc: ConfigError) -> int:
    for problem in exc.problems:
        print(f"{PROG}: config error: {problem}", file=sys.stderr)
    return EXIT_CONFIG


def _event_log(args: argparse.Namespace, secrets: Sequence[str] = ()) -> EventLog:
    if sys.stdout is None:  # started with stdout closed: as closed as a pipe nobody reads
        raise BrokenPipeError("stdout is closed")
    fmt = args.log_format or ("console" if sys.stdout.isatty() else "json")
    if isinstance(sys.stdout, io.TextIOWrapper):
        # JSON lines are UTF-8 whatever the locale says: a job id in another script must not
        # make writing the event fail.
        sys.stdout.reconfigure(encoding="utf-8")
    return EventLog(sys.stdout, fmt, args.log_level, secrets)


class _Version(argparse.Action):
    """`--version`, printed as a short command's output is (see `_printing`): argparse's own
    says nothing, and exits 0, when stdout takes no more lines."""

    def __init__(self, option_strings: Sequence[str], dest: str) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="the installed release"
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import version  # milliseconds at every start: only when asked

        with _printing():
            print(f"{PROG} {version(PROG)}")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Watch Zoho CRM asynchronous jobs until they end."
    )
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="watch the jobs named in a config file")
    _add_config_option(run)
    run.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit once no job is left: 0 if all completed, 1 otherwise",
    )
    _add_log_options(run)
    check = commands.add_parser("check-config", help="validate a config file and exit")
    _add_config_option(check)
    status = commands.add_parser("status", help="show the tracked jobs from the state file")
    _add_config_option(status)
    status.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    demo = commands.add_parser("demo", help="watch a few jobs on a built-in Zoho simulator")
    _add_log_options(demo)
    return parser


def _add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=_config_path, required=True, help="YAML config file")


def _config_path(text: str) -> Path:
    """A path that can name a file: an empty one would become ".", the working directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no file")
    return Path(text)


def _add_log_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format", choices=FORMATS, help="json lines (default unless stdout is a terminal)"
    )
    parser.add_argument("--log-level", choices=LEVELS, default="info", help="default: info")
