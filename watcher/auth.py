"""Where the access token for each request comes from."""

from __future__ import annotations

from typing import Protocol

from watcher.config import Secret


class TokenSource(Protocol):
    """Gives the token to send and hears when Zoho refused one."""

    async def token(self) -> str: ...

    async def rejected(self, token: str) -> bool:
        """Zoho refused `token`; True if a different token is now worth one retry."""
        ...


class FixedToken:
    """A token given in the configuration: nothing can replace it once Zoho refuses it."""

    def __init__(self, secret: Secret) -> None:
        self._secret = secret

    async def token(self) -> str:
        return self._secret.reveal()

    async def rejected(self, token: str) -> bool:
        return False
