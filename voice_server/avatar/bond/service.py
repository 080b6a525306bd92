"""The bond's storage and its owned worker: turns are observed after the reply, off the turn's path.

`BondService.observe` only queues (bounded: the oldest observation is dropped when `QUEUE_MAX` wait, which
costs a little bond precision, never a turn's latency). The worker scores the words on the sentiment lane and
updates the user's row in one transaction under ``SELECT … FOR UPDATE``, so two server processes observing
one user's turns never lose an update. The mood is sealed with the user's data key.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from pipeline.tasks import cancel_and_wait
from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.model import BondState
from voice_server.avatar.bond.sentiment import Sentiment
from voice_server.avatar.clock import Clock, system_clock
from voice_server.avatar.proactive.rules import SettingsError, zone_of
from voice_server.security import fields
from voice_server.security.keys import Conn, Keyring, UserKey
from voice_server.stores.postgres import Database

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


async def user_zone_name(conn: Conn, user_id: uuid.UUID) -> str:
    """The user's timezone setting (``UTC`` when unset)."""
    cur = await conn.execute("SELECT timezone FROM proactive_settings WHERE user_id = %s", (user_id,))
    row = await cur.fetchone()
    return str(row["timezone"]) if row is not None else "UTC"


def local_date(zone_name: str, at: datetime) -> date:
    """``at``'s date on the wall clock of ``zone_name`` (UTC if the stored name no longer resolves)."""
    try:
        return at.astimezone(zone_of(zone_name)).date()
    except SettingsError:
        return at.date()


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
        self._queue: collections.deque[Observation] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._worker: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        """Load the sentiment lexicon and start the worker."""
        await self.sentiment.start()
        self._worker = asyncio.create_task(self._work(), name="bond-worker")

    async def aclose(self) -> None:
        """Apply what is queued for up to `DRAIN_TIMEOUT_S` (the rest is lost: it only nudges the bond), stop."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self.drained()
        if self._worker is not None:
            await cancel_and_wait(self._worker)
            self._worker = None
        self.sentiment.close()

    def observe(self, user_id: uuid.UUID, text: str, at: datetime | None = None) -> None:
        """Queue a user turn's words (never blocks; see the module doc for a full queue)."""
        if len(self._queue) >= QUEUE_MAX:
            self._queue.popleft()
            self.dropped += 1
            log.warning("bond: queue full, oldest observation dropped")
        self._queue.append(Observation(user_id, text, at or self.clock()))
        self._idle.clear()
        self._wake.set()

    async def drained(self) -> None:
        """Wait until every queued observation is applied."""
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            await asyncio.sleep(0)

    async def _work(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._queue.popleft()
            try:
                await self.apply(item)
            except asyncio.CancelledError:
                raise
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
                day = local_date(await user_zone_name(conn, item.user_id), item.at)
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
            today = local_date(await user_zone_name(conn, user_id), now)
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
                    today = local_date(await user_zone_name(conn, user_id), now)
                return bond.tone_line(state, now, today)
        except TimeoutError:
            log.warning("bond: tone took over %.0f ms; answering without it", TONE_TIMEOUT_S * 1000)
        except Exception:
            log.warning("bond: tone failed; answering without it", exc_info=True)
        return ""

    async def reset(self, user_id: uuid.UUID) -> None:
        """Back to the starting state (the row is deleted; queued observations of the user are dropped)."""
        self._queue = collections.deque(o for o in self._queue if o.user_id != user_id)
        async with self.db.pool.connection() as conn:
            await conn.execute("DELETE FROM bonds WHERE user_id = %s", (user_id,))
