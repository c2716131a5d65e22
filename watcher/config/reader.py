"""Reading one value out of a node: every rule a single setting must meet, every problem kept.

Messages quote a value only when it is short: a long one may be a credential given under the
wrong key, where no mask would find it.
"""

from __future__ import annotations

import heapq
import ipaddress
import os
import re
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, Node, ScalarNode

from watcher.config.files import read_text, why_unreadable
from watcher.config.model import PROBLEMS_SHOWN, ConfigError, Secret, redact
from watcher.config.yaml_tree import is_null, kind_of, line_of
from watcher.durations import parse_duration
from watcher.schedule import SCHEDULES
from watcher.zoho_api import AUTH_SCHEME, DATA_CENTERS

_T = TypeVar("_T")
_N = TypeVar("_N", int, float)
_API_VERSION = re.compile(r"v[0-9]+(?:\.[0-9]+)?")  # v2, v2.1, v8
MODULE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
DIGITS = re.compile(r"[0-9]+")
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
_MAX_DIGITS = 18  # keeps counts within 64 bits and clear of int()'s 4300-digit limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNBRACED = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")  # $NAME, meant as ${NAME}
_REFERENCE = re.compile(r"\$(?:\$|\{(?P<name>[^}]*)(?P<end>\}?)|(?P<bare>[A-Za-z_]))")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TRAILING_NEWLINE = re.compile(r"\r?\n\Z")


class Reader:
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
        line = line_of(node)
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
        if is_null(node):
            return {}
        if not isinstance(node, MappingNode):
            self.report(node, path, f"expected a mapping, got {kind_of(node)}")
            return None
        if (read := self._mappings_read.get(id(node))) is not None:
            # A YAML alias: each of its uses would be checked, and its problems told, again;
            # a few bytes of `*name` could make millions of them.
            self.report(node, path, f"repeats the mapping of line {read[1]} (a YAML alias)")
            return None
        self._mappings_read[id(node)] = (node, line_of(node))
        found: dict[str, Node] = {}
        first_lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.report(key_node, path, f"keys must be plain names, got {kind_of(key_node)}")
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
            first_lines.setdefault(key, line_of(key_node))
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
            self.report(node, path, f"expected a single value, got {kind_of(node)}")
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
        return self.matching(node, path, MODULE_NAME, rule)

    def job_id(self, node: Node, path: str) -> str | None:
        return self.matching(node, path, DIGITS, "is not a job id (digits only)")

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
        if not DIGITS.fullmatch(text):
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
        if is_null(node):
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
            text = read_text(Path(location))
        except (OSError, ValueError) as error:
            self.report(node, path, f"cannot read {_shown_path(location)}: {why_unreadable(error)}")
            return None
        return _TRAILING_NEWLINE.sub("", text, count=1)


def optional(read: Callable[[Node, str], _T | None]) -> Callable[[Node, str], _T | None]:
    """`read`, except that null (~, null or no value) means "not set" rather than a bad value."""

    def read_optional(node: Node, path: str) -> _T | None:
        return None if is_null(node) else read(node, path)

    return read_optional


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


def _shown_path(text: str) -> str:
    """A path as a message quotes it: in full when absolute, as paths in a container's config
    are; a long relative one only by its length, for it may be a credential given where a path
    goes (`access_token_file: ${ZOHO_ACCESS_TOKEN}`), and base64 secrets hold "/" too."""
    return repr(text) if text.startswith("/") else _shown(text)
