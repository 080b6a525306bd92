"""Reading the import feature's tables (``imports``, ``imported_messages``, ``import_media``) for the rest of
the server: every other feature that needs imported rows calls a function here instead of querying them.

The job (`voice_server.avatar.imports.job`, `voice_server.avatar.imports.recordings_plan`) writes the rows;
this module reads them back, always for one user, with the sealed values opened by that user's key (a row
sealed for another user or row fails to open rather than leak). A function that takes a connection runs on
it, inside whatever transaction the caller holds.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from voice_server.security import fields
from voice_server.security.keys import Conn, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

IMPORT_COLUMNS = (
    "id, format, name, status, bytes_total, read, skipped, created, memories, skip_reasons, error, created_at,"
    " finished_at, audio_seconds, media_report"
)
IMPORTED_COLUMNS: tuple[fields.ImportedColumn, ...] = ("conversation", "sender", "text")


def open_import(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """An ``imports`` row (`IMPORT_COLUMNS`) with its name, error and media report opened; the report
    becomes ``media``: one entry per recording (``[]`` for text imports)."""
    opened = {k: v for k, v in row.items() if k != "media_report"}
    report = key.open_optional(row.get("media_report"), fields.import_report(row["id"]))
    return {
        **opened,
        "name": key.open(row["name"], fields.import_name(row["id"])),
        "error": key.open_optional(row["error"], fields.import_error(row["id"])),
        "media": json.loads(report) if report else [],
    }


def open_imported(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """An ``imported_messages`` row with its conversation, sender and text opened."""
    opened = dict(row)
    for column in IMPORTED_COLUMNS:
        opened[column] = key.open(row[column], fields.imported(column, row["id"]))
    return opened


async def get_import(conn: Conn, key: UserKey, import_id: uuid.UUID) -> dict[str, Any] | None:
    """The key's user's import ``import_id`` (`open_import`), or ``None`` when they have none by that id."""
    cur = await conn.execute(
        f"SELECT {IMPORT_COLUMNS} FROM imports WHERE id = %s AND user_id = %s", (import_id, key.user_id)
    )
    row = await cur.fetchone()
    return None if row is None else open_import(key, row)


async def recent_imports(conn: Conn, key: UserKey, limit: int) -> list[dict[str, Any]]:
    """The key's user's ``limit`` newest imports (`open_import`), newest first."""
    cur = await conn.execute(
        f"SELECT {IMPORT_COLUMNS} FROM imports WHERE user_id = %s ORDER BY created_at DESC LIMIT %s",
        (key.user_id, limit),
    )
    return [open_import(key, row) for row in await cur.fetchall()]


async def last_done_by_user(conn: Conn) -> dict[uuid.UUID, datetime]:
    """For every user with a finished import: when their latest one finished (start-up work, all users)."""
    cur = await conn.execute(
        "SELECT user_id, max(finished_at) AS at FROM imports WHERE status = 'done' GROUP BY user_id"
    )
    return {row["user_id"]: row["at"] for row in await cur.fetchall()}


async def done_count(conn: Conn, user_id: uuid.UUID) -> int:
    """How many of ``user_id``'s imports finished (status ``done``)."""
    cur = await conn.execute("SELECT count(*) AS n FROM imports WHERE user_id = %s AND status = 'done'", (user_id,))
    done = await cur.fetchone()
    return int(done["n"]) if done else 0


async def own_messages_on(
    conn: Conn, key: UserKey, before: datetime, months: Sequence[int], days: Sequence[int], limit: int
) -> list[dict[str, Any]]:
    """The key's owner's own imported messages dated before ``before`` on one of the (month, day) pairs
    ``zip(months, days)``, their dates read as UTC (how the job stores times without a zone), oldest first,
    at most ``limit``: ``id, text`` (opened)``, at``."""
    cur = await conn.execute(
        "SELECT id, text, at FROM imported_messages WHERE user_id = %s AND is_user AND at IS NOT NULL"
        " AND at < %s AND (extract(month FROM at AT TIME ZONE 'UTC')::int,"
        " extract(day FROM at AT TIME ZONE 'UTC')::int)"
        " IN (SELECT * FROM unnest(%s::int[], %s::int[])) ORDER BY at LIMIT %s",
        (key.user_id, before, list(months), list(days), limit),
    )
    return [{**r, "text": key.open(r["text"], fields.imported("text", r["id"]))} for r in await cur.fetchall()]


async def message_texts(conn: Conn, key: UserKey, ids: Sequence[str]) -> dict[str, str]:
    """The opened texts of those of ``ids`` that are the key's owner's imported messages, by id (as ``str``);
    a deleted or foreign id is simply missing."""
    cur = await conn.execute(
        "SELECT id, text FROM imported_messages WHERE user_id = %s AND id = ANY(%s::uuid[])", (key.user_id, list(ids))
    )
    return {str(r["id"]): key.open(r["text"], fields.imported("text", r["id"])) for r in await cur.fetchall()}


@dataclass(frozen=True, slots=True)
class TypedMessage:
    """An imported message someone typed: who sent it and, for the user's own messages only, its text
    (``None`` for everyone else's: nobody reads it, so it is not opened)."""

    sender: str
    text: str | None
    is_user: bool


def _open_typed(key: UserKey, rows: list[dict[str, Any]]) -> list[TypedMessage]:
    return [
        TypedMessage(
            key.open(row["sender"], fields.imported("sender", row["id"])),
            key.open(row["text"], fields.imported("text", row["id"])) if row["is_user"] else None,
            bool(row["is_user"]),
        )
        for row in rows
    ]


async def stream_typed_messages(
    db: Database, key: UserKey, feed: Callable[[list[TypedMessage]], None], *, fetch: int
) -> None:
    """Hand every typed imported message of the key's owner (transcribed voice notes, audio and video left
    out), ordered by time then id, to ``feed`` at most ``fetch`` at a time.

    One server-side cursor in one transaction on a connection of its own; each batch is opened and fed in a
    worker thread, so neither the texts of a whole history nor the decryption sit on the event loop. ``feed``
    is called in that thread, one batch after another (never concurrently).
    """
    def opened_into_feed(rows: list[dict[str, Any]]) -> None:
        feed(_open_typed(key, rows))

    async with db.pool.connection() as conn, conn.transaction(), conn.cursor(name="imported_typed") as cursor:
        await cursor.execute(
            "SELECT id, sender, text, is_user FROM imported_messages WHERE user_id = %s"
            " AND (attachment IS NULL OR attachment NOT IN ('voice', 'audio', 'video')) ORDER BY at, id",
            (key.user_id,),
        )
        while rows := await cursor.fetchmany(fetch):
            await asyncio.to_thread(opened_into_feed, rows)


@dataclass(frozen=True, slots=True)
class ChatRow:
    """An imported typed message with its time, for rebuilding who said what when (training pairs)."""

    conversation: str
    sender: str
    text: str
    at: datetime
    is_user: bool
    attachment: str | None


async def stream_chat_rows(
    db: Database, key: UserKey, feed: Callable[[list[ChatRow]], None], *, fetch: int
) -> None:
    """Hand every dated typed imported message of the key's owner (everyone's words, opened), ordered by time
    then id, to ``feed`` at most ``fetch`` at a time, as `stream_typed_messages` does (one cursor, opened and
    fed in a worker thread)."""
    def opened_into_feed(rows: list[dict[str, Any]]) -> None:
        feed([
            ChatRow(
                key.open(row["conversation"], fields.imported("conversation", row["id"])),
                key.open(row["sender"], fields.imported("sender", row["id"])),
                key.open(row["text"], fields.imported("text", row["id"])),
                row["at"], bool(row["is_user"]), row["attachment"],
            )
            for row in rows
        ])

    async with db.pool.connection() as conn, conn.transaction(), conn.cursor(name="imported_chat") as cursor:
        await cursor.execute(
            "SELECT id, conversation, sender, text, at, is_user, attachment FROM imported_messages WHERE user_id = %s"
            " AND at IS NOT NULL AND (attachment IS NULL OR attachment NOT IN ('voice', 'audio', 'video'))"
            " ORDER BY at, id",
            (key.user_id,),
        )
        while rows := await cursor.fetchmany(fetch):
            await asyncio.to_thread(opened_into_feed, rows)


def export_imports(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """Every import of ``user_id`` (`open_import`), for their export."""
    return UserRows(f"SELECT {IMPORT_COLUMNS} FROM imports WHERE user_id = %s ORDER BY created_at", (user_id,),
                    functools.partial(open_import, key))


def export_imported(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """Every imported message of ``user_id`` (`open_imported`), for their export."""
    return UserRows(
        "SELECT id, import_id, source, conversation, sender, text, at, is_user, attachment FROM imported_messages"
        " WHERE user_id = %s ORDER BY at, id", (user_id,), functools.partial(open_imported, key))


def export_media(user_id: uuid.UUID) -> UserRows:
    """Which files each audio/video import of ``user_id`` kept (recordings and keyframes), for their export."""
    return UserRows(
        "SELECT media_id, import_id, kind, source_id, offset_s, seconds, by_user FROM import_media WHERE user_id = %s"
        " ORDER BY import_id, kind DESC, offset_s", (user_id,))


async def own_recordings(conn: Conn, user_id: uuid.UUID, *, limit: int) -> list[tuple[uuid.UUID, float]]:
    """The imported recordings in which the user speaks (a recording imported as theirs, a voice note they sent):
    ``(media id, seconds)``, newest import first, at most ``limit``. Recordings imported before the speaker was
    recorded (``by_user`` NULL) are left out: whose voice they hold is not known."""
    cur = await conn.execute(
        "SELECT m.media_id, m.seconds FROM import_media m JOIN imports i ON i.id = m.import_id"
        " WHERE m.user_id = %s AND m.kind = 'source' AND m.by_user ORDER BY i.created_at DESC, m.media_id LIMIT %s",
        (user_id, limit),
    )
    return [(row["media_id"], float(row["seconds"] or 0.0)) for row in await cur.fetchall()]
