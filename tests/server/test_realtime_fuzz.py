"""Property-based fuzzing of the Realtime client-event parser: whatever a client sends — any JSON value in any
field, mutated valid events, raw text — `parse_client_event` returns an event or raises its own
`ProtocolError`, never anything else (an uncaught exception used to close the connection with code 1000)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice_server.realtime import protocol as p

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Hypothesis leaves surrogates out of text by default; JSON can carry them ("\ud800"), so they are mixed in.
_strings = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=20)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**30, max_value=10**60)
    | st.floats(allow_nan=True, allow_infinity=True)
    | _strings
    | st.sampled_from(["text", "audio", "message", "user", "input_text", "audio/pcm", "server_vad", "fast", ""])
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_strings, children, max_size=4),
    max_leaves=20,
)

NASTY: list[Any] = [
    None, True, False, 0, -1, 2**63, 10**50, 1.5, -0.0, float("inf"), float("nan"), "", "x", "\ud800", "text",
    [], [1], ["text"], [None, {}], {}, {"type": "audio/pcm"}, {"\udc00": 1},
]

VALID: list[dict[str, Any]] = [
    {"type": "session.update", "session": {"output_modalities": ["text"], "instructions": "Be brief.",
                                           "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000},
                                                               "turn_detection": {"type": "server_vad"}},
                                                     "output": {"format": {"type": "audio/pcm", "rate": 24000},
                                                                "voice": "fast"}}}},
    {"type": "input_audio_buffer.append", "audio": "AAAAAA=="},
    {"type": "input_audio_buffer.commit"},
    {"type": "input_audio_buffer.clear"},
    {"type": "conversation.item.create", "event_id": "e1",
     "item": {"id": "i1", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}},
    {"type": "response.create", "response": {"output_modalities": ["audio"], "metadata": {"k": "v"}}},
    {"type": "response.cancel", "response_id": "resp_1"},
    {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {
        "type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 500,
        "idle_timeout_ms": None, "create_response": True, "interrupt_response": True}}}}},
    {"type": "session.update", "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad",
                                                                                  "eagerness": "high"}}}}},
    {"type": "response.create", "response": {"instructions": "Answer in French.", "conversation": "auto",
                                             "tools": [], "tool_choice": "none", "max_output_tokens": "inf",
                                             "audio": {"output": {"voice": "fast"}}}},
    {"type": "conversation.item.retrieve", "item_id": "item_1"},
    {"type": "conversation.item.delete", "item_id": "item_1"},
    {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 1500},
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside ``value`` (containers and leaves)."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = new
    return copy


def _parse(raw: str, settings_: p.SessionSettings | None = None) -> None:
    try:
        event = p.parse_client_event(raw, settings_ or p.SessionSettings())
    except p.ProtocolError as exc:
        assert isinstance(exc.code, str) and exc.code and isinstance(exc.message, str)
        # The error is echoed to the client: it must serialise as UTF-8 JSON.
        json.dumps(p.error_event(exc), ensure_ascii=False).encode("utf-8")
        return
    assert isinstance(event, p.ClientEvent)
    # What a valid event carries is echoed (items, instructions, ids): it must be encodable as UTF-8.
    for value in (getattr(event, name, None) for name in ("event_id", "item_id", "text", "response_id")):
        assert value is None or isinstance(value, str) and value.encode("utf-8") is not None
    if isinstance(event, p.SessionUpdate) and event.settings.instructions is not None:
        event.settings.instructions.encode("utf-8")


@FUZZ
@given(json_values)
def test_any_json_value_parses_or_is_a_protocol_error(value: Any) -> None:
    """An arbitrary JSON document (any shape, numbers, surrogates) yields an event or a ProtocolError."""
    _parse(json.dumps(value))


@FUZZ
@given(st.sampled_from(VALID), st.data(), st.sampled_from(NASTY) | json_values)
def test_valid_event_with_any_field_replaced_parses_or_is_a_protocol_error(
    event: dict[str, Any], data: st.DataObject, new: Any
) -> None:
    """A valid event with any one of its fields (or nested values) replaced by any JSON value."""
    path = data.draw(st.sampled_from(_paths(event)))
    _parse(json.dumps(_replace(event, path, new)), p.SessionSettings(turn_detection=None))


def test_every_field_of_every_event_with_each_nasty_value() -> None:
    """Exhaustively: each field (and nested value) of each valid event replaced by each of a set of hostile
    values — wrong types, huge and non-finite numbers, lone surrogates — yields an event or a ProtocolError."""
    for event in VALID:
        for path in _paths(event):
            for value in NASTY:
                for vad in (p.TurnDetection(), None):
                    _parse(json.dumps(_replace(event, path, value)), p.SessionSettings(turn_detection=vad))


@FUZZ
@given(st.sampled_from(VALID), st.dictionaries(_strings, json_values, max_size=3))
def test_valid_event_with_extra_fields_parses_or_is_a_protocol_error(event: dict[str, Any], extra: Any) -> None:
    """Unknown extra fields at the top level and inside ``session``/``item``/``response``."""
    _parse(json.dumps({**event, **extra}))
    for key in ("session", "item", "response"):
        if isinstance(event.get(key), dict):
            _parse(json.dumps({**event, key: {**event[key], **extra}}))


@FUZZ
@given(st.text(st.characters() | st.characters(categories=["Cs"]), max_size=200))
def test_any_text_parses_or_is_a_protocol_error(raw: str) -> None:
    """Raw text, JSON or not."""
    _parse(raw)


def test_known_killers_are_protocol_errors() -> None:
    """The inputs that used to close the connection: a non-list ``output_modalities``, a 5,000-digit number,
    a lone surrogate (in a value and in a key), and extreme nesting."""
    killers = [
        '{"type":"response.create","response":{"output_modalities":5}}',
        '{"type":"response.create","response":{"output_modalities":[1,{}]}}',
        '{"type":"session.update","session":{"audio":{"input":{"format":{"type":"audio/pcm","rate":'
        + "9" * 5000
        + "}}}}}",
        '{"type":"conversation.item.create","item":{"role":"user","content":[{"type":"input_text","text":"\\ud800"}]}}',
        '{"type":"response.create","\\udfff":1}',
        '{"type":"x","event_id":"\\ud800"}',
        "[" * 100_000 + "]" * 100_000,
    ]
    for raw in killers:
        try:
            p.parse_client_event(raw, p.SessionSettings())
        except p.ProtocolError:
            continue
        raise AssertionError(f"parsed: {raw[:80]}")


def test_server_events_always_serialise_as_utf8() -> None:
    """The writer's second line of defence: an event holding an unpaired surrogate is sent ASCII-escaped, not
    dropped with the connection (WebSocket and WebRTC data channel alike); ordinary non-ASCII text is sent as is."""
    assert p.serialize_event({"text": "héllo 😀"}) == '{"text": "héllo 😀"}'
    escaped = p.serialize_event({"text": "a\ud800b"})
    escaped.encode("utf-8")
    assert json.loads(escaped) == {"text": "a\ud800b"}
