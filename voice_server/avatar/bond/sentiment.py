"""Sentiment of a user's words: VADER (``vaderSentiment``, its lexicon ships in the wheel; no network).

Measured on this 2-core machine: the analyzer loads in ~11 ms; a score costs ~0.03 ms for a sentence but
grows faster than linearly with length (0.8 ms at 500 characters, 2.2 ms at 1000, 7.5 ms at 2000, 100 ms at
8000). So texts are cut to `MAX_CHARS` (their start: what someone says first carries the mood), and scoring
runs on an owned one-thread lane, never on the event loop.
"""

from __future__ import annotations

from typing import Any, Final

from models.executors import ComputeLane

MAX_CHARS: Final = 1000


class Sentiment:
    """VADER compound scores (-1..1) on a worker thread. Call `start` before `score`, `close` at the end."""

    def __init__(self) -> None:
        self._lane = ComputeLane("sentiment")
        self._analyzer: Any = None

    async def start(self) -> None:
        """Load the lexicon (on the lane)."""
        self._analyzer = await self._lane.run(_load)

    def score_now(self, text: str) -> float:
        """The compound score of ``text`` (blocking; for worker threads and benchmarks)."""
        if self._analyzer is None:
            self._analyzer = _load()
        scores = self._analyzer.polarity_scores(text[:MAX_CHARS])
        return float(scores["compound"])

    async def score(self, text: str) -> float:
        """The compound score of ``text``, computed on the lane."""
        if not text.strip():
            return 0.0
        return await self._lane.run(self.score_now, text)

    def close(self) -> None:
        """Stop the lane (idempotent)."""
        self._lane.close()


def _load() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()
