"""The voice feature's tables (``voice_clips``, ``voices``, ``voice_choices``, ``voice_jobs``, migration 0011).

This module is their one owner: every read and write of them is a function here, each taking the owner's id
and filtering by it, so another user's ids are simply not found. What identifies a person's voice is sealed
with their data key: a clip's measurements (speaker embeddings, pitch), a voice's name and its parameters
(a matched pack, a Piper config); a Piper voice's weights are a sealed media file.
"""

from __future__ import annotations

import functools
import json
import struct
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from voice_server.security import fields
from voice_server.security.keys import Conn, UserKey
from voice_server.stores.user_rows import UserRows

ClipSource = Literal["enrollment", "import"]
VoiceKind = Literal["matched", "piper"]
JobState = Literal["queued", "running", "done", "failed", "cancelled"]
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
VOICE_PREFIX = "voice_"


@dataclass(frozen=True, slots=True)
class StoredClip:
    """One recording's measurements (``features``: ``quality``, ``r``, ``d``, ``traits``, opened)."""

    id: uuid.UUID
    source: ClipSource
    sentence: int | None
    media_id: uuid.UUID | None
    seconds: float
    speech_s: float
    features: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoredVoice:
    """A matched or brought voice; ``params`` opened (`pack_params` / the Piper config JSON)."""

    id: uuid.UUID
    kind: VoiceKind
    name: str
    params: bytes
    media_id: uuid.UUID | None
    similarity_r: float | None
    similarity_d: float | None
    created_at: datetime

    @property
    def public_id(self) -> str:
        """The id clients use (``voice_<hex>``)."""
        return voice_public_id(self.id)


def voice_public_id(voice_id: uuid.UUID) -> str:
    """``voice_<hex>`` for a row of ``voices``."""
    return f"{VOICE_PREFIX}{voice_id.hex}"


def parse_voice_id(public: str) -> uuid.UUID | None:
    """The row id a ``voice_<hex>`` names (``None`` for anything else)."""
    if not public.startswith(VOICE_PREFIX):
        return None
    try:
        return uuid.UUID(hex=public[len(VOICE_PREFIX):])
    except ValueError:
        return None


def pack_params(meta: dict[str, Any], pack: bytes) -> bytes:
    """A matched voice's parameters: its JSON metadata (speed, recipe) and the pack's ``.npy`` bytes, in one
    value (a length-prefixed JSON header, then the pack)."""
    header = json.dumps(meta, separators=(",", ":")).encode()
    return struct.pack(">I", len(header)) + header + pack


def unpack_params(params: bytes) -> tuple[dict[str, Any], bytes]:
    """`pack_params`' inverse.

    Raises:
        ValueError: Not a value `pack_params` made.
    """
    if len(params) < 4:
        raise ValueError("voice parameters are truncated")
    (size,) = struct.unpack(">I", params[:4])
    if 4 + size > len(params):
        raise ValueError("voice parameters are truncated")
    meta = json.loads(params[4 : 4 + size])
    if not isinstance(meta, dict):
        raise ValueError("voice parameters have no metadata")
    return meta, params[4 + size :]


# ------------------------------------------------------------------------------------------------ clips

_CLIP_COLUMNS = "id, source, sentence, media_id, seconds, speech_s, features, created_at"


def _open_clip(key: UserKey, row: dict[str, Any]) -> StoredClip:
    features = json.loads(key.open(row["features"], fields.voice_clip(row["id"])))
    return StoredClip(row["id"], row["source"], row["sentence"], row["media_id"], float(row["seconds"]),
                      float(row["speech_s"]), features, row["created_at"])


async def put_clip(
    conn: Conn,
    key: UserKey,
    *,
    source: ClipSource,
    sentence: int | None,
    media_id: uuid.UUID | None,
    seconds: float,
    speech_s: float,
    features: dict[str, Any],
) -> StoredClip:
    """Store a clip; an enrollment clip replaces the user's earlier reading of the same sentence, an import
    clip the earlier measurement of the same recording. Call inside a transaction."""
    if sentence is not None:
        await conn.execute("DELETE FROM voice_clips WHERE user_id = %s AND sentence = %s", (key.user_id, sentence))
    if media_id is not None:
        await conn.execute("DELETE FROM voice_clips WHERE user_id = %s AND media_id = %s", (key.user_id, media_id))
    clip_id = uuid.uuid4()
    sealed = key.seal(json.dumps(features, separators=(",", ":")), fields.voice_clip(clip_id))
    cur = await conn.execute(
        "INSERT INTO voice_clips (id, user_id, source, sentence, media_id, seconds, speech_s, features)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_CLIP_COLUMNS}",
        (clip_id, key.user_id, source, sentence, media_id, seconds, speech_s, sealed),
    )
    row = await cur.fetchone()
    assert row is not None
    return _open_clip(key, row)


async def clips(conn: Conn, key: UserKey) -> list[StoredClip]:
    """The key owner's clips: enrollment sentences in order, then imported recordings, oldest first."""
    cur = await conn.execute(
        f"SELECT {_CLIP_COLUMNS} FROM voice_clips WHERE user_id = %s"
        " ORDER BY sentence NULLS LAST, created_at, id", (key.user_id,),
    )
    return [_open_clip(key, row) for row in await cur.fetchall()]


async def clip_media_ids(conn: Conn, user_id: uuid.UUID) -> set[uuid.UUID]:
    """The imported recordings already measured for the user's profile."""
    cur = await conn.execute(
        "SELECT media_id FROM voice_clips WHERE user_id = %s AND media_id IS NOT NULL", (user_id,)
    )
    return {row["media_id"] for row in await cur.fetchall()}


async def delete_clip(conn: Conn, user_id: uuid.UUID, clip_id: uuid.UUID) -> bool:
    """Delete one clip; ``False`` when the user has no such clip."""
    cur = await conn.execute("DELETE FROM voice_clips WHERE id = %s AND user_id = %s", (clip_id, user_id))
    return cur.rowcount == 1


async def delete_clips(conn: Conn, user_id: uuid.UUID) -> int:
    """Delete the whole profile (every clip); the count deleted."""
    cur = await conn.execute("DELETE FROM voice_clips WHERE user_id = %s", (user_id,))
    return cur.rowcount


# ------------------------------------------------------------------------------------------------ voices

_VOICE_COLUMNS = "id, kind, name, params, media_id, similarity_r, similarity_d, created_at"


def _open_voice(key: UserKey, row: dict[str, Any]) -> StoredVoice:
    return StoredVoice(
        row["id"], row["kind"], key.open(row["name"], fields.voice("name", row["id"])),
        key.open_bytes(row["params"], fields.voice("params", row["id"])), row["media_id"],
        None if row["similarity_r"] is None else float(row["similarity_r"]),
        None if row["similarity_d"] is None else float(row["similarity_d"]), row["created_at"],
    )


async def add_voice(
    conn: Conn,
    key: UserKey,
    *,
    kind: VoiceKind,
    name: str,
    params: bytes,
    media_id: uuid.UUID | None = None,
    similarity: tuple[float, float] | None = None,
    voice_id: uuid.UUID | None = None,
) -> StoredVoice:
    """Store a voice (sealed name and parameters) and return it."""
    voice_id = voice_id or uuid.uuid4()
    sim_r, sim_d = similarity if similarity is not None else (None, None)
    cur = await conn.execute(
        "INSERT INTO voices (id, user_id, kind, name, params, media_id, similarity_r, similarity_d)"
        f" VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {_VOICE_COLUMNS}",
        (voice_id, key.user_id, kind, key.seal(name, fields.voice("name", voice_id)),
         key.seal_bytes(params, fields.voice("params", voice_id)), media_id, sim_r, sim_d),
    )
    row = await cur.fetchone()
    assert row is not None
    return _open_voice(key, row)


async def voices(conn: Conn, key: UserKey) -> list[StoredVoice]:
    """The key owner's voices, oldest first."""
    cur = await conn.execute(
        f"SELECT {_VOICE_COLUMNS} FROM voices WHERE user_id = %s ORDER BY created_at, id", (key.user_id,)
    )
    return [_open_voice(key, row) for row in await cur.fetchall()]


async def get_voice(conn: Conn, key: UserKey, voice_id: uuid.UUID) -> StoredVoice | None:
    """One of the key owner's voices, or ``None``."""
    cur = await conn.execute(
        f"SELECT {_VOICE_COLUMNS} FROM voices WHERE id = %s AND user_id = %s", (voice_id, key.user_id)
    )
    row = await cur.fetchone()
    return None if row is None else _open_voice(key, row)


async def delete_voice(conn: Conn, user_id: uuid.UUID, voice_id: uuid.UUID) -> uuid.UUID | None:
    """Delete a voice (and un-choose it); its Piper weights' media id, if any, for the caller to remove.
    ``None`` also when the user has no such voice: check with `get_voice` first."""
    cur = await conn.execute(
        "DELETE FROM voices WHERE id = %s AND user_id = %s RETURNING media_id", (voice_id, user_id)
    )
    row = await cur.fetchone()
    await conn.execute(
        "DELETE FROM voice_choices WHERE user_id = %s AND voice = %s", (user_id, voice_public_id(voice_id))
    )
    return None if row is None else row["media_id"]


# ------------------------------------------------------------------------------------------------ choice


async def chosen(conn: Conn, user_id: uuid.UUID) -> str | None:
    """The voice id the user chose for their avatar (``None``: the server's default)."""
    cur = await conn.execute("SELECT voice FROM voice_choices WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return None if row is None else str(row["voice"])


async def choose(conn: Conn, user_id: uuid.UUID, voice: str) -> None:
    """Record the chosen voice id (checked by the caller)."""
    await conn.execute(
        "INSERT INTO voice_choices (user_id, voice) VALUES (%s, %s)"
        " ON CONFLICT (user_id) DO UPDATE SET voice = EXCLUDED.voice, chosen_at = now()", (user_id, voice),
    )


# ------------------------------------------------------------------------------------------------ jobs

_JOB_COLUMNS = "id, user_id, state, done, total, voice_id, default_r, default_d, error, created_at, finished_at"


async def create_job(conn: Conn, user_id: uuid.UUID, total: int) -> dict[str, Any] | None:
    """Queue a match job; ``None`` when the user already has one queued or running."""
    cur = await conn.execute(
        "SELECT id FROM voice_jobs WHERE user_id = %s AND state = ANY(%s) FOR UPDATE", (user_id, list(ACTIVE_STATES))
    )
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(
        f"INSERT INTO voice_jobs (id, user_id, state, total) VALUES (%s, %s, 'queued', %s) RETURNING {_JOB_COLUMNS}",
        (uuid.uuid4(), user_id, total),
    )
    return await cur.fetchone()


async def get_job(conn: Conn, user_id: uuid.UUID, job_id: uuid.UUID) -> dict[str, Any] | None:
    """One of the user's jobs, or ``None``."""
    cur = await conn.execute(f"SELECT {_JOB_COLUMNS} FROM voice_jobs WHERE id = %s AND user_id = %s",
                             (job_id, user_id))
    row: dict[str, Any] | None = await cur.fetchone()
    return row


async def set_job(
    conn: Conn,
    job_id: uuid.UUID,
    *,
    state: JobState | None = None,
    done: int | None = None,
    total: int | None = None,
    voice_id: uuid.UUID | None = None,
    default: tuple[float, float] | None = None,
    error: str | None = None,
) -> None:
    """Update a job's progress or outcome; a final state stamps ``finished_at``. A job already final is left
    as it is (a cancel that raced the job's last step keeps the first outcome)."""
    final = state in ("done", "failed", "cancelled")
    await conn.execute(
        "UPDATE voice_jobs SET state = COALESCE(%s, state), done = COALESCE(%s, done), total = COALESCE(%s, total),"
        " voice_id = COALESCE(%s, voice_id), default_r = COALESCE(%s, default_r), default_d = COALESCE(%s, default_d),"
        " error = COALESCE(%s, error), finished_at = CASE WHEN %s THEN now() ELSE finished_at END"
        " WHERE id = %s AND state = ANY(%s)",
        (state, done, total, voice_id, *(default or (None, None)), error, final, job_id, list(ACTIVE_STATES)),
    )


async def fail_interrupted(conn: Conn) -> int:
    """At start: jobs a stopped server left queued or running are failed (their search is gone)."""
    cur = await conn.execute(
        "UPDATE voice_jobs SET state = 'failed', error = 'the server stopped during the search; start it again',"
        " finished_at = now() WHERE state = ANY(%s)", (list(ACTIVE_STATES),),
    )
    return cur.rowcount


# ------------------------------------------------------------------------------------------------ export


def _export_clip(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    clip = _open_clip(key, row)
    return {"id": clip.id, "source": clip.source, "sentence": clip.sentence, "media_id": clip.media_id,
            "seconds": clip.seconds, "speech_s": clip.speech_s, "features": clip.features,
            "created_at": clip.created_at}


def _export_voice(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    voice = _open_voice(key, row)
    out: dict[str, Any] = {"id": voice.public_id, "kind": voice.kind, "name": voice.name,
                           "media_id": voice.media_id, "similarity_r": voice.similarity_r,
                           "similarity_d": voice.similarity_d, "created_at": voice.created_at}
    if voice.kind == "matched":
        meta, pack = unpack_params(voice.params)
        out.update(meta=meta, pack_npy_hex=pack.hex())  # the exact pack: it loads back with numpy
    else:
        out["config"] = json.loads(voice.params)
    return out


def export_clips(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """The user's voice clips (measurements opened), for their export."""
    return UserRows(f"SELECT {_CLIP_COLUMNS} FROM voice_clips WHERE user_id = %s ORDER BY created_at, id",
                    (user_id,), functools.partial(_export_clip, key))


def export_voices(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """The user's voices (names and parameters opened; a Piper voice's weights are in the media export)."""
    return UserRows(f"SELECT {_VOICE_COLUMNS} FROM voices WHERE user_id = %s ORDER BY created_at, id",
                    (user_id,), functools.partial(_export_voice, key))


def export_choice(user_id: uuid.UUID) -> UserRows:
    """The user's chosen voice."""
    return UserRows("SELECT voice, chosen_at FROM voice_choices WHERE user_id = %s", (user_id,))


def export_jobs(user_id: uuid.UUID) -> UserRows:
    """The user's voice-match jobs."""
    return UserRows(f"SELECT {_JOB_COLUMNS} FROM voice_jobs WHERE user_id = %s ORDER BY created_at, id", (user_id,))
