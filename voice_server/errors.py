"""One JSON error shape for every HTTP error, the OpenAI one:
``{"error": {"message", "type", "param", "code"}}``.

Clients written for the OpenAI API already parse it (the ``openai`` SDK raises ``BadRequestError`` for a 400
and exposes the body as ``exc.body``). ``param`` names the request field at fault (``temperature``,
``messages[2].role``) or is ``null``. Every invalid request is a 400 ``invalid_request_error``, whether a route
or FastAPI's validation found it — never a 422, which OpenAI does not use — and validation errors never echo
the request body (which may hold passwords) back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from voice_server.integrity import DataIntegrityError

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
        param: The request field at fault, in OpenAI's notation (``messages[0].content``); ``None`` when
            the error is not about one field.
    """

    def __init__(self, status: int, code: str, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, param: str | None = None
) -> JSONResponse:
    """Build the JSON error response; ``param`` is always present in the body (``null`` when not given)."""
    error = {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def not_found(what: str = "resource") -> ApiError:
    """404 used for both 'does not exist' and 'belongs to someone else', so ids cannot be probed."""
    return ApiError(404, "not_found", f"{what} not found")


# ------------------------------------------------------------------------------------------ validation

# Pydantic error types → OpenAI's codes for the same mistakes. Our own `PydanticCustomError` types are OpenAI
# codes already and map to themselves. Anything else is the generic ``invalid_request``.
_CODES: Final = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "literal_error": "invalid_value",
    "enum": "invalid_value",
    "value_error": "invalid_value",
    "string_too_short": "string_below_min_length",
    "string_too_long": "string_above_max_length",
    "too_long": "array_above_max_length",
    "json_invalid": "invalid_json",
    "unsupported_value": "unsupported_value",
}
_BELOW_MIN: Final = frozenset({"greater_than", "greater_than_equal"})
_ABOVE_MAX: Final = frozenset({"less_than", "less_than_equal"})
# What FastAPI puts first in a location: where in the request the value came from, not part of its name.
_SOURCES: Final = frozenset({"body", "query", "path", "header", "cookie"})
# Names pydantic gives the members of a union it tried (``str``, ``list[TextPart]``,
# ``function-after[...]``): it puts them in the location, but a client never wrote them.
_PLAIN_TYPES: Final = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "none", "null"})


def _is_union_member(part: str) -> bool:
    return part in _PLAIN_TYPES or "[" in part or part.startswith(("function-", "constrained-"))


def validation_param(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as the OpenAI ``param`` a client sent: ``("body", "messages", 2, "role")`` →
    ``messages[2].role``; ``None`` for the body as a whole. Union member names are left out."""
    param = ""
    for part in loc[1:] if loc and loc[0] in _SOURCES else loc:
        if isinstance(part, int):
            param += f"[{part}]"
        elif not _is_union_member(part):
            param += f".{part}" if param else part
    return param or None


def _code(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in _CODES:
        return _CODES[kind]
    if kind == "too_short":
        return "empty_array" if (error.get("ctx") or {}).get("actual_length") == 0 else "array_below_min_length"
    if kind in _BELOW_MIN or kind in _ABOVE_MAX:
        # The bound's type, not the input's, says which: a JSON 3 for a float field is still a decimal.
        bound = next(iter((error.get("ctx") or {}).values()), None)
        number = "integer" if isinstance(bound, int) else "decimal"
        return f"{number}_below_min_value" if kind in _BELOW_MIN else f"{number}_above_max_value"
    if kind.endswith(("_type", "_parsing")):
        return "invalid_type"
    return "invalid_request"


def _describe(error: Mapping[str, Any], param: str | None) -> str:
    kind = error.get("type")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "not JSON")
        return f"invalid JSON body: {reason}"
    if kind == "missing" and param is None:
        return "a JSON request body is required"
    message = str(error.get("msg", "invalid"))
    return f"{param}: {message}" if param else message


def _is_noise(error: Mapping[str, Any]) -> bool:
    """A type mismatch with a union member the value was not meant as (``stop``: a list is not a ``str``):
    the location ends at the member itself, not at something inside it."""
    loc = error.get("loc", ())
    last = loc[-1] if loc else None
    return str(error.get("type", "")).endswith("_type") and isinstance(last, str) and _is_union_member(last)


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None, str]:
    """``(code, param, message)`` for pydantic/FastAPI validation ``errors``.

    The code and param are the first error's (OpenAI reports one param); the message names every problem.
    Only locations, pydantic's messages and (for bad JSON) the parser's reason are used: an error's
    ``input`` would echo the body back, passwords included. Mismatches with the members of a union that a
    value did not try to be (``stop: ["a", …]`` is not a ``str``) are dropped when a more telling error is
    there.
    """
    relevant = [e for e in errors if not _is_noise(e)] or list(errors)
    if not relevant:
        return "invalid_request", None, "invalid request"
    described = [(validation_param(e.get("loc", ())), e) for e in relevant]
    messages = list(dict.fromkeys(_describe(e, param) for param, e in described))
    first_param, first = described[0]
    return _code(first), None if first.get("type") == "json_invalid" else first_param, "; ".join(messages)


def _openapi_with_400(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` with FastAPI's automatic ``422`` responses documented as what is sent: a ``400``."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()  # caches it in app.openapi_schema: edited in place, once
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses.setdefault("400", {"description": "Invalid request (OpenAI error shape)"})
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return schema

    return openapi


def install_error_handlers(app: FastAPI) -> None:
    """Route ApiError, HTTPException, validation errors and unexpected exceptions through one shape."""

    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers, param=exc.param)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}) or None)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        code, param, message = describe_validation_errors(exc.errors())
        return error_response(400, code, message, param=param)

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
    app.add_exception_handler(DataIntegrityError, on_undecryptable)
    app.add_exception_handler(Exception, on_unexpected)
    app.openapi = _openapi_with_400(app)  # type: ignore[method-assign]
