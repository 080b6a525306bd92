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
    """Keeps the `k` candidate messages with the smallest normalised-text hashes (see the module doc).

    Args:
        k: The largest sample size.
    """

    def __init__(self, k: int = MAX_EXAMPLES) -> None:
        self.k = k
        self._heap: list[tuple[int, str]] = []  # (-hash, text): the largest hash on top, to be replaced
        self._hashes: set[int] = set()

    def offer(self, text: str, words: int) -> None:
        """Consider one message of ``words`` words (too short or too long ones are ignored)."""
        text = text.strip()
        if words < MIN_WORDS or len(text) > MAX_CHARS:
            return
        digest = int.from_bytes(hashlib.blake2b(normalised(text).encode(), digest_size=8).digest(), "big")
        if digest in self._hashes:
            return
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, (-digest, text))
            self._hashes.add(digest)
        elif digest < -self._heap[0][0]:
            removed, _ = heapq.heapreplace(self._heap, (-digest, text))
            self._hashes.discard(-removed)
            self._hashes.add(digest)

    def texts(self) -> list[str]:
        """The sample, in hash order (deterministic)."""
        return [text for _, text in sorted(self._heap, key=lambda item: -item[0])]

    def __len__(self) -> int:
        return len(self._heap)
