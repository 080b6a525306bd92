"""The ``memories`` table: what the avatar knows about each user (SQL only; policy lives elsewhere).

Every method takes the owner's ``user_id`` and every statement filters by it, so no call can read or change
another user's memories. Vectors are unit-length MiniLM embeddings (``vector(384)``); similarity is cosine.
A memory's text and subject are sealed with the owner's data key (bound to the memory's id); rows leave this
module opened. The subject is found by ``subject_tag``, a keyed per-user hash, never by its plaintext.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg

from voice_server.security import fields
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

Kind = Literal["fact", "preference", "person", "plan", "feeling", "event"]
KINDS: tuple[Kind, ...] = ("fact", "preference", "person", "plan", "feeling", "event")
# A memory's kind as stored: the kinds above, or a summary of a day of messages (`reflection`), which only the
# reflector writes (never extraction, never the API's add/correct).
StoredKind = Kind | Literal["summary"]
Source = Literal["conversation", "user", "import", "reflection"]
Vector = npt.NDArray[np.float32]
Conn = psycopg.AsyncConnection[dict[str, Any]]

# A user with up to this many live memories is searched exactly (all of their rows, through the per-user
# index): recall 1.0 at ~1 ms per 1,000 rows (bench/memory.py at 1 M memories: p95 1.8 ms for 1,000, ~24 ms
# for 25,000). Beyond it the HNSW index with pgvector's iterative scan takes over (25,000 of 1 M: p95 ~11 ms,
# recall ~0.95, near-ties only), keeping the p95 around 10 ms either way.
EXACT_SCAN_MAX = 10_000
HNSW_EF_SEARCH = 200
MAX_TEXT_CHARS = 2000

PageKey = tuple[datetime, uuid.UUID]  # a row's place in the list order: (created_at, id)


def page_cursor(row: dict[str, Any]) -> str:
    """The opaque cursor that continues a list after ``row`` (see `parse_page_cursor`)."""
    return f"{row['created_at'].isoformat()}_{row['id']}"


def parse_page_cursor(cursor: str) -> PageKey:
    """The `PageKey` in a cursor made by `page_cursor`.

    Raises:
        ValueError: not such a cursor.
    """
    at, sep, row_id = cursor.rpartition("_")
    if not sep:
        raise ValueError("not a list cursor")
    parsed = datetime.fromisoformat(at)
    if parsed.tzinfo is None:
        raise ValueError("not a list cursor")
    return parsed, uuid.UUID(row_id)


COLUMNS = (
    "id, text, kind, importance, subject, event_date, said_at, source, source_conversation_id, created_at, updated_at,"
    " last_recalled_at, recall_count, superseded_by, superseded_at, episode_id, cites"
)


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A memory to insert. ``text`` is the user's own statement ("My sister Ana lives in Porto.")."""

    text: str
    kind: StoredKind = "fact"
    importance: float = 0.5
    subject: str | None = None
    event_date: date | None = None
    source: Source = "conversation"
    conversation_id: uuid.UUID | None = None
    said_at: datetime | None = None  # when it was said (an imported message's time); None: now
    episode_id: uuid.UUID | None = None  # the message or turn it was taken from (its provenance)
    cites: tuple[uuid.UUID, ...] = ()  # a summary's messages (episode ids)
    reflects: bytes | None = None  # a summary's thread and day (keyed tag)


@dataclass(frozen=True, slots=True)
class Match:
    """A live memory found by similarity: its row (`COLUMNS`) and cosine similarity to the query."""

    row: dict[str, Any]
    similarity: float

    @property
    def id(self) -> uuid.UUID:
        value: uuid.UUID = self.row["id"]
        return value


class MemoryStore:
    """CRUD and similarity search over one user's memories at a time.

    Methods that take ``conn`` run inside the caller's transaction (the reconciler writes several rows
    atomically); the others borrow a pooled connection.
    """

    def __init__(self, db: Database, keys: Keyring) -> None:
        self._db = db
        self._keys = keys

    async def insert(self, conn: Conn, user_id: uuid.UUID, memory: NewMemory, embedding: Vector) -> dict[str, Any]:
        """Insert one memory and return its row. Its ``said_at`` (and ``updated_at``, which recall's recency
        reads) is ``memory.said_at``, or now.

        Raises:
            ValueError: The text is empty or longer than `MAX_TEXT_CHARS`.
        """
        _check_text(memory.text)
        key = await self._keys.for_user(conn, user_id)
        memory_id = uuid.uuid4()
        cur = await conn.execute(
            "INSERT INTO memories (id, user_id, text, kind, importance, embedding, subject, subject_tag, event_date,"
            " source, source_conversation_id, said_at, updated_at, episode_id, cites, reflects)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, coalesce(%s, now()), coalesce(%s, now()), %s, %s,"
            " %s)"
            f" RETURNING {COLUMNS}",
            (
                memory_id,
                user_id,
                key.seal(memory.text, fields.memory("text", memory_id)),
                memory.kind,
                memory.importance,
                embedding,
                _seal_subject(key, memory_id, memory.subject),
                key.tag(memory.subject) if memory.subject else None,
                memory.event_date,
                memory.source,
                memory.conversation_id,
                memory.said_at,
                memory.said_at,
                memory.episode_id,
                list(memory.cites) or None,
                memory.reflects,
            ),
        )
        row = await cur.fetchone()
        assert row is not None
        return open_row(key, row)

    async def supersede(self, conn: Conn, user_id: uuid.UUID, old_id: uuid.UUID, new_id: uuid.UUID) -> None:
        """Mark ``old_id`` replaced by ``new_id`` (it stays as history and is no longer recalled)."""
        await conn.execute(
            "UPDATE memories SET superseded_by = %s, superseded_at = now() WHERE id = %s AND user_id = %s",
            (new_id, old_id, user_id),
        )

    async def delete(self, conn: Conn, user_id: uuid.UUID, memory_id: uuid.UUID) -> int:
        """Delete a memory and the older versions it superseded (forgetting a fact forgets its history too).
        Returns the number of rows deleted (0: not this user's, or already gone)."""
        cur = await conn.execute(
            "WITH RECURSIVE chain(id) AS ("
            " SELECT id FROM memories WHERE id = %s AND user_id = %s"
            " UNION SELECT m.id FROM memories m JOIN chain c ON m.superseded_by = c.id WHERE m.user_id = %s)"
            " DELETE FROM memories WHERE user_id = %s AND id IN (SELECT id FROM chain)",
            (memory_id, user_id, user_id, user_id),
        )
        return cur.rowcount

    async def touch(self, conn: Conn, user_id: uuid.UUID, memory_id: uuid.UUID, importance: float) -> None:
        """A fact said again: it is fresh again, and at least as important as now."""
        await conn.execute(
            "UPDATE memories SET updated_at = now(), importance = greatest(importance, %s)"
            " WHERE id = %s AND user_id = %s",
            (importance, memory_id, user_id),
        )

    async def similar(
        self, conn: Conn, user_id: uuid.UUID, embedding: Vector, *, limit: int, subject: str | None = None
    ) -> list[Match]:
        """The user's live memories most similar to ``embedding`` (best first), plus — when ``subject`` is given
        — every live memory about that subject, so a fact about Ana is reconciled with all of Ana's facts."""
        matches = await self._nearest(conn, user_id, embedding, limit)
        if subject:
            key = await self._keys.for_user(conn, user_id)
            seen = {m.id for m in matches}
            cur = await conn.execute(
                f"SELECT {COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM memories WHERE user_id = %s"
                " AND subject_tag = %s AND superseded_at IS NULL ORDER BY updated_at DESC LIMIT 50",
                (embedding, user_id, key.tag(subject)),
            )
            matches += [_match(key, row) for row in await cur.fetchall() if row["id"] not in seen]
        return matches

    async def subjects(self, conn: Conn, user_id: uuid.UUID, limit: int = 500) -> frozenset[str]:
        """The distinct subjects of the user's live memories (at most ``limit``)."""
        cur = await conn.execute(
            "SELECT DISTINCT ON (subject_tag) id, subject FROM memories WHERE user_id = %s"
            " AND superseded_at IS NULL AND subject_tag IS NOT NULL LIMIT %s",
            (user_id, limit),
        )
        rows = await cur.fetchall()
        if not rows:
            return frozenset()
        key = await self._keys.for_user(conn, user_id)
        return frozenset(key.open(r["subject"], fields.memory("subject", r["id"])) for r in rows)

    async def nearest(self, user_id: uuid.UUID, embedding: Vector, limit: int) -> list[Match]:
        """`similar` without a subject, on a pooled connection (recall and semantic search)."""
        async with self._db.pool.connection() as conn:
            return await self._nearest(conn, user_id, embedding, limit)

    async def nearest_on(self, conn: Conn, user_id: uuid.UUID, embedding: Vector, limit: int) -> list[Match]:
        """`nearest` on the caller's connection."""
        return await self._nearest(conn, user_id, embedding, limit)

    async def _nearest(self, conn: Conn, user_id: uuid.UUID, embedding: Vector, limit: int) -> list[Match]:
        key = await self._keys.for_user(conn, user_id)
        cur = await conn.execute(
            "SELECT count(*) AS n FROM memories WHERE user_id = %s AND superseded_at IS NULL", (user_id,)
        )
        row = await cur.fetchone()
        if row is not None and row["n"] <= EXACT_SCAN_MAX:
            # OFFSET 0 keeps the planner from using the HNSW index: for one user's rows an exact scan is both
            # faster and complete (a filtered HNSW walk would visit the whole graph to find them).
            cur = await conn.execute(
                f"SELECT {COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM ("
                " SELECT * FROM memories WHERE user_id = %s AND superseded_at IS NULL OFFSET 0) mine"
                " ORDER BY embedding <=> %s LIMIT %s",
                (embedding, user_id, embedding, limit),
            )
            return [_match(key, r) for r in await cur.fetchall()]
        # force_rollback: the SET LOCALs end with this (sub)transaction even inside a caller's transaction;
        # the statement only reads. Not prepared: a cached generic plan would not know this user is heavy.
        async with conn.transaction(force_rollback=True):
            await conn.execute(f"SET LOCAL hnsw.ef_search = {HNSW_EF_SEARCH}")
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                f"SELECT {COLUMNS}, 1 - (embedding <=> %s) AS similarity FROM memories"
                " WHERE user_id = %s AND superseded_at IS NULL ORDER BY embedding <=> %s LIMIT %s",
                (embedding, user_id, embedding, limit),
                prepare=False,
            )
            rows = await cur.fetchall()
        # relaxed_order may return rows slightly out of order.
        return sorted((_match(key, r) for r in rows), key=lambda m: -m.similarity)

    async def mark_recalled(self, user_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> None:
        """Stamp ``last_recalled_at`` and count the recall."""
        if not ids:
            return
        async with self._db.pool.connection() as conn:
            await conn.execute(
                "UPDATE memories SET last_recalled_at = now(), recall_count = recall_count + 1"
                " WHERE user_id = %s AND id = ANY(%s)",
                (user_id, list(ids)),
            )

    async def get(self, user_id: uuid.UUID, memory_id: uuid.UUID) -> dict[str, Any] | None:
        """One memory (live or superseded), or ``None`` if it is not this user's."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM memories WHERE id = %s AND user_id = %s", (memory_id, user_id)
            )
            row = await cur.fetchone()
            return None if row is None else open_row(await self._keys.for_user(conn, user_id), row)

    async def page(
        self,
        user_id: uuid.UUID,
        *,
        limit: int,
        before: datetime | None = None,
        after: PageKey | None = None,
        kind: StoredKind | None = None,
        include_superseded: bool = False,
    ) -> list[dict[str, Any]]:
        """Newest first (``created_at``, then ``id``, both descending): ``limit`` rows created before
        ``before``, and/or after the row whose `PageKey` is ``after`` in that order. Many rows share one
        ``created_at`` (an import stores its memories in one go), so only ``after`` pages without gaps."""
        at, last_id = after if after is not None else (None, None)
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM memories WHERE user_id = %s"
                " AND (%s::timestamptz IS NULL OR created_at < %s)"
                " AND (%s::timestamptz IS NULL OR (created_at, id) < (%s, %s::uuid))"
                " AND (%s::text IS NULL OR kind = %s)"
                " AND (%s OR superseded_at IS NULL) ORDER BY created_at DESC, id DESC LIMIT %s",
                (user_id, before, before, at, at, last_id, kind, kind, include_superseded, limit),
            )
            rows = await cur.fetchall()
            if not rows:
                return []
            key = await self._keys.for_user(conn, user_id)
        return [open_row(key, row) for row in rows]

    async def update(
        self, user_id: uuid.UUID, memory_id: uuid.UUID, changes: dict[str, Any], embedding: Vector | None
    ) -> dict[str, Any] | None:
        """Change ``text``/``kind``/``importance``/``subject``/``event_date`` (a new text comes with its new
        embedding); ``None`` if the memory is not this user's."""
        allowed = {"text", "kind", "importance", "subject", "event_date"}
        if not set(changes) <= allowed:
            raise ValueError(f"cannot update {sorted(set(changes) - allowed)}")
        if "text" in changes:
            _check_text(changes["text"])
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            values = dict(changes)
            if "text" in values:
                values["text"] = key.seal(values["text"], fields.memory("text", memory_id))
            if "subject" in values:
                subject = values["subject"]
                values["subject"] = _seal_subject(key, memory_id, subject)
                values["subject_tag"] = key.tag(subject) if subject else None
            if embedding is not None:
                values["embedding"] = embedding
            assignments = [f"{name} = %s" for name in values] + ["updated_at = now()"]
            cur = await conn.execute(
                f"UPDATE memories SET {', '.join(assignments)} WHERE id = %s AND user_id = %s"  # noqa: S608
                f" RETURNING {COLUMNS}",
                (*values.values(), memory_id, user_id),
            )
            row = await cur.fetchone()
            return None if row is None else open_row(key, row)

    async def delete_one(self, user_id: uuid.UUID, memory_id: uuid.UUID) -> bool:
        """`delete` on a pooled connection; ``False`` if there was nothing of this user's to delete."""
        async with self._db.pool.connection() as conn, conn.transaction():
            return await self.delete(conn, user_id, memory_id) > 0

    async def delete_from_conversation(self, conn: Conn, user_id: uuid.UUID, conversation_id: uuid.UUID) -> int:
        """Delete every memory derived from one conversation (with the versions they superseded)."""
        cur = await conn.execute(
            "SELECT id FROM memories WHERE user_id = %s AND source_conversation_id = %s",
            (user_id, conversation_id),
        )
        deleted = 0
        for row in await cur.fetchall():
            deleted += await self.delete(conn, user_id, row["id"])
        return deleted


async def summary_of(conn: Conn, user_id: uuid.UUID, reflects: bytes) -> uuid.UUID | None:
    """The user's live summary of a thread's day (`NewMemory.reflects`), if there is one."""
    cur = await conn.execute(
        "SELECT id FROM memories WHERE user_id = %s AND reflects = %s AND superseded_at IS NULL LIMIT 1",
        (user_id, reflects),
    )
    row = await cur.fetchone()
    return None if row is None else row["id"]


async def dated_on(
    conn: Conn, key: UserKey, months: Sequence[int], days: Sequence[int], limit: int
) -> list[dict[str, Any]]:
    """The key's owner's live memories whose event date falls on one of the (month, day) pairs
    ``zip(months, days)``, most important first: ``id, kind, text`` (opened)``, event_date, importance``."""
    cur = await conn.execute(
        "SELECT id, kind, text, event_date, importance FROM memories WHERE user_id = %s AND superseded_at IS NULL"
        " AND event_date IS NOT NULL AND (extract(month FROM event_date)::int, extract(day FROM event_date)::int)"
        " IN (SELECT * FROM unnest(%s::int[], %s::int[])) ORDER BY importance DESC, event_date DESC LIMIT %s",
        (key.user_id, list(months), list(days), limit),
    )
    return [{**r, "text": key.open(r["text"], fields.memory("text", r["id"]))} for r in await cur.fetchall()]


async def most_important(conn: Conn, key: UserKey, limit: int) -> list[dict[str, Any]]:
    """The key's owner's ``limit`` most important live memories (older first among equals): ``id, text, kind,
    importance, subject``, text and subject opened."""
    cur = await conn.execute(
        "SELECT id, text, kind, importance, subject FROM memories WHERE user_id = %s AND superseded_at IS NULL"
        " ORDER BY importance DESC, created_at LIMIT %s",
        (key.user_id, limit),
    )
    return [
        {**r, "text": key.open(r["text"], fields.memory("text", r["id"])),
         "subject": key.open_optional(r["subject"], fields.memory("subject", r["id"]))}
        for r in await cur.fetchall()
    ]


async def plan_on(conn: Conn, key: UserKey, day: date) -> list[tuple[uuid.UUID, str]]:
    """The key's owner's most important live plan or event dated ``day`` (none or one), as (id, opened text)."""
    cur = await conn.execute(
        "SELECT id, text FROM memories WHERE user_id = %s AND superseded_at IS NULL AND event_date = %s"
        " AND kind IN ('plan', 'event') ORDER BY importance DESC LIMIT 1",
        (key.user_id, day),
    )
    return [(r["id"], key.open(r["text"], fields.memory("text", r["id"]))) for r in await cur.fetchall()]


async def live_texts(conn: Conn, key: UserKey, ids: Sequence[str]) -> dict[str, str]:
    """The opened texts of those of ``ids`` that are the key's owner's live memories, by id (as ``str``);
    a deleted, superseded or foreign id is simply missing."""
    cur = await conn.execute(
        "SELECT id, text FROM memories WHERE user_id = %s AND id = ANY(%s::uuid[]) AND superseded_at IS NULL",
        (key.user_id, list(ids)),
    )
    return {str(r["id"]): key.open(r["text"], fields.memory("text", r["id"])) for r in await cur.fetchall()}


def _match(key: UserKey, row: dict[str, Any]) -> Match:
    similarity = float(row.pop("similarity"))
    return Match(open_row(key, row), similarity)


def open_row(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A memory row (`COLUMNS`) with its text and subject opened.

    Raises:
        voice_server.security.keys.DecryptionError: The row's values were not sealed for this user and row.
    """
    opened = dict(row)
    opened["text"] = key.open(row["text"], fields.memory("text", row["id"]))
    opened["subject"] = key.open_optional(row["subject"], fields.memory("subject", row["id"]))
    return opened


def export_rows(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """Every memory of ``user_id`` (superseded ones too, with their embeddings), opened, for their export."""
    return UserRows(f"SELECT {COLUMNS}, embedding FROM memories WHERE user_id = %s ORDER BY created_at", (user_id,),
                    functools.partial(open_row, key))


def _seal_subject(key: UserKey, memory_id: uuid.UUID, subject: str | None) -> bytes | None:
    return key.seal(subject, fields.memory("subject", memory_id)) if subject else None


def _check_text(text: str) -> None:
    if not 1 <= len(text) <= MAX_TEXT_CHARS:
        raise ValueError(f"memory text must be 1-{MAX_TEXT_CHARS} characters")
