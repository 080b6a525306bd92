"""OpenAI Realtime semantics beyond one turn, on virtual time with fake models (the same classes run under the
real server in test_openai_compat_realtime.py): per-response instructions and metadata, usage, conversation
items (retrieve, delete, truncate), transcription deltas that add up, and turn detection in force."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pipeline.turn import TurnConfig
from tests.pipeline.fakes import tone
from tests.server.test_realtime_connection import LONG, RATE, Harness, b64, run
from voice_server.realtime import protocol as p
from voice_server.realtime.transcript import TranscriptDeltas
from voice_server.realtime.turn_detection import TurnDetection, TurnDetectionError, parse_turn_detection

TEXT_ONLY = {"type": "realtime", "output_modalities": ["text"]}


def prompts(h: Harness) -> list[list[dict[str, str]]]:
    llm: Any = h.session.models.llm
    return list(llm.prompts)


def test_per_response_instructions_apply_to_that_response_only() -> None:
    """response.create's instructions replace the persona for that answer; metadata comes back in the
    response objects; the next response uses the persona again."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session=TEXT_ONLY)
        await h.send(type="conversation.item.create", item={"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": "Hello"}]})
        await h.send(type="response.create", response={"instructions": "Answer like a pirate.",
                                                        "metadata": {"topic": "greeting"}})
        await h.until("response.done")
        await h.say("Again")
        await h.until("response.done", count=2)

    h = run(script)
    first, second = prompts(h)
    assert first[0] == {"role": "system", "content": "Answer like a pirate."}
    assert second[0] == {"role": "system", "content": "You are kind."}
    created, done = h.of("response.created")[0]["response"], h.of("response.done")[0]["response"]
    assert created["metadata"] == done["metadata"] == {"topic": "greeting"}
    assert h.of("response.done")[1]["response"]["metadata"] is None
    assert not h.of("error")


def test_response_done_reports_token_usage() -> None:
    """response.done carries the generation's token counts in OpenAI's shape."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session=TEXT_ONLY)
        await h.say("Hello there")
        await h.until("response.done")

    h = run(script, reply="one two three four")
    usage = h.of("response.done")[0]["response"]["usage"]
    assert usage["output_tokens"] == 4 and usage["output_token_details"] == {"text_tokens": 4, "audio_tokens": 0}
    assert usage["input_tokens"] > 4 and usage["total_tokens"] == usage["input_tokens"] + 4
    assert usage["input_token_details"]["text_tokens"] == usage["input_tokens"]


def test_retrieve_and_delete_items() -> None:
    """retrieve returns an item as it stands; delete removes it from what the model sees next; an unknown or
    deleted id is item_not_found."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session=TEXT_ONLY)
        await h.say("Remember the code 4711")
        await h.until("response.done")
        user_id = h.of("conversation.item.done")[0]["item"]["id"]
        answer_id = h.of("response.done")[0]["response"]["output"][0]["id"]
        await h.send(type="conversation.item.retrieve", item_id=user_id)
        await h.send(type="conversation.item.retrieve", item_id=answer_id)
        await h.send(type="conversation.item.delete", item_id=user_id)
        await h.send(type="conversation.item.retrieve", item_id=user_id)
        await h.send(type="conversation.item.delete", item_id="item_nope")
        await h.say("What was it?")
        await h.until("response.done", count=2)

    h = run(script, reply="Got it.")
    user_item, answer_item = (e["item"] for e in h.of("conversation.item.retrieved"))
    assert user_item["role"] == "user" and user_item["content"][0]["text"] == "Remember the code 4711"
    assert answer_item["role"] == "assistant" and answer_item["content"][0]["text"] == "Got it."
    assert h.of("conversation.item.deleted")[0]["item_id"] == user_item["id"]
    assert [e["error"]["code"] for e in h.of("error")] == ["item_not_found", "item_not_found"]
    second = prompts(h)[1]
    assert all("4711" not in m["content"] for m in second)  # deleted: the model no longer sees it
    assert {"role": "assistant", "content": "Got it."} in second


def test_truncate_keeps_only_the_words_played() -> None:
    """A client that plays the audio itself truncates the answer where playback stopped: the item, the
    model's history and the next prompt keep only the words heard by then; beyond the audio is an error."""

    async def script(h: Harness) -> None:
        await h.send(type="input_audio_buffer.append", audio=b64(tone(0.8, 2000, RATE)))
        await h.until("response.done")
        answer_id = h.of("response.done")[0]["response"]["output"][0]["id"]
        await h.send(type="conversation.item.truncate", item_id=answer_id, content_index=0, audio_end_ms=999_999)
        await h.send(type="conversation.item.truncate", item_id=answer_id, content_index=0, audio_end_ms=1100)
        await h.send(type="conversation.item.retrieve", item_id=answer_id)
        user_id = h.of("conversation.item.done")[0]["item"]["id"]
        await h.send(type="conversation.item.truncate", item_id=user_id, content_index=0, audio_end_ms=0)

    h = run(script, reply=LONG, texts=("Tell me a story.",))
    assert [e["error"]["code"] for e in h.of("error")] == ["invalid_value", "invalid_value"]
    assert h.of("conversation.item.truncated")[0]["audio_end_ms"] == 1100
    kept = h.of("conversation.item.retrieved")[0]["item"]["content"][0]["transcript"]
    # FakeTts speaks 0.25 s a word: 1.1 s into the answer, four words had been heard.
    assert kept == " ".join(LONG.split()[:4])
    assert list(h.session.history)[-1] == {"role": "assistant", "content": kept}


def test_truncating_a_running_answer_stops_it_first() -> None:
    """Truncating the item of a response still speaking cancels it, then truncates once it is done."""

    async def script(h: Harness) -> None:
        await h.send(type="input_audio_buffer.append", audio=b64(tone(0.8, 2000, RATE)))
        await h.until("response.output_audio.delta")
        await asyncio.sleep(1.0)
        answer_id = h.of("response.output_item.added")[0]["item"]["id"]
        await h.send(type="conversation.item.truncate", item_id=answer_id, content_index=0, audio_end_ms=500)
        await h.until("conversation.item.truncated")

    h = run(script, reply=LONG, texts=("Tell me a story.",))
    done = h.of("response.done")[0]["response"]
    assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
    assert h.types().index("response.done") < h.types().index("conversation.item.truncated")
    assert list(h.session.history)[-1] == {"role": "assistant", "content": " ".join(LONG.split()[:2])}


def test_transcription_deltas_add_up_to_the_completed_transcript() -> None:
    """The deltas of a spoken turn concatenate to exactly the completed transcript, which carries a
    duration usage."""

    async def script(h: Harness) -> None:
        await h.send(type="input_audio_buffer.append", audio=b64(tone(2.0, 2000, RATE)))
        await h.until("response.done")

    h = run(script, texts=("What time is it in Lisbon right now?",))
    deltas = h.of("conversation.item.input_audio_transcription.delta")
    completed = h.of("conversation.item.input_audio_transcription.completed")[0]
    assert len(deltas) >= 2  # stable words while speaking, the rest at the end
    assert "".join(d["delta"] for d in deltas) == completed["transcript"]
    assert {d["item_id"] for d in deltas} == {completed["item_id"]}
    assert completed["usage"]["type"] == "duration" and 1.5 < completed["usage"]["seconds"] < 2.5


def test_transcript_deltas_send_only_agreed_words() -> None:
    """Only words two hypotheses agree on (never the last, still growing) go out; a revision of words
    already sent is reported as a correction instead of a wrong sum."""
    d = TranscriptDeltas()
    assert d.partial("What is") == ""
    assert d.partial("What is the cap") == "What"
    assert d.partial("What is the capital of") == " is the"
    assert d.partial("What's the capital of France") == ""  # earlier words revised: hold back
    assert d.final("What is the capital of France?") == (" capital of France?", False)
    revised = TranscriptDeltas()
    revised.partial("Call my sister now")
    revised.partial("Call my sister now please")
    assert revised.final("Tell my sister now please.") == ("", True)
    assert TranscriptDeltas().final("Hi.") == ("Hi.", False)


def test_turn_detection_is_echoed_and_applied() -> None:
    """session.updated echoes the turn detection in force, with Soma's defaults for what the client left
    out, and the session's end-of-turn waits follow it."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "server_vad", "silence_duration_ms": 700}}}})
        await h.send(type="session.update", session={"type": "realtime", "audio": {"input": {"turn_detection": {
            "type": "semantic_vad", "eagerness": "high"}}}})

    h = run(script)
    created = h.of("session.created")[0]["session"]["audio"]["input"]["turn_detection"]
    assert created == {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 350,
                       "idle_timeout_ms": None, "create_response": True, "interrupt_response": True}
    server, semantic = (e["session"]["audio"]["input"]["turn_detection"] for e in h.of("session.updated"))
    assert server["silence_duration_ms"] == 700 and server["threshold"] == 0.5
    assert semantic == {"type": "semantic_vad", "eagerness": "high", "create_response": True,
                        "interrupt_response": True}
    base = TurnConfig()
    assert h.session.core.config.unsure_wait_s == pytest.approx(base.unsure_wait_s * 0.5)
    assert h.session.core.config.unfinished_wait_s == pytest.approx(base.unfinished_wait_s * 0.5)


def test_turn_detection_mapping() -> None:
    """silence_duration_ms scales Soma's adaptive waits around its 350 ms default; threshold and padding
    reach the VAD and the pre-roll; bad values are refused with the field named."""
    td = parse_turn_detection({"type": "server_vad", "silence_duration_ms": 700, "threshold": 0.7,
                               "prefix_padding_ms": 100})
    assert td == TurnDetection(threshold=0.7, prefix_padding_ms=100, silence_duration_ms=700)
    turn = td.turn_config(TurnConfig())
    assert turn.finished_wait_s == pytest.approx(0.16) and turn.unfinished_wait_s == pytest.approx(2.2)
    assert td.preroll_s == pytest.approx(0.1)
    assert parse_turn_detection(None) is None
    for bad, param in (({"type": "server_vad", "threshold": 1.5}, "threshold"),
                       ({"type": "server_vad", "prefix_padding_ms": 2.5}, "prefix_padding_ms"),
                       ({"type": "semantic_vad", "eagerness": ["high"]}, "eagerness"),
                       ({"type": "server_vad", "interrupt_response": False}, "interrupt_response")):
        with pytest.raises(TurnDetectionError) as err:
            parse_turn_detection(bad)
        assert err.value.param.endswith(param)


def test_session_defaults_sent_by_clients_are_accepted() -> None:
    """The "off" values of settings Soma does not have (no tools, no token cap) and harmless ones (tracing,
    truncation) pass; only settings that would not be honoured are refused."""
    raw = ('{"type": "session.update", "session": {"type": "realtime", "model": "soma", "tools": [], '
           '"tool_choice": "auto", "max_output_tokens": "inf", "tracing": "auto", "truncation": "auto", '
           '"include": [], "prompt": null}}')
    event = p.parse_client_event(raw, p.SessionSettings())
    assert isinstance(event, p.SessionUpdate) and event.settings == p.SessionSettings()


def test_response_without_new_input_lets_the_avatar_speak_first() -> None:
    """response.create with nothing pending (a greeting, with instructions) answers the conversation as it
    stands: no empty user message enters the prompt or the history."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session=TEXT_ONLY)
        await h.send(type="response.create", response={"instructions": "Greet the caller by name."})
        await h.until("response.done")

    h = run(script, reply="Hello Ana!")
    (prompt,) = prompts(h)
    assert prompt == [{"role": "system", "content": "Greet the caller by name."}]
    assert h.of("response.done")[0]["response"]["status"] == "completed"
    assert list(h.session.history) == [{"role": "assistant", "content": "Hello Ana!"}]
    assert not h.of("error") and not [e for e in h.of("conversation.item.added") if e["item"]["role"] == "user"]


def test_idle_timeout_makes_the_avatar_speak_up() -> None:
    """With idle_timeout_ms, a caller silent that long after an answer gets timeout_triggered and a new
    answer (with no new words); speech before the timeout disarms it."""

    async def script(h: Harness) -> None:
        await h.send(type="session.update", session={"type": "realtime", "output_modalities": ["text"], "audio": {
            "input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}})
        await h.say("Hello")
        await h.until("response.done")
        await h.until("response.done", limit_s=10, count=2)
        await asyncio.sleep(2.0)
        await h.send(type="input_audio_buffer.append", audio=b64(tone(0.8, 2000, RATE)))
        await h.until("response.done", count=3)
        await asyncio.sleep(3.5)  # 2 s + 3.5 s after the spoken turn's answer: not long enough yet

    h = run(script, texts=("Still here.",))
    (timeout,) = h.of("input_audio_buffer.timeout_triggered")
    assert timeout["audio_end_ms"] >= timeout["audio_start_ms"]
    (t_done, _), (t_timeout, _) = h.first("response.done"), h.first("input_audio_buffer.timeout_triggered")
    assert 4.99 < t_timeout - t_done < 5.5
    assert len(h.of("response.done")) == 3 and not h.of("error")
    assert h.of("session.updated")[0]["session"]["audio"]["input"]["turn_detection"]["idle_timeout_ms"] == 5000
