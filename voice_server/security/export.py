"""Everything stored about one user, as a ZIP archive streamed to them (decrypted: it is theirs).

Contents: ``manifest.json`` (row counts per table), ``account.json`` (profile, token metadata — never
password or token hashes — and the SIP line settings), ``conversations.json``, ``turns.jsonl`` (every turn,
one JSON object per line), ``memories.jsonl`` (including superseded ones and their embeddings),
``media.json`` plus the files under ``media/``, ``share_links.json``, ``audit.jsonl`` (the user's own
trail), ``imports.jsonl`` and ``imported_messages.jsonl`` (every imported message, opened),
``persona.jsonl`` (the persona's profile and edits), ``persona_examples.jsonl`` (its examples, with their
embeddings), the bond, proactive settings, milestones, proactive jobs and the avatar's own messages
(``bonds.jsonl``, ``proactive_settings.jsonl``, ``milestones.jsonl``, ``proactive_jobs.jsonl``,
``notifications.jsonl``, all opened), and ``import_media.jsonl`` (which files an audio/video import kept:
recordings and their keyframes; ``imports.jsonl`` carries each one's per-recording report). Data keys are not
exported: the archive is plaintext for its owner.

The archive is produced as a stream (ZIP data descriptors, no seeking); rows come from server-side cursors a
batch at a time and files a sealed chunk at a time, so memory stays bounded however much the user has.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from voice_server.avatar.imports.job import IMPORT_COLUMNS, open_import, open_imported
from voice_server.avatar.memory.store import COLUMNS as MEMORY_COLUMNS
from voice_server.avatar.memory.store import open_row
from voice_server.avatar.persona.store import EXPORT_COLUMNS as PERSONA_COLUMNS
from voice_server.avatar.persona.store import open_example, open_export
from voice_server.security import fields
from voice_server.security.audit import AuditLog
from voice_server.security.keys import Keyring
from voice_server.sip.routing import LineDirectory
from voice_server.stores.postgres import Database
from voice_server.user_files import MediaStore

# Tables holding a user's rows and whether the export covers them; a new table with a user_id column must be
# added here (tests/server/test_privacy.py fails otherwise). Key material and the audit log's other users'
# rows are deliberately not exported.
EXPORTED_TABLES = (
    "users", "api_tokens", "conversations", "turns", "memories", "media", "share_links", "audit_log", "sip_lines",
    "imports", "imported_messages", "personas", "persona_examples", "bonds", "proactive_settings", "milestones",
    "proactive_jobs", "notifications", "import_media",
)
NOT_EXPORTED = {"user_keys": "the wrapped data key: the archive is already decrypted"}
_BATCH = 500


class _Sink:
    """A write-only, non-seekable file for `zipfile` that hands out what was written so far."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._offset = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _default(obj: Any) -> Any:
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, uuid.UUID):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if hasattr(obj, "to_list"):  # pgvector's Vector (an embedding)
        return [round(float(x), 6) for x in obj.to_list()]
    return str(obj)


def _json(value: Any) -> bytes:
    return json.dumps(value, default=_default, ensure_ascii=False, indent=1).encode()


def _json_line(value: Any) -> bytes:
    return json.dumps(value, default=_default, ensure_ascii=False).encode() + b"\n"


async def export_archive(
    db: Database, keys: Keyring, media: MediaStore, audit: AuditLog, user_id: uuid.UUID
) -> AsyncIterator[bytes]:
    """Yield the ZIP archive of ``user_id``'s data, piece by piece."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
    counts: dict[str, int] = {}

    def add(name: str, value: Any) -> bytes:
        archive.writestr(name, _json(value))
        return sink.take()

    async with db.pool.connection() as conn:
        key = await keys.for_user(conn, user_id)
        cur = await conn.execute(
            "SELECT id, username, display_name, is_admin, created_at FROM users WHERE id = %s", (user_id,)
        )
        account = await cur.fetchone()
        cur = await conn.execute(
            "SELECT id, name, scopes, created_at, expires_at, last_used_at, revoked_at FROM api_tokens"
            " WHERE user_id = %s ORDER BY created_at",
            (user_id,),
        )
        tokens = await cur.fetchall()
        cur = await conn.execute(
            "SELECT id, avatar, channel, started_at, updated_at, ended_at FROM conversations WHERE user_id = %s"
            " ORDER BY started_at",
            (user_id,),
        )
        conversations = await cur.fetchall()
        cur = await conn.execute(
            "SELECT id, resource_kind, resource_id, created_at, expires_at, revoked_at FROM share_links"
            " WHERE user_id = %s ORDER BY created_at",
            (user_id,),
        )
        links = await cur.fetchall()
    files = await media.list(user_id, limit=1_000_000)
    line = await LineDirectory(db, keys).get(user_id)
    counts.update(users=1 if account else 0, api_tokens=len(tokens), conversations=len(conversations),
                  share_links=len(links), media=len(files), sip_lines=1 if line else 0)
    sip_line = {"extension": line.extension, "allowed_callers": list(line.allowed_callers)} if line else None
    yield add("account.json", {"user": account, "tokens": tokens, "sip_line": sip_line})
    yield add("conversations.json", conversations)
    yield add("share_links.json", links)
    yield add("media.json", [{**f, "path": f"media/{f['id']}/{_safe(f['name'])}"} for f in files])

    # The row-heavy parts (an imported life can be a million rows) are JSON Lines written from server-side
    # cursors, a batch at a time: memory stays bounded whatever the user's history holds.
    async def opened_turn(row: dict[str, Any]) -> dict[str, Any]:
        return fields.open_turn(key, row)

    async def opened_memory(row: dict[str, Any]) -> dict[str, Any]:
        return open_row(key, row)

    async def opened_import(row: dict[str, Any]) -> dict[str, Any]:
        return open_import(key, row)

    async def opened_message(row: dict[str, Any]) -> dict[str, Any]:
        return open_imported(key, row)

    async def opened_persona(row: dict[str, Any]) -> dict[str, Any]:
        return open_export(key, row)

    async def opened_example(row: dict[str, Any]) -> dict[str, Any]:
        return open_example(key, row)

    async def opened_audit(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "source": await audit.open_source(row)}

    async def opened_bond(row: dict[str, Any]) -> dict[str, Any]:
        mood = key.open_optional(row["mood"], fields.bond_mood(user_id))
        return {**row, "mood": json.loads(mood) if mood is not None else None}

    async def opened_settings(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "birthday": key.open_optional(row["birthday"], fields.proactive_birthday(user_id))}

    async def opened_milestone(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "title": key.open(row["title"], fields.milestone_title(row["id"]))}

    async def as_is(row: dict[str, Any]) -> dict[str, Any]:
        return row

    async def opened_notification(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "text": key.open(row["text"], fields.notification_text(row["id"]))}

    parts: list[tuple[str, str, str, tuple[Any, ...], Any]] = [
        ("turns", "turns.jsonl",
         "SELECT conversation_id, turn_index, user_text, reply_text, heard_text, interrupted, marks, created_at"
         " FROM turns WHERE user_id = %s ORDER BY conversation_id, turn_index", (user_id,), opened_turn),
        ("memories", "memories.jsonl",
         f"SELECT {MEMORY_COLUMNS}, embedding FROM memories WHERE user_id = %s ORDER BY created_at", (user_id,),
         opened_memory),
        ("imports", "imports.jsonl",
         f"SELECT {IMPORT_COLUMNS} FROM imports WHERE user_id = %s ORDER BY created_at", (user_id,), opened_import),
        ("imported_messages", "imported_messages.jsonl",
         "SELECT id, import_id, source, conversation, sender, text, at, is_user, attachment FROM imported_messages"
         " WHERE user_id = %s ORDER BY at, id", (user_id,), opened_message),
        ("personas", "persona.jsonl", f"SELECT {PERSONA_COLUMNS} FROM personas WHERE user_id = %s", (user_id,),
         opened_persona),
        ("persona_examples", "persona_examples.jsonl",
         "SELECT id, text, embedding FROM persona_examples WHERE user_id = %s ORDER BY id", (user_id,),
         opened_example),
        ("bonds", "bonds.jsonl",
         "SELECT affinity, trust, streak_days, last_day, last_contact, mood, turns, updated_at FROM bonds"
         " WHERE user_id = %s", (user_id,), opened_bond),
        ("proactive_settings", "proactive_settings.jsonl",
         "SELECT timezone, morning_time, quiet_start, quiet_end, checkin_after_days, disabled_kinds, birthday,"
         " updated_at FROM proactive_settings WHERE user_id = %s", (user_id,), opened_settings),
        ("milestones", "milestones.jsonl",
         "SELECT id, title, date, kind, created_at FROM milestones WHERE user_id = %s ORDER BY created_at, id",
         (user_id,), opened_milestone),
        ("proactive_jobs", "proactive_jobs.jsonl",
         "SELECT id, kind, occurrence, due_at, expires_at, state, outcome, grounding, attempts, notification_id,"
         " created_at, finished_at FROM proactive_jobs WHERE user_id = %s ORDER BY created_at, id", (user_id,), as_is),
        ("notifications", "notifications.jsonl",
         "SELECT id, kind, occurrence, text, memory_ids, message_ids, source, created_at, delivered_at, read_at"
         " FROM notifications WHERE user_id = %s ORDER BY created_at, id", (user_id,), opened_notification),
        ("import_media", "import_media.jsonl",
         "SELECT media_id, import_id, kind, source_id, offset_s, seconds FROM import_media WHERE user_id = %s"
         " ORDER BY import_id, kind DESC, offset_s", (user_id,), as_is),
        ("audit_log", "audit.jsonl",
         "SELECT seq, at, actor_id, user_id, action, resource, outcome, status, source FROM audit_log"
         " WHERE user_id = %s OR actor_id = %s ORDER BY seq", (user_id, user_id), opened_audit),
    ]
    for table, name, sql, params, opened in parts:
        counts[table] = 0
        async with db.pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(name=f"export_{table}")
            await cursor.execute(sql, params)
            with archive.open(name, "w", force_zip64=True) as member:
                while rows := await cursor.fetchmany(_BATCH):
                    for row in rows:
                        member.write(_json_line(await opened(row)))
                    counts[table] += len(rows)
                    yield sink.take()
        yield sink.take()

    for f in files:
        info = zipfile.ZipInfo(f"media/{f['id']}/{_safe(f['name'])}", date_time=_zip_time(f["created_at"]))
        info.compress_type = zipfile.ZIP_STORED  # media is compressed already; storing keeps export fast
        with archive.open(info, "w", force_zip64=True) as member:
            async for chunk in media.content(user_id, f["id"]):
                member.write(chunk)
                yield sink.take()
        yield sink.take()
    manifest = {"format": 2, "user_id": user_id, "exported_at": datetime.now(UTC), "tables": counts}
    yield add("manifest.json", manifest)
    archive.close()
    yield sink.take()


def _safe(name: str) -> str:
    """A file name that cannot escape its folder in the archive."""
    cleaned = "".join(c if c.isalnum() or c in "._- " else "_" for c in name).strip(". ")
    return cleaned[:120] or "file"


def _zip_time(at: datetime) -> tuple[int, int, int, int, int, int]:
    t = at.astimezone(UTC)
    return (max(t.year, 1980), t.month, t.day, t.hour, t.minute, t.second)
