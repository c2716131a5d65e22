"""Reading config and jobs files: regular files only, bounded in size, and fingerprinted, so that a
reload can tell whether anything it read has changed since."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from watcher.config.model import ConfigError

_JOBS_FILE_SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 64 * 2**20  # a 10,000-job config is about 0.6 MB


class Fingerprint:
    """A digest of files and their content, in reading order. A reload compares the files as they
    are now with what the running config was read from, byte for byte, rather than with a second
    reading that an edit could slip in before."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()

    def add(self, path: Path, content: bytes) -> None:
        self.add_digests([(path, file_digest(content))])

    def add_digests(self, files: Iterable[tuple[Path | str, bytes]]) -> None:
        """Files known by the `file_digest` of their content (kept from an earlier look), in one
        update: the same digest as one `add` each, for less work a file. Any name, UTF-8 or not."""
        self._digest.update(b"".join(os.fsencode(path) + b"\0" + digest for path, digest in files))

    def digest(self) -> bytes:
        return self._digest.digest()


def file_digest(content: bytes) -> bytes:
    return hashlib.sha256(content).digest()


def jobs_files(directory: Path) -> list[Path]:
    """The YAML files of `directory` by name; hidden ones (editors' swap files, the ..data of a
    Kubernetes ConfigMap mount) are skipped.
    """
    return [directory / name for name in jobs_file_names(directory)]


def jobs_file_names(directory: Path) -> list[str]:
    """The names of `jobs_files`, without making a Path of each (a reload looks every few
    seconds, at maybe ten thousand)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        problem = f"{named(directory)}: cannot read jobs_dir: {why_unreadable(error)}"
        raise ConfigError((problem,)) from None
    return [name for name in names if name.endswith(_JOBS_FILE_SUFFIXES) and name[:1] != "."]


def read_file(path: Path, what: str, seen: Fingerprint | None = None) -> str:
    """The text of `path` (noted in `seen`), or a ConfigError saying in one line why it cannot be
    had."""
    try:
        content = read_file_bytes(path)
        text = _text(content)
    except FileNotFoundError:
        raise ConfigError((f"{named(path)}: {what} not found",)) from None
    except (OSError, ValueError) as error:
        raise ConfigError(
            (f"{named(path)}: cannot read {what}: {why_unreadable(error)}",)
        ) from None
    if seen is not None:
        seen.add(path, content)
    return text


def read_text(path: Path) -> str:
    return _text(read_file_bytes(path))


def read_file_bytes(path: Path | str) -> bytes:
    """The bytes of the regular file at `path`. Anything else is refused rather than read: a FIFO
    (opened without waiting for a writer, which could block a reload and then shutdown for
    good), a device such as /dev/zero (endless), a directory; so is a file beyond MAX_FILE_BYTES."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        found = os.fstat(descriptor)
        if stat.S_ISDIR(found.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not stat.S_ISREG(found.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        size = found.st_size
        # A buffer of the file's size, one byte more to tell a file that grew since; not one of
        # the limit's: ten thousand small files are read at every check.
        content = file.read(min(size, MAX_FILE_BYTES) + 1)
        if len(content) > size:
            content += file.read(MAX_FILE_BYTES + 1 - len(content))
    if len(content) > MAX_FILE_BYTES:
        raise OSError(errno.EFBIG, f"larger than {MAX_FILE_BYTES // 2**20} MiB")
    return content


def _text(content: bytes) -> str:
    """UTF-8; "-sig" drops the byte-order mark some Windows editors write."""
    return content.decode("utf-8-sig")


def why_unreadable(error: OSError | ValueError) -> str:
    """One line saying why a file could not be read, without the traceback-ish repr of `error`."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {error.start})"
    return getattr(error, "strerror", None) or str(error)


def named(path: Path) -> str:
    """A file's name as a message gives it: on one line, whatever characters the name holds."""
    text = str(path)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
