"""Stored proactive messages: written once per occurrence (sealed), listed, replayed and marked read.

A notification is stored before anyone is told about it, so a user who was offline sees it later
(``GET /v1/notifications``, or the replay when ``GET /v1/events`` connects). Its public object is the same
everywhere (list, SSE, realtime WebSocket): ``{"id", "kind", "text", "created_at", "memory_ids",
"message_ids", "read_at"}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from voice_server.security import fields
from voice_server.security.keys import Conn, Keyring, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

COLUMNS: Final = "id, kind, text, memory_ids, message_ids, created_at, read_at"
CHANNEL: Final = "soma_notifications"  # Postgres NOTIFY channel: "<user id>:<notification id>", ids only
REPLAY_MAX: Final = 100


def public(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A row (`COLUMNS`) as the API object, its text opened."""
    return {
        "id": str(row["id"]),
        "kind": row["kind"],
        "text": key.open(row["text"], fields.notification_text(row["id"])),
        "created_at": row["created_at"].isoformat(),
        "memory_ids": [str(m) for m in row["memory_ids"]],
        "message_ids": [str(m) for m in row["message_ids"]],
        "read_at": row["read_at"].isoformat() if row["read_at"] is not None else None,
    }


async def insert(
    conn: Conn,
    key: UserKey,
    *,
    job_id: uuid.UUID,
    kind: str,
    occurrence: str,
    text: str,
    memory_ids: Sequence[str],
    message_ids: Sequence[str],
    source: str,
    at: datetime,
) -> uuid.UUID | None:
    """Store a message for an occurrence and announce it (``NOTIFY``, delivered to every server process when
    the surrounding transaction commits); ``None`` when the occurrence already has one.

    Call inside the transaction that marks the job sent, so both happen or neither.
    """
    notification_id = uuid.uuid4()
    cur = await conn.execute(
        "INSERT INTO notifications (id, user_id, job_id, kind, occurrence, text, memory_ids, message_ids, source,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s::uuid[], %s::uuid[], %s, %s)"
        " ON CONFLICT (user_id, kind, occurrence) DO NOTHING RETURNING id",
        (notification_id, key.user_id, job_id, kind, occurrence,
         key.seal(text, fields.notification_text(notification_id)), list(memory_ids), list(message_ids), source, at),
    )
    if await cur.fetchone() is None:
        return None
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{key.user_id}:{notification_id}"))
    return notification_id


class NotificationStore:
    """Reading and marking one user's notifications.

    Args:
        db: The database.
        keys: Users' data keys.
    """

    def __init__(self, db: Database, keys: Keyring) -> None:
        self.db = db
        self.keys = keys

    async def get(self, user_id: uuid.UUID, notification_id: uuid.UUID) -> dict[str, Any] | None:
        """One notification, or ``None`` when it is not this user's."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM notifications WHERE id = %s AND user_id = %s", (notification_id, user_id)
            )
            row = await cur.fetchone()
            return public(await self.keys.for_user(conn, user_id), row) if row is not None else None

    async def page(self, user_id: uuid.UUID, *, unread: bool, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` notifications (only unread ones with ``unread``), newest first."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM notifications WHERE user_id = %s"
                + (" AND read_at IS NULL" if unread else "")
                + " ORDER BY created_at DESC, id DESC LIMIT %s",
                (user_id, limit),
            )
            rows = await cur.fetchall()
            key = await self.keys.for_user(conn, user_id) if rows else None
        return [public(key, r) for r in rows] if key is not None else []

    async def replay(self, user_id: uuid.UUID, after: uuid.UUID | None) -> list[dict[str, Any]]:
        """What a connecting event stream is owed, oldest first (at most `REPLAY_MAX`, the newest ones): the
        notifications after ``after`` (a ``Last-Event-ID``), or every unread one when ``after`` is ``None``
        or not one of the user's."""
        async with self.db.pool.connection() as conn:
            mark = None
            if after is not None:
                cur = await conn.execute(
                    "SELECT created_at, id FROM notifications WHERE id = %s AND user_id = %s", (after, user_id)
                )
                mark = await cur.fetchone()
            if mark is not None:
                cur = await conn.execute(
                    f"SELECT {COLUMNS} FROM notifications WHERE user_id = %s AND (created_at, id) > (%s, %s)"
                    " ORDER BY created_at DESC, id DESC LIMIT %s",
                    (user_id, mark["created_at"], mark["id"], REPLAY_MAX),
                )
            else:
                cur = await conn.execute(
                    f"SELECT {COLUMNS} FROM notifications WHERE user_id = %s AND read_at IS NULL"
                    " ORDER BY created_at DESC, id DESC LIMIT %s",
                    (user_id, REPLAY_MAX),
                )
            rows = await cur.fetchall()
            key = await self.keys.for_user(conn, user_id) if rows else None
        return [public(key, r) for r in reversed(rows)] if key is not None else []

    async def mark_read(self, user_id: uuid.UUID, notification_id: uuid.UUID, at: datetime) -> bool:
        """Mark one notification read (idempotent); False when it is not this user's."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE notifications SET read_at = coalesce(read_at, %s), delivered_at = coalesce(delivered_at, %s)"
                " WHERE id = %s AND user_id = %s",
                (at, at, notification_id, user_id),
            )
            return cur.rowcount == 1

    async def mark_delivered(self, user_id: uuid.UUID, ids: Sequence[str], at: datetime) -> None:
        """Record that these notifications reached a client (the first time only)."""
        if not ids:
            return
        async with self.db.pool.connection() as conn:
            await conn.execute(
                "UPDATE notifications SET delivered_at = %s WHERE user_id = %s AND id = ANY(%s::uuid[])"
                " AND delivered_at IS NULL",
                (at, user_id, list(ids)),
            )


def export_rows(key: UserKey) -> UserRows:
    """The user's notifications for their export, texts opened, oldest first."""

    def opened(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "text": key.open(row["text"], fields.notification_text(row["id"]))}

    return UserRows("SELECT id, kind, occurrence, text, memory_ids, message_ids, source, created_at, delivered_at,"
                    " read_at FROM notifications WHERE user_id = %s ORDER BY created_at, id", (key.user_id,), opened)
