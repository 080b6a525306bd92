"""Voice-loop benchmark: spoken questions streamed at real time through the full pipeline.

For each turn it measures, on the transport's own clock, **voice-to-voice** latency (last voiced input frame
of the question → first audible reply frame out) and, for scripted interruptions, **barge-in** latency
(onset of the interrupting speech → the first reply frame that is silent after the pipeline stopped it).
Stage marks (final transcript, LLM first token, TTS first chunk) come from the session's latency marks,
relative to the VAD's end of speech. Then the same with 1, 2, 4, 8 and 10 concurrent sessions sharing one
set of models.

    make bench BENCH=voice_loop            # full profile
    python -m bench.voice_loop --profile ci --quick
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import numpy as np

from bench._common import percentiles, print_table, write_result
from models.registry import ModelSet, describe, load_models
from pipeline.frames import LatencyMark, OutputEvent, ReplyDone
from pipeline.llm import ConversationLlm
from pipeline.local_transport import FRAME_S, LocalTransport
from pipeline.playout import Playout
from pipeline.ports import Tts
from pipeline.session import Session, SessionModels
from tests.audio_fixtures import spoken

QUESTIONS = [
    "What is the capital of France?",
    "How are you feeling today?",
    "Can you recommend a good book to read?",
    "What should I cook for dinner tonight?",
    "Do you remember what we talked about yesterday?",
    "What is a good way to relax after work?",
    "Tell me something interesting about the ocean.",
    "How do I make a cup of green tea?",
    "What time do you usually wake up?",
    "Why is the sky blue?",
    "Should I go for a walk or a run this morning?",
    "What is your favourite season of the year?",
    "Can you help me plan my weekend?",
    "What is the best way to learn a new language?",
    "How far away is the moon?",
    "Give me a tip for sleeping better.",
    "What did people eat in ancient Rome?",
    "How can I be more patient with my kids?",
    "Is it going to be a good day today?",
    "What makes a friendship last a long time?",
    "Which is bigger, a whale or an elephant?",
    "How do plants grow from seeds?",
]
INTERRUPTIONS = ["Wait, stop, I have another question.", "Sorry to interrupt, can you say that again?"]
OUT_RATE = 24_000
VOICED = 500  # |sample| above this counts as voiced (espeak's pauses are digital silence)


class DriverTransport(LocalTransport):
    """Asks the next question a moment after each reply ends, and records the turns' true timings."""

    def __init__(self, questions: list[str], interrupt_every: int, gap_s: float, duration_s: float) -> None:
        super().__init__(audio_in_rate=16_000, audio_out_rate=OUT_RATE, duration_s=duration_s)
        self.queue = list(questions)
        self.interrupt_every = interrupt_every
        self.gap_s = gap_s
        self.asked = 0
        self.speech_ends: list[float] = []  # transport-relative end of each question's last voiced sample
        self.barge_onsets: list[float] = []
        self.marks: dict[int, dict[str, float]] = {}
        self.barge_not_audible = 0  # scripted interruptions that came after the reply had ended
        self.barge_missed = 0  # interruptions during bot audio that did not stop it within 2 s
        self.playout: Playout | None = None

    def attach_playout(self, playout: Playout | None) -> None:
        super().attach_playout(playout)
        self.playout = playout

    def ask_next(self, at: float) -> None:
        if not self.queue:
            return
        text = self.queue.pop(0)
        pcm = spoken(text)
        self.play(at, pcm)
        voiced = np.flatnonzero(np.abs(pcm) > VOICED)
        self.speech_ends.append(at + (voiced[-1] + 1) / 16_000)
        self.asked += 1
        if self.interrupt_every and self.asked % self.interrupt_every == 0:
            interruption = spoken(INTERRUPTIONS[self.asked % len(INTERRUPTIONS)])
            self.play_after_bot_starts(1.0, interruption)

    async def send(self, event: OutputEvent) -> None:
        await super().send(event)
        now = asyncio.get_running_loop().time() - self.t0
        if isinstance(event, LatencyMark):
            self.marks.setdefault(event.turn_id, {})[event.name] = event.t - self.t0
        if isinstance(event, ReplyDone) and not event.interrupted:
            self.ask_next(now + self.gap_s)

    def play(self, start_s: float, pcm: np.ndarray) -> None:
        # Interruption clips are recorded as barge-in onsets (the first voiced sample).
        if any(pcm is spoken(t) for t in INTERRUPTIONS):
            voiced = np.flatnonzero(np.abs(pcm) > VOICED)
            self.barge_onsets.append(start_s + voiced[0] / 16_000)
        super().play(start_s, pcm)


def _first_frame_at_or_after(frames: list[tuple[float, int]], t: float, *, audible: bool) -> float | None:
    for ft, peak in frames:
        # A frame read at ft carries audio from the previous 20 ms.
        if ft - FRAME_S >= t and (peak > 300) == audible:
            return ft - FRAME_S
    return None


def analyse(transport: DriverTransport) -> tuple[list[float], list[float], dict[str, list[float]]]:
    """Voice-to-voice and barge-in latencies (ms) plus stage latencies relative to the VAD speech end."""
    frames = [(f.t, f.peak) for f in transport.frames]
    v2v = []
    for end in transport.speech_ends:
        out = _first_frame_at_or_after(frames, end, audible=True)
        if out is not None and out - end < 10:
            v2v.append((out - end) * 1000)
    barge = []
    ended = {e.reply_id: t for t, e in transport.events if isinstance(e, ReplyDone)}
    talking = [(m["first_audio_out"], ended.get(turn, float("inf"))) for turn, m in transport.marks.items()
               if "first_audio_out" in m]
    for onset in transport.barge_onsets:
        # Only onsets while a reply was playing are barge-ins (a short reply may have ended before it).
        if not any(start <= onset < end for start, end in talking):
            transport.barge_not_audible += 1
            continue
        stops = [m["audio_stopped"] for m in transport.marks.values() if 0 <= m.get("audio_stopped", -1) - onset < 2]
        silent = _first_frame_at_or_after(frames, min(stops), audible=False) if stops else None
        if silent is None:
            transport.barge_missed += 1  # the bot talked on over the user
            continue
        # `silent` is the start of the first all-quiet 20 ms frame: no bot audio is heard after it.
        barge.append((silent - onset) * 1000)
    stages: dict[str, list[float]] = {"transcript_final": [], "llm_first_token": [], "tts_first_chunk": []}
    for marks in transport.marks.values():
        if "speech_end" not in marks:
            continue
        for stage in stages:
            if stage in marks:
                stages[stage].append((marks[stage] - marks["speech_end"]) * 1000)
    return v2v, barge, stages


async def run_sessions(
    models: ModelSet, n: int, turns: int, interrupt_every: int, seed: int, *, tts: Tts | None = None
) -> list[DriverTransport]:
    """Run ``n`` concurrent sessions of ``turns`` questions each; return their transports. ``tts`` replaces the
    set's Piper voice (bench/voice.py compares a matched Kokoro voice)."""
    voice = tts if tts is not None else models.tts_fast
    assert models.vad and models.asr and models.llm and voice
    rng = random.Random(seed)
    llm = ConversationLlm(models.llm)
    shared = SessionModels(llm=llm, vad=models.vad, asr=models.asr, tts=voice, vad_executor=models.vad.lane.executor)
    transports = []
    for i in range(n):
        questions = rng.sample(QUESTIONS, k=min(turns, len(QUESTIONS)))
        t = DriverTransport(questions, interrupt_every, gap_s=0.8, duration_s=turns * 9.0 + 5)
        t.ask_next(0.5 + rng.uniform(0, 2.0) + (i % 4) * 0.3)
        transports.append(t)
    await asyncio.gather(*(Session(t, shared).run() for t in transports))
    return transports


async def main_async(profile: str, quick: bool) -> None:
    models = load_models(None, profile, roles=["vad", "asr", "llm", "tts-fast"])
    try:
        # Warm-up: the first call of each model pays one-time allocation costs that no user sees twice.
        await run_sessions(models, 1, 1, 0, seed=99)
        metrics: dict[str, object] = {}
        single = await run_sessions(models, 1, 8 if quick else len(QUESTIONS), interrupt_every=2, seed=1)
        v2v, barge, stages = analyse(single[0])
        metrics["v2v_ms"] = percentiles(v2v)
        if barge:
            metrics["barge_in_ms"] = percentiles(barge)
        metrics["barge_in_missed"] = single[0].barge_missed
        metrics["barge_in_after_reply_ended"] = single[0].barge_not_audible
        assert single[0].playout is not None
        replies = sum(1 for _, e in single[0].events if isinstance(e, ReplyDone))
        metrics["playout_underruns_per_reply"] = round(single[0].playout.underruns / max(1, replies), 3)
        metrics["playout_underrun_ms_per_reply"] = round(single[0].playout.underrun_s * 1000 / max(1, replies), 1)
        for stage, values in stages.items():
            if values:
                metrics[f"{stage}_ms"] = percentiles(values)
        levels = [1, 2, 4] if quick else [1, 2, 4, 8, 10]
        lanes = {"asr": models.asr.lane, "llm": models.llm.lane, "tts": models.tts_fast.lane}
        for n in levels:
            busy = {name: lane.busy_s for name, lane in lanes.items()}
            started = time.perf_counter()
            turns = 3 if quick else 4
            transports = await run_sessions(models, n, turns, interrupt_every=0, seed=10 + n)
            wall = time.perf_counter() - started
            all_v2v = [v for t in transports for v in analyse(t)[0]]
            if all_v2v:
                metrics[f"v2v_ms_at_{n}"] = percentiles(all_v2v)
            metrics[f"answered_ratio_at_{n}"] = round(len(all_v2v) / (n * turns), 2)
            for name, lane in lanes.items():
                metrics[f"{name}_busy_ratio_at_{n}"] = round((lane.busy_s - busy[name]) / wall, 2)
        print_table(metrics)
        path = write_result(
            "voice_loop",
            command=f"make bench BENCH=voice_loop{'' if profile == 'full' else f' (profile {profile})'}",
            models=describe(profile),
            metrics=metrics,
            notes=(
                "v2v: last voiced sample of the espeak question -> first audible 20 ms reply frame, measured on the "
                "in-process transport's real-time clock; barge_in: first voiced sample of the interruption -> "
                "first silent reply frame after the pipeline's stop; stage latencies are relative to the VAD's "
                "end-of-speech mark. barge_in_missed: interruptions during bot audio that did not stop it within 2 s; "
                "barge_in_after_reply_ended: scripted interruptions that came after a short reply had ended (not "
                "barge-ins, not counted). playout_underrun*: gaps inside a reply where the next clause was not "
                "synthesised in time (count and silence per reply). answered_ratio_at_N: turns answered within the "
                "session's time budget (9 s per question); <name>_busy_ratio_at_N: that model's worker seconds "
                "(compute, plus stream time waiting for its consumer) per wall second, summed over its workers; for "
                "the LLM that is the mean number of generations in progress. Sessions share one model set (one "
                "worker per model; the LLM runs up to 4 batches of up to 4 generations, ThreadConfig). "
                "TTS: Piper joe."
            ),
        )
        print(f"wrote {path}")
    finally:
        models.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["ci", "full"], default="full")
    parser.add_argument("--quick", action="store_true", help="fewer turns and concurrency levels")
    args = parser.parse_args()
    asyncio.run(main_async(args.profile, args.quick))


if __name__ == "__main__":
    main()
