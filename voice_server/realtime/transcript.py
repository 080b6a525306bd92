"""Input transcription deltas that add up to the final transcript, as OpenAI's Realtime clients expect.

Soma's recogniser re-decodes the whole utterance for each partial, and a later hypothesis may revise earlier
words. OpenAI's ``conversation.item.input_audio_transcription.delta`` events are increments: clients append
them and expect the sum to equal the ``…completed`` transcript. So only *stable* words are sent while the
user speaks — words two consecutive hypotheses agree on, never a hypothesis's last word (it may still be
growing) — and at the end the rest of the final transcript follows as one last delta.

If the final transcript still disagrees with words already sent (rare: the recogniser changed its mind
after two hypotheses agreed), the deltas cannot be taken back: the ``completed`` transcript is the truth, and
`TranscriptDeltas.final` says so, so the connection sends ``soma.input_audio_transcription.corrected``
first (a documented Soma extension: replace what was shown with its ``transcript``).
"""

from __future__ import annotations


class TranscriptDeltas:
    """Delta bookkeeping for one utterance; create one per utterance."""

    def __init__(self) -> None:
        self.sent = ""
        self._previous: list[str] = []

    def partial(self, text: str) -> str:
        """The delta to send for a new partial hypothesis (``""``: nothing new is stable yet)."""
        words = text.split()
        previous, self._previous = self._previous, words
        agreed = 0
        for a, b in zip(words[:-1], previous[:-1], strict=False):
            if a != b:
                break
            agreed += 1
        stable = " ".join(words[:agreed])
        if len(stable) <= len(self.sent) or not _extends(stable, self.sent):
            return ""
        delta, self.sent = stable[len(self.sent) :], stable
        return delta

    def final(self, text: str) -> tuple[str, bool]:
        """The last delta for the final transcript ``text``, and whether the deltas already sent disagree
        with it (then the delta is ``""`` and the client must be told the correction)."""
        if not _extends(text, self.sent):
            return "", True
        delta, self.sent = text[len(self.sent) :], text
        return delta, False


def _extends(text: str, prefix: str) -> bool:
    """``text`` starts with the whole words of ``prefix``."""
    return not prefix or (text.startswith(prefix) and (len(text) == len(prefix) or text[len(prefix)] == " "))
