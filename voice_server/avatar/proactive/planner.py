"""Planning: each user's due occurrences become job rows (idempotent: ``ON CONFLICT DO NOTHING``).

A job row is written the moment its occurrence is due, not ahead of time: the schedule itself is the user's
settings, milestones, bond and data, all persisted, so nothing is lost by a restart — the next pass finds
the same occurrences, and their unique keys keep them from being planned twice, by this worker or another.
A day's data scan (memories and imported messages of this date) runs once per user and local date: its
"on this day" row, written even when nothing was found, marks it done.

Cost per pass: one query over all users per table owner (accounts, proactive settings, bonds, conversation
activity — each read through its owner's module and joined here by user id), then per user whose day is due
a few indexed lookups.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

from voice_server import accounts, conversations
from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.service import bond_rows, open_bond
from voice_server.avatar.imports import store as imports_store
from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.proactive import rules
from voice_server.avatar.proactive.rules import DatedMemory, Occurrence, PastMessage
from voice_server.avatar.proactive.settings_store import milestones_on, preferences_from_row, settings_rows
from voice_server.security.keys import Conn, Keyring, UserKey
from voice_server.stores.user_rows import UserRows

log = logging.getLogger(__name__)

SCAN_MEMORIES: Final = 200  # dated memories looked at per day scan
SCAN_MESSAGES: Final = 500  # imported messages looked at per day scan


async def users(conn: Conn) -> list[dict[str, Any]]:
    """Every user, oldest first, as one planning row: the account (`accounts.list_users`), ``settings`` (the
    proactive settings row, ``None`` without one), ``bond`` (the stored bond row, ``None`` without one),
    ``last_turn`` and ``conversations`` (`conversations.activity`).

    Four queries, whatever the number of users, in one read-only REPEATABLE READ transaction: all of them see
    one snapshot, as a single joined query would. Call it outside a transaction (``conn`` in autocommit)."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        accounts_rows = await accounts.list_users(conn)
        ids = [row["id"] for row in accounts_rows]
        settings = await settings_rows(conn, ids)
        bonds = await bond_rows(conn, ids)
        active = await conversations.activity(conn, ids)
    empty = {"last_turn": None, "conversations": 0}
    return [
        {**row, "settings": settings.get(row["id"]), "bond": bonds.get(row["id"]),
         "last_turn": active.get(row["id"], empty)["last_turn"],
         "conversations": active.get(row["id"], empty)["conversations"]}
        for row in accounts_rows
    ]


async def _key_if_needed(conn: Conn, keys: Keyring, row: dict[str, Any]) -> UserKey | None:
    settings, stored = row["settings"], row["bond"]
    if (settings is None or settings["birthday"] is None) and (stored is None or stored["mood"] is None):
        return None  # nothing sealed to open: do not create a data key for a user who has none yet
    return await keys.for_user(conn, row["id"])


def last_contact(row: dict[str, Any]) -> datetime | None:
    """The later of the bond's last contact and the user's last recorded turn."""
    stored = row["bond"]
    found = [t for t in (stored["last_contact"] if stored else None, row["last_turn"]) if t is not None]
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
    created = 0
    for row in await users(conn):
        try:
            created += await plan_user(conn, keys, row, now, known)
        except Exception:  # one user's broken data must not stop everyone else's messages
            log.exception("proactive: planning failed for one user; skipped this pass")
    return created


async def plan_user(conn: Conn, keys: Keyring, row: dict[str, Any], now: datetime, known: Known | None = None) -> int:
    """Insert the due jobs of one user (a `users` row) that ``known`` (`recent_keys`) does not list; the
    number of new ones."""
    known = known if known is not None else set()
    user_id: uuid.UUID = row["id"]
    key = await _key_if_needed(conn, keys, row)
    prefs = preferences_from_row(key, row["settings"], row["timezone"])
    state = open_bond(key, row["bond"])
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
    return [
        DatedMemory(r["id"], r["kind"], r["text"], r["event_date"], float(r["importance"]))
        for r in await memory_store.dated_on(conn, key, months, days, SCAN_MEMORIES)
    ]


async def past_messages(conn: Conn, key: UserKey, today: date) -> list[PastMessage]:
    """The user's own imported messages written on ``today``'s month and day in earlier years (their dates
    read as UTC: that is how import stores times without a zone), texts opened."""
    months, days = rules.month_days(today)
    rows = await imports_store.own_messages_on(conn, key, datetime(today.year, 1, 1, tzinfo=UTC), months, days,
                                               SCAN_MESSAGES)
    return [PastMessage(r["id"], r["text"], r["at"].astimezone(UTC)) for r in rows]


def export_jobs(user_id: uuid.UUID) -> UserRows:
    """The user's proactive jobs for their export (nothing in them is sealed), oldest first."""
    return UserRows("SELECT id, kind, occurrence, due_at, expires_at, state, outcome, grounding, attempts,"
                    " notification_id, created_at, finished_at FROM proactive_jobs WHERE user_id = %s"
                    " ORDER BY created_at, id", (user_id,))
