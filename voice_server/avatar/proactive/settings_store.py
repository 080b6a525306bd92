"""Proactive settings and user-set milestones in Postgres (the birthday and milestone titles sealed).

`Preferences` carries the user's timezone, but the timezone belongs to the account (`voice_server.accounts`):
it is read and written there, in the same transaction as the rest of the settings.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, time
from typing import Any

from voice_server import accounts
from voice_server.avatar.proactive.rules import KINDS, Kind, Milestone, MilestoneKind, Preferences, month_days
from voice_server.security import fields
from voice_server.security.keys import Conn, UserKey
from voice_server.stores.user_rows import UserRows

# The columns of proactive_settings (the timezone is the account's: migration 0010 moved it to users).
SETTINGS_COLUMNS = "morning_time, quiet_start, quiet_end, checkin_after_days, disabled_kinds, birthday"
MAX_MILESTONES = 500


def preferences_from_row(key: UserKey | None, row: dict[str, Any] | None, timezone: str) -> Preferences:
    """A settings row (`SETTINGS_COLUMNS`) and the account's timezone as `Preferences`; ``None`` is the
    defaults. ``key`` opens the birthday; without one (a user with no data key yet) it is left unset."""
    if row is None:
        return Preferences(timezone=timezone)
    birthday = key.open_optional(row["birthday"], fields.proactive_birthday(key.user_id)) if key else None
    kinds: frozenset[Kind] = frozenset(k for k in KINDS if k in set(row["disabled_kinds"]))
    born = date.fromisoformat(birthday) if birthday else None
    return Preferences(timezone, row["morning_time"], row["quiet_start"], row["quiet_end"],
                       int(row["checkin_after_days"]), kinds, born)


async def load_preferences(conn: Conn, key: UserKey) -> Preferences:
    """The user's settings (the defaults when they never saved any)."""
    cur = await conn.execute(f"SELECT {SETTINGS_COLUMNS} FROM proactive_settings WHERE user_id = %s", (key.user_id,))
    row = await cur.fetchone()
    return preferences_from_row(key, row, await accounts.get_timezone(conn, key.user_id))


async def settings_rows(conn: Conn, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The stored settings rows (`SETTINGS_COLUMNS`, birthday still sealed) of those of ``user_ids`` that have
    one, by user id: one query for the planner's whole pass."""
    cur = await conn.execute(
        f"SELECT user_id, {SETTINGS_COLUMNS} FROM proactive_settings WHERE user_id = ANY(%s::uuid[])",
        (list(user_ids),),
    )
    return {row["user_id"]: row for row in await cur.fetchall()}


async def save_preferences(conn: Conn, key: UserKey, prefs: Preferences) -> None:
    """Store ``prefs`` as the user's settings, the timezone on the account. Call it inside a transaction when
    the two writes must commit together (the settings route does)."""
    birthday = prefs.birthday.isoformat() if prefs.birthday is not None else None
    sealed = key.seal(birthday, fields.proactive_birthday(key.user_id)) if birthday is not None else None
    await conn.execute(
        f"INSERT INTO proactive_settings (user_id, {SETTINGS_COLUMNS}, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (user_id) DO UPDATE SET"
        " morning_time = EXCLUDED.morning_time, quiet_start = EXCLUDED.quiet_start,"
        " quiet_end = EXCLUDED.quiet_end, checkin_after_days = EXCLUDED.checkin_after_days,"
        " disabled_kinds = EXCLUDED.disabled_kinds, birthday = EXCLUDED.birthday, updated_at = now()",
        (key.user_id, prefs.morning_time, prefs.quiet_start, prefs.quiet_end,
         prefs.checkin_after_days, sorted(prefs.disabled_kinds), sealed),
    )
    await accounts.set_timezone(conn, key.user_id, prefs.timezone)


def hhmm(t: time) -> str:
    return t.strftime("%H:%M")


def public_settings(prefs: Preferences) -> dict[str, Any]:
    """The ``/v1/proactive/settings`` object."""
    return {
        "timezone": prefs.timezone,
        "morning_time": hhmm(prefs.morning_time),
        "quiet_hours": {"start": hhmm(prefs.quiet_start), "end": hhmm(prefs.quiet_end)},
        "checkin_after_days": prefs.checkin_after_days,
        "disabled_kinds": sorted(prefs.disabled_kinds),
        "birthday": prefs.birthday.isoformat() if prefs.birthday is not None else None,
    }


def _milestone_out(key: UserKey, row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "title": key.open(row["title"], fields.milestone_title(row["id"])),
        "date": row["date"].isoformat(),
        "kind": row["kind"],
        "created_at": row["created_at"],
    }


async def list_milestones(conn: Conn, key: UserKey) -> list[dict[str, Any]]:
    """The user's milestones (titles opened), oldest first."""
    cur = await conn.execute(
        "SELECT id, title, date, kind, created_at FROM milestones WHERE user_id = %s ORDER BY created_at, id",
        (key.user_id,),
    )
    return [_milestone_out(key, row) for row in await cur.fetchall()]


async def create_milestone(conn: Conn, key: UserKey, title: str, day: date, kind: MilestoneKind) -> dict[str, Any]:
    """Add a milestone; return it.

    Raises:
        OverflowError: The user already has `MAX_MILESTONES`.
    """
    cur = await conn.execute("SELECT count(*) AS n FROM milestones WHERE user_id = %s", (key.user_id,))
    row = await cur.fetchone()
    if row is not None and row["n"] >= MAX_MILESTONES:
        raise OverflowError(f"at most {MAX_MILESTONES} milestones")
    milestone_id = uuid.uuid4()
    cur = await conn.execute(
        "INSERT INTO milestones (id, user_id, title, date, kind) VALUES (%s, %s, %s, %s, %s)"
        " RETURNING id, title, date, kind, created_at",
        (milestone_id, key.user_id, key.seal(title, fields.milestone_title(milestone_id)), day, kind),
    )
    created = await cur.fetchone()
    assert created is not None
    return _milestone_out(key, created)


async def delete_milestone(conn: Conn, user_id: uuid.UUID, milestone_id: uuid.UUID) -> bool:
    """Remove one of the user's milestones; False when it is not theirs."""
    cur = await conn.execute("DELETE FROM milestones WHERE id = %s AND user_id = %s", (milestone_id, user_id))
    return cur.rowcount == 1


async def milestones_on(conn: Conn, user_id: uuid.UUID, today: date) -> list[Milestone]:
    """The user's milestones whose month and day are ``today``'s (29 February counts on the 28th in other years)."""
    months, days = month_days(today)
    cur = await conn.execute(
        "SELECT id, date, kind FROM milestones WHERE user_id = %s"
        " AND (extract(month FROM date)::int, extract(day FROM date)::int)"
        " IN (SELECT * FROM unnest(%s::int[], %s::int[]))",
        (user_id, months, days),
    )
    return [Milestone(row["id"], row["date"], row["kind"]) for row in await cur.fetchall()]


def export_settings(key: UserKey) -> UserRows:
    """The user's proactive settings for their export (birthday opened; the timezone is in the account's part)."""
    user_id = key.user_id

    def opened(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "birthday": key.open_optional(row["birthday"], fields.proactive_birthday(user_id))}

    return UserRows(f"SELECT {SETTINGS_COLUMNS}, updated_at FROM proactive_settings WHERE user_id = %s",
                    (user_id,), opened)


def export_milestones(key: UserKey) -> UserRows:
    """The user's milestones for their export, titles opened, oldest first."""

    def opened(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "title": key.open(row["title"], fields.milestone_title(row["id"]))}

    return UserRows("SELECT id, title, date, kind, created_at FROM milestones WHERE user_id = %s"
                    " ORDER BY created_at, id", (key.user_id,), opened)
