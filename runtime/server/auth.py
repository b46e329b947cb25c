"""Bearer-key check for the /v1 API (health and metrics stay open for probes and scrapers)."""
from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from qwen35.runtime.server.errors import APIError

PROTECTED_PREFIX = "/v1"


def key_matches(header: str | None, api_key: str) -> bool:
    """Whether an Authorization header carries `Bearer <api_key>` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), api_key.encode("utf-8"))


class ApiKeyMiddleware:
    """ASGI middleware answering 401 to /v1 requests without the right key."""

    def __init__(self, app: ASGIApp, api_key: str):
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        header = headers.get("authorization")
        if key_matches(header, self.api_key):
            await self.app(scope, receive, send)
            return
        message = ("Incorrect API key provided." if header else
                   "Missing API key: send 'Authorization: Bearer <key>'.")
        error = APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await error.response()(scope, receive, send)
