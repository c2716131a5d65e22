"""The answers a simulated job can give, each named by a script step: Zoho's status rows and error
shapes, throttling, dead connections, bodies no client should read whole."""

from __future__ import annotations

import functools
import http
import json
import math
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from watcher.zoho_api import ERRORS, MASS_UPDATE

_STATUSES = tuple(sorted(MASS_UPDATE.statuses))
OUTCOMES = tuple(sorted(MASS_UPDATE.terminal))
# Zoho's documented error codes for this endpoint, with the HTTP status each comes with.
_ERROR_STATUS = {code: error.http_status for code, error in ERRORS.items()}
_COUNTS = re.compile(r"([0-9]+),([0-9]+),([0-9]+),([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
# The three ways Zoho says it does not know a job (step names, and `RequestRecord.answer`).
NOT_FOUND_SHAPES = ("notfound204", "notfound404", "notfound400")


@dataclass(frozen=True)
class Step:
    """A parsed script step: a canned HTTP answer, possibly late, or no answer at all."""

    text: str
    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    retry_after: str | None = None
    delay: float = 0.0
    action: Literal["answer", "hang", "reset", "truncate"] = "answer"
    encoding: str | None = None  # the body's Content-Encoding, if it is compressed
    location: str | None = None  # where a redirect points
    reports: str | None = None  # the job status in the body, when it is a status row


def _json_step(text: str, status: int, document: object) -> Step:
    return Step(text, status, json.dumps(document).encode())


def _error(
    code: str, details: dict[str, str] | None = None, message: str = ""
) -> dict[str, object]:
    return {
        "code": code,
        "details": details or {},
        "message": message or code.lower().replace("_", " "),
        "status": "error",
    }


def _status_step(text: str, status: str, counts: Sequence[int]) -> Step:
    updated, failed, not_updated, total = counts
    row = {
        "Status": status,
        "Failed_Count": failed,
        "Updated_Count": updated,
        "Not_Updated_Count": not_updated,
        "Total_Count": total,
    }
    reports = status if status in _STATUSES else None
    return replace(_json_step(text, 200, {"data": [row]}), reports=reports)


def _plain_step(code: int) -> Step:
    return Step(str(code), code, http.HTTPStatus(code).phrase.encode(), "text/plain")


FIXED: dict[str, Step] = {
    **{s: _status_step(s, s, (100 if s == "COMPLETED" else 0, 0, 0, 100)) for s in _STATUSES},
    **{code: _json_step(code, status, _error(code)) for code, status in _ERROR_STATUS.items()},
    "429": _json_step("429", 429, _error("TOO_MANY_REQUESTS")),
    "500": _json_step("500", 500, _error("INTERNAL_ERROR")),
    **{str(code): _plain_step(code) for code in (502, 503, 504)},
    "hang": Step("hang", action="hang"),
    "reset": Step("reset", action="reset"),
    "malformed": Step("malformed", 200, b'{"data":[{"Status":"RUNN'),
    # Content-Length promises the whole row, half of it arrives, then the connection closes.
    "truncated": replace(
        _status_step("truncated", "RUNNING", (50, 0, 0, 100)), action="truncate", reports=None
    ),
    "badstatus": _status_step("badstatus", "EXPLODED", (0, 0, 0, 100)),
    "hugecode": _json_step("hugecode", 400, _error("X" * 10_000)),
    # Elsewhere on this server, so that a client that followed would be seen asking there.
    "redirect": Step("redirect", 302, content_type=None, location="/moved"),
    "nodata": _json_step("nodata", 200, {"data": []}),
    "notfound204": Step("notfound204", 204, content_type=None),
    "notfound404": _json_step("notfound404", 404, _error("NOT_FOUND", message="Empty response")),
    "notfound400": _json_step(
        "notfound400",
        400,
        _error("INVALID_DATA", {"param_name": "job_id"}, "the id given seems to be invalid"),
    ),
}


# Bodies no client should read whole, made when first asked for (and once): 16 KiB of deflate
# that unpacks to 16 MiB of spaces, and 2 MiB as they are (with a 200, or with a 429 that asks for
# a second's pause).
LARGE: dict[str, Callable[[], Step]] = {
    "bomb": functools.cache(
        lambda: Step("bomb", 200, zlib.compress(b" " * (16 << 20), 9), encoding="deflate")
    ),
    "huge": functools.cache(lambda: Step("huge", 200, b" " * (2 << 20))),
    "huge429": functools.cache(lambda: Step("huge429", 429, b" " * (2 << 20), retry_after="1")),
}


def parse_step(text: str) -> Step:
    """Fail fast: a typo in a script would otherwise surface as a puzzling watcher failure."""
    large = LARGE.get(text)
    step = large() if large is not None else FIXED.get(text) or _parse_parametrised(text)
    if step is None:
        raise ValueError(f"unparseable script step: {text!r}")
    return step


def _parse_parametrised(text: str) -> Step | None:
    head, _, arg = text.partition(":")
    if head in _STATUSES and (counts := _COUNTS.fullmatch(arg)):
        return _status_step(text, head, [int(n) for n in counts.groups()])
    if head == "429" and _DIGITS.fullmatch(arg):
        return replace(FIXED["429"], text=text, retry_after=arg)
    if head in ("data200", "top200") and arg in _ERROR_STATUS:
        error = _error(arg)
        return _json_step(text, 200, {"data": [error]} if head == "data200" else error)
    if head == "slow":
        seconds, _, inner = arg.partition(":")
        delay = seconds_in(seconds)
        if delay is not None:
            step = parse_step(inner)
            return replace(step, text=text, delay=delay + step.delay)
    return None


def seconds_in(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None
