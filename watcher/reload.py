"""Notice edits to the config file and the jobs directory while the watcher runs.

Content is compared, not modification times: Kubernetes ConfigMaps swap symlinks, editors write
through temporary files, and a file can change twice within a timestamp's resolution. The checks
read files, so they are meant to run in a worker thread, off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from watcher.config import Config, ConfigError, Fingerprint, jobs_files, load_all, read_file_bytes


class ConfigWatcher:
    """Gives the new Config each time the files' content changes and validates.

    A file being written while we read it does not parse; reporting that would cry wolf. So a
    broken state is only reported once it is seen twice in a row, unchanged (or at once when the
    user asked for the reload with SIGHUP). Valid content is taken at once.
    """

    def __init__(self, path: Path, config: Config, env: Mapping[str, str] | None = None) -> None:
        self._path = path
        self._env = env
        self._running = config
        self._jobs_dir = config.jobs_dir
        # What the running config was read from: an edit made since, even while the watcher was
        # starting (a token fetch can take minutes), differs from it. None: read at the first check.
        self._loaded = config.fingerprint
        self._broken: bytes | None = None

    def check(self, *, report_now: bool = False) -> Config | None:
        """The new Config if the files changed and validate (or, asked with `report_now`, whatever
        they hold if it validates); None if unchanged or not yet settled.

        Raises ConfigError for content that does not validate and has settled.
        """
        fingerprint = self._fingerprint()
        if fingerprint == self._loaded and not report_now:
            return None
        try:
            config = load_all(self._path, self._env)
        except ConfigError:
            settled = report_now or fingerprint == self._broken
            self._broken = fingerprint
            if settled:
                self._loaded = fingerprint  # reported once; wait for the next edit
                raise
            return None
        self._loaded, self._broken, self._jobs_dir = config.fingerprint, None, config.jobs_dir
        unchanged, self._running = config == self._running, config  # a comment is no change
        return None if unchanged and not report_now else config

    def _fingerprint(self) -> bytes:
        """The files as they are now, taken as load_all takes them: the same digest when nothing
        changed. What cannot be read is noted so that its healing counts as a change."""
        seen = Fingerprint()
        try:
            listed = jobs_files(self._jobs_dir) if self._jobs_dir is not None else []
        except ConfigError as exc:  # the directory itself is unreadable: load_all will say so
            seen.add(Path(), str(exc).encode())
            listed = []
        for path in (self._path, *listed):
            try:
                seen.add(path, read_file_bytes(path))
            except OSError as exc:
                seen.add(path, f"unreadable: {exc.errno}".encode())
        return seen.digest()
