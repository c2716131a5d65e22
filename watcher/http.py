"""A small read-only HTTP endpoint: health for orchestrators, metrics for Prometheus, job list.

The server only ever shows what its callables return; it holds no configuration, so no route can
reveal a config value, a token or a request header. It binds where it is told (127.0.0.1 by
default in the configuration): exposing it further is the user's explicit choice.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import json
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from watcher.metrics import Metrics


class _OneLine(logging.Handler):
    """Where aiohttp reports a request it could not serve, which would otherwise reach stderr as
    a traceback. One it could not even parse (a port scanner, a header too long) is the client's
    doing, and the client has had its 400: not a word. Anything else is a fault of ours: one
    line on stderr, without the traceback."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)

    def emit(self, record: logging.LogRecord) -> None:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, HttpProcessingError):
            return
        kind = f" ({type(failure).__name__})" if failure is not None else ""
        print(f"zoho-job-watcher: http: {record.getMessage()}{kind}", file=sys.stderr)


_SERVER_LOG = logging.getLogger("watcher.http")
_SERVER_LOG.addHandler(_OneLine())
_SERVER_LOG.propagate = False

# How long stop() lets a request in progress finish; every route answers at once, so this only
# bounds a stuck client. Idle keep-alive connections are closed without waiting.
_SHUTDOWN_TIMEOUT = 0.25
# Connections at once: far more than a scraper and an orchestrator's probes need, far fewer than
# the descriptors a process may hold. Beyond it a connection is closed as it comes, so that
# clients that connect and send nothing cannot use up the descriptors the watcher needs to reach
# Zoho and to re-read its config.
MAX_CONNECTIONS = 64
# Once half of them are taken, one more from an address is refused if that address holds this
# many: one client, however greedy, cannot take every slot and fail the orchestrator's liveness
# probe into a restart (a probe or a scraper holds one), while clients behind one proxy's
# address still have room while the listener does.
PEER_SHARE = 8
# How long a connection lives: then it is closed, so that one held open without a request, or one
# trickling a header a byte at a time, lets go (every route answers in milliseconds, and a
# scraper that keeps its connection alive simply opens another).
CONNECTION_LIFE_S = 30.0
# How long one rendering of /jobs serves: at ten thousand jobs it is 4 MB and a tenth of a second
# of the event loop's time, which a few dozen clients asking at once would otherwise each cost
# (`/healthz` would wait behind them past an orchestrator's probe timeout).
JOBS_FRESH_S = 1.0


class _Counted(asyncio.Protocol):
    """aiohttp's handler of one connection, counted in `opened` from its accept to its end, and
    in `peers` by its client's address once it is made (closed at once past that address's
    share, see PEER_SHARE)."""

    def __init__(
        self, handler: web.RequestHandler, opened: dict[_Counted, float], peers: Counter[str]
    ) -> None:
        self._handler = handler
        self._opened = opened
        self._peers = peers
        self._peer = ""
        self._transport: asyncio.Transport | None = None
        opened[self] = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP listener's
        peer = str(transport.get_extra_info("peername")[0])
        if self._peers[peer] >= PEER_SHARE and len(self._opened) > MAX_CONNECTIONS // 2:
            self._opened.pop(self, None)
            transport.abort()
            return
        self._peers[peer] += 1
        self._peer, self._transport = peer, transport
        self._handler.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._opened.pop(self, None)
        if self._transport is None:  # refused: aiohttp never saw it
            return
        self._peers[self._peer] -= 1
        if not self._peers[self._peer]:
            del self._peers[self._peer]
        self._handler.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._handler.data_received(data)

    def eof_received(self) -> None:
        self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def expire(self) -> None:
        """Close it now, whatever it holds: a client that sends requests and never reads the
        answers would keep a graceful close waiting for its buffer for ever."""
        if self._transport is None:  # never made: nothing to close, only to forget
            self._opened.pop(self, None)
        else:
            self._transport.abort()


class _Refused(asyncio.Protocol):
    """A connection past the limit: closed at once, costing nothing more."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


@dataclass(frozen=True)
class Health:
    """Whether the watcher is doing its job; `reason` is a fixed word, never a secret."""

    ok: bool
    reason: str


class HttpServer:
    """Serves GET (and HEAD) /healthz, /metrics and /jobs between `start` and `stop`."""

    def __init__(
        self,
        host: str,
        port: int,
        metrics: Metrics,
        health: Callable[[], Health],
        jobs: Callable[[], list[dict[str, object]]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self.port = port
        self._metrics = metrics
        self._health = health
        self._jobs = jobs
        self._clock = clock
        self._jobs_body: tuple[float, bytes] | None = None  # (rendered at, body)
        self._runner: web.AppRunner | None = None
        self._listeners: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._opened: dict[_Counted, float] = {}  # the connections open: when each came
        self._peers: Counter[str] = Counter()  # the connections made, per client address

    async def start(self) -> None:
        """Bind and serve; an address in use raises OSError, with nothing left running."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        app.router.add_get("/jobs", self._jobs_page)
        # No access log: stdout is the JSON event stream, and nothing else may write to it.
        runner = web.AppRunner(
            app, access_log=None, logger=_SERVER_LOG, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        assert runner.server is not None
        accept = functools.partial(self._accept, runner.server)
        try:
            self._listeners = await self._listen(accept, await _addresses(self._host))
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._sweeper = asyncio.create_task(self._sweep())

    async def _listen(
        self, accept: Callable[[], asyncio.BaseProtocol], addresses: list[str]
    ) -> list[asyncio.Server]:
        """Listen on each of a name's addresses that this host has, all on one port: `localhost`
        names `::1` in most /etc/hosts, on hosts without IPv6 too, where it cannot be bound."""
        loop = asyncio.get_running_loop()
        listeners: list[asyncio.Server] = []
        unusable: OSError | None = None
        try:
            for address in addresses:
                try:
                    listeners.append(await loop.create_server(accept, address, self.port))
                except OSError as exc:
                    if exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                        raise
                    unusable = exc
                    continue
                self.port = listeners[0].sockets[0].getsockname()[1]  # port 0: the one given
        except BaseException:
            for listener in listeners:
                listener.close()
            raise
        if not listeners:
            assert unusable is not None
            raise unusable
        return listeners

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            assert self._sweeper is not None
            self._sweeper.cancel()
            for listener in self._listeners:
                listener.close()
            await runner.cleanup()

    def _accept(self, server: web.Server) -> asyncio.BaseProtocol:
        """A handler for a new connection; none beyond MAX_CONNECTIONS. Counted from here, not
        from aiohttp's list, which has a connection only once it is made: after the rest of its
        burst was accepted."""
        if len(self._opened) >= MAX_CONNECTIONS:
            return _Refused()
        return _Counted(server(), self._opened, self._peers)

    async def _sweep(self) -> None:
        """Close the connections older than CONNECTION_LIFE_S, a few times in each life."""
        while True:
            await asyncio.sleep(CONNECTION_LIFE_S / 4)
            now = time.monotonic()
            for connection, opened_at in list(self._opened.items()):
                if now - opened_at >= CONNECTION_LIFE_S:
                    connection.expire()

    async def _healthz(self, _: web.Request) -> web.Response:
        health = self._health()
        if health.ok:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "unhealthy", "reason": health.reason}, status=503)

    async def _metrics_page(self, _: web.Request) -> web.Response:
        body, content_type = self._metrics.render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def _jobs_page(self, _: web.Request) -> web.Response:
        now = self._clock()
        if self._jobs_body is None or now - self._jobs_body[0] >= JOBS_FRESH_S:
            self._jobs_body = (now, json.dumps(self._jobs()).encode())
        return web.Response(body=self._jobs_body[1], content_type="application/json")


async def _addresses(host: str) -> list[str]:
    """The addresses to listen on for `host`, as the system's resolver gives them (`/etc/hosts`,
    DNS and whatever else the host's name service knows). Asked from a daemon thread of its own:
    asyncio would ask from its executor, whose threads a stop cannot cancel and the interpreter
    waits for at exit, so a DNS server that does not answer would hold a stopped watcher past
    `docker stop`'s grace. OSError if the name has none."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [host]
    loop = asyncio.get_running_loop()
    found: asyncio.Future[list[str]] = loop.create_future()

    def look_up() -> None:
        outcome: list[str] | OSError
        try:
            answers = socket.getaddrinfo(
                host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )
            outcome = list(dict.fromkeys(str(answer[4][0]) for answer in answers))
        except OSError as exc:
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: the watcher stopped
            loop.call_soon_threadsafe(_settle, found, outcome)

    threading.Thread(target=look_up, name="http-host-lookup", daemon=True).start()
    return await found


def _settle(found: asyncio.Future[list[str]], outcome: list[str] | OSError) -> None:
    if found.done():  # cancelled: a stop came first
        return
    if isinstance(outcome, OSError):
        found.set_exception(outcome)
    else:
        found.set_result(outcome)
