"""``soma call``: talk to the avatar from WAV files, in this process, through the real voice pipeline.

Each WAV is one thing the caller says. It is played into a `pipeline.Session` at real time through the
in-process transport, exactly as a phone would stream it: the first one half a second into the call, each
next one shortly after the avatar finished answering the previous one. The conversation is printed as it
happens (what the avatar heard, what it answered, each turn's voice-to-voice latency) and the avatar's audio
can be written to a WAV file. Typed lines (``--say``) go through the same session as text turns.

No server, database or network is involved: this is the quickest way to hear the models a machine has.
"""

from __future__ import annotations

import asyncio
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.audio import PIPELINE_RATE, resample, to_int16, wav_bytes
from pipeline.frames import ErrorEvent, LatencyMark, OutputEvent, Pcm, ReplyDone, UserTranscript
from pipeline.llm import ConversationLlm
from pipeline.local_transport import LocalTransport
from pipeline.session import Session, SessionModels

OUT_RATE = 24_000
TURN_BUDGET_S = 25.0  # longest a turn may take (speech + answer) before the call moves on


class WavError(ValueError):
    """A WAV file the call cannot use; the message names the file and the problem."""


def read_wav(path: Path) -> Pcm:
    """Read a PCM WAV as mono int16 at 16 kHz (other rates are resampled, stereo is mixed down).

    Raises:
        WavError: Missing, not a WAV, or not 16-bit PCM.
    """
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc})") from None
    if width != 2:
        raise WavError(f"{path}: {8 * width}-bit samples; use 16-bit PCM (e.g. sox in.wav -b 16 out.wav)")
    mono = np.frombuffer(raw, np.int16).reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768
    return to_int16(resample(mono, rate, PIPELINE_RATE) if rate != PIPELINE_RATE else mono)


def write_wav(path: Path, pcm: Pcm, rate: int) -> None:
    """Write mono int16 ``pcm`` as a WAV file."""
    path.write_bytes(wav_bytes(pcm, rate))


@dataclass
class CallReport:
    """What happened in a call: the transport (events, audio out) and voice-to-voice latency per turn (s)."""

    transport: LocalTransport
    v2v_s: list[float]


class _PrintingTransport(LocalTransport):
    """The in-process transport, printing the conversation as it happens."""

    def __init__(self, echo: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._echo = echo
        self.first_audio: dict[int, float] = {}
        self.speech_end: dict[int, float] = {}

    async def send(self, event: OutputEvent) -> None:
        await super().send(event)
        match event:
            case UserTranscript(text, True, turn_id):
                self._echo(f"you  [{turn_id}]: {text}")
            case ReplyDone(reply_id, _, heard, interrupted, _):
                cut = " (interrupted)" if interrupted else ""
                self._echo(f"soma [{reply_id}]: {heard}{cut}")
            case LatencyMark(turn_id, "speech_end", t):
                self.speech_end[turn_id] = t
            case LatencyMark(turn_id, "first_audio_out", t):
                self.first_audio[turn_id] = t
            case ErrorEvent(code, message):
                self._echo(f"error: {code}: {message}")


async def run_call(models: SessionModels, turns: list[Pcm | str], *, echo: Callable[[str], None] = print) -> CallReport:
    """Take ``turns`` one by one (16 kHz int16 clips to speak, or messages to type); return what happened."""
    speech_s = sum(len(t) for t in turns if not isinstance(t, str)) / PIPELINE_RATE
    duration = 1.0 + speech_s + TURN_BUDGET_S * len(turns)
    transport = _PrintingTransport(echo, audio_in_rate=PIPELINE_RATE, audio_out_rate=OUT_RATE, duration_s=duration)
    transport.take_turns(turns)
    await Session(transport, models).run()
    v2v = [end_to_audio for turn, end in transport.speech_end.items()
           if (end_to_audio := transport.first_audio.get(turn, end) - end) > 0]
    return CallReport(transport, v2v)


def call_main(wavs: list[Path], typed: list[str], out: Path | None, profile: str, voice: str) -> int:
    """The ``soma call`` command: exit code 0 when the avatar answered.

    Raises:
        WavError: An input file is unusable.
        models.paths.ModelMissingError: The profile is not provisioned.
    """
    from models.registry import load_models

    turns: list[Pcm | str] = [read_wav(path) for path in wavs]
    turns += typed
    tts_role = "tts-fast" if voice == "fast" else "tts-quality"
    with load_models(None, profile, roles=["vad", "asr", "llm", tts_role]) as loaded:
        assert loaded.vad and loaded.asr and loaded.llm
        shared = SessionModels(
            llm=ConversationLlm(loaded.llm),
            vad=loaded.vad,
            asr=loaded.asr,
            tts=loaded.tts_fast if voice == "fast" else loaded.tts_quality,
            vad_executor=loaded.vad.lane.executor,
        )
        report = asyncio.run(run_call(shared, turns))
    if report.v2v_s:
        shown = ", ".join(f"{v * 1000:.0f} ms" for v in report.v2v_s)
        print(f"voice-to-voice (VAD end of speech -> first reply audio): {shown}")
    if out is not None:
        write_wav(out, report.transport.output, OUT_RATE)
        print(f"wrote the avatar's audio to {out}")
    answered = [e for _, e in report.transport.events if isinstance(e, ReplyDone) and e.text]
    return 0 if answered else 1
