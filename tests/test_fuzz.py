"""Fuzzed input: whatever arrives — a config file, an HTTP answer, a token answer — ends in a
valid result or a clean, typed error, never another exception and never a traceback.

This extends the properties of tests/test_config.py (documents built by yaml.safe_dump) and
tests/test_classify.py (bodies and status codes) to what they leave out: raw YAML in the places
of durations and ids, environment values, bytes that are not text, headers, the token answer,
and the CLI as a whole. FUZZ_EXAMPLES sets the example count (bench/fuzz.py raises it).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from tests.harness import PRINTED, SECRETS, leaked_secrets, run_cli
from watcher.auth import MAX_LIFETIME_S, Grant, Refusal, read_token_answer
from watcher.classify import classify
from watcher.cli import main
from watcher.config import (
    PROBLEMS_SHOWN,
    Config,
    ConfigError,
    JobSpec,
    PollingSettings,
    load_all,
    parse_config,
    url_problem,
)
from watcher.job import JobState, apply_answer
from watcher.zoho_api import MASS_UPDATE, Effect

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKEN = "1000.fuzz-access-token-value"
ENV = {"ZOHO_ACCESS_TOKEN": TOKEN}
NOW = 1_700_000_000.0

# --- the config loader ----------------------------------------------------------------------------

DURATION_KEYS = [
    "polling.interval",
    "polling.max_interval",
    "polling.rate_period",
    "polling.backoff_initial",
    "polling.backoff_max",
    "polling.request_timeout",
    "zoho.auth.refresh_backoff_initial",
    "reload_interval",
    "retention",
]
ID_KEYS = [
    "jobs.0.module",
    "jobs.0.job_id",
    "polling.rate_limit",
    "polling.max_concurrency",
    "polling.not_found_attempts",
    "polling.credits_per_day",
    "http.port",
    "zoho.api_version",
    "zoho.data_center",
]
# YAML that safe_dump never writes: tags, anchors, special floats, block scalars, flow oddities.
RAW_SCALARS = st.sampled_from(
    [
        *("!!binary aGVsbG8=", "!!timestamp 2001-12-14", "!!float .inf", ".nan", "-.inf"),
        *("0x1F", "0o17", "1_000", "1e400", "9" * 400 + "h", "0.0000001ms", "1h-30m", "١٢٣"),
        *("&anchor 10s", "*undefined", "!custom 5s", "!!python/object:os.system ls", "!!str 7"),
        *("|\n    10s\n", ">-\n    5\n    m\n", "[1, 2]", "{a: 1}", "~", "''", '"\\x00"'),
        *("? complex\n  : key", "10s # comment", "'${ZOHO_ACCESS_TOKEN}'", "${FUZZ}", "$${X}"),
    ]
)
RAW_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def assert_clean(load: Callable[[], Config]) -> None:
    """`load` gives a sane Config, or a ConfigError of one-line problems: nothing else."""
    try:
        config = load()
    except ConfigError as error:
        problems = error.problems
    else:
        assert_sane(config)
        return
    assert problems
    assert all(len(problem.splitlines()) == 1 for problem in problems)


def assert_sane(config: Config) -> None:
    """What the rest of the watcher relies on in any Config the loader lets through."""
    polling = config.polling
    for value in (polling.interval, polling.max_interval, polling.backoff_max, config.retention):
        assert math.isfinite(value)
        assert value > 0
    assert polling.rate_limit > 0
    assert polling.max_concurrency > 0
    for job in config.jobs:
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", job.module)
        assert re.fullmatch(r"[0-9]+", job.job_id)


def document_with(path: str, raw: str) -> str:
    """A valid config whose `path` (dotted; a digit indexes a list) holds the YAML text `raw`."""
    *parents, leaf = path.split(".")
    lines, indent = ["zoho:", "  auth:", "    access_token: ${ZOHO_ACCESS_TOKEN}"], ""
    if parents[:1] == ["jobs"]:
        other = "job_id: '1'" if leaf == "module" else "module: Leads"
        return "\n".join([*lines, "jobs:", f"  - {other}", f"    {leaf}: {raw}", ""])
    if parents[:2] == ["zoho", "auth"]:
        return "\n".join([*lines, f"    {leaf}: {raw}", ""])
    if parents == ["zoho"]:
        lines.insert(1, f"  {leaf}: {raw}")
        return "\n".join([*lines, ""])
    for parent in parents:
        lines.append(f"{indent}{parent}:")
        indent += "  "
    return "\n".join([*lines, f"{indent}{leaf}: {raw}", ""])


@FUZZ
@given(
    path=st.sampled_from(DURATION_KEYS + ID_KEYS),
    raw=RAW_SCALARS | RAW_TEXT | RAW_TEXT.map(json.dumps),
    env=RAW_TEXT,
)
def test_any_raw_yaml_where_a_duration_or_id_goes(path: str, raw: str, env: str) -> None:
    assert_clean(lambda: parse_config(document_with(path, raw), "fuzz.yaml", {**ENV, "FUZZ": env}))


def test_the_raw_yaml_lands_where_it_is_meant_to() -> None:
    """The property above tests the keys it names: each placement reaches its setting."""
    for path in DURATION_KEYS:
        holder: object = parse_config(document_with(path, "1m"), "fuzz.yaml", ENV)
        for name in path.split("."):
            holder = getattr(holder, name)
        assert holder == 60.0, path
    for path in ID_KEYS:
        with pytest.raises(ConfigError, match=re.escape(path.replace(".0.", "[0].") + ":")):
            parse_config(document_with(path, "'not valid!'"), "fuzz.yaml", ENV)


@FUZZ
@given(data=st.binary(max_size=300) | RAW_TEXT.map(lambda text: ("\ufeff" + text).encode()))
def test_any_bytes_as_the_config_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    assert_clean(lambda: load_all(path, ENV))


# --- HTTP answers and their headers ---------------------------------------------------------------

RETRY_AFTER = (
    st.text(max_size=40)
    | st.integers(-(10**400), 10**400).map(str)
    | st.floats().map(str)
    | st.sampled_from(
        [
            "Fri, 31 Dec 9999 23:59:59 GMT",
            "Mon, 01 Jan 0001 00:00:00 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Wed, 32 Foo 2024 99:99:99 XYZ",
            "1e400",
            "  7  ",
            "7, 8",
            "0x10",
            "-0",
        ]
    )
)
HEADERS = st.lists(
    st.tuples(
        st.sampled_from(["Retry-After", "retry-after", "Content-Type", "X-Other"]), RETRY_AFTER
    ),
    max_size=4,
).map(CIMultiDict)
BODY = st.binary(max_size=100) | st.sampled_from(
    [
        b'{"data": [{"Status": "RUNNING", "Total_Count": 1e400}]}',
        b'{"data": [{"Status": "COMPLETED", "Updated_Count": 123456789012345678901234567890}]}',
        b'{"code": "TOO_MANY_REQUESTS", "status": "error"}',
        b'{"data": [{"code": "INVALID_DATA", "details": {"param_name": "job_id"}}]}',
        b"[" * 5000 + b"]" * 5000,
        b'{"data": NaN}',
    ]
)


@FUZZ
@given(status=st.integers(0, 999), headers=HEADERS, body=BODY)
def test_any_answer_gives_a_bounded_next_step(
    status: int, headers: CIMultiDict[str], body: bytes
) -> None:
    """classify never raises, and whatever it says, the job's next poll is a finite, bounded
    time away (Retry-After capped), or the job has ended."""
    answer = classify(MASS_UPDATE, status, headers, body, NOW)
    if answer.retry_after is not None:
        assert math.isfinite(answer.retry_after)
        assert answer.retry_after >= 0
    settings_ = PollingSettings()
    job = JobState(JobSpec("Leads", "1"), added_at=0.0)
    decision = apply_answer(job, answer, MASS_UPDATE, settings_, 10.0, random.Random(6))
    if decision.next_poll_in is None:
        assert job.outcome is not None or decision.fatal
    else:
        assert 0 <= decision.next_poll_in <= max(settings_.backoff_max, settings_.max_interval)
    if decision.pause_all_for is not None:
        assert answer.effect is Effect.RATE_LIMITED
        assert 0 <= decision.pause_all_for <= settings_.backoff_max


# --- the token answer -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**400), 10**400)
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["https://www.zohoapis.eu", "http://evil.example", "http://127.0.0.1:1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)
LIFETIMES = st.sampled_from([10**400, 1e308, math.inf, -math.inf, math.nan, 0, -1, "3600", True])
TOKEN_DOCUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "access_token": st.text(max_size=8) | JSON_VALUES,
        "expires_in": LIFETIMES | JSON_VALUES,
        "expires_in_sec": LIFETIMES | JSON_VALUES,
        "api_domain": JSON_VALUES,
        "error": JSON_VALUES,
    },
).map(lambda document: json.dumps(document).encode())  # Infinity and NaN as Python writes them


@FUZZ
@given(status=st.just(200) | st.integers(0, 999), body=TOKEN_DOCUMENTS | BODY)
def test_any_token_answer_is_a_grant_or_a_refusal(status: int, body: bytes) -> None:
    answer = read_token_answer(status, body)
    if isinstance(answer, Grant):
        assert status == 200
        assert answer.access_token
        assert 0 < answer.expires_in <= MAX_LIFETIME_S
        assert answer.api_domain is None or url_problem(answer.api_domain) is None
    else:
        assert isinstance(answer, Refusal)
        assert isinstance(answer.code, str)
        assert answer.code


# --- the CLI --------------------------------------------------------------------------------------

GOOD = {
    "zoho": {"api_domain": "http://127.0.0.1:9", "auth": {"access_token": "${ZOHO_ACCESS_TOKEN}"}},
    "polling": {"interval": "10s", "rate_limit": 10},
    "jobs": [{"module": "Leads", "job_id": "1"}],
}
PATHS = [
    ("zoho",),
    ("zoho", "api_domain"),
    ("zoho", "auth"),
    ("zoho", "auth", "access_token"),
    ("polling",),
    ("polling", "interval"),
    ("polling", "rate_limit"),
    ("jobs",),
    ("jobs", 0),
    ("jobs", 0, "module"),
    ("jobs", 0, "job_id"),
    ("http",),
    ("state_path",),
    ("jobs_dir",),
    ("surprise",),
]
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | RAW_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(RAW_TEXT, inner, max_size=3),
    max_leaves=6,
)


def mutated(edits: list[tuple[tuple[str | int, ...], object]]) -> str:
    """The good config with each `path` set to its value (where the containers on the way
    still are what the path expects)."""
    document = json.loads(json.dumps(GOOD))
    for path, value in edits:
        holder, *steps, leaf = [document, *path]
        for step in steps:
            holder = _inside(holder, step)
        if isinstance(holder, dict) and isinstance(leaf, str):
            holder[leaf] = value
        elif isinstance(holder, list) and holder and leaf == 0:
            holder[0] = value
    return yaml.safe_dump(document)


def _inside(holder: object, step: str | int) -> object:
    """The container at `step` of `holder`, created if it is missing; None if in the way."""
    if isinstance(holder, dict) and isinstance(step, str):
        return holder.setdefault(step, {})
    if isinstance(holder, list) and holder and step == 0:
        return holder[0]
    return None


CONFIG_FILES = st.one_of(
    st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3).map(mutated),
    st.tuples(st.just(yaml.safe_dump(GOOD)), st.integers(0, 200), RAW_TEXT).map(
        lambda parts: parts[0][: parts[1]] + parts[2] + parts[0][parts[1] :]
    ),
)


def cli(*args: str) -> tuple[int, str, str]:
    """`zoho-job-watcher ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 30))
@given(text=CONFIG_FILES)
def test_any_config_file_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    """check-config: exit 0 with one OK line, or exit 2 with one line per problem; run refuses
    a bad file in exactly the same words. Never a traceback."""
    monkeypatch.setenv("ZOHO_ACCESS_TOKEN", TOKEN)
    path = tmp_path / "watcher.yaml"
    path.write_text(text)
    code, stdout, stderr = cli("check-config", "--config", str(path))
    if not leaked_secrets([text], SECRETS):  # Hypothesis mines the tests' strings: a secret
        PRINTED.extend([stdout, stderr])  # put in a plain field is rightly echoed back
    if code == 0:
        assert re.fullmatch(rf"{re.escape(str(path))}: OK, [0-9]+ job\(s\)\n", stdout)
        assert stderr == ""
        return
    assert code == 2
    assert stdout == ""
    lines = stderr.splitlines()
    assert lines
    assert all(line.startswith("zoho-job-watcher: config error: ") for line in lines)
    assert cli("run", "--config", str(path)) == (2, "", stderr)


def _alias_bomb() -> bytes:
    """Billion laughs: nine aliases of nine aliases, eleven levels deep, under every section."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 9)}]" for n in range(1, 12)]
    lines += ["jobs: *a11", "polling: *a11", "zoho: {auth: {access_token: *a11}}"]
    return "\n".join(lines).encode()


def _aliased_problems() -> bytes:
    """A mapping of a hundred unknown keys, and two thousand aliases of it: 9 KB that, each use
    checked again, told 200,000 problems, and 40 KB a million (330 MB, seconds of CPU)."""
    keys = ", ".join(f"k{i}: 1" for i in range(100))
    return f"jobs: [&b {{{keys}}}, {', '.join(['*b'] * 2000)}]\n".encode()


NASTY = {
    "alias bomb": _alias_bomb(),
    "aliased problems": _aliased_problems(),
    "deep nesting": b"jobs: " + b"[" * 3000 + b"]" * 3000,
    "nul bytes": b"zoho:\x00\n  auth: {}\n",
    "not utf-8": b"\xff\xfe\x00jobs: []",
    "a megabyte on one line": b"jobs: " + b"x" * 1_000_000,
}


@pytest.mark.parametrize("name", sorted(NASTY))
@pytest.mark.parametrize("command", ["check-config", "run"])
async def test_nasty_files_through_the_real_cli(tmp_path: Path, name: str, command: str) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_bytes(NASTY[name])
    code, stdout, stderr = await run_cli(command, "--config", str(path))
    assert (code, stdout) == (2, "")
    assert stderr.splitlines()
    assert all(line.startswith("zoho-job-watcher: config error: ") for line in stderr.splitlines())
    assert len(stderr.splitlines()) <= PROBLEMS_SHOWN + 1  # the rest counted on the last line
