"""How much remembered history a chat request carries (pure functions, no server)."""

from __future__ import annotations

from voice_server.api.chat_routes import _newest_within
from voice_server.conversations import marks_ms


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
                          700)[0] == {"role": "user", "content": "My name is Zed."}  # fmt: skip
    assert _newest_within(history[1:], 2000) == history[2:]  # a leading reply without its question is dropped


def test_latency_marks_are_stored_relative_to_the_first() -> None:
    """Session clocks differ per connection: stored marks are milliseconds after the turn's earliest mark."""
    assert marks_ms({"speech_end": 10.0, "llm_first_token": 10.25, "transcript_final": 10.1}) == {
        "speech_end": 0.0,
        "transcript_final": 100.0,
        "llm_first_token": 250.0,
    }
    assert marks_ms({}) == {}
