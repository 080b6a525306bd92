"""Streaming speech recognition over a whole-utterance recogniser (Whisper).

While the user speaks, the growing utterance is re-decoded on a cadence to give partial transcripts (one
decode in flight per session at most; a partial that would queue behind another is skipped). At the end of
speech the final decode covers everything. Cost stays bounded for long monologues: audio beyond
``max_window_s`` is decoded once, its text committed as a prefix, and dropped from the buffer, so no decode
ever sees more than one Whisper window. The committed text is bounded too (`MAX_TRANSCRIPT_CHARS`, the newest
words kept): a turn's transcript enters the prompt and the history, and an hour-long monologue must not become
a prompt the LLM spends minutes encoding.
"""

from __future__ import annotations

import collections
import re

import numpy as np

from pipeline.audio import PIPELINE_RATE, to_float
from pipeline.frames import Pcm
from pipeline.ports import Asr

MAX_TRANSCRIPT_CHARS = 4000  # as much as a typed message (`pipeline.session.SessionConfig.max_text_chars`)
PREROLL_S = 0.3  # audio kept from before the VAD's speech start, so the first phoneme is not clipped
# Whisper's classic hallucinations on noise (the VAD let it through): never a whole user utterance in practice.
# "Thank you" is deliberately not here: people say it.
_HALLUCINATIONS = frozenset({"you", "thanks for watching", "thank you for watching", "uh", "um", "hmm"})
_WORDS = re.compile(r"[a-z']+")


class UtteranceAsr:
    """Buffers one utterance at a time and decodes it.

    Args:
        asr: The recogniser (runs off the event loop).
        partial_every_s: Re-decode cadence while speaking.
        max_window_s: Longest audio ever decoded at once (Whisper's window is 30 s).
        preroll_s: Audio kept from before the start of speech (changeable between utterances).
    """

    def __init__(
        self, asr: Asr, *, partial_every_s: float = 0.5, max_window_s: float = 24.0, preroll_s: float = PREROLL_S
    ) -> None:
        self._asr = asr
        self.preroll_s = preroll_s
        self._partial_every = int(partial_every_s * PIPELINE_RATE)
        self._max_window = int(max_window_s * PIPELINE_RATE)
        self._preroll: collections.deque[Pcm] = collections.deque()
        self._preroll_len = 0
        self._chunks: list[Pcm] = []
        self._samples = 0
        self._since_partial = 0
        self._prefix = ""  # committed text of audio already dropped from a long utterance
        self._active = False
        self._inflight = False

    @property
    def active(self) -> bool:
        """True while an utterance is being collected."""
        return self._active

    @property
    def duration_s(self) -> float:
        """Seconds of audio buffered for the current utterance."""
        return self._samples / PIPELINE_RATE

    def push(self, pcm: Pcm) -> None:
        """Add 16 kHz audio: to the utterance when active, otherwise to the bounded pre-roll."""
        if self._active:
            self._chunks.append(pcm)
            self._samples += len(pcm)
            self._since_partial += len(pcm)
            return
        self._preroll.append(pcm)
        self._preroll_len += len(pcm)
        while self._preroll and self._preroll_len - len(self._preroll[0]) >= self.preroll_s * PIPELINE_RATE:
            self._preroll_len -= len(self._preroll.popleft())

    def begin(self) -> None:
        """Speech started: the utterance starts with the pre-roll. No-op if one is already active."""
        if self._active:
            return
        self._active = True
        self._chunks = list(self._preroll)
        self._samples = self._preroll_len
        self._since_partial = 0
        self._preroll.clear()
        self._preroll_len = 0

    def reset(self) -> None:
        """Forget the utterance (turn ended, or it was noise)."""
        self._active = False
        self._chunks = []
        self._samples = 0
        self._prefix = ""

    def partial_due(self) -> bool:
        """True when enough new audio arrived for a partial and no decode is in flight."""
        return self._active and not self._inflight and self._since_partial >= self._partial_every

    async def decode(self) -> str:
        """Decode the whole utterance so far (prefix + buffered audio) and return its text."""
        self._since_partial = 0
        self._inflight = True
        try:
            await self._commit_overflow()
            if not self._chunks:
                return self._prefix
            audio = to_float(np.concatenate(self._chunks))
            text = clean_transcript((await self._asr.atranscribe_utterance(audio)).text)
            return _newest(f"{self._prefix} {text}".strip())
        finally:
            self._inflight = False

    async def _commit_overflow(self) -> None:
        if self._samples <= self._max_window:
            return
        audio = np.concatenate(self._chunks)
        # Keep the most recent ~4 s for the next decode; commit the rest once.
        cut = len(audio) - 4 * PIPELINE_RATE
        head, tail = audio[:cut], audio[cut:]
        text = clean_transcript((await self._asr.atranscribe_utterance(to_float(head))).text)
        self._prefix = _newest(f"{self._prefix} {text}".strip())
        self._chunks = [tail]
        self._samples = len(tail)


def _newest(text: str, limit: int = MAX_TRANSCRIPT_CHARS) -> str:
    """The last ``limit`` characters of ``text``, starting at a word."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    space = cut.find(" ")
    return cut[space + 1 :] if 0 <= space < limit // 10 else cut


def clean_transcript(text: str) -> str:
    """Trim, and drop a lone hallucination that Whisper emits for noise."""
    text = " ".join(text.split())
    if " ".join(_WORDS.findall(text.lower())) in _HALLUCINATIONS:
        return ""
    return text
