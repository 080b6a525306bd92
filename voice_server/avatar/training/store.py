"""The one owner of ``training_jobs``, ``tuned_models`` and ``model_choices`` (migration 0012), and of the sealed
model files under ``<data dir>/tuned/<user>/<model>/``.

Every function takes the owner's id (or key) and filters by it, so another user's ids are simply not found.
Results, errors and evaluations are sealed with the owner's data key; a model's files are sealed with the same
key in the chunked format of `voice_server.security.files` and are opened only into a RAM-backed directory
(`open_model_files`), so no plaintext weights derived from a person's messages sit on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg.types.json import Jsonb

from voice_server.security import fields
from voice_server.security.files import FileSealer, open_records
from voice_server.security.keys import Conn, UserKey
from voice_server.stores.user_rows import UserRows

JOB_COLUMNS = (
    "id, user_id, state, stage, minutes, max_steps, step, total_steps, losses, result, error, model_id, created_at,"
    " finished_at"
)
MODEL_COLUMNS = "id, user_id, job_id, base, passed, evaluation, bytes, created_at"
MAX_CURVE_POINTS = 400  # the loss curve is thinned to this many points (every other one dropped when full)
WEIGHT_FILES = ("config.json", "model.bin", "vocabulary.json")  # what CTranslate2 loads
# What `models.llm.CT2Llm` reads beside the weights; a tuned model shares them with its base model.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
              "chat_template.jinja")
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")  # the LoRA adapter, for the export
RAM_DIR = Path("/dev/shm")


# ------------------------------------------------------------------------------------------------ jobs


async def create_job(
    conn: Conn, user_id: uuid.UUID, *, minutes: float, max_steps: int, worker: str
) -> dict[str, Any] | None:
    """A new queued job, or ``None`` when the user has one queued or running already."""
    cur = await conn.execute(
        "SELECT 1 FROM training_jobs WHERE user_id = %s AND state IN ('queued', 'running') FOR UPDATE",
        (user_id,),
    )
    if await cur.fetchone() is not None:
        return None
    cur = await conn.execute(
        "INSERT INTO training_jobs (id, user_id, state, minutes, max_steps, worker) VALUES (%s, %s, 'queued', %s,"
        f" %s, %s) RETURNING {JOB_COLUMNS}",
        (uuid.uuid4(), user_id, minutes, max_steps, worker),
    )
    row: dict[str, Any] | None = await cur.fetchone()
    return row


async def get_job(conn: Conn, key: UserKey, job_id: uuid.UUID) -> dict[str, Any] | None:
    """The key's user's job, opened (`open_job`); ``None`` when it is not theirs."""
    cur = await conn.execute(
        f"SELECT {JOB_COLUMNS} FROM training_jobs WHERE id = %s AND user_id = %s", (job_id, key.user_id)
    )
    row = await cur.fetchone()
    return None if row is None else open_job(key, row)


async def list_jobs(conn: Conn, key: UserKey, limit: int = 20) -> list[dict[str, Any]]:
    """The key's user's newest jobs first, opened."""
    cur = await conn.execute(
        f"SELECT {JOB_COLUMNS} FROM training_jobs WHERE user_id = %s ORDER BY created_at DESC LIMIT %s",
        (key.user_id, limit),
    )
    return [open_job(key, row) for row in await cur.fetchall()]


def open_job(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A job row with ``result`` (JSON) and ``error`` opened."""
    opened = dict(row)
    result = key.open_optional(row["result"], fields.training_job("result", row["id"]))
    opened["result"] = json.loads(result) if result else None
    opened["error"] = key.open_optional(row["error"], fields.training_job("error", row["id"]))
    return opened


async def set_job(
    conn: Conn,
    key: UserKey,
    job_id: uuid.UUID,
    *,
    state: str | None = None,
    stage: str | None = None,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    model_id: uuid.UUID | None = None,
) -> None:
    """Update a job; a final ``state`` also stamps ``finished_at``. A finished job is never changed again
    (a cancel that raced the end keeps what happened first)."""
    sets: list[str] = []
    values: list[Any] = []
    if state is not None:
        sets.append("state = %s")
        values.append(state)
        if state in ("done", "failed", "cancelled"):
            sets.append("finished_at = now()")
    if stage is not None:
        sets.append("stage = %s")
        values.append(stage)
    if error is not None:
        sets.append("error = %s")
        values.append(key.seal(error, fields.training_job("error", job_id)))
    if result is not None:
        sets.append("result = %s")
        values.append(key.seal(json.dumps(result), fields.training_job("result", job_id)))
    if model_id is not None:
        sets.append("model_id = %s")
        values.append(model_id)
    if not sets:
        return
    await conn.execute(
        f"UPDATE training_jobs SET {', '.join(sets)} WHERE id = %s AND user_id = %s"
        " AND state IN ('queued', 'running')",
        (*values, job_id, key.user_id),
    )


async def set_progress(
    conn: Conn, job_id: uuid.UUID, step: int, total: int, curve: Sequence[tuple[int, float]]
) -> None:
    """Record training progress (counts and the thinned loss curve: numbers only, nothing sealed)."""
    await conn.execute(
        "UPDATE training_jobs SET step = %s, total_steps = %s, losses = %s WHERE id = %s",
        (step, total, Jsonb([list(point) for point in curve]), job_id),
    )


async def fail_interrupted(conn: Conn, worker: str) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Mark this worker's queued or running jobs failed (the server stopped under them); their (user, job) ids.
    Their training checkpoints survive in RAM-backed work directories only until the machine restarts, so a new
    job starts over; the error says so."""
    cur = await conn.execute(
        "UPDATE training_jobs SET state = 'failed', finished_at = now() WHERE worker = %s"
        " AND state IN ('queued', 'running') RETURNING user_id, id",
        (worker,),
    )
    return [(row["user_id"], row["id"]) for row in await cur.fetchall()]


# ---------------------------------------------------------------------------------------------- models


async def add_model(
    conn: Conn, key: UserKey, model_id: uuid.UUID, job_id: uuid.UUID, base: str, passed: bool,
    evaluation: dict[str, Any], size: int,
) -> None:
    """Record a tuned model whose files were sealed with `seal_model_files`."""
    await conn.execute(
        f"INSERT INTO tuned_models ({MODEL_COLUMNS.replace(', created_at', '')}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (model_id, key.user_id, job_id, base, passed,
         key.seal(json.dumps(evaluation), fields.tuned_model(model_id)), size),
    )


def open_model(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    """A ``tuned_models`` row with its evaluation opened."""
    return {**row, "evaluation": json.loads(key.open(row["evaluation"], fields.tuned_model(row["id"])))}


async def get_model(conn: Conn, key: UserKey, model_id: uuid.UUID) -> dict[str, Any] | None:
    """The key's user's model (`open_model`), or ``None``."""
    cur = await conn.execute(
        f"SELECT {MODEL_COLUMNS} FROM tuned_models WHERE id = %s AND user_id = %s", (model_id, key.user_id)
    )
    row = await cur.fetchone()
    return None if row is None else open_model(key, row)


async def list_models(conn: Conn, key: UserKey) -> list[dict[str, Any]]:
    """The key's user's models, newest first."""
    cur = await conn.execute(
        f"SELECT {MODEL_COLUMNS} FROM tuned_models WHERE user_id = %s ORDER BY created_at DESC", (key.user_id,)
    )
    return [open_model(key, row) for row in await cur.fetchall()]


async def choice(conn: Conn, user_id: uuid.UUID) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """(the active tuned model, the previous one); ``(None, None)``: the base model answers."""
    cur = await conn.execute("SELECT active, previous FROM model_choices WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return (None, None) if row is None else (row["active"], row["previous"])


async def choose(conn: Conn, user_id: uuid.UUID, model_id: uuid.UUID | None) -> None:
    """Make ``model_id`` (one of the user's models, checked by the caller; ``None``: the base model) answer
    the user; what answered before becomes ``previous`` (unless it is the same)."""
    await conn.execute(
        "INSERT INTO model_choices (user_id, active, previous) VALUES (%s, %s, NULL)"
        " ON CONFLICT (user_id) DO UPDATE SET previous = CASE WHEN model_choices.active IS DISTINCT FROM"
        " EXCLUDED.active THEN model_choices.active ELSE model_choices.previous END, active = EXCLUDED.active,"
        " changed_at = now()",
        (user_id, model_id),
    )


async def delete_model(conn: Conn, user_id: uuid.UUID, model_id: uuid.UUID) -> bool:
    """Forget the user's model row (files: `remove_model_files`); whether there was one."""
    cur = await conn.execute("DELETE FROM tuned_models WHERE id = %s AND user_id = %s", (model_id, user_id))
    return bool(cur.rowcount)


def export_jobs(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """The user's training jobs, opened, for their export."""
    return UserRows(
        f"SELECT {JOB_COLUMNS} FROM training_jobs WHERE user_id = %s ORDER BY created_at", (user_id,),
        lambda row: open_job(key, row),
    )


def export_models(key: UserKey, user_id: uuid.UUID) -> UserRows:
    """The user's tuned models with their evaluations, for their export (the adapter files go in as files)."""
    return UserRows(
        f"SELECT {MODEL_COLUMNS} FROM tuned_models WHERE user_id = %s ORDER BY created_at", (user_id,),
        lambda row: open_model(key, row),
    )


def export_choice(user_id: uuid.UUID) -> UserRows:
    """Which model answers the user, for their export."""
    return UserRows("SELECT active, previous, changed_at FROM model_choices WHERE user_id = %s", (user_id,),
                    lambda row: row)


# ----------------------------------------------------------------------------------------------- files


def model_dir(root: Path, user_id: uuid.UUID, model_id: uuid.UUID) -> Path:
    """Where a model's sealed files are (``root`` is ``<data dir>/tuned``)."""
    return root / str(user_id) / str(model_id)


def seal_model_files(source: Path, target: Path, key: UserKey, model_id: uuid.UUID, names: Sequence[str]) -> int:
    """Seal ``names`` from ``source`` into ``target`` (created 0700) as ``<name>.sealed``; the plaintext bytes
    sealed. Blocking: run it on a worker thread. A partial ``target`` is removed when a file fails."""
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    total = 0
    try:
        for name in names:
            sealer = FileSealer(key, fields.tuned_model_file(model_id, name))
            with (source / name).open("rb") as src, (target / f"{name}.sealed").open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(sealer.feed(chunk))
                    total += len(chunk)
                out.write(sealer.finish())
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return total


def open_model_files(source: Path, key: UserKey, model_id: uuid.UUID, names: Sequence[str], into: Path) -> None:
    """Open ``names`` sealed in ``source`` into the directory ``into`` (see `ram_dir`). Blocking.

    Raises:
        voice_server.security.keys.DecryptionError: A file was altered or belongs to another user or model.
    """
    for name in names:
        with (source / f"{name}.sealed").open("rb") as fh, (into / name).open("wb") as out:
            for plain in open_records(fh, key, fields.tuned_model_file(model_id, name)):
                out.write(plain)


def copy_side_files(base_dir: Path, into: Path) -> None:
    """Copy the base model's tokenizer and template files (`SIDE_FILES` present there) into ``into``, so a tuned
    model's weights there load as a `models.llm.CT2Llm`."""
    for name in SIDE_FILES:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, into / name)


def read_adapter(root: Path, key: UserKey, model_id: uuid.UUID) -> list[tuple[str, bytes]]:
    """The model's LoRA adapter files, opened (a few MB), for the owner's export. Blocking."""
    source = model_dir(root, key.user_id, model_id)
    found = []
    for name in ADAPTER_FILES:
        path = source / f"{name}.sealed"
        if path.is_file():
            with path.open("rb") as fh:
                found.append((name, b"".join(open_records(fh, key, fields.tuned_model_file(model_id, name)))))
    return found


def ram_dir(prefix: str) -> Path:
    """A new private (0700) directory in RAM (``/dev/shm``) when the machine has one, else in the temp dir: the
    caller removes it as soon as the model is loaded."""
    base = RAM_DIR if RAM_DIR.is_dir() and os.access(RAM_DIR, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def remove_model_files(root: Path, user_id: uuid.UUID, model_id: uuid.UUID | None = None) -> None:
    """Delete one model's files, or (``model_id`` ``None``) every model file of the user (erasure)."""
    path = root / str(user_id) if model_id is None else model_dir(root, user_id, model_id)
    shutil.rmtree(path, ignore_errors=True)
