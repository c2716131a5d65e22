"""Durations: what the config accepts, what it refuses, and that formatting reads back."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watcher.durations import MAX_SECONDS, format_duration, parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("30", 30.0),
        ("0.5", 0.5),
        ("  10s\t", 10.0),
        ("1h30m", 5400.0),
        ("1m0.25s", 60.25),
        ("0", 0.0),
        ("0ms", 0.0),
        (10, 10.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parses_numbers_and_units(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "10x",
        "",
        "   ",
        "s",
        "ms",
        "1.",
        ".5",
        "1 s",
        "1,5s",
        "1e3",
        "nan",
        "inf",
        "1h30",
        "1S",
        "+5",
    ],
)
def test_refuses_malformed_text_with_a_hint(value: str) -> None:
    with pytest.raises(ValueError, match=r"^not a duration: .* \(use a number of seconds or 250ms"):
        parse_duration(value)


def test_message_quotes_the_value() -> None:
    expected = r"^not a duration: '10x' \(use a number of seconds or 250ms, 10s, 5m, 1h\)$"
    with pytest.raises(ValueError, match=expected):
        parse_duration("10x")


@pytest.mark.parametrize("value", [True, False, None, [10], {"s": 1}, b"10s"])
def test_refuses_non_numbers(value: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["-5s", "-1", -1, -0.5])
def test_refuses_negatives(value: object) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration(value)


def test_refuses_nan() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(math.nan)


@pytest.mark.parametrize(
    "value", [math.inf, 10**400, "9" * 400 + "d", "9" * 306, MAX_SECONDS + 1, "3651d"]
)
def test_refuses_infinite_overflowing_or_beyond_ten_years(value: object) -> None:
    """Beyond ten years no setting means it, and 1e306 s overflowed when formatted back."""
    with pytest.raises(ValueError, match="too large"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0001, "0.1ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (10, "10s"),
        (90, "1m30s"),
        (300, "5m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061.25, "1d1h1m1.25s"),
    ],
)
def test_formats_the_shortest_readable_form(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_format_refuses_what_parse_refuses(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot format"):
        format_duration(seconds)


@given(st.floats(min_value=0, max_value=MAX_SECONDS, allow_nan=False))
def test_format_reads_back(seconds: float) -> None:
    precision = 5e-7 if seconds < 1 else 5e-4  # microseconds below a second, else milliseconds
    back = parse_duration(format_duration(seconds))
    assert abs(back - seconds) <= precision + 1e-15 * seconds
