"""Putting a step on the wire: routing a request to its job, answering late, cutting a body short,
or resetting the connection the way a dropped one looks to the client."""

from __future__ import annotations

import asyncio
import re
import socket
import struct

from aiohttp import web

from watcher.simulator.steps import FIXED, Step

_API_PATH = re.compile(r"/crm/v(?:[2-8]|2\.1)/([^/]+)/actions/mass_update")  # Zoho's versions


def route(request: web.Request) -> tuple[str | None, str | None, Step | None]:
    """(module, job_id, Zoho's refusal if the request is not a well-formed status call)."""
    match = _API_PATH.fullmatch(request.path)
    if match is None:
        return None, None, FIXED["INVALID_URL_PATTERN"]
    module, job_id = match[1], request.query.get("job_id") or None
    if request.method != "GET":
        return module, job_id, FIXED["INVALID_REQUEST_METHOD"]
    if job_id is None:
        return module, None, FIXED["MANDATORY_NOT_FOUND"]
    return module, job_id, None


async def perform(request: web.Request, step: Step, credits_left: int | None) -> web.StreamResponse:
    if step.delay:
        await asyncio.sleep(step.delay)
    if step.action != "answer":
        if step.action == "reset":
            _reset(request)
        elif step.action == "truncate":
            await _truncate(request, step)
        await asyncio.Event().wait()  # never set: only the client leaving or stop() ends this
    headers = {"Retry-After": step.retry_after} if step.retry_after else {}
    if credits_left is not None:
        headers["X-API-CREDITS-REMAINING"] = str(credits_left)
    if step.encoding is not None:
        headers["Content-Encoding"] = step.encoding
    if step.location is not None:
        headers["Location"] = step.location
    body = step.body or None
    response = web.Response(
        status=step.status, body=body, content_type=step.content_type, headers=headers
    )
    return await send(request, response)


async def send(request: web.Request, response: web.Response) -> web.Response:
    """Write the answer before returning, so a record's `done` means "the client has it"."""
    await response.prepare(request)
    await response.write_eof()
    return response


async def _truncate(request: web.Request, step: Step) -> None:
    """Promise the whole body, send half of it, then close: the answer ends early, cleanly."""
    response = web.StreamResponse(status=step.status, headers={"Content-Type": "application/json"})
    response.content_length = len(step.body)
    await response.prepare(request)
    await response.write(step.body[: len(step.body) // 2])
    if request.transport is not None:
        request.transport.close()


def _reset(request: web.Request) -> None:
    """Close with a TCP RST (linger 0), the way a dropped connection looks to the client."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
