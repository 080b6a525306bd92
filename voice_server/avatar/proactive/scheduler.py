"""The proactive scheduler: plans due occurrences, claims them, writes each message once and announces it.

One pass (`ProactiveScheduler.tick`) at the clock's ``now``:

1. plan — every user's due occurrences become job rows (`planner`), idempotently;
2. take back — a job left ``running`` longer than `LEASE` (its worker died) is ``pending`` again;
3. claim — the next due ``pending`` job moves to ``running`` for this worker in one statement (``FOR UPDATE
   SKIP LOCKED``: concurrent workers claim different jobs, nobody waits), repeated while jobs are due;
4. process each: opted out → skipped; expired → skipped; inside quiet hours → back to ``pending``, due when
   they end; otherwise its message is composed (`messages.compose`, the LLM off the event loop) and, in
   one transaction, the job is marked ``sent`` — only if this worker still holds the claim — and the
   notification inserted under the occurrence's unique key, with a ``NOTIFY`` for live delivery.

At most once: the notification's UNIQUE (user, kind, occurrence) holds whatever happens to claims (a worker
that lost its lease to another finds its UPDATE matching nothing and rolls back). Nothing lost: a job
interrupted anywhere before that commit is still ``running``; a restart of the same worker (same data dir)
releases it at `start`, another worker takes it back after `LEASE`. No Redis lock is used: Postgres already
serialises the claim, and a second lock could only disagree with it.

Between passes the loop sleeps until the next pending job is due, at most `interval_s` (new occurrences are
found by the next pass); `wake` (a settings or milestone change) starts a pass at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from voice_server import accounts, conversations
from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.service import stored_state
from voice_server.avatar.clock import Clock, system_clock
from voice_server.avatar.imports import store as imports_store
from voice_server.avatar.memory import store as memory_store
from voice_server.avatar.proactive import notifications, planner
from voice_server.avatar.proactive.messages import Completer, Draft, PersonalLlm, compose
from voice_server.avatar.proactive.rules import Preferences
from voice_server.avatar.proactive.settings_store import load_preferences
from voice_server.background import OwnedTask
from voice_server.security import fields
from voice_server.security.keys import Conn, Keyring, UserKey
from voice_server.stores.postgres import Database

log = logging.getLogger(__name__)

LEASE: Final = timedelta(minutes=10)
# One job per claim: a worker that dies holds at most the job it was writing (until the lease ends), never a
# batch it had not started; a claim is one indexed UPDATE, cheap next to composing a message.
CLAIM_BATCH: Final = 1
MAX_ATTEMPTS: Final = 3
RETRY_AFTER: Final = timedelta(minutes=5)
JOB_COLUMNS: Final = "id, user_id, kind, occurrence, due_at, expires_at, grounding, attempts"


class SourceGone(Exception):
    """What the message was grounded in no longer exists (deleted memory, milestone, account)."""


@dataclass(slots=True)
class TickReport:
    """What one pass did."""

    planned: int = 0
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    failed: int = 0


class ProactiveScheduler:
    """Plans and sends proactive messages. Call `start` once (or drive `tick` directly), `aclose` at shutdown.

    Args:
        db: The database.
        keys: Users' data keys.
        worker: This worker's id (`voice_server.avatar.imports.job.worker_id`: stable per data dir).
        llm: Words messages when given (`messages.compose`); templates otherwise.
        personal: The person's own model for their messages when one is on: (its completer, its release), or
            ``None`` (then ``llm`` words it).
        clock: The current time (tests pass a virtual clock and call `tick`).
        interval_s: The longest wait between passes.
    """

    def __init__(
        self,
        db: Database,
        keys: Keyring,
        *,
        worker: str,
        llm: Completer | None = None,
        personal: PersonalLlm | None = None,
        clock: Clock = system_clock,
        interval_s: float = 60.0,
    ) -> None:
        self.db = db
        self.keys = keys
        self.worker = worker
        self.llm = llm
        self.personal = personal
        self.clock = clock
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._loop = OwnedTask("proactive-scheduler")

    # ------------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Release what this worker left running (it was interrupted), then start the loop."""
        released = await self.release_own()
        if released:
            log.info("proactive: %d interrupted jobs released", released)
        self._loop.start(self._run())

    async def aclose(self) -> None:
        """Stop the loop; a job being processed stays claimed and is released at the next start."""
        await self._loop.close()

    def wake(self) -> None:
        """Run a pass now (settings or milestones changed)."""
        self._wake.set()

    async def release_own(self) -> int:
        """Put this worker's ``running`` jobs back to ``pending`` (call only when no pass of it runs)."""
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                "UPDATE proactive_jobs SET state = 'pending', claimed_by = NULL WHERE state = 'running'"
                " AND claimed_by = %s",
                (self.worker,),
            )
            return cur.rowcount

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("proactive: a pass failed; retrying at the next one")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(await self._sleep_s()):
                    await self._wake.wait()

    async def _sleep_s(self) -> float:
        now = self.clock()
        async with self.db.pool.connection() as conn:
            cur = await conn.execute("SELECT min(due_at) AS next FROM proactive_jobs WHERE state = 'pending'")
            row = await cur.fetchone()
        if row is None or row["next"] is None:
            return self.interval_s
        wait: float = (row["next"] - now).total_seconds()
        return min(max(wait, 0.5), self.interval_s)

    # ------------------------------------------------------------------------------------------------ pass

    async def tick(self) -> TickReport:
        """One pass at ``clock()`` (see the module doc)."""
        now = self.clock()
        report = TickReport()
        async with self.db.pool.connection() as conn:
            report.planned = await planner.plan_users(conn, self.keys, now)
            await conn.execute(
                "UPDATE proactive_jobs SET state = 'pending', claimed_by = NULL WHERE state = 'running'"
                " AND claimed_at < %s",
                (now - LEASE,),
            )
        while jobs := await self._claim(now):
            for job in jobs:
                outcome = await self._process(job, now)
                setattr(report, outcome, getattr(report, outcome) + 1)
            if len(jobs) < CLAIM_BATCH:
                break
        return report

    async def _claim(self, now: datetime) -> list[dict[str, Any]]:
        async with self.db.pool.connection() as conn:
            cur = await conn.execute(
                f"UPDATE proactive_jobs SET state = 'running', claimed_by = %s, claimed_at = %s,"
                f" attempts = attempts + 1 WHERE id IN (SELECT id FROM proactive_jobs WHERE state = 'pending'"
                f" AND due_at <= %s ORDER BY due_at, id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLUMNS}",
                (self.worker, now, now, CLAIM_BATCH),
            )
            return list(await cur.fetchall())

    async def _process(self, job: dict[str, Any], now: datetime) -> str:
        """Handle one claimed job; the `TickReport` field it counts toward."""
        try:
            async with self.db.pool.connection() as conn:
                key = await self.keys.for_user(conn, job["user_id"])
                prefs = await load_preferences(conn, key)
                if not prefs.allows(job["kind"]):
                    return await self._finish(conn, job, "skipped", "opted_out", now)
                if job["expires_at"] is not None and now > job["expires_at"]:
                    return await self._finish(conn, job, "skipped", "expired", now)
                if prefs.in_quiet_hours(now):
                    await conn.execute(
                        "UPDATE proactive_jobs SET state = 'pending', claimed_by = NULL, due_at = %s,"
                        " attempts = attempts - 1 WHERE id = %s AND claimed_by = %s",
                        (prefs.quiet_end_after(now), job["id"], self.worker),
                    )
                    return "deferred"
                try:
                    draft, memory_ids, message_ids = await self._draft(conn, key, job, prefs, now)
                except SourceGone as gone:
                    return await self._finish(conn, job, "skipped", str(gone), now)
            own = await self.personal(job["user_id"]) if self.personal is not None and self.llm is not None else None
            try:
                text, source = await compose(draft, own[0] if own is not None else self.llm)
            finally:
                if own is not None:
                    own[1]()
            async with self.db.pool.connection() as conn, conn.transaction():
                cur = await conn.execute(
                    "UPDATE proactive_jobs SET state = 'sent', finished_at = %s WHERE id = %s AND state = 'running'"
                    " AND claimed_by = %s RETURNING id",
                    (now, job["id"], self.worker),
                )
                if await cur.fetchone() is None:
                    log.warning("proactive: a job's claim was taken back before it was sent; left to its new worker")
                    return "skipped"
                notification_id = await notifications.insert(
                    conn, key, job_id=job["id"], kind=job["kind"], occurrence=job["occurrence"], text=text,
                    memory_ids=memory_ids, message_ids=message_ids, source=source, at=now,
                )
                await conn.execute(
                    "UPDATE proactive_jobs SET notification_id = %s WHERE id = %s", (notification_id, job["id"])
                )
            return "sent" if notification_id is not None else "skipped"
        except asyncio.CancelledError:
            raise  # the claim stays: released at this worker's next start, or by another after the lease
        except LookupError:
            return "skipped"  # the account is being erased; its jobs go with it
        except Exception:
            log.exception("proactive: a job failed (attempt %d of %d)", job["attempts"], MAX_ATTEMPTS)
            await self._retry(job, now)
            return "failed"

    async def _finish(self, conn: Conn, job: dict[str, Any], state: str, outcome: str, now: datetime) -> str:
        await conn.execute(
            "UPDATE proactive_jobs SET state = %s, outcome = %s, finished_at = %s WHERE id = %s AND claimed_by = %s",
            (state, outcome, now, job["id"], self.worker),
        )
        log.info("proactive: %s job %s (%s)", job["kind"], state, outcome)
        return "skipped"

    async def _retry(self, job: dict[str, Any], now: datetime) -> None:
        with contextlib.suppress(Exception):
            async with self.db.pool.connection() as conn:
                if job["attempts"] >= MAX_ATTEMPTS:
                    await self._finish(conn, job, "skipped", "failed", now)
                else:
                    await conn.execute(
                        "UPDATE proactive_jobs SET state = 'pending', claimed_by = NULL, due_at = %s WHERE id = %s"
                        " AND claimed_by = %s",
                        (now + RETRY_AFTER, job["id"], self.worker),
                    )

    # ----------------------------------------------------------------------------------------------- draft

    async def _draft(
        self, conn: Conn, key: UserKey, job: dict[str, Any], prefs: Preferences, now: datetime
    ) -> tuple[Draft, list[str], list[str]]:
        """What the message is about, its private texts opened, and the memory and message ids behind it.

        Raises:
            SourceGone: A grounding row no longer exists, or a check-in's silence already ended.
        """
        grounding: dict[str, Any] = dict(job["grounding"])
        user_id: uuid.UUID = job["user_id"]
        user = await accounts.get_user(conn, user_id)
        if user is None:
            raise SourceGone("account_gone")
        name = user["display_name"] or user["username"]
        today = prefs.local(now).date()
        memory_ids: list[str] = list(grounding.get("memory_ids", []))
        message_ids: list[str] = list(grounding.get("message_ids", []))
        quotes: list[str] = []
        title = mood = None
        if job["kind"] == "greeting":
            plans = await memory_store.plan_on(conn, key, today)
            quotes, memory_ids = [t for _, t in plans], [str(i) for i, _ in plans]
        elif job["kind"] == "checkin":
            state = await stored_state(conn, key)
            since = datetime.fromisoformat(grounding["last_contact"])
            last_turn = await conversations.last_turn_at(conn, user_id)
            contact = max((t for t in (state.last_contact, last_turn) if t), default=None)
            if contact is not None and contact > since + timedelta(seconds=1):
                raise SourceGone("contact_resumed")
            mood = bond.mood_label(bond.decayed(state, now).mood)
            grounding["days"] = max(1, (now - since).days)
        if memory_ids and job["kind"] != "greeting":
            quotes = await _memory_texts(conn, key, memory_ids)
        if message_ids:
            quotes = await _message_texts(conn, key, message_ids)
        if grounding.get("milestone_id"):
            title = await _milestone_title(conn, key, uuid.UUID(grounding["milestone_id"]))
        if job["kind"] == "on_this_day" and not quotes:
            raise SourceGone("source_gone")
        return Draft(job["kind"], name, today, grounding, tuple(quotes), title, mood), memory_ids, message_ids


async def _memory_texts(conn: Conn, key: UserKey, ids: list[str]) -> list[str]:
    rows = await memory_store.live_texts(conn, key, ids)
    if len(rows) != len(set(ids)):
        raise SourceGone("source_gone")
    return [rows[i] for i in ids]


async def _message_texts(conn: Conn, key: UserKey, ids: list[str]) -> list[str]:
    rows = await imports_store.message_texts(conn, key, ids)
    if len(rows) != len(set(ids)):
        raise SourceGone("source_gone")
    return [rows[i] for i in ids]


async def _milestone_title(conn: Conn, key: UserKey, milestone_id: uuid.UUID) -> str:
    cur = await conn.execute("SELECT title FROM milestones WHERE id = %s AND user_id = %s", (milestone_id, key.user_id))
    row = await cur.fetchone()
    if row is None:
        raise SourceGone("source_gone")
    return key.open(row["title"], fields.milestone_title(milestone_id))
