"""The environment's proxy is used where curl would use it, and never for this machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.harness import WatcherProcess, refresh_auth, write_config
from watcher.proxy import proxy_for

PROXY = "http://proxy.corp.example:3128"


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the tests has set."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_proxy_the_environment_names_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    assert proxy_for("https://www.zohoapis.eu") is None
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    assert proxy_for("https://www.zohoapis.eu") == PROXY
    assert proxy_for("https://accounts.zoho.eu/oauth/v2/token") == PROXY


def test_a_proxy_named_without_a_scheme_is_an_http_proxy_as_for_curl(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp.example:3128")
    assert proxy_for("https://www.zohoapis.eu") == PROXY


def test_no_proxy_and_this_machine_are_reached_directly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", PROXY)
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", ".zoho.eu")
    assert proxy_for("https://accounts.zoho.eu/oauth/v2/token") is None
    assert proxy_for("https://www.zohoapis.eu") == PROXY
    for url in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert proxy_for(url) is None, url  # the proxy's loopback is not this machine


@pytest.mark.parametrize(
    ("host", "auth", "failure"),
    [
        ("zoho.example.invalid", None, "job.poll_failed"),
        ("accounts.example.invalid", "https://accounts.example.invalid", "auth.refresh_failed"),
    ],
)
async def test_requests_to_zoho_go_through_the_proxy_the_environment_names(
    tmp_path: Path, host: str, auth: str | None, failure: str
) -> None:
    """The proxy here refuses every tunnel: what matters is that it was asked, for Zoho."""
    asked: list[bytes] = []

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        asked.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
    port = proxy.sockets[0].getsockname()[1]
    jobs = [("Leads", "1")]
    credentials = refresh_auth(auth) if auth is not None else None
    config = write_config(
        tmp_path / "w.yaml", "https://zoho.example.invalid", jobs, auth=credentials
    )
    env = {"HTTPS_PROXY": f"http://127.0.0.1:{port}", "NO_PROXY": ""}
    async with proxy:
        watcher = await WatcherProcess.start("run", "--config", str(config), env=env)
        failed = await watcher.wait_event(failure)
        watcher.process.terminate()
        assert await watcher.finish() == 0
    assert asked[0] == f"CONNECT {host}:443 HTTP/1.1".encode()
    assert failed["error"] == "proxy_error"
