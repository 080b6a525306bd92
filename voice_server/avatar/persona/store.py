"""The ``personas`` and ``persona_examples`` tables (SQL only; what goes in them is decided elsewhere).

Every statement filters by the owner's ``user_id``. The profile and edits documents and every example text
are sealed with the owner's data key (`voice_server.security.fields.persona` / ``persona_example``); rows
leave this module opened.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import psycopg

from voice_server.avatar.imports import store as imports_store
from voice_server.avatar.persona.profile import PersonaDoc
from voice_server.security import fields
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

Status = Literal["empty", "building", "ready"]
Vector = npt.NDArray[np.float32]
Conn = psycopg.AsyncConnection[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class PersonaRow:
    """One user's persona row, opened. ``doc`` is ``None`` until a build learned something."""

    status: Status = "empty"
    doc: PersonaDoc | None = None
    edits: dict[str, str] = field(default_factory=dict)
    built_at: datetime | None = None
    messages: int = 0
    imports: int = 0
    examples: int = 0


def _open(key: UserKey, user_id: uuid.UUID, row: dict[str, Any]) -> PersonaRow:
    doc = None
    if row["profile"] is not None:
        doc = PersonaDoc.from_json(json.loads(key.open(row["profile"], fields.persona("profile", user_id))))
    edits: dict[str, str] = {}
    if row["edits"] is not None:
        edits = dict(json.loads(key.open(row["edits"], fields.persona("edits", user_id))))
    return PersonaRow(row["status"], doc, edits, row["built_at"], row["messages"], row["imports"], row["examples"])


EXPORT_COLUMNS = "user_id, status, profile, edits, built_at, messages, imports, examples, updated_at"


def open_export(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A ``personas`` row (`EXPORT_COLUMNS`) for the owner's export: its profile and edits opened."""
    opened = _open(key, row["user_id"], row)
    return {**row, "profile": opened.doc.to_json() if opened.doc else None, "edits": opened.edits}


def open_example(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A ``persona_examples`` row with its text opened."""
    return {**row, "text": key.open(row["text"], fields.persona_example(row["id"]))}


def export_persona(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """``user_id``'s persona row (`open_export`), for their export."""
    return UserRows(f"SELECT {EXPORT_COLUMNS} FROM personas WHERE user_id = %s", (user_id,),
                    functools.partial(open_export, key))


def export_examples(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """``user_id``'s persona examples, with their embeddings (`open_example`), for their export."""
    return UserRows("SELECT id, text, embedding FROM persona_examples WHERE user_id = %s ORDER BY id", (user_id,),
                    functools.partial(open_example, key))


class PersonaStore:
    """Reads and writes one user's persona at a time."""

    def __init__(self, db: Database, keys: Keyring) -> None:
        self._db = db
        self._keys = keys

    async def load(self, user_id: uuid.UUID) -> PersonaRow:
        """The user's persona (an empty one when none was ever stored).

        Raises:
            voice_server.security.keys.DecryptionError: A sealed document does not belong to this row.
        """
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT status, profile, edits, built_at, messages, imports, examples FROM personas WHERE user_id = %s",
                (user_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return PersonaRow()
            key = await self._keys.for_user(conn, user_id)
        return _open(key, user_id, row)

    async def set_status(self, user_id: uuid.UUID, status: Status) -> None:
        """Mark the persona ``building`` (a rebuild was asked for) or back to what its profile says."""
        async with self._db.pool.connection() as conn:
            # ``FROM users`` is only an existence guard inside the one statement (here and in `save_edits`): a user
            # erased meanwhile gets no row instead of a foreign-key error; nothing of the account is read.
            await conn.execute(
                "INSERT INTO personas (user_id, status) SELECT id, %s FROM users WHERE id = %s"
                " ON CONFLICT (user_id) DO UPDATE SET status = excluded.status, updated_at = now()",
                (status, user_id),
            )

    async def settle_status(self, user_id: uuid.UUID) -> None:
        """After a failed build: ``ready`` again when an earlier build's profile exists, else ``empty``."""
        async with self._db.pool.connection() as conn:
            await conn.execute(
                "UPDATE personas SET status = CASE WHEN profile IS NULL THEN 'empty' ELSE 'ready' END,"
                " updated_at = now() WHERE user_id = %s",
                (user_id,),
            )

    async def save_edits(self, user_id: uuid.UUID, edits: Mapping[str, str]) -> None:
        """Replace the user's edits (an empty mapping removes them all)."""
        async with self._db.pool.connection() as conn:
            key = await self._keys.for_user(conn, user_id)
            sealed = key.seal(json.dumps(dict(edits)), fields.persona("edits", user_id)) if edits else None
            await conn.execute(
                "INSERT INTO personas (user_id, edits) SELECT id, %s FROM users WHERE id = %s"
                " ON CONFLICT (user_id) DO UPDATE SET edits = excluded.edits, updated_at = now()",
                (sealed, user_id),
            )

    async def save_build(
        self,
        user_id: uuid.UUID,
        doc: PersonaDoc | None,
        *,
        messages: int,
        imports: int,
        examples: Sequence[str],
        vectors: npt.NDArray[np.float32],
    ) -> None:
        """Store a finished build in one transaction: the profile, its counts, ``ready`` (``empty`` when
        ``doc`` is ``None``), and the examples replacing the previous ones. The edits are left alone."""
        async with self._db.pool.connection() as conn, conn.transaction():
            key = await self._keys.for_user(conn, user_id)
            sealed = key.seal(json.dumps(doc.to_json()), fields.persona("profile", user_id)) if doc else None
            status: Status = "ready" if doc is not None else "empty"
            await conn.execute(
                "INSERT INTO personas (user_id, status, profile, built_at, messages, imports, examples)"
                " VALUES (%s, %s, %s, now(), %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET"
                " status = excluded.status, profile = excluded.profile, built_at = excluded.built_at,"
                " messages = excluded.messages, imports = excluded.imports, examples = excluded.examples,"
                " updated_at = now()",
                (user_id, status, sealed, messages, imports, len(examples)),
            )
            await conn.execute("DELETE FROM persona_examples WHERE user_id = %s", (user_id,))
            rows = []
            for text, vector in zip(examples, vectors, strict=True):
                example_id = uuid.uuid4()
                rows.append((example_id, user_id, key.seal(text, fields.persona_example(example_id)), vector))
            if rows:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO persona_examples (id, user_id, text, embedding) VALUES (%s, %s, %s, %s)", rows
                    )

    async def nearest_examples(self, user_id: uuid.UUID, vector: Vector, limit: int) -> list[str]:
        """The user's ``limit`` examples most similar to ``vector`` (cosine), best first: an exact scan of
        their rows (at most a few thousand) through the per-user index."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, text FROM persona_examples WHERE user_id = %s ORDER BY embedding <=> %s LIMIT %s",
                (user_id, vector, limit),
            )
            rows = await cur.fetchall()
            if not rows:
                return []
            key = await self._keys.for_user(conn, user_id)
        return [key.open(row["text"], fields.persona_example(row["id"])) for row in rows]

    async def stale(self) -> list[uuid.UUID]:
        """Users whose persona must be built again at start-up: a build was asked for or running when the
        server stopped, or an import finished after the last build (e.g. by ``soma import``)."""
        async with self._db.pool.connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT user_id, status, built_at FROM personas")
            personas = {row["user_id"]: row for row in await cur.fetchall()}
            imported = await imports_store.last_done_by_user(conn)
        stale = {user_id for user_id, row in personas.items() if row["status"] == "building"}
        for user_id, finished in imported.items():
            built = personas[user_id]["built_at"] if user_id in personas else None
            if built is None or (finished is not None and finished > built):
                stale.add(user_id)
        return sorted(stale)
