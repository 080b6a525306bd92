"""Planning: each user's due occurrences become job rows (idempotent: ``ON CONFLICT DO NOTHING``).

A job row is written the moment its occurrence is due, not ahead of time: the schedule itself is the user's
settings, milestones, bond and data, all persisted, so nothing is lost by a restart — the next pass finds
the same occurrences, and their unique keys keep them from being planned twice, by this worker or another.
A day's data scan (memories and imported messages of this date) runs once per user and local date: its
"on this day" row, written even when nothing was found, marks it done.

Cost per pass: one query over all users (settings, bond, last turn, conversation count joined), then per
user whose day is due a few indexed lookups.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.service import open_bond
from voice_server.avatar.proactive import rules
from voice_server.avatar.proactive.rules import DatedMemory, Occurrence, PastMessage, Preferences
from voice_server.avatar.proactive.settings_store import SETTINGS_COLUMNS, milestones_on, preferences_from_row
from voice_server.security import fields
from voice_server.security.keys import Conn, Keyring, UserKey

log = logging.getLogger(__name__)

SCAN_MEMORIES: Final = 200  # dated memories looked at per day scan
SCAN_MESSAGES: Final = 500  # imported messages looked at per day scan

USERS_SQL: Final = (
    "SELECT u.id, u.username, u.display_name, u.created_at, s.user_id AS has_settings, "
    + ", ".join(f"s.{c.strip()}" for c in SETTINGS_COLUMNS.split(","))
    + ", b.affinity, b.trust, b.streak_days, b.last_day, b.last_contact, b.mood, b.turns,"
    " (SELECT max(t.created_at) FROM turns t WHERE t.user_id = u.id) AS last_turn,"
    " (SELECT count(*) FROM conversations c WHERE c.user_id = u.id"
    "  AND EXISTS (SELECT 1 FROM turns t WHERE t.conversation_id = c.id)) AS conversations"
    " FROM users u LEFT JOIN proactive_settings s ON s.user_id = u.id LEFT JOIN bonds b ON b.user_id = u.id"
    " ORDER BY u.created_at"
)


async def _key_if_needed(conn: Conn, keys: Keyring, row: dict[str, Any]) -> UserKey | None:
    if row["birthday"] is None and row["mood"] is None:
        return None  # nothing sealed to open: do not create a data key for a user who has none yet
    return await keys.for_user(conn, row["id"])


def last_contact(row: dict[str, Any]) -> datetime | None:
    """The later of the bond's last contact and the user's last recorded turn."""
    found = [t for t in (row["last_contact"], row["last_turn"]) if t is not None]
    return max(found) if found else None


Known = set[tuple[uuid.UUID, str, str]]


async def recent_keys(conn: Conn, now: datetime) -> Known:
    """(user, kind, occurrence) of the jobs due in the last two days: what a pass need not insert again or
    scan for (day-based occurrences are due today, so this covers them; an older one's insert is a no-op)."""
    cur = await conn.execute(
        "SELECT user_id, kind, occurrence FROM proactive_jobs WHERE due_at >= %s", (now - timedelta(days=2),)
    )
    return {(r["user_id"], r["kind"], r["occurrence"]) for r in await cur.fetchall()}


async def plan_users(conn: Conn, keys: Keyring, now: datetime) -> int:
    """Insert a job for every occurrence that is due for any user; the number of new jobs."""
    known = await recent_keys(conn, now)
    cur = await conn.execute(USERS_SQL)
    created = 0
    for row in await cur.fetchall():
        try:
            created += await plan_user(conn, keys, row, now, known)
        except Exception:  # one user's broken data must not stop everyone else's messages
            log.exception("proactive: planning failed for one user; skipped this pass")
    return created


async def plan_user(conn: Conn, keys: Keyring, row: dict[str, Any], now: datetime, known: Known | None = None) -> int:
    """Insert the due jobs of one user (a `USERS_SQL` row) that ``known`` (`recent_keys`) does not list; the
    number of new ones."""
    known = known if known is not None else set()
    user_id: uuid.UUID = row["id"]
    key = await _key_if_needed(conn, keys, row)
    prefs = preferences_from_row(key, row) if row["has_settings"] is not None and key is not None else (
        _prefs_without_birthday(row))
    state = open_bond(key, row)
    created_at: datetime = row["created_at"]
    found: list[Occurrence] = []
    for occurrence in (
        rules.greeting(prefs, created_at, now),
        # The bond as it was at the last contact sets the delay: a fixed due time, not one that recedes as the
        # bond decays during the very silence being measured.
        rules.checkin(prefs, last_contact(row), bond.reach_out(state, state.last_contact or now), now),
        rules.streak(prefs, state.streak_days, state.last_day, now),
        rules.conversation_count(int(row["conversations"]), now),
    ):
        if occurrence is not None:
            found.append(occurrence)
    today = prefs.local(now).date()
    if rules.day_due(prefs, None, now):
        found += rules.dated_milestones(prefs, await milestones_on(conn, row["id"], today), now)
    if rules.day_due(prefs, created_at, now):
        if (user_id, "on_this_day", f"on_this_day:{today.isoformat()}") not in known:
            user_key = key or await keys.for_user(conn, row["id"])
            memories = await dated_memories(conn, user_key, today)
            messages = await past_messages(conn, user_key, today)
            found += rules.day_scan(prefs, created_at, memories, messages, now)
    return await insert_jobs(conn, user_id, [o for o in found if (user_id, o.kind, o.key) not in known])


def _prefs_without_birthday(row: dict[str, Any]) -> Preferences:
    if row["has_settings"] is None:
        return Preferences()
    kinds: frozenset[rules.Kind] = frozenset(k for k in rules.KINDS if k in set(row["disabled_kinds"]))
    return Preferences(row["timezone"], row["morning_time"], row["quiet_start"], row["quiet_end"],
                       int(row["checkin_after_days"]), kinds, None)


async def insert_jobs(conn: Conn, user_id: uuid.UUID, found: list[Occurrence]) -> int:
    """Insert ``found`` as jobs (an occurrence already planned is left alone); the number inserted. An
    "on this day" occurrence with nothing to share is recorded as skipped, to mark the day scanned."""
    created = 0
    for o in found:
        empty = o.kind == "on_this_day" and not o.grounding
        cur = await conn.execute(
            "INSERT INTO proactive_jobs (user_id, kind, occurrence, due_at, expires_at, grounding, state, outcome,"
            " finished_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, kind, occurrence)"
            " DO NOTHING RETURNING id",
            (user_id, o.kind, o.key, o.due_at, o.expires_at, json.dumps(o.grounding),
             "skipped" if empty else "pending", "nothing_found" if empty else None, o.due_at if empty else None),
        )
        if await cur.fetchone() is not None and not empty:
            created += 1
    return created


async def dated_memories(conn: Conn, key: UserKey, today: date) -> list[DatedMemory]:
    """The user's live memories whose event date falls on ``today``'s month and day, texts opened."""
    months, days = rules.month_days(today)
    cur = await conn.execute(
        "SELECT id, kind, text, event_date, importance FROM memories WHERE user_id = %s AND superseded_at IS NULL"
        " AND event_date IS NOT NULL AND (extract(month FROM event_date)::int, extract(day FROM event_date)::int)"
        " IN (SELECT * FROM unnest(%s::int[], %s::int[])) ORDER BY importance DESC, event_date DESC LIMIT %s",
        (key.user_id, months, days, SCAN_MEMORIES),
    )
    return [
        DatedMemory(
            r["id"],
            r["kind"],
            key.open(r["text"], fields.memory("text", r["id"])),
            r["event_date"],
            float(r["importance"]),
        )
        for r in await cur.fetchall()
    ]


async def past_messages(conn: Conn, key: UserKey, today: date) -> list[PastMessage]:
    """The user's own imported messages written on ``today``'s month and day in earlier years (their dates
    read as UTC: that is how import stores times without a zone), texts opened."""
    months, days = rules.month_days(today)
    cur = await conn.execute(
        "SELECT id, text, at FROM imported_messages WHERE user_id = %s AND is_user AND at IS NOT NULL"
        " AND at < %s AND (extract(month FROM at AT TIME ZONE 'UTC')::int,"
        " extract(day FROM at AT TIME ZONE 'UTC')::int)"
        " IN (SELECT * FROM unnest(%s::int[], %s::int[])) ORDER BY at LIMIT %s",
        (key.user_id, datetime(today.year, 1, 1, tzinfo=UTC), months, days, SCAN_MESSAGES),
    )
    return [
        PastMessage(r["id"], key.open(r["text"], fields.imported("text", r["id"])), r["at"].astimezone(UTC))
        for r in await cur.fetchall()
    ]
