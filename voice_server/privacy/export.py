"""Everything stored about one user, as a ZIP archive streamed to them (decrypted: it is theirs).

Contents: ``manifest.json`` (row counts per table), ``account.json`` (profile with the timezone, token metadata —
never password or token hashes — and the SIP line settings), ``conversations.json``, ``turns.jsonl`` (every turn,
one JSON object per line), ``memories.jsonl`` (including superseded ones and their embeddings),
``episodes.jsonl`` (episodic memory: every remembered message and call turn, both speakers, opened),
``media.json`` plus the files under ``media/``, ``share_links.json``, ``audit.jsonl`` (the user's own
trail), ``imports.jsonl`` and ``imported_messages.jsonl`` (every imported message, opened),
``persona.jsonl`` (the persona's profile and edits), ``persona_examples.jsonl`` (its examples, with their
embeddings), the bond, proactive settings, milestones, proactive jobs and the avatar's own messages
(``bonds.jsonl``, ``proactive_settings.jsonl``, ``milestones.jsonl``, ``proactive_jobs.jsonl``,
``notifications.jsonl``, all opened), and ``import_media.jsonl`` (which files an audio/video import kept:
recordings and their keyframes; ``imports.jsonl`` carries each one's per-recording report), and the voice:
``voice_clips.jsonl`` (what was measured from each recording: quality, both speaker embeddings, pitch),
``voices.jsonl`` (matched voices with their exact pack, brought Piper voices' configs; their weights are in
``media/``), ``voice_choice.jsonl`` and ``voice_jobs.jsonl``; the avatar's own model: ``training_jobs.jsonl``,
``tuned_models.jsonl``, ``model_choice.jsonl`` and each model's LoRA adapter in ``tuned/<id>/``. Data keys are
not exported: the archive is plaintext for its owner.

The archive is produced as a stream (ZIP data descriptors, no seeking); rows come from server-side cursors a
batch at a time and files a sealed chunk at a time, so memory stays bounded however much the user has.

Each feature reads its own rows (a `UserRows` or a list from a function in its module); this module only lays
them out. It imports the features, never the other way round. Format 3 (since the timezone moved to the
account): the timezone is in ``account.json``'s user, no longer in ``proactive_settings.jsonl``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voice_server import accounts, conversations
from voice_server.avatar.bond import service as bond_service
from voice_server.avatar.imports import store as imports
from voice_server.avatar.memory import episodes
from voice_server.avatar.memory import store as memories
from voice_server.avatar.persona import store as persona
from voice_server.avatar.proactive import notifications, planner, settings_store
from voice_server.avatar.training import store as training_store
from voice_server.avatar.voice import store as voice_store
from voice_server.security import share_links
from voice_server.security.audit import AuditLog
from voice_server.security.keys import Keyring
from voice_server.sip.routing import LineDirectory
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows
from voice_server.user_files import MediaStore

# Tables holding a user's rows and whether the export covers them; a new table with a user_id column must be
# added here (tests/server/test_privacy.py fails otherwise). Key material and the audit log's other users'
# rows are deliberately not exported.
EXPORTED_TABLES = (
    "users", "api_tokens", "conversations", "turns", "memories", "media", "share_links", "audit_log", "sip_lines",
    "imports", "imported_messages", "personas", "persona_examples", "bonds", "proactive_settings", "milestones",
    "proactive_jobs", "notifications", "import_media", "voice_clips", "voices", "voice_choices", "voice_jobs",
    "training_jobs", "tuned_models", "model_choices", "episodes",
)
NOT_EXPORTED = {
    "user_keys": "the wrapped data key: the archive is already decrypted",
    "episode_vectors": "embeddings derived from episodes.jsonl's texts",
    "episode_pending": "the indexer's queue: which episodes wait for an embedding",
    "episode_terms": "keyed word-hash counts derived from episodes.jsonl's texts",
    "reflect_pending": "the reflector's queue: which days wait to be summarised",
}
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
    db: Database, keys: Keyring, media: MediaStore, audit: AuditLog, user_id: uuid.UUID,
    tuned_root: Path | None = None,
) -> AsyncIterator[bytes]:
    """Yield the ZIP archive of ``user_id``'s data, piece by piece. ``tuned_root`` (``<data dir>/tuned``): the
    LoRA adapters of their tuned models go in as ``tuned/<model id>/`` (the merged weights are derived from the
    adapter and the public base model, so they are left out)."""
    sink = _Sink()
    archive = zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED)
    counts: dict[str, int] = {}

    def add(name: str, value: Any) -> bytes:
        archive.writestr(name, _json(value))
        return sink.take()

    async with db.pool.connection() as conn:
        key = await keys.for_user(conn, user_id)
        account, tokens = await accounts.export_account(conn, user_id)
        started = await conversations.export_conversations(conn, user_id)
        links = await share_links.export_links(conn, user_id)
    files = await media.list(user_id, limit=1_000_000)
    line = await LineDirectory(db, keys).get(user_id)
    counts.update(users=1 if account else 0, api_tokens=len(tokens), conversations=len(started),
                  share_links=len(links), media=len(files), sip_lines=1 if line else 0)
    sip_line = {"extension": line.extension, "allowed_callers": list(line.allowed_callers)} if line else None
    yield add("account.json", {"user": account, "tokens": tokens, "sip_line": sip_line})
    yield add("conversations.json", started)
    yield add("share_links.json", links)
    yield add("media.json", [{**f, "path": f"media/{f['id']}/{_safe(f['name'])}"} for f in files])

    # The row-heavy parts (an imported life can be a million rows) are JSON Lines written from server-side
    # cursors, a batch at a time: memory stays bounded whatever the user's history holds.
    parts: list[tuple[str, str, UserRows]] = [
        ("turns", "turns.jsonl", conversations.export_turns(key, user_id)),
        ("memories", "memories.jsonl", memories.export_rows(key, user_id)),
        ("episodes", "episodes.jsonl", episodes.export_rows(key, user_id)),
        ("imports", "imports.jsonl", imports.export_imports(key, user_id)),
        ("imported_messages", "imported_messages.jsonl", imports.export_imported(key, user_id)),
        ("personas", "persona.jsonl", persona.export_persona(key, user_id)),
        ("persona_examples", "persona_examples.jsonl", persona.export_examples(key, user_id)),
        ("bonds", "bonds.jsonl", bond_service.export_rows(key)),
        ("proactive_settings", "proactive_settings.jsonl", settings_store.export_settings(key)),
        ("milestones", "milestones.jsonl", settings_store.export_milestones(key)),
        ("proactive_jobs", "proactive_jobs.jsonl", planner.export_jobs(user_id)),
        ("notifications", "notifications.jsonl", notifications.export_rows(key)),
        ("import_media", "import_media.jsonl", imports.export_media(user_id)),
        ("voice_clips", "voice_clips.jsonl", voice_store.export_clips(key, user_id)),
        ("voices", "voices.jsonl", voice_store.export_voices(key, user_id)),
        ("voice_choices", "voice_choice.jsonl", voice_store.export_choice(user_id)),
        ("voice_jobs", "voice_jobs.jsonl", voice_store.export_jobs(user_id)),
        ("training_jobs", "training_jobs.jsonl", training_store.export_jobs(key, user_id)),
        ("tuned_models", "tuned_models.jsonl", training_store.export_models(key, user_id)),
        ("model_choices", "model_choice.jsonl", training_store.export_choice(user_id)),
        ("audit_log", "audit.jsonl", audit.export_rows(user_id)),
    ]
    for table, name, rows_of in parts:
        counts[table] = 0
        async with db.pool.connection() as conn, conn.transaction():
            cursor = conn.cursor(name=f"export_{table}")
            await cursor.execute(rows_of.sql, rows_of.params)
            with archive.open(name, "w", force_zip64=True) as member:
                while rows := await cursor.fetchmany(_BATCH):
                    for row in rows:
                        opened = rows_of.opened(row)
                        member.write(_json_line(await opened if inspect.isawaitable(opened) else opened))
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
    if tuned_root is not None:
        async with db.pool.connection() as conn:
            models = await training_store.list_models(conn, key)
        for model in models:
            for name, data in await asyncio.to_thread(training_store.read_adapter, tuned_root, key, model["id"]):
                archive.writestr(f"tuned/{model['id']}/{name}", data)
                yield sink.take()
    manifest = {"format": 3, "user_id": user_id, "exported_at": datetime.now(UTC), "tables": counts}
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
