"""The event stream: one JSON object per line on stdout, rendered by structlog.

Every line carries `event`, `level` and an ISO-8601 UTC `timestamp` first, so that `tail`, `jq` and
log pipelines read it directly. Known secret values are scrubbed from every field as a last line of
defence: nothing should ever put one there, and if something does, it still does not leak.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from watcher.job import Event

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("json", "console")
REDACTED = "***"
_FIRST = ("timestamp", "level", "event")


class _Redactor:
    """Replaces any registered secret found in a string field with a placeholder."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        if self._secrets:
            for key, value in event_dict.items():
                event_dict[key] = self._scrub(value)
        return event_dict

    def _scrub(self, value: object) -> object:
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, REDACTED)
        return value


def _leading_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level and event first: what a person scanning `tail -f` looks for."""
    ordered: MutableMapping[str, Any] = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
    ordered.update(event_dict)
    return dict(ordered)


class EventLog:
    """Where the watcher's events go. One per process; configures structlog on creation."""

    def __init__(self, stream: TextIO, fmt: str, level: str, secrets: Iterable[str] = ()) -> None:
        self._redactor = _Redactor(secrets)
        renderer: Processor = (
            structlog.processors.JSONRenderer()
            if fmt == "json"
            else structlog.dev.ConsoleRenderer(colors=stream.isatty())
        )
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                self._redactor,
                _leading_keys,
                renderer,
            ],
            wrapper_class=structlog.make_filtering_bound_logger(
                logging.getLevelNamesMapping()[level.upper()]
            ),
            logger_factory=structlog.PrintLoggerFactory(stream),
            cache_logger_on_first_use=True,
        )
        self._logger: structlog.typing.FilteringBoundLogger = structlog.get_logger()

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Scrub these values too (a token obtained at run time)."""
        self._redactor.add(secrets)

    def emit(self, event: Event) -> None:
        self.log(event.level, event.name, **event.fields)

    def log(self, level: str, name: str, **fields: object) -> None:
        getattr(self._logger, level)(name, **fields)
