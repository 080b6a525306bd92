"""Seal the plaintext rows written before encryption at rest existed (migration 0004 marked them with 0x00).

Runs at start-up, before anything is served, on the admin connection (it rewrites tables). A fresh install has
nothing to do and returns at once. After sealing, the tables are rewritten (``VACUUM FULL``) and a checkpoint
taken, so the old plaintext tuple versions leave the table files; WAL segments written before the upgrade may
still hold them until Postgres recycles them (README, "Threat model").
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.rows import dict_row

from voice_server.security import fields
from voice_server.security.keys import Keyring

log = logging.getLogger(__name__)

_BATCH = 500
_LEGACY = "get_byte({0}, 0) = 0"


async def reseal_legacy(admin_url: str, keys: Keyring) -> int:
    """Seal every legacy plaintext turn and memory value; returns how many rows changed."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True, row_factory=dict_row) as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM security_backfill")
        row = await cur.fetchone()
        if row is None or row["n"] == 0:
            return 0
        changed = await _turns(conn, keys) + await _memories(conn, keys)
        await conn.execute("VACUUM FULL turns")
        await conn.execute("VACUUM FULL memories")
        await conn.execute("CHECKPOINT")
        await conn.execute("DELETE FROM security_backfill")
    return changed


async def _turns(conn: psycopg.AsyncConnection[dict[str, Any]], keys: Keyring) -> int:
    legacy = " OR ".join(_LEGACY.format(c) for c in fields.TURN_COLUMNS)
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT id, user_id, conversation_id, turn_index, user_text, reply_text, heard_text FROM turns"
                f" WHERE {legacy} LIMIT %s FOR UPDATE",
                (_BATCH,),
            )
            rows = await cur.fetchall()
            for row in rows:
                key = await keys.for_user(conn, row["user_id"])
                opened = fields.open_turn(key, row)  # legacy values open as plaintext; sealed ones as themselves
                sealed = [
                    key.seal(opened[c], fields.turn(c, row["conversation_id"], row["turn_index"]))
                    for c in fields.TURN_COLUMNS
                ]
                await conn.execute(
                    "UPDATE turns SET user_text = %s, reply_text = %s, heard_text = %s WHERE id = %s",
                    (*sealed, row["id"]),
                )
        total += len(rows)
        if len(rows) < _BATCH:
            return total


async def _memories(conn: psycopg.AsyncConnection[dict[str, Any]], keys: Keyring) -> int:
    total = 0
    while True:
        async with conn.transaction():
            cur = await conn.execute(
                "SELECT id, user_id, text, subject FROM memories WHERE get_byte(text, 0) = 0"
                " OR (subject IS NOT NULL AND get_byte(subject, 0) = 0) LIMIT %s FOR UPDATE",
                (_BATCH,),
            )
            rows = await cur.fetchall()
            for row in rows:
                key = await keys.for_user(conn, row["user_id"])
                text = key.open(row["text"], fields.memory("text", row["id"]))
                subject = key.open_optional(row["subject"], fields.memory("subject", row["id"]))
                await conn.execute(
                    "UPDATE memories SET text = %s, subject = %s, subject_tag = %s WHERE id = %s",
                    (
                        key.seal(text, fields.memory("text", row["id"])),
                        key.seal(subject, fields.memory("subject", row["id"])) if subject else None,
                        key.tag(subject) if subject else None,
                        row["id"],
                    ),
                )
        total += len(rows)
        if len(rows) < _BATCH:
            return total
