"""The bond's storage and its owned worker: turns are observed after the reply, off the turn's path.

`BondService.observe` only queues (bounded: the oldest observation is dropped when `QUEUE_MAX` wait, which
costs a little bond precision, never a turn's latency). The worker scores the words on the sentiment lane and
updates the user's row in one transaction under ``SELECT … FOR UPDATE``, so two server processes observing
one user's turns never lose an update. The mood is sealed with the user's data key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voice_server.accounts import get_timezone
from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.model import BondState
from voice_server.avatar.bond.sentiment import Sentiment
from voice_server.avatar.clock import Clock, system_clock
from voice_server.background import WhenFull, Worker
from voice_server.security import fields
from voice_server.security.keys import Conn, Keyring, UserKey
from voice_server.stores.postgres import Database
from voice_server.stores.user_rows import UserRows

log = logging.getLogger(__name__)

QUEUE_MAX: Final = 256
TONE_TIMEOUT_S: Final = 0.2
DRAIN_TIMEOUT_S: Final = 5.0
BOND_COLUMNS: Final = "affinity, trust, streak_days, last_day, last_contact, mood, turns"


@dataclass(frozen=True, slots=True)
class Observation:
    """One user turn's words."""

    user_id: uuid.UUID
    text: str
    at: datetime


def open_bond(key: UserKey | None, row: dict[str, Any] | None) -> BondState:
    """A ``bonds`` row (its columns, possibly from a LEFT JOIN: all ``None``) as a `BondState`, the mood
    opened with the owner's key (``None`` only when the row has no mood)."""
    if row is None or row["affinity"] is None:
        return bond.STARTING_STATE
    mood = None
    if row["mood"] is not None:
        if key is None:
            raise ValueError("a sealed mood needs its owner's key")
        mood = float(json.loads(key.open(row["mood"], fields.bond_mood(key.user_id)))["score"])
    return BondState(float(row["affinity"]), float(row["trust"]), int(row["streak_days"]), row["last_day"],
                     row["last_contact"], mood, int(row["turns"]))


async def stored_state(conn: Conn, key: UserKey) -> BondState:
    """The key's owner's stored bond, as of its last contact (the starting state when there is none)."""
    cur = await conn.execute(f"SELECT {BOND_COLUMNS} FROM bonds WHERE user_id = %s", (key.user_id,))
    return open_bond(key, await cur.fetchone())


async def bond_rows(conn: Conn, user_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The stored bond rows (`BOND_COLUMNS`, mood still sealed: open them with `open_bond`) of those of
    ``user_ids`` that have one, by user id: one query for the proactive planner's whole pass."""
    cur = await conn.execute(
        f"SELECT user_id, {BOND_COLUMNS} FROM bonds WHERE user_id = ANY(%s::uuid[])", (list(user_ids),)
    )
    return {row["user_id"]: row for row in await cur.fetchall()}


def local_date(zone_name: str, at: datetime) -> date:
    """``at``'s date on the wall clock of ``zone_name`` (``at``'s own date if the stored name no longer
    resolves: names are checked when saved, so only a zone dropped from tzdata gets here)."""
    try:
        return at.astimezone(ZoneInfo(zone_name)).date()
    except (ZoneInfoNotFoundError, ValueError):
        return at.date()


def _observation_dropped(item: Observation) -> None:
    log.warning("bond: queue full, oldest observation dropped")


class BondService:
    """Bonds of all users. Call `start` once and `aclose` at shutdown.

    Args:
        db: The database.
        keys: Users' data keys (the mood is sealed).
        clock: The current time (tests pass a virtual one).
    """

    def __init__(self, db: Database, keys: Keyring, *, clock: Clock = system_clock) -> None:
        self.db = db
        self.keys = keys
        self.clock = clock
        self.sentiment = Sentiment()
        self._worker = Worker("bond-worker")
        self._observations = self._worker.queue(
            self._apply_logged, maxsize=QUEUE_MAX, when_full=WhenFull.DROP_OLDEST, on_drop=_observation_dropped
        )

    @property
    def dropped(self) -> int:
        """Observations dropped from a full queue since the service was created."""
        return self._observations.dropped

    async def start(self) -> None:
        """Load the sentiment lexicon and start the worker."""
        await self.sentiment.start()
        self._worker.start()

    async def aclose(self) -> None:
        """Apply what is queued for up to `DRAIN_TIMEOUT_S` (the rest is lost: it only nudges the bond), stop."""
        await self._worker.close(drain_s=DRAIN_TIMEOUT_S)
        self.sentiment.close()

    def observe(self, user_id: uuid.UUID, text: str, at: datetime | None = None) -> None:
        """Queue a user turn's words (never blocks; see the module doc for a full queue)."""
        self._observations.put(Observation(user_id, text, at or self.clock()))

    async def drained(self) -> None:
        """Wait until every queued observation is applied."""
        await self._worker.drain()

    async def _apply_logged(self, item: Observation) -> None:
        try:
            await self.apply(item)
        except LookupError:
            pass  # the account was erased meanwhile
        except Exception:
            log.exception("bond: an observation could not be applied; skipped")

    async def apply(self, item: Observation) -> BondState:
        """Score ``item`` and fold it into the user's bond (one transaction); return the new state."""
        sentiment = await self.sentiment.score(item.text)
        async with self.db.pool.connection() as conn:
            key = await self.keys.for_user(conn, item.user_id)
            async with conn.transaction():
                cur = await conn.execute(
                    f"SELECT {BOND_COLUMNS} FROM bonds WHERE user_id = %s FOR UPDATE", (item.user_id,)
                )
                state = open_bond(key, await cur.fetchone())
                day = local_date(await get_timezone(conn, item.user_id), item.at)
                new = bond.observe(state, sentiment, item.at, day)
                mood = key.seal(json.dumps({"score": new.mood}), fields.bond_mood(item.user_id))
                await conn.execute(
                    "INSERT INTO bonds (user_id, affinity, trust, streak_days, last_day, last_contact, mood, turns,"
                    " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (user_id) DO UPDATE"
                    " SET affinity = EXCLUDED.affinity, trust = EXCLUDED.trust, streak_days = EXCLUDED.streak_days,"
                    " last_day = EXCLUDED.last_day, last_contact = EXCLUDED.last_contact, mood = EXCLUDED.mood,"
                    " turns = EXCLUDED.turns, updated_at = now()",
                    (item.user_id, new.affinity, new.trust, new.streak_days, new.last_day, new.last_contact, mood,
                     new.turns),
                )
        return new

    async def load(self, user_id: uuid.UUID, conn: Conn | None = None) -> BondState:
        """The stored bond (the starting state when there is none)."""
        if conn is None:
            async with self.db.pool.connection() as own:
                return await self.load(user_id, own)
        cur = await conn.execute(f"SELECT {BOND_COLUMNS} FROM bonds WHERE user_id = %s", (user_id,))
        row = await cur.fetchone()
        return open_bond(await self.keys.for_user(conn, user_id), row) if row is not None else bond.STARTING_STATE

    async def public(self, user_id: uuid.UUID) -> dict[str, Any]:
        """The ``GET /v1/bond`` object."""
        now = self.clock()
        async with self.db.pool.connection() as conn:
            state = await self.load(user_id, conn)
            today = local_date(await get_timezone(conn, user_id), now)
        return bond.public(state, now, today)

    async def tone(self, user_id: uuid.UUID) -> str:
        """The tone line for this user's next prompt; "" when there is none or it takes over
        `TONE_TIMEOUT_S` (a turn never waits for the bond)."""
        try:
            async with asyncio.timeout(TONE_TIMEOUT_S):
                now = self.clock()
                async with self.db.pool.connection() as conn:
                    state = await self.load(user_id, conn)
                    if state.last_contact is None:
                        return ""
                    today = local_date(await get_timezone(conn, user_id), now)
                return bond.tone_line(state, now, today)
        except TimeoutError:
            log.warning("bond: tone took over %.0f ms; answering without it", TONE_TIMEOUT_S * 1000)
        except Exception:
            log.warning("bond: tone failed; answering without it", exc_info=True)
        return ""

    async def reset(self, user_id: uuid.UUID) -> None:
        """Back to the starting state (the row is deleted; queued observations of the user are dropped)."""
        self._observations.remove(lambda o: o.user_id == user_id)
        async with self.db.pool.connection() as conn:
            await conn.execute("DELETE FROM bonds WHERE user_id = %s", (user_id,))


def export_rows(key: UserKey) -> UserRows:
    """The user's bond for their export, the mood opened."""
    user_id = key.user_id

    def opened(row: dict[str, Any]) -> dict[str, Any]:
        mood = key.open_optional(row["mood"], fields.bond_mood(user_id))
        return {**row, "mood": json.loads(mood) if mood is not None else None}

    return UserRows("SELECT affinity, trust, streak_days, last_day, last_contact, mood, turns, updated_at FROM bonds"
                    " WHERE user_id = %s", (user_id,), opened)
