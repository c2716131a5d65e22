"""The watcher's YAML configuration: loaded once, validated completely, every problem with its line.

Validation walks yaml's node tree instead of the constructed objects: nodes keep line numbers and
the text as written, which YAML 1.1 would otherwise mangle (`job_id: 0123` is the int 83,
`module: No` is False).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from watcher.durations import format_duration, parse_duration

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)

# The C loader keeps a 10,000-job file fast; the pure-Python one builds the same node tree.
_LOADER: type[yaml.SafeLoader | yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL_TAG = "tag:yaml.org,2002:null"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

DATA_CENTERS: Mapping[str, tuple[str, str]] = {
    "us": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    "cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
    "uk": ("https://accounts.zoho.uk", "https://www.zohoapis.uk"),
}
# Without a data centre, refresh mode still needs somewhere to refresh; Zoho's default is the US.
_DEFAULT_DATA_CENTER = "us"

_SECRETS = ("access_token", "refresh_token", "client_id", "client_secret")
_TRIO = ("refresh_token", "client_id", "client_secret")
_AUTH_KEYS = (*_SECRETS, *(f"{name}_file" for name in _SECRETS), "accounts_url")
_ZOHO_KEYS = ("data_center", "api_domain", "api_version", "auth")
_TOP_KEYS = ("zoho", "polling", "jobs")
_COUNTS = ("rate_limit", "max_concurrency", "not_found_attempts")
_ORDERED = (("interval", "max_interval"), ("backoff_initial", "backoff_max"))
_JOB_KEYS = ("module", "job_id")

_API_VERSION = re.compile(r"v[0-9]+")
_MODULE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DIGITS = re.compile(r"[0-9]+")
_MAX_DIGITS = 18  # keeps counts within 64 bits and clear of int()'s 4300-digit limit
# Shorter secrets are not masked in messages: they would mangle ordinary words, and no real Zoho
# credential is that short.
_MASKED_LENGTH = 8
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REFERENCE = re.compile(r"\$(?:\$|\{(?P<name>[^}]*)(?P<end>\}?))")
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


@dataclass(frozen=True, order=True)
class JobSpec:
    module: str
    job_id: str


@dataclass(frozen=True)
class Config:
    zoho: ZohoSettings
    polling: PollingSettings
    jobs: tuple[JobSpec, ...]


class ConfigError(Exception):
    """All problems found, each one line: '<source>:<line>: <key.path>: <problem>'."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


def load_config(path: Path, env: Mapping[str, str] | None = None) -> Config:
    """Reads and validates `path`; anything wrong, the file itself included, is a ConfigError."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise ConfigError((f"{path}: config file not found",)) from None
    except (OSError, ValueError) as error:
        raise ConfigError((f"{path}: cannot read config file: {_reason(error)}",)) from None
    return parse_config(text, str(path), os.environ if env is None else env)


def parse_config(text: str, source: str, env: Mapping[str, str]) -> Config:
    """Validates YAML `text`, naming it `source` in messages and expanding ${VAR} from `env`."""
    reader = _Reader(source, env)
    config = _config(reader, _compose(text, source))
    if config is None or reader.problems:
        raise ConfigError(reader.redacted_problems())
    return config


def _read_text(path: Path) -> str:
    """UTF-8 text of `path`; "-sig" drops the byte-order mark some Windows editors write."""
    return path.read_bytes().decode("utf-8-sig")


def _reason(error: OSError | ValueError) -> str:
    """One line saying why a file could not be read, without the traceback-ish repr of `error`."""
    if isinstance(error, UnicodeDecodeError):
        return f"not UTF-8 text (bad byte at offset {error.start})"
    return getattr(error, "strerror", None) or str(error)


def _compose(text: str, source: str) -> Node:
    """The document's node tree; an empty document counts as an empty mapping."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as error:
        raise ConfigError((_marked_problem(source, error),)) from None
    except yaml.reader.ReaderError as error:
        problem = f"{source}: invalid YAML: {error.reason} (at character {error.position})"
        raise ConfigError((problem,)) from None
    except UnicodeEncodeError:  # the C loader encodes to UTF-8 first, which lone surrogates fail
        raise ConfigError((f"{source}: invalid YAML: text is not valid Unicode",)) from None
    except RecursionError:  # the pure-Python loader recurses per level; libyaml stops at 1000
        raise ConfigError((f"{source}: invalid YAML: nested too deeply",)) from None
    return MappingNode(_MAP_TAG, []) if root is None else root


def _marked_problem(source: str, error: yaml.MarkedYAMLError) -> str:
    mark = error.problem_mark or error.context_mark
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
    reason = error.problem or "malformed document"
    if error.context:
        reason = f"{reason} ({error.context})"
    return f"{where}: invalid YAML: {' '.join(reason.split())}"


def _config(reader: _Reader, root: Node) -> Config | None:
    sections = reader.mapping(root, "", _TOP_KEYS)
    if sections is None:
        return None
    zoho = _zoho(reader, sections.get("zoho", _empty_mapping(root)))
    polling = _polling(reader, sections.get("polling", _empty_mapping(root)))
    jobs = _jobs(reader, sections.get("jobs", SequenceNode(_SEQ_TAG, [])))
    return None if zoho is None else Config(zoho, polling, jobs)


def _zoho(reader: _Reader, node: Node) -> ZohoSettings | None:
    settings = reader.mapping(node, "zoho", _ZOHO_KEYS)
    if settings is None:
        return None
    data_center = reader.field(settings, "zoho", "data_center", reader.data_center)
    api_domain = reader.field(settings, "zoho", "api_domain", reader.url)
    api_version = reader.field(settings, "zoho", "api_version", reader.api_version)
    auth = _auth(reader, settings.get("auth", _empty_mapping(node)), data_center)
    if auth is None:
        return None
    if api_domain is None and (data_center or not auth.refreshes):
        api_domain = DATA_CENTERS[data_center or _DEFAULT_DATA_CENTER][1]
    return ZohoSettings(api_domain, api_version or "v2", data_center, auth)


def _auth(reader: _Reader, node: Node, data_center: str | None) -> AuthSettings | None:
    path = "zoho.auth"
    settings = reader.mapping(node, path, _AUTH_KEYS)
    if settings is None:
        return None
    secrets = {name: reader.secret(settings, path, name) for name in _SECRETS}
    accounts_url = reader.field(settings, path, "accounts_url", reader.url)
    given = {name for name in _SECRETS if name in settings or f"{name}_file" in settings}
    mode_problem = _mode_problem(given)
    if mode_problem:
        reader.report(node, path, mode_problem)
        return None
    refreshes = "access_token" not in given
    if accounts_url is None and (data_center or refreshes):
        accounts_url = DATA_CENTERS[data_center or _DEFAULT_DATA_CENTER][0]
    return AuthSettings(**secrets, accounts_url=accounts_url)


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
    names = tuple(setting.name for setting in fields(PollingSettings))
    settings = reader.mapping(node, "polling", names)
    if settings is None:
        return PollingSettings()
    values: dict[str, float] = {}
    for name, value_node in settings.items():
        read = reader.count if name in _COUNTS else reader.duration
        value = read(value_node, f"polling.{name}")
        if value is not None:
            values[name] = value
    polling = PollingSettings(**values)  # type: ignore[arg-type]  # counts hold ints
    for low, high in _ORDERED:
        # A bound that was given but invalid fell back to its default: comparing it would mislead.
        if any(name in settings and name not in values for name in (low, high)):
            continue
        low_value, high_value = getattr(polling, low), getattr(polling, high)
        if high_value < low_value:
            where = settings.get(high) or settings.get(low) or node
            reader.report(
                where,
                f"polling.{high}",
                f"{format_duration(high_value)} is less than polling.{low}"
                f" ({format_duration(low_value)})",
            )
    return polling


def _jobs(reader: _Reader, node: Node) -> tuple[JobSpec, ...]:
    if _is_null(node):
        return ()
    if not isinstance(node, SequenceNode):
        reader.report(node, "jobs", f"expected a list of jobs, got {_kind(node)}")
        return ()
    specs = (_job(reader, item, f"jobs[{index}]") for index, item in enumerate(node.value))
    return tuple(dict.fromkeys(spec for spec in specs if spec is not None))


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
    is harmless because any problem means the configuration is rejected as a whole.
    """

    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self._source = source
        self._env = env
        self._secret_texts: list[str] = []
        self.problems: list[tuple[int, str]] = []

    def report(self, node: Node, path: str, message: str) -> None:
        line = _line(node)
        self.problems.append((line, f"{self._source}:{line}: {path or 'top level'}: {message}"))

    def redacted_problems(self) -> list[str]:
        """Problems in file order, secrets masked: a token put under another key must not leak."""
        maskable = {text for text in self._secret_texts if len(text) >= _MASKED_LENGTH}
        longest_first = sorted(maskable, key=len, reverse=True)  # a secret may contain another
        redacted = []
        for _, problem in sorted(self.problems, key=lambda numbered: numbered[0]):
            for secret in longest_first:
                problem = problem.replace(secret, "***")
            redacted.append(problem)
        return redacted

    def mapping(self, node: Node, path: str, allowed: tuple[str, ...]) -> dict[str, Node] | None:
        """The mapping's known keys (a null section counts as empty); None if not a mapping."""
        if _is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.report(node, path, f"expected a mapping, got {_kind(node)}")
            return None
        found: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.report(key_node, path, f"keys must be plain names, got {_kind(key_node)}")
                continue
            key: str = key_node.value
            if key in first_lines:
                self.report(
                    key_node, path, f"duplicate key {key!r} (first at line {first_lines[key]})"
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
        return None if node is None else read(node, f"{path}.{key}")

    def scalar(self, node: Node, path: str) -> str | None:
        """The value's text exactly as written (whatever type YAML guessed), ${VAR}s expanded."""
        if not isinstance(node, ScalarNode):
            self.report(node, path, f"expected a single value, got {_kind(node)}")
            return None
        text: str = node.value
        if "$" not in text:
            return text
        count = len(self.problems)
        expanded = _REFERENCE.sub(lambda match: self._expand(match, node, path), text)
        return expanded if len(self.problems) == count else None

    def _expand(self, match: re.Match[str], node: Node, path: str) -> str:
        """One ${VAR} or $$; the reference is not echoed, as it may sit inside a secret."""
        name, end = match["name"], match["end"]
        if name is None:
            return "$"
        if not end:
            self.report(node, path, "unterminated ${ (write $$ for a literal $)")
        elif not _VARIABLE.fullmatch(name):
            self.report(node, path, "invalid ${VAR} reference (write $$ for a literal $)")
        elif name in self._env:
            return self._env[name]
        else:
            self.report(node, path, f"environment variable {name} is not set")
        return ""

    def matching(self, node: Node, path: str, pattern: re.Pattern[str], rule: str) -> str | None:
        text = self.scalar(node, path)
        if text is not None and not pattern.fullmatch(text):
            self.report(node, path, f"{text!r} {rule}")
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
        text = self.scalar(node, path)
        if text is not None and text not in DATA_CENTERS:
            self.report(
                node, path, f"unknown data centre {text!r} (valid: {', '.join(DATA_CENTERS)})"
            )
            return None
        return text

    def duration(self, node: Node, path: str) -> float | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        try:
            seconds = parse_duration(text)
        except ValueError as error:
            self.report(node, path, str(error))
            return None
        return self._positive(node, path, seconds)

    def count(self, node: Node, path: str) -> int | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        if not _DIGITS.fullmatch(text):
            self.report(node, path, f"expected a whole number, got {text!r}")
            return None
        if len(text) > _MAX_DIGITS:
            self.report(node, path, f"{text} is too large")
            return None
        return self._positive(node, path, int(text))

    def _positive(self, node: Node, path: str, number: _N) -> _N | None:
        if number <= 0:
            self.report(node, path, "must be greater than zero")
            return None
        return number

    def url(self, node: Node, path: str) -> str | None:
        text = self.scalar(node, path)
        if text is None:
            return None
        problem = _url_problem(text)
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
            node, key = inline, f"{path}.{name}"
            text = self._inline_secret(node, key)
        elif in_file is not None:
            node, key = in_file, f"{path}.{name}_file"
            text = self._secret_file(node, key)
        else:
            return None
        if text is None:
            return None
        self._secret_texts.append(text)
        if not text:
            self.report(node, key, "the secret is empty")
        elif _CONTROL.search(text):
            self.report(node, key, "the secret contains a line break or other control character")
        else:
            return Secret(text)
        return None

    def _inline_secret(self, node: Node, path: str) -> str | None:
        if _is_null(node):
            self.report(node, path, "no value given")
            return None
        return self.scalar(node, path)

    def _secret_file(self, node: Node, path: str) -> str | None:
        location = self.scalar(node, path)
        if location is None:
            return None
        try:
            text = _read_text(Path(location))
        except (OSError, ValueError) as error:
            self.report(node, path, f"cannot read {location!r}: {_reason(error)}")
            return None
        return _TRAILING_NEWLINE.sub("", text, count=1)


def _url_problem(text: str) -> str | None:
    """What keeps `text` from being a base URL the watcher may send a token to, if anything."""
    not_url = "expected an absolute URL such as https://www.zohoapis.com"
    try:
        parts = urlsplit(text)
        usable = bool(parts.hostname) and parts.port != 0
    except ValueError:  # a malformed IPv6 literal or port number
        return not_url
    if not usable or parts.scheme.lower() not in ("http", "https") or _has_space(text):
        return not_url
    if "@" in parts.netloc:
        return "must not contain a user name or password"
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname or ""):
        return "must use https (http is allowed only for localhost)"
    if "?" in text or "#" in text:
        return "must not have a query or fragment"
    if parts.path not in ("", "/"):
        return "must not have a path (just scheme, host and port)"
    return None


def _has_space(text: str) -> bool:
    return any(character.isspace() for character in text)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"expected one of: {', '.join(allowed)}"
    return f"unknown key {key!r} ({hint})"


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
