"""Human-friendly durations ("250ms", "10s", "5m", "1h30m") for the configuration and messages."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
# "ms" must come before "m", or "250ms" would read as 250 minutes followed by a stray "s".
_PART = re.compile(rf"({_NUMBER})(ms|[smhd])")
# Compound forms ("1h30m") are accepted so that whatever format_duration writes parses back.
_COMPOUND = re.compile(rf"(?:{_NUMBER}(?:ms|[smhd]))+")
_HINT = "use a number of seconds or 250ms, 10s, 5m, 1h"
# Longer than any setting needs (retention included), short enough for every clock to add.
MAX_SECONDS = 3650 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds in `value`: a number of seconds, or text such as "250ms", "10s", "5m", "1h30m"."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a duration: {value!r} ({_HINT})")
    seconds = _parse_text(value) if isinstance(value, str) else _as_float(value)
    if math.isnan(seconds):
        raise ValueError(f"not a duration: {value!r} ({_HINT})")
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {value!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(f"duration too large: {value!r} (at most {format_duration(MAX_SECONDS)})")
    return seconds


def _as_float(value: float) -> float:
    """float() of an int past ~1e308 raises instead of giving inf; both are "too large" here."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _parse_text(value: str) -> float:
    """Parses the text form; a leading "-" is kept so the caller can say "negative", not "bad"."""
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.removeprefix("-")
    if re.fullmatch(_NUMBER, body):
        return sign * float(body)
    if _COMPOUND.fullmatch(body):
        return sign * sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(body))
    raise ValueError(f"not a duration: {value!r} ({_HINT})")


def format_duration(seconds: float) -> str:
    """Shortest readable form, precise to the millisecond (to the microsecond below one second)."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    if 0 < seconds < 1:
        return f"{_decimal(seconds * 1000)}ms"
    rest, millis = divmod(round(seconds * 1000), 1000)
    parts = []
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, int(_UNITS[unit]))
        if count:
            parts.append(f"{count}{unit}")
    if rest or millis or not parts:
        fraction = f".{millis:03d}".rstrip("0").rstrip(".")
        parts.append(f"{rest}{fraction}s")
    return "".join(parts)


def _decimal(number: float) -> str:
    """At most three decimals and no trailing zeros, so "250ms" is not written "250.000ms"."""
    return f"{number:.3f}".rstrip("0").rstrip(".")
