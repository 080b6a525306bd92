"""How much remembered history a chat request carries, and only on request (no server, no database)."""

from __future__ import annotations

import uuid
from typing import Any

from pipeline.ports import Message
from voice_server.accounts import Principal
from voice_server.api.chat_routes import ChatCompletionRequest, _newest_within, _prompt
from voice_server.avatar.directory import Avatar
from voice_server.conversations import marks_ms

EARLIER: list[Message] = [
    {"role": "user", "content": "The secret word is Zorblax."},
    {"role": "assistant", "content": "Noted."},
]


class RecentHistory:
    """A conversation store that only knows the user's recent history, and counts the look-ups."""

    def __init__(self) -> None:
        self.lookups = 0

    async def recent_history(self, user_id: uuid.UUID, *, max_messages: int, within_s: float) -> list[Message]:
        self.lookups += 1
        return list(EARLIER)


async def prompt_for(messages: list[dict[str, Any]], **fields: Any) -> tuple[list[Message], int]:
    store = RecentHistory()
    user = Principal(uuid.uuid4(), "ada", False, frozenset({"chat"}), uuid.uuid4())
    body = ChatCompletionRequest.model_validate({"model": "soma", "messages": messages, **fields})
    chat, _ = await _prompt(body, Avatar("soma", "ada", "You are Ada."), user, store, None)  # type: ignore[arg-type]
    return chat, store.lookups


async def test_history_is_added_only_on_request() -> None:
    """Stateless by default (no look-up at all); ``soma.history: "recent"`` adds the recent exchange before the
    new message; a client that sends its own earlier turns keeps its context even when it opts in."""
    question = [{"role": "user", "content": "What is the secret word?"}]
    chat, lookups = await prompt_for(question)
    assert chat == [{"role": "system", "content": "You are Ada."}, *question] and lookups == 0
    chat, lookups = await prompt_for(question, soma={"history": "none"})
    assert chat[1:] == question and lookups == 0
    chat, lookups = await prompt_for(question, soma={"history": "recent"})
    assert chat[1:] == [*EARLIER, *question] and lookups == 1
    own = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, *question]
    chat, lookups = await prompt_for(own, soma={"history": "recent"})
    assert chat[1:] == own and lookups == 0


def test_history_keeps_the_newest_exchanges_within_the_budget() -> None:
    """Whole exchanges newest first while they fit; the next one keeps its question and the beginning of its
    answer; a reply never appears without its question."""
    history = [
        {"role": "user", "content": "a" * 100},
        {"role": "assistant", "content": "b" * 400},
        {"role": "user", "content": "c" * 100},
        {"role": "assistant", "content": "d" * 300},
    ]
    assert _newest_within(history, 400) == history[2:]
    assert _newest_within(history, 2000) == history
    gist = _newest_within(history, 700)  # 300 left after the newest exchange: question + 200 characters
    assert gist[:1] == history[:1] and gist[1]["content"] == "b" * 200 + "…" and gist[2:] == history[2:]
    assert _newest_within(history, 150) == []  # no room for the question and a useful part of the answer
    assert _newest_within([{"role": "user", "content": "My name is Zed."}, {"role": "assistant", "content": "x" * 900}],
                          700)[0] == {"role": "user", "content": "My name is Zed."}
    assert _newest_within(history[1:], 2000) == history[2:]  # a leading reply without its question is dropped


def test_latency_marks_are_stored_relative_to_the_first() -> None:
    """Session clocks differ per connection: stored marks are milliseconds after the turn's earliest mark."""
    assert marks_ms({"speech_end": 10.0, "llm_first_token": 10.25, "transcript_final": 10.1}) == {
        "speech_end": 0.0,
        "transcript_final": 100.0,
        "llm_first_token": 250.0,
    }
    assert marks_ms({}) == {}
