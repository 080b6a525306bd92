"""A bounded, deterministic, duplicate-free sample of the user's own messages: the behavioural examples.

Bottom-k sampling: every candidate message gets a hash of its *normalised* text (case-folded, digits made
``0``, punctuation, emoji and spacing removed), and the sample is the `k` messages with the smallest hashes.
That is a uniform random sample of the distinct messages, the same whatever order the messages arrive in,
with near-duplicates ("ok see you at 5!", "OK see you at 6") collapsed into one, in O(k) memory.
"""

from __future__ import annotations

import hashlib
import heapq
import re

from voice_server.avatar.persona.style import words_of

MAX_EXAMPLES = 2000
MIN_WORDS = 3
MAX_CHARS = 280  # longer texts (notes, posts) say less about how the user chats, and cost prompt tokens
_DIGITS = re.compile(r"\d")


def normalised(text: str) -> str:
    """The form two messages must share to count as the same example."""
    return " ".join(_DIGITS.sub("0", w.casefold()) for w in words_of(text))


class ExampleSample:
    """Keeps the `k` candidate messages with the smallest normalised-text hashes (see the module doc). Of
    messages that normalise alike, the one that sorts first is kept, so arrival order never matters.

    Args:
        k: The largest sample size.
    """

    def __init__(self, k: int = MAX_EXAMPLES) -> None:
        self.k = k
        self._heap: list[int] = []  # negated hashes: the largest hash on top, to be replaced
        self._texts: dict[int, str] = {}

    def offer(self, text: str, words: int) -> None:
        """Consider one message of ``words`` words (too short or too long ones are ignored)."""
        text = text.strip()
        if words < MIN_WORDS or len(text) > MAX_CHARS:
            return
        digest = int.from_bytes(hashlib.blake2b(normalised(text).encode(), digest_size=8).digest(), "big")
        known = self._texts.get(digest)
        if known is not None:
            if text < known:
                self._texts[digest] = text
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, -digest)
        elif digest < -self._heap[0]:
            removed = -heapq.heapreplace(self._heap, -digest)
            del self._texts[removed]
        else:
            return
        self._texts[digest] = text

    def texts(self) -> list[str]:
        """The sample, in hash order (deterministic)."""
        return [self._texts[digest] for digest in sorted(self._texts)]

    def __len__(self) -> int:
        return len(self._heap)
