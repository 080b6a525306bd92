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
5. audio and video (``--asr ci,full``: each speech model provisioned): a ~60 s espeak-ng voice note (Ogg/Opus)
   and a 60 s 1280×720 30 fps H.264 video with the same speech, imported end to end (validate, decode,
   transcribe window by window, keep the recording and keyframes sealed, store): wall time over audio
   length is the import's real-time factor; "words heard" is the share of the spoken words found in the
   stored transcript.

RSS is sampled after every batch (the progress callback) and compared with the RSS before the import.
The user's own messages are drawn from the 3,000 most frequent English words (wordfreq), so the persona has
varied material to sample and embed; the other sender's lines are all alike.

    python -m bench.imports                  # 100 k messages and the media imports, ~2 min
    python -m bench.imports --messages 20000
    python -m bench.imports --media-only --asr full
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
from voice_server.avatar.importers import Me
from voice_server.avatar.imports.job import (
    MAX_MEMORIES,
    ImportResult,
    Progress,
    create_import,
    run_import,
)
from voice_server.avatar.imports.recordings_plan import MediaTools
from voice_server.avatar.imports.store import open_imported
from voice_server.avatar.persona.build import build_persona
from voice_server.avatar.persona.service import PersonaService
from voice_server.conversations import ConversationStore
from voice_server.security.keys import Keyring, new_master_key
from voice_server.stores.postgres import Database
from voice_server.user_files import MediaStore

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


async def timed_import(
    db: Database, keys: Keyring, embedder: Any, user_id: uuid.UUID, path: Path, media: MediaTools | None = None
) -> tuple[ImportResult, uuid.UUID, float, float]:
    """Import ``path`` for ``user_id``: its result, import id, wall seconds and RSS growth (MB, sampled after
    every batch)."""
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
                              progress=progress, media=media)
    seconds = time.perf_counter() - started
    return result, import_id, seconds, round(max(peak, rss_mb()) - before, 1)


async def one(db: Database, keys: Keyring, embedder: Any, user_id: uuid.UUID, path: Path) -> dict[str, Any]:
    result, _, seconds, growth = await timed_import(db, keys, embedder, user_id, path)
    return {"seconds": round(seconds, 2), "messages_per_s": round(result.read / seconds),
            "created": result.created, "memories": result.memories, "rss_growth_mb": growth}


def write_media(folder: Path, seconds: float) -> tuple[Path, Path, set[str]]:
    """A voice note and a 720p video of ``seconds`` of espeak-ng speech, and the words spoken."""
    from tests.avatar import media_fixtures as mf

    sentences = [mf.SENTENCES[0]]
    while len(pcm := mf.speech(*sentences)) < seconds * 16_000:
        sentences.append(mf.SENTENCES[len(sentences) % len(mf.SENTENCES)])
    voice = folder / "PTT-20240312-WA0004.opus"
    voice.write_bytes(mf.encode_audio(pcm, "ogg"))
    video = folder / "VID_20240312_100102.mp4"
    video.write_bytes(mf.make_video(pcm, len(pcm) / 16_000, [10.0, 25.0, 40.0], size=(1280, 720), fps=30, gop=60))
    words = {w.strip(".,").lower() for s in sentences for w in s.split()}
    return voice, video, words


async def one_media(
    db: Database, keys: Keyring, tools: MediaTools, user_id: uuid.UUID, path: Path, words: set[str]
) -> dict[str, Any]:
    """Import one recording end to end; its real-time factor and how many spoken words were heard."""
    result, import_id, seconds, growth = await timed_import(db, keys, None, user_id, path, tools)
    async with db.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, conversation, sender, text FROM imported_messages WHERE import_id = %s", (import_id,)
        )
        key = await keys.for_user(conn, user_id)
        heard = " ".join(open_imported(key, row)["text"] for row in await cur.fetchall()).lower()
    found = {w.strip(".,!?") for w in heard.split()}
    return {"audio_s": round(result.audio_s, 1), "seconds": round(seconds, 2),
            "rtf": round(seconds / result.audio_s, 3), "messages": result.created,
            "keyframes": sum(len(e.get("keyframes", ())) for e in result.media),
            "words_heard_pct": round(100 * len(words & found) / len(words), 1),
            "rss_growth_mb": growth}


async def run_media(args: argparse.Namespace, data_dir: Path, metrics: dict[str, Any]) -> dict[str, str]:
    """Part 4: audio and video imports with each speech model asked for."""
    from models.asr import load_asr
    from models.paths import ModelMissingError
    from models.registry import describe

    voice, video, words = write_media(data_dir, args.media_seconds)
    described: dict[str, str] = {}
    async with Database.open(None, data_dir / "media-db") as db:
        keys = Keyring([new_master_key()])
        store = MediaStore(db, keys, data_dir / "media")
        for profile in args.asr.split(","):
            try:
                asr = await asyncio.to_thread(load_asr, args.models_dir, profile)
            except ModelMissingError as exc:
                print(f"skipping the {profile} speech model: {exc}", file=sys.stderr)
                continue
            described[f"asr_{profile}"] = describe(profile)["asr"]
            try:
                async with db.pool.connection() as conn:
                    cur = await conn.execute(
                        "INSERT INTO users (username, password_hash) VALUES (%s, 'bench: no login') RETURNING id",
                        (f"bench-media-{profile}",),
                    )
                    row = await cur.fetchone()
                assert row is not None
                for label, path in (("voice_note", voice), ("video", video)):
                    result = await one_media(db, keys, MediaTools(asr, store), row["id"], path, words)
                    for name, value in result.items():
                        metrics[f"{label}_{profile}_{name}"] = value
            finally:
                asr.close()
    return described


async def run(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    from models.embed import load_embedder
    from models.registry import describe

    data_dir = Path(tempfile.mkdtemp(prefix="soma-bench-imports-"))
    metrics: dict[str, Any] = {}
    try:
        if args.media_only:
            return metrics, await run_media(args, data_dir, metrics)
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
                                     ("reimport", users[0], None)):
                result = await one(db, keys, emb, user, path)
                for key, value in result.items():
                    metrics[f"{label}_{key}"] = value
            metrics.update(await persona(db, keys, embedder, users[0]))
        embedder.close()
        models = {"embed": describe("ci")["embed"]}
        models.update(await run_media(args, data_dir, metrics))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    return metrics, models


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
        built = await build_persona(db, keys, embedder, user_id, turns=ConversationStore(db, keys))
    finally:
        done.set()
        await sampler
    total = time.perf_counter() - started
    service = PersonaService(db, keys, embedder, turns=ConversationStore(db, keys))
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
    parser.add_argument("--asr", default="ci,full", help="speech models for the audio/video part (profiles)")
    parser.add_argument("--media-seconds", type=float, default=60.0, help="length of the spoken recordings")
    parser.add_argument("--media-only", action="store_true", help="only the audio/video part")
    args = parser.parse_args()
    metrics, models = asyncio.run(run(args))
    if not args.media_only:
        metrics["target_store_messages_per_s"] = metrics["store_messages_per_s"] >= 5000
        metrics["target_rss_growth"] = metrics["store_rss_growth_mb"] <= 200
    print_table(metrics)
    full = args.messages == 100_000 and not args.media_only and args.media_seconds == 60.0
    name = args.out or ("imports" if full else "imports_quick")
    notes = (f"One transaction per file; batches of 500; memories capped at {MAX_MEMORIES} candidates per file. "
             "Persona: built from the first user's 100 k messages after the imports (statistics = streaming, "
             "opening and counting; embed = the example sample with the ci MiniLM); the example lookup is "
             "the per-turn query, the question's embedding given (recall computed it). Audio/video: espeak-ng "
             "speech, windows of <= 28 s transcribed one at a time on the model's worker (2 intra-op threads); "
             "rtf = import wall time / audio length, everything included (probe, decode, transcribe, keep the "
             "recording and keyframes sealed, store).")
    path = write_result(name, models=models, metrics=metrics, notes=notes,
                        command="python -m bench.imports " + " ".join(sys.argv[1:]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
