"""The watcher's YAML configuration: loaded once, validated completely, every problem with its line.

Validation walks yaml's node tree instead of the constructed objects: nodes keep line numbers and
the text as written, which YAML 1.1 would otherwise mangle (`job_id: 0123` is the int 83,
`module: No` is False).
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import ipaddress
import os
import re
import stat
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher import collector
from watcher.durations import format_duration, parse_duration
from watcher.schedule import SCHEDULES
from watcher.zoho_api import (
    AUTH_SCHEME,
    CENTRE_OF_ACCOUNTS,
    CENTRE_OF_API,
    DATA_CENTERS,
    DEFAULT_DATA_CENTER,
)

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)

# The C loader keeps a 10,000-job file fast; the pure-Python one builds the same node tree.
_Loader = type[yaml.SafeLoader | yaml.CSafeLoader]
_LOADER: _Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_NOT_NULL_TAG = "tag:yaml.org,2002:str"  # any other tag would do: the walk only tests for null
_IMPLICIT_TAGS = {ScalarNode: _NOT_NULL_TAG, SequenceNode: _SEQ_TAG, MappingNode: _MAP_TAG}
_NULL_TEXTS = frozenset(("", "~", "null", "Null", "NULL"))  # plain scalars YAML 1.1 reads as null
_NULL_RESOLVING: dict[_Loader, _Loader] = {}  # see _null_resolving

# Problems told per file (and per jobs_dir); the rest are counted.
PROBLEMS_SHOWN = 100


_SECRETS = ("access_token", "refresh_token", "client_id", "client_secret")
_TRIO = ("refresh_token", "client_id", "client_secret")
_REFRESH_BACKOFF = ("refresh_backoff_initial", "refresh_backoff_max")
_AUTH_KEYS = (*_SECRETS, *(f"{name}_file" for name in _SECRETS), "accounts_url", *_REFRESH_BACKOFF)
_ZOHO_KEYS = ("data_center", "api_domain", "api_version", "auth")
_POLLING_ORDERED = (("interval", "max_interval"), ("backoff_initial", "backoff_max"))
_JOB_KEYS = ("module", "job_id")
_JOBS_FILE_SUFFIXES = (".yaml", ".yml")

_API_VERSION = re.compile(r"v[0-9]+(?:\.[0-9]+)?")  # v2, v2.1, v8
_MODULE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_PATH = re.compile(r"[^\x00-\x1f\x7f]+")
_HOST = re.compile(r"[^\s\x00-\x1f\x7f]+")
_MAX_PORT = 65535
_MAX_CONCURRENCY = 100  # Zoho's own limit per org is a few dozen requests in flight at most
# YAML 1.2's booleans only: 1.1's yes/no/on/off are too easily meant as something else.
_BOOLEANS = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}
# Longer values are described in messages, not quoted: one may be a credential pasted under the
# wrong key (Zoho's client ids have 35 characters, its tokens 70), where no mask would find it.
_QUOTED_LENGTH = 32
MAX_FILE_BYTES = 64 * 2**20  # a 10,000-job config is about 0.6 MB
_MAX_DIGITS = 18  # keeps counts within 64 bits and clear of int()'s 4300-digit limit
# Shorter secrets are not masked in messages or events: they would mangle ordinary words (and
# the JSON of every event line), and no real Zoho credential is that short.
MASKED_LENGTH = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNBRACED = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")  # $NAME, meant as ${NAME}
_REFERENCE = re.compile(r"\$(?:\$|\{(?P<name>[^}]*)(?P<end>\}?)|(?P<bare>[A-Za-z_]))")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRAILING_NEWLINE = re.compile(r"\r?\n\Z")
_NO_CREDENTIALS = (
    "give access_token, or refresh_token + client_id + client_secret"
    " (each may instead be read from a file with NAME_file)"
)


@dataclass(frozen=True)
class Secret:
    """A secret string whose repr/str never show the value, so logging a setting cannot leak it."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


@dataclass(frozen=True)
class AuthSettings:
    access_token: Secret | None
    refresh_token: Secret | None
    client_id: Secret | None
    client_secret: Secret | None
    accounts_url: str | None
    # Zoho blocks a client that refreshes too often, so a throttled or failed refresh waits.
    refresh_backoff_initial: float = 30.0
    refresh_backoff_max: float = 600.0

    @property
    def refreshes(self) -> bool:
        """True when tokens come from refreshing (the trio is set) rather than a fixed token."""
        return self.refresh_token is not None

    def secrets(self) -> tuple[str, ...]:
        """Every secret value, so output can be scrubbed of them."""
        candidates = (self.access_token, self.refresh_token, self.client_id, self.client_secret)
        return tuple(secret.reveal() for secret in candidates if secret is not None)


@dataclass(frozen=True)
class ZohoSettings:
    api_domain: str | None
    api_version: str
    data_center: str | None
    auth: AuthSettings


@dataclass(frozen=True)
class PollingSettings:
    interval: float = 10.0
    max_interval: float = 300.0
    rate_limit: int = 10
    rate_period: float = 1.0
    max_concurrency: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 300.0
    request_timeout: float = 30.0
    not_found_attempts: int = 3
    schedule: str = "adaptive"
    credits_per_day: int | None = None
    credits_floor: int = 1000


class JobSpec(NamedTuple):
    """One job to watch. A tuple: it keys every per-job dict and the scheduler's queue, and a
    tuple is made, hashed and compared in C, where a frozen dataclass runs Python each time."""

    module: str
    job_id: str


@dataclass(frozen=True)
class HttpSettings:
    """Where the health and metrics listener binds; without a port there is no listener."""

    host: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class Config:
    zoho: ZohoSettings
    polling: PollingSettings
    jobs: tuple[JobSpec, ...]
    reload_interval: float = 5.0
    jobs_dir: Path | None = None
    state_path: Path | None = None
    retention: float = 168 * 3600.0
    progress_events: bool = True
    http: HttpSettings = field(default_factory=HttpSettings)
    source: Path | None = None  # the file it was loaded from, so a reload knows what to re-read
    # What load_all read, hashed (see Fingerprint); not part of what the config says.
    fingerprint: bytes | None = field(default=None, compare=False)


class ConfigError(Exception):
    """The problems found, each one line: '<source>:<line>: <key.path>: <problem>'.

    `shown` are the first ones; `more` were found beyond them, and `problems` ends with a line
    that counts them: a systematic mistake in ten thousand jobs needs a few examples, not ten
    thousand lines.
    """

    def __init__(
        self, shown: Iterable[str], *, more: int = 0, source: str = "", jobs_dir: Path | None = None
    ) -> None:
        self.shown = tuple(shown)
        self.jobs_dir = jobs_dir  # where jobs files were read, when they were the trouble
        self.found = len(self.shown) + more
        counted = (f"{source}: ... and {more} more problems",) if more else ()
        self.problems = (*self.shown, *counted)
        super().__init__("\n".join(self.problems))


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


def load_config(
    path: Path, env: Mapping[str, str] | None = None, seen: Fingerprint | None = None
) -> Config:
    """Reads and validates `path`; anything wrong, the file itself included, is a ConfigError.

    Only the main file: load_all also reads the jobs files in jobs_dir.
    """
    text = _read_file(path, "config file", seen)
    config = parse_config(text, _named(path), os.environ if env is None else env)
    return replace(config, source=path)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    """Validates YAML `text`, naming it `source` in messages and expanding ${VAR} from `env`."""
    # Resumed only once the node tree is gone with its reader: alive then, all of it would be
    # walked by a collection that finds nothing to free.
    with collector.paused():
        config = _read_config(text, source, env)
    _refuse_secrets_in(config.jobs, config.zoho.auth.secrets(), source)
    return config


def _read_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    reader = _Reader(source, env)
    config = _config(reader, _compose(text, source))
    if config is None or reader.problems:
        raise reader.error()
    return config


def load_state_path(path: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Only `state_path`: all that `status` reads. An admin's shell often has neither the
    credentials the rest names (`${VAR}`s, secret files) nor, mid-edit, jobs files that read
    well, and needs neither to look at what the watcher remembers."""
    source = _named(path)
    reader = _Reader(source, os.environ if env is None else env)
    root = _compose(_read_file(path, "config file", None), source)
    node = _value_of(root, "state_path")
    state_path = None if node is None else _optional(reader.local_path)(node, "state_path")
    if reader.problems:
        raise reader.error()
    return state_path


def _value_of(mapping: Node, key: str) -> Node | None:
    """The node of `key`'s value, read before (or besides) the mapping's own checks."""
    if isinstance(mapping, MappingNode):
        for name, value in mapping.value:
            if isinstance(name, ScalarNode) and name.value == key:
                return cast(Node, value)
    return None


def load_all(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """The main file plus every jobs file in its jobs_dir: the complete set of jobs to watch.

    Jobs files are read in name order and their jobs appended after the main file's, so the order
    of jobs (and of their first polls) does not depend on the directory listing. The problems of
    every jobs file are reported together, each naming its file.
    """
    seen = Fingerprint()
    config = load_config(path, env, seen)
    if config.jobs_dir is None:
        return replace(config, fingerprint=seen.digest())
    jobs = list(config.jobs)
    problems: list[str] = []
    found = 0
    for jobs_file in jobs_files(config.jobs_dir):
        try:
            jobs.extend(load_jobs_file(jobs_file, seen))
        except ConfigError as error:
            problems.extend(error.shown)
            found += error.found
    if problems:
        # A token pasted into a jobs file by mistake must not be echoed back either.
        shown = redact(problems[:PROBLEMS_SHOWN], config.zoho.auth.secrets())
        source = _named(config.jobs_dir)
        raise ConfigError(shown, more=found - len(shown), source=source, jobs_dir=config.jobs_dir)
    # The main file's were checked as it was parsed.
    _refuse_secrets_in(jobs[len(config.jobs) :], config.zoho.auth.secrets(), str(config.jobs_dir))
    return replace(config, jobs=tuple(dict.fromkeys(jobs)), fingerprint=seen.digest())


def load_jobs_file(path: Path, seen: Fingerprint | None = None) -> tuple[JobSpec, ...]:
    """The jobs of one file dropped in jobs_dir; anything wrong with it is a ConfigError."""
    return parse_jobs_file(_read_file(path, "jobs file", seen), _named(path))


def parse_jobs_file(text: str, source: str) -> tuple[JobSpec, ...]:
    """Validates a jobs file: a mapping with only a `jobs:` list, items as in the main file.

    Values are read literally: a jobs file is written by a tool, not templated from the
    environment, and a module or job id can never contain a `$` anyway.
    """
    with collector.paused():  # resumed with the node tree gone, as in `parse_config`
        return _read_jobs_file(text, source)


def _read_jobs_file(text: str, source: str) -> tuple[JobSpec, ...]:
    reader = _Reader(source, None)
    sections = reader.mapping(_compose(text, source), "", ("jobs",)) or {}
    jobs = _jobs(reader, sections.get("jobs", SequenceNode(_SEQ_TAG, [])))
    if reader.problems:
        raise reader.error()
    return jobs


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
        problem = f"{_named(directory)}: cannot read jobs_dir: {_reason(error)}"
        raise ConfigError((problem,)) from None
    return [name for name in names if name.endswith(_JOBS_FILE_SUFFIXES) and name[:1] != "."]


def _read_file(path: Path, what: str, seen: Fingerprint | None = None) -> str:
    """The text of `path` (noted in `seen`), or a ConfigError saying in one line why it cannot be
    had."""
    try:
        content = read_file_bytes(path)
        text = _text(content)
    except FileNotFoundError:
        raise ConfigError((f"{_named(path)}: {what} not found",)) from None
    except (OSError, ValueError) as error:
        raise ConfigError((f"{_named(path)}: cannot read {what}: {_reason(error)}",)) from None
    if seen is not None:
        seen.add(path, content)
    return text


def _read_text(path: Path) -> str:
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


def _reason(error: OSError | ValueError) -> str:
    """One line saying why a file could not be read, without the traceback-ish repr of `error`."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {error.start})"
    return getattr(error, "strerror", None) or str(error)


def _compose(text: str, source: str) -> Node:
    """The document's node tree; an empty document counts as an empty mapping."""
    try:
        root = yaml.compose(text, Loader=_null_resolving(_LOADER))
    except yaml.MarkedYAMLError as error:
        raise ConfigError((_marked_problem(source, error),)) from None
    except yaml.reader.ReaderError as error:
        libyaml = _LOADER is not yaml.SafeLoader
        line, column = _line_and_column(text, error.position, in_bytes=libyaml)
        raise ConfigError((f"{source}:{line}:{column}: invalid YAML: {error.reason}",)) from None
    except UnicodeEncodeError:  # the C loader encodes to UTF-8 first, which lone surrogates fail
        raise ConfigError((f"{source}: invalid YAML: text is not valid Unicode",)) from None
    except RecursionError:  # the pure-Python loader recurses per level; libyaml stops at 1000
        raise ConfigError((f"{source}: invalid YAML: nested too deeply",)) from None
    return MappingNode(_MAP_TAG, []) if root is None else root


def _line_and_column(text: str, position: int, *, in_bytes: bool) -> tuple[int, int]:
    """Where `position` is in `text`, counting from 1: libyaml counts it in bytes of UTF-8."""
    before = text[:position]
    if in_bytes:
        before = text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "replace")
    return before.count("\n") + 1, len(before) - before.rfind("\n")


def _null_resolving(loader: _Loader) -> _Loader:
    """`loader` with `_NullResolver`'s tagging; made when first used, so a test may swap _LOADER."""
    if loader not in _NULL_RESOLVING:
        _NULL_RESOLVING[loader] = cast(_Loader, type(loader.__name__, (_NullResolver, loader), {}))
    return _NULL_RESOLVING[loader]


class _NullResolver:
    """Tags plain scalars null or not, and nothing more: all that the walk asks (`_is_null`).

    PyYAML's resolver tries the regular expressions of YAML 1.1's implicit types (bool, int,
    float, timestamp...) on every plain scalar and consults path resolvers on every node, all
    in Python: a sixth of composing a 10,000-job file, a third when the ids are unquoted. The
    walk reads every value as the text written, so the type those tags name never matters.
    """

    def resolve(self, kind: type[Node], value: str | None, implicit: Any) -> str:
        # `implicit` is (plain, quoted) for a scalar and a single bool for a collection.
        if kind is ScalarNode and implicit[0] and value in _NULL_TEXTS:
            return _NULL_TAG
        return _IMPLICIT_TAGS[kind]

    def descend_resolver(self, *_: object) -> None:
        """No path resolvers: nothing to track on the way down or (below) back up."""

    ascend_resolver = descend_resolver


def _marked_problem(source: str, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    reason = error.problem or "malformed document"
    if error.context:
        reason = f"{reason} ({error.context})"
    return f"{where}: invalid YAML: {' '.join(reason.split())}"


def _config(reader: _Reader, root: Node) -> Config | None:
    readers: dict[str, Callable[[Node, str], object]] = {
        "reload_interval": reader.duration,
        "jobs_dir": _optional(reader.directory),
        "state_path": _optional(reader.local_path),
        "retention": reader.duration,
        "progress_events": reader.boolean,
    }
    sections = reader.mapping(root, "", ("zoho", "polling", "jobs", *readers, "http"))
    if sections is None:
        return None
    zoho = _zoho(reader, sections.get("zoho", _empty_mapping(root)))
    polling = _polling(reader, sections.get("polling", _empty_mapping(root)))
    jobs = _jobs(reader, sections.get("jobs", SequenceNode(_SEQ_TAG, [])))
    http = _http(reader, sections.get("http", _empty_mapping(root)))
    service = reader.values(sections, "", readers)
    return None if zoho is None else Config(zoho, polling, jobs, http=http, **service)


def _zoho(reader: _Reader, node: Node) -> ZohoSettings | None:
    settings = reader.mapping(node, "zoho", _ZOHO_KEYS)
    if settings is None:
        return None
    data_center = reader.field(settings, "zoho", "data_center", reader.data_center)
    api_domain = reader.field(settings, "zoho", "api_domain", reader.url)
    api_version = reader.field(settings, "zoho", "api_version", reader.api_version)
    # Zoho's API of one data centre says where its tokens come from, when nothing else does.
    centre = data_center or CENTRE_OF_API.get((api_domain or "").lower())
    auth_node = settings.get("auth", _empty_mapping(node))
    auth = _auth(reader, auth_node, centre)
    if auth is None:
        return None
    if (problem := _centres_problem(api_domain, data_center, auth.accounts_url)) is not None:
        key, message = problem
        if key == "api_domain":
            reader.report(settings.get(key, node), "zoho.api_domain", message)
        else:
            reader.report(_value_of(auth_node, key) or node, "zoho.auth.accounts_url", message)
        return None
    if api_domain is None and (data_center or not auth.refreshes):
        api_domain = DATA_CENTERS[data_center or DEFAULT_DATA_CENTER][1]
    return ZohoSettings(api_domain, api_version or "v2", data_center, auth)


def _centres_problem(
    api_domain: str | None, data_center: str | None, accounts_url: str | None
) -> tuple[str, str] | None:
    """The key to blame and why, if the API (given, or the data centre's) and the accounts server
    are Zoho's of two data centres: tokens are issued per data centre, and every one sent to
    another would be refused. (Either not Zoho's own, a proxy or a simulator, is not compared; no
    accounts server is a fixed token from anywhere.)"""
    api = api_domain or (DATA_CENTERS[data_center][1] if data_center else "")
    api_centre = CENTRE_OF_API.get(api.lower())
    tokens_centre = CENTRE_OF_ACCOUNTS.get((accounts_url or "").lower())
    if api_centre is None or tokens_centre is None or api_centre == tokens_centre:
        return None
    if api_domain is None or api_centre == data_center:  # the odd one out is accounts_url
        return "accounts_url", (
            f"{accounts_url} is the accounts server of Zoho's {tokens_centre!r} data centre, but"
            f" data_center is {data_center!r}; remove accounts_url (data_center picks it) or make"
            " them agree"
        )
    return "api_domain", (
        f"{api_domain} is the API of Zoho's {api_centre!r} data centre, but tokens come from its"
        f" {tokens_centre!r} data centre; remove api_domain (the data centre then picks the API)"
        " or make them agree"
    )


def _auth(reader: _Reader, node: Node, data_center: str | None) -> AuthSettings | None:
    path = "zoho.auth"
    settings = reader.mapping(node, path, _AUTH_KEYS)
    if settings is None:
        return None
    secrets: dict[str, Any] = {name: reader.secret(settings, path, name) for name in _SECRETS}
    accounts_url = reader.field(settings, path, "accounts_url", reader.url)
    backoff = reader.values(settings, path, dict.fromkeys(_REFRESH_BACKOFF, reader.duration))
    given = {name for name in _SECRETS if name in settings or f"{name}_file" in settings}
    mode_problem = _mode_problem(given)
    if mode_problem:
        reader.report(node, path, mode_problem)
        return None
    refreshes = "access_token" not in given
    if accounts_url is None and (data_center or refreshes):
        accounts_url = DATA_CENTERS[data_center or DEFAULT_DATA_CENTER][0]
    auth = AuthSettings(**secrets, accounts_url=accounts_url, **backoff)
    _check_order(reader, node, path, settings, backoff, auth, (_REFRESH_BACKOFF,))
    return auth


def _mode_problem(given: set[str]) -> str | None:
    """Why the credentials given fit neither fixed-token nor refresh mode, if they don't."""
    trio = given.intersection(_TRIO)
    if "access_token" in given and trio:
        return "give either access_token or refresh_token + client_id + client_secret, not both"
    if not given:
        return f"no credentials: {_NO_CREDENTIALS}"
    missing = [name for name in _TRIO if name not in trio]
    if "access_token" not in given and missing:
        return f"refresh mode also needs {' and '.join(missing)}"
    return None


def _polling(reader: _Reader, node: Node) -> PollingSettings:
    readers: dict[str, Callable[[Node, str], object]] = {
        "interval": reader.duration,
        "max_interval": reader.duration,
        "rate_limit": reader.count,
        "rate_period": reader.duration,
        "max_concurrency": reader.concurrency,
        "backoff_initial": reader.duration,
        "backoff_max": reader.duration,
        "request_timeout": reader.duration,
        "not_found_attempts": reader.count,
        "schedule": reader.schedule,
        "credits_per_day": _optional(reader.count),
        "credits_floor": reader.whole,  # 0 turns the low-credits warning off
    }
    settings = reader.mapping(node, "polling", tuple(readers))
    if settings is None:
        return PollingSettings()
    values = reader.values(settings, "polling", readers)
    polling = PollingSettings(**values)
    _check_order(reader, node, "polling", settings, values, polling, _POLLING_ORDERED)
    return polling


def _http(reader: _Reader, node: Node) -> HttpSettings:
    readers = {"host": _optional(reader.host), "port": _optional(reader.port)}
    settings = reader.mapping(node, "http", tuple(readers))
    if settings is None:
        return HttpSettings()
    return HttpSettings(**reader.values(settings, "http", readers))


def _check_order(
    reader: _Reader,
    node: Node,
    path: str,
    settings: Mapping[str, Node],
    values: Mapping[str, object],
    result: object,
    pairs: Iterable[tuple[str, str]],
) -> None:
    """Reports each (low, high) pair of durations in `result` whose high is below its low."""
    for low, high in pairs:
        # A bound that was given but invalid fell back to its default: comparing it would mislead.
        if any(name in settings and name not in values for name in (low, high)):
            continue
        low_value, high_value = getattr(result, low), getattr(result, high)
        if high_value < low_value:
            where = settings.get(high) or settings.get(low) or node
            reader.report(
                where,
                f"{path}.{high}",
                f"{format_duration(high_value)} is less than {path}.{low}"
                f" ({format_duration(low_value)})",
            )


def _jobs(reader: _Reader, node: Node) -> tuple[JobSpec, ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, SequenceNode):
        reader.report(node, "jobs", f"expected a list of jobs, got {_kind(node)}")
        return ()
    specs = (
        _usual_job(item) or _job(reader, item, f"jobs[{index}]")
        for index, item in enumerate(node.value)
    )
    return tuple(dict.fromkeys(spec for spec in specs if spec is not None))


def _usual_job(node: Node) -> JobSpec | None:
    """The job of an item written the usual way, or None to leave the item to `_job`.

    The usual way, which nearly every item of a 10,000-job file follows, is exactly the keys
    module and job_id (either order) with single values that are valid as written. `_job` would
    read such an item to the same JobSpec without a problem, only at several times the cost; it
    still reads every other item, so whatever is wrong is reported as it always was. A value
    that matches its pattern holds no `$`, so ${VAR} expansion could not have changed it.
    """
    if not isinstance(node, MappingNode) or len(node.value) != len(_JOB_KEYS):
        return None
    first, second = node.value
    if first[0].value == "job_id":
        first, second = second, first
    (module_key, module), (job_id_key, job_id) = first, second
    usual = (
        module_key.value == "module"
        and job_id_key.value == "job_id"
        and isinstance(module, ScalarNode)
        and isinstance(job_id, ScalarNode)
        and _MODULE.fullmatch(module.value)
        and _DIGITS.fullmatch(job_id.value)
    )
    return JobSpec(module.value, job_id.value) if usual else None


def _job(reader: _Reader, node: Node, path: str) -> JobSpec | None:
    settings = reader.mapping(node, path, _JOB_KEYS)
    if settings is None:
        return None
    missing = [name for name in _JOB_KEYS if name not in settings]
    if missing:
        reader.report(node, path, f"missing {' and '.join(missing)}")
    module = reader.field(settings, path, "module", reader.module)
    job_id = reader.field(settings, path, "job_id", reader.job_id)
    return None if module is None or job_id is None else JobSpec(module, job_id)


class _Reader:
    """Reads values out of nodes, collecting every problem instead of stopping at the first.

    Readers return None for a missing or invalid value; callers then fall back to a default, which
    is harmless because any problem means the configuration is rejected as a whole. Without an
    `env`, values are taken literally: no ${VAR} expansion.
    """

    def __init__(self, source: str, env: Mapping[str, str] | None) -> None:
        self._source = source
        self._env = env
        self._secret_texts: list[str] = []
        self.problems: list[tuple[int, int, str]] = []  # see `report`
        self.found = 0  # all of them
        # Each mapping read, by id (held, so that no id is reused meanwhile): its line.
        self._mappings_read: dict[int, tuple[Node, int]] = {}

    def report(self, node: Node, path: str, message: str) -> None:
        """Keeps the PROBLEMS_SHOWN first in the file (a heap of the latest of them on top:
        sections are read in their own order, not the file's), and counts the rest."""
        self.found += 1
        line = _line(node)
        kept = (-line, -self.found, f"{self._source}:{line}: {path or 'top level'}: {message}")
        if len(self.problems) < PROBLEMS_SHOWN:
            heapq.heappush(self.problems, kept)
        elif kept > self.problems[0]:
            heapq.heapreplace(self.problems, kept)

    def error(self) -> ConfigError:
        """The problems in file order, secrets masked: a token put under another key must not
        leak."""
        in_order = sorted(self.problems, reverse=True)  # by line, then as found
        shown = redact((problem for _, _, problem in in_order), self._secret_texts)
        return ConfigError(shown, more=self.found - len(shown), source=self._source)

    def mapping(self, node: Node, path: str, allowed: tuple[str, ...]) -> dict[str, Node] | None:
        """The mapping's known keys (a null section counts as empty); None if not a mapping."""
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.report(node, path, f"expected a mapping, got {_kind(node)}")
            return None
        if (read := self._mappings_read.get(id(node))) is not None:
            # A YAML alias: each of its uses would be checked, and its problems told, again;
            # a few bytes of `*name` could make millions of them.
            self.report(node, path, f"repeats the mapping of line {read[1]} (a YAML alias)")
            return None
        self._mappings_read[id(node)] = (node, _line(node))
        found: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.report(key_node, path, f"keys must be plain names, got {_kind(key_node)}")
                continue
            key: str = key_node.value
            if key in first_lines:
                self.report(
                    key_node,
                    path,
                    f"duplicate key {_shown(key)} (first at line {first_lines[key]})",
                )
            elif key not in allowed:
                self.report(key_node, path, _unknown_key(key, allowed))
            else:
                found[key] = value_node
            first_lines.setdefault(key, _line(key_node))
        return found

    def field(
        self,
        settings: Mapping[str, Node],
        path: str,
        key: str,
        read: Callable[[Node, str], _T | None],
    ) -> _T | None:
        node = settings.get(key)
        return None if node is None else read(node, f"{path}.{key}" if path else key)

    def values(
        self,
        settings: Mapping[str, Node],
        path: str,
        readers: Mapping[str, Callable[[Node, str], object]],
    ) -> dict[str, Any]:
        """Keyword arguments for a settings dataclass: each value given and valid, by its name.

        Absent, null-where-optional and invalid values are left out, so the dataclass's own
        default applies and the defaults live in one place.
        """
        read = {name: self.field(settings, path, name, reader) for name, reader in readers.items()}
        return {name: value for name, value in read.items() if value is not None}

    def scalar(self, node: Node, path: str) -> str | None:
        """The value's text exactly as written (whatever type YAML guessed), ${VAR}s expanded."""
        if not isinstance(node, ScalarNode):
            self.report(node, path, f"expected a single value, got {_kind(node)}")
            return None
        text: str = node.value
        env = self._env
        if env is None or "$" not in text:
            return text
        count = self.found
        expanded = _REFERENCE.sub(lambda match: self._expand(match, node, path, env), text)
        return expanded if self.found == count else None

    def _expand(self, match: re.Match[str], node: Node, path: str, env: Mapping[str, str]) -> str:
        """One ${VAR} or $$; the reference is not echoed, as it may sit inside a secret. A bare
        $NAME is refused: taken as text, `https://$DOMAIN` would be polled for ever, and a
        `state_path` of `$DIR/state.db` would land where no restart looks."""
        name, end = match["name"], match["end"]
        if match["bare"] is not None:
            self.report(node, path, "write ${NAME} for an environment variable, $$ for a literal $")
            return ""
        if name is None:
            return "$"
        if not end:
            self.report(node, path, "unterminated ${ (write $$ for a literal $)")
        elif not _VARIABLE.fullmatch(name):
            self.report(node, path, "invalid ${VAR} reference (write $$ for a literal $)")
        elif name in env:
            return env[name]
        else:
            self.report(node, path, f"environment variable {name} is not set")
        return ""

    def matching(self, node: Node, path: str, pattern: re.Pattern[str], rule: str) -> str | None:
        text = self.scalar(node, path)
        if text is not None and not pattern.fullmatch(text):
            self.report(node, path, f"{_shown(text)} {rule}")
            return None
        return text

    def module(self, node: Node, path: str) -> str | None:
        rule = "is not a module API name (letters, digits and _, starting with a letter)"
        return self.matching(node, path, _MODULE, rule)

    def job_id(self, node: Node, path: str) -> str | None:
        return self.matching(node, path, _DIGITS, "is not a job id (digits only)")

    def api_version(self, node: Node, path: str) -> str | None:
        return self.matching(node, path, _API_VERSION, "is not an API version such as v2")

    def data_center(self, node: Node, path: str) -> str | None:
        return self._one_of(node, path, DATA_CENTERS, "data centre")

    def schedule(self, node: Node, path: str) -> str | None:
        return self._one_of(node, path, SCHEDULES, "schedule")

    def _one_of(self, node: Node, path: str, choices: Collection[str], what: str) -> str | None:
        text = self.scalar(node, path)
        if text is not None and text not in choices:
            self.report(node, path, f"unknown {what} {_shown(text)} (valid: {', '.join(choices)})")
            return None
        return text

    def boolean(self, node: Node, path: str) -> bool | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        if text not in _BOOLEANS:
            self.report(node, path, f"expected true or false, got {_shown(text)}")
            return None
        return _BOOLEANS[text]

    def host(self, node: Node, path: str) -> str | None:
        rule = "is not a host name or address"
        text = self.matching(node, path, _HOST, rule)
        if text is None:
            return None
        bare = _bare_host(text)
        if bare and _encodable_host(text):
            return text
        if not bare:
            rule += " (written bare, as ::1 or 0.0.0.0; the port is http.port)"
        self.report(node, path, f"{_shown(text)} {rule}")
        return None

    def local_path(self, node: Node, path: str) -> Path | None:
        """A filesystem path; relative ones start from the working directory, as for NAME_file."""
        rule = "is not a path (empty, or with a line break or other control character)"
        text = self.matching(node, path, _PATH, rule)
        if text is None or self._tilde(node, path, text):
            return None
        return Path(text)

    def _tilde(self, node: Node, path: str, text: str) -> bool:
        """Whether `text` starts with a `~`, reported. Taken as written it is a directory named
        `~` in the working directory (`state_path: ~/state.db` would be created there, where
        `rm -rf ~` is the obvious and ruinous clean-up), which nobody who writes it means."""
        if not text.startswith("~"):
            return False
        self.report(node, path, f"{_shown(text)}: '~' is not expanded; write ${{HOME}} instead")
        return True

    def directory(self, node: Node, path: str) -> Path | None:
        """An existing directory: checked here so that the problem can point at its line."""
        location = self.local_path(node, path)
        if location is not None and not os.path.isdir(location):
            found = "not a directory" if os.path.exists(location) else "directory not found"
            self.report(node, path, f"{found}: {_shown_path(str(location))}")
            return None
        return location

    def duration(self, node: Node, path: str) -> float | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except ValueError as error:
            self.report(node, path, str(error).replace(repr(text), _shown(text)))
            return None
        return self._positive(node, path, seconds)

    def whole(self, node: Node, path: str) -> int | None:
        """A whole number, zero included."""
        text = self.scalar(node, path)
        if text is None:
            return None
        if not _DIGITS.fullmatch(text):
            self.report(node, path, f"expected a whole number, got {_shown(text)}")
            return None
        if len(text) > _MAX_DIGITS:
            self.report(node, path, f"{_shown(text)} is too large")
            return None
        return int(text)

    def count(self, node: Node, path: str) -> int | None:
        number = self.whole(node, path)
        return None if number is None else self._positive(node, path, number)

    def concurrency(self, node: Node, path: str) -> int | None:
        """Workers, each one task: Zoho lets an org have far fewer requests in flight anyway."""
        problem = f"is more than {_MAX_CONCURRENCY} requests at once"
        return self._at_most(node, path, self.count(node, path), _MAX_CONCURRENCY, problem)

    def port(self, node: Node, path: str) -> int | None:
        """A TCP port; 0 lets the system pick a free one (handy for tests)."""
        problem = f"is not a port number (0 to {_MAX_PORT})"
        return self._at_most(node, path, self.whole(node, path), _MAX_PORT, problem)

    def _at_most(
        self, node: Node, path: str, number: int | None, maximum: int, problem: str
    ) -> int | None:
        """`number`, unless it exceeds `maximum`: then `problem`, said of it, is reported."""
        if number is not None and number > maximum:
            self.report(node, path, f"{number} {problem}")
            return None
        return number

    def _positive(self, node: Node, path: str, number: _N) -> _N | None:
        if number <= 0:
            self.report(node, path, "must be greater than zero")
            return None
        return number

    def url(self, node: Node, path: str) -> str | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        problem = url_problem(text)
        if problem:
            self.report(node, path, problem)
            return None
        return text.removesuffix("/")

    def secret(self, settings: Mapping[str, Node], path: str, name: str) -> Secret | None:
        """`name` given inline or as `name`_file; its value never appears in a message."""
        inline, in_file = settings.get(name), settings.get(f"{name}_file")
        if inline is not None and in_file is not None:
            self.report(in_file, f"{path}.{name}_file", f"give {name} or {name}_file, not both")
            return None
        if inline is not None:
            node, key, read = inline, f"{path}.{name}", self._inline_secret
        elif in_file is not None:
            node, key, read = in_file, f"{path}.{name}_file", self._secret_file
        else:
            return None
        if _is_null(node):
            self.report(node, key, "no value given")
            return None
        text = read(node, key)
        if text is None:
            return None
        self._secret_texts.append(text)
        if not text:
            self.report(node, key, "the secret is empty")
        elif _CONTROL.search(text):
            self.report(node, key, "the secret contains a line break or other control character")
        elif text != text.strip():  # pasted along with it: Zoho would refuse it, far from here
            self.report(node, key, "the secret starts or ends with a space")
        elif text.lower().startswith(f"{AUTH_SCHEME.lower()} "):  # the header pasted whole
            self.report(node, key, f"give the token alone, without {AUTH_SCHEME!r} before it")
        elif not _is_utf8(text):  # a byte the environment held that no header or form can carry
            self.report(node, key, "the secret is not valid UTF-8 text")
        else:
            return Secret(text)
        return None

    def _inline_secret(self, node: Node, path: str) -> str | None:
        written = node.value if isinstance(node, ScalarNode) else None
        if isinstance(written, str) and _UNBRACED.fullmatch(written):
            # Taken literally, it would be sent to Zoho as the token and refused.
            name = written[1:]
            self.report(node, path, f"write ${{{name}}} for the environment variable {name}")
            return None
        return self.scalar(node, path)

    def _secret_file(self, node: Node, path: str) -> str | None:
        location = self.scalar(node, path)
        if location is None:
            return None
        if not location:  # Path("") would be the working directory
            self.report(node, path, "no file named")
            return None
        if self._tilde(node, path, location):
            return None
        try:
            text = _read_text(Path(location))
        except (OSError, ValueError) as error:
            self.report(node, path, f"cannot read {_shown_path(location)}: {_reason(error)}")
            return None
        return _TRAILING_NEWLINE.sub("", text, count=1)


def _optional(read: Callable[[Node, str], _T | None]) -> Callable[[Node, str], _T | None]:
    """`read`, except that null (~, null or no value) means "not set" rather than a bad value."""

    def read_optional(node: Node, path: str) -> _T | None:
        return None if _is_null(node) else read(node, path)

    return read_optional


def _refuse_secrets_in(jobs: Sequence[JobSpec], secrets: Sequence[str], source: str) -> None:
    """A credential pasted as a module or job id would go to Zoho in a URL and be shown by
    `/jobs` and `status`, which mask nothing: refused, without saying which job (or it)."""
    maskable = [secret for secret in secrets if len(secret) >= MASKED_LENGTH]
    if not maskable:
        return
    modules = {job.module for job in jobs}  # a handful, however many jobs
    numeric = [secret for secret in maskable if secret.isdigit()]  # ids are digits
    if any(secret in module for module in modules for secret in maskable) or any(
        secret in job.job_id for job in jobs for secret in numeric
    ):
        raise ConfigError(
            (
                f"{source}: jobs: a module or job id holds one of the configured secrets;"
                " pasted in the wrong place?",
            )
        )


def redact(problems: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """`problems` with every secret long enough to be unambiguous replaced by ***."""
    maskable = {text for text in secrets if len(text) >= MASKED_LENGTH}
    maskable |= {repr(text)[1:-1] for text in maskable}  # as a message quotes it, escaped
    longest_first = sorted(maskable, key=len, reverse=True)  # a secret may contain another
    redacted = []
    for problem in problems:
        for secret in longest_first:
            problem = problem.replace(secret, "***")
        redacted.append(problem)
    return redacted


def url_problem(text: str) -> str | None:
    """What keeps `text` from being a base URL the watcher may send a token to, if anything."""
    not_url = "expected an absolute URL such as https://www.zohoapis.com"
    try:
        parts = urlsplit(text)
        usable = bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed IPv6 literal or port number
        return not_url
    if not usable or parts.scheme.lower() not in ("http", "https") or _has_space(text):
        return not_url
    if _CONTROL.search(text) or not _encodable_host(parts.hostname or ""):
        return not_url
    if "@" in parts.netloc:
        return "must not contain a user name or password"
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname or ""):
        return "must use https (http is allowed only for localhost)"
    if "?" in text or "#" in text:
        return "must not have a query or fragment"
    if parts.path not in ("", "/"):
        return "must not have a path (just scheme, host and port)"
    return None


def _has_space(text: str) -> bool:
    return any(character.isspace() for character in text)


def _bare_host(host: str) -> bool:
    """A name or an address as it stands: no scheme, brackets, port or path, which a URL puts
    around a host but a listener is not told."""
    if ":" in host:  # only an IPv6 address may hold one
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return not any(mark in host for mark in "/[]@?#")


def _encodable_host(host: str) -> bool:
    """Whether a resolver can be asked for `host`: an empty label ("a..b"), one over 63
    characters, or a character no IDNA name may hold fails only once a connection is tried."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine (what http, rather than https, may reach)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    import difflib  # only ever needed for a mistyped key: a clean start does without it

    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
    return f"unknown key {_shown(key)} ({hint})"


def _shown(text: str) -> str:
    """`text` as a message quotes it, or only its length if it could be a credential."""
    return repr(text) if len(text) <= _QUOTED_LENGTH else f"a {len(text)}-character value"


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates: how Python keeps bytes that were not UTF-8
        return False
    return True


def _named(path: Path) -> str:
    """A file's name as a message gives it: on one line, whatever characters the name holds."""
    text = str(path)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _shown_path(text: str) -> str:
    """A path as a message quotes it: in full when absolute, as paths in a container's config
    are; a long relative one only by its length, for it may be a credential given where a path
    goes (`access_token_file: ${ZOHO_ACCESS_TOKEN}`), and base64 secrets hold "/" too."""
    return repr(text) if text.startswith("/") else _shown(text)


def _line(node: Node) -> int:
    """1-based line of `node`; stand-ins for absent sections of an empty file have no mark."""
    return node.start_mark.line + 1 if node.start_mark else 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _NULL_TAG


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a single value"


def _empty_mapping(parent: Node) -> MappingNode:
    """Stands in for an absent section, placed at its parent so problems point somewhere real."""
    return MappingNode(_MAP_TAG, [], parent.start_mark, parent.end_mark)
