"""Reply policy over a streaming chat model: cached persona prefix and the sentence cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from pipeline.llm import ConversationLlm, ReplyPolicy


class ScriptedChat:
    """Streams fixed pieces; records the options of each call and whether the stream was closed early."""

    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces
        self.calls: list[dict[str, Any]] = []
        self.prefix_calls = 0
        self.closed_early = False

    def prefix_tokens(self, prefix_messages: Sequence[dict[str, str]]) -> list[str]:
        self.prefix_calls += 1
        return ["<sys>", prefix_messages[0]["content"]]

    async def astream(self, messages: Sequence[dict[str, str]], **options: Any) -> AsyncIterator[str]:
        self.calls.append(options)
        try:
            for piece in self.pieces:
                await asyncio.sleep(0)
                yield piece
        except GeneratorExit:
            self.closed_early = True
            raise


async def _reply(llm: ConversationLlm, system: str = "Be kind.") -> str:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    return "".join([piece async for piece in llm.astream(messages)])


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["Sure", "!", " Try", " rice", ".", " Then", " eggs", "."], "Sure! Try rice."),
        (
            ["Read", " J", ".R", ".R", ". Tolkien", ".", " He", " is", " great", ". Also"],
            "Read J.R.R. Tolkien. He is great.",
        ),
        (
            ["Steps", ":\n", "1", ". Boil", " water", ".\n", "2", ". Add", " tea", ". Done"],
            "Steps:\n1. Boil water.\n2. Add tea.",
        ),
        (["Just", " one", " sentence", "."], "Just one sentence."),
    ],
)
async def test_reply_stops_after_two_sentences(pieces: list[str], expected: str) -> None:
    """The reply ends with its second sentence (initials and list numbers are not sentence ends), and the
    model's stream is closed right there so it stops generating."""
    chat = ScriptedChat(pieces)
    assert await _reply(ConversationLlm(chat)) == expected
    assert chat.closed_early == (expected != "".join(pieces))


async def test_no_sentence_cap_passes_everything() -> None:
    """With max_sentences=None the whole stream passes through."""
    chat = ScriptedChat(["One.", " Two.", " Three."])
    assert await _reply(ConversationLlm(chat, ReplyPolicy(max_sentences=None))) == "One. Two. Three."


async def test_persona_prefix_is_tokenised_once_per_persona() -> None:
    """The system prompt becomes the cached static prefix; it is re-tokenised only when it changes."""
    chat = ScriptedChat(["Hi."])
    llm = ConversationLlm(chat)
    await _reply(llm)
    await _reply(llm)
    await _reply(llm, system="Be brief.")
    assert chat.prefix_calls == 2
    assert chat.calls[-1]["static_prompt_tokens"] == ["<sys>", "Be brief."]
    assert chat.calls[0]["max_tokens"] == ReplyPolicy().max_tokens
