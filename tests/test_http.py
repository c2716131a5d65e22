"""The HTTP endpoint and the metrics it serves, against a real server on a loopback port."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from watcher import http
from watcher.credits import REMAINING_TTL_S
from watcher.http import Health, HttpServer
from watcher.metrics import JOB_STATUSES, Metrics

SECRET = "tok-must-never-echo"
HEALTHY = Health(True, "ok")


@dataclass
class Fake:
    """What the watcher would hand the server: its metrics, its health, its job list."""

    metrics: Metrics = field(default_factory=Metrics)
    health: Health = HEALTHY
    jobs: list[dict[str, object]] = field(default_factory=list)
    now: float = 0.0  # the server's clock
    jobs_asked: int = 0

    def server(self, port: int = 0) -> HttpServer:
        return HttpServer(
            "127.0.0.1", port, self.metrics, lambda: self.health, self.job_list, lambda: self.now
        )

    def job_list(self) -> list[dict[str, object]]:
        self.jobs_asked += 1
        return self.jobs


Start = Callable[[Fake], Awaitable[str]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Starts servers on free ports (their base URL); stops whatever is left at the end."""
    servers: list[HttpServer] = []

    async def starter(fake: Fake) -> str:
        server = fake.server()
        await server.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.port}"

    yield starter
    for server in servers:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


CREDITS = "zoho_watcher_api_credits_remaining"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[set[str], Samples]:
    """(family names with their type, every sample by name and labels), as Prometheus reads it."""
    families = list(text_string_to_metric_families(text))
    kinds = {f"{family.name}:{family.type}" for family in families}
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    return kinds, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def scrape(client: aiohttp.ClientSession, url: str) -> Samples:
    async with client.get(f"{url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await response.text())[1]


async def test_healthz_follows_the_health_callable_on_every_request(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake()
    url = await start(fake)
    async with client.get(f"{url}/healthz") as response:
        assert (response.status, await response.json()) == (200, {"status": "ok"})
    fake.health = Health(False, "scheduler_stuck")
    async with client.get(f"{url}/healthz") as response:
        unhealthy = {"status": "unhealthy", "reason": "scheduler_stuck"}
        assert (response.status, await response.json()) == (503, unhealthy)


async def test_head_answers_like_get_without_a_body(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake(health=Health(False, "auth_failed"))
    url = await start(fake)
    for path in ("/healthz", "/metrics", "/jobs"):
        async with client.head(f"{url}{path}") as response:
            get_status = 503 if path == "/healthz" else 200
            assert response.status == get_status, path
            assert await response.read() == b""


async def test_metrics_page_shows_every_family_with_the_values_recorded(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake()
    metrics = fake.metrics
    metrics.set_job_counts({"RUNNING": 3, "COMPLETED": 2, "unknown": 1})
    metrics.poll_done("observed", 0.02)
    metrics.poll_done("observed", 3.0)
    metrics.poll_done("rate_limited", None)
    metrics.rate_limit_waited(1.5)
    metrics.rate_limit_waited(0.25)
    metrics.token_refreshed("ok")
    metrics.token_refreshed("failed")
    metrics.token_refreshed("failed")
    metrics.config_reloaded("invalid")
    metrics.credits_remaining(4200)
    url = await start(fake)
    async with client.get(f"{url}/metrics") as response:
        kinds, samples = parse(await response.text())

    assert kinds >= {
        "zoho_watcher_jobs:gauge",
        "zoho_watcher_polls:counter",
        "zoho_watcher_request_duration_seconds:histogram",
        "zoho_watcher_rate_limit_wait_seconds:counter",
        "zoho_watcher_token_refreshes:counter",
        "zoho_watcher_config_reloads:counter",
        "zoho_watcher_api_credits_remaining:gauge",
    }
    assert not [kind for kind in kinds if "_created:" in kind]  # no series nobody asked for
    jobs = {s: value(samples, "zoho_watcher_jobs", status=s) for s in JOB_STATUSES}
    assert jobs == {s: {"RUNNING": 3, "COMPLETED": 2, "unknown": 1}.get(s, 0) for s in JOB_STATUSES}
    assert value(samples, "zoho_watcher_polls_total", result="observed") == 2
    assert value(samples, "zoho_watcher_polls_total", result="rate_limited") == 1
    assert value(samples, "zoho_watcher_polls_total", result="auth") == 0
    histogram = "zoho_watcher_request_duration_seconds"
    assert value(samples, f"{histogram}_count") == 2  # the poll that sent nothing is not timed
    assert value(samples, f"{histogram}_sum") == pytest.approx(3.02)
    assert value(samples, f"{histogram}_bucket", le="0.005") == 0
    assert value(samples, f"{histogram}_bucket", le="0.025") == 1
    assert value(samples, f"{histogram}_bucket", le="5.0") == 2
    assert value(samples, f"{histogram}_bucket", le="30.0") == 2
    assert value(samples, "zoho_watcher_rate_limit_wait_seconds_total") == 1.75
    assert value(samples, "zoho_watcher_token_refreshes_total", result="ok") == 1
    assert value(samples, "zoho_watcher_token_refreshes_total", result="failed") == 2
    assert value(samples, "zoho_watcher_config_reloads_total", result="invalid") == 1
    assert value(samples, "zoho_watcher_config_reloads_total", result="ok") == 0
    assert value(samples, "zoho_watcher_api_credits_remaining") == 4200


async def test_every_known_series_exists_before_anything_happens(
    start: Start, client: aiohttp.ClientSession
) -> None:
    samples = await scrape(client, await start(Fake()))
    for status in JOB_STATUSES:
        assert value(samples, "zoho_watcher_jobs", status=status) == 0
    for result in ("observed", "not_found", "rejected", "auth", "rate_limited", "transient"):
        assert value(samples, "zoho_watcher_polls_total", result=result) == 0
    for result in ("ok", "failed"):
        assert value(samples, "zoho_watcher_token_refreshes_total", result=result) == 0
    for result in ("ok", "invalid"):
        assert value(samples, "zoho_watcher_config_reloads_total", result=result) == 0
    # Unknown, not "none left": a 0 here would fire any low-credits alert at startup.
    assert math.isnan(value(samples, "zoho_watcher_api_credits_remaining"))


def test_a_credits_reading_an_hour_old_is_no_longer_reported() -> None:
    """Zoho stops sending the header once usage falls back: the last low number must not stay."""
    now = [0.0]
    metrics = Metrics(clock=lambda: now[0])
    metrics.credits_remaining(5)
    now[0] = REMAINING_TTL_S - 1.0
    assert value(parse(metrics.render()[0].decode())[1], CREDITS) == 5
    now[0] = REMAINING_TTL_S
    assert math.isnan(value(parse(metrics.render()[0].decode())[1], CREDITS))


async def test_job_counts_replace_the_previous_ones(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake()
    url = await start(fake)
    fake.metrics.set_job_counts({"RUNNING": 2, "EXPLODED": 1})
    fake.metrics.set_job_counts({"COMPLETED": 3})
    samples = await scrape(client, url)
    assert value(samples, "zoho_watcher_jobs", status="COMPLETED") == 3
    assert value(samples, "zoho_watcher_jobs", status="RUNNING") == 0
    assert value(samples, "zoho_watcher_jobs", status="EXPLODED") == 0  # kept, not left stale


async def test_jobs_page_is_the_json_of_the_jobs_callable(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake()
    url = await start(fake)
    async with client.get(f"{url}/jobs") as response:
        assert (response.status, await response.json()) == (200, [])
    fake.jobs = [
        {"module": "Leads", "job_id": "554023000000506003", "status": "RUNNING", "polls": 4},
        {"module": "Deals", "job_id": "554023000000506011", "status": None, "polls": 0},
    ]
    fake.now += http.JOBS_FRESH_S
    async with client.get(f"{url}/jobs") as response:
        assert response.content_type == "application/json"
        assert await response.json() == fake.jobs


async def test_one_rendering_of_the_jobs_serves_every_request_for_a_second(
    start: Start, client: aiohttp.ClientSession
) -> None:
    """Ten thousand jobs are 4 MB and a tenth of a second of the event loop's time to render:
    a burst of clients must cost that once, not each, or `/healthz` waits behind them."""
    fake = Fake(jobs=[{"module": "Leads", "job_id": "1", "polls": 1}])
    url = await start(fake)
    bodies = await asyncio.gather(*(read(client, f"{url}/jobs") for _ in range(20)))
    fake.jobs = [{"module": "Leads", "job_id": "1", "polls": 2}]
    fake.now += http.JOBS_FRESH_S - 0.01
    bodies.append(await read(client, f"{url}/jobs"))
    first = [{"module": "Leads", "job_id": "1", "polls": 1}]
    assert (fake.jobs_asked, [body for body in bodies if body != first]) == (1, [])
    fake.now += 0.01
    assert await read(client, f"{url}/jobs") == fake.jobs
    assert fake.jobs_asked == 2


async def read(client: aiohttp.ClientSession, url: str) -> object:
    async with client.get(url) as response:
        return await response.json()


@pytest.mark.parametrize("path", ["/", "/healthz/", "/metricsx", "/jobs/554023000000506003"])
async def test_unknown_paths_are_not_found(
    start: Start, client: aiohttp.ClientSession, path: str
) -> None:
    url = await start(Fake())
    async with client.get(f"{url}{path}") as response:
        assert response.status == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
async def test_only_get_and_head_are_allowed(
    start: Start, client: aiohttp.ClientSession, method: str
) -> None:
    url = await start(Fake())
    async with client.request(method, f"{url}/jobs") as response:
        assert response.status == 405
        assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}


async def test_no_answer_echoes_request_headers(
    start: Start, client: aiohttp.ClientSession
) -> None:
    url = await start(Fake(health=Health(False, "auth_failed")))
    headers = {"Authorization": f"Zoho-oauthtoken {SECRET}", "X-Probe": SECRET}
    for method, path in [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/jobs"),
                         ("GET", "/nowhere"), ("POST", "/jobs")]:  # fmt: skip
        async with client.request(method, f"{url}{path}", headers=headers) as response:
            body = await response.text()
            assert SECRET not in body + str(response.headers), (method, path)


async def test_a_host_name_listens_on_its_addresses(client: aiohttp.ClientSession) -> None:
    fake = Fake()
    server = HttpServer("localhost", 0, fake.metrics, lambda: fake.health, fake.job_list)
    await server.start()
    try:
        async with client.get(f"http://localhost:{server.port}/healthz") as response:
            assert response.status == 200
    finally:
        await server.stop()


LOCALHOST_WITHOUT_IPV6 = """
import asyncio
from watcher.http import Health, HttpServer
from watcher.metrics import Metrics

async def main() -> None:
    server = HttpServer("localhost", 0, Metrics(), lambda: Health(True, "ok"), lambda: [])
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")
    print((await reader.readline()).decode().strip())
    writer.close()
    await server.stop()

asyncio.run(main())
"""


@pytest.mark.skipif(
    subprocess.run(["unshare", "-rnm", "true"], capture_output=True, check=False).returncode,
    reason="needs unshare -rnm (user, network and mount namespaces)",
)
def test_localhost_listens_on_the_addresses_the_host_has(tmp_path: Path) -> None:
    """Most /etc/hosts name ::1 localhost, also on hosts (and pods) without IPv6, where ::1
    cannot be bound: listening on 127.0.0.1 alone is what `localhost` means there."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    without_ipv6 = (
        "ip link set lo up && echo 1 > /proc/sys/net/ipv6/conf/lo/disable_ipv6"
        ' && mount --bind "$1" /etc/hosts && shift && exec "$@"'
    )
    namespaced = ("unshare", "-rnm", "sh", "-c", without_ipv6, "sh", str(hosts))
    ran = subprocess.run(
        [*namespaced, sys.executable, "-c", LOCALHOST_WITHOUT_IPV6],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (ran.returncode, ran.stdout.strip(), ran.stderr) == (0, "HTTP/1.0 200 OK", "")


async def test_a_port_in_use_raises_oserror_and_leaves_the_other_server_serving(
    start: Start, client: aiohttp.ClientSession
) -> None:
    fake = Fake()
    url = await start(fake)
    taken = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError):  # noqa: PT011 - the errno differs by platform
        await fake.server(taken).start()
    async with client.get(f"{url}/healthz") as response:
        assert response.status == 200


async def test_stop_is_prompt_with_an_idle_keep_alive_client() -> None:
    server = Fake().server()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: watcher\r\n\r\n")
    answer = await reader.readuntil(b'{"status": "ok"}')
    assert b"Connection: close" not in answer  # the connection really is kept alive
    async with asyncio.timeout(1):
        await server.stop()
        assert await reader.read() == b""  # and the server closed it
    writer.close()
    with pytest.raises(OSError):  # noqa: PT011 - connection refused: nothing listens any more
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_stop_is_prompt_with_a_client_stuck_mid_request() -> None:
    server = Fake().server()
    await server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    # The answer comes at once, but the connection stays busy waiting for the promised body.
    writer.write(b"GET /jobs HTTP/1.1\r\nHost: watcher\r\nContent-Length: 100\r\n\r\n{")
    await reader.readuntil(b"[]")
    async with asyncio.timeout(1):
        await server.stop()
    writer.close()


async def test_two_metrics_objects_count_separately(
    start: Start, client: aiohttp.ClientSession
) -> None:
    first, second = Fake(), Fake()
    first.metrics.poll_done("observed", 0.1)
    first.metrics.credits_remaining(10)
    second.metrics.poll_done("transient", None)
    first_samples = await scrape(client, await start(first))
    second_samples = await scrape(client, await start(second))
    assert value(first_samples, "zoho_watcher_polls_total", result="observed") == 1
    assert value(first_samples, "zoho_watcher_polls_total", result="transient") == 0
    assert value(second_samples, "zoho_watcher_polls_total", result="observed") == 0
    assert value(second_samples, "zoho_watcher_polls_total", result="transient") == 1
    assert math.isnan(value(second_samples, "zoho_watcher_api_credits_remaining"))
    global_names = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "zoho_watcher" not in global_names


def test_without_a_port_neither_the_server_nor_prometheus_is_imported() -> None:
    """Both cost start-up time and memory that a watcher without `http.port` does not need."""
    program = (
        "import sys, watcher.cli, watcher.service\n"
        "print(sorted(m for m in ('aiohttp.web', 'prometheus_client') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True)
    assert done.stdout.strip() == "[]", done.stderr


async def test_a_fault_of_ours_is_one_line_on_stderr_and_a_bad_request_none(
    client: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = Fake()
    server = HttpServer("127.0.0.1", 0, fake.metrics, lambda: fake.health, lambda: {}["x"])
    await server.start()
    try:
        async with client.get(f"http://127.0.0.1:{server.port}/jobs") as response:
            assert response.status == 500
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        assert b" 400 " in await reader.readline()
        writer.close()
    finally:
        await server.stop()
    printed = capsys.readouterr()
    assert printed.out == ""
    assert printed.err.splitlines() == [
        "zoho-job-watcher: http: Error handling request from 127.0.0.1 (KeyError)"
    ]


async def _connect(
    base: str, source: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the server at `base`, from the loopback address `source` if given."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    local = None if source is None else (source, 0)
    return await asyncio.open_connection(host, int(port), local_addr=local)


def _peers(count: int) -> list[str]:
    """`count` loopback addresses other than 127.0.0.1 (Linux answers all of 127/8)."""
    return [f"127.0.0.{n}" for n in range(2, 2 + count)]


async def test_connections_past_the_limit_are_closed_and_the_rest_still_served(
    start: Start, client: aiohttp.ClientSession
) -> None:
    """Clients that connect and send nothing must not use up the descriptors the watcher needs
    to reach Zoho and to re-read its config."""
    base = await start(Fake())
    peers = _peers(http.MAX_CONNECTIONS // http.PEER_SHARE)
    idle = [await _connect(base, peer) for peer in peers for _ in range(http.PEER_SHARE)]
    reader, writer = await _connect(base)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed as it came
    writer.close()
    for _, held in idle[:2]:
        held.close()
        await held.wait_closed()
    async with client.get(f"{base}/healthz") as response:
        assert response.status == 200
    for _, held in idle[2:]:
        held.close()


async def test_one_client_holding_its_share_of_connections_does_not_fail_the_probes(
    start: Start, client: aiohttp.ClientSession
) -> None:
    """A greedy client elsewhere in the cluster (a connection pool, a scanner) must not be able
    to take every slot: the liveness probe would fail, and the orchestrator restart the pod."""
    base = await start(Fake())
    (greedy,) = _peers(1)
    held = [await _connect(base, greedy) for _ in range(http.MAX_CONNECTIONS // 2)]
    reader, writer = await _connect(base, greedy)
    assert await asyncio.wait_for(reader.read(), 5) == b""  # half taken, by it: closed at once
    writer.close()
    done, first = held.pop()  # one ends: the server closes it, so it has let go when we hear
    first.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(done.read(), 5)).startswith(b"HTTP/1.1 200")
    first.close()
    reader, writer = await _connect(base, greedy)  # the slot it freed is its own again
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    async with client.get(f"{base}/healthz") as response:  # the probe, from 127.0.0.1
        assert response.status == 200
    for _, other in [*held, (reader, writer)]:
        other.close()


async def test_a_client_that_let_go_of_its_connections_has_its_share_again(
    start: Start,
) -> None:
    base = await start(Fake())
    returning, *others = _peers(6)
    for _ in range(http.PEER_SHARE):  # each one ended by the server, so it has let go
        reader, writer = await _connect(base, returning)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 200")
        writer.close()
    busy = [await _connect(base, peer) for peer in others for _ in range(http.PEER_SHARE - 1)]
    assert len(busy) > http.MAX_CONNECTIONS // 2
    reader, writer = await _connect(base, returning)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
    for _, other in [*busy, (reader, writer)]:
        other.close()


async def test_a_connection_that_sends_nothing_is_closed_after_its_life(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "CONNECTION_LIFE_S", 0.2)
    reader, writer = await _connect(await start(Fake()))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # a header, never finished
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_a_burst_of_connections_is_held_to_the_limit_too(start: Start) -> None:
    """aiohttp lists a connection only once it is made, after the rest of its burst: counted
    there alone, a burst passed the limit by the whole listen backlog."""
    base = await start(Fake())
    burst = await asyncio.gather(*(_connect(base) for _ in range(120)))
    for _, writer in burst:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = await asyncio.gather(*(asyncio.wait_for(r.readline(), 5) for r, _ in burst))
    served = sum(answer.startswith(b"HTTP/1.1 200") for answer in answers)
    assert 1 <= served <= http.MAX_CONNECTIONS
    assert served + answers.count(b"") == len(burst)  # the rest closed unserved
    for _, writer in burst:
        writer.close()


async def test_clients_that_never_read_their_answers_do_not_hold_the_probes_off(
    monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession
) -> None:
    """A graceful close waits for the answers to be read, for ever: such a connection must go
    at the end of its life anyway, or MAX_CONNECTIONS of them would refuse every probe."""
    monkeypatch.setattr(http, "CONNECTION_LIFE_S", 0.4)
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 2)
    # Answers far larger than the socket buffers between us: the rest waits in the server.
    jobs: list[dict[str, object]] = [{"job_id": str(n), "pad": "x" * 150} for n in range(2000)]
    server = Fake(jobs=jobs).server()
    await server.start()
    stuck = [socket.socket() for _ in range(2)]
    for sock in stuck:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # full while we do not read
        sock.connect(("127.0.0.1", server.port))
        sock.send(b"GET /jobs HTTP/1.1\r\nHost: x\r\n\r\n" * 30)  # pipelined, never read
    try:
        assert await asyncio.wait_for(_probed(client, server.port), 10) == 200
    finally:
        for sock in stuck:
            sock.close()
        await server.stop()


async def _probed(client: aiohttp.ClientSession, port: int) -> int:
    """/healthz's status once a probe gets through (one refused is closed unanswered)."""
    while True:
        try:
            async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                return response.status
        except aiohttp.ServerDisconnectedError:
            await asyncio.sleep(0.1)  # refused: the next probe, as an orchestrator's would


async def test_connections_one_after_another_are_never_refused(start: Start) -> None:
    base = await start(Fake())
    refused = 0
    for _ in range(2 * http.MAX_CONNECTIONS):  # one at a time: never more than one open
        reader, writer = await _connect(base)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        refused += not (await reader.readline()).startswith(b"HTTP/1.1 200")
        writer.close()
        await writer.wait_closed()
    assert refused == 0
