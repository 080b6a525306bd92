"""``/v1/conversations``: the user's conversation history — what they said and what they heard.

Every channel records its finished turns (`voice_server.conversations`); these endpoints let the user read
them back page by page and delete a conversation for good (its turns go with it). Only the caller's own
conversations exist for them: anyone else's id answers 404, exactly like an id that never existed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response

from voice_server import conversations
from voice_server.accounts import Principal
from voice_server.api.deps import ResourcesDep, require_scope
from voice_server.avatar.memory.store import MemoryStore
from voice_server.errors import not_found

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
HistoryUser = Annotated[Principal, Depends(require_scope("memories:read"))]
HistoryWriter = Annotated[Principal, Depends(require_scope("memories:write"))]


@router.get("", summary="The caller's conversations, most recently active first")
async def list_conversations(
    user: HistoryUser,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    before: Annotated[datetime | None, Query(description="next_before of the previous page")] = None,
) -> dict[str, Any]:
    """``{"object": "list", "data": [...], "has_more", "next_before"}``; each item has its turn count and the
    first thing the user said."""
    async with res.db.pool.connection() as conn:
        key = await res.keys.for_user(conn, user.user_id)
        page, has_more = await conversations.conversation_page(conn, key, before=before, limit=limit)
    return {
        "object": "list",
        "data": [{"object": "conversation", **row} for row in page],
        "has_more": has_more,
        "next_before": page[-1]["updated_at"] if has_more else None,
    }


@router.get("/{conversation_id}", summary="One conversation with a page of its turns")
async def get_conversation(
    conversation_id: uuid.UUID,
    user: HistoryUser,
    res: ResourcesDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int, Query(ge=0, description="next_after of the previous page")] = 0,
) -> dict[str, Any]:
    """Turns in order, ``limit`` at a time after turn index ``after``; ``heard_text`` is what the user heard
    (or was sent), ``reply_text`` everything generated, ``marks`` latency marks in ms from the first.

    Raises:
        ApiError: 404 for an unknown id or someone else's conversation.
    """
    async with res.db.pool.connection() as conn:
        conversation = await conversations.get_conversation(conn, user.user_id, conversation_id)
        if conversation is None:
            raise not_found("conversation")
        key = await res.keys.for_user(conn, user.user_id)
        turns, has_more = await conversations.turn_page(conn, key, conversation_id, after=after, limit=limit)
    page = [_public_turn(turn) for turn in turns]
    return {
        "object": "conversation",
        **conversation,
        "turns": page,
        "has_more": has_more,
        "next_after": page[-1]["index"] if has_more else None,
    }


@router.delete("/{conversation_id}", status_code=204, summary="Delete a conversation and all its turns")
async def delete_conversation(
    conversation_id: uuid.UUID,
    user: HistoryWriter,
    res: ResourcesDep,
    memories: Annotated[bool, Query(description="also forget the memories learned in it")] = False,
) -> Response:
    """Deletes the rows (turns cascade) in one transaction; nothing is kept. Memories learned from the
    conversation stay (detached from it) unless ``memories=true``, which deletes them too.

    Raises:
        ApiError: 404 for an unknown id or someone else's conversation.
    """
    async with res.db.pool.connection() as conn, conn.transaction():
        if await conversations.get_conversation(conn, user.user_id, conversation_id) is None:
            raise not_found("conversation")
        if memories:
            await MemoryStore(res.db, res.keys).delete_from_conversation(conn, user.user_id, conversation_id)
        await conversations.delete_conversation(conn, user.user_id, conversation_id)
    return Response(status_code=204)


def _public_turn(row: dict[str, Any]) -> dict[str, Any]:
    """A turn as the API shows it (``index``, not the storage's ``conversation_id``/``turn_index``)."""
    shown = {k: v for k, v in row.items() if k not in ("conversation_id", "turn_index")}
    return {"index": row["turn_index"], **shown}
