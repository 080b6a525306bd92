"""Voice activity: Silero speech probabilities → speech start/end edges with hysteresis.

`VadSegmenter` is sans-I/O (probabilities and times in, edges out). `VadStage` frames 16 kHz audio into the
32 ms windows Silero needs and runs the model on a worker thread.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from pipeline.audio import PIPELINE_RATE, to_float
from pipeline.frames import Pcm
from pipeline.ports import SpeechProb
from pipeline.turn import SpeechEnd, SpeechStart

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
WINDOW_S = WINDOW / PIPELINE_RATE


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Thresholds. Start needs ``start_windows`` consecutive windows ≥ ``threshold``; end needs
    ``end_windows`` consecutive windows < ``threshold - 0.15`` (hysteresis avoids flapping)."""

    threshold: float = 0.5
    start_windows: int = 2  # 64 ms: fast enough for barge-in, longer than a click
    end_windows: int = 3  # 96 ms of silence reports the end; the turn core adds the adaptive wait


class VadSegmenter:
    """Turns per-window speech probabilities into `SpeechStart`/`SpeechEnd` edges (sans-I/O)."""

    def __init__(self, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self.speaking = False
        self._run = 0  # consecutive windows on the other side of the threshold
        self._first_voiced_t = 0.0
        self._last_voiced_end = 0.0

    @property
    def ending(self) -> bool:
        """Speech is on but the latest window(s) were silent: an end may be about to be reported."""
        return self.speaking and self._run > 0

    def feed(self, prob: float, t_end: float) -> SpeechStart | SpeechEnd | None:
        """One window's probability; ``t_end`` is the time of the window's last sample."""
        cfg = self.config
        if not self.speaking:
            if prob >= cfg.threshold:
                if self._run == 0:
                    self._first_voiced_t = t_end - WINDOW_S
                self._run += 1
                if self._run >= cfg.start_windows:
                    self.speaking, self._run = True, 0
                    self._last_voiced_end = t_end
                    return SpeechStart(self._first_voiced_t)
            else:
                self._run = 0
            return None
        if prob < cfg.threshold - 0.15:
            self._run += 1
            if self._run >= cfg.end_windows:
                self.speaking, self._run = False, 0
                return SpeechEnd(self._last_voiced_end)
        else:
            self._run = 0
            self._last_voiced_end = t_end
        return None


class VadStage:
    """Frames audio, scores windows on ``executor``, and reports edges.

    Args:
        stream: Per-session Silero state.
        executor: Where model calls run (the VAD model's worker), never the event loop.
        config: Thresholds.
    """

    def __init__(self, stream: SpeechProb, executor: Executor | None, config: VadConfig | None = None) -> None:
        self._stream = stream
        self._executor = executor
        self.segmenter = VadSegmenter(config)
        self._pending = np.zeros(0, np.int16)

    @property
    def speaking(self) -> bool:
        return self.segmenter.speaking

    async def process(self, pcm: Pcm, t_end: float) -> list[SpeechStart | SpeechEnd]:
        """Score the complete windows in ``pending + pcm``; ``t_end`` is the time of the chunk's last sample.

        Returns the edges found, in order. Leftover samples wait for the next chunk.
        """
        buf = np.concatenate((self._pending, pcm)) if len(self._pending) else pcm
        n = len(buf) // WINDOW
        self._pending = buf[n * WINDOW :].copy()
        if n == 0:
            return []
        windows = to_float(buf[: n * WINDOW]).reshape(n, WINDOW)
        probs = await self._score(windows)
        edges: list[SpeechStart | SpeechEnd] = []
        leftover_s = len(self._pending) / PIPELINE_RATE
        for i, prob in enumerate(probs):
            t = t_end - leftover_s - (n - 1 - i) * WINDOW_S
            edge = self.segmenter.feed(prob, t)
            if edge is not None:
                edges.append(edge)
        return edges

    async def _score(self, windows: np.ndarray) -> list[float]:
        stream = self._stream

        def run() -> list[float]:
            return [stream.prob(w) for w in windows]

        if self._executor is None:
            return run()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, run)
