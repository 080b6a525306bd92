"""The proactive scheduler against a real embedded Postgres+pgvector, on a virtual clock.

Each test moves the clock instead of waiting: greetings at the local morning, check-ins after silence, the
right "on this day" memory, birthdays once a year, quiet hours, opt-outs, a worker killed mid-job, and two
workers (two connection pools on the same database, as two server processes have) never sending one
occurrence twice. The scheduler never uses Redis (Postgres serialises the claims), so none is started here.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
import pytest_asyncio

from voice_server.avatar.bond import model as bond
from voice_server.avatar.bond.service import BondService, Observation
from voice_server.avatar.imports.job import create_import
from voice_server.avatar.memory.store import MemoryStore, NewMemory
from voice_server.avatar.proactive import scheduler as scheduler_module
from voice_server.avatar.proactive.hub import QUEUE_MAX, NotificationHub
from voice_server.avatar.proactive.rules import Kind, Preferences, reach_out_delay
from voice_server.avatar.proactive.scheduler import LEASE, ProactiveScheduler
from voice_server.avatar.proactive.settings_store import create_milestone, save_preferences
from voice_server.security import fields
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

KEYS = Keyring([new_master_key()])
NEW_YORK = ZoneInfo("America/New_York")
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)
NO_QUIET = {"quiet_start": time(0, 0), "quiet_end": time(0, 0)}


class VirtualClock:
    """The scheduler's ``now``: moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def ny(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=NEW_YORK).astimezone(UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def db(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Database]:
    async with Database.open(None, tmp_path_factory.mktemp("proactive-db")) as database:
        yield database


@pytest_asyncio.fixture(loop_scope="module", autouse=True)
async def empty(db: Database) -> None:
    """Each test starts without users: a pass plans for every user in the database."""
    async with db.pool.connection() as conn:
        await conn.execute("DELETE FROM users")


async def new_user(db: Database, *, created_at: datetime = LONG_AGO, **prefs: Any) -> uuid.UUID:
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO users (username, display_name, password_hash, created_at) VALUES (%s, 'Ana', 'x', %s)"
            " RETURNING id",
            (f"u{uuid.uuid4().hex[:10]}", created_at),
        )
        row = await cur.fetchone()
        assert row is not None
        user_id: uuid.UUID = row["id"]
        if prefs:
            key = await KEYS.for_user(conn, user_id)
            await save_preferences(conn, key, Preferences(**prefs))
    return user_id


async def add_memory(db: Database, user_id: uuid.UUID, text: str, when: date, importance: float = 0.6) -> str:
    vector = np.zeros(384, dtype=np.float32)
    vector[0] = 1.0
    async with db.pool.connection() as conn:
        row = await MemoryStore(db, KEYS).insert(
            conn, user_id, NewMemory(text, "event", importance, None, when, "import"), vector
        )
    return str(row["id"])


async def add_messages(db: Database, user_id: uuid.UUID, messages: Sequence[tuple[str, datetime]]) -> list[str]:
    ids = []
    async with db.pool.connection() as conn:
        key = await KEYS.for_user(conn, user_id)
        import_id = await create_import(conn, KEYS, user_id, "chat.txt", "whatsapp", worker="test")
        for text, at in messages:
            message_id = uuid.uuid4()
            await conn.execute(
                "INSERT INTO imported_messages (id, user_id, import_id, idem_key, source, conversation, sender, text,"
                " at, is_user) VALUES (%s, %s, %s, %s, 'whatsapp', %s, %s, %s, %s, true)",
                (message_id, user_id, import_id, uuid.uuid4().bytes, key.seal("Chat", fields.imported(
                    "conversation", message_id)), key.seal("Ana", fields.imported("sender", message_id)),
                 key.seal(text, fields.imported("text", message_id)), at),
            )
            ids.append(str(message_id))
    return ids


async def sent(db: Database, user_id: uuid.UUID, kind: Kind | None = None) -> list[dict[str, Any]]:
    """The user's notifications (texts opened), oldest first."""
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, kind, occurrence, text, memory_ids, message_ids, source, created_at FROM notifications"
            " WHERE user_id = %s ORDER BY created_at, id",
            (user_id,),
        )
        rows = await cur.fetchall()
        key = await KEYS.for_user(conn, user_id)
    found = [{**r, "text": key.open(r["text"], fields.notification_text(r["id"]))} for r in rows]
    return [r for r in found if kind is None or r["kind"] == kind]


async def job_states(db: Database, user_id: uuid.UUID) -> dict[str, tuple[str, str | None]]:
    async with db.pool.connection() as conn:
        cur = await conn.execute("SELECT occurrence, state, outcome FROM proactive_jobs WHERE user_id = %s", (user_id,))
        return {r["occurrence"]: (r["state"], r["outcome"]) for r in await cur.fetchall()}


def scheduler(db: Database, clock: VirtualClock, worker: str = "w1", llm: Any = None) -> ProactiveScheduler:
    return ProactiveScheduler(db, KEYS, worker=worker, clock=clock, llm=llm)


# ----------------------------------------------------------------------------------------------- timing


async def test_greeting_at_eight_local_time_not_before(db: Database) -> None:
    """New York (UTC-4 in June): nothing at 07:59 local, one greeting at 08:00 (12:00 UTC), still one after
    more passes that day, the next one the next morning."""
    user = await new_user(db, timezone="America/New_York")
    day = date(2025, 6, 10)
    clock = VirtualClock(ny(day, 7, 59))
    s = scheduler(db, clock)
    await s.tick()
    assert await sent(db, user) == []
    clock.at = ny(day, 8, 0)
    assert clock.at == datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
    report = await s.tick()
    (greeting,) = await sent(db, user)
    assert report.sent == 1 and greeting["kind"] == "greeting" and greeting["occurrence"] == "greeting:2025-06-10"
    assert greeting["text"].startswith("Good morning, Ana!") and greeting["source"] == "template"
    assert greeting["created_at"] == clock.at
    for hour in (8, 9, 11):
        clock.at = ny(day, hour, 30)
        await s.tick()
    assert len(await sent(db, user, "greeting")) == 1
    clock.at = ny(day + timedelta(days=1), 8, 0)
    await s.tick()
    assert [n["occurrence"] for n in await sent(db, user, "greeting")] == ["greeting:2025-06-10", "greeting:2025-06-11"]


async def test_checkin_after_days_of_silence(db: Database) -> None:
    """The last contact (a bond observation) starts the silence; the check-in comes three days later (default),
    once, saying how long it has been; a conversation in between starts a new silence."""
    t0 = datetime(2025, 6, 1, 15, 0, tzinfo=UTC)
    user = await new_user(db, disabled_kinds=frozenset({"greeting"}), **NO_QUIET)
    clock = VirtualClock(t0)
    bonds = BondService(db, KEYS, clock=clock)
    await bonds.sentiment.start()
    try:
        state = await bonds.apply(Observation(user, "Work was fine today.", t0))
        assert state.last_contact == t0 and state.turns == 1
        due = t0 + reach_out_delay(Preferences(), bond.reach_out(state, t0))
        assert timedelta(days=2, hours=20) < due - t0 <= timedelta(days=3)  # a new bond: about the setting
        s = scheduler(db, clock)
        clock.at = due - timedelta(minutes=1)
        await s.tick()
        assert await sent(db, user, "checkin") == []
        clock.at = due + timedelta(minutes=1)
        await s.tick()
        (checkin,) = await sent(db, user, "checkin")
        assert checkin["text"].startswith("Hi Ana! It's been 2 days since we last talked.")
        clock.at = t0 + timedelta(days=5)
        await s.tick()
        assert len(await sent(db, user, "checkin")) == 1  # one per silence
        sad = await bonds.apply(Observation(user, "I feel terrible, everything went wrong.", clock.at))
        sad = await bonds.apply(Observation(user, "I am so sad and tired.", clock.at))
        assert bond.reach_out(sad, clock.at) > bond.reach_out(state, t0)  # a low mood: sooner
        clock.at += reach_out_delay(Preferences(), bond.reach_out(sad, clock.at)) + timedelta(minutes=1)
        await s.tick()
        latest = (await sent(db, user, "checkin"))[-1]
        assert len(await sent(db, user, "checkin")) == 2 and "seemed a bit down" in latest["text"]
    finally:
        bonds.sentiment.close()


async def test_on_this_day_picks_the_right_memory(db: Database) -> None:
    """Of the user's memories, the one dated this day in an earlier year is shared — with its date and years
    written by code and its id kept — not this year's, not another day's; with no memory, the user's own
    imported message of this day."""
    user = await new_user(db, disabled_kinds=frozenset({"greeting"}))
    await add_memory(db, user, "I start my new job today.", date(2025, 6, 10), 0.9)
    await add_memory(db, user, "We went to the beach.", date(2022, 6, 11), 0.9)
    right = await add_memory(db, user, "I passed my driving test!", date(2023, 6, 10), 0.8)
    await add_memory(db, user, "Grey and rainy walk.", date(2021, 6, 10), 0.3)
    other = await new_user(db, disabled_kinds=frozenset({"greeting"}))
    said = await add_messages(db, other, [("ok", datetime(2020, 6, 10, 9, tzinfo=UTC)),
                                          ("Moved into the flat by the river today!", datetime(2021, 6, 10, 20,
                                                                                             tzinfo=UTC))])
    clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
    await scheduler(db, clock).tick()
    (memory_note,) = await sent(db, user, "on_this_day")
    assert [str(m) for m in memory_note["memory_ids"]] == [right]
    assert memory_note["text"].startswith("On this day 2 years ago (10 June 2023), you told me: “I passed my driving")
    (message_note,) = await sent(db, other, "on_this_day")
    assert [str(m) for m in message_note["message_ids"]] == [said[1]] and "4 years ago (10 June 2021)" in (
        message_note["text"])
    nothing = await new_user(db, disabled_kinds=frozenset({"greeting"}))
    await scheduler(db, clock).tick()
    assert await sent(db, nothing) == []
    assert (await job_states(db, nothing))["on_this_day:2025-06-10"] == ("skipped", "nothing_found")


async def test_birthday_fires_once_and_again_next_year(db: Database) -> None:
    """The birthday setting: one message on the day however many passes run, another the next year."""
    user = await new_user(db, birthday=date(1990, 4, 12), disabled_kinds=frozenset({"greeting", "on_this_day"}))
    clock = VirtualClock(datetime(2025, 4, 11, 12, tzinfo=UTC))
    s = scheduler(db, clock)
    for at in (datetime(2025, 4, 11, 12), datetime(2025, 4, 12, 8), datetime(2025, 4, 12, 9),
               datetime(2025, 4, 12, 21), datetime(2025, 4, 13, 8)):
        clock.at = at.replace(tzinfo=UTC)
        await s.tick()
    (birthday,) = await sent(db, user, "milestone")
    assert birthday["occurrence"] == "birthday:2025" and birthday["text"].startswith("Happy birthday, Ana!")
    clock.at = datetime(2026, 4, 12, 8, tzinfo=UTC)
    await s.tick()
    assert [n["occurrence"] for n in await sent(db, user, "milestone")] == ["birthday:2025", "birthday:2026"]


async def test_quiet_hours_hold_a_message_until_they_end(db: Database) -> None:
    """A 06:00 greeting with quiet hours 22:00–07:00 is not delivered at 06:00 or 06:59 but at 07:00."""
    user = await new_user(db, timezone="America/New_York", morning_time=time(6, 0))
    day = date(2025, 6, 10)
    clock = VirtualClock(ny(day, 6, 0))
    s = scheduler(db, clock)
    report = await s.tick()
    assert report.deferred == 1 and await sent(db, user) == []
    clock.at = ny(day, 6, 59)
    await s.tick()
    assert await sent(db, user) == []
    clock.at = ny(day, 7, 0)
    await s.tick()
    (greeting,) = await sent(db, user)
    assert greeting["created_at"] == ny(day, 7, 0)


async def test_opted_out_kinds_never_fire(db: Database) -> None:
    """With greetings and milestones disabled, neither is sent (their jobs say why); "on this day" still is."""
    user = await new_user(db, birthday=date(1990, 6, 10), disabled_kinds=frozenset({"greeting", "milestone"}))
    await add_memory(db, user, "I adopted a cat called Miso.", date(2024, 6, 10))
    clock = VirtualClock(datetime(2025, 6, 10, 9, tzinfo=UTC))
    await scheduler(db, clock).tick()
    assert [n["kind"] for n in await sent(db, user)] == ["on_this_day"]
    states = await job_states(db, user)
    assert states["greeting:2025-06-10"] == ("skipped", "opted_out") == states["birthday:2025"]


# ----------------------------------------------------------------------------------------- at most once


class GatedLlm:
    """Blocks inside its first generation until released — the injected LLM seam, used to stop a worker in
    the middle of a job (between its claim and its commit) the way a crash would."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.calls = 0

    async def acomplete(self, messages: Sequence[Any], **options: Any) -> str:
        self.calls += 1
        self.entered.set()
        await asyncio.Event().wait()  # never returns: the worker is "killed" here
        return ""


async def test_a_restart_mid_job_loses_and_duplicates_nothing(db: Database) -> None:
    """Worker A dies while writing the first of three greetings: its job stays claimed. Worker B sends the
    other two at once and the claimed one only after A's lease ran out; A, restarted, sends nothing twice."""
    users = [await new_user(db) for _ in range(3)]
    clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
    gated = GatedLlm()
    a = scheduler(db, clock, "worker-a", gated)
    killed = asyncio.create_task(a.tick())
    await asyncio.wait_for(gated.entered.wait(), 30)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    b = scheduler(db, clock, "worker-b")
    assert (await b.tick()).sent == 2
    assert [len(await sent(db, u)) for u in users].count(1) == 2
    clock.at += LEASE + timedelta(seconds=1)
    assert (await b.tick()).sent == 1
    restarted = scheduler(db, clock, "worker-a")
    assert await restarted.release_own() == 0  # B took its job back; nothing of A's is left running
    assert (await restarted.tick()).sent == 0
    for u in users:
        assert [n["occurrence"] for n in await sent(db, u)] == ["greeting:2025-06-10"]


async def test_the_same_worker_restarting_releases_its_job_at_once(db: Database) -> None:
    """A worker that restarts (same data dir, same id) takes its interrupted job back at start, not after the
    lease: the greeting goes out on the first pass."""
    user = await new_user(db)
    clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
    gated = GatedLlm()
    killed = asyncio.create_task(scheduler(db, clock, "worker-a", gated).tick())
    await asyncio.wait_for(gated.entered.wait(), 30)
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    assert (await job_states(db, user))["greeting:2025-06-10"][0] == "running"
    again = scheduler(db, clock, "worker-a")
    assert await again.release_own() == 1
    assert (await again.tick()).sent == 1
    assert len(await sent(db, user)) == 1


async def test_two_workers_on_one_database_never_double_send(db: Database, tmp_path_factory: Any) -> None:
    """Two schedulers with their own connection pools (two server processes) run their passes concurrently
    over 40 users with a greeting and a milestone each: every occurrence is sent exactly once."""
    users = [await new_user(db) for _ in range(40)]
    async with db.pool.connection() as conn:
        for u in users:
            await create_milestone(conn, await KEYS.for_user(conn, u), "Our anniversary", date(2015, 6, 10),
                                   "anniversary")
    clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
    async with Database.open(db.url, tmp_path_factory.mktemp("second-pool")) as other:
        a, b = scheduler(db, clock, "worker-a"), scheduler(other, clock, "worker-b")
        reports = []
        for minute in range(3):
            clock.at = datetime(2025, 6, 10, 8, minute, tzinfo=UTC)
            reports += await asyncio.gather(a.tick(), b.tick(), a.tick(), b.tick())
    assert sum(r.sent for r in reports) == 80
    for u in users:
        assert sorted(n["kind"] for n in await sent(db, u)) == ["greeting", "milestone"]
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT claimed_by, count(*) AS n FROM proactive_jobs WHERE state = 'sent' GROUP BY claimed_by"
        )
        split = {r["claimed_by"]: r["n"] for r in await cur.fetchall()}
    assert sum(split.values()) == 80 and set(split) <= {"worker-a", "worker-b"}


async def test_a_deleted_memory_cancels_its_message(db: Database) -> None:
    """A job whose memory was deleted before it was sent is skipped, never sent with a missing source."""
    user = await new_user(db, disabled_kinds=frozenset({"greeting"}), **NO_QUIET)
    memory = await add_memory(db, user, "I ran my first marathon.", date(2024, 6, 10))
    clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
    async with db.pool.connection() as conn:
        from voice_server.avatar.proactive import planner

        await planner.plan_users(conn, KEYS, clock.at)
        await conn.execute("DELETE FROM memories WHERE id = %s", (uuid.UUID(memory),))
    await scheduler(db, clock).tick()
    assert await sent(db, user) == []
    assert (await job_states(db, user))["on_this_day:2025-06-10"] == ("skipped", "source_gone")


async def test_the_real_ci_llm_words_a_grounded_message(db: Database) -> None:
    """With the real ci LLM, the message is its wording after code's header, or the template when its wording
    mentions anything not grounded — never a date that is not in the data."""
    from models.llm import load_llm

    llm = load_llm(None, "ci")
    try:
        user = await new_user(db, disabled_kinds=frozenset({"greeting"}))
        await add_memory(db, user, "I passed my driving test!", date(2023, 6, 10))
        clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
        await scheduler(db, clock, llm=llm).tick()
        (note,) = await sent(db, user)
    finally:
        llm.close()
    assert note["text"].startswith("On this day 2 years ago (10 June 2023), you told me: “I passed my driving test!”")
    assert note["source"] in ("llm", "template")
    years = {w for w in note["text"].replace("(", " ").replace(")", " ").split() if w.isdigit() and len(w) == 4}
    assert years <= {"2023"}


# ------------------------------------------------------------------------------------------------ delivery


async def test_a_subscriber_that_stops_reading_is_dropped_not_waited_for(db: Database) -> None:
    """The hub never blocks: a subscriber whose queue fills is dropped (it will reconnect and replay); the
    others keep receiving."""
    hub = NotificationHub(db, scheduler_module.notifications.NotificationStore(db, KEYS))
    user = uuid.uuid4()
    slow, fast = hub.subscribe(user), hub.subscribe(user)
    got = []
    for n in range(QUEUE_MAX + 5):
        hub.publish(user, {"id": str(n)})
        got.append(await fast.get())
    assert slow.dropped and slow.ended and not fast.dropped and len(got) == QUEUE_MAX + 5
    assert [await slow.get() for _ in range(QUEUE_MAX)] == [{"id": str(n)} for n in range(QUEUE_MAX)]
    assert await slow.get() is None and hub.subscribers(user) == 1
    fast.close()
    assert hub.subscribers(user) == 0


async def test_live_delivery_through_listen_notify(db: Database) -> None:
    """A notification committed by a scheduler on another pool reaches this process's subscriber through
    Postgres NOTIFY, already opened, without polling."""
    user = await new_user(db)
    store = scheduler_module.notifications.NotificationStore(db, KEYS)
    hub = NotificationHub(db, store)
    await hub.start()
    try:
        assert hub.listening.is_set()
        with hub.subscribe(user) as subscription:
            clock = VirtualClock(datetime(2025, 6, 10, 8, 0, tzinfo=UTC))
            await scheduler(db, clock).tick()
            note = await asyncio.wait_for(subscription.get(), 10)
        assert note is not None and note["kind"] == "greeting" and note["text"].startswith("Good morning")
    finally:
        await hub.aclose()


async def test_avatar_context_adds_the_tone_line_and_observes_the_turn(db: Database) -> None:
    """The turn hooks: ``after_turn`` queues the user's words for the bond (applied off the turn), and the next
    ``build_context`` puts the tone line in the late system message, never in the cached persona prefix."""
    from pipeline.ports import FinishedTurn
    from voice_server.conversations import AvatarContext, ConversationStore

    user = await new_user(db)
    bonds = BondService(db, KEYS)
    await bonds.start()
    try:
        store = ConversationStore(db, KEYS)
        conversation = await store.start(user, "soma", "chat")
        context = AvatarContext(store, conversation, user, "You are Soma.", bond=bonds)
        first = await context.build_context(str(user), "hello", [])
        assert first == [{"role": "system", "content": "You are Soma."}, {"role": "user", "content": "hello"}]
        for text in ("I feel awful, my cat is sick.", "I am so sad and worried."):
            await context.after_turn(str(user), FinishedTurn(1, text, "Oh no.", "Oh no.", False))
        await asyncio.wait_for(bonds.drained(), 10)
        messages = await context.build_context(str(user), "hi again", [])
        assert messages[0] == {"role": "system", "content": "You are Soma."}
        assert messages[1]["role"] == "system" and messages[1]["content"].startswith("Tone: ")
        assert "gentle" in messages[1]["content"] and messages[-1]["content"] == "hi again"
    finally:
        await bonds.aclose()
