"""A cap on HTTP request bodies, enforced while they stream in.

FastAPI reads a whole JSON body before validating it, so without a cap one request could make the server
buffer gigabytes. Requests announcing a larger ``Content-Length`` are refused at once; bodies without one
(chunked) are counted as they arrive and cut off at the limit. Either way the answer is a 413 in the usual
error shape. WebSocket traffic is limited separately (see `voice_server.api.realtime_routes`).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice_server.errors import error_response


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 ``request_too_large`` to HTTP requests whose body exceeds ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        """Args:
        app: The wrapped app.
        max_bytes: The cap for every request body.
        overrides: Exact paths with a cap of their own (uploads that stream to disk).
        """
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.max_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(scope, receive, send, limit)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, "request_too_large", f"the request body exceeds {limit} bytes")
        await response(scope, receive, send)
