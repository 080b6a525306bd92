"""Users' files (uploads now; imported archives, voice notes and videos later), encrypted on disk.

A file lives at ``<media_dir>/<user id>/<media id>.sealed`` in the chunked sealed format of
`voice_server.security.files`, bound to its owner and id; its row in ``media`` holds the sealed original name,
the content type and the plaintext size. Every method takes the owner's id and filters by it.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from voice_server.security import fields
from voice_server.security.files import read_sealed, write_sealed
from voice_server.security.keys import Keyring, UserKey
from voice_server.stores.postgres import Database

Conn = Any  # a pooled psycopg connection (dict rows), possibly inside the caller's transaction

COLUMNS = "id, name, content_type, size, created_at"


class MediaStore:
    """Encrypted media files and their rows.

    Args:
        db: The database (``media`` table, migration 0004).
        keys: Users' data keys.
        root: The media directory (created 0700).
    """

    def __init__(self, db: Database, keys: Keyring, root: Path) -> None:
        self._db = db
        self._keys = keys
        self.root = root

    def path_for(self, user_id: uuid.UUID, media_id: uuid.UUID) -> Path:
        """Where a file's sealed bytes are."""
        return self.root / str(user_id) / f"{media_id}.sealed"

    async def create(
        self, user_id: uuid.UUID, name: str, content_type: str, body: AsyncIterator[bytes], *, limit: int
    ) -> dict[str, Any]:
        """Seal ``body`` to disk, then record it; returns the new row (name opened).

        Raises:
            ValueError: The body exceeds ``limit`` bytes (nothing is kept).
        """
        media_id = uuid.uuid4()
        key = await self._keys.user_key(self._db.pool, user_id)
        path = self.path_for(user_id, media_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        size = await write_sealed(path, key, fields.media_file(media_id), body, limit)
        try:
            async with self._db.pool.connection() as conn:
                row = await self.insert_row(conn, key, media_id, name, content_type, size)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return await self._open(user_id, row)

    async def insert_row(
        self, conn: Conn, key: UserKey, media_id: uuid.UUID, name: str, content_type: str, size: int
    ) -> dict[str, Any]:
        """Record a file already sealed at `path_for` (on ``conn``: in the caller's transaction, if any);
        returns the row with its name still sealed."""
        cur = await conn.execute(
            "INSERT INTO media (id, user_id, name, content_type, size) VALUES (%s, %s, %s, %s, %s)"
            f" RETURNING {COLUMNS}",
            (media_id, key.user_id, key.seal(name, fields.media_name(media_id)), content_type, size),
        )
        row: dict[str, Any] | None = await cur.fetchone()
        assert row is not None
        return row

    def staging_dir(self, user_id: uuid.UUID, job: uuid.UUID) -> Path:
        """Where a job seals files before its transaction commits (moved to `path_for` at commit; removed,
        with whatever a crash left, when the job fails or its failure is recorded at the next start)."""
        return self.root / str(user_id) / ".staging" / str(job)

    async def list(self, user_id: uuid.UUID, *, limit: int = 100) -> list[dict[str, Any]]:
        """The user's files, newest first."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM media WHERE user_id = %s ORDER BY created_at DESC LIMIT %s", (user_id, limit)
            )
            rows = await cur.fetchall()
        return [await self._open(user_id, row) for row in rows]

    async def get(self, user_id: uuid.UUID, media_id: uuid.UUID) -> dict[str, Any] | None:
        """One file's row, or ``None`` if it is not this user's."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute(
                f"SELECT {COLUMNS} FROM media WHERE id = %s AND user_id = %s", (media_id, user_id)
            )
            row = await cur.fetchone()
        return None if row is None else await self._open(user_id, row)

    async def content(self, user_id: uuid.UUID, media_id: uuid.UUID) -> AsyncIterator[bytes]:
        """The file's plaintext, streamed (check ownership with `get` first)."""
        key = await self._keys.user_key(self._db.pool, user_id)
        async for chunk in read_sealed(self.path_for(user_id, media_id), key, fields.media_file(media_id)):
            yield chunk

    async def delete(self, user_id: uuid.UUID, media_id: uuid.UUID) -> bool:
        """Delete the row and the file; ``False`` if it is not this user's."""
        async with self._db.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM media WHERE id = %s AND user_id = %s", (media_id, user_id))
        if cur.rowcount != 1:
            return False
        self.path_for(user_id, media_id).unlink(missing_ok=True)
        return True

    def erase_files(self, user_id: uuid.UUID) -> None:
        """Remove every file of the user (account erasure; blocking: call from a thread)."""
        shutil.rmtree(self.root / str(user_id), ignore_errors=True)

    async def _open(self, user_id: uuid.UUID, row: dict[str, Any]) -> dict[str, Any]:
        key = await self._keys.user_key(self._db.pool, user_id)
        return {**row, "name": key.open(row["name"], fields.media_name(row["id"]))}
