"""Reply policy over a streaming chat model: cached persona prefix and the sentence cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

import pipeline.llm as pipeline_llm
from models.stop_phrases import PhraseGuard
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


class StoppingChat:
    """Plays one scripted reply per call and honours ``stop`` and ``stop_phrases`` as the real model does (the
    text before the earliest stop string or guarded run of words); records each call's messages and stop
    strings."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.calls: list[tuple[list[dict[str, str]], tuple[str, ...]]] = []
        self.options: list[dict[str, Any]] = []

    def prefix_tokens(self, prefix_messages: Sequence[dict[str, str]]) -> list[str]:
        return [prefix_messages[0]["content"]]

    async def astream(self, messages: Sequence[dict[str, str]], **options: Any) -> AsyncIterator[str]:
        stop = tuple(options["stop"])
        self.calls.append((list(messages), stop))
        self.options.append(options)
        text = self.replies[len(self.calls) - 1]
        cuts = [i for marker in stop if (i := text.find(marker)) >= 0]
        phrase = PhraseGuard.from_phrases(options.get("stop_phrases", ())).find(text, final=True)
        cuts += [phrase] if phrase is not None else []
        text = text[: min(cuts)] if cuts else text
        for word in text.split(" "):
            await asyncio.sleep(0)
            yield word + " "


PERSONA = "You are Sam. Speak as Sam would.\nHow you write: short messages; never uses capital letters."
LATE = (
    "Tone: You are close, so be warm and familiar.\n\n"
    "What the user told you before, in their words ('I' is the user), most relevant first:\n"
    "- my sister got the job in Berlin (2026-12-06)\n\n"
    "How Sam Rivers writes (real messages of theirs; copy the style, not the content):\n- no worries mate"
)


def _turn(question: str = "how is jess?") -> list[dict[str, str]]:
    return [
        {"role": "system", "content": PERSONA},
        {"role": "user", "content": "hey"},
        {"role": "assistant", "content": "alright mate"},
        {"role": "system", "content": LATE},
        {"role": "user", "content": question},
    ]


async def _guarded(replies: list[str]) -> tuple[str, StoppingChat]:
    chat = StoppingChat(replies)
    text = "".join([p async for p in ConversationLlm(chat, ReplyPolicy(max_sentences=None)).astream(_turn())])
    return text.strip(), chat


def test_context_markers_are_the_header_lines_of_system_messages() -> None:
    """Every ``Header:`` line start of any system message gives its first words, and so does each sentence of a
    header's text on the same line and of any other line of instructions (four words or more: "I'm Sam." is
    said for its own sake); list items give nothing."""
    markers = pipeline_llm.context_markers(_turn())
    assert markers == (
        "How Sam Rivers writes", "How you write", "Speak as Sam would.", "Tone:", "What the user told",
        "You are close, so", "short messages; never uses",
    )
    described = [{"role": "system", "content": 'You describe yourself like this: "I\'m Sam. I fix bikes for a '
                  'living. People in my life: Jess and Mum."'}]
    assert pipeline_llm.context_markers(described) == (
        "I fix bikes for", "People in my life:", "You describe yourself like"
    )


async def test_reply_is_cut_where_it_starts_reading_context_out() -> None:
    """A header, a bullet or a memory's date suffix ends the reply; what came before it is kept."""
    text, chat = await _guarded(["shes proper good Tone: You are close, so be warm"])
    assert text == "shes proper good"
    assert len(chat.calls) == 1
    text, _ = await _guarded(["she got the job in Berlin (2026-12-06) mate"])
    assert text == "she got the job in Berlin"
    text, _ = await _guarded(["yeah\n- my sister got the job"])
    assert text == "yeah"


def test_context_phrases_are_the_instruction_lines_without_lists_or_quotes() -> None:
    phrases = pipeline_llm.context_phrases([
        *_turn(), {"role": "system", "content": 'You describe yourself like this: "I fix bikes for a living."'}])
    assert "Tone: You are close, so be warm and familiar." in phrases
    assert not any("sister" in p or "no worries" in p or "bikes" in p for p in phrases)
    assert any(p.startswith("You describe yourself like this:") for p in phrases)


async def test_an_instruction_read_out_from_its_middle_with_a_pronoun_swapped_is_cut() -> None:
    """Measured (bench/training.py, Qwen2.5-0.5B): asked "Classic Biscuit.", the avatar read its tone line out
    from the middle, "their" turned "its". Four words of an instruction line in a row end the reply."""
    late = "Tone: They seemed in good spirits last time, so match their warmth; you are close, so be warm and familiar."
    turn = [*_turn()[:3], {"role": "system", "content": late}, {"role": "user", "content": "Classic Biscuit."}]
    chat = StoppingChat(["biscuit is a classic biscuit, so match its warmth; you are close, so be warm and familiar."])
    text = "".join([p async for p in ConversationLlm(chat, ReplyPolicy(max_sentences=None)).astream(turn)])
    assert text.strip() == "biscuit is a classic biscuit,"
    # The person's own words in the late material (memories, examples) stay theirs to say.
    chat = StoppingChat(["my sister got the job in Berlin, no worries mate"])
    assert "".join([p async for p in ConversationLlm(chat).astream(_turn())]).strip() == (
        "my sister got the job in Berlin, no worries mate")


async def test_a_reply_of_only_context_is_generated_again_without_the_turn_material() -> None:
    """Context read out from the first word (or a stock refusal, or help-desk talk) is replaced by a sampled
    generation from the persona and the dialogue alone, which still stops at context markers."""
    for first in ("What the user told you before: my sister", "I'm sorry, but I can't assist with that.",
                  "If you have any other questions, just ask"):
        text, chat = await _guarded([first, "shes smashing it mate"])
        assert text == "shes smashing it mate"
        assert len(chat.calls) == 2
        retried, stop = chat.calls[1]
        assert [m["role"] for m in retried] == ["system", "user", "assistant", "user"]
        assert retried[0]["content"] == PERSONA
        assert "Tone:" in stop and "I'm sorry, but I can" in stop
        assert chat.options[0]["top_k"] == 1 and (chat.options[1]["temperature"], chat.options[1]["top_k"]) == (
            pipeline_llm.RETRY_SAMPLING)


async def test_a_second_refusal_gets_a_last_try_without_the_refusal_stops() -> None:
    """Refused twice: the third and last try may say what it says; context is still cut; then no more tries."""
    refusal = "I'm sorry, but I can't assist with that."
    text, chat = await _guarded([refusal, refusal, "ok mate"])
    assert text == "ok mate" and len(chat.calls) == 3
    assert "I'm sorry, but I can" not in chat.calls[2][1] and "Tone:" in chat.calls[2][1]
    text, chat = await _guarded(["Tone: warm", "How you write: short", "Tone: gentle"])
    assert text == "" and len(chat.calls) == 3
