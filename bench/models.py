"""Model benchmark for the ``full`` profile: load times, per-call latency, cold start and memory.

Run from the repository root: ``python -m bench.models`` (``make bench BENCH=models``). Provisions the full
profile first if needed, prints a table and writes ``bench/results/models.json``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench._common import percentiles, print_table, time_ms, write_result
from models.llm import CT2Llm, GenerationStats
from models.paths import default_models_dir
from models.provision import provision
from models.registry import ModelSet, describe, load_models
from models.tts import KokoroTts, PiperTts
from models.vad import FRAME_SAMPLES

REPO = Path(__file__).resolve().parent.parent
RUNS = 20
SERVE_RUNS = 3
COLD_RUNS = 5
THROUGHPUT_RUNS = 5

PERSONA = (
    "You are Soma, a caring friend talking with the user by voice. Answer in one or two short spoken "
    "sentences. Never use lists, headings, markdown or code. Be warm and curious, and ask a short "
    "follow-up question when it helps the conversation."
)
ASR_TEXT = "Could you remind me to call my sister tomorrow evening after work?"
TTS_TEXT = "Sure, I can help with that. What time works best for you tomorrow?"

# Runs in a fresh interpreter: import + load everything, then one call per model, reporting timings and RSS.
_COLD_START = """
import time
started = time.perf_counter()
import json, numpy as np
from models.registry import load_models
models = load_models(None, "full")
loaded_ms = (time.perf_counter() - started) * 1000
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
rss_loaded = rss()
models.vad.new_stream().prob(np.zeros(512, np.float32))
models.asr.transcribe(np.zeros(16000, np.float32))
models.llm.complete([{"role": "user", "content": "Hello!"}], max_tokens=8)
models.tts_fast.synthesize("Hello there.")
models.tts_quality.synthesize("Hello there.")
models.embed.embed(["hello"])
print(json.dumps({"cold_ms": loaded_ms, "load_ms": models.load_ms, "rss_loaded": rss_loaded, "rss_used": rss()}))
models.close()
"""


def espeak_16k(text: str) -> npt.NDArray[np.float32]:
    """``text`` spoken by espeak-ng, resampled to 16 kHz mono float32."""
    raw = subprocess.run(["espeak-ng", "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(raw)) as wav:
        rate = wav.getframerate()
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    positions = np.arange(0, len(audio) * 16_000 / rate) * rate / 16_000
    resampled: npt.NDArray[np.float32] = np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)
    return resampled


def cold_start() -> tuple[list[float], dict[str, float], float, float]:
    """Load all full models in fresh interpreters; returns cold ms samples, last per-model ms, RSS after
    load and RSS after one call per model (MB, median over runs)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(REPO), os.environ.get("PYTHONPATH")))))
    samples, loaded, used = [], [], []
    load_ms: dict[str, float] = {}
    for _ in range(COLD_RUNS):
        out = subprocess.run(
            [sys.executable, "-c", _COLD_START], capture_output=True, text=True, check=True, cwd=REPO, env=env
        )
        report = json.loads(out.stdout.strip().splitlines()[-1])
        samples.append(report["cold_ms"])
        loaded.append(report["rss_loaded"])
        used.append(report["rss_used"])
        load_ms = report["load_ms"]
    return samples, load_ms, float(np.median(loaded)), float(np.median(used))


def first_piece_ms(llm: CT2Llm, messages: list[dict[str, str]], **options: Any) -> float:
    """Milliseconds from the call to the first text piece; the generation is then stopped."""
    started = time.perf_counter()
    pieces = llm.generate_tokens(messages, **options)
    next(pieces)
    elapsed = (time.perf_counter() - started) * 1000
    pieces.close()
    return elapsed


FACTS = [
    "The user's sister Maya turns 40 next month and loves the Italian place near the river.",
    "The user works as a nurse on the night shift and often feels tired on Mondays.",
    "The user is training for a 10 km run in the spring and runs three times a week.",
    "The user's dog Biscuit is a twelve-year-old beagle who hates thunderstorms.",
    "The user grew up by the sea and misses swimming in the summer.",
    "The user is learning Portuguese because their partner's family lives in Lisbon.",
    "The user prefers short, warm answers and laughs at gentle jokes.",
    "Last week the user said a deadline at work moved up and it stressed them out.",
]


def persona_conversation(llm: CT2Llm, target_tokens: int = 600) -> list[dict[str, str]]:
    """A ~``target_tokens``-token persona system prompt (style plus remembered facts) and one user turn: the
    shape of a real Soma turn, where the persona and recalled memories dominate the prompt."""
    lines = [PERSONA, "What you know about the user:"]
    question = {"role": "user", "content": "What do you think I should do this weekend?"}
    while llm.count_tokens([{"role": "system", "content": "\n".join(lines)}, question]) < target_tokens:
        lines.append(f"- {FACTS[(len(lines) - 2) % len(FACTS)]}")
    return [{"role": "system", "content": "\n".join(lines)}, question]


def llm_metrics(llm: CT2Llm) -> dict[str, Any]:
    short = [{"role": "system", "content": "You are a caring friend. Answer in one short sentence."}]
    short.append({"role": "user", "content": "What should I cook tonight? I have rice and some eggs."})
    long = persona_conversation(llm)
    persona = llm.prefix_tokens(long[:1])
    metrics: dict[str, Any] = {
        "llm_prompt_tokens": llm.count_tokens(short),
        "llm_prompt_600_tokens": llm.count_tokens(long),
        "llm_ttft_ms": percentiles([first_piece_ms(llm, short) for _ in range(RUNS + 1)][1:]),
        "llm_ttft_600_ms": percentiles([first_piece_ms(llm, long) for _ in range(RUNS + 1)][1:]),
        "llm_ttft_600_cached_prefix_ms": percentiles(
            [first_piece_ms(llm, long, static_prompt_tokens=persona) for _ in range(RUNS + 1)][1:]
        ),
    }
    rates = []
    story = [short[0], {"role": "user", "content": "Tell me a story about a dragon who learns to cook."}]
    for _ in range(THROUGHPUT_RUNS):
        stats = GenerationStats()
        for _piece in llm.generate_tokens(story, max_tokens=80, stats=stats):
            pass
        assert stats.first_token_ms is not None
        rates.append((stats.generated_tokens - 1) / ((stats.total_ms - stats.first_token_ms) / 1000))
    metrics["llm_tokens_per_s"] = round(float(np.median(rates)), 1)
    return metrics


def tts_first_chunk_ms(voice: PiperTts | KokoroTts) -> list[float]:
    samples = []
    for _ in range(RUNS + 1):
        started = time.perf_counter()
        chunks = voice.stream(TTS_TEXT)
        next(chunks)
        samples.append((time.perf_counter() - started) * 1000)
        chunks.close()
    return samples[1:]


def warm_metrics(models: ModelSet) -> dict[str, Any]:
    vad, asr, llm, piper, kokoro, embed = (
        models.vad, models.asr, models.llm, models.tts_fast, models.tts_quality, models.embed
    )
    assert vad and asr and llm and piper and kokoro and embed, "load_models('full') loads every role"
    speech = espeak_16k(ASR_TEXT)
    stream = vad.new_stream()
    frames = [speech[i : i + FRAME_SAMPLES] for i in range(0, len(speech) - FRAME_SAMPLES, FRAME_SAMPLES)]
    vad_samples = []
    for _ in range(3):
        for frame in frames:
            started = time.perf_counter()
            stream.prob(frame)
            vad_samples.append((time.perf_counter() - started) * 1000)
    sentences = iter([f"Note {i}: the user mentioned their sister's birthday dinner by the river." for i in range(60)])
    return {
        "vad_latency_ms": percentiles(vad_samples),
        "asr_latency_ms": percentiles(time_ms(lambda: asr.transcribe(speech), RUNS)),
        "asr_audio_s": round(len(speech) / 16_000, 2),
        "asr_transcript": asr.transcribe(speech).text,
        "asr_utterance_latency_ms": percentiles(time_ms(lambda: asr.transcribe_utterance(speech), RUNS)),
        "asr_utterance_transcript": asr.transcribe_utterance(speech).text,
        **llm_metrics(llm),
        "tts_first_chunk_ms": percentiles(tts_first_chunk_ms(piper)),
        "kokoro_first_chunk_ms": percentiles(tts_first_chunk_ms(kokoro)),
        "embed_latency_ms": percentiles(time_ms(lambda: embed.embed([next(sentences)]), 50)),
    }


def serve_cold_start(runs: int = SERVE_RUNS) -> tuple[list[float], list[float], float]:
    """`soma serve` (full models, embedded Postgres + Redis) until /healthz answers 200: the first start in a
    fresh data dir (initdb included), then restarts on the same dir. Also the RSS of the server and its
    child processes (Postgres, Redis) once ready."""
    import shutil
    import socket
    import tempfile

    import httpx
    import psutil

    first: list[float] = []
    again: list[float] = []
    rss_mb = 0.0
    for _ in range(runs):
        data = Path(tempfile.mkdtemp(prefix="soma-bench-"))
        try:
            for attempt in range(2):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                env = {k: v for k, v in os.environ.items() if not k.startswith("SOMA_")}
                env.update(SOMA_DATA_DIR=str(data), SOMA_PORT=str(port), SOMA_MODEL_PROFILE="full")
                started = time.perf_counter()
                proc = subprocess.Popen(
                    [sys.executable, "-m", "voice_server.cli", "serve", "--http"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                )
                try:
                    while True:
                        if proc.poll() is not None:
                            raise RuntimeError(f"soma serve exited with {proc.returncode}")
                        try:
                            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                                break
                        except httpx.HTTPError:
                            pass
                        time.sleep(0.02)
                    (first if attempt == 0 else again).append((time.perf_counter() - started) * 1000)
                    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
                    rss_mb = max(rss_mb, sum(p.memory_info().rss for p in tree) / 1e6)
                finally:
                    proc.terminate()
                    proc.wait(60)
        finally:
            shutil.rmtree(data, ignore_errors=True)
    return first, again, rss_mb


def main() -> int:
    models_dir = default_models_dir()
    started = time.monotonic()
    provision("full", models_dir, progress=True)
    print(f"full profile ready ({time.monotonic() - started:.1f}s)", file=sys.stderr)

    cold, load_ms, rss_loaded, rss_used = cold_start()
    serve_first, serve_again, serve_rss = serve_cold_start()
    models = load_models(models_dir, "full")
    try:
        warm = warm_metrics(models)
    finally:
        models.close()
    metrics: dict[str, Any] = {
        "cold_start_ms": percentiles(cold),
        "serve_first_start_ms": percentiles(serve_first),
        "serve_restart_ms": percentiles(serve_again),
        "serve_rss_mb": round(serve_rss, 1),
        "rss_mb": round(rss_used, 1),
        "rss_loaded_mb": round(rss_loaded, 1),
        "load_ms": {name: round(ms, 1) for name, ms in load_ms.items()},
        **warm,
    }
    print_table(metrics)
    print("load_ms:", json.dumps(metrics["load_ms"]))
    print("asr transcript:", metrics["asr_transcript"])
    path = write_result(
        "models",
        models=describe("full"),
        metrics=metrics,
        notes=(
            "Full profile, CPU only. cold_start_ms: fresh interpreter, imports + load_models('full') "
            f"(n={COLD_RUNS}); serve_first_start_ms / serve_restart_ms: `soma serve --http` with the full models "
            "and embedded Postgres + Redis, launch -> /healthz 200, in a fresh data dir (initdb) / on the same "
            "dir again; serve_rss_mb: the server plus its Postgres and Redis processes once ready; "
            "rss_mb: that process after one call per model (rss_loaded_mb: right after "
            "loading). Latencies are warm, sequential, default ThreadConfig (LLM/ASR/TTS 2 threads, VAD/embed "
            f"1): vad per 512-sample frame of speech; asr = faster-whisper base int8, beam 1, on a "
            f"{metrics['asr_audio_s']} s espeak-ng utterance (asr_utterance: the pipeline's decode, encoder window "
            "sized to the audio instead of 30 s); llm_ttft = call to first text piece, greedy, "
            f"{metrics['llm_prompt_tokens']}- and {metrics['llm_prompt_600_tokens']}-token prompts "
            "(the long one is a persona + remembered-facts system prompt and one user question; "
            "llm_ttft_600_cached_prefix_ms: that system prompt passed as CT2 static_prompt, i.e. encoded once); "
            "llm_tokens_per_s: decode rate after the first token over 80-token replies (GenerationStats); "
            "tts first chunk = first sentence of a two-sentence reply; embed = one "
            "sentence per call, float32 CT2 encoder."
        ),
    )
    print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
