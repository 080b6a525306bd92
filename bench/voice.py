"""The person's voice (issue 19): how close the voice match gets, how fast a matched voice starts, what it costs
a call.

1. **Voice matching** on five voices never in the search pool: Kokoro ``jf_nezumi`` and ``jm_kumo`` held out (the
   pool is the other packs), Piper joe, espeak-ng ``en-us`` and ``en-us+f3`` (the pool is every pack). Each target
   reads the enrollment sentences (`voice_server.avatar.voice.enroll.SENTENCES`, ≈ 30 s); each clip is checked and
   embedded as the server does (`clip_quality`, `SpeakerEncoders.embed`) and the profile is their mean weighted by
   seconds of speech (`enroll.target`'s rule). Then `search_voice` runs with the job's plan, baseline pack and synth
   (`KokoroTts.synthesize_with` resampled to 16 kHz with soxr, as `job.py` does).
2. **First chunk**: the first clause of ~20 reply openings, cut by the pipeline's `ClauseChunker` from word-sized
   deltas, synthesised by the matched Kokoro voice (onnxruntime's default spinning threads, and a second engine with
   ``session.intra_op.allow_spinning = 0``) and by Piper joe, each in blocks, the voices' order alternating
   between rounds.
3. **Voice to voice** of a call: `bench.voice_loop`'s sessions, once with Piper and once with the matched voice, the
   same questions (same seed), after a warm-up of each.

    make bench BENCH=voice                          # full profile, DEFAULT_PLAN
    python -m bench.voice --quick --profile ci      # CI_PLAN, fewer runs; writes voice_quick.json
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import shutil
import subprocess
import time
import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import soxr

import models.tts as tts_module
from bench._common import percentiles, print_table, write_result
from bench.voice_loop import analyse, run_sessions
from models.catalog import Role
from models.locate import locate
from models.registry import ModelSet, describe, load_models
from models.speaker import (
    SPEAKER_RATE,
    Embeddings,
    SpeakerEncoders,
    clip_quality,
    load_speaker_encoders,
    mean_embedding,
    similarity,
)
from models.tts import KokoroTts, KokoroVoice, PiperTts
from pipeline.chunker import ClauseChunker
from pipeline.ports import Tts
from voice_server.avatar.voice.enroll import SENTENCES
from voice_server.avatar.voice.job import DEFAULT_PACK
from voice_server.avatar.voice.match import CI_PLAN, DEFAULT_PLAN, MatchPlan, MatchResult, search_voice

FloatArray = npt.NDArray[np.float32]

HELDOUT_KOKORO = "jf_nezumi"  # the target whose matched voice is used for the latency figures
GOAL_GAIN_R = 0.15
GOAL_KOKORO_HELDOUT_R = 0.9
GOAL_FIRST_CHUNK_MS = 80.0
GOAL_V2V_RATIO = 1.10

# Openings of replies as the conversation LLM writes them; only their first clause is timed.
REPLY_OPENINGS = (
    "Paris is the capital of France, and it sits on the river Seine.",
    "I'm doing well, thank you for asking. How about you?",
    "Sure, I'd recommend The Hobbit if you like a good adventure.",
    "How about a simple pasta with garlic, olive oil and a little chilli?",
    "Yes, we talked about your trip to the mountains and the weather there.",
    "A warm bath and some quiet music can help you unwind after a long day.",
    "The ocean covers more than seventy percent of the planet's surface.",
    "First, heat the water until it is hot but not boiling, then add the tea.",
    "I don't sleep, but most people feel best waking up around seven.",
    "The sky looks blue because air scatters blue light more than red light.",
    "A walk is a gentle way to start the day, especially if you're tired.",
    "I love autumn, with its cool air and the leaves changing colour.",
    "Of course! Let's start with what you'd like to do on Saturday.",
    "The best way is to practise a little every day, even for ten minutes.",
    "The moon is about three hundred and eighty four thousand kilometres away.",
    "Try to go to bed at the same time every night, even at weekends.",
    "Romans ate a lot of bread, olives, cheese and a fish sauce called garum.",
    "That's a hard one. Taking a slow breath before you answer often helps.",
    "It looks like a bright morning, so it could be a lovely day.",
    "Good friendships last when both people listen and keep showing up.",
)
_DELTA = re.compile(r"\s*\S+")  # word-sized LLM deltas, each carrying its leading space as BPE tokens do


@dataclass(frozen=True, slots=True)
class Target:
    """A voice the search never sees: ``speak`` gives its 16 kHz audio; ``pool`` is what the search may mix."""

    name: str
    speak: Callable[[str], FloatArray]
    pool: Mapping[str, FloatArray]


def to_16k(audio: FloatArray, rate: int) -> FloatArray:
    """``audio`` at 16 kHz with soxr (what the server's match job uses)."""
    return np.asarray(soxr.resample(audio, rate, SPEAKER_RATE), dtype=np.float32)


def espeak(voice: str) -> Callable[[str], FloatArray]:
    """A ``speak`` for espeak-ng voice ``voice`` (e.g. ``en-us+f3``), as tests/models/conftest.py's ``espeak()``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (make install provides it)")

    def speak(text: str) -> FloatArray:
        raw = subprocess.run([exe, "--stdout", "-v", voice, text], capture_output=True, check=True).stdout
        with wave.open(io.BytesIO(raw)) as wav:
            rate = wav.getframerate()
            pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
        return to_16k(pcm.astype(np.float32) / 32768.0, rate)

    return speak


def targets(kokoro: KokoroTts, piper: PiperTts) -> list[Target]:
    styles = dict(kokoro.styles)

    def kokoro_target(pack: str) -> Target:
        style = styles[pack]
        pool = {name: s for name, s in styles.items() if name != pack}
        return Target(
            f"kokoro_{pack}", lambda text: to_16k(kokoro.synthesize_with(text, style), kokoro.sample_rate), pool
        )

    return [
        kokoro_target(HELDOUT_KOKORO),
        Target("piper_joe", lambda text: to_16k(piper.synthesize(text), piper.sample_rate), styles),
        Target("espeak_en_us", espeak("en-us"), styles),
        Target("espeak_en_us_f3", espeak("en-us+f3"), styles),
        kokoro_target("jm_kumo"),
    ]


def enroll(target: Target, encoders: SpeakerEncoders) -> tuple[Embeddings, dict[str, float]]:
    """The target's profile from the enrollment sentences, built like the server's: clips the server would refuse
    (`clip_quality` problems) are left out, the rest embedded one by one and averaged by seconds of speech."""
    kept: list[tuple[Embeddings, float]] = []
    refused = 0
    seconds = 0.0
    for sentence in SENTENCES:
        audio = target.speak(sentence)
        quality = clip_quality(audio)
        seconds += quality.seconds
        if not quality.ok:
            refused += 1
            continue
        try:
            kept.append((encoders.embed(audio), max(quality.speech_s, 0.1)))
        except ValueError:  # the server refuses these too ("too_little_speech")
            refused += 1
    if not kept:
        raise RuntimeError(f"{target.name}: every enrollment clip was refused")
    weights = [w for _, w in kept]
    profile = Embeddings(
        r=mean_embedding([e.r for e, _ in kept], weights), d=mean_embedding([e.d for e, _ in kept], weights)
    )
    return profile, {"enroll_s": round(seconds, 1), "enroll_speech_s": round(sum(weights), 1), "clips_refused": refused}


REPORT_TEXTS = (
    "The neighbours' dog barks every time the postman walks past our garden gate.",
    "We found an old map in the attic and spent the whole evening trying to read it.",
)
"""Sentences the reported similarities are measured on: neither enrollment nor search nor the held-out texts the
search chose its winner with (a score on those is the best of several, so slightly optimistic)."""


def scored(
    encoders: SpeakerEncoders, synth: Callable[[FloatArray, float, str], FloatArray], profile: Embeddings,
    style: FloatArray, speed: float,
) -> tuple[float, float]:
    """(r, d) similarity to ``profile`` of ``style`` speaking `REPORT_TEXTS`."""
    said = encoders.embed(np.concatenate([synth(style, speed, text) for text in REPORT_TEXTS]))
    return similarity(said.r, profile.r), similarity(said.d, profile.d)


def match_all(
    kokoro: KokoroTts, piper: PiperTts, encoders: SpeakerEncoders, plan: MatchPlan
) -> tuple[dict[str, Any], MatchResult]:
    """Run the search for every target; per-target and mean metrics, and the held-out Kokoro target's result."""

    def synth(style: FloatArray, speed: float, text: str) -> FloatArray:
        return to_16k(kokoro.synthesize_with(text, style, speed), kokoro.sample_rate)

    metrics: dict[str, Any] = {}
    per: dict[str, MatchResult] = {}
    fresh: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {}  # (matched r, d), (default r, d)
    for target in targets(kokoro, piper):
        profile, info = enroll(target, encoders)
        # Ceiling: the target itself on the held-out texts (what "the same voice" scores with this enrollment).
        own = encoders.embed(np.concatenate([target.speak(t) for t in plan.heldout_texts]))
        result = search_voice(target.pool, DEFAULT_PACK, profile, synth, encoders.embed, plan)
        per[target.name] = result

        fresh[target.name] = (scored(encoders, synth, profile, result.style, result.speed),
                              scored(encoders, synth, profile, target.pool[DEFAULT_PACK], 1.0))
        (m_r, m_d), (d_r, d_d) = fresh[target.name]
        key = f"target_{target.name}"
        metrics |= {
            f"{key}_matched_r": round(m_r, 4),
            f"{key}_matched_d": round(m_d, 4),
            f"{key}_default_r": round(d_r, 4),
            f"{key}_default_d": round(d_d, 4),
            f"{key}_selection_matched_r": round(result.heldout_r, 4),
            f"{key}_selection_matched_d": round(result.heldout_d, 4),
            f"{key}_selection_default_r": round(result.default_r, 4),
            f"{key}_selection_default_d": round(result.default_d, 4),
            f"{key}_self_r": round(similarity(own.r, profile.r), 4),
            f"{key}_self_d": round(similarity(own.d, profile.d), 4),
            f"{key}_improved": result.improved,
            f"{key}_syntheses": result.syntheses,
            f"{key}_search_s": round(result.seconds, 1),
            f"{key}_stage": result.recipe["stage"],
            **{f"{key}_{name}": value for name, value in info.items()},
        }
        print(
            f"{target.name}: default r/d {d_r:.3f}/{d_d:.3f}, matched {m_r:.3f}/{m_d:.3f} on fresh text "
            f"({result.recipe['stage']}; on the selection texts {result.default_r:.3f}/{result.default_d:.3f} -> "
            f"{result.heldout_r:.3f}/{result.heldout_d:.3f}), "
            f"{result.syntheses} syntheses in {result.seconds:.0f} s",
            flush=True,
        )
    results = list(per.values())
    scores = list(fresh.values())
    summary = {
        "matched_r": _mean(m[0] for m, _ in scores),
        "matched_d": _mean(m[1] for m, _ in scores),
        "default_r": _mean(d[0] for _, d in scores),
        "default_d": _mean(d[1] for _, d in scores),
        "matched_gain_r": _mean(m[0] - d[0] for m, d in scores),
        "matched_gain_d": _mean(m[1] - d[1] for m, d in scores),
        "matched_r_kokoro_heldout": round(fresh[f"kokoro_{HELDOUT_KOKORO}"][0][0], 4),
        "selection_matched_r": _mean(r.heldout_r for r in results),
        "selection_default_r": _mean(r.default_r for r in results),
        "improved_ratio": _mean(float(r.improved) for r in results),
        # Seconds, not ms: a search takes minutes. p50/p95/n over the targets.
        "search_s": percentiles([r.seconds for r in results]),
    }
    return summary | metrics, per[f"kokoro_{HELDOUT_KOKORO}"]


def _mean(values: Any) -> float:
    return round(float(np.mean(list(values))), 4)


def first_clause(reply: str) -> str:
    """The first clause the pipeline would send to TTS for ``reply`` streamed as word-sized deltas."""
    chunker = ClauseChunker()
    for delta in _DELTA.findall(reply):
        for clause in chunker.push(delta):
            return clause
    return next(iter(chunker.flush()))


def nospin_kokoro(model_dir: Path, intra_threads: int) -> KokoroTts:
    """A second Kokoro engine whose onnxruntime session does not spin-wait between ops. `models.tts` has no
    switch for session options, so its private session factory is swapped while the engine is built."""

    def session(path: Path, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

    with mock.patch.object(tts_module, "_session", session):
        return KokoroTts(model_dir, intra_threads=intra_threads)


async def first_chunks(voices: Mapping[str, Tts], clauses: list[str], rounds: int) -> dict[str, list[float]]:
    """Milliseconds of ``asynthesize`` per voice and clause (on the voice's own lane, as the pipeline calls it).

    Each round times every clause with one voice, then the next: interleaving voice by voice would let one
    onnxruntime pool's spinning threads steal the cores from the next voice's call, which is not what a call
    sees. The voice order alternates between rounds so slow drifts of the machine's load fall on all of them.
    Two untimed calls per voice first."""
    for voice in voices.values():
        for clause in clauses[:2]:
            await voice.asynthesize(clause)
    samples: dict[str, list[float]] = {name: [] for name in voices}
    for round_ in range(rounds):
        names = list(voices) if round_ % 2 == 0 else list(voices)[::-1]
        for name in names:
            for clause in clauses:
                started = time.perf_counter()
                await voices[name].asynthesize(clause)
                samples[name].append((time.perf_counter() - started) * 1000)
    return samples


async def v2v(models: ModelSet, voices: Mapping[str, Tts], turns: int) -> dict[str, Any]:
    """One session of ``turns`` questions per voice (same questions: same seed), after a one-turn warm-up each."""
    for voice in voices.values():
        await run_sessions(models, 1, 1, 0, seed=99, tts=voice)
    metrics: dict[str, Any] = {}
    for name, voice in voices.items():
        (transport,) = await run_sessions(models, 1, turns, interrupt_every=0, seed=7, tts=voice)
        latencies, _, stages = analyse(transport)
        if latencies:  # none only if every turn timed out; then the ratio below is None
            metrics[f"v2v_ms_{name}"] = percentiles(latencies)
        if stages["tts_first_chunk"]:
            metrics[f"tts_first_chunk_in_call_ms_{name}"] = percentiles(stages["tts_first_chunk"])
        metrics[f"answered_ratio_{name}"] = round(len(latencies) / turns, 2)
    return metrics


async def latency_async(models: ModelSet, matched: KokoroVoice, nospin: KokoroVoice, quick: bool) -> dict[str, Any]:
    assert models.tts_fast is not None
    clauses = [first_clause(reply) for reply in REPLY_OPENINGS]
    samples = await first_chunks(
        {"kokoro": matched, "kokoro_nospin": nospin, "piper": models.tts_fast}, clauses, rounds=1 if quick else 4
    )
    metrics: dict[str, Any] = {f"{name}_first_chunk_ms": percentiles(values) for name, values in samples.items()}
    metrics["first_clause_words_mean"] = round(float(np.mean([len(c.split()) for c in clauses])), 2)
    metrics |= await v2v(models, {"piper": models.tts_fast, "matched": matched}, turns=5 if quick else 10)
    piper, matched_call = metrics.get("v2v_ms_piper"), metrics.get("v2v_ms_matched")
    metrics["matched_v2v_ratio"] = (
        round(matched_call["p50"] / piper["p50"], 3) if piper and matched_call and piper["p50"] > 0 else None
    )
    return metrics


def goals(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met."""
    checks: dict[str, tuple[str, float | None]] = {
        "matched_gain_r": (f">= {GOAL_GAIN_R}", metrics["matched_gain_r"]),
        "matched_r_kokoro_heldout": (f">= {GOAL_KOKORO_HELDOUT_R}", metrics["matched_r_kokoro_heldout"]),
        "kokoro_first_chunk_ms.p50": (f"<= {GOAL_FIRST_CHUNK_MS}", metrics["kokoro_first_chunk_ms"]["p50"]),
        "matched_v2v_ratio": (f"<= {GOAL_V2V_RATIO}", metrics["matched_v2v_ratio"]),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (goal, value) in checks.items():
        bound = float(goal.split()[1])
        met = value is not None and (value >= bound if goal.startswith(">=") else value <= bound)
        out[name] = {"goal": goal, "value": value, "met": met}
    return out


NOTES = (
    "Voice matching: five targets never in the search pool (target_kokoro_jf_nezumi and target_kokoro_jm_kumo: a "
    "Kokoro pack held out, pool = the other packs; piper_joe, espeak_en_us, espeak_en_us_f3: pool = all five "
    "packs). Each target reads the 8 enrollment sentences (enroll.SENTENCES, ~30 s; enroll_s/enroll_speech_s); "
    "clips with clip_quality problems are left out as the server refuses them (clips_refused); the profile is the "
    "mean of the per-clip SpeakerEncoders embeddings weighted by speech seconds (enroll.target's rule). "
    "search_voice runs with DEFAULT_PLAN (CI_PLAN in the quick run), baseline pack job.DEFAULT_PACK (jf_alpha), "
    "synth = KokoroTts.synthesize_with resampled to 16 kHz with soxr, as the job does. r = resemblyzer cosine, d = "
    "d-vector cosine, measured on two fresh sentences (REPORT_TEXTS: in neither enrollment, search nor the held-out "
    "texts the winner was chosen on, since the best of several finalists on those is slightly optimistic; the "
    "selection-text figures are kept as *_selection_*); matched_* and default_* are means over the five targets,"
    " matched_gain_r/_d the mean of matched - default (0 for a target where nothing"
    " beat the default on both metrics: improved false, the default is kept). self_r/_d: the target itself speaking"
    " the held-out texts against its own profile (the ceiling: 'the same voice'). search_s is in SECONDS, p50/p95/n"
    " over the targets (each search's MatchResult.seconds, held-out judgement included). First chunk: the first "
    "clause the pipeline's ClauseChunker cuts from each of 20 reply openings streamed as word-sized deltas "
    "(first_clause_words_mean words), timed as asynthesize on the voice's lane (what pipeline/reply.py awaits "
    "before the first audio); kokoro = the matched voice of the jf_nezumi target, kokoro_nospin = the same style on"
    " a second engine with session.intra_op.allow_spinning=0, piper = Piper joe; each voice times the 20 clauses in"
    " a block (1 round quick, 4 rounds full, the voices' order alternating between rounds), 2 untimed calls each "
    "first. v2v: bench.voice_loop sessions (espeak questions streamed in real time, last voiced sample -> first "
    "audible reply frame), one session of 10 questions (5 quick) with Piper and one with the matched voice, same "
    "questions and seed, after a one-turn warm-up of each; matched_v2v_ratio = matched p50 / Piper p50; "
    "tts_first_chunk_in_call_ms_* are the session's TTS marks relative to the VAD end of speech. answered_ratio_*: "
    "questions answered within the session's budget. goals: the issue's targets (matched beats default by >= 0.15 R"
    " on average, >= 0.9 R on the held-out Kokoro target, first chunk <= 80 ms p50, v2v within 10 % of Piper's) "
    "with the measured value and whether each is met."
)


def run(profile: str, quick: bool) -> None:
    plan = CI_PLAN if quick else DEFAULT_PLAN
    started = time.perf_counter()
    models = load_models(None, profile, roles=["vad", "asr", "llm", "tts-fast", "tts-quality"])
    encoders = load_speaker_encoders(None, profile)
    nospin_engine: KokoroTts | None = None
    try:
        assert models.tts_quality is not None and models.tts_fast is not None
        kokoro = models.tts_quality
        metrics, heldout = match_all(kokoro, models.tts_fast, encoders, plan)
        encoders.close()
        matched = kokoro.voice(heldout.style, speed=heldout.speed, name="matched")
        _, kokoro_dir = locate(None, Role.TTS_QUALITY, profile)
        nospin_engine = nospin_kokoro(kokoro_dir, intra_threads=2)  # ThreadConfig's tts default, as loaded above
        nospin = nospin_engine.voice(heldout.style, speed=heldout.speed, name="matched-nospin")
        metrics |= asyncio.run(latency_async(models, matched, nospin, quick))
        metrics["goals"] = goals(metrics)
        metrics["bench_s"] = round(time.perf_counter() - started, 1)
        print_table(metrics)
        for name, goal in metrics["goals"].items():
            print(f"goal {name} {goal['goal']}: {goal['value']} -> {'met' if goal['met'] else 'NOT met'}")
        name = "voice_quick" if quick else "voice"
        flags = " ".join(
            f for f in (f"--profile {profile}" if profile != "full" else "", "--quick" if quick else "") if f
        )
        path = write_result(
            name,
            command=f"python -m bench.voice {flags}".strip() if flags else "make bench BENCH=voice",
            models=describe(profile)
            | {
                "match_plan": "CI_PLAN" if quick else "DEFAULT_PLAN",
                "matched_voice": f"kokoro {heldout.recipe['weights']} speed {heldout.speed:.3f}",
            },
            metrics=metrics,
            notes=NOTES,
        )
        print(f"wrote {path}")
    finally:
        encoders.close()
        if nospin_engine is not None:
            nospin_engine.close()
        models.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["ci", "full"], default="full")
    parser.add_argument("--quick", action="store_true", help="CI_PLAN, one round of first chunks, 5-question calls")
    args = parser.parse_args()
    run(args.profile, args.quick)


if __name__ == "__main__":
    main()
