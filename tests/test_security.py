"""The security pass: each promise has a test here (or names the one elsewhere) that fails
without it.

- TLS is always verified, and nothing can switch that off: a server whose certificate nobody
  vouches for gets neither a poll nor a refresh (while the same server, once trusted, gets both);
  no code in watcher/ and no setting turns verification off; a token answer cannot send the
  token over plain http either.
- A module or job id never leaves its path segment or query value: hostile values are quoted
  into place by `ZohoClient.url`, or refused when no quoting can hold them, and refused by the
  config in the first place.
- Secrets never reach output: tests/conftest.py fails any test whose watcher printed one; here,
  that check itself is shown to fail a test that leaks.
- The container runs as a non-root user (tests/test_container.py) and the state file is created
  0600 (tests/test_state.py); both are checked to still exist below.
- The HTTP listener binds loopback unless told otherwise and serves nothing that reveals a secret.
- `pip-audit` over the locked dependencies in CI (.ci/audit.py): a finding fails the step, an
  unreachable vulnerability service only warns.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
import trustme
import yaml
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from tests.harness import (
    ACCESS_TOKEN,
    CLIENT_ID,
    SECRETS,
    WatcherProcess,
    leaked_secrets,
    refresh_auth,
    run_cli,
    write_config,
)
from watcher.auth import FixedToken, Grant, read_token_answer
from watcher.client import ZohoClient
from watcher.config import ConfigError, HttpSettings, JobSpec, Secret, parse_config
from watcher.credits import CreditBudget
from watcher.ratelimit import RequestGate
from watcher.simulator import Simulator
from watcher.zoho_api import MASS_UPDATE, Effect

ROOT = Path(__file__).resolve().parents[1]
JOB = ("Leads", "1001")
ISSUED = "tls-issued-access-token-0123456789"
SECRETS.add(ISSUED)
ENV = {"ZOHO_ACCESS_TOKEN": "1000.access-token-for-config-tests"}

# --- TLS ------------------------------------------------------------------------------------------


@dataclass
class TlsZoho:
    """A Zoho stand-in on https://127.0.0.1 with a certificate from the test's own CA."""

    url: str
    asked: list[str] = field(default_factory=list)


@asynccontextmanager
async def tls_zoho(ca: trustme.CA) -> AsyncIterator[TlsZoho]:
    zoho = TlsZoho("")

    async def status(request: web.Request) -> web.Response:
        zoho.asked.append(request.path)
        return web.json_response({"data": [{"Status": "COMPLETED", "Total_Count": 1}]})

    async def token(request: web.Request) -> web.Response:
        zoho.asked.append(request.path)
        return web.json_response({"access_token": ISSUED, "expires_in": 3600})

    app = web.Application()
    app.router.add_get("/crm/v2/{module}/actions/mass_update", status)
    app.router.add_post("/oauth/v2/token", token)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    zoho.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield zoho
    finally:
        await runner.cleanup()


def tls_config(tmp_path: Path, zoho: TlsZoho, refresh: bool) -> Path:
    """A config whose API (and, when `refresh`, accounts server) is the TLS stand-in."""
    auth = (
        refresh_auth(zoho.url, refresh_backoff_initial="50ms", refresh_backoff_max="100ms")
        if refresh
        else None
    )
    return write_config(tmp_path / "watcher.yaml", zoho.url, [JOB], auth=auth)


@pytest.mark.parametrize("refresh", [False, True], ids=["polling", "refreshing"])
async def test_a_certificate_nobody_vouches_for_is_refused(tmp_path: Path, refresh: bool) -> None:
    """Nothing reaches the server, not even the refresh token; every attempt is a
    connection_error. Trusting the CA (SSL_CERT_FILE) makes the same run succeed: the refusal is
    the certificate's doing, nothing else's."""
    ca = trustme.CA()
    async with tls_zoho(ca) as zoho:
        config = tls_config(tmp_path, zoho, refresh)
        watcher = await WatcherProcess.start("run", "--config", str(config))
        failure = "auth.refresh_failed" if refresh else "job.poll_failed"
        await watcher.wait_for(
            lambda events: sum(e["event"] == failure for e in events) >= 3, timeout=10
        )
        watcher.process.terminate()
        assert await watcher.finish() == 0
        assert {e["error"] for e in watcher.named(failure)} == {"tls_error"}
        assert watcher.named("job.finished") == []
        assert zoho.asked == []

        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        trusted = await WatcherProcess.start(
            "run",
            "--config",
            str(config),
            "--exit-when-done",
            env={"SSL_CERT_FILE": str(tmp_path / "ca.pem")},
        )
        assert await trusted.finish() == 0
        assert [e["outcome"] for e in trusted.named("job.finished")] == ["completed"]
        assert zoho.asked


# Every way Python or aiohttp offers to skip certificate checks.
_UNVERIFIED = re.compile(
    r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname|_create_unverified_context"
    r"|PYTHONHTTPSVERIFY|ssl\.SSLContext\("
)


def test_nothing_in_the_watcher_turns_verification_off() -> None:
    sources = sorted((ROOT / "watcher").glob("*.py"))
    assert len(sources) > 10
    found = [
        f"{path.name}:{number}"
        for path in sources
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _UNVERIFIED.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("section", ["", "zoho", "zoho.auth", "polling", "http"])
@pytest.mark.parametrize("key", ["verify_ssl", "insecure", "tls_verify", "ssl"])
def test_no_setting_turns_verification_off(section: str, key: str) -> None:
    document: dict[str, object] = {"zoho": {"auth": {"access_token": "${ZOHO_ACCESS_TOKEN}"}}}
    target: dict[str, object] = document
    for name in filter(None, section.split(".")):
        target = target.setdefault(name, {})  # type: ignore[assignment]
    target[key] = False
    with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
        parse_config(yaml.safe_dump(document), "cfg.yaml", ENV)


@pytest.mark.parametrize(
    ("named", "used"),
    [
        ("https://www.zohoapis.eu", "https://www.zohoapis.eu"),
        ("https://www.zohoapis.eu/", "https://www.zohoapis.eu"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://www.zohoapis.eu", None),  # plain http: the token would travel unencrypted
        ("https://evil.example/crm?x=", None),  # a path and query would bend every URL
        ("https://user:pw@www.zohoapis.eu", None),
        ("www.zohoapis.eu", None),
    ],
)
def test_a_token_answer_cannot_send_the_token_over_plain_http(named: str, used: str | None) -> None:
    body = json.dumps({"access_token": "t", "expires_in": 3600, "api_domain": named}).encode()
    assert read_token_answer(200, body) == Grant("t", 3600.0, used)


# --- hostile module and job ids -------------------------------------------------------------------

HOSTILE = [
    "..",
    ".",
    "../Deals",
    "Leads/../../oauth",
    "Leads?job_id=2",
    "Leads#fragment",
    "Leads%2F..",
    "Le ads",
    "Leads\r\nX-Injected: 1",
    "Léads",
    "Leads\x00",
    "",
]


def client(api_domain: str = "https://www.zohoapis.com") -> ZohoClient:
    """A client for building URLs; nothing here sends a request."""
    return ZohoClient(None, None, None, api_domain, "v2", MASS_UPDATE)  # type: ignore[arg-type]


def assert_in_place(url: URL, module: str, job_id: str) -> None:
    """`url`, as aiohttp will send it, asks for `module` and `job_id` on Zoho and nothing else."""
    sent = URL(url)  # what aiohttp sends: yarl must not have normalised anything away
    segments = sent.raw_path.split("/")
    assert (sent.scheme, sent.host, sent.fragment) == ("https", "www.zohoapis.com", "")
    assert segments[:3] == ["", "crm", "v2"]
    assert segments[4:] == ["actions", "mass_update"]
    assert unquote(segments[3]) == module
    assert list(sent.query.items()) == [("job_id", job_id)]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_ids_stay_in_their_place(value: str) -> None:
    if value in ("", ".", ".."):  # no quoting survives URL normalisation: refused instead
        with pytest.raises(ValueError, match="cannot be a path segment"):
            client().url(JobSpec(value, "1"))
    else:
        assert_in_place(client().url(JobSpec(value, "1")), value, "1")
    assert_in_place(client().url(JobSpec("Leads", value)), "Leads", value)


@given(st.text(), st.text())
def test_any_ids_stay_in_their_place_or_are_refused(module: str, job_id: str) -> None:
    try:
        url = client().url(JobSpec(module, job_id))
    except ValueError:
        assert module in ("", ".", "..")
        return
    assert_in_place(url, module, job_id)


async def test_an_id_no_url_can_hold_is_rejected_without_a_request(sim: Simulator) -> None:
    async with aiohttp.ClientSession() as session:
        gate = RequestGate(10, 1.0, CreditBudget(None, 0))
        tokens = FixedToken(Secret("sim-token"))
        watcher = ZohoClient(session, gate, tokens, sim.url, "v2", MASS_UPDATE)
        answer = await watcher.poll(JobSpec("..", "1"), lambda: True)
    assert answer is not None
    assert (answer.effect, answer.code) == (Effect.REJECTED, "invalid_module")
    assert sim.requests == []


def config_with_job(module: str, job_id: str) -> str:
    jobs = [{"module": module, "job_id": job_id}]
    auth = {"access_token": "${ZOHO_ACCESS_TOKEN}"}
    return yaml.safe_dump({"zoho": {"auth": auth}, "jobs": jobs})


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("key", ["module", "job_id"])
def test_hostile_ids_are_refused_by_the_config(key: str, value: str) -> None:
    job = {"module": "Leads", "job_id": "1", key: value}
    with pytest.raises(ConfigError) as refused:
        parse_config(config_with_job(**job), "cfg.yaml", ENV)
    assert any(f"jobs[0].{key}:" in problem for problem in refused.value.problems)


@pytest.mark.parametrize("key", ["module", "job_id"])
def test_hostile_ids_from_the_environment_are_refused_too(key: str) -> None:
    job = {"module": "Leads", "job_id": "1", key: "${HOSTILE}"}
    with pytest.raises(ConfigError, match=rf"jobs\[0\]\.{key}:"):
        parse_config(config_with_job(**job), "cfg.yaml", {**ENV, "HOSTILE": "../x?job_id=2"})


@given(st.text(), st.text())
def test_the_config_takes_only_plain_names_and_digits(module: str, job_id: str) -> None:
    try:
        config = parse_config(config_with_job(module, job_id), "cfg.yaml", ENV)
    except ConfigError:
        return
    (spec,) = config.jobs
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", spec.module)
    assert re.fullmatch(r"[0-9]+", spec.job_id)


PASTED = "1000.4f8a1c2e9b7d6f3a0e5c8b2d7a9f1e3c.6b0d2f8e4a1c9b7e3d5f0a2c8e6b4d1f"  # token-shaped


@pytest.mark.parametrize(
    ("where", "document"),
    [
        ("zoho.data_center", {"zoho": {"data_center": PASTED}}),
        ("zoho.api_version", {"zoho": {"api_version": PASTED}}),
        ("polling.interval", {"polling": {"interval": PASTED}}),
        ("polling.rate_limit", {"polling": {"rate_limit": PASTED}}),
        ("polling.schedule", {"polling": {"schedule": PASTED}}),
        ("progress_events", {"progress_events": PASTED}),
        ("jobs[0].job_id", {"jobs": [{"module": "Leads", "job_id": PASTED}]}),
        ("jobs_dir", {"jobs_dir": PASTED}),
        ("zoho", {"zoho": {PASTED: "x"}}),  # pasted where a key goes
    ],
)
def test_a_credential_pasted_under_the_wrong_key_is_not_echoed(
    where: str, document: dict[str, Any]
) -> None:
    """Under a secret key it would be masked; anywhere else no mask knows it, so no message
    quotes a value that long."""
    zoho = {"auth": {"access_token": "${ZOHO_ACCESS_TOKEN}"}, **document.get("zoho", {})}
    with pytest.raises(ConfigError) as refused:
        parse_config(yaml.safe_dump({**document, "zoho": zoho}), "cfg.yaml", ENV)
    problems = refused.value.problems
    assert any(where in problem for problem in problems), problems
    assert not any(PASTED in problem for problem in problems), problems
    assert any("70-character value" in problem for problem in problems), problems


@pytest.mark.parametrize("pasted", [PASTED, "Zm9vYmFyYmF6cXV4/c2VjcmV0LWNsaWVudC1zZWNyZXQ="])
def test_a_token_given_where_its_file_was_expected_is_not_echoed(pasted: str) -> None:
    """A base64 secret holds "/" too: only an absolute path is shown whatever its length."""
    text = "zoho:\n  auth:\n    access_token_file: ${ZOHO_ACCESS_TOKEN}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "cfg.yaml", {**ENV, "ZOHO_ACCESS_TOKEN": pasted})
    (problem,) = refused.value.problems
    assert f"zoho.auth.access_token_file: cannot read a {len(pasted)}-character value" in problem


def test_a_secret_quoted_with_escapes_in_a_message_is_still_masked() -> None:
    secret = "sec\\ret12345"  # a backslash: a message's repr() doubles it
    token = "${ZOHO_ACCESS_TOKEN}"
    text = f"zoho:\n  api_version: {token}\n  auth:\n    access_token: {token}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, "cfg.yaml", {**ENV, "ZOHO_ACCESS_TOKEN": secret})
    problems = " ".join(refused.value.problems)
    assert "zoho.api_version" in problems
    assert "ret12345" not in problems


# --- secrets in output ----------------------------------------------------------------------------

_LEAKY_TESTS = """
from tests.harness import PRINTED, SECRETS

def test_leaks():
    PRINTED.append("token=" + sorted(SECRETS)[0] + "\\n")

def test_keeps_quiet():
    PRINTED.append("nothing to see\\n")
"""


def test_the_leak_check_fails_a_test_that_printed_a_secret(tmp_path: Path) -> None:
    """The check in tests/conftest.py, loaded as a plugin into a run of two small tests."""
    (tmp_path / "test_leaky.py").write_text(_LEAKY_TESTS)  # found from the working directory
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout
    assert "2 passed, 1 error" in done.stdout  # the leaky test passed, then its teardown failed
    assert "ERROR at teardown of test_leaks" in done.stdout
    assert "SECRET LEAK: 1 secret(s) appeared in watcher output" in done.stdout
    assert leaked_secrets([done.stdout, done.stderr], SECRETS) == set()  # not even in the report


def test_leaked_secrets_finds_each_secret_anywhere() -> None:
    printed = ['{"event": "x", "token": "abc-123"}\n', "Traceback: ... xyz\n"]
    assert leaked_secrets(printed, {"abc-123", "xyz", "elsewhere"}) == {"abc-123", "xyz"}


# --- tested elsewhere -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "test"),
    [
        ("tests.test_container", "test_runs_as_a_fixed_non_root_uid_that_owns_the_state_volume"),
        ("tests.test_state", "test_the_file_is_private_and_its_directory_created"),
        ("tests.test_run", "test_the_token_never_reaches_the_output"),
        ("tests.test_http", "test_no_answer_echoes_request_headers"),
    ],
)
def test_the_promises_tested_elsewhere_still_are(module: str, test: str) -> None:
    assert callable(getattr(importlib.import_module(module), test, None))


# --- the HTTP listener ----------------------------------------------------------------------------


def test_the_listener_binds_loopback_by_default() -> None:
    text = yaml.safe_dump({"zoho": {"auth": {"access_token": "x" * 12}}, "http": {"port": 9464}})
    assert parse_config(text, "cfg.yaml", {}).http == HttpSettings("127.0.0.1", 9464)
    assert HttpSettings().host == "127.0.0.1"


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, from /proc/net/tcp and tcp6 (hex)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
async def test_a_running_watcher_listens_on_loopback_and_serves_no_secret(
    tmp_path: Path, sim: Simulator
) -> None:
    sim.add_job(*JOB, ["RUNNING:10,0,0,100"])
    top = {"http": {"port": 0}, "state_path": str(tmp_path / "state.db")}
    config = write_config(
        tmp_path / "watcher.yaml", sim.url, [JOB], auth=refresh_auth(sim.url), top=top
    )
    watcher = await WatcherProcess.start("run", "--config", str(config))
    started = await watcher.wait_event("watcher.started")
    await watcher.wait_event("job.status_changed")
    port = int(started["http"].rpartition(":")[2])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, and nothing on IPv6
    pages = []
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/metrics", "/jobs", "/nope", "/jobs/../../etc", "/?token=1"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                pages.append(f"{response.status} {dict(response.headers)} {await response.text()}")
    watcher.process.terminate()
    assert await watcher.finish() == 0
    assert pages[2].startswith("200")
    assert JOB[1] in pages[2]  # /jobs did show the job
    assert pages[3].startswith("404")
    secrets = {*SECRETS, CLIENT_ID, *sim.issued_tokens}
    assert sim.issued_tokens
    assert leaked_secrets(pages, secrets) == set()


# --- pip-audit in CI ------------------------------------------------------------------------------

_FAKE_PIP_AUDIT = """
import sys
out = sys.argv[sys.argv.index("-o") + 1]
mode = sys.argv[1]
if mode == "outage":
    sys.stderr.write("requests.exceptions.ConnectionError: Max retries exceeded\\n")
    sys.exit(1)
if mode == "crash":
    sys.stderr.write("Traceback ...\\nKeyError: 'x'\\n")
    sys.exit(1)
dependency = {"name": "aiohttp", "version": "3.9.0", "vulns": []}
if mode == "finding":
    vuln = {"id": "PYSEC-2024-24", "fix_versions": ["3.9.2"], "aliases": [], "description": ""}
    dependency["vulns"] = [vuln]
skipped = {"name": "yarl", "skip_reason": "Dependency not found on PyPI and could not be audited"}
with open(out, "w") as report:
    report.write(__import__("json").dumps({"dependencies": [dependency, skipped], "fixes": []}))
sys.exit(1 if mode == "finding" else 0)
"""


@pytest.mark.parametrize(
    ("mode", "code", "said"),
    [
        ("clean", 0, "1 dependencies audited, no known vulnerability"),
        ("finding", 1, "VULNERABLE: aiohttp 3.9.0: PYSEC-2024-24 (fixed in ['3.9.2'])"),
        ("outage", 0, "WARNING: pip-audit could not reach its vulnerability service"),
        ("crash", 1, "pip-audit failed without a report"),
    ],
)
def test_the_audit_step_fails_on_findings_only(
    tmp_path: Path, mode: str, code: int, said: str
) -> None:
    fake = tmp_path / "pip_audit.py"
    fake.write_text(_FAKE_PIP_AUDIT)
    done = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "audit.py"), sys.executable, str(fake), mode],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, said in done.stdout) == (code, True), done.stdout
    if mode == "clean":
        assert "WARNING: 1 not audited (unknown to the vulnerability service): yarl" in done.stdout


def test_ci_runs_the_audit_over_the_locked_dependencies() -> None:
    assert "make audit" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert ".ci/audit.py $(AUDIT_VENV)/bin/pip-audit -r constraints.txt --no-deps" in makefile
    extras = " ".join(line.strip() for line in (ROOT / "pyproject.toml").read_text().splitlines())
    pinned = re.search(r'audit = \["pip-audit==([0-9.]+)"\]', extras)
    assert pinned is not None
    assert "-c constraints.txt pip-audit" in makefile  # the audit venv installs that pin
    assert f"pip-audit=={pinned[1]}" in (ROOT / "constraints.txt").read_text().replace("_", "-")


def test_every_pinned_dependency_is_a_plain_pin() -> None:
    """pip-audit reads constraints.txt as requirements: every line must be NAME==VERSION."""
    lines = [line for line in (ROOT / "constraints.txt").read_text().splitlines() if line]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!-]+", line) for line in lines)


@pytest.mark.parametrize("command", ["run", "status"])
async def test_a_secret_in_a_path_the_start_cannot_use_is_not_echoed(
    tmp_path: Path, sim: Simulator, command: str
) -> None:
    """The message names the state file it could not create: the token pasted into its path is
    masked like everywhere else."""
    blocker = tmp_path / "a-file"
    blocker.touch()
    state = f"{blocker}/${{ZOHO_ACCESS_TOKEN}}/state.db"
    config = write_config(tmp_path / "w.yaml", sim.url, [("Leads", "1")], top={"state_path": state})
    code, stdout, stderr = await run_cli(command, "--config", str(config))
    assert code == 2
    assert ACCESS_TOKEN not in stdout + stderr
    assert f"{blocker}/***" in stderr
