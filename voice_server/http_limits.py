"""Limits on HTTP request bodies, enforced before any route sees them: size, and for JSON, what it can hold.

Size: FastAPI reads a whole JSON body before validating it, so without a cap one request could make the
server buffer gigabytes. Requests announcing a larger ``Content-Length`` are refused at once; bodies without one
(chunked) are counted as they arrive and cut off at the limit. Either way the answer is a 413 in the usual
error shape. WebSocket traffic is limited separately (see `voice_server.api.realtime_routes`).

JSON: Python's parser turns ``"\\ud800"`` (a lone UTF-16 surrogate, escaped or as CESU-8 bytes) into a string
that cannot be encoded back to UTF-8 — so a route fails later, when it writes it to Postgres or a log — and
raises on an integer literal longer than `MAX_JSON_INT_DIGITS` (the interpreter's int-from-text limit). Every
JSON body (``application/json``, ``*+json``, or no ``Content-Type``, which FastAPI also reads as JSON) is
therefore read whole (it is under the size cap), checked by `json_body_problem`, and refused with 400
``invalid_json`` when it holds either, before FastAPI parses it. Upload routes with a cap of their own stream
raw bytes and are not JSON: their bodies pass through unread.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voice_server.errors import error_response

# The most digits `int()` converts from text (CPython's default `sys.get_int_max_str_digits()`).
MAX_JSON_INT_DIGITS: Final = sys.get_int_max_str_digits() or 4300
# Cheap scans that tell whether a body may hold either problem: an escape in the surrogate range, or a run of
# more digits than the limit (anchored at the run's start, so each run is scanned once: linear).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONG_DIGITS: Final = re.compile(rf"(?<![0-9])[0-9]{{{MAX_JSON_INT_DIGITS + 1}}}")


def json_body_problem(body: bytes) -> str | None:
    """What in ``body``, read as JSON, a route could not handle; ``None`` when nothing.

    Refused: bytes that are not UTF-8 (strictly: no encoded surrogates), strings that decode to a lone UTF-16
    surrogate (``"\\ud800"``; a proper pair is fine), integers of more than `MAX_JSON_INT_DIGITS` digits (and,
    in a body parsed here, nesting too deep for the parser). Syntax errors are left to FastAPI's parser (400
    ``invalid_json`` too, from `voice_server.errors`), as is nesting in bodies not parsed here (its parser
    answers 400 to that). A body is parsed here only when a linear regex scan finds a surrogate-range escape or
    a long digit run, so ordinary bodies cost two scans; suspicious ones are judged by the very parser FastAPI
    uses, with no tokenizer of its own to get wrong.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the body is not UTF-8 text (byte {exc.start})"
    if _SURROGATE_ESCAPE.search(text) is None and _LONG_DIGITS.search(text) is None:
        return None
    try:
        value = json.loads(text)
        # Lone surrogates survive parsing and fail only here, where the value is encoded back to UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except json.JSONDecodeError:
        return None
    except UnicodeEncodeError:
        return "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text"
    except ValueError:  # the one other ValueError the parser raises: from int()
        return f"an integer has more than {MAX_JSON_INT_DIGITS} digits"
    except RecursionError:
        return "the JSON is nested too deeply"
    return None


def _is_json(content_types: list[bytes]) -> bool:
    """Bodies FastAPI may parse as JSON: no type, ``application/json``, ``application/*+json``. Every
    ``Content-Type`` header counts (a second one must not hide the first, which Starlette reads); a wider net
    (any type naming json) only means a few more bodies are checked."""
    return not content_types or any(b"json" in value.lower() for value in content_types)


def _declared_length(value: bytes | None) -> int | None:
    """``Content-Length`` as a number; ``None`` when absent or not digits (the HTTP parser refuses those).

    The parser accepts any number of leading zeros, and ``int()`` stops at `MAX_JSON_INT_DIGITS` digits: a
    value of more than 18 significant digits is simply larger than any limit.
    """
    if value is None or not value.isdigit():
        return None
    digits = value.lstrip(b"0")
    return int(digits or b"0") if len(digits) <= 18 else sys.maxsize


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Answer 413 ``request_too_large`` to HTTP requests whose body exceeds ``max_bytes``, and 400
    ``invalid_json`` to JSON bodies `json_body_problem` refuses."""

    def __init__(self, app: ASGIApp, max_bytes: int, overrides: dict[str, int] | None = None) -> None:
        """Args:
        app: The wrapped app.
        max_bytes: The cap for every request body.
        overrides: Exact paths with a cap of their own (uploads that stream to disk; not JSON).
        """
        self.app = app
        self.max_bytes = max_bytes
        self.overrides = overrides or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.max_bytes)
        headers = scope.get("headers", [])
        declared = _declared_length(dict(headers).get(b"content-length"))
        if declared is not None and declared > limit:
            await self._refuse(scope, receive, send, limit)
            return
        if scope["path"] not in self.overrides and _is_json([v for k, v in headers if k == b"content-type"]):
            await self._checked_json(scope, receive, send, limit)
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

    async def _checked_json(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        """Read the whole body (at most ``limit`` bytes), check it, then hand it to the app in one message."""
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before sending it all: nobody to answer
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > limit:
                await self._refuse(scope, receive, send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_body_problem(body)
        if problem is not None:
            await error_response(400, "invalid_json", f"invalid JSON body: {problem}")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:  # after the body, the app only waits for the disconnect
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = error_response(413, "request_too_large", f"the request body exceeds {limit} bytes")
        await response(scope, receive, send)
