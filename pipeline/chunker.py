"""Cut a streaming LLM reply into clauses for TTS, so the first audio starts after the first few words.

The first clause is cut early — at the first comma/colon/semicolon/dash after ``first_min_words`` words, or
after ``first_max_words`` words at a word boundary — because time to first audio is what the user feels: at
~24 tokens/s each word the first clause waits for costs ~50 ms, while Piper speaks a 4-word clause for over
a second, time enough for the LLM to write the next clause, so a short first clause leaves no gap.
Later clauses are cut at sentence ends, or at a comma once they are long enough to sound natural.
Markdown and emoji, which the small LLMs produce despite instructions, are removed so they are not spoken.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_SOFT_BREAK = re.compile(r"[,;:\u2014\u2013]\s|\s[-\u2013\u2014]\s")
_MARKDOWN = re.compile(r"[*_#`~>|]+|\[(?P<link>[^\]]*)\]\([^)]*\)")
_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\ufe0f]")
_LIST_MARK = re.compile(r"(?m)^\s*(?:\d+[.)]|[-*•])\s+")
_SPACES = re.compile(r"\s+")


def clean_for_speech(text: str) -> str:
    """Drop markdown, list markers and emoji; collapse whitespace."""
    text = _LIST_MARK.sub("", text)
    text = _MARKDOWN.sub(lambda m: m.group("link") or "", text)
    text = _EMOJI.sub("", text)
    return _SPACES.sub(" ", text)


class ClauseChunker:
    """Accumulates text deltas and yields speakable clauses.

    Call `push` for each delta and speak what it yields; call `flush` at the end of the reply for the rest.
    """

    def __init__(self, *, first_min_words: int = 2, first_max_words: int = 4, min_words: int = 6) -> None:
        self._buf = ""
        self._first = True
        self._first_min = first_min_words
        self._first_max = first_max_words
        self._min = min_words

    def push(self, delta: str) -> Iterator[str]:
        """Add a delta; yield every clause that is now complete."""
        self._buf += delta
        while (clause := self._cut()) is not None:
            if clause:
                yield clause

    def flush(self) -> Iterator[str]:
        """Yield whatever is left."""
        rest = clean_for_speech(self._buf).strip()
        self._buf = ""
        if rest:
            yield rest

    def _cut(self) -> str | None:
        text = self._buf
        end = _SENTENCE_END.search(text)
        cut: int | None = end.end() if end else None
        min_words = self._first_min if self._first else self._min
        for soft in _SOFT_BREAK.finditer(text):
            if cut is not None and soft.end() >= cut:
                break
            if len(text[: soft.start()].split()) >= min_words:
                cut = soft.end()
                break
        if cut is None and self._first:
            words = list(re.finditer(r"\S+\s", text))
            if len(words) >= self._first_max:
                cut = words[self._first_max - 1].end()
        if cut is None:
            return None
        self._buf = text[cut:]
        clause = clean_for_speech(text[:cut]).strip()
        if clause:
            self._first = False
        return clause
