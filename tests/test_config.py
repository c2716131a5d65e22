"""Configuration loading: every rule, every refusal, and the line each problem points at."""

from __future__ import annotations

import errno
import gc
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from watcher.config import (
    PROBLEMS_SHOWN,
    Config,
    ConfigError,
    HttpSettings,
    JobSpec,
    PollingSettings,
    Secret,
    files,
    load_all,
    load_config,
    load_jobs_file,
    load_state_path,
    parse_config,
    parse_jobs_file,
    read_file_bytes,
    redact,
    yaml_tree,
)
from watcher.zoho_api import DATA_CENTERS

TOKEN = "1000.s3cr3t-access-token-value"
REFRESH = "1000.s3cr3t-refresh-token-value"
CLIENT_ID = "1000.CLIENTIDVALUE42"
CLIENT_SECRET = "s3cr3t-client-secret-value"
ENV = {
    "ZOHO_ACCESS_TOKEN": TOKEN,
    "ZOHO_REFRESH_TOKEN": REFRESH,
    "ZOHO_CLIENT_ID": CLIENT_ID,
    "ZOHO_CLIENT_SECRET": CLIENT_SECRET,
}
AUTH = "zoho:\n  auth:\n    access_token: ${ZOHO_ACCESS_TOKEN}\n"  # lines 1-3
TRIO = (
    "    refresh_token: ${ZOHO_REFRESH_TOKEN}\n"
    "    client_id: ${ZOHO_CLIENT_ID}\n"
    "    client_secret: ${ZOHO_CLIENT_SECRET}\n"
)
SERVICE_KEYS = ("reload_interval", "jobs_dir", "state_path", "retention", "progress_events")
TOP_KEYS = ("zoho", "polling", "jobs", *SERVICE_KEYS, "http")
ZOHO_KEYS = ("data_center", "api_domain", "api_version", "auth")
SECRET_KEYS = ("access_token", "refresh_token", "client_id", "client_secret")
BACKOFF_KEYS = ("refresh_backoff_initial", "refresh_backoff_max")
AUTH_KEYS = (*SECRET_KEYS, *(f"{name}_file" for name in SECRET_KEYS), "accounts_url", *BACKOFF_KEYS)
POLLING_KEYS = tuple(setting.name for setting in fields(PollingSettings))
HTTP_KEYS = ("host", "port")
JOB_KEYS = ("module", "job_id")
EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "watcher.example.yaml"


def parse(text: str, env: Mapping[str, str] = ENV) -> Config:
    return parse_config(text, "cfg.yaml", env)


def problems(text: str, env: Mapping[str, str] = ENV) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    return info.value.problems


def load_problems(path: Path) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load_all(path, ENV)
    return info.value.problems


def problem(text: str, env: Mapping[str, str] = ENV) -> str:
    (only,) = problems(text, env)
    return only


def polling_problem(lines: str) -> str:
    """The one problem of a valid config plus a `polling:` section (its keys start on line 5)."""
    return problem(AUTH + "polling:\n" + lines)


def job_problem(lines: str) -> str:
    """The one problem of a valid config plus a `jobs:` section (its items start on line 5)."""
    return problem(AUTH + "jobs:\n" + lines)


# --- what a good file gives -----------------------------------------------------------------------


def test_example_config_validates() -> None:
    """The example spells out the defaults, so it must give exactly what an empty file gives."""
    config = load_all(EXAMPLE, {"ZOHO_ACCESS_TOKEN": TOKEN})
    assert config.zoho.auth.access_token == Secret(TOKEN)
    assert config.zoho.api_domain == "https://www.zohoapis.com"
    assert config.zoho.auth.accounts_url == "https://accounts.zoho.com"
    assert config.polling == PollingSettings()
    assert config.jobs == (JobSpec("Leads", "554023000000506003"),)
    defaults = parse(AUTH)
    assert replace(config, zoho=defaults.zoho, jobs=(), source=None) == defaults
    assert config.source == EXAMPLE


def test_example_config_names_every_key() -> None:
    text = EXAMPLE.read_text()
    names = [*TOP_KEYS, *ZOHO_KEYS, *AUTH_KEYS, *POLLING_KEYS, *HTTP_KEYS, *JOB_KEYS]
    assert [name for name in names if f"{name}:" not in text] == []


def test_minimal_config_gets_every_default() -> None:
    config = parse(AUTH)
    assert config.polling == PollingSettings()
    assert (config.polling.schedule, config.polling.credits_per_day) == ("adaptive", None)
    assert config.polling.credits_floor == 1000
    assert config.jobs == ()
    zoho = config.zoho
    assert (zoho.api_domain, zoho.api_version, zoho.data_center) == (
        "https://www.zohoapis.com",
        "v2",
        None,
    )
    assert not zoho.auth.refreshes
    assert zoho.auth.accounts_url is None
    assert zoho.auth.secrets() == (TOKEN,)
    assert (zoho.auth.refresh_backoff_initial, zoho.auth.refresh_backoff_max) == (30.0, 600.0)
    assert (config.reload_interval, config.retention, config.progress_events) == (
        5.0,
        604800.0,
        True,
    )
    assert (config.jobs_dir, config.state_path, config.source) == (None, None, None)
    assert (config.http.host, config.http.port) == ("127.0.0.1", None)


def test_polling_values_are_read() -> None:
    config = parse(
        AUTH
        + dedent(
            """\
            polling:
              interval: 10
              max_interval: 1h30m
              rate_limit: "7"
              rate_period: 250ms
              max_concurrency: 2
              backoff_initial: 1.5
              backoff_max: 2m
              request_timeout: 45s
              not_found_attempts: 9
              schedule: fixed
              credits_per_day: 5000
              credits_floor: 0
            """
        )
    )
    assert config.polling == PollingSettings(
        interval=10.0,
        max_interval=5400.0,
        rate_limit=7,
        rate_period=0.25,
        max_concurrency=2,
        backoff_initial=1.5,
        backoff_max=120.0,
        request_timeout=45.0,
        not_found_attempts=9,
        schedule="fixed",
        credits_per_day=5000,
        credits_floor=0,
    )
    assert isinstance(config.polling.rate_limit, int)


@pytest.mark.parametrize(
    "section", ["polling:\n", "polling: ~\n", "jobs:\n", "jobs: []\n", "http:\n", "http: {}\n"]
)
def test_empty_sections_mean_defaults(section: str) -> None:
    config = parse(AUTH + section)
    assert (config.polling, config.jobs, config.http) == (PollingSettings(), (), HttpSettings())


# --- document shape -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "null\n", "# just a comment\n", "---\n"])
def test_empty_document_only_lacks_credentials(text: str) -> None:
    assert ": zoho.auth: no credentials: give access_token, or" in problem(text)


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- zoho\n", "a list"), ("zoho\n", "a single value"), ("42\n", "a single value")],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert problem(text) == f"cfg.yaml:1: top level: expected a mapping, got {kind}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zoho: 5\n", "cfg.yaml:1: zoho: expected a mapping, got a single value"),
        ("zoho:\n  auth: token\n", "cfg.yaml:2: zoho.auth: expected a mapping, got a single value"),
        (AUTH + "polling: [1]\n", "cfg.yaml:4: polling: expected a mapping, got a list"),
        (AUTH + "jobs: {a: 1}\n", "cfg.yaml:4: jobs: expected a list of jobs, got a mapping"),
        (AUTH + "http: 9464\n", "cfg.yaml:4: http: expected a mapping, got a single value"),
        (
            AUTH + "jobs:\n  - Leads\n",
            "cfg.yaml:5: jobs[0]: expected a mapping, got a single value",
        ),
    ],
)
def test_sections_of_the_wrong_type_are_one_problem(text: str, expected: str) -> None:
    assert problem(text) == expected


# --- unknown and duplicate keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (AUTH + "jbos: []\n", "cfg.yaml:4: top level: unknown key 'jbos' (did you mean 'jobs'?)"),
        (
            AUTH + "colour: red\n",
            "cfg.yaml:4: top level: unknown key 'colour' (expected one of: zoho, polling, jobs,"
            " reload_interval, jobs_dir, state_path, retention, progress_events, http)",
        ),
        (
            AUTH + "http:\n  prot: 80\n",
            "cfg.yaml:5: http: unknown key 'prot' (did you mean 'port'?)",
        ),
        (
            AUTH + "retension: 7d\n",
            "cfg.yaml:4: top level: unknown key 'retension' (did you mean 'retention'?)",
        ),
        (
            "zoho:\n  api_domian: x\n  auth:\n    access_token: t\n",
            "cfg.yaml:2: zoho: unknown key 'api_domian' (did you mean 'api_domain'?)",
        ),
        (
            AUTH + "    acounts_url: https://accounts.zoho.eu\n",
            "cfg.yaml:4: zoho.auth: unknown key 'acounts_url' (did you mean 'accounts_url'?)",
        ),
        (
            AUTH + "polling:\n  intervall: 5s\n",
            "cfg.yaml:5: polling: unknown key 'intervall' (did you mean 'interval'?)",
        ),
        (
            AUTH + "jobs:\n  - {module: Leads, job_id: '1', jobid: '2'}\n",
            "cfg.yaml:5: jobs[0]: unknown key 'jobid' (did you mean 'job_id'?)",
        ),
    ],
)
def test_unknown_keys_are_refused_with_a_hint(text: str, expected: str) -> None:
    assert problem(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            AUTH + "jobs: []\njobs: []\n",
            "cfg.yaml:5: top level: duplicate key 'jobs' (first at line 4)",
        ),
        (
            AUTH + "polling:\n  interval: 5s\n  interval: 6s\n",
            "cfg.yaml:6: polling: duplicate key 'interval' (first at line 5)",
        ),
        (
            AUTH + "    access_token: other-value\n",
            "cfg.yaml:4: zoho.auth: duplicate key 'access_token' (first at line 3)",
        ),
        (
            AUTH + "jobs:\n  - {module: A, job_id: '1', module: B}\n",
            "cfg.yaml:5: jobs[0]: duplicate key 'module' (first at line 5)",
        ),
    ],
)
def test_duplicate_keys_are_refused(text: str, expected: str) -> None:
    assert problem(text) == expected


def test_keys_must_be_plain_names() -> None:
    assert problem(AUTH + "? [a, b]\n: 1\n") == (
        "cfg.yaml:4: top level: keys must be plain names, got a list"
    )


# --- counts and durations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "expected a whole number, got 'yes'"),
        ("true", "expected a whole number, got 'true'"),
        ("1.5", "expected a whole number, got '1.5'"),
        ("1e3", "expected a whole number, got '1e3'"),
        ("-1", "expected a whole number, got '-1'"),
        ("0x10", "expected a whole number, got '0x10'"),
        ("1_000", "expected a whole number, got '1_000'"),
        ("ten", "expected a whole number, got 'ten'"),
        ("''", "expected a whole number, got ''"),
        ("[1]", "expected a single value, got a list"),
        ("0", "must be greater than zero"),
        ("'0'", "must be greater than zero"),
        ("1234567890123456789", "'1234567890123456789' is too large"),
        ("9" * 60, "a 60-character value is too large"),
    ],
)
@pytest.mark.parametrize("key", ["rate_limit", "max_concurrency", "not_found_attempts"])
def test_counts_must_be_positive_whole_numbers(key: str, value: str, message: str) -> None:
    assert polling_problem(f"  {key}: {value}\n") == f"cfg.yaml:5: polling.{key}: {message}"


def test_max_concurrency_is_at_most_a_hundred() -> None:
    """Each is a task: a typo of many digits would eat memory without end, and Zoho lets an org
    have a few dozen requests in flight at most."""
    assert parse(AUTH + "polling:\n  max_concurrency: 100\n").polling.max_concurrency == 100
    assert polling_problem("  max_concurrency: 101\n") == (
        "cfg.yaml:5: polling.max_concurrency: 101 is more than 100 requests at once"
    )


def test_counts_may_come_from_the_environment() -> None:
    config = parse(AUTH + "polling:\n  rate_limit: ${RATE}\n", {**ENV, "RATE": "25"})
    assert config.polling.rate_limit == 25


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10x", "not a duration: '10x' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        ("yes", "not a duration: 'yes' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        (".inf", "not a duration: '.inf' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        ("-5s", "duration must not be negative: '-5s'"),
        ("0", "must be greater than zero"),
        ("0ms", "must be greater than zero"),
        ("{a: 1}", "expected a single value, got a mapping"),
        ("3651d", "duration too large: '3651d' (at most 3650d)"),
        ("9" * 306, "duration too large: a 306-character value (at most 3650d)"),
    ],
)
@pytest.mark.parametrize(
    "key",
    [
        "interval",
        "max_interval",
        "rate_period",
        "backoff_initial",
        "backoff_max",
        "request_timeout",
    ],
)
def test_durations_must_be_positive_durations(key: str, value: str, message: str) -> None:
    assert polling_problem(f"  {key}: {value}\n") == f"cfg.yaml:5: polling.{key}: {message}"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "  interval: 1m\n  max_interval: 30s\n",
            "cfg.yaml:6: polling.max_interval: 30s is less than polling.interval (1m)",
        ),
        (
            "  interval: 10m\n",
            "cfg.yaml:5: polling.max_interval: 5m is less than polling.interval (10m)",
        ),
        (
            "  backoff_initial: 2s\n  backoff_max: 1500ms\n",
            "cfg.yaml:6: polling.backoff_max: 1.5s is less than polling.backoff_initial (2s)",
        ),
    ],
)
def test_maximums_must_not_be_below_their_minimums(lines: str, expected: str) -> None:
    assert polling_problem(lines) == expected


def test_equal_minimum_and_maximum_are_fine() -> None:
    polling = parse(AUTH + "polling:\n  interval: 1m\n  max_interval: 60\n").polling
    assert polling.interval == polling.max_interval == 60.0


def test_an_invalid_bound_is_not_also_compared() -> None:
    assert polling_problem("  interval: 0\n  max_interval: 5s\n") == (
        "cfg.yaml:5: polling.interval: must be greater than zero"
    )


# --- schedule and credits -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("smart", "unknown schedule 'smart' (valid: adaptive, fixed)"),
        ("Fixed", "unknown schedule 'Fixed' (valid: adaptive, fixed)"),
        ("''", "unknown schedule '' (valid: adaptive, fixed)"),
        ("[fixed]", "expected a single value, got a list"),
    ],
)
def test_schedule_is_adaptive_or_fixed(value: str, message: str) -> None:
    assert polling_problem(f"  schedule: {value}\n") == f"cfg.yaml:5: polling.schedule: {message}"


def test_schedule_may_come_from_the_environment() -> None:
    polling = parse(AUTH + "polling:\n  schedule: ${S}\n", {**ENV, "S": "fixed"}).polling
    assert polling.schedule == "fixed"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be greater than zero"),
        ("-1", "expected a whole number, got '-1'"),
        ("1.5", "expected a whole number, got '1.5'"),
        ("many", "expected a whole number, got 'many'"),
        ("''", "expected a whole number, got ''"),
        ("{a: 1}", "expected a single value, got a mapping"),
    ],
)
def test_credits_per_day_must_be_a_positive_whole_number(value: str, message: str) -> None:
    found = polling_problem(f"  credits_per_day: {value}\n")
    assert found == f"cfg.yaml:5: polling.credits_per_day: {message}"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "expected a whole number, got '-1'"),
        ("1e3", "expected a whole number, got '1e3'"),
        ("~", "expected a whole number, got '~'"),
        ("[1]", "expected a single value, got a list"),
        ("1234567890123456789", "'1234567890123456789' is too large"),
        ("9" * 60, "a 60-character value is too large"),
    ],
)
def test_credits_floor_must_be_a_whole_number(value: str, message: str) -> None:
    found = polling_problem(f"  credits_floor: {value}\n")
    assert found == f"cfg.yaml:5: polling.credits_floor: {message}"


# --- zoho settings --------------------------------------------------------------------------------


def test_a_mapping_used_again_through_an_alias_is_reported_once() -> None:
    text = "jobs:\n  - &j {module: Leads, job_id: 1, colour: red}\n  - *j\n  - *j\n"
    assert problems(text + f"zoho:\n  auth:\n{TRIO}") == (
        "cfg.yaml:2: jobs[0]: unknown key 'colour' (expected one of: module, job_id)",
        "cfg.yaml:2: jobs[1]: repeats the mapping of line 2 (a YAML alias)",
        "cfg.yaml:2: jobs[2]: repeats the mapping of line 2 (a YAML alias)",
    )


def test_beyond_a_hundred_problems_the_rest_are_counted() -> None:
    jobs = "".join(f"  - {{module: Leads, job_id: x{n}}}\n" for n in range(150))
    found = problems(f"jobs:\n{jobs}zoho:\n  auth:\n{TRIO}")
    assert len(found) == PROBLEMS_SHOWN + 1
    assert found[0].startswith("cfg.yaml:2: jobs[0].job_id: ")
    assert found[-1] == "cfg.yaml: ... and 50 more problems"


def test_the_problems_shown_are_the_first_in_the_file() -> None:
    """Sections are checked in their own order, not the file's: the line-1 problem is no less
    worth showing for being read last."""
    jobs = "".join(f"  - {{module: Leads, job_id: x{n}}}\n" for n in range(150))
    found = problems(f"reload_interval: soon\njobs:\n{jobs}zoho:\n  auth:\n{TRIO}")
    assert found[0].startswith("cfg.yaml:1: reload_interval: ")
    assert found[1].startswith("cfg.yaml:3: jobs[0].job_id: ")
    assert found[PROBLEMS_SHOWN - 1].startswith("cfg.yaml:101: jobs[98].job_id: ")
    assert found[-1] == "cfg.yaml: ... and 51 more problems"


def test_beyond_a_hundred_problems_in_a_jobs_dir_the_rest_are_counted(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    for n in range(3):  # each past the limit of its own file, too
        bad = "".join(f"  - {{module: Leads, job_id: x{i}}}\n" for i in range(150))
        (tmp_path / "jobs" / f"{n}.yaml").write_text(f"jobs:\n{bad}")
    main = tmp_path / "w.yaml"
    main.write_text(f"jobs_dir: {tmp_path / 'jobs'}\nzoho:\n  auth:\n{TRIO}")
    found = load_problems(main)
    assert len(found) == PROBLEMS_SHOWN + 1
    assert found[-1] == f"{tmp_path / 'jobs'}: ... and 350 more problems"
    assert all("more problems" not in problem for problem in found[:-1])


@pytest.mark.parametrize("data_center", sorted(DATA_CENTERS))
def test_data_center_picks_both_servers(data_center: str) -> None:
    zoho = parse(f"zoho:\n  data_center: {data_center}\n  auth:\n{TRIO}").zoho
    accounts_url, api_domain = DATA_CENTERS[data_center]
    assert (zoho.data_center, zoho.api_domain, zoho.auth.accounts_url) == (
        data_center,
        api_domain,
        accounts_url,
    )


def test_fixed_token_mode_also_uses_the_data_center() -> None:
    zoho = parse("zoho:\n  data_center: jp\n  auth:\n    access_token: t\n").zoho
    assert (zoho.api_domain, zoho.auth.accounts_url) == (
        "https://www.zohoapis.jp",
        "https://accounts.zoho.jp",
    )


def test_data_center_table() -> None:
    assert DATA_CENTERS["eu"] == ("https://accounts.zoho.eu", "https://www.zohoapis.eu")
    assert DATA_CENTERS["ca"] == ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca")
    assert sorted(DATA_CENTERS) == ["au", "ca", "cn", "eu", "in", "jp", "sa", "uk", "us"]


def test_unknown_data_center_lists_the_valid_ones() -> None:
    assert problem("zoho:\n  data_center: EU\n  auth:\n    access_token: t\n") == (
        "cfg.yaml:2: zoho.data_center: unknown data centre 'EU'"
        " (valid: us, eu, in, au, jp, ca, cn, sa, uk)"
    )


def test_api_domain_wins_over_the_data_center() -> None:
    zoho = parse(
        "zoho:\n  data_center: eu\n  api_domain: https://crm.example.com/\n  auth:\n" + TRIO
    ).zoho
    assert zoho.api_domain == "https://crm.example.com"
    assert zoho.auth.accounts_url == "https://accounts.zoho.eu"


@pytest.mark.parametrize(
    "zoho",
    [
        "  data_center: eu\n  api_domain: https://www.zohoapis.com\n  auth:\n" + TRIO,
        "  data_center: eu\n  api_domain: https://WWW.ZOHOAPIS.COM/\n  auth:\n"
        "    access_token: t\n",
        "  api_domain: https://www.zohoapis.com\n  auth:\n"
        + TRIO
        + "    accounts_url: https://accounts.zoho.eu\n",
    ],
)
def test_an_api_domain_of_another_data_centre_than_the_tokens_is_refused(zoho: str) -> None:
    """The example config's US api_domain, left in place by a user who set `data_center: eu`,
    would have every token refused and the watcher exit 3 at its first poll."""
    (found,) = problems("zoho:\n" + zoho)
    assert found.startswith("cfg.yaml:")
    assert ": zoho.api_domain: https://" in found
    assert (
        found.lower().count("https://www.zohoapis.com is the api of zoho's 'us' data centre") == 1
    )
    assert "but tokens come from its 'eu' data centre; remove api_domain" in found


@pytest.mark.parametrize("api_domain", ["", "  api_domain: https://www.zohoapis.eu\n"])
def test_an_accounts_url_of_another_data_centre_than_data_center_is_refused(
    api_domain: str,
) -> None:
    """The README's refresh example's US accounts server, kept by a user who set
    `data_center: eu` (and an API domain that agrees with it, or none): every token would be
    refused at the first refresh, and accounts_url is the one to change."""
    (found,) = problems(
        "zoho:\n  data_center: eu\n"
        + api_domain
        + "  auth:\n"
        + TRIO
        + "    accounts_url: https://accounts.zoho.com\n"
    )
    line = 7 + api_domain.count("\n")
    assert found.startswith(f"cfg.yaml:{line}: zoho.auth.accounts_url: https://accounts.zoho.com")
    assert "of Zoho's 'us' data centre, but data_center is 'eu'; remove accounts_url" in found


@pytest.mark.parametrize(
    "zoho",
    [
        "  data_center: eu\n  api_domain: https://www.zohoapis.eu\n  auth:\n" + TRIO,
        "  api_domain: https://www.zohoapis.jp\n  auth:\n    access_token: t\n",  # from anywhere
        "  data_center: eu\n  api_domain: https://crm-proxy.example.com\n  auth:\n" + TRIO,
        "  data_center: eu\n  auth:\n" + TRIO + "    accounts_url: https://accounts.zoho.eu\n",
        "  data_center: eu\n  auth:\n" + TRIO + "    accounts_url: http://127.0.0.1:9/\n",
    ],
)
def test_an_api_domain_that_agrees_or_is_not_zohos_own_is_taken(zoho: str) -> None:
    assert parse("zoho:\n" + zoho).zoho.api_domain is not None


def test_an_api_domain_of_zohos_own_picks_its_accounts_server_without_a_data_centre() -> None:
    zoho = parse("zoho:\n  api_domain: https://www.zohoapis.com.au\n  auth:\n" + TRIO).zoho
    assert zoho.auth.accounts_url == "https://accounts.zoho.com.au"


def test_accounts_url_overrides_the_data_center() -> None:
    text = f"zoho:\n  data_center: eu\n  auth:\n{TRIO}    accounts_url: http://127.0.0.1:9000/\n"
    assert parse(text).zoho.auth.accounts_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080",
        "http://127.0.0.1",
        "http://127.3.2.1:1/",
        "http://[::1]:8080",
        "https://www.zohoapis.com.au",
        "https://crm.example.com:8443/",
    ],
)
def test_urls_accepted(url: str) -> None:
    assert parse(f"zoho:\n  api_domain: '{url}'\n  auth:\n{TRIO}").zoho.api_domain == url.rstrip(
        "/"
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://www.zohoapis.com", "must use https (http is allowed only for localhost)"),
        ("http://10.0.0.1", "must use https (http is allowed only for localhost)"),
        ("http://localhost.example.com", "must use https (http is allowed only for localhost)"),
        ("ftp://www.zohoapis.com", "expected an absolute URL such as https://www.zohoapis.com"),
        ("www.zohoapis.com", "expected an absolute URL such as https://www.zohoapis.com"),
        ("https://", "expected an absolute URL such as https://www.zohoapis.com"),
        ("https://exa mple.com", "expected an absolute URL such as https://www.zohoapis.com"),
        ("https://example.com:port", "expected an absolute URL such as https://www.zohoapis.com"),
        ("https://[::1", "expected an absolute URL such as https://www.zohoapis.com"),
        ("''", "expected an absolute URL such as https://www.zohoapis.com"),
        ("https://user:pw@example.com", "must not contain a user name or password"),
        ("https://example.com?x=1", "must not have a query or fragment"),
        ("https://example.com/#top", "must not have a query or fragment"),
        ("https://example.com/crm", "must not have a path (just scheme, host and port)"),
        # Names no resolver can be asked for: they failed only at the first poll, as a bug.
        ("https://a..b", "expected an absolute URL such as https://www.zohoapis.com"),
        (f"https://{'a' * 64}.com", "expected an absolute URL such as https://www.zohoapis.com"),
        (
            '"https://www.zoho\\0apis.com"',
            "expected an absolute URL such as https://www.zohoapis.com",
        ),
    ],
)
@pytest.mark.parametrize(("key", "line"), [("api_domain", 2), ("accounts_url", 4)])
def test_urls_refused(key: str, line: int, url: str, message: str) -> None:
    if key == "api_domain":
        text = f"zoho:\n  api_domain: {url}\n  auth:\n    access_token: t\n"
    else:
        text = f"{AUTH}    accounts_url: {url}\n"
    path = "zoho.api_domain" if key == "api_domain" else "zoho.auth.accounts_url"
    assert problem(text) == f"cfg.yaml:{line}: {path}: {message}"


@pytest.mark.parametrize("version", ["v2", "v2.1", "v8"])
def test_api_version(version: str) -> None:
    text = f"zoho:\n  api_version: {version}\n  auth:\n    access_token: t\n"
    assert parse(text).zoho.api_version == version


@pytest.mark.parametrize("version", ["2", "v2.", "v2.1.3", "V2"])
def test_api_version_refused(version: str) -> None:
    text = f"zoho:\n  api_version: '{version}'\n  auth:\n    access_token: t\n"
    assert problem(text) == (
        f"cfg.yaml:2: zoho.api_version: {version!r} is not an API version such as v2"
    )


# --- credentials ----------------------------------------------------------------------------------


def test_refresh_mode_without_data_center_leaves_the_api_domain_to_zoho() -> None:
    zoho = parse("zoho:\n  auth:\n" + TRIO).zoho
    auth = zoho.auth
    assert zoho.api_domain is None
    assert auth.refreshes
    assert auth.accounts_url == "https://accounts.zoho.com"
    assert auth.access_token is None
    assert (auth.refresh_token, auth.client_id, auth.client_secret) == (
        Secret(REFRESH),
        Secret(CLIENT_ID),
        Secret(CLIENT_SECRET),
    )
    assert sorted(auth.secrets()) == sorted((REFRESH, CLIENT_ID, CLIENT_SECRET))


def test_both_modes_are_refused() -> None:
    assert problem(AUTH + TRIO) == (
        "cfg.yaml:3: zoho.auth: give either access_token or"
        " refresh_token + client_id + client_secret, not both"
    )


def test_no_credentials_is_refused() -> None:
    assert problem("zoho:\n  auth: {}\n") == (
        "cfg.yaml:2: zoho.auth: no credentials: give access_token, or refresh_token + client_id"
        " + client_secret (each may instead be read from a file with NAME_file)"
    )


@pytest.mark.parametrize(
    ("kept", "missing"),
    [
        ("refresh_token", "client_id and client_secret"),
        ("client_id", "refresh_token and client_secret"),
        ("client_secret", "refresh_token and client_id"),
    ],
)
def test_partial_trio_names_what_is_missing(kept: str, missing: str) -> None:
    text = f"zoho:\n  auth:\n    {kept}: some-value\n"
    assert problem(text) == f"cfg.yaml:3: zoho.auth: refresh mode also needs {missing}"


def test_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(CLIENT_SECRET + "\n")
    (tmp_path / "token").write_bytes(TOKEN.encode() + b"\r\n")
    text = (
        f"zoho:\n  auth:\n    refresh_token_file: {tmp_path / 'token'}\n"
        f"    client_id: x\n    client_secret_file: {tmp_path / 'secret'}\n"
    )
    auth = parse(text).zoho.auth
    assert auth.client_secret == Secret(CLIENT_SECRET)
    assert auth.refresh_token == Secret(TOKEN)


def test_secret_file_path_may_come_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    text = "zoho:\n  auth:\n    access_token_file: ${DIR}/token\n"
    assert parse(text, {"DIR": str(tmp_path)}).zoho.auth.access_token == Secret(TOKEN)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the secret is empty"),
        (b"\n", "the secret is empty"),
        (TOKEN.encode() + b"\n\n", "the secret contains a line break or other control character"),
        (b"one\ntwo", "the secret contains a line break or other control character"),
        (b"  1000.CLIENTID  \n", "the secret starts or ends with a space"),
        (
            b"Zoho-oauthtoken 1000.abc.def\n",  # the whole header, pasted
            "give the token alone, without 'Zoho-oauthtoken' before it",
        ),
        (b"\xff\xfe", "cannot read '{path}': not UTF-8 text (bad byte at offset 0)"),
    ],
)
def test_bad_secret_file_contents(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "token"
    path.write_bytes(content)
    found = problem(f"zoho:\n  auth:\n    access_token_file: {path}\n")
    assert found == f"cfg.yaml:3: zoho.auth.access_token_file: {message.format(path=path)}"


@pytest.mark.parametrize(
    ("name", "reason"), [("missing", "No such file or directory"), ("", "Is a directory")]
)
def test_unreadable_secret_file_names_its_path(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / name
    assert problem(f"zoho:\n  auth:\n    access_token_file: {path}\n") == (
        f"cfg.yaml:3: zoho.auth.access_token_file: cannot read {str(path)!r}: {reason}"
    )


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    text = f"{AUTH}    access_token_file: {tmp_path / 'token'}\n"
    assert problem(text) == (
        "cfg.yaml:4: zoho.auth.access_token_file: give access_token or access_token_file, not both"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("''", "the secret is empty"),
        ("~", "no value given"),
        ("", "no value given"),
        ("[a, b]", "expected a single value, got a list"),
        ('"a\\tb"', "the secret contains a line break or other control character"),
        ('" 1000.abc.def"', "the secret starts or ends with a space"),
        (
            '"zoho-oauthtoken 1000.abc.def"',
            "give the token alone, without 'Zoho-oauthtoken' before it",
        ),
    ],
)
def test_bad_inline_secrets(value: str, message: str) -> None:
    assert problem(f"zoho:\n  auth:\n    access_token: {value}\n") == (
        f"cfg.yaml:3: zoho.auth.access_token: {message}"
    )


def test_numeric_looking_secret_is_kept_as_written() -> None:
    text = "zoho:\n  auth:\n    refresh_token: 0123\n    client_id: 1.50\n    client_secret: no\n"
    auth = parse(text).zoho.auth
    assert auth.secrets() == ("0123", "1.50", "no")


# --- refresh backoff ------------------------------------------------------------------------------


def test_refresh_backoff_is_read() -> None:
    text = f"zoho:\n  auth:\n{TRIO}    refresh_backoff_initial: 1m\n    refresh_backoff_max: 1h\n"
    auth = parse(text).zoho.auth
    assert (auth.refresh_backoff_initial, auth.refresh_backoff_max) == (60.0, 3600.0)


def test_refresh_backoff_is_accepted_with_a_fixed_token() -> None:
    auth = parse(AUTH + "    refresh_backoff_initial: 5s\n").zoho.auth
    assert not auth.refreshes
    assert (auth.refresh_backoff_initial, auth.refresh_backoff_max) == (5.0, 600.0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be greater than zero"),
        ("soon", "not a duration: 'soon' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        ("-30s", "duration must not be negative: '-30s'"),
        ("[1]", "expected a single value, got a list"),
    ],
)
@pytest.mark.parametrize("key", BACKOFF_KEYS)
def test_refresh_backoff_must_be_positive_durations(key: str, value: str, message: str) -> None:
    assert problem(AUTH + f"    {key}: {value}\n") == f"cfg.yaml:4: zoho.auth.{key}: {message}"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            "    refresh_backoff_max: 20s\n",
            "cfg.yaml:4: zoho.auth.refresh_backoff_max: 20s is less than"
            " zoho.auth.refresh_backoff_initial (30s)",
        ),
        (
            "    refresh_backoff_initial: 20m\n",
            "cfg.yaml:4: zoho.auth.refresh_backoff_max: 10m is less than"
            " zoho.auth.refresh_backoff_initial (20m)",
        ),
        (
            "    refresh_backoff_initial: 2m\n    refresh_backoff_max: 1m\n",
            "cfg.yaml:5: zoho.auth.refresh_backoff_max: 1m is less than"
            " zoho.auth.refresh_backoff_initial (2m)",
        ),
        (
            "    refresh_backoff_initial: 0\n    refresh_backoff_max: 1s\n",
            "cfg.yaml:4: zoho.auth.refresh_backoff_initial: must be greater than zero",
        ),
    ],
)
def test_refresh_backoff_max_must_not_be_below_initial(lines: str, expected: str) -> None:
    assert problem(AUTH + lines) == expected


# --- service settings -----------------------------------------------------------------------------


def test_service_settings_are_read(tmp_path: Path) -> None:
    text = AUTH + dedent(
        f"""\
        reload_interval: 250ms
        jobs_dir: {tmp_path}
        state_path: state/watcher.db
        retention: 1d
        progress_events: false
        http:
          host: 0.0.0.0
          port: 9464
        """
    )
    config = parse(text)
    assert (config.reload_interval, config.retention, config.progress_events) == (
        0.25,
        86400.0,
        False,
    )
    assert (config.jobs_dir, config.state_path) == (tmp_path, Path("state/watcher.db"))
    assert config.http == HttpSettings("0.0.0.0", 9464)


@pytest.mark.parametrize("value", ["", "~", "null"])
def test_optional_settings_may_be_null(value: str) -> None:
    text = AUTH + (
        f"jobs_dir: {value}\nstate_path: {value}\nhttp:\n  host: {value}\n  port: {value}\n"
        f"polling:\n  credits_per_day: {value}\n"
    )
    config = parse(text)
    assert (config.jobs_dir, config.state_path, config.http.port) == (None, None, None)
    assert (config.http.host, config.polling.credits_per_day) == ("127.0.0.1", None)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "must be greater than zero"),
        ("soon", "not a duration: 'soon' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        ("-1h", "duration must not be negative: '-1h'"),
        ("~", "not a duration: '~' (use a number of seconds or 250ms, 10s, 5m, 1h)"),
        ("[5s]", "expected a single value, got a list"),
    ],
)
@pytest.mark.parametrize("key", ["reload_interval", "retention"])
def test_service_durations_must_be_positive(key: str, value: str, message: str) -> None:
    assert problem(AUTH + f"{key}: {value}\n") == f"cfg.yaml:4: {key}: {message}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("false", False), ("True", True), ("FALSE", False), ("'false'", False)],
)
def test_progress_events_is_a_boolean(value: str, expected: bool) -> None:
    assert parse(AUTH + f"progress_events: {value}\n").progress_events is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "expected true or false, got 'yes'"),
        ("off", "expected true or false, got 'off'"),
        ("1", "expected true or false, got '1'"),
        ("''", "expected true or false, got ''"),
        ("[true]", "expected a single value, got a list"),
    ],
)
def test_progress_events_takes_only_true_or_false(value: str, message: str) -> None:
    assert (
        problem(AUTH + f"progress_events: {value}\n") == f"cfg.yaml:4: progress_events: {message}"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("''", "'' is not a path (empty, or with a line break or other control character)"),
        (
            '"a\\nb"',
            "'a\\nb' is not a path (empty, or with a line break or other control character)",
        ),
        ("[a]", "expected a single value, got a list"),
    ],
)
@pytest.mark.parametrize("key", ["jobs_dir", "state_path"])
def test_paths_must_be_usable(key: str, value: str, message: str) -> None:
    assert problem(AUTH + f"{key}: {value}\n") == f"cfg.yaml:4: {key}: {message}"


@pytest.mark.parametrize("key", ["jobs_dir", "state_path"])
def test_a_path_starting_with_a_tilde_is_refused_not_made_in_the_working_directory(
    key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`state_path: ~/state.db` would make a directory named `~` here, whose obvious clean-up
    (`rm -rf ~`) deletes the home directory."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~").mkdir()  # even where a directory of that name exists
    message = "'~/w': '~' is not expanded; write ${HOME} instead"
    assert problem(AUTH + f"{key}: ~/w\n") == f"cfg.yaml:4: {key}: {message}"


def test_a_secret_file_starting_with_a_tilde_is_refused() -> None:
    text = "zoho:\n  auth:\n    access_token_file: ~/token\n"
    assert problem(text) == (
        "cfg.yaml:3: zoho.auth.access_token_file: '~/token': '~' is not expanded; write ${HOME}"
        " instead"
    )


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("missing", "directory not found"),
        ("dangling", "directory not found"),
        ("a_file", "not a directory"),
    ],
)
def test_jobs_dir_must_be_an_existing_directory(tmp_path: Path, name: str, said: str) -> None:
    (tmp_path / "a_file").touch()
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    path = tmp_path / name
    assert problem(AUTH + f"jobs_dir: {path}\n") == f"cfg.yaml:4: jobs_dir: {said}: {str(path)!r}"


def test_relative_paths_start_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jobs.d").mkdir()
    monkeypatch.chdir(tmp_path)
    text = AUTH + "jobs_dir: ${DIR}\nstate_path: state.db\n"
    config = parse(text, {**ENV, "DIR": "jobs.d"})
    assert (config.jobs_dir, config.state_path) == (Path("jobs.d"), Path("state.db"))


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("65535", 65535), ("'8080'", 8080)])
def test_http_port(value: str, expected: int) -> None:
    assert parse(AUTH + f"http:\n  port: {value}\n").http.port == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("65536", "65536 is not a port number (0 to 65535)"),
        ("-1", "expected a whole number, got '-1'"),
        ("80.5", "expected a whole number, got '80.5'"),
        ("http", "expected a whole number, got 'http'"),
        ("[80]", "expected a single value, got a list"),
    ],
)
def test_bad_http_ports(value: str, message: str) -> None:
    assert problem(AUTH + f"http:\n  port: {value}\n") == f"cfg.yaml:5: http.port: {message}"


BARE = " (written bare, as ::1 or 0.0.0.0; the port is http.port)"
URL_HOSTS = ("[::1]", "127.0.0.1:80", "http://localhost", "localhost/", "::1:80:x")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("''", "'' is not a host name or address"),
        ("'local host'", "'local host' is not a host name or address"),
        ("a..b", "'a..b' is not a host name or address"),  # no resolver can be asked for it
        (f"{'a' * 64}.example", "a 72-character value is not a host name or address"),
        ("[a, b]", "expected a single value, got a list"),
        # As a URL writes them: the listener would refuse them at run time only.
        *((f"'{host}'", f"'{host}' is not a host name or address{BARE}") for host in URL_HOSTS),
    ],
)
def test_bad_http_hosts(value: str, message: str) -> None:
    assert problem(AUTH + f"http:\n  host: {value}\n") == f"cfg.yaml:5: http.host: {message}"


# --- environment variables ------------------------------------------------------------------------


def test_unset_variable_names_the_variable_and_key() -> None:
    assert problem(AUTH, {}) == (
        "cfg.yaml:3: zoho.auth.access_token: environment variable ZOHO_ACCESS_TOKEN is not set"
    )


def test_every_unset_variable_is_reported() -> None:
    found = problems(AUTH + "polling:\n  interval: ${A}${B}\n", {})
    assert [line.rsplit(": ", 1)[1] for line in found] == [
        "environment variable ZOHO_ACCESS_TOKEN is not set",
        "environment variable A is not set",
        "environment variable B is not set",
    ]


def test_several_variables_and_escapes_in_one_value() -> None:
    text = "zoho:\n  auth:\n    access_token: 'a${X}-${Y}$$b$$c$9'\n"
    token = parse(text, {"X": "1", "Y": "$Z"}).zoho.auth.access_token
    assert token == Secret("a1-$Z$b$c$9")  # a value from the environment is not read again


@pytest.mark.parametrize(
    ("key", "value"),
    [("api_domain", "https://$ZOHO_DOMAIN"), ("api_version", "v$V")],
)
def test_a_bare_dollar_name_anywhere_is_refused_not_taken_as_text(key: str, value: str) -> None:
    """Taken as text, the watcher would poll a host that cannot exist, for ever."""
    text = AUTH.replace("zoho:\n", f"zoho:\n  {key}: '{value}'\n", 1)
    message = "write ${NAME} for an environment variable, $$ for a literal $"
    assert problem(text) == f"cfg.yaml:2: zoho.{key}: {message}"


def test_variables_reach_durations_modules_and_job_ids() -> None:
    text = AUTH + "polling:\n  interval: ${I}\njobs:\n  - {module: '${M}', job_id: '${J}'}\n"
    config = parse(text, {**ENV, "I": "2m", "M": "Deals", "J": "0042"})
    assert config.polling.interval == 120.0
    assert config.jobs == (JobSpec("Deals", "0042"),)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("'${ZOHO_ACCESS_TOKEN'", "unterminated ${ (write $$ for a literal $)"),
        ("'${}'", "invalid ${VAR} reference (write $$ for a literal $)"),
        ("'${1X}'", "invalid ${VAR} reference (write $$ for a literal $)"),
    ],
)
def test_malformed_references(value: str, message: str) -> None:
    text = f"zoho:\n  auth:\n    access_token: {value}\n"
    assert problem(text) == f"cfg.yaml:3: zoho.auth.access_token: {message}"


# --- jobs -----------------------------------------------------------------------------------------


def test_jobs_are_deduplicated_in_first_seen_order() -> None:
    config = parse(
        AUTH
        + dedent(
            """\
            jobs:
              - {module: Leads, job_id: "2"}
              - {module: Deals, job_id: "1"}
              - {module: Leads, job_id: 2}
              - {module: Leads, job_id: "1"}
            """
        )
    )
    assert config.jobs == (JobSpec("Leads", "2"), JobSpec("Deals", "1"), JobSpec("Leads", "1"))


@pytest.mark.parametrize(
    ("module", "job_id", "expected"),
    [
        ("No", "0123", JobSpec("No", "0123")),
        ("Off", "0777", JobSpec("Off", "0777")),
        ("Null", "554023000000506003", JobSpec("Null", "554023000000506003")),
        ("True", "00", JobSpec("True", "00")),
        ("Custom_Module2", "'42'", JobSpec("Custom_Module2", "42")),
    ],
)
def test_yaml_1_1_traps_keep_the_text_as_written(
    module: str, job_id: str, expected: JobSpec
) -> None:
    config = parse(AUTH + f"jobs:\n  - module: {module}\n    job_id: {job_id}\n")
    assert config.jobs == (expected,)


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("1Leads", "'1Leads' is not a module API name"),
        ("Le-ads", "'Le-ads' is not a module API name"),
        ("'Le ads'", "'Le ads' is not a module API name"),
        ("''", "'' is not a module API name"),
        ("_Leads", "'_Leads' is not a module API name"),
        ("Léads", "'Léads' is not a module API name"),
        ("[Leads]", "expected a single value, got a list"),
    ],
)
def test_bad_module_names(module: str, message: str) -> None:
    assert job_problem(f"  - module: {module}\n    job_id: '1'\n").startswith(
        f"cfg.yaml:5: jobs[0].module: {message}"
    )


@pytest.mark.parametrize(
    ("job_id", "text"),
    [
        ("12a", "12a"),
        ("-1", "-1"),
        ("1.0", "1.0"),
        ("1e5", "1e5"),
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        ("''", ""),
        ("' 1'", " 1"),
        ("١٢", "١٢"),
    ],
)
def test_job_ids_must_be_digits(job_id: str, text: str) -> None:
    assert job_problem(f"  - module: Leads\n    job_id: {job_id}\n") == (
        f"cfg.yaml:6: jobs[0].job_id: {text!r} is not a job id (digits only)"
    )


@pytest.mark.parametrize(
    ("item", "missing"),
    [("{module: Leads}", "job_id"), ("{job_id: '1'}", "module"), ("{}", "module and job_id")],
)
def test_jobs_need_module_and_job_id(item: str, missing: str) -> None:
    assert job_problem(f"  - {item}\n") == f"cfg.yaml:5: jobs[0]: missing {missing}"


def test_ten_thousand_jobs_load_quickly() -> None:
    lines = "".join(f"  - module: Leads\n    job_id: {i % 5000:018d}\n" for i in range(10_000))
    if yaml.__with_libyaml__:
        assert yaml_tree.LOADER is yaml.CSafeLoader
    started = time.perf_counter()
    config = parse(AUTH + "jobs:\n" + lines)
    elapsed = time.perf_counter() - started
    assert len(config.jobs) == 5000
    assert config.jobs[1] == JobSpec("Leads", "000000000000000001")
    assert elapsed < 5  # about 0.2 s with the C loader; quadratic work would take minutes


# --- files and YAML errors ------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert info.value.problems == (f"{path}: config file not found",)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, ENV)
    assert info.value.problems == (f"{tmp_path}: cannot read config file: Is a directory",)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_bytes(AUTH.encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert info.value.problems == (
        f"{path}: cannot read config file: not UTF-8 text (bad byte at offset {len(AUTH) + 5})",
    )


def test_file_problems_name_the_file_and_byte_order_mark_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("\ufeff" + AUTH + "polling:\n  interval: 0\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert info.value.problems == (f"{path}:5: polling.interval: must be greater than zero",)


def test_environment_defaults_to_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text(AUTH)
    monkeypatch.setenv("ZOHO_ACCESS_TOKEN", TOKEN)
    assert load_config(path).zoho.auth.access_token == Secret(TOKEN)


@pytest.mark.parametrize("loader", [yaml.SafeLoader, yaml_tree.LOADER])
@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("zoho: [1\n", "cfg.yaml:2:1"),
        ("a: 1\n---\nb: 2\n", "cfg.yaml:2:1"),
        ("zoho:\n\tauth: 1\n", "cfg.yaml:2:1"),
        ("a: b: c\n", "cfg.yaml:1:5"),
        ("a: *nothing\n", "cfg.yaml:1:4"),
        ("a: \x00\n", "cfg.yaml:1:4"),
        ("éé: cd\nx: a\x01b\n", "cfg.yaml:2:5"),  # libyaml counts bytes, people characters
    ],
)
def test_invalid_yaml_is_one_line_with_its_position(
    monkeypatch: pytest.MonkeyPatch, loader: type[yaml.SafeLoader], text: str, where: str
) -> None:
    monkeypatch.setattr(yaml_tree, "LOADER", loader)
    found = problem(text)
    assert found.startswith(f"{where}: invalid YAML: ")
    assert len(found.splitlines()) == 1


@pytest.mark.parametrize(
    ("loader", "where"), [(yaml.SafeLoader, "cfg.yaml:1:4"), (yaml_tree.LOADER, "cfg.yaml")]
)
def test_text_that_is_no_unicode_is_invalid_yaml_in_one_line(
    monkeypatch: pytest.MonkeyPatch, loader: type[yaml.SafeLoader], where: str
) -> None:
    """A lone surrogate (a byte no UTF-8 decodes, from the environment): libyaml cannot take
    the text at all, so it has no position to tell."""
    monkeypatch.setattr(yaml_tree, "LOADER", loader)
    found = problem("a: \ud800\n")
    assert found.startswith(f"{where}: invalid YAML: ")
    assert len(found.splitlines()) == 1


def test_deep_nesting_is_invalid_yaml_with_either_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "[" * 5000
    assert "invalid YAML" in problem(deep)
    monkeypatch.setattr(yaml_tree, "LOADER", yaml.SafeLoader)
    assert problem(deep) == "cfg.yaml: invalid YAML: nested too deeply"


# --- jobs files and jobs_dir ----------------------------------------------------------------------


def jobs_file_problems(text: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_jobs_file(text, "drop.yaml")
    return info.value.problems


def write_main(tmp_path: Path, jobs_dir: Path) -> Path:
    """A main file (watching Leads 1) whose jobs_dir line is line 4."""
    path = tmp_path / "watcher.yaml"
    path.write_text(AUTH + f"jobs_dir: {jobs_dir}\njobs:\n  - {{module: Leads, job_id: '1'}}\n")
    return path


def jobs_yaml(*jobs: tuple[str, str]) -> str:
    return "jobs:\n" + "".join(f"  - {{module: {m}, job_id: '{j}'}}\n" for m, j in jobs)


def test_jobs_file_gives_its_jobs_in_order_without_repeats() -> None:
    text = jobs_yaml(("Leads", "0012"), ("Deals", "2"), ("Leads", "0012"))
    assert parse_jobs_file(text, "drop.yaml") == (JobSpec("Leads", "0012"), JobSpec("Deals", "2"))


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "null\n", "{}\n", "jobs:\n", "jobs: []\n"])
def test_empty_jobs_file_has_no_jobs(text: str) -> None:
    assert parse_jobs_file(text, "drop.yaml") == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("jobs:\n  - {module: Leads}\n", "drop.yaml:2: jobs[0]: missing job_id"),
        (
            "jobs:\n  - {module: Leads, job_id: x1}\n",
            "drop.yaml:2: jobs[0].job_id: 'x1' is not a job id (digits only)",
        ),
        (
            "jobs:\n  - {module: '${M}', job_id: '1'}\n",
            "drop.yaml:2: jobs[0].module: '${M}' is not a module API name"
            " (letters, digits and _, starting with a letter)",
        ),
        ("jobz: []\n", "drop.yaml:1: top level: unknown key 'jobz' (did you mean 'jobs'?)"),
        (
            "polling: {}\njobs: []\n",
            "drop.yaml:1: top level: unknown key 'polling' (expected one of: jobs)",
        ),
        (
            "- {module: Leads, job_id: '1'}\n",
            "drop.yaml:1: top level: expected a mapping, got a list",
        ),
        ("jobs: Leads\n", "drop.yaml:1: jobs: expected a list of jobs, got a single value"),
        ("jobs: [\n", "drop.yaml:2:1: invalid YAML: "),
    ],
)
def test_bad_jobs_files(text: str, expected: str) -> None:
    (found,) = jobs_file_problems(text)
    assert found.startswith(expected)


def test_every_problem_of_a_jobs_file_is_reported() -> None:
    found = jobs_file_problems("jobs:\n  - {module: 1A, job_id: '1'}\n  - {job_id: x}\nextra: 1\n")
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["drop.yaml:2", "jobs[0].module"],
        ["drop.yaml:3", "jobs[1]"],
        ["drop.yaml:3", "jobs[1].job_id"],
        ["drop.yaml:4", "top level"],
    ]


def test_load_jobs_file(tmp_path: Path) -> None:
    path = tmp_path / "drop.yml"
    path.write_text(jobs_yaml(("Deals", "7")))
    assert load_jobs_file(path) == (JobSpec("Deals", "7"),)
    with pytest.raises(ConfigError) as info:
        load_jobs_file(tmp_path / "gone.yaml")
    assert info.value.problems == (f"{tmp_path / 'gone.yaml'}: jobs file not found",)
    with pytest.raises(ConfigError) as info:
        load_jobs_file(tmp_path)
    assert info.value.problems == (f"{tmp_path}: cannot read jobs file: Is a directory",)


def test_load_all_appends_jobs_files_in_name_order_without_repeats(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    # Written out of order: the directory's own order must not matter.
    (jobs_dir / "b.yml").write_text(jobs_yaml(("Deals", "2"), ("Leads", "1"), ("Contacts", "4")))
    (jobs_dir / "a.yaml").write_text(jobs_yaml(("Deals", "3"), ("Deals", "2")))
    (jobs_dir / "10.yaml").write_text(jobs_yaml(("Quotes", "5")))
    (jobs_dir / "empty.yaml").write_text("")
    path = write_main(tmp_path, jobs_dir)
    config = load_all(path, ENV)
    assert config.jobs == (
        JobSpec("Leads", "1"),
        JobSpec("Quotes", "5"),
        JobSpec("Deals", "3"),
        JobSpec("Deals", "2"),
        JobSpec("Contacts", "4"),
    )
    assert (config.source, config.jobs_dir) == (path, jobs_dir)
    assert load_config(path, ENV).jobs == (JobSpec("Leads", "1"),)


def test_load_all_ignores_hidden_files_and_other_extensions(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "real.yaml").write_text(jobs_yaml(("Deals", "2")))
    # Each would be a problem if it were read.
    for name in (".hidden.yaml", ".real.yaml.swp", "real.yaml~", "notes.txt", "jobs.json", "x.YML"):
        (jobs_dir / name).write_text("jobs: [\n")
    config = load_all(write_main(tmp_path, jobs_dir), ENV)
    assert config.jobs == (JobSpec("Leads", "1"), JobSpec("Deals", "2"))


def test_load_all_without_jobs_dir_is_load_config(tmp_path: Path) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text(AUTH + "jobs:\n  - {module: Leads, job_id: '1'}\n")
    assert load_all(path, ENV) == load_config(path, ENV)
    assert load_all(path, ENV).source == path


def test_load_all_reports_a_missing_jobs_dir_at_its_line(tmp_path: Path) -> None:
    path = write_main(tmp_path, tmp_path / "gone")
    assert load_problems(path) == (
        f"{path}:4: jobs_dir: directory not found: {str(tmp_path / 'gone')!r}",
    )


def test_load_all_reports_every_bad_jobs_file_by_name(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    (jobs_dir / "sub.yaml").mkdir(parents=True)
    (jobs_dir / "a.yaml").write_text("jobs:\n  - {module: Leads, job_id: x}\n")
    (jobs_dir / "b.yaml").write_text(jobs_yaml(("Deals", "2")))
    (jobs_dir / "c.yml").write_text("- {module: Leads, job_id: '1'}\n")
    assert load_problems(write_main(tmp_path, jobs_dir)) == (
        f"{jobs_dir / 'a.yaml'}:2: jobs[0].job_id: 'x' is not a job id (digits only)",
        f"{jobs_dir / 'c.yml'}:1: top level: expected a mapping, got a list",
        f"{jobs_dir / 'sub.yaml'}: cannot read jobs file: Is a directory",
    )


def test_load_all_reports_an_unreadable_jobs_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    path = write_main(tmp_path, jobs_dir)

    listdir = os.listdir

    def refuse(directory: Path) -> list[str]:
        if Path(directory) == jobs_dir:
            raise PermissionError(errno.EACCES, "Permission denied", str(directory))
        return listdir(directory)

    # Tests run as root, which chmod cannot lock out; the listing itself is made to fail.
    monkeypatch.setattr(os, "listdir", refuse)
    assert load_problems(path) == (f"{jobs_dir}: cannot read jobs_dir: Permission denied",)


def test_load_all_never_echoes_a_secret_from_a_jobs_file(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "oops.yaml").write_text(f"jobs:\n  - {{module: Leads, job_id: '{TOKEN}'}}\n")
    assert load_problems(write_main(tmp_path, jobs_dir)) == (
        f"{jobs_dir / 'oops.yaml'}:2: jobs[0].job_id: '***' is not a job id (digits only)",
    )


# --- reporting ------------------------------------------------------------------------------------


def test_all_problems_are_reported_in_file_order() -> None:
    text = dedent(
        """\
        zoho:
          api_version: two
          auth:
            access_token: ${ZOHO_ACCESS_TOKEN}
            refresh_token: x
        polling:
          interval: soon
        jobs:
          - {module: 9, job_id: x}
        """
    )
    error_lines = [found.split(":")[1] for found in problems(text)]
    assert error_lines == ["2", "4", "7", "9", "9"]


def test_config_error_text_is_its_problems_one_per_line() -> None:
    error = ConfigError(("a.yaml:1: x: bad", "a.yaml:2: y: worse"))
    assert str(error) == "a.yaml:1: x: bad\na.yaml:2: y: worse"
    assert error.problems == ("a.yaml:1: x: bad", "a.yaml:2: y: worse")


def test_secret_repr_and_str_hide_the_value() -> None:
    secret = Secret(TOKEN)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert secret.reveal() == TOKEN
    config = parse("zoho:\n  auth:\n" + TRIO)
    assert all(value not in repr(config) for value in (REFRESH, CLIENT_ID, CLIENT_SECRET))


@pytest.mark.parametrize(
    "text",
    [
        f"zoho:\n  auth:\n    access_token: [{TOKEN}]\n",
        f"zoho:\n  auth:\n    access_token: {{{TOKEN}: 1}}\n",
        f'zoho:\n  auth:\n    access_token: "{TOKEN}\\n"\n',
        f"zoho:\n  auth:\n    access_token: {TOKEN}\n    refresh_token: {REFRESH}\n",
        f"zoho:\n  auth:\n    refresh_token: {REFRESH}\n    refresh_token_file: /nonexistent\n",
        f"zoho:\n  data_center: {TOKEN}\n  auth:\n    access_token: {TOKEN}\n",
        f"{AUTH}polling:\n  rate_period: ${{ZOHO_ACCESS_TOKEN}}\n",
        f"{AUTH}polling:\n  rate_limit: ${{ZOHO_ACCESS_TOKEN}}\n",
        f"{AUTH}jobs:\n  - module: Leads\n    job_id: ${{ZOHO_ACCESS_TOKEN}}\n",
    ],
)
def test_problems_never_show_a_secret(text: str) -> None:
    message = "\n".join(problems(text))
    assert TOKEN not in message
    assert REFRESH not in message


def test_short_secrets_are_not_masked_inside_ordinary_words() -> None:
    text = "zoho:\n  auth:\n    access_token: t\npolling:\n  interval: 0\n"
    assert problem(text) == "cfg.yaml:5: polling.interval: must be greater than zero"


# --- properties -----------------------------------------------------------------------------------


def _outcome(text: str) -> None:
    """parse_config either gives a Config or a ConfigError of one-line problems; nothing else."""
    try:
        result: Config | ConfigError = parse_config(text, "prop.yaml", ENV)
    except ConfigError as error:
        result = error
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(len(found.splitlines()) == 1 for found in result.problems)
    else:
        assert isinstance(result, Config)


_KEYS = (*TOP_KEYS, *ZOHO_KEYS, *AUTH_KEYS, *POLLING_KEYS, *HTTP_KEYS, *JOB_KEYS)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        [
            *("${ZOHO_ACCESS_TOKEN}", "${UNSET}", "$$", "${", "10s", "0123", "No", "eu", "v2"),
            *("Leads", "https://www.zohoapis.com", "http://localhost:1", TOKEN, "/no/such/file"),
            *("adaptive", "fixed", "true", "65536", "/tmp", "."),
        ]
    )
)
_ANY = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


def _section(keys: tuple[str, ...]) -> st.SearchStrategy[object]:
    return st.dictionaries(st.sampled_from(keys), _ANY, max_size=len(keys)) | _ANY


_SHAPED = st.fixed_dictionaries(
    {},
    optional={
        "zoho": st.fixed_dictionaries(
            {},
            optional={
                "auth": _section(AUTH_KEYS),
                "data_center": _SCALARS,
                "api_domain": _SCALARS,
                "api_version": _SCALARS,
            },
        )
        | _ANY,
        "polling": _section(POLLING_KEYS),
        "jobs": st.lists(_section(JOB_KEYS), max_size=3) | _ANY,
        "http": _section(HTTP_KEYS),
        **dict.fromkeys(SERVICE_KEYS, _SCALARS),
    },
)


@given(st.text())
def test_any_text_gives_a_config_or_a_config_error(text: str) -> None:
    _outcome(text)


@given(_SHAPED | _ANY)
def test_any_mapping_shape_gives_a_config_or_a_config_error(document: object) -> None:
    _outcome(yaml.safe_dump(document))


_JOBS_FILE = st.fixed_dictionaries(
    {}, optional={"jobs": st.lists(_section(JOB_KEYS), max_size=3) | _ANY}
)


@given(st.text() | (_JOBS_FILE | _ANY).map(yaml.safe_dump))
def test_any_jobs_file_gives_jobs_or_a_config_error(text: str) -> None:
    try:
        result: tuple[JobSpec, ...] | ConfigError = parse_jobs_file(text, "prop.yaml")
    except ConfigError as error:
        result = error
    if isinstance(result, ConfigError):
        assert result.problems
        assert all(len(found.splitlines()) == 1 for found in result.problems)
    else:
        assert all(isinstance(job, JobSpec) for job in result)


def test_job_specs_equal_by_value_hash_alike_and_sort_by_module_then_id() -> None:
    spec = JobSpec("Leads", "2")
    assert spec == JobSpec("Leads", "2")
    assert hash(spec) == hash(JobSpec("Leads", "2"))
    assert {spec: 1}[JobSpec("Leads", "2")] == 1
    assert sorted([JobSpec("Leads", "2"), JobSpec("Deals", "3"), JobSpec("Leads", "1")]) == [
        JobSpec("Deals", "3"),
        JobSpec("Leads", "1"),
        JobSpec("Leads", "2"),
    ]
    assert repr(spec) == "JobSpec(module='Leads', job_id='2')"


@pytest.mark.parametrize("enabled", [True, False])
def test_reading_a_file_leaves_garbage_collection_as_it_was(enabled: bool) -> None:
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        parse_jobs_file("jobs:\n  - {module: Leads, job_id: '1'}\n", "jobs.yaml")
        with pytest.raises(ConfigError):
            parse_jobs_file("jobs: [", "broken.yaml")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_a_jobs_file_whose_name_is_not_utf8_is_read(tmp_path: Path) -> None:
    """File names are bytes on Linux; one that is not UTF-8 must not stop the watcher."""
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / os.fsdecode(b"caf\xe9.yaml")).write_text(
        "jobs:\n  - {module: Deals, job_id: '7'}\n"
    )
    assert [spec.job_id for spec in load_all(write_main(tmp_path, jobs_dir), ENV).jobs] == [
        "1",
        "7",
    ]


def fifo(path: Path) -> None:
    os.mkfifo(path)


@pytest.mark.parametrize("make", [fifo, lambda path: path.symlink_to("/dev/zero")])
def test_a_config_that_is_no_regular_file_is_refused_not_read(
    tmp_path: Path, make: Callable[[Path], None]
) -> None:
    """A FIFO would block (a reload, then shutdown) until somebody writes to it; /dev/zero never
    ends."""
    path = tmp_path / "watcher.yaml"
    make(path)
    assert load_problems(path) == (f"{path}: cannot read config file: not a regular file",)


@pytest.mark.parametrize("grown", [10, files.MAX_FILE_BYTES + 1])
def test_a_file_that_grew_after_its_size_was_taken_is_read_whole_up_to_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grown: int
) -> None:
    path = tmp_path / "jobs.yaml"
    path.write_bytes(b"x" * grown)
    real_fstat = os.fstat

    def smaller(descriptor: int) -> object:  # the size before the writer's last append
        found = real_fstat(descriptor)
        return type("Found", (), {"st_mode": found.st_mode, "st_size": 4})

    monkeypatch.setattr(files.os, "fstat", smaller)
    if grown > files.MAX_FILE_BYTES:
        with pytest.raises(OSError, match="larger than 64 MiB"):
            read_file_bytes(path)
    else:
        assert read_file_bytes(path) == b"x" * grown


def test_a_fifo_dropped_in_jobs_dir_is_refused_not_read(tmp_path: Path) -> None:
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    os.mkfifo(jobs_dir / "more.yaml")
    with pytest.raises(ConfigError, match=r"more\.yaml: cannot read jobs file: not a regular file"):
        load_all(write_main(tmp_path, jobs_dir), ENV)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "access_token: $ZOHO_ACCESS_TOKEN",
            "write ${ZOHO_ACCESS_TOKEN} for the environment variable ZOHO_ACCESS_TOKEN",
        ),
        ("access_token_file: ~", "no value given"),
        ("access_token_file:", "no value given"),
    ],
)
def test_a_secret_written_not_quite_right_is_refused_with_the_fix(line: str, message: str) -> None:
    assert (
        problem(f"zoho:\n  auth:\n    {line}\n")
        == f"cfg.yaml:3: zoho.auth.{line.split(':')[0]}: {message}"
    )


def test_a_literal_dollar_in_a_secret_is_still_written_as_two() -> None:
    assert parse("zoho:\n  auth:\n    access_token: $$ABCDEFGH\n").zoho.auth.access_token == Secret(
        "$ABCDEFGH"
    )


def test_a_secret_that_is_not_utf8_is_refused_not_sent(tmp_path: Path) -> None:
    """An environment variable holding a byte that is no UTF-8 reaches Python as a lone
    surrogate: no header or form can carry it, and sending it ended in a traceback."""
    text = "zoho:\n  auth:\n    access_token: ${ZOHO_ACCESS_TOKEN}\n"
    found = problem(text, {"ZOHO_ACCESS_TOKEN": os.fsdecode(b"1000.abc\xffdef-ghi")})
    assert found == "cfg.yaml:3: zoho.auth.access_token: the secret is not valid UTF-8 text"


SECRET_AS_JOB = (
    "jobs: a module or job id holds one of the configured secrets; pasted in the wrong place?"
)


@pytest.mark.parametrize(
    ("secret", "job"),
    [
        ("clientsecretvalue789", "{module: clientsecretvalue789, job_id: '2'}"),
        ("clientsecretvalue789", "{module: Xclientsecretvalue789Y, job_id: '2'}"),
        ("4003002001000", "{module: Deals, job_id: '4003002001000'}"),
        ("Abcdefgh", "{module: Abcdefgh, job_id: '2'}"),  # as short as a secret is looked for
    ],
)
def test_a_secret_pasted_as_a_module_or_job_id_is_refused_unsaid(secret: str, job: str) -> None:
    """/jobs and status mask nothing, and the URL would carry it to Zoho: refused at load."""
    env = {**ENV, "ZOHO_ACCESS_TOKEN": secret}
    assert problems(AUTH + f"jobs:\n  - {job}\n", env) == (f"cfg.yaml: {SECRET_AS_JOB}",)


def test_a_secret_pasted_as_a_module_in_a_jobs_file_is_refused_unsaid(tmp_path: Path) -> None:
    secret = "clientsecretvalue789"
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "a.yaml").write_text(jobs_yaml((secret, "2")))
    with pytest.raises(ConfigError) as info:
        load_all(write_main(tmp_path, jobs_dir), {**ENV, "ZOHO_ACCESS_TOKEN": secret})
    assert info.value.problems == (f"{jobs_dir}: {SECRET_AS_JOB}",)


def test_a_secret_in_a_problem_is_masked_whole_from_eight_characters_up() -> None:
    """A problem may quote what was written where; a secret there is masked, a secret that holds
    another one whole, and one as short as a credential can be."""
    secrets = ["Abcdefgh", "Abcdefg", "LONG-Abcdefgh-SECRET"]
    shown = redact(["x Abcdefgh y", "see LONG-Abcdefgh-SECRET", "Abcdefg"], secrets)
    assert shown == ["x *** y", "see ***", "Abcdefg"]


def test_a_value_too_long_to_be_a_setting_is_described_not_quoted() -> None:
    """Likely a credential pasted under the wrong key: a problem must not print it."""
    found = problem(f"zoho:\n  data_center: {'A' * 33}\n  auth: {{access_token: x}}\n")
    assert "A" * 33 not in found
    assert "a 33-character value" in found


def test_an_empty_secret_file_path_names_no_file() -> None:
    text = "zoho:\n  auth:\n    access_token_file: ''\n"
    assert problem(text) == "cfg.yaml:3: zoho.auth.access_token_file: no file named"


def test_status_reads_only_the_state_path(tmp_path: Path) -> None:
    """Neither the credentials nor the rest of the file need be right for a look at the state."""
    path = tmp_path / "w.yaml"
    path.write_text("zoho:\n  auth:\n    access_token: ${UNSET}\nstate_path: ${DIR}/state.db\n")
    assert load_state_path(path, {"DIR": "/var/lib/w"}) == Path("/var/lib/w/state.db")
    path.write_text("jobs: [x]\n")
    assert load_state_path(path, {}) is None
    path.write_text("state_path: ${DIR}/state.db\n")
    with pytest.raises(ConfigError) as info:
        load_state_path(path, {})
    assert info.value.problems == (f"{path}:1: state_path: environment variable DIR is not set",)


def test_a_jobs_file_whose_name_holds_a_newline_is_named_on_one_line(tmp_path: Path) -> None:
    """Every problem is one line: a log pipeline would take the rest of the name for another."""
    jobs_dir = tmp_path / "jobs.d"
    jobs_dir.mkdir()
    (jobs_dir / "nl\nx.yaml").write_text(jobs_yaml(("Leads", "x4")))
    (found,) = load_problems(write_main(tmp_path, jobs_dir))
    assert found.startswith(f"{jobs_dir}/nl\\nx.yaml:2: jobs[0].job_id: ")
    assert "\n" not in found
