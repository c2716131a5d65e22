"""Which proxy a request goes through: the one the environment names, read as curl reads it.

Corporate networks and many clusters reach the internet only through a proxy named in
HTTPS_PROXY (HTTP_PROXY for an http URL), with NO_PROXY listing the hosts reached directly.
aiohttp reads those only with `trust_env`, which also takes credentials from ~/.netrc that would
clash with our Authorization header, and looks them up in a thread at every request: so they are
read here, once per destination. A loopback destination is never proxied: it is this machine,
and the proxy's loopback is not.
"""

from __future__ import annotations

import urllib.request
from urllib.parse import urlsplit

from watcher.config import is_loopback


def proxy_for(url: str) -> str | None:
    """The proxy URL for requests to `url`, or None to reach it directly."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if is_loopback(host) or urllib.request.proxy_bypass(host):
        return None
    proxy = urllib.request.getproxies().get(parts.scheme.lower())
    if proxy and "://" not in proxy:  # `host:port`, which curl takes as an http proxy
        proxy = f"http://{proxy}"
    return proxy
