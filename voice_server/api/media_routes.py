"""``/v1/media`` (the caller's encrypted files) and share links (``/v1/share-links``, ``/v1/shared/{token}``).

Uploads are the raw request body (``POST /v1/media?name=…`` with the file's ``Content-Type``), streamed to disk
sealed in chunks: no multipart temp file ever holds the plaintext. Downloads stream the decrypted bytes.
A share link gives anyone holding its token read access to one file until it expires or is revoked.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.errors import ApiError, not_found
from voice_server.resources import Resources
from voice_server.security.share_links import check_token, make_token
from voice_server.user_files import MediaStore

router = APIRouter(tags=["media"])
MediaReader = Annotated[Principal, Depends(require_scope("media:read"))]
MediaUser = Annotated[Principal, Depends(require_scope("media:write"))]
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
MAX_SHARE_S = 365 * 24 * 3600


def media_store(res: Resources) -> MediaStore:
    """The media store of this server."""
    return MediaStore(res.db, res.keys, res.settings.media_dir)


def _content_type(request: Request) -> str:
    raw = request.headers.get("content-type", "application/octet-stream").split(";")[0].strip().lower()
    if not _CONTENT_TYPE.match(raw):
        raise ApiError(400, "invalid_content_type", "Content-Type must be a type/subtype media type")
    return raw


def _out(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "media", **row, "content_url": f"/v1/media/{row['id']}/content"}


@router.post("/v1/media", status_code=201, summary="Upload a file (raw body), stored encrypted")
async def upload(
    request: Request,
    user: MediaUser,
    res: ResourcesDep,
    name: Annotated[str, Query(min_length=1, max_length=255, description="the file's name")],
) -> dict[str, Any]:
    """Stream the body to disk sealed with the caller's data key; ``413`` beyond ``SOMA_MEDIA_MAX_BYTES``."""
    content_type = _content_type(request)

    async def body() -> AsyncIterator[bytes]:
        async for chunk in request.stream():
            if chunk:
                yield chunk

    try:
        row = await media_store(res).create(
            user.user_id, name, content_type, body(), limit=res.settings.media_max_bytes
        )
    except ValueError as exc:
        raise ApiError(413, "request_too_large", str(exc)) from None
    return _out(row)


@router.get("/v1/media", summary="The caller's files, newest first")
async def list_media(
    user: MediaReader, res: ResourcesDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> dict[str, Any]:
    return {"object": "list", "data": [_out(r) for r in await media_store(res).list(user.user_id, limit=limit)]}


@router.get("/v1/media/{media_id}", summary="One file's details")
async def get_media(media_id: uuid.UUID, user: MediaReader, res: ResourcesDep) -> dict[str, Any]:
    row = await media_store(res).get(user.user_id, media_id)
    if row is None:
        raise not_found("media")
    return _out(row)


def _download(store: MediaStore, owner: uuid.UUID, row: dict[str, Any]) -> StreamingResponse:
    disposition = f"attachment; filename*=UTF-8''{quote(row['name'], safe='')}"
    return StreamingResponse(
        store.content(owner, row["id"]),
        media_type=row["content_type"],
        headers={"Content-Length": str(row["size"]), "Content-Disposition": disposition},
    )


@router.get("/v1/media/{media_id}/content", summary="Download a file (decrypted)", response_class=Response)
async def media_content(media_id: uuid.UUID, user: MediaReader, res: ResourcesDep) -> StreamingResponse:
    store = media_store(res)
    row = await store.get(user.user_id, media_id)
    if row is None:
        raise not_found("media")
    return _download(store, user.user_id, row)


@router.delete("/v1/media/{media_id}", status_code=204, summary="Delete a file (row and encrypted bytes)")
async def delete_media(media_id: uuid.UUID, user: MediaUser, res: ResourcesDep) -> Response:
    if not await media_store(res).delete(user.user_id, media_id):
        raise not_found("media")
    async with res.db.pool.connection() as conn:
        await conn.execute(
            "UPDATE share_links SET revoked_at = now() WHERE user_id = %s AND resource_id = %s AND revoked_at IS NULL",
            (user.user_id, media_id),
        )
    return Response(status_code=204)


class ShareIn(BaseModel):
    """What to share and for how long."""

    model_config = ConfigDict(extra="forbid")
    media_id: uuid.UUID
    expires_in: Annotated[int, Field(ge=60, le=MAX_SHARE_S, description="seconds")] = 7 * 24 * 3600


@router.post("/v1/share-links", status_code=201, summary="Create a share link to one of the caller's files")
async def create_share_link(body: ShareIn, user: MediaUser, res: ResourcesDep) -> dict[str, Any]:
    """The token is shown once (only its id is stored)."""
    if await media_store(res).get(user.user_id, body.media_id) is None:
        raise not_found("media")
    expires = time.time() + body.expires_in
    async with res.db.pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO share_links (user_id, resource_kind, resource_id, expires_at)"
            " VALUES (%s, 'media', %s, to_timestamp(%s)) RETURNING id, resource_kind, resource_id, created_at,"
            " expires_at, revoked_at",
            (user.user_id, body.media_id, int(expires)),
        )
        row = await cur.fetchone()
    assert row is not None
    token = make_token(res.keys.share_key, row["id"], int(expires))
    return {"object": "share_link", **row, "token": token, "url": f"/v1/shared/{token}"}


@router.get("/v1/share-links", summary="The caller's share links")
async def list_share_links(user: MediaReader, res: ResourcesDep) -> dict[str, Any]:
    async with res.db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, resource_kind, resource_id, created_at, expires_at, revoked_at FROM share_links"
            " WHERE user_id = %s ORDER BY created_at DESC LIMIT 500",
            (user.user_id,),
        )
        rows = await cur.fetchall()
    return {"object": "list", "data": [{"object": "share_link", **r} for r in rows]}


@router.delete("/v1/share-links/{link_id}", status_code=204, summary="Revoke a share link")
async def revoke_share_link(link_id: uuid.UUID, user: MediaUser, res: ResourcesDep) -> Response:
    async with res.db.pool.connection() as conn:
        cur = await conn.execute(
            "UPDATE share_links SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s AND user_id = %s",
            (link_id, user.user_id),
        )
    if cur.rowcount != 1:
        raise not_found("share_link")
    return Response(status_code=204)


@router.get("/v1/shared/{token}", summary="Open a share link (no account needed)", response_class=Response)
async def open_share_link(token: str, request: Request, res: ResourcesDep) -> StreamingResponse:
    """``404`` for a forged, expired, revoked or unknown link alike (nothing to probe)."""
    link_id = check_token(res.keys.share_key, token)
    row = None
    if link_id is not None:
        async with res.db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT user_id, resource_id FROM share_links WHERE id = %s AND revoked_at IS NULL"
                " AND expires_at > %s",
                (link_id, datetime.now(UTC)),
            )
            row = await cur.fetchone()
    if row is None:
        raise not_found("share_link")
    # The owner's trail shows that (and from where) their link was opened; the token itself is never logged.
    request.state.audit_user = None
    request.state.audit_subject = row["user_id"]
    request.state.audit_resource = f"share_link={link_id}"
    store = media_store(res)
    media = await store.get(row["user_id"], row["resource_id"])
    if media is None:
        raise not_found("share_link")
    return _download(store, row["user_id"], media)
