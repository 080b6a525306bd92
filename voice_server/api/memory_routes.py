"""``/v1/memories``: what the avatar knows about the caller — list, read, add, correct, forget, search.

The avatar learns memories from conversations by itself (`voice_server.avatar.memory.service`); these endpoints let
the user see and fix them. A memory the user adds or edits is re-embedded so recall finds it at once. Only
the caller's own memories exist for them: anyone else's id answers 404, like an id that never existed.
"""

from __future__ import annotations

import time
import uuid
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.memory.evidence import Hit
from voice_server.avatar.memory.service import MemoryService
from voice_server.avatar.memory.store import Kind, NewMemory, StoredKind, page_cursor, parse_page_cursor
from voice_server.errors import ApiError, not_found
from voice_server.resources import Resources

router = APIRouter(prefix="/v1/memories", tags=["memories"])
MemoryReader = Annotated[Principal, Depends(require_scope("memories:read"))]
MemoryUser = Annotated[Principal, Depends(require_scope("memories:write"))]
Text = Annotated[str, Field(min_length=1, max_length=2000)]
Subject = Annotated[str, Field(min_length=1, max_length=40)]


def _as_stored(importance: float) -> float:
    """Importance is a Postgres ``real``: six decimals are all it keeps, and a tinier non-zero value would fail
    to store (underflow, a 500) instead of reading back as 0."""
    return round(importance, 6)


Importance = Annotated[float, Field(ge=0, le=1), AfterValidator(_as_stored)]


class MemoryIn(BaseModel):
    """A memory the user adds by hand."""

    model_config = ConfigDict(extra="forbid")
    text: Text
    kind: Kind = "fact"
    importance: Importance = 0.7
    subject: Subject | None = None
    event_date: date | None = None


class MemoryPatch(BaseModel):
    """A correction: only the fields given change."""

    model_config = ConfigDict(extra="forbid")
    text: Text | None = None
    kind: Kind | None = None
    importance: Importance | None = None
    subject: Subject | None = None
    event_date: date | None = None


def _service(res: Resources) -> MemoryService:
    if res.memory is None:
        raise ApiError(503, "models_unavailable", "memories need the embedding model, which is not loaded")
    return res.memory


def _out(
    row: dict[str, Any], similarity: float | None = None, origins: dict[uuid.UUID, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A memory as the API shows it. ``origin``: the message or call turn it was taken from (``null``: added
    by the user, or its message is gone), when ``origins`` (`MemoryService.origins`) was looked up."""
    body = {"object": "memory", **row}
    if similarity is not None:
        body["similarity"] = round(similarity, 4)
    if origins is not None:
        body["origin"] = _origin(origins[row["episode_id"]]) if row.get("episode_id") in origins else None
    return body


def _origin(row: dict[str, Any]) -> dict[str, Any]:
    """Where a remembered message comes from, as the API shows it (memories' origins and evidence)."""
    return {
        "object": "message",
        "id": row["id"],
        "text": row["text"],
        "speaker": row["speaker"],
        "thread": row["thread"],
        "is_user": row["is_user"],
        "said_at": row["said_at"],
        "event_date": row["event_date"],
        "source": "import" if row["message_id"] is not None else "conversation",
    }


@router.get("", summary="The caller's memories, newest first")
async def list_memories(
    user: MemoryReader,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="only memories created before this time")] = None,
    cursor: Annotated[str | None, Query(max_length=100, description="next_cursor of the previous page")] = None,
    kind: StoredKind | None = None,
    include_superseded: bool = False,
) -> dict[str, Any]:
    """``{"object": "list", "data", "has_more", "next_cursor", "next_before"}``; superseded versions only on
    request. Follow ``next_cursor``: memories stored together (one import) share a creation time, so a page
    that ends among them continues only by cursor (``next_before`` is kept for older clients)."""
    try:
        after = parse_page_cursor(cursor) if cursor is not None else None
    except ValueError:
        raise ApiError(400, "invalid_cursor", "cursor is not a next_cursor of this list", param="cursor") from None
    rows = await _service(res).store.page(
        user.user_id, limit=limit + 1, before=before, after=after, kind=kind, include_superseded=include_superseded
    )
    page = rows[:limit]
    more = len(rows) > limit
    origins = await _service(res).origins(user.user_id, page)
    return {
        "object": "list",
        "data": [_out(r, origins=origins) for r in page],
        "has_more": more,
        "next_cursor": page_cursor(page[-1]) if more else None,
        "next_before": page[-1]["created_at"] if more else None,
    }


@router.get("/search", summary="Semantic search over the caller's live memories")
async def search_memories(
    user: MemoryReader,
    res: ResourcesDep,
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> dict[str, Any]:
    """Best match first, each with its cosine ``similarity``."""
    service = _service(res)
    matches = await service.search(user.user_id, q, limit)
    origins = await service.origins(user.user_id, [m.row for m in matches])
    return {"object": "list", "data": [_out(m.row, m.similarity, origins) for m in matches]}


@router.get("/evidence", summary="What the avatar remembers that bears on a question: messages and memories")
async def search_evidence(
    user: MemoryReader,
    res: ResourcesDep,
    response: Response,
    q: Annotated[str, Query(min_length=1, max_length=2000)],
    limit: Annotated[int, Query(ge=1, le=50)] = 10,
) -> dict[str, Any]:
    """Hybrid search over every message the caller imported, typed or said in a call (both speakers) and their
    memories, best first (`voice_server.avatar.memory.evidence`). Each item: ``object`` ("message" or
    "memory"), its fields, ``score``, ``similarity``, ``relevant`` (what recall would put in a prompt) and, for
    the best messages, ``context`` (the messages just before and after). ``unknown``: names in ``q`` that
    nothing the caller ever said or heard contains. The ``Server-Timing`` header splits the time into
    ``embed`` and ``search``."""
    service = _service(res)
    service.quiet.touch()  # the user is looking: background memory work waits, as for a turn
    started = time.perf_counter()
    vector = await service.embed_one(q)
    embedded = time.perf_counter()
    found = await service.evidence.search(user.user_id, q, vector, limit=limit)
    response.headers["Server-Timing"] = (
        f"embed;dur={(embedded - started) * 1000:.1f}, search;dur={found.search_ms:.1f}"
    )
    return {"object": "list", "data": [_evidence_out(h) for h in found.hits], "unknown": found.unknown}


@router.get("/index", summary="How far the caller's messages are indexed for search")
async def index_status(user: MemoryReader, res: ResourcesDep) -> dict[str, Any]:
    """``pending``: messages still waiting for their embedding (lexical search finds them already);
    ``indexed``: those with one."""
    return await _service(res).index_status(user.user_id)


def _evidence_out(hit: Hit) -> dict[str, Any]:
    common = {"score": round(hit.score, 5), "similarity": round(hit.similarity, 4), "relevant": hit.relevant}
    if hit.kind == "memory":
        return {**_out(hit.row), **common}
    return {
        **_origin(hit.row),
        **common,
        "context": [
            {"id": c["id"], "text": c["text"], "speaker": c["speaker"], "is_user": c["is_user"],
             "said_at": c["said_at"]}
            for c in hit.context
        ],
    }


@router.post("", status_code=201, summary="Tell the avatar something to remember")
async def create_memory(body: MemoryIn, user: MemoryUser, res: ResourcesDep) -> dict[str, Any]:
    memory = _service(res)
    vector = await memory.embed_one(body.text)
    new = NewMemory(body.text, body.kind, body.importance, body.subject, body.event_date, "user")
    async with res.db.pool.connection() as conn:
        row = await memory.store.insert(conn, user.user_id, new, vector)
    return _out(row)


@router.get("/{memory_id}", summary="One memory (live or superseded)")
async def get_memory(memory_id: uuid.UUID, user: MemoryReader, res: ResourcesDep) -> dict[str, Any]:
    service = _service(res)
    row = await service.store.get(user.user_id, memory_id)
    if row is None:
        raise not_found("memory")
    return _out(row, origins=await service.origins(user.user_id, [row]))


@router.patch("/{memory_id}", summary="Correct a memory")
async def update_memory(memory_id: uuid.UUID, body: MemoryPatch, user: MemoryUser, res: ResourcesDep) -> dict[str, Any]:
    memory = _service(res)
    fields = body.model_dump(exclude_unset=True)
    if any(fields.get(name) is None for name in ("text", "kind", "importance") if name in fields):
        raise ApiError(400, "invalid_request", "text, kind and importance cannot be null")
    if not fields:
        raise ApiError(400, "invalid_request", "nothing to change")
    vector = await memory.embed_one(fields["text"]) if "text" in fields else None
    row = await memory.store.update(user.user_id, memory_id, fields, vector)
    if row is None:
        raise not_found("memory")
    return _out(row, origins=await memory.origins(user.user_id, [row]))


@router.delete("/{memory_id}", status_code=204, summary="Forget a memory (and the older versions it replaced)")
async def delete_memory(memory_id: uuid.UUID, user: MemoryUser, res: ResourcesDep) -> Response:
    if not await _service(res).store.delete_one(user.user_id, memory_id):
        raise not_found("memory")
    return Response(status_code=204)
