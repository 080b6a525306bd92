"""``/v1/imports``: upload an exported history (raw body), follow its job, read its report.

``POST /v1/imports?me=<your name in the export>&name=<file name>[&format=][&speaker=]`` streams the body to
disk sealed with the caller's data key (like ``/v1/media``), queues the job and answers ``202`` with the
import (status ``queued``). ``GET /v1/imports/{id}/events`` is a Server-Sent Events stream of ``progress``
events (messages read, bytes position / size; for audio and video ``audio_s`` of ``audio_total_s`` seconds
transcribed) ending with one ``done`` or ``failed`` event carrying the final report, whose ``media`` lists
each recording (name, kind, seconds, messages, status, the media ids of the kept recording and keyframes).
Imports need the ``memories:write`` scope (they create memories); reading them ``memories:read``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from voice_server.accounts import Principal
from voice_server.api import sse
from voice_server.api.deps import ImportsDep, ResourcesDep, require_scope
from voice_server.avatar.importers import FORMATS, Format, Me
from voice_server.avatar.imports import store
from voice_server.avatar.imports.service import QueueFullError, QuotaExceededError
from voice_server.errors import ApiError, error_response, not_found
from voice_server.resources import Resources

router = APIRouter(tags=["imports"])
Reader = Annotated[Principal, Depends(require_scope("memories:read"))]
Writer = Annotated[Principal, Depends(require_scope("memories:write"))]
ME_HELP = "your name (or Telegram id) in the export; several names separated by commas"
SPEAKER_HELP = "audio/video: who speaks in the recording (default: you); a name not in `me` is someone else"


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "import", **row}


async def _load(res: Resources, user_id: uuid.UUID, import_id: uuid.UUID) -> dict[str, Any] | None:
    async with res.db.pool.connection() as conn:
        return await store.get_import(conn, await res.keys.for_user(conn, user_id), import_id)


@router.post(
    "/v1/imports",
    status_code=202,
    response_model=None,
    summary="Upload an export file (raw body) to import",
    responses={429: {"description": "You (or, rarely, the server) hold too many imports; see Retry-After"}},
)
async def upload_import(
    request: Request,
    user: Writer,
    res: ResourcesDep,
    imports: ImportsDep,
    me: Annotated[str, Query(min_length=1, max_length=200, description=ME_HELP)],
    name: Annotated[str, Query(min_length=1, max_length=255, description="the file's name")],
    format: Annotated[str | None, Query(description=f"one of {', '.join(FORMATS)}; detected when absent")] = None,
    speaker: Annotated[str | None, Query(min_length=1, max_length=200, description=SPEAKER_HELP)] = None,
) -> dict[str, Any] | JSONResponse:
    """``413`` beyond ``SOMA_MEDIA_MAX_BYTES``; ``429`` with ``Retry-After`` when the caller already has
    ``SOMA_IMPORT_MAX_PER_USER`` imports uploading, waiting or running (``imports_quota``: other users are
    unaffected), or the server holds as many as it takes from everyone (``imports_busy``)."""
    if format is not None and format not in FORMATS:
        raise ApiError(400, "invalid_format", f"format must be one of {', '.join(FORMATS)}")
    fmt: Format | None = format  # checked against FORMATS above

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    try:
        import_id = await imports.submit(
            user.user_id, name, Me.of(me.split(",")), fmt, body(), res.settings.media_max_bytes, speaker=speaker
        )
    except QueueFullError as exc:
        code = "imports_quota" if isinstance(exc, QuotaExceededError) else "imports_busy"
        return error_response(429, code, str(exc), headers={"Retry-After": str(exc.retry_after_s)})
    except ValueError as exc:
        raise ApiError(413, "request_too_large", str(exc)) from None
    row = await _load(res, user.user_id, import_id)
    assert row is not None
    return _out(row)


@router.get("/v1/imports", summary="The caller's imports, newest first")
async def list_imports(
    user: Reader, res: ResourcesDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict[str, Any]:
    async with res.db.pool.connection() as conn:
        rows = await store.recent_imports(conn, await res.keys.for_user(conn, user.user_id), limit)
    return {"object": "list", "data": [_out(r) for r in rows]}


@router.get("/v1/imports/{import_id}", summary="One import and its report")
async def get_import(import_id: uuid.UUID, user: Reader, res: ResourcesDep) -> dict[str, Any]:
    row = await _load(res, user.user_id, import_id)
    if row is None:
        raise not_found("import")
    return _out(row)


@router.post("/v1/imports/{import_id}/cancel", summary="Stop a waiting or running import (nothing of it is kept)")
async def cancel_import(
    import_id: uuid.UUID, user: Writer, res: ResourcesDep, imports: ImportsDep
) -> dict[str, Any]:
    """The import, now ``failed`` with the reason; ``409 import_finished`` when it had already ended."""
    if await _load(res, user.user_id, import_id) is None:
        raise not_found("import")
    if not await imports.cancel(user.user_id, import_id):
        raise ApiError(409, "import_finished", "this import has already ended (or runs on another server)")
    row = await _load(res, user.user_id, import_id)
    if row is None:
        raise not_found("import")
    return _out(row)


@router.get("/v1/imports/{import_id}/events", summary="Progress of an import (Server-Sent Events)")
async def import_events(
    import_id: uuid.UUID, user: Reader, res: ResourcesDep, service: ImportsDep
) -> StreamingResponse:
    """``progress`` events while it runs, then one ``done`` or ``failed`` event with the import."""
    if await _load(res, user.user_id, import_id) is None:
        raise not_found("import")

    async def stream() -> AsyncIterator[bytes]:
        last: dict[str, Any] | None = None
        while True:
            ticket = service.ticket()
            state = service.state(import_id)
            if state is None:
                row = await _load(res, user.user_id, import_id)
                if row is None or row["status"] in ("done", "failed"):
                    yield sse.event(row["status"] if row else "failed", _out(row) if row else {"error": "erased"})
                    return
                state = {"status": row["status"], "read": row["read"], "skipped": row["skipped"], "position": 0,
                         "size": row["bytes_total"]}
            if state != last:
                yield sse.event("progress", {"id": str(import_id), **state})
                last = dict(state)
            try:
                async with asyncio.timeout(sse.HEARTBEAT_S):
                    await ticket.wait()
            except TimeoutError:
                yield sse.KEEP_ALIVE  # a queued import may wait long

    return StreamingResponse(stream(), media_type="text/event-stream", headers=sse.HEADERS)
