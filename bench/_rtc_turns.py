"""The WebRTC call benchmark's turn logic: asking a question and interrupting a reply, timed at the caller.

See `bench.webrtc_call` for what is measured and why.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from bench._rtc_client import FRAME_S, RATE, CallPeer, Pcm

QUIET_S = 0.06  # received audio below the audible level this long counts as silent (barge-in)
CLICK_FRAMES = 2  # barge-in: this many audible frames or fewer, after a quiet gap, are a click ...
CLICK_GAP_FRAMES = 5  # ... when the gap is longer than this many frames (100 ms)
SETTLE_QUIET_S = 0.3  # a reply is over once this much silence followed response.done
BARGE_AFTER_S = 0.8  # the interruption starts this long after the reply became audible


@dataclass(slots=True)
class Turn:
    """One question and its reply, as the caller experienced it (ms; ``None`` when not measured)."""

    v2v_ms: float | None = None
    v2v_track_ms: float | None = None
    server_v2v_ms: float | None = None
    end_detected_ms: float | None = None  # end of speech -> ``speech_stopped`` event received
    out_path_ms: float | None = None  # ``soma.turn_latency`` event received -> first audible frame (wire)
    marks_ms: dict[str, float] = field(default_factory=dict)
    split: bool = False  # the server heard the question as more than one turn
    error: str | None = None


@dataclass(slots=True)
class Barge:
    """One interruption of a reply (ms; ``None`` when not measured)."""

    stop_ms: float | None = None  # onset of the interruption -> received reply audio went quiet (wire)
    stop_track_ms: float | None = None
    onset_detected_ms: float | None = None  # onset -> ``speech_started`` event received
    click_ms: float | None = None  # onset -> a click (1-2 audible frames after > 100 ms of quiet) after the stop
    outcome: str = "measured"  # or: reply_ended_first, reply_paused_at_onset, talked_over, error


def _is_completed(event: dict[str, Any]) -> bool:
    return bool(event["response"]["status"] == "completed")


async def settle(peer: CallPeer, since: int, limit_s: float) -> bool:
    """Wait for a completed ``response.done`` after event ``since`` and the quiet after it."""
    try:
        await peer.wait_event("response.done", since, limit_s, _is_completed)
    except TimeoutError:
        return False
    listener = peer.listener
    return await listener.wait(lambda: listener.quiet_for(SETTLE_QUIET_S), 10.0)


async def ask(peer: CallPeer, question: Pcm, limit_s: float) -> Turn:
    """Say ``question``, wait for the whole reply, and time it."""
    since = peer.events_seen
    utterance = peer.mic.say(question)
    turn = Turn()
    try:
        async with asyncio.timeout(len(question) / RATE + 5):
            await utterance.sent.wait()
    except TimeoutError:
        turn.error = "microphone stalled"
        return turn
    assert utterance.end is not None
    if not await settle(peer, since, limit_s):
        turn.error = "no completed reply in time"
    end = utterance.end
    timed = peer.events_after(since)
    events = [e for _, e in timed]
    turn.split = sum(e["type"] == "conversation.item.input_audio_transcription.completed" for e in events) > 1
    latencies = [(t, e) for t, e in timed if e["type"] == "soma.turn_latency"]
    if latencies:
        turn.server_v2v_ms = float(latencies[-1][1]["voice_to_voice_ms"])
        turn.marks_ms = {k: float(v) for k, v in latencies[-1][1]["marks_ms"].items()}
    stopped = next((t for t, e in timed if e["type"] == "input_audio_buffer.speech_stopped" and t >= end), None)
    if stopped is not None:
        turn.end_detected_ms = round((stopped - end) * 1000, 2)
    heard = peer.listener.first_audible_after(end)
    if heard is not None and turn.error is None:
        turn.v2v_ms = round((heard.wire - end) * 1000, 2)
        turn.v2v_track_ms = round((heard.track - end) * 1000, 2)
        if latencies:
            turn.out_path_ms = round((heard.wire - latencies[-1][0]) * 1000, 2)
    return turn


async def barge(peer: CallPeer, question: Pcm, interruption: Pcm, limit_s: float) -> Barge:
    """Ask ``question``, interrupt the reply with ``interruption``, time how fast the reply went quiet.

    The interrupted reply is the one whose audio started last before the interruption's onset. Its audio is
    looked for from the onset until the interruption ends or another reply's audio starts (a pause inside the
    interruption can end the user's turn early, and the new reply's first frames must not count).
    """
    listener = peer.listener
    since = peer.events_seen
    asked = peer.mic.say(question)
    await asyncio.wait_for(asked.sent.wait(), len(question) / RATE + 5)
    assert asked.end is not None
    end = asked.end
    if not await listener.wait(lambda: listener.first_audible_after(end) is not None, limit_s):
        await settle(peer, since, limit_s)
        return Barge(outcome="error")
    await asyncio.sleep(BARGE_AFTER_S)
    since_interruption = peer.events_seen
    said = peer.mic.say(interruption)
    await asyncio.wait_for(said.sent.wait(), len(interruption) / RATE + 5)
    assert said.onset is not None and said.end is not None
    onset = said.onset
    started = [(t, e["response_id"]) for t, e in peer.events_after(since)
               if e["type"] == "output_audio_buffer.started"]
    playing = [rid for t, rid in started if t < onset]
    if not playing:
        await settle(peer, since_interruption, limit_s)
        return Barge(outcome="error")
    response_id = playing[-1]
    try:
        _, done = await peer.wait_event("response.done", since, limit_s, lambda e: e["response"]["id"] == response_id)
    except TimeoutError:
        await settle(peer, since_interruption, limit_s)
        return Barge(outcome="error")
    await settle(peer, since_interruption, limit_s)  # the reply to the interruption, if any
    if done["response"]["status"] == "completed":
        return Barge(outcome="reply_ended_first")  # a short reply was over before the interruption landed
    events = peer.events_after(since_interruption)
    detected_at = next((t for t, e in events if e["type"] == "input_audio_buffer.speech_started" and t >= onset), None)
    detected = round((detected_at - onset) * 1000, 2) if detected_at is not None else None
    audio_starts = [
        (t, e["response_id"]) for t, e in peer.events_after(since) if e["type"] == "output_audio_buffer.started"
    ]
    until = min([said.end, *(t for t, rid in audio_starts if t >= onset and rid != response_id)])
    window = [f for f in listener.frames if onset <= f.wire < until]
    runs: list[list[int]] = []  # runs of consecutive audible frames (indices into window)
    for i, f in enumerate(window):
        if f.audible:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    # A run of at most CLICK_FRAMES after a quiet gap of more than CLICK_GAP_FRAMES is a click (Opus spreads a
    # few ms of sound over one or two frames), not the reply going on; everything else is speech.
    last: int | None = None  # the last frame of speech
    for run in runs:
        after_gap = run[0] > 0 and (last is None or run[0] - last > CLICK_GAP_FRAMES)
        if len(run) > CLICK_FRAMES or not after_gap:
            last = run[-1]
    if last is None:
        return Barge(onset_detected_ms=detected, outcome="reply_paused_at_onset")
    if last + 1 >= len(window) or until - window[last].wire < QUIET_S + FRAME_S:
        return Barge(onset_detected_ms=detected, outcome="talked_over")  # still audible when the window ended
    quiet = window[last + 1]
    clicks = [window[r[0]].wire for r in runs if r[0] > last]
    return Barge(round((quiet.wire - onset) * 1000, 2), round((quiet.track - onset) * 1000, 2), detected,
                 click_ms=round((clicks[0] - onset) * 1000, 2) if clicks else None)
