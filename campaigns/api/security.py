"""Security headers on every response: the dashboard's, the API's and /docs'.

A pure ASGI middleware (no BaseHTTPMiddleware: streamed exports and uploads pass through
untouched). A header a route set itself is left as it is.

- ``Content-Security-Policy: default-src 'self'; frame-ancestors 'none'``: the dashboard and
  /docs load scripts, styles and data from this origin only, nothing inline, no CDN; no page
  may be framed (clickjacking on the admin buttons).
- ``X-Frame-Options: DENY`` says the same to browsers that predate frame-ancestors.
- ``X-Content-Type-Options: nosniff``: an export or error body is never run as a script.
- ``Referrer-Policy: no-referrer``: no URL of ours travels to another site in ``Referer``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(n, v) for n, v in SECURITY_HEADERS if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
