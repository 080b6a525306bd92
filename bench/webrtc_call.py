"""WebRTC call benchmark: a real ``soma serve`` called by aiortc peers, timed on the caller's side.

It starts ``soma serve --http`` with the profile's models and open sign-up, signs up the users it needs
(the server allows 4 live calls and 5 offers per second per user), and places calls on
``POST /v1/realtime/calls?model=soma`` the way the call page does (`bench._rtc_client.CallPeer`). Every
figure is measured on the client's clock; the caller's microphone is scripted, so the instant the user
stopped (or started) speaking is known exactly (see `bench._rtc_client`).

1. **Connect**: from the start of the offer POST to ``session.created`` on the data channel and to the
   avatar's first audio (the server's track sends silence from the start): first RTP packet and first
   decoded frame. Sequential calls, each hung up before the next.
2. **Voice-to-voice**, one call: espeak-spoken questions; from the end of the question's last voiced sample
   to the first *audible* reply frame (decoded peak > 500): ``v2v_ms`` at the packet's arrival (wire),
   ``v2v_track_ms`` when aiortc's track handed it out (+ its fixed 80 ms jitter buffer). ``server_v2v_ms`` is
   the server's own ``soma.turn_latency`` (VAD end of speech -> first audio out) for the same turns, and
   ``stage_*`` its marks.
3. **Barge-in**, same call: 0.8 s into a reply the caller starts an interruption; from its first voiced sample
   to the start of the quiet that follows the interrupted reply's last audible frame (the quiet must hold
   until the interruption ends or the next reply starts, so a pause between clauses does not count as
   stopping; a lone one- or two-frame burst after > 100 ms of quiet is counted apart, as a click).
4. **Idle capacity**: N concurrent calls with silent microphones, ramped up (calls kept between levels),
   spread over subprocesses (`bench._rtc_client.idle_worker`, ``--calls-per-worker``); over a window at each
   level, the jitter of every packet of the avatar's track, |inter-arrival - 20 ms|, pooled across calls; plus
   server CPU and RSS, client CPU and client event-loop lag.
5. **Conversing calls**: 1, 2, 4, 8, 10 concurrent calls (one user each, starts staggered over 1 s), each
   asking questions back to back; voice-to-voice per turn, and how many turns got an answer in time.

Client and server share the machine's cores, so client work (Opus, SRTP, DTLS, Python per packet) is taken
from the server; the client's loop lag is reported so its share of the distortion can be judged.

    make bench BENCH=webrtc_call                          # full profile, ~9 min on 2 cores
    python -m bench.webrtc_call --profile ci --quick      # smoke run, ~3 min
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (python bench/webrtc_call.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import dataclasses  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import wave  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from multiprocessing.connection import Connection  # noqa: E402
from typing import Any  # noqa: E402

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from bench._common import percentiles, print_table, stop_server, write_result  # noqa: E402
from bench._rtc_client import (  # noqa: E402
    RATE,
    CallPeer,
    CallRefused,
    ConnectTiming,
    HangUpAll,
    HungUp,
    LoopLag,
    Measure,
    Measured,
    OpenCalls,
    Opened,
    Pcm,
    Reply,
    idle_worker,
)
from bench._rtc_turns import BARGE_AFTER_S, QUIET_S, Barge, Turn, ask, barge  # noqa: E402
from models.registry import describe  # noqa: E402
from pipeline.audio import resample, to_float, to_int16  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "bench-webrtc-call-password"
CALLS_PER_USER = 4  # the server's per-user limit (CallManager.max_per_user)
GAP_S = 0.8  # pause between a reply's end and the next question
STAGGER_S = 1.0  # conversing calls start within this many seconds of each other
IDLE_SETTLE_S = 2.0  # after a ramp step, before its window
CALLS_PER_WORKER = 25  # idle calls per client subprocess (one event loop saturates at ~50 calls)
MIN_SENT_RATIO = 0.5  # idle ramp stops once the server sends less than this share of the avatar's frames
TARGET_V2V_P50_MS = 600.0
TARGET_BARGE_P95_MS = 150.0
TARGET_IDLE_JITTER_P95_MS = 20.0
TARGET_IDLE_CALLS = 200
TARGET_CONVERSING_P95_MS = 1500.0
TARGET_CONVERSING_CALLS = 10

# Short everyday questions, each answered in a sentence or two (the voice reply policy caps replies).
QUESTIONS = [
    "What is the capital of France?",
    "How are you feeling today?",
    "Can you recommend a good book to read?",
    "What should I cook for dinner tonight?",
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
    "What makes a friendship last a long time?",
    "Which is bigger, a whale or an elephant?",
    "How do plants grow from seeds?",
    "What is a fun thing to do on a rainy day?",
    "How do I keep my houseplants alive?",
    "What should I pack for a weekend trip?",
    "Why do cats purr?",
]
INTERRUPTIONS = ["Wait, stop, I have another question.", "Sorry to interrupt, can you say that again?"]


def spoken(text: str) -> Pcm:
    """``text`` spoken by espeak-ng at 160 words a minute, mono int16 at 48 kHz (as tests.audio_fixtures)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed (make install provides it)")
    wav = subprocess.run([exe, "-s", "160", "--stdout", text], capture_output=True, check=True).stdout
    with wave.open(io.BytesIO(wav)) as w:
        rate = w.getframerate()
        pcm: Pcm = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    return to_int16(resample(to_float(pcm), rate, RATE))


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of each phase to run."""

    connects: int
    v2v_turns: int
    barge_turns: int
    conversing_levels: tuple[int, ...]
    conversing_turns: int
    idle_levels: tuple[int, ...]
    idle_window_s: float
    calls_per_worker: int
    turn_timeout_s: float

    @staticmethod
    def make(quick: bool, calls_per_worker: int) -> Plan:
        if quick:
            return Plan(5, 4, 2, (1, 2, 4), 2, (10, 25, 50), 5.0, calls_per_worker, 30.0)
        return Plan(10, 12, 6, (1, 2, 4, 8, 10), 3, (10, 25, 50, 100, 200), 10.0, calls_per_worker, 45.0)


# --------------------------------------------------------------------------------------------- phases


class Speech:
    """The espeak clips, made once before anything is timed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.questions = [spoken(q) for q in QUESTIONS]
        self.interruptions = [spoken(q) for q in INTERRUPTIONS]
        self._order = self.rng.sample(range(len(self.questions)), k=len(self.questions))
        self._used = 0

    def question(self) -> Pcm:
        """The next question (shuffled; round robin once all were asked)."""
        pcm = self.questions[self._order[self._used % len(self._order)]]
        self._used += 1
        return pcm


async def connect_phase(http: httpx.AsyncClient, tokens: Sequence[str], n: int) -> list[ConnectTiming]:
    """``n`` calls one after another (users in turn), each placed, timed and hung up."""
    timings = []
    for i in range(n):
        peer = CallPeer(keep_frames=False)
        try:
            timings.append(await peer.place(http, tokens[i % len(tokens)]))
        finally:
            await peer.hang_up(http)
    return timings


async def single_call_phase(
    http: httpx.AsyncClient, token: str, speech: Speech, plan: Plan
) -> tuple[list[Turn], list[Barge]]:
    """One call: a warm-up question, ``plan.v2v_turns`` timed ones, then ``plan.barge_turns`` interruptions."""
    peer = CallPeer(keep_frames=True)
    try:
        await peer.place(http, token)
        warm = await ask(peer, speech.question(), plan.turn_timeout_s)  # first-use costs nobody sees twice
        if warm.error:
            print(f"warm-up turn: {warm.error}", file=sys.stderr)
        turns = []
        for _ in range(plan.v2v_turns):
            await asyncio.sleep(GAP_S)
            turns.append(await ask(peer, speech.question(), plan.turn_timeout_s))
        barges = []
        for i in range(plan.barge_turns):
            await asyncio.sleep(GAP_S)
            interruption = speech.interruptions[i % len(speech.interruptions)]
            barges.append(await barge(peer, speech.question(), interruption, plan.turn_timeout_s))
        return turns, barges
    finally:
        await peer.hang_up(http)


async def conversing_phase(
    http: httpx.AsyncClient, tokens: Sequence[str], speech: Speech, plan: Plan, seed: int
) -> tuple[list[Turn], int]:
    """``len(tokens)`` calls at once, each asking ``plan.conversing_turns`` questions; (turns, failed calls)."""
    rng = random.Random(seed)
    peers = [CallPeer(keep_frames=True) for _ in tokens]
    questions = [[speech.question() for _ in range(plan.conversing_turns)] for _ in tokens]

    async def converse(peer: CallPeer, token: str, delay: float, asked: list[Pcm]) -> list[Turn]:
        await asyncio.sleep(delay)
        try:
            await peer.place(http, token)
        except (CallRefused, TimeoutError, httpx.HTTPError) as exc:
            return [Turn(error=f"call failed: {exc}")]
        turns = []
        for question in asked:
            await asyncio.sleep(GAP_S)
            turns.append(await ask(peer, question, plan.turn_timeout_s))
        return turns

    try:
        delays = [rng.uniform(0, STAGGER_S) for _ in tokens]
        per_call = await asyncio.gather(*(converse(*args) for args in zip(peers, tokens, delays, questions,
                                                                          strict=True)))
    finally:
        await asyncio.gather(*(peer.hang_up(http) for peer in peers), return_exceptions=True)
    failed = sum(1 for turns in per_call if len(turns) == 1 and (turns[0].error or "").startswith("call failed"))
    return [t for turns in per_call for t in turns if not (t.error or "").startswith("call failed")], failed


class ServerMeter:
    """CPU and memory of the server process (and, separately, its children: embedded Postgres and Redis)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)

    def cpu_s(self) -> tuple[float, float]:
        """(server, children) CPU seconds so far."""
        own = self.proc.cpu_times()
        children = 0.0
        for child in self.proc.children(recursive=True):
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            children += times.user + times.system
        return own.user + own.system, children

    def rss_mb(self) -> float:
        return round(self.proc.memory_info().rss / 2**20, 1)


class IdleWorkers:
    """The subprocesses holding idle calls, driven over pipes (one command to all, one reply from each)."""

    REPLY_TIMEOUT_S = 300.0

    def __init__(self, count: int, base_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")  # no forked copy of the parent's loop, threads and sockets
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=idle_worker, args=(child, base_url), name=f"idle-calls-{i}", daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def ask(self, commands: Sequence[Any]) -> list[Reply]:
        """Send ``commands[i]`` to worker ``i`` (``None``: nothing) and collect the replies of those sent."""
        sent = [pipe for pipe, command in zip(self.pipes, commands, strict=True) if command is not None]
        for pipe, command in zip(self.pipes, commands, strict=True):
            if command is not None:
                pipe.send(command)
        replies = []
        for pipe in sent:
            if not pipe.poll(self.REPLY_TIMEOUT_S):
                raise TimeoutError("an idle-call worker did not answer")
            replies.append(pipe.recv())
        return replies

    def close(self) -> int:
        """Hang up every call, end the workers; returns the calls hung up."""
        hung = 0
        try:
            for reply in self.ask([HangUpAll()] * len(self.pipes)):
                if isinstance(reply, HungUp):
                    hung += reply.calls
        finally:
            for proc in self.procs:
                proc.join(30)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(5)
            for pipe in self.pipes:
                pipe.close()
        return hung


def idle_phase(base_url: str, tokens: Sequence[str], plan: Plan, meter: ServerMeter) -> dict[str, Any]:
    """Ramp silent calls through ``plan.idle_levels``; metrics per level (stops ramping once calls fail)."""
    metrics: dict[str, Any] = {}
    workers = IdleWorkers(math.ceil(max(plan.idle_levels) / plan.calls_per_worker), base_url)
    count = len(workers.pipes)
    placed = 0
    try:
        cpu0, wall0 = meter.cpu_s(), time.perf_counter()
        time.sleep(plan.idle_window_s / 2)  # the server with no call: the baseline of the per-call figures
        baseline = (meter.cpu_s()[0] - cpu0[0]) / (time.perf_counter() - wall0) * 100
        metrics["idle_server_cpu_pct_at_0"] = round(baseline, 1)
        for level in plan.idle_levels:
            new: list[list[str]] = [[] for _ in range(count)]
            for call in range(placed, level):
                new[call % count].append(tokens[call // CALLS_PER_USER])
            started = time.perf_counter()
            opened = workers.ask([OpenCalls(tuple(t)) if t else None for t in new])
            placed = level
            ramp_s = time.perf_counter() - started
            open_calls = [r for r in opened if isinstance(r, Opened)]
            connect = [ms for r in open_calls for ms in r.connect_ms]
            errors = [e for r in open_calls for e in r.errors]
            connected = sum(r.open_calls for r in open_calls)
            time.sleep(IDLE_SETTLE_S)
            cpu0, wall0 = meter.cpu_s(), time.perf_counter()
            measured = [r for r in workers.ask([Measure(plan.idle_window_s)] * count) if isinstance(r, Measured)]
            wall = time.perf_counter() - wall0
            cpu1 = meter.cpu_s()
            jitter = np.concatenate([r.jitter_ms for r in measured]) if measured else np.zeros(0, np.float32)
            lag = [v for r in measured for v in r.loop_lag_ms]
            metrics[f"idle_connected_at_{level}"] = connected
            metrics[f"idle_failed_at_{level}"] = len(errors)
            if connect:
                metrics[f"idle_connect_ms_at_{level}"] = percentiles(connect)
            if len(jitter):
                metrics[f"idle_jitter_ms_at_{level}"] = percentiles(jitter.tolist())
            expected = max(1, sum(r.expected_packets for r in measured))
            sent = sum(r.sent_packets for r in measured)
            metrics[f"idle_sent_ratio_at_{level}"] = round(sent / expected, 3)
            metrics[f"idle_received_ratio_at_{level}"] = round(sum(r.packets for r in measured) / expected, 3)
            metrics[f"idle_max_gap_ms_at_{level}"] = max((r.max_gap_ms for r in measured), default=0.0)
            metrics[f"idle_silent_calls_at_{level}"] = sum(r.silent_calls for r in measured)
            server_cpu = (cpu1[0] - cpu0[0]) / wall * 100
            metrics[f"idle_server_cpu_pct_at_{level}"] = round(server_cpu, 1)
            metrics[f"idle_server_cpu_pct_per_call_at_{level}"] = round((server_cpu - baseline) / connected, 2)
            metrics[f"idle_services_cpu_pct_at_{level}"] = round((cpu1[1] - cpu0[1]) / wall * 100, 1)
            metrics[f"idle_server_rss_mb_at_{level}"] = meter.rss_mb()
            metrics[f"idle_client_cpu_pct_at_{level}"] = round(sum(r.cpu_s for r in measured) / wall * 100, 1)
            if lag:
                metrics[f"idle_client_loop_lag_ms_at_{level}"] = percentiles(lag)
            print(f"idle {level}: {connected} connected ({len(errors)} failed) in {ramp_s:.1f} s; jitter p95 "
                  f"{metrics.get(f'idle_jitter_ms_at_{level}', {}).get('p95')} ms", file=sys.stderr)
            for error in sorted(set(errors))[:3]:
                print(f"  idle call failed: {error}", file=sys.stderr)
            if connected < level * 0.9 or sent < expected * MIN_SENT_RATIO:
                print(f"idle: stopped ramping at {level} calls (past capacity)", file=sys.stderr)
                break  # larger levels would only fail more, and take minutes of time-outs to do so
    finally:
        hung = workers.close()
        print(f"idle: {hung} calls hung up", file=sys.stderr)
    return metrics


# ------------------------------------------------------------------------------------------- metrics


def summarise_turns(turns: Sequence[Turn], suffix: str, metrics: dict[str, Any], *, paths: bool = False) -> None:
    clean = [t for t in turns if not t.split]
    wire = [t.v2v_ms for t in clean if t.v2v_ms is not None]
    track = [t.v2v_track_ms for t in clean if t.v2v_track_ms is not None]
    server = [t.server_v2v_ms for t in clean if t.server_v2v_ms is not None and t.v2v_ms is not None]
    if wire:
        metrics[f"v2v_ms{suffix}"] = percentiles(wire)
        metrics[f"v2v_track_ms{suffix}"] = percentiles(track)
    if server:
        metrics[f"server_v2v_ms{suffix}"] = percentiles(server)
    metrics[f"answered_ratio{suffix}"] = round(sum(1 for t in turns if t.v2v_ms is not None) / max(1, len(turns)), 2)
    metrics[f"split_turns{suffix}"] = sum(1 for t in turns if t.split)
    for name in ("transcript_final", "llm_first_token", "tts_first_chunk"):
        values = [t.marks_ms[name] for t in clean if name in t.marks_ms and t.v2v_ms is not None]
        if values:
            metrics[f"stage_{name}_ms{suffix}"] = percentiles(values)
    if paths:
        detected = [t.end_detected_ms for t in clean if t.end_detected_ms is not None and t.v2v_ms is not None]
        if detected:
            metrics["end_detected_ms"] = percentiles(detected)
        out_path = [t.out_path_ms for t in clean if t.out_path_ms is not None]
        if out_path:
            metrics["out_path_ms"] = percentiles(out_path)
    for error in sorted({t.error for t in turns if t.error})[:3]:
        print(f"turns{suffix or ''}: {error}", file=sys.stderr)


def summarise_barges(barges: Sequence[Barge], metrics: dict[str, Any]) -> None:
    wire = [b.stop_ms for b in barges if b.stop_ms is not None]
    track = [b.stop_track_ms for b in barges if b.stop_track_ms is not None]
    detected = [b.onset_detected_ms for b in barges if b.onset_detected_ms is not None and b.stop_ms is not None]
    if wire:
        metrics["barge_in_ms"] = percentiles(wire)
        metrics["barge_in_track_ms"] = percentiles(track)
    if detected:
        metrics["barge_in_onset_detected_ms"] = percentiles(detected)
    clicks = [b.click_ms for b in barges if b.click_ms is not None]
    metrics["barge_in_clicks"] = len(clicks)
    if clicks:
        metrics["barge_in_click_ms"] = percentiles(clicks)
    for outcome in ("talked_over", "reply_ended_first", "reply_paused_at_onset", "error"):
        metrics[f"barge_in_{outcome}"] = sum(1 for b in barges if b.outcome == outcome)


def verdict(value: float | None, target: float) -> str:
    if value is None:
        return "no data"
    return "ok" if value <= target else "MISSED"


def targets(metrics: dict[str, Any], plan: Plan) -> list[str]:
    """One line per target with the measured value and ok / MISSED."""

    def get(key: str, stat: str) -> float | None:
        value = metrics.get(key)
        return float(value[stat]) if isinstance(value, dict) and stat in value else None

    lines = []
    v2v = get("v2v_ms", "p50")
    lines.append(f"voice-to-voice p50 (wire) <= {TARGET_V2V_P50_MS:.0f} ms: {v2v} ms  "
                 f"{verdict(v2v, TARGET_V2V_P50_MS)}")
    stop = get("barge_in_ms", "p95")
    lines.append(f"barge-in p95 (wire) <= ~{TARGET_BARGE_P95_MS:.0f} ms + network: {stop} ms  "
                 f"{verdict(stop, TARGET_BARGE_P95_MS)}")

    def idle_ok(level: int) -> bool:
        """Every call of the level connected and kept receiving audio, within the jitter target."""
        jitter = get(f"idle_jitter_ms_at_{level}", "p95")
        return (metrics.get(f"idle_connected_at_{level}") == level and metrics.get(f"idle_silent_calls_at_{level}") == 0
                and jitter is not None and jitter <= TARGET_IDLE_JITTER_P95_MS)

    idle_levels = [lvl for lvl in plan.idle_levels if f"idle_jitter_ms_at_{lvl}" in metrics]
    if idle_levels:
        top_idle = max(idle_levels)
        ok = "ok" if top_idle >= TARGET_IDLE_CALLS and idle_ok(top_idle) else "MISSED"
        if top_idle < TARGET_IDLE_CALLS:
            ok += f" (ramp stopped at {top_idle})"
        lines.append(f"{TARGET_IDLE_CALLS} idle calls, jitter p95 <= {TARGET_IDLE_JITTER_P95_MS:.0f} ms: "
                     f"at {top_idle}: {metrics.get(f'idle_connected_at_{top_idle}')} connected, "
                     f"{metrics.get(f'idle_silent_calls_at_{top_idle}')} silent in the window, p95 "
                     f"{get(f'idle_jitter_ms_at_{top_idle}', 'p95')} ms; largest level within target: "
                     f"{max((lvl for lvl in idle_levels if idle_ok(lvl)), default=None)}  {ok}")
    top = max(plan.conversing_levels)
    p95 = get(f"v2v_ms_at_{top}", "p95")
    ok = verdict(p95, TARGET_CONVERSING_P95_MS) if metrics.get(f"answered_ratio_at_{top}") == 1.0 else "MISSED"
    if top < TARGET_CONVERSING_CALLS:
        ok = f"not measured (ran up to {top} calls)"
    lines.append(f"{TARGET_CONVERSING_CALLS} conversing calls, v2v p95 <= {TARGET_CONVERSING_P95_MS:.0f} ms: "
                 f"p95 {p95} ms, answered {metrics.get(f'answered_ratio_at_{top}')}  {ok}")
    return lines


# ----------------------------------------------------------------------------------------------- main


def signup(http: httpx.Client, username: str) -> str:
    """Create ``username`` and return its bearer token."""
    response = http.post("/v1/auth/signup", json={"username": username, "password": PASSWORD})
    response.raise_for_status()
    return str(response.json()["token"]["access_token"])


def start_server(tmp: Path, profile: str) -> Any:
    """`tests.conftest.start_server` with the profile's models and open sign-up; a `ServerProcess`.

    Imported by name so that type-checking this benchmark does not descend into tests/, which is not held to
    mypy --strict.
    """
    conftest = importlib.import_module("tests.conftest")
    return conftest.start_server(tmp, models=True, timeout=600, SOMA_SIGNUP="open", SOMA_MODEL_PROFILE=profile)


async def measure(base_url: str, users: dict[str, list[str]], plan: Plan, speech: Speech) -> dict[str, Any]:
    """Phases 1, 2, 3 and 5 in this process (idle capacity runs afterwards, in workers)."""
    metrics: dict[str, Any] = {}
    lag = LoopLag()
    lag.start()
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            started = time.perf_counter()
            connects = await connect_phase(http, users["connect"], plan.connects)
            metrics["connect_session_ms"] = percentiles([c.session_ms for c in connects])
            metrics["connect_first_audio_ms"] = percentiles([c.first_frame_ms for c in connects])
            metrics["connect_first_packet_ms"] = percentiles([c.first_packet_ms for c in connects])
            metrics["connect_answer_ms"] = percentiles([c.answer_ms for c in connects])
            metrics["connect_offer_create_ms"] = percentiles([c.offer_ms for c in connects])
            print(f"connect: {len(connects)} calls in {time.perf_counter() - started:.1f} s", file=sys.stderr)

            started = time.perf_counter()
            turns, barges = await single_call_phase(http, users["single"][0], speech, plan)
            summarise_turns(turns, "", metrics, paths=True)
            summarise_barges(barges, metrics)
            metrics["client_loop_lag_ms_at_1"] = percentiles(lag.take() or [0.0])
            print(f"single call: {len(turns)} turns, {len(barges)} interruptions in "
                  f"{time.perf_counter() - started:.1f} s", file=sys.stderr)

            offset = 0
            for level in plan.conversing_levels:
                tokens = users["conversing"][offset : offset + level]
                offset += level
                started = time.perf_counter()
                lag.take()
                level_turns, failed = await conversing_phase(http, tokens, speech, plan, seed=level)
                summarise_turns(level_turns, f"_at_{level}", metrics)
                metrics[f"failed_calls_at_{level}"] = failed
                metrics[f"client_loop_lag_ms_at_{level}"] = percentiles(lag.take() or [0.0])
                print(f"conversing {level}: {len(level_turns)} turns in {time.perf_counter() - started:.1f} s, "
                      f"v2v {metrics.get(f'v2v_ms_at_{level}')}", file=sys.stderr)
    finally:
        await lag.stop()
    return metrics


def run(profile: str, plan: Plan, *, quick: bool, out_name: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="soma-bench-webrtc-"))
    server: Any = None  # tests.conftest.ServerProcess
    metrics: dict[str, Any] = {}
    try:
        speech = Speech(seed=3)
        started = time.perf_counter()
        server = start_server(tmp, profile)
        print(f"server ready in {time.perf_counter() - started:.1f} s at {server.base_url}", file=sys.stderr)
        base_url = server.base_url
        meter = ServerMeter(server.proc.pid)
        counts = {
            "connect": 3,
            "single": 1,
            "conversing": sum(plan.conversing_levels),
            "idle": math.ceil(max(plan.idle_levels) / CALLS_PER_USER),
        }
        started = time.perf_counter()
        with httpx.Client(base_url=base_url, timeout=60) as http:
            users = {role: [signup(http, f"rtc-{role[:4]}-{i:03d}") for i in range(n)] for role, n in counts.items()}
        print(f"{sum(counts.values())} users signed up in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        metrics["server_rss_mb_before"] = meter.rss_mb()
        metrics.update(asyncio.run(measure(base_url, users, plan, speech)))
        metrics["server_rss_mb_after_conversations"] = meter.rss_mb()
        metrics.update(idle_phase(base_url, users["idle"], plan, meter))
        metrics["server_rss_mb_after_idle"] = meter.rss_mb()
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(metrics)
    lines = targets(metrics, plan)
    print()
    for line in lines:
        print("target " + line)
    note_profile = "" if profile == "full" else f" (profile {profile})"
    path = write_result(
        out_name,
        command=f"make bench BENCH=webrtc_call{note_profile}{' --quick' if quick else ''}",
        models=describe(profile),
        metrics=metrics,
        notes=notes(plan) + " Targets: " + "; ".join(lines) + ".",
    )
    print(f"wrote {path}")


def notes(plan: Plan) -> str:
    return (
        "A real `soma serve --http` with the profile's models; every call placed by aiortc 1.16 peers "
        "(POST /v1/realtime/calls, oai-events data channel, scripted 48 kHz microphone) on the same 2-core "
        "machine, all times on the client's monotonic clock. wire = when the RTP packet arrived at the client; "
        "track = when aiortc's track handed out the decoded frame (its audio jitter buffer holds 4 packets, "
        "~80 ms, before releasing one; a browser's adaptive buffer holds ~20-40 ms on loopback). "
        f"connect_*: {plan.connects} sequential calls, from the start of the offer POST (offer creation "
        "excluded; connect_offer_create_ms) to the 201 answer, to session.created on the data channel, to the "
        "first RTP packet and first decoded frame of the avatar's track (it sends silence from the start). "
        f"v2v: one call, {plan.v2v_turns} espeak questions (after one warm-up turn), end of the question's last "
        "voiced sample (known exactly: the microphone is scripted and sends each 20 ms frame when its interval "
        "ends) -> first received reply frame with a decoded peak > 500; server_v2v: the server's "
        "soma.turn_latency.voice_to_voice_ms (VAD end of speech -> first audio out) for the same turns; "
        "stage_*: its marks, ms after the VAD's end of speech. split_turns: questions the server heard as two "
        "turns (left out of v2v). barge_in: the caller interrupts "
        f"{BARGE_AFTER_S} s into a reply with a short espeak sentence; first voiced sample of the interruption -> "
        "start of the quiet after the interrupted reply's last audible frame, looked for until the interruption "
        "ends or the next reply's audio starts (a comma pause can end the user's turn early; that reply's first "
        f"frames do not count), quiet >= {QUIET_S * 1000:.0f} ms; barge_in_onset_detected: onset -> "
        "input_audio_buffer.speech_started received; talked_over: still audible at the end of that window; "
        "reply_ended_first: the reply was complete before the interruption landed; reply_paused_at_onset: the "
        "reply was between clauses at the onset and never resumed (neither is a barge-in sample). One or two "
        "audible 20 ms frames after > 100 ms of quiet are a click, not the reply going on: barge_in_clicks "
        "counts the interruptions followed by one, barge_in_click_ms its time after the onset. "
        "end_detected: end of the question -> input_audio_buffer.speech_stopped received; out_path: "
        "soma.turn_latency received (sent at the server's first_audio_out) -> first audible frame (wire). "
        f"v2v_ms_at_N: N concurrent calls (one user each, started within {STAGGER_S} s), each asking "
        f"{plan.conversing_turns} questions back to back (stage_*_at_N: the server's marks for those turns); "
        "answered_ratio: turns with a completed, heard reply "
        f"within {plan.turn_timeout_s:.0f} s. idle_*_at_N: N calls with silent microphones, ramped up "
        f"({', '.join(map(str, plan.idle_levels))}; calls kept between levels), held by subprocesses of "
        f"{plan.calls_per_worker} calls each; over a {plan.idle_window_s:.0f} s window per level, jitter = "
        "|packet inter-arrival - 20 ms| of every packet of every call's avatar track, pooled; received_ratio: "
        "packets received / expected, sent_ratio: packets the server sent (RTP sequence numbers) / expected, "
        "so sent < 1 with received = sent means the server's sender fell behind, not that packets were lost; "
        "server_cpu_pct: the soma process (100 = one core; _at_0 with no call, per_call: above that, per "
        "call); services_cpu_pct: its "
        "embedded Postgres and Redis; client_cpu_pct: the client workers; client_loop_lag: how late the "
        "clients' event loops woke from a 10 ms sleep (client-side distortion of every client timing). The "
        "clients run on the same 2 cores as the server (one process for phases 1-3 and 5, subprocesses for idle "
        "calls), so their Opus, DTLS/SRTP and per-packet Python work is taken from the server; the machine may "
        f"also have been shared with other test runs, so timings are noisy. Server code: commit {commit()}."
    )


def commit() -> str:
    """The repository's short commit id (plus ``+dirty`` with uncommitted changes), or ``unknown``."""
    try:
        run_git = functools.partial(subprocess.run, capture_output=True, text=True, check=True, cwd=REPO)
        head = run_git(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run_git(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["ci", "full"], default="full")
    parser.add_argument("--quick", action="store_true", help="fewer turns and smaller concurrency levels")
    parser.add_argument("--calls-per-worker", type=int, default=None, help="idle calls per client subprocess")
    parser.add_argument(
        "--idle-levels", default=None, help="comma-separated idle call counts (default 10,25,50,100,200)"
    )
    parser.add_argument("--out", default=None, help="result name (bench/results/<out>.json)")
    args = parser.parse_args()
    plan = Plan.make(args.quick, args.calls_per_worker or CALLS_PER_WORKER)
    if args.idle_levels:
        plan = dataclasses.replace(plan, idle_levels=tuple(int(n) for n in args.idle_levels.split(",")))
    out_name = args.out or ("webrtc_call_quick" if args.quick else "webrtc_call")
    run(args.profile, plan, quick=args.quick, out_name=out_name)


if __name__ == "__main__":
    main()
