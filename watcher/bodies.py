"""Answer bodies, read with a cap.

A status or token answer from Zoho is a few hundred bytes. A server that sends megabytes, or a
compressed body that unpacks to gigabytes, must cost neither the watcher's memory (a container's
limit would kill it) nor the event loop's time (a SIGTERM would wait behind the unpacking).
"""

from __future__ import annotations

import aiohttp

MAX_BODY_BYTES = 1 << 20  # a thousand times the largest answer Zoho sends


async def read_capped(response: aiohttp.ClientResponse) -> bytes | None:
    """The body as sent (unpacked), or None past MAX_BODY_BYTES: the connection is then closed
    rather than read to its end."""
    limit, length = MAX_BODY_BYTES, response.content_length
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
