"""Bond and proactive-scheduler benchmark: what the bond costs a turn, and what a scheduler pass costs.

In a fresh embedded Postgres (no models: messages are templates, as on a server without an LLM):

1. VADER sentiment of a typical turn (~60 characters) and of a long one (cut to 1,000 characters).
2. ``BondService.tone`` (the per-turn read, on the turn's path) and ``BondService.apply`` (after the turn).
3. Scheduler passes over ``--users`` accounts, each with a bond, settings and 20 dated memories: a pass with
   nothing due (what runs every interval all day) and the morning pass that writes every user's greeting and
   "on this day" message (the day's peak).

    python -m bench.proactive               # 500 users
    python -m bench.proactive --users 50    # quick
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from bench._common import percentiles, print_table, write_result
from voice_server.avatar.bond.sentiment import Sentiment
from voice_server.avatar.bond.service import BondService, Observation
from voice_server.avatar.memory.store import MemoryStore, NewMemory
from voice_server.avatar.proactive.scheduler import ProactiveScheduler
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

TURN = "I had a long day at work but dinner with my sister was lovely."


async def run(users: int, data_dir: Path) -> dict[str, object]:
    keys = Keyring([new_master_key()])
    metrics: dict[str, object] = {}
    sentiment = Sentiment()
    await sentiment.start()
    samples = []
    for _ in range(200):
        started = time.perf_counter()
        sentiment.score_now(TURN)
        samples.append((time.perf_counter() - started) * 1000)
    metrics["vader_turn_ms"] = percentiles(samples)
    long_text = "I feel sad but the day was fine. " * 300
    metrics["vader_long_turn_ms"] = percentiles([_timed(lambda: sentiment.score_now(long_text)) for _ in range(50)])
    sentiment.close()

    async with Database.open(None, data_dir) as db:
        now = datetime(2025, 6, 10, 7, 0, tzinfo=UTC)
        clock = _Clock(now)
        bonds = BondService(db, keys, clock=clock)
        await bonds.start()
        ids = []
        store = MemoryStore(db, keys)
        vector = np.zeros(384, dtype=np.float32)
        vector[0] = 1.0
        started = time.perf_counter()
        for n in range(users):
            async with db.pool.connection() as conn:
                cur = await conn.execute(
                    "INSERT INTO users (username, password_hash, created_at) VALUES (%s, 'x', %s) RETURNING id",
                    (f"b{n}-{uuid.uuid4().hex[:6]}", now - timedelta(days=30)),
                )
                row = await cur.fetchone()
                assert row is not None
                ids.append(row["id"])
                for m in range(20):
                    when = date(2015 + m % 10, 6, 10) if m % 4 == 0 else date(2015 + m % 10, 1 + m % 12, 1 + m)
                    await store.insert(conn, row["id"], NewMemory(f"Memory {m} of user {n}.", "event", 0.5, None,
                                                                   when, "import"), vector)
        apply_ms = []
        for user in ids:
            started_apply = time.perf_counter()
            await bonds.apply(Observation(user, TURN, now - timedelta(hours=10)))
            apply_ms.append((time.perf_counter() - started_apply) * 1000)
        metrics["setup_s"] = round(time.perf_counter() - started, 1)
        metrics["bond_apply_ms"] = percentiles(apply_ms)
        tone_ms = []
        for user in ids[:200]:
            started_tone = time.perf_counter()
            await bonds.tone(user)
            tone_ms.append((time.perf_counter() - started_tone) * 1000)
        metrics["bond_tone_ms"] = percentiles(tone_ms)
        await bonds.aclose()

        scheduler = ProactiveScheduler(db, keys, worker="bench", clock=clock)
        idle = []
        for _ in range(5):
            started = time.perf_counter()
            report = await scheduler.tick()
            idle.append((time.perf_counter() - started) * 1000)
            assert report.sent == 0
        metrics["idle_pass_ms"] = percentiles(idle)
        clock.at = datetime(2025, 6, 10, 8, 0, tzinfo=UTC)
        started = time.perf_counter()
        report = await scheduler.tick()
        morning = time.perf_counter() - started
        metrics["morning_pass_s"] = round(morning, 2)
        metrics["morning_messages"] = report.sent
        metrics["messages_per_s"] = round(report.sent / morning, 1)
        clock.at += timedelta(minutes=1)
        after = []
        for _ in range(5):
            started = time.perf_counter()
            await scheduler.tick()
            after.append((time.perf_counter() - started) * 1000)
        metrics["pass_after_morning_ms"] = percentiles(after)
    metrics["users"] = users
    return metrics


class _Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--out", default="proactive")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="soma-bench-proactive-"))
    try:
        metrics = asyncio.run(run(args.users, data_dir))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    print_table(metrics)
    path = write_result(args.out, models={"sentiment": "vaderSentiment 3.3.2"}, metrics=metrics,
                        notes="messages are templates (no LLM); one scheduler worker; embedded Postgres",
                        command=f"python -m bench.proactive --users {args.users}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
