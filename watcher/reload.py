"""Notice edits to the config file and the jobs directory while the watcher runs.

Content is compared, not modification times: Kubernetes ConfigMaps swap symlinks, editors write
through temporary files, and a file can change twice within a timestamp's resolution. The checks
read files, so they are meant to run in a worker thread, off the event loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

from watcher.config import (
    Config,
    ConfigError,
    Fingerprint,
    file_digest,
    jobs_file_names,
    load_all,
    read_file_bytes,
)

# A change still moving after this many checks in a row is taken as it stands: a tool that drops
# a job file every few seconds must not hold back every other edit for good.
SETTLE_CHECKS_MAX = 3
# Every this many checks each file is read whatever its metadata says (see `_read`); a share of
# them at each check, so that no check costs much more than the usual one.
READ_ALL_EVERY = 60
# A file changed this close to when it was read may have changed again since within the same
# tick of the file system's clock (a few milliseconds; seconds on some): it is read again.
RACY_NS = 2_000_000_000
# The share of a core that checks may take, at most, whatever `reload_interval` says; and the
# weight of the latest check in the average cost that share is kept with. The cost is the checking
# thread's own CPU time; the process spends more around it (the thread woken, the loop's side):
# at 0.3 %, 10,000 one-job files idle at about 0.7 % of a core, within the 1 % a watcher may use.
CHECKS_CPU_SHARE = 0.003
CHECK_COST_WEIGHT = 0.2


def check_gap(interval: float, cpu_s: float) -> float:
    """Seconds until the next check: `reload_interval`, or longer where the usual check costs so
    much (a `jobs_dir` of tens of thousands of files: a stat each) that checks would take more
    than CHECKS_CPU_SHARE of a core, which the watcher's idle target could not afford."""
    return max(interval, cpu_s / CHECKS_CPU_SHARE)


class _Read(NamedTuple):
    """What a look at one file found: what stat said of it and its content's digest; `settled`
    if it had not changed for RACY_NS when read, so that the same stat says the same content."""

    identity: tuple[int, ...]
    digest: bytes
    settled: bool


class ConfigWatcher:
    """Gives the new Config each time the files' content changes and validates.

    A file being written while we read it may not parse, or worse, parse as less than it will hold
    (an editor's save can leave it empty for a moment): taking that would remove jobs and add them
    again a moment later. So a change is only taken once the files have stayed the same for one
    more check, and a broken state is reported once, as it settles (both at once when the user
    asked with SIGHUP).

    While the files do not validate, they are read again at every settled check: what they name
    (a new `jobs_dir`, a secret file) is not all among what the running config's files were, so
    its healing could otherwise go unseen.
    """

    def __init__(self, path: Path, config: Config, env: Mapping[str, str] | None = None) -> None:
        self._path = path
        self._env = env
        self._running = config
        self._jobs_dir = config.jobs_dir
        # What the running config was read from: an edit made since, even while the watcher was
        # starting (a token fetch can take minutes), differs from it. None: read at the first check.
        self._loaded = config.fingerprint
        self._pending: bytes | None = None  # a change seen, not yet seen again
        self._moving = 0  # checks in a row that found the files changed since the one before
        self._problems: tuple[str, ...] | None = None  # what was last reported, while broken
        self._reads: dict[str, _Read] = {}  # each file's, as last read
        # What a check costs, on average over the last few: the occasional costly one (a change
        # loaded) counts a little, a run of them (a file that stays broken, whose every other
        # check loads everything again) counts fully. From the first check's own cost: from
        # nothing, the gap would take minutes to grow to what the checks cost.
        self.cpu_s = 0.0
        self._costed = False
        self._looks = 0

    def check(self, *, report_now: bool = False) -> Config | None:
        """The new Config if the files changed, settled and validate (or, asked with
        `report_now`, whatever they hold if it validates); None if there is nothing to take yet.

        Raises ConfigError for content that does not validate, once, when it has settled.
        """
        started = time.thread_time()
        try:
            return self._check(report_now)
        finally:
            cost = time.thread_time() - started
            weight = CHECK_COST_WEIGHT if self._costed else 1.0
            self.cpu_s += weight * (cost - self.cpu_s)
            self._costed = True

    def look(self) -> None:
        """Take a first look at the files, which reads every one, at start-up: the checks
        that follow read only what changed."""
        self._fingerprint()

    def _check(self, report_now: bool) -> Config | None:
        fingerprint = self._fingerprint()
        if report_now:
            return self._take(fingerprint, report_now=True, force=True)
        if fingerprint == self._loaded and self._problems is None:
            self._pending, self._moving = None, 0
            return None
        if fingerprint != self._pending and self._moving < SETTLE_CHECKS_MAX:
            self._pending, self._moving = fingerprint, self._moving + 1
            return None
        force = self._moving >= SETTLE_CHECKS_MAX
        return self._take(fingerprint, report_now=False, force=force)

    def _take(self, fingerprint: bytes, *, report_now: bool, force: bool) -> Config | None:
        """Load the files and take what they hold: at once if `force`d, otherwise only if it is
        what settled. It is not when they changed again while being read, or name a `jobs_dir`
        the look did not list: then it is what must settle next."""
        try:
            config = load_all(self._path, self._env)
        except ConfigError as exc:
            # Jobs files in a directory the look did not list have not been seen to settle:
            # looked at now, they make the files differ from what the look saw.
            self._jobs_dir = exc.jobs_dir or self._jobs_dir
            if not (report_now or self._settled(fingerprint)):
                self._pending, self._moving = self._fingerprint(), self._moving + 1
                return None
            self._loaded, self._pending, self._moving = fingerprint, None, 0
            repeated, self._problems = exc.problems == self._problems, exc.problems
            if report_now or not repeated:
                raise
            return None
        if config.fingerprint != fingerprint and not force:
            self._jobs_dir = config.jobs_dir
            self._pending, self._moving = config.fingerprint, self._moving + 1
            return None
        healed = self._problems is not None  # said broken: that it works again must be said
        self._loaded, self._problems, self._jobs_dir = config.fingerprint, None, config.jobs_dir
        self._pending, self._moving = None, 0
        unchanged, self._running = config == self._running, config  # a comment is no change
        return None if unchanged and not (report_now or healed) else config

    def _settled(self, fingerprint: bytes) -> bool:
        """Whether files that do not validate were so at the last check too, and throughout
        this one: a file caught half-written (by a change taken as it stands, or cut again
        while read) is no error of the user's."""
        return fingerprint == self._pending and self._fingerprint() == fingerprint

    def _fingerprint(self) -> bytes:
        """The files as they are now, taken as load_all takes them: the same digest when nothing
        changed. What cannot be read is noted so that its healing counts as a change."""
        seen = Fingerprint()
        paths = [str(self._path)]
        if self._jobs_dir is not None:
            directory = str(self._jobs_dir)
            try:
                paths += [os.path.join(directory, name) for name in jobs_file_names(self._jobs_dir)]
            except ConfigError as exc:  # the directory itself is unreadable: load_all will say so
                seen.add(Path(), str(exc).encode())
        self._looks += 1
        turn = self._looks % READ_ALL_EVERY
        kept, reads = self._reads, {}
        for path in paths:
            # This look's share of the files is read whatever stat says: each, every READ_ALL_EVERY.
            share = hash(path) % READ_ALL_EVERY == turn
            previous = kept.get(path)
            reads[path] = self._read(path, None if share else previous)
        seen.add_digests((path, read.digest) for path, read in reads.items())
        self._reads = reads  # files no longer listed are forgotten
        return seen.digest()

    @staticmethod
    def _read(path: str, kept: _Read | None) -> _Read:
        """A file's content digest, read again only if stat says it may have changed since it was
        `kept`: ten thousand job files read at every check would cost a few percent of a core
        for nothing. A Kubernetes ConfigMap's symlink swap is another file; an edit moves the
        change time, unless it came within RACY_NS of the read (then it is read again); and each
        is read every READ_ALL_EVERY checks, for a file system whose clock is coarser still."""
        try:
            info = os.stat(path)
        except OSError as exc:
            return _Read((), file_digest(_unreadable(exc)), settled=False)
        identity = (info.st_ino, info.st_dev, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if kept is not None and kept.settled and kept.identity == identity:
            return kept
        try:
            content = read_file_bytes(path)
        except OSError as exc:
            content = _unreadable(exc)
        settled = max(info.st_mtime_ns, info.st_ctime_ns) < time.time_ns() - RACY_NS
        return _Read(identity, file_digest(content), settled)


def _unreadable(exc: OSError) -> bytes:
    """What stands for a file that cannot be read: its healing, or another error, is a change."""
    return f"unreadable: {exc.errno}".encode()
