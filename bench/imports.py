"""Import benchmark: messages/s and RSS growth storing a 100 k-message WhatsApp export (`run_import`).

In a fresh embedded Postgres, with a throwaway master key:

1. parse + seal + store, without an embedder (the issue's target: ≥ 5,000 messages/s, RSS growth ≤ 200 MB);
2. the same file for a second user with the ci MiniLM embedder: the same plus memory creation (at most
   `MAX_MEMORIES` candidates per file, embedded in batches);
3. the same file again for the first user: the idempotent path (every message already there, 0 stored);
4. the first user's persona built from those 100 k messages (`build_persona`: 50 k of the user's own
   streamed through the style, interest and place counters, 50 k senders counted; then up to 2,000 example
   messages embedded with the ci MiniLM): seconds for the statistics and for the embedding, RSS growth;
   then the per-turn example lookup (`PersonaService.examples_for`: the 3 nearest of the user's examples to
   an already embedded question, opened) over `LOOKUPS` different questions, p50/p95.

RSS is sampled after every batch (the progress callback) and compared with the RSS before the import.
The user's own messages are drawn from the 3,000 most frequent English words (wordfreq), so the persona has
varied material to sample and embed; the other sender's lines are all alike.

    python -m bench.imports                  # 100 k messages, ~1 min
    python -m bench.imports --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import percentiles, print_table, rss_mb, write_result
from voice_server.avatar.import_job import MAX_MEMORIES, Progress, create_import, run_import
from voice_server.avatar.importers import Me
from voice_server.avatar.persona.build import build_persona
from voice_server.avatar.persona.service import PersonaService
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

SENDERS = ("Ana Souza", "Me Myself")
FACTS = ("My sister {n} lives in Porto.", "I love hiking in the hills near {n}.", "I work at the {n} bakery.")
LOOKUPS = 200


def vocabulary() -> list[str]:
    import wordfreq

    return [w for w in wordfreq.top_n_list("en", 3000) if w.isalpha()]


def write_export(path: Path, messages: int) -> int:
    """An Android 24 h export, two senders; every 40th message is one of the user's own facts."""
    start = 1_546_329_600  # 2019-01-01
    words = vocabulary()
    rng = random.Random(20240501)
    with path.open("w", encoding="utf-8") as out:
        for i in range(messages):
            at = time.gmtime(start + 420 * i)
            sender = SENDERS[i % 2]
            if i % 40 == 1:
                text = FACTS[i % 3].format(n=f"Place{i}")
            elif sender == "Me Myself":
                text = " ".join(rng.sample(words, rng.randint(3, 12))) + (" 😊" if i % 7 == 0 else "")
            else:
                text = f"message number {i} with some words 😊"
            out.write(f"{time.strftime('%d/%m/%Y, %H:%M', at)} - {sender}: {text}\n")
    return path.stat().st_size


async def one(db: Database, keys: Keyring, embedder: Any, user_id: uuid.UUID, path: Path) -> dict[str, Any]:
    async with db.pool.connection() as conn:
        import_id = await create_import(conn, keys, user_id, path.name, None, worker="bench")
    before = rss_mb()
    peak = before

    def progress(_: Progress) -> None:
        nonlocal peak
        peak = max(peak, rss_mb())

    started = time.perf_counter()
    result = await run_import(db, keys, embedder, user_id=user_id, import_id=import_id,
                              open_file=lambda: path.open("rb"), name=path.name, me=Me.of("Me Myself"),
                              progress=progress)  # fmt: skip
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "messages_per_s": round(result.read / seconds),
            "created": result.created, "memories": result.memories,
            "rss_growth_mb": round(max(peak, rss_mb()) - before, 1)}  # fmt: skip


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    from models.embed import load_embedder
    from models.registry import describe

    data_dir = Path(tempfile.mkdtemp(prefix="soma-bench-imports-"))
    metrics: dict[str, Any] = {}
    try:
        path = data_dir / "WhatsApp Chat with Ana Souza.txt"
        metrics["file_mb"] = round(write_export(path, args.messages) / 1e6, 1)
        metrics["messages"] = args.messages
        embedder = load_embedder(args.models_dir, "ci", intra_threads=os.cpu_count() or 1)
        async with Database.open(None, data_dir) as db:
            keys = Keyring([new_master_key()])
            users = []
            async with db.pool.connection() as conn:
                for name in ("bench-a", "bench-b"):
                    cur = await conn.execute(
                        "INSERT INTO users (username, password_hash) VALUES (%s, 'bench: no login') RETURNING id",
                        (name,),
                    )
                    row = await cur.fetchone()
                    assert row is not None
                    users.append(row["id"])
            for label, user, emb in (("store", users[0], None), ("store_and_memories", users[1], embedder),
                                     ("reimport", users[0], None)):  # fmt: skip
                result = await one(db, keys, emb, user, path)
                for key, value in result.items():
                    metrics[f"{label}_{key}"] = value
            metrics.update(await persona(db, keys, embedder, users[0]))
        embedder.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return metrics, {"embed": describe("ci")["embed"]}


async def persona(db: Database, keys: Keyring, embedder: Any, user_id: uuid.UUID) -> dict[str, Any]:
    """Build the user's persona from the imported file, then time the per-turn example lookup."""
    before = rss_mb()
    peak = before
    done = asyncio.Event()

    async def sample_rss() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss_mb())
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_rss())
    started = time.perf_counter()
    try:
        built = await build_persona(db, keys, embedder, user_id)
    finally:
        done.set()
        await sampler
    total = time.perf_counter() - started
    service = PersonaService(db, keys, embedder)
    rng = random.Random(7)
    words = vocabulary()
    questions = [" ".join(rng.sample(words, 8)) + "?" for _ in range(LOOKUPS)]
    vectors = embedder.embed(questions)  # per turn, recall has embedded the words already
    await service.examples_for(user_id, "bench-a", vectors[0])  # warm the prompt cache, as every turn after the first
    samples = []
    for vector in vectors:
        t0 = time.perf_counter()
        section = await service.examples_for(user_id, "bench-a", vector)
        samples.append((time.perf_counter() - t0) * 1000)
        assert section.count("\n- ") == 3, section
    return {
        "persona_messages": built.messages,
        "persona_examples": built.examples,
        "persona_stats_s": built.stats_s,
        "persona_embed_s": built.embed_s,
        "persona_build_s": round(total, 2),
        "persona_rss_growth_mb": round(peak - before, 1),
        "persona_example_lookup_ms": percentiles(samples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    metrics, models = asyncio.run(run(args))
    metrics["target_store_messages_per_s"] = metrics["store_messages_per_s"] >= 5000
    metrics["target_rss_growth"] = metrics["store_rss_growth_mb"] <= 200
    print_table(metrics)
    name = args.out or ("imports" if args.messages == 100_000 else "imports_quick")
    notes = (f"One transaction per file; batches of 500; memories capped at {MAX_MEMORIES} candidates per file. "
             "Persona: built from the first user's 100 k messages after the imports (statistics = streaming, "
             "opening and counting; embed = the example sample with the ci MiniLM); the example lookup is "
             "the per-turn query, the question's embedding given (recall computed it).")  # fmt: skip
    path = write_result(name, models=models, metrics=metrics, notes=notes,
                        command="python -m bench.imports " + " ".join(sys.argv[1:]))  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
