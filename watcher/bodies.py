"""Answer bodies, read with a cap.

A status or token answer from Zoho is a few hundred bytes. A server that sends megabytes, or a
compressed body that unpacks to gigabytes, must cost neither the watcher's memory (a container's
limit would kill it) nor the event loop's time (a SIGTERM would wait behind the unpacking).
"""

from __future__ import annotations

import aiohttp

MAX_BODY_BYTES = 1 << 20  # a thousand times the largest answer Zoho sends
TOO_LARGE = "response_too_large"  # the error code of an answer past the cap


async def read_capped(
    response: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES
) -> bytes | None:
    """The body as sent (unpacked), or None past `limit` bytes: the connection is then closed
    rather than read to its end."""
    length = response.content_length
    if length is not None and length > limit:
        response.close()
        return None
    if length is not None and "Content-Encoding" not in response.headers:  # as long as it says
        return await response.read()
    body = bytearray()
    while chunk := await response.content.read(limit + 1 - len(body)):
        body += chunk
        if len(body) > limit:
            response.close()
            return None
    return bytes(body)
