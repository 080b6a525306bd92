"""Import benchmark: messages/s and RSS growth storing a 100 k-message WhatsApp export (`run_import`).

In a fresh embedded Postgres, with a throwaway master key:

1. parse + seal + store, without an embedder (the issue's target: ≥ 5,000 messages/s, RSS growth ≤ 200 MB);
2. the same file for a second user with the ci MiniLM embedder: the same plus memory creation (at most
   `MAX_MEMORIES` candidates per file, embedded in batches);
3. the same file again for the first user: the idempotent path (every message already there, 0 stored).

RSS is sampled after every batch (the progress callback) and compared with the RSS before the import.

    python -m bench.imports                  # 100 k messages, ~1 min
    python -m bench.imports --messages 20000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import print_table, rss_mb, write_result
from voice_server.avatar.import_job import MAX_MEMORIES, Progress, create_import, run_import
from voice_server.avatar.importers import Me
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database

SENDERS = ("Ana Souza", "Me Myself")
FACTS = ("My sister {n} lives in Porto.", "I love hiking in the hills near {n}.", "I work at the {n} bakery.")


def write_export(path: Path, messages: int) -> int:
    """An Android 24 h export, two senders; every 40th message is one of the user's own facts."""
    start = 1_546_329_600  # 2019-01-01
    with path.open("w", encoding="utf-8") as out:
        for i in range(messages):
            at = time.gmtime(start + 420 * i)
            sender = SENDERS[i % 2]
            text = FACTS[i % 3].format(n=f"Place{i}") if i % 40 == 1 else f"message number {i} with some words 😊"
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
        embedder.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return metrics, {"embed": describe("ci")["embed"]}


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
             "Persona build time: not measured (the persona is not built yet).")  # fmt: skip
    path = write_result(name, models=models, metrics=metrics, notes=notes,
                        command="python -m bench.imports " + " ".join(sys.argv[1:]))  # fmt: skip
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
