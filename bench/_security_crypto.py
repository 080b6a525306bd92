"""The security benchmark's steps that need no database: a turn's crypto alone, and media sealing throughput.

See `bench.security`. Also the pieces both halves share: the pass-through key (the "without encryption"
baseline) and the synthetic conversation texts.

Media throughputs are plaintext megabytes (10^6 bytes) per second, p50 over runs. `FileSealer` makes several
short-lived buffers of about a chunk (256 KiB) per chunk, so its speed depends on what the C allocator does with
them: reused heap memory (what a long-running process that has freed a large block gets from glibc's dynamic
mmap threshold) costs nothing, but a fresh mapping per buffer page-faults in 64 pages each time. The in-memory
step therefore also runs in a child process with ``MALLOC_MMAP_THRESHOLD_=131072`` (every such buffer a fresh
mapping: the worst case), and both report their page faults per chunk.

    python -m bench._security_crypto --mib 32 --runs 3    # the in-memory media step alone, JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pipeline.ports import Message
from voice_server.avatar.memory.store import KINDS, NewMemory, open_row
from voice_server.live_sessions import LiveState, session_id_for
from voice_server.security import fields
from voice_server.security.files import CHUNK, FileSealer, open_records, write_sealed
from voice_server.security.keys import KEY_LEN, LEGACY_PLAINTEXT, NONCE_LEN, UserKey

HISTORY_MESSAGES = 12  # a session's history bound (SessionConfig.history_messages, chat_routes.HISTORY_MESSAGES)

USER_LINES = (
    "I finally booked the train to Porto for my sister's birthday, leaving on Friday.",
    "Work was rough today, the deadline moved up again and my manager barely noticed.",
    "Can you remind me what I said about Biscuit being scared of the thunderstorms?",
    "I ran eight kilometres this morning without stopping, my knee felt fine for once.",
    "Tomas called from Berlin, he says the new flat is tiny but the light is lovely.",
    "I want to practise some Portuguese with you before the dinner with Ana's family.",
)
REPLY_SENTENCES = (
    "That sounds like a lovely plan, and Ana will be so happy to see you there.",
    "It makes sense that you feel drained after a day like that; anyone would.",
    "You told me Biscuit hides under the bed whenever the sky starts rumbling.",
    "Eight kilometres is a real milestone, especially with your knee behaving.",
    "A small flat with good light sounds very Tomas, honestly.",
    "Let's start with greetings and then try ordering food together.",
    "Do you want to talk about what would make tomorrow a bit easier?",
)
MEMORY_SUBJECTS = ("Ana", "Biscuit", "Tomas", "work", "running", "Portuguese", None)


class PassThroughKey(UserKey):
    """A `UserKey` that seals nothing: values are written as legacy plaintext (``0x00 ‖ bytes``), which
    `UserKey.open_bytes` returns as is. The baseline of "without encryption"."""

    __slots__ = ()

    def seal_bytes(self, data: bytes, context: str) -> bytes:
        return bytes([LEGACY_PLAINTEXT]) + data


def user_text(n: int) -> str:
    return USER_LINES[n % len(USER_LINES)]


def reply_text(n: int, length: int = 300) -> str:
    """~``length`` characters of reply, varying with ``n``."""
    parts: list[str] = []
    while sum(len(p) + 1 for p in parts) < length:
        parts.append(REPLY_SENTENCES[(n + len(parts)) % len(REPLY_SENTENCES)])
    return " ".join(parts)[:length]


def memory_of(n: int) -> NewMemory:
    subject = MEMORY_SUBJECTS[n % len(MEMORY_SUBJECTS)]
    text = f"{REPLY_SENTENCES[n % len(REPLY_SENTENCES)]} ({n})"
    return NewMemory(text, KINDS[n % len(KINDS)], 0.3 + (n % 7) / 10, subject)


def fine(samples_ms: Sequence[float]) -> dict[str, float | int]:
    """`percentiles` to the microsecond, for sub-millisecond in-process timings."""
    values = np.asarray(samples_ms)
    return {
        "p50": round(float(np.percentile(values, 50)), 4),
        "p95": round(float(np.percentile(values, 95)), 4),
        "n": len(values),
    }


def crypto_per_turn(runs: int, candidates: int) -> dict[str, Any]:
    """Step 2: the sealing and opening that step 1's per-turn overhead covers, without I/O — 3 turn texts
    sealed (`add_turn`), the live state sealed (`build_context`), ``candidates`` memory rows opened, text and
    subject (`MemoryStore.nearest` in recall) — with a real key and a pass-through key, alternating."""
    user_id, conversation_id = uuid.uuid4(), uuid.uuid4()
    real, plain = UserKey(user_id, os.urandom(KEY_LEN)), PassThroughKey(user_id, bytes(KEY_LEN))
    history: list[Message] = []
    for n in range(HISTORY_MESSAGES // 2):
        history += [{"role": "user", "content": user_text(n)}, {"role": "assistant", "content": reply_text(n)}]
    state = LiveState(
        session_id_for(conversation_id),
        str(user_id),
        str(conversation_id),
        "bench",
        "chat",
        "thinking",
        user_text(0),
        history,
    )

    def rows(key: UserKey) -> list[dict[str, Any]]:
        ids = [uuid.UUID(int=n + 1) for n in range(candidates)]
        made = []
        for n, i in enumerate(ids):
            memory = memory_of(n)
            subject = key.seal(memory.subject, fields.memory("subject", i)) if memory.subject else None
            made.append({"id": i, "text": key.seal(memory.text, fields.memory("text", i)), "subject": subject})
        return made

    def once(key: UserKey, memory_rows: list[dict[str, Any]], n: int) -> float:
        started = time.perf_counter()
        reply = reply_text(n)
        for column, text in zip(fields.TURN_COLUMNS, (user_text(n), reply, reply), strict=True):
            key.seal(text, fields.turn(column, conversation_id, n))
        key.seal(state.to_json(), fields.live_session(state.session_id))
        for row in memory_rows:
            open_row(key, row)
        return (time.perf_counter() - started) * 1000

    real_rows, plain_rows = rows(real), rows(plain)
    real_ms, plain_ms = [], []
    for n in range(runs + 50):
        a, b = once(real, real_rows, n), once(plain, plain_rows, n)
        if n >= 50:
            real_ms.append(a)
            plain_ms.append(b)
    diff = [a - b for a, b in zip(real_ms, plain_ms, strict=True)]
    return {
        "crypto_turn_encrypted_ms": fine(real_ms),
        "crypto_turn_plain_ms": fine(plain_ms),
        "crypto_turn_overhead_ms": fine(diff),
    }


MB = 1_000_000
WORST_CASE_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def _p50(rates: Sequence[float]) -> float:
    return round(float(np.percentile(rates, 50)), 1)


def _timed(fn: Callable[[], object]) -> tuple[float, int]:
    """Seconds and minor page faults of one call."""
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def _seal(key: UserKey, context: str, chunks: Sequence[bytes], keep: list[bytes] | None = None) -> None:
    """Seal ``chunks`` with `FileSealer` as `write_sealed` feeds it (a `CHUNK` at a time); the records are
    dropped unless ``keep`` collects them."""
    sealer = FileSealer(key, context)
    for chunk in chunks:
        out = sealer.feed(chunk)
        if keep is not None:
            keep.append(out)
    out = sealer.finish()
    if keep is not None:
        keep.append(out)


def _open(key: UserKey, context: str, sealed: bytes) -> None:
    """Open every record of a sealed file held in memory (`open_records`, the read path)."""
    for _ in open_records(io.BytesIO(sealed), key, context):
        pass


def _raw_aesgcm(chunks: Sequence[bytes]) -> None:
    """AES-256-GCM alone over the same chunks: the floor `FileSealer`'s framing adds to."""
    aead = AESGCM(secrets.token_bytes(KEY_LEN))
    for index, chunk in enumerate(chunks):
        aead.encrypt(secrets.token_bytes(NONCE_LEN), chunk, b"bench|%d" % index)


def in_memory(total_mib: int, runs: int) -> dict[str, Any]:
    """Seal, open, and raw AES-GCM over ``total_mib`` MiB of random bytes, ``runs`` times each, interleaved."""
    total = total_mib * 1024 * 1024
    chunks = [os.urandom(CHUNK) for _ in range(total // CHUNK)]
    key = UserKey(uuid.uuid4(), secrets.token_bytes(KEY_LEN))
    context = fields.media_file(uuid.uuid4())
    kept: list[bytes] = []
    _seal(key, context, chunks, kept)  # untimed: the file the decrypt runs read, and a warm-up
    sealed = b"".join(kept)
    kept.clear()
    seal, opened, raw, faults = [], [], [], []
    for _ in range(runs):
        seconds, count = _timed(lambda: _seal(key, context, chunks))
        seal.append(total / MB / seconds)
        faults.append(count / len(chunks))
        opened.append(total / MB / _timed(lambda: _open(key, context, sealed))[0])
        raw.append(total / MB / _timed(lambda: _raw_aesgcm(chunks))[0])
    return {
        "encrypt_mb_per_s": _p50(seal),
        "encrypt_runs_mb_per_s": [round(rate, 1) for rate in seal],
        "encrypt_faults_per_chunk": round(float(np.median(faults))),
        "decrypt_mb_per_s": _p50(opened),
        "aesgcm_raw_mb_per_s": _p50(raw),
        "size_overhead": round(len(sealed) / total - 1, 5),
    }


def in_memory_worst_case(total_mib: int, runs: int) -> dict[str, Any]:
    """`in_memory` in a child process where every chunk-sized buffer is a fresh mapping (`WORST_CASE_ENV`)."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench._security_crypto", "--mib", str(total_mib), "--runs", str(runs)],
        cwd=Path(__file__).resolve().parent.parent,
        env={**os.environ, **WORST_CASE_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def _upload(chunks: Sequence[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def _write_plain(path: Path, chunks: Sequence[bytes]) -> None:
    """`write_sealed` without the sealing: same 0600 temporary file, same worker-thread writes of the same
    pieces, same fsync and rename."""
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        async for data in _upload(chunks):
            await asyncio.to_thread(fh.write, data)
        await asyncio.to_thread(os.fsync, fh.fileno())
    os.replace(tmp, path)


async def to_disk(total_mib: int, runs: int) -> dict[str, Any]:
    """`write_sealed` against `_write_plain` of the same bytes into a temporary directory, alternating which
    goes first, ``runs`` times each."""
    total = total_mib * 1024 * 1024
    chunks = [os.urandom(CHUNK) for _ in range(total // CHUNK)]
    key = UserKey(uuid.uuid4(), secrets.token_bytes(KEY_LEN))
    context = fields.media_file(uuid.uuid4())
    rates: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="soma-bench-media-") as tmp:
        path = Path(tmp) / "media"
        for run in range(runs):
            for sealed in (run % 2 == 0, run % 2 == 1):
                started = time.perf_counter()
                if sealed:
                    await write_sealed(path, key, context, _upload(chunks), limit=total)
                else:
                    await _write_plain(path, chunks)
                rates[sealed].append(total / MB / (time.perf_counter() - started))
                path.unlink()
    return {"write_sealed_mb_per_s": _p50(rates[True]), "write_plain_mb_per_s": _p50(rates[False])}


async def measure_media(total_mib: int, runs: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The media metrics (``media_*``): in memory here and in the worst-case child, then to disk."""
    log(f"media: in memory, {runs} x {total_mib} MiB")
    here = in_memory(total_mib, runs)
    log(f"media: in memory, worst-case allocator ({WORST_CASE_ENV})")
    worst = in_memory_worst_case(total_mib, runs)
    log(f"media: to disk, {runs} x {total_mib} MiB each way")
    disk = await to_disk(total_mib, runs)
    metrics = {f"media_{name}": value for name, value in here.items()}
    metrics.update({f"media_worst_alloc_{name}": worst[name] for name in ("encrypt_mb_per_s", "decrypt_mb_per_s")})
    metrics["media_worst_alloc_encrypt_faults_per_chunk"] = worst["encrypt_faults_per_chunk"]
    metrics.update({f"media_{name}": value for name, value in disk.items()})
    metrics["media_mib"], metrics["media_runs"] = total_mib, runs
    return metrics


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The in-memory media step alone; JSON on stdout.")
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    print(json.dumps(in_memory(options.mib, options.runs)))
