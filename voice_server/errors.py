"""One JSON error shape for every HTTP error, the OpenAI one: ``{"error": {"message", "type", "code"}}``.

Clients written for the OpenAI API already parse it, and it never echoes request bodies (which may hold
passwords) back in validation errors.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voice_server.security.keys import DecryptionError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    """Raise from a handler to answer with a JSON error.

    Args:
        status: HTTP status code.
        code: Stable machine-readable code (``invalid_token``, ``not_found``…).
        message: Human-readable explanation; must not contain secrets or another user's data.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """Build the JSON error response."""
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def not_found(what: str = "resource") -> ApiError:
    """404 used for both 'does not exist' and 'belongs to someone else', so ids cannot be probed."""
    return ApiError(404, "not_found", f"{what} not found")


def install_error_handlers(app: FastAPI) -> None:
    """Route ApiError, HTTPException, validation errors and unexpected exceptions through one shape."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only locations and messages: pydantic's "input" would echo the body back, passwords included.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        return error_response(422, "invalid_request", problems or "invalid request")

    async def on_undecryptable(request: Request, exc: Exception) -> JSONResponse:
        # Loud on purpose: a value that does not open was moved, altered or sealed for someone else. Nothing
        # of it is returned; the log names the route, never the value.
        log.error("stored data failed its integrity check on %s %s: %s", request.method, request.url.path, exc)
        return error_response(500, "data_integrity", "stored data failed its integrity check; nothing was returned")

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(500, "internal_error", "internal server error")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(DecryptionError, on_undecryptable)
    app.add_exception_handler(Exception, on_unexpected)
