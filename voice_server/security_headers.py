"""Security headers on every HTTP response, and CORS only for origins the operator lists.

The call page (``clients/web``) is plain ES modules, a stylesheet and ``fetch``/WebRTC to its own origin, so
its Content-Security-Policy can be strict: nothing inline, nothing from elsewhere, no framing, no ``<base>``,
no plugins. If an attacker ever gets markup into the page (a memory rendered unescaped, say), the browser
still refuses to run it — and bearer tokens kept in the page's storage stay out of reach.

FastAPI's ``/docs`` page is the one exception: it loads Swagger UI from a CDN and boots it with an inline
script. Its policy allows that CDN and exactly the inline scripts the page was served with (by SHA-256
hash, computed from the response body), never arbitrary inline code.

CORS is closed by default: without ``SOMA_CORS_ORIGINS`` no response carries ``Access-Control-*`` headers,
so other sites' pages cannot read API answers (bearer tokens are not sent automatically, but closed is the
safe default). With it, Starlette's ``CORSMiddleware`` answers for exactly the listed origins (`cors_options`).
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

APP_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "worker-src 'self'",
        "manifest-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SWAGGER_CDN = "https://cdn.jsdelivr.net"
PERMISSIONS_POLICY = "microphone=(self), camera=(), geolocation=(), payment=(), usb=(), display-capture=()"
HSTS = "max-age=31536000"  # one year; not includeSubDomains: other hosts under the name are not Soma's
API_PREFIX = "/v1/"
_DOCS_BODY_LIMIT = 256 * 1024  # the Swagger page is ~1 KB; anything bigger is served without hashing
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL | re.IGNORECASE)


def docs_csp(html: bytes) -> str:
    """The policy for a Swagger UI page: its CDN plus the hashes of the inline scripts in ``html``."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(body).digest()).decode()}'" for body in _INLINE_SCRIPT.findall(html)
    )
    return "; ".join(
        (
            "default-src 'self'",
            f"script-src 'self' {SWAGGER_CDN} {hashes}".rstrip(),
            # Swagger UI's React components set style attributes; styles cannot run code.
            f"style-src 'self' {SWAGGER_CDN} 'unsafe-inline'",
            "img-src 'self' data: https://fastapi.tiangolo.com",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        )
    )


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP response (WebSockets pass through untouched).

    A header the route already set is left as it is. ``Cache-Control: no-store`` goes on ``/v1/`` answers,
    which carry private data and tokens; ``Strict-Transport-Security`` only when serving TLS, since over plain
    HTTP it is meaningless (and behind a TLS proxy the proxy should send it).
    """

    def __init__(self, app: ASGIApp, *, tls: bool, docs_prefix: str | None = "/docs") -> None:
        self.app = app
        self.docs_prefix = docs_prefix
        common = [
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Referrer-Policy", "no-referrer"),
            ("Permissions-Policy", PERMISSIONS_POLICY),
            ("Cross-Origin-Opener-Policy", "same-origin"),
        ]
        if tls:
            common.append(("Strict-Transport-Security", HSTS))
        self.common = common

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if self.docs_prefix is not None and (path == self.docs_prefix or path.startswith(self.docs_prefix + "/")):
            await self._docs(scope, receive, send)
            return
        extra = [("Content-Security-Policy", APP_CSP)]
        if path.startswith(API_PREFIX):
            extra.append(("Cache-Control", "no-store"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._apply(message, [*self.common, *extra])
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _apply(self, message: Message, pairs: list[tuple[str, str]]) -> None:
        headers = MutableHeaders(scope=message)
        for name, value in pairs:
            if name not in headers:
                headers[name] = value

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hold the (small) docs page back until its body is known, then send it with its hashed policy."""
        held: Message | None = None
        chunks: list[bytes] = []

        async def buffering_send(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)  # after the page went out (or not a body): nothing left to decide
                return
            chunks.append(message.get("body", b""))
            size = sum(map(len, chunks))
            if message.get("more_body", False) and size <= _DOCS_BODY_LIMIT:
                return
            body = b"".join(chunks)
            # Too big to be the Swagger page: no hashes, so the strict app policy (no inline script) applies.
            csp = docs_csp(body) if size <= _DOCS_BODY_LIMIT else APP_CSP
            self._apply(held, [*self.common, ("Content-Security-Policy", csp)])
            start, held = held, None
            await send(start)
            await send({**message, "body": body})

        await self.app(scope, receive, buffering_send)


def cors_options(origins: list[str]) -> dict[str, Any]:
    """Keyword arguments for Starlette's `CORSMiddleware` allowing exactly ``origins``.

    Credentials (cookies) are not allowed: Soma authenticates with bearer tokens, which a listed origin's
    page sends explicitly in ``Authorization``. Register the middleware only when ``origins`` is non-empty;
    without it no response carries CORS headers.
    """
    return {
        "allow_origins": origins,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE"],
        "allow_headers": ["Authorization", "Content-Type"],
        "expose_headers": ["Location", "Retry-After"],
        "max_age": 600,
    }
