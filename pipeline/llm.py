"""Conversational LLM policy over a token-streaming chat model: cached persona prefix, short replies.

The persona/system prompt dominates time to first token (~600 tokens → ~600 ms on 2 cores). The model's
state after it is cached (CTranslate2 ``static_prompt``), so each turn only encodes the new history and the
user's words; the cache key is the system text, so a changed persona is re-encoded once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Sequence
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

        ``stats``: an object the model fills in as it generates (`models.llm.GenerationStats`), or ``None``.
        """
        static: list[str] | None = None
        if messages and messages[0].get("role") == "system":
            key = messages[0]["content"]
            if key != self._prefix_key:
                # Tokenising is cheap (no model compute); the expensive part, encoding, is cached by CT2.
                self._prefix = self.chat.prefix_tokens([messages[0]])
                self._prefix_key = key
            static = self._prefix
        p = self.policy
        stream = self.chat.astream(
            messages,
            max_tokens=p.max_tokens,
            repetition_penalty=p.repetition_penalty,
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            stop=p.stop,
            static_prompt_tokens=static,
            stats=stats,
        )
        return stream if p.max_sentences is None else _first_sentences(stream, p.max_sentences)


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
