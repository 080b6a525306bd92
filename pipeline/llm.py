"""Conversational LLM policy over a token-streaming chat model: cached persona prefix, short replies.

The persona/system prompt dominates time to first token (~600 tokens → ~600 ms on 2 cores). The model's
state after it is cached (CTranslate2 ``static_prompt``), so each turn only encodes the new history and the
user's words; the cache key is the system text, so a changed persona is re-encoded once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.ports import Message


class TokenStreamingChat(Protocol):
    """What `models.llm.CT2Llm` offers: prefix tokens for caching and streaming generation."""

    def prefix_tokens(self, prefix_messages: Sequence[Message]) -> list[str]: ...

    def astream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = ...,
        repetition_penalty: float = ...,
        temperature: float = ...,
        top_k: int = ...,
        top_p: float = ...,
        stop: Sequence[str] = ...,
        stop_phrases: Sequence[str] = ...,
        static_prompt_tokens: Sequence[str] | None = ...,
        stats: Any = ...,
    ) -> AsyncIterator[str]: ...


@dataclass(frozen=True, slots=True)
class ReplyPolicy:
    """Generation settings that keep spoken replies conversational.

    Attributes:
        max_tokens: Cap per reply (one or two spoken sentences).
        repetition_penalty: >1 discourages loops; ~1.1 measured best for the 0.5B model.
        temperature: With ``top_k`` 1 (greedy) it has no effect.
        top_k: 1 = greedy, deterministic.
        top_p: Nucleus sampling threshold (1: off); only matters when sampling.
        stop: Strings that end a reply (a model starting to write the user's next line).
        max_sentences: The reply ends after this many sentences (``None``: no limit). Small models ramble
            into lectures; two sentences is how people answer on the phone, and stopping early frees the
            shared LLM for other sessions.
    """

    max_tokens: int = 72
    repetition_penalty: float = 1.1
    temperature: float = 0.7
    top_k: int = 1
    top_p: float = 1.0
    stop: tuple[str, ...] = ("\nUser:", "\nuser:", "<|im_end|>", "<|endoftext|>")
    max_sentences: int | None = 2


# Internal context must never reach the person on the other end. Small models read their prompt out ("Tone:
# You are close, so be warm...", "How Sam writes (real messages of theirs...)", memories with their dates), so
# every reply is generated with these as stop strings: a header line of any system message (its first words),
# bullets (a spoken or texted reply has no lists) and the date suffix of a recalled memory. The decoder holds
# back text that could start a stop string, so nothing of a marker is released (`models.llm.IncrementalDecoder`).
_HEADER = re.compile(r"^[ \t]*([A-Z][^:\n]{0,120}?):[ \t]*([^\n]*)", re.MULTILINE)
HEADER_WORDS = 4  # a header is recognised by its first words: a model reading it out copies it verbatim
CONTEXT_GUARDS: tuple[str, ...] = ("\n- ", "\n* ", " (202", "(202")
# The stock refusal of instruction-tuned models, triggered by long unusual system prompts: a person never
# answers a friend like this, so such a reply is replaced by one generated without the turn's material.
REFUSALS: tuple[str, ...] = (
    "I'm sorry, but I can", "I\u2019m sorry, but I can", "I'm sorry, I can't", "I can't assist",
    "I cannot assist", "I can\u2019t assist", "As an AI",
)
# Help-desk lines of the same models: never how a person talks to a friend, so a reply stops before them (and
# one made of nothing else is generated again, as for a refusal).
ASSISTANT_SPEAK: tuple[str, ...] = (
    "If you have any other questions", "If you have any questions", "feel free to ask", "Feel free to ask",
    "need further assistance", "How can I assist you", "How can I help you today", "I'm here to help",
    "I\u2019m here to help",
)
RETRY_SAMPLING = (0.8, 40)  # temperature, top-k of the retries
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def context_markers(messages: Sequence[Message]) -> tuple[str, ...]:
    """Stop strings that mark internal context being read out, sorted, without duplicates.

    From the system messages in ``messages``: the opening words of every header line (``Name: ...`` at a line
    start), and of each sentence of the header's text when it goes on on the same line (an instruction such as
    "Tone: be gentle, they seemed down", or the self-description: a model may read it out without its header);
    and the opening words of each sentence of every other line of instructions ("You are Sam. Speak as Sam
    would..."). List items (``- ...`` lines: recalled memories, the person's own example messages) give nothing:
    they are the avatar's to use. A sentence shorter than `HEADER_WORDS` words gives nothing either (too
    likely to be said for its own sake).
    """
    markers: set[str] = set()

    def sentences(text: str) -> None:
        for sentence in _SENTENCE.split(text.strip().strip("\"'\u201c\u201d")):
            if len(words := sentence.split()) >= HEADER_WORDS:
                markers.add(" ".join(words[:HEADER_WORDS]))

    for line in _instruction_lines(messages):
        if (match := _HEADER.match(line)) is not None:
            words = match.group(1).split()
            markers.add(" ".join(words[:HEADER_WORDS]) if len(words) > 1 else words[0] + ":")
            sentences(match.group(2))
        else:
            sentences(line)
    return tuple(sorted(markers))


def _instruction_lines(messages: Sequence[Message]) -> Iterator[str]:
    """The non-blank lines of the system messages in ``messages`` that are not list items (``- ...``, ``* ...``:
    recalled memories, the person's own example messages, which are the avatar's to use)."""
    for message in messages:
        if message.get("role") == "system":
            for line in message["content"].splitlines():
                if line.strip() and not line.lstrip().startswith(("-", "*")):
                    yield line


_QUOTED = re.compile(r"\"[^\"\n]*\"|\u201c[^\u201d\n]*\u201d")


def context_phrases(messages: Sequence[Message]) -> tuple[str, ...]:
    """The instruction lines of the system messages in ``messages``, for `models.stop_phrases.PhraseGuard`: a
    reply that reads four of their words in a row out (pronouns swapped or not) stops there.

    List items (recalled memories, the person's example messages) and quoted text (the person's
    self-description, words a client's instructions ask for) are the avatar's to say, so they give nothing.
    """
    return tuple(_QUOTED.sub(" | ", line) for line in _instruction_lines(messages))


# A sentence ends at . ! or ? (plus closing quotes/brackets) followed by whitespace — but not after an initial
# ("J.R.R. Tolkien") or a digit ("1. First", "3.5").
_SENTENCE_END = re.compile(r"(?<![\s.][A-Z])(?<!\d)[.!?]+[\"')\]]*(?=\s)")


class ConversationLlm:
    """Adapts a `TokenStreamingChat` to the pipeline's `Llm` port with prefix caching and the reply policy."""

    def __init__(self, chat: TokenStreamingChat, policy: ReplyPolicy | None = None) -> None:
        self.chat = chat
        self.policy = policy or ReplyPolicy()
        self._prefix_key: str | None = None
        self._prefix: list[str] = []

    def astream(self, messages: Sequence[Message], *, stats: Any = None) -> AsyncIterator[str]:
        """Stream the reply to ``messages``; the leading system message is the cached prefix.

        Guarded: the reply stops where it would start reading internal context out (`context_markers`,
        `CONTEXT_GUARDS`; four words in a row of an instruction line anywhere: `context_phrases`) or talking
        like a help desk (`ASSISTANT_SPEAK`). A reply that would say nothing but
        that, or a stock refusal (`REFUSALS`), is generated again from the leading system message and the
        dialogue alone (the turn's late system material left out), sampled (`RETRY_SAMPLING`); if that says
        nothing either, once more without the refusal stops. Leading whitespace is held until words follow.

        ``stats``: an object the model fills in as it generates (`models.llm.GenerationStats`), or ``None``;
        after a retry it describes the last generation.
        """
        guarded = self._guarded(messages, stats)
        p = self.policy
        return guarded if p.max_sentences is None else _first_sentences(guarded, p.max_sentences)

    async def _guarded(self, messages: Sequence[Message], stats: Any) -> AsyncIterator[str]:
        markers = (*context_markers(messages), *CONTEXT_GUARDS, *ASSISTANT_SPEAK)
        phrases = context_phrases(messages)
        bare = [m for i, m in enumerate(messages) if i == 0 or m.get("role") != "system"]
        # Each try runs only when the one before said nothing: as asked; then without the turn's late material,
        # sampled (a greedy retry of a refusal mostly refuses again, measured); then without the refusal stops,
        # so that something is said.
        tries = ((messages, (*markers, *REFUSALS), None), (bare, (*markers, *REFUSALS), RETRY_SAMPLING),
                 (bare, markers, RETRY_SAMPLING))
        for attempt, (prompt, guards, sampling) in enumerate(tries):
            stream = self._stream(prompt, guards, phrases, stats, sampling)
            held, said = "", False
            async with contextlib.aclosing(stream):  # type: ignore[type-var]
                async for piece in stream:
                    if not said and not piece.strip() and attempt < len(tries) - 1:
                        held += piece
                        continue
                    said = True
                    yield held + piece
                    held = ""
            if said:
                return

    def _stream(
        self,
        messages: Sequence[Message],
        guards: Sequence[str],
        phrases: Sequence[str],
        stats: Any,
        sampling: tuple[float, int] | None,
    ) -> AsyncIterator[str]:
        static: list[str] | None = None
        if messages and messages[0].get("role") == "system":
            key = messages[0]["content"]
            if key != self._prefix_key:
                # Tokenising is cheap (no model compute); the expensive part, encoding, is cached by CT2.
                self._prefix = self.chat.prefix_tokens([messages[0]])
                self._prefix_key = key
            static = self._prefix
        p = self.policy
        temperature, top_k = sampling if sampling is not None else (p.temperature, p.top_k)
        return self.chat.astream(
            messages,
            max_tokens=p.max_tokens,
            repetition_penalty=p.repetition_penalty,
            temperature=temperature,
            top_k=top_k,
            top_p=p.top_p,
            stop=(*p.stop, *guards),
            stop_phrases=phrases,
            static_prompt_tokens=static,
            stats=stats,
        )


async def _first_sentences(stream: AsyncIterator[str], limit: int) -> AsyncIterator[str]:
    """Pass ``stream`` through until ``limit`` sentences are complete, then close it (which stops the model)."""
    text = ""
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for piece in stream:
            start = len(text)
            text += piece
            ends = [m.end() for m in _SENTENCE_END.finditer(text)]
            if len(ends) >= limit:
                if ends[limit - 1] > start:
                    yield text[start : ends[limit - 1]]
                return
            yield piece
