"""Browser-facing protections for a server that usually runs on the user's own machine:
other web sites must not drive it (cross-origin writes, DNS rebinding), and the page
runs under a strict content security policy."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def host_name(host: str) -> str:
    """'localhost:8000' -> 'localhost', '[::1]:8000' -> '[::1]'."""
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class SecurityHeaders:
    """ASGI middleware adding conservative security headers to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestOriginGuard:
    """ASGI middleware. Refuses (403) a write whose Origin header names another site: a
    web page elsewhere may send a form to this server, but not make it work for it.
    With `allowed_hosts`, also refuses (400) requests for any other Host, which stops
    DNS rebinding (another name made to resolve to this machine)."""

    def __init__(self, app, allowed_hosts: tuple[str, ...] | None = None):
        self.app = app
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            await reply(send, 400, f"host '{host}' is not served here")
            return
        origin = headers.get(b"origin")
        if origin is not None and scope["method"] not in SAFE_METHODS:
            if urlsplit(origin.decode("latin-1")).netloc != host:
                await reply(send, 403, "cross-origin requests are not accepted")
                return
        await self.app(scope, receive, send)


async def reply(send, status: int, detail: str) -> None:
    """Sends a JSON error response straight from ASGI middleware (inside SecurityHeaders)."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
