"""The OpenAI Realtime event subset Soma speaks, as a sans-I/O parser and event builders.

`parse_client_event` turns one WebSocket text message into a typed command or raises `ProtocolError` with
the code and message the client will see in an ``error`` event; it never touches sockets or the session. It
is total: any text, and any JSON value in any field, gives an event or a `ProtocolError`, nothing else
(``tests/server/test_realtime_fuzz.py`` checks this with generated input). Strings with an unpaired UTF-16
surrogate (``"\\ud800"``, valid JSON but not Unicode) are refused wherever they are, since the text would be
echoed back and cannot be encoded as UTF-8.
Shapes follow the GA protocol as typed by the installed ``openai`` SDK (``openai.types.realtime``).

Supported client events: ``session.update``, ``input_audio_buffer.append|commit|clear``,
``conversation.item.create`` (user text messages), ``conversation.item.retrieve|delete|truncate``,
``response.create`` (with per-response ``instructions`` and ``metadata``), ``response.cancel``. Known OpenAI
events outside the subset get ``unsupported_event``; anything else ``unknown_event``. A field Soma cannot
honour is refused at once with ``unsupported_parameter``, never ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.frames import Pcm, TokenUsage
from voice_server.realtime.turn_detection import TurnDetection, TurnDetectionError, parse_turn_detection

MAX_MESSAGE_CHARS = 4_000  # a typed message (the session's own cap, so what is sent is what is answered)
MAX_INSTRUCTIONS_CHARS = 32_000
INPUT_RATES = (8_000, 16_000, 24_000, 48_000)  # audio/pcm rates accepted for input (resampled at the edge)
OUTPUT_RATE = 24_000  # the protocol's output rate
AVATAR_VOICE = "avatar"
VOICES = (AVATAR_VOICE, "fast", "quality")  # the person's chosen voice, stock Piper (low latency), stock Kokoro

SUPPORTED = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.delete",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
    }
)
# Real OpenAI client events that Soma does not implement: named as such, not as garbage.
KNOWN_UNSUPPORTED = frozenset(
    {
        "output_audio_buffer.clear",
        "transcription_session.update",
    }
)


class ProtocolError(Exception):
    """A client event that cannot be applied. The connection stays usable.

    Attributes:
        code: Stable machine-readable code (``invalid_json``, ``unknown_event``…).
        message: What was wrong, for a person.
        event_id: The offending client event's id, when it had one.
        param: The offending field, when one is to blame.
    """

    def __init__(self, code: str, message: str, *, event_id: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id
        self.param = param


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the client configured (``session.update``), with OpenAI's defaults.

    Attributes:
        output_modalities: ``("audio",)`` (speech plus its transcript) or ``("text",)``.
        instructions: Replaces the avatar's persona when set.
        input_rate: Sample rate of appended pcm16 audio.
        voice: ``avatar`` (the voice the avatar's person chose; the default), ``fast`` or ``quality``.
        turn_detection: How the server detects turns (and replies by itself); ``None``: the client commits.
    """

    output_modalities: tuple[str, ...] = ("audio",)
    instructions: str | None = None
    input_rate: int = 24_000
    voice: str = AVATAR_VOICE
    turn_detection: TurnDetection | None = field(default_factory=TurnDetection)

    @property
    def audio_out(self) -> bool:
        return "audio" in self.output_modalities

    @property
    def server_vad(self) -> bool:
        """The server detects the end of each turn (``False``: the client commits audio)."""
        return self.turn_detection is not None


# ----------------------------------------------------------------------------------------- client events


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    event_id: str | None
    settings: SessionSettings


@dataclass(frozen=True, slots=True, eq=False)
class AudioAppend:
    event_id: str | None
    pcm: Pcm  # int16 mono at the session's input rate


@dataclass(frozen=True, slots=True)
class AudioCommit:
    event_id: str | None


@dataclass(frozen=True, slots=True)
class AudioClear:
    event_id: str | None


@dataclass(frozen=True, slots=True)
class ItemCreate:
    event_id: str | None
    item_id: str
    text: str


@dataclass(frozen=True, slots=True)
class ResponseCreate:
    event_id: str | None
    instructions: str | None = None  # replace the persona for this response only
    metadata: dict[str, str] | None = None  # echoed in the response object


@dataclass(frozen=True, slots=True)
class ItemRetrieve:
    event_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemDelete:
    event_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True)
class ItemTruncate:
    event_id: str | None
    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    event_id: str | None
    response_id: str | None


ClientEvent = (
    SessionUpdate
    | AudioAppend
    | AudioCommit
    | AudioClear
    | ItemCreate
    | ItemRetrieve
    | ItemDelete
    | ItemTruncate
    | ResponseCreate
    | ResponseCancel
)


def new_id(prefix: str) -> str:
    """An OpenAI-style id: ``item_…``, ``resp_…``, ``sess_…``."""
    return f"{prefix}_{secrets.token_hex(10)}"


def parse_client_event(raw: str, settings: SessionSettings) -> ClientEvent:
    """Parse one client message against the current session settings.

    Raises:
        ProtocolError: Invalid JSON, missing/unknown ``type``, or an invalid or unsupported field.
    """
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise ProtocolError("invalid_json", "the message is not valid JSON") from None
    except RecursionError:
        raise ProtocolError("invalid_json", "the message nests too deeply") from None
    except ValueError:  # Python's int-string conversion limit (a number of more than 4,300 digits)
        raise ProtocolError("invalid_json", "the message has a number with too many digits") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "an event must be a JSON object")
    if _SURROGATE_HINT.search(raw) and (where := _lone_surrogate(data)) is not None:
        raise ProtocolError("invalid_value", "a string contains an unpaired UTF-16 surrogate (\\ud800-\\udfff); "
                            "send valid Unicode text", param=where[:128] or None)
    event_id = data.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or len(event_id) > 128):
        raise ProtocolError("invalid_event", "event_id must be a string of at most 128 characters", param="event_id")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("missing_type", "the event has no string 'type'", event_id=event_id, param="type")
    if kind not in SUPPORTED:
        shown = kind[:64]
        if kind in KNOWN_UNSUPPORTED:
            raise ProtocolError("unsupported_event", f"{shown!r} is not supported by Soma", event_id=event_id)
        raise ProtocolError("unknown_event", f"unknown event type {shown!r}", event_id=event_id, param="type")
    try:
        event: ClientEvent = _PARSERS[kind](data, event_id, settings)
        return event
    except ProtocolError as exc:
        exc.event_id = event_id
        raise


# A lone surrogate in a parsed string comes from a \\uD8xx-\\uDFxx escape (or, from in-process callers, the raw
# character): without either in the message, the (costlier) walk over the parsed value is skipped.
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _lone_surrogate(value: Any) -> str | None:
    """The dotted path of the first key or string holding an unpaired surrogate (``""`` for the top level), or
    ``None``. Iterative: the value may nest as deeply as the JSON parser allowed."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _SURROGATE.search(node):
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                child_path = f"{path}.{key}" if path else str(key)
                if not key.isascii() and _SURROGATE.search(key):
                    return path
                stack.append((child, child_path))
        elif isinstance(node, list):
            stack.extend((child, path) for child in node)
    return None


def _session_update(data: dict[str, Any], event_id: str | None, current: SessionSettings) -> SessionUpdate:
    session = _obj(data.get("session", {}), "session")
    _refuse_unhonoured(session, "session", _SESSION_OFF)
    settings = current
    if "output_modalities" in session:
        mods = session["output_modalities"]
        if mods not in (["text"], ["audio"]):
            raise ProtocolError("invalid_value", "output_modalities must be [\"text\"] or [\"audio\"]",
                                param="session.output_modalities")
        settings = replace(settings, output_modalities=tuple(mods))
    if "instructions" in session:
        text = session["instructions"]
        if text is not None and (not isinstance(text, str) or len(text) > MAX_INSTRUCTIONS_CHARS):
            raise ProtocolError("invalid_value", f"instructions must be a string of at most {MAX_INSTRUCTIONS_CHARS} "
                                "characters", param="session.instructions")
        settings = replace(settings, instructions=text or None)
    audio = _obj(session.get("audio", {}), "session.audio")
    audio_in = _obj(audio.get("input", {}), "session.audio.input")
    audio_out = _obj(audio.get("output", {}), "session.audio.output")
    if "format" in audio_in:
        rate = _pcm_format(audio_in["format"], "session.audio.input.format")
        if rate not in INPUT_RATES:
            raise ProtocolError("unsupported_audio_format", f"input rate must be one of {INPUT_RATES}",
                                param="session.audio.input.format.rate")
        settings = replace(settings, input_rate=rate)
    if "turn_detection" in audio_in:
        try:
            settings = replace(settings, turn_detection=parse_turn_detection(audio_in["turn_detection"]))
        except TurnDetectionError as exc:
            raise ProtocolError(exc.code, exc.message, param=exc.param) from None
    if "format" in audio_out and _pcm_format(audio_out["format"], "session.audio.output.format") != OUTPUT_RATE:
        raise ProtocolError("unsupported_audio_format", f"output audio is pcm16 at {OUTPUT_RATE} Hz",
                            param="session.audio.output.format.rate")
    if "voice" in audio_out:
        voice = audio_out["voice"]
        if voice not in VOICES:
            raise ProtocolError("invalid_value", f"voice must be one of {', '.join(VOICES)}",
                                param="session.audio.output.voice")
        settings = replace(settings, voice=voice)
    return SessionUpdate(event_id, settings)


_NO_TOOLS = "avatars do not call tools"
_NO_CAP = "replies are kept short by the avatar itself"
# Settings Soma has no such thing for: the values that mean "off" (accepted: clients send defaults), and why
# any other value is refused. In a session ``tracing`` and ``truncation`` are harmless (Soma bounds the
# history itself) and ignored; a response's other fields are checked by name in `_response_create`.
_SESSION_OFF: dict[str, tuple[tuple[Any, ...], str]] = {
    "tools": ((None, []), _NO_TOOLS),
    "tool_choice": ((None, "auto", "none"), _NO_TOOLS),
    "max_output_tokens": ((None, "inf"), _NO_CAP),
    "prompt": ((None,), "stored prompts are not supported"),
    "include": ((None, []), "extra output (logprobs) is not supported"),
}
_RESPONSE_OFF: dict[str, tuple[tuple[Any, ...], str]] = {
    "tools": (([],), _NO_TOOLS),
    "tool_choice": (("auto", "none"), _NO_TOOLS),
    "max_output_tokens": (("inf",), _NO_CAP),
}


def _refuse_unhonoured(obj: dict[str, Any], where: str, offs: dict[str, tuple[tuple[Any, ...], str]]) -> None:
    """Settings Soma cannot honour are refused, not ignored: a client must not believe that tools, a token cap
    or a stored prompt are in force. Only the listed "off" values pass (compared with their type: ``0`` is
    not ``False``, ``[]`` not ``None``)."""
    for name, (off, why) in offs.items():
        if name in obj and not any(obj[name] == value and type(obj[name]) is type(value) for value in off):
            raise ProtocolError("unsupported_parameter", f"{where}.{name} is not supported by Soma: {why}",
                                param=f"{where}.{name}")


def _pcm_format(value: Any, param: str) -> int:
    fmt = _obj(value, param)
    if fmt.get("type") != "audio/pcm":
        raise ProtocolError("unsupported_audio_format", "only audio/pcm (16-bit little-endian mono) is supported",
                            param=f"{param}.type")
    rate = fmt.get("rate", 24_000)
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise ProtocolError("invalid_value", "rate must be an integer", param=f"{param}.rate")
    return rate


def _audio_append(data: dict[str, Any], event_id: str | None, settings: SessionSettings) -> AudioAppend:
    audio = data.get("audio")
    if not isinstance(audio, str) or not audio:
        raise ProtocolError("invalid_value", "audio must be a non-empty base64 string", param="audio")
    try:
        raw = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("invalid_audio", "audio is not valid base64", param="audio") from None
    if len(raw) % 2:
        raise ProtocolError("invalid_audio", "pcm16 audio must have an even number of bytes", param="audio")
    return AudioAppend(event_id, np.frombuffer(raw, "<i2").astype(np.int16))


def _item_create(data: dict[str, Any], event_id: str | None, settings: SessionSettings) -> ItemCreate:
    item = _obj(data.get("item"), "item")
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise ProtocolError("unsupported_item", "only user messages can be added (type 'message', role 'user')",
                            param="item.role")
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise ProtocolError("invalid_value", "item.content must be a non-empty list", param="item.content")
    texts = []
    for part in content:
        part = _obj(part, "item.content")
        if part.get("type") not in ("input_text", "text") or not isinstance(part.get("text"), str):
            raise ProtocolError("unsupported_content", "only input_text content parts are supported",
                                param="item.content.type")
        texts.append(part["text"])
    text = "".join(texts)
    if not text.strip():
        raise ProtocolError("invalid_value", "the message text is empty", param="item.content.text")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError("text_too_long", f"a message may have at most {MAX_MESSAGE_CHARS} characters",
                            param="item.content.text")
    item_id = item.get("id") or new_id("item")
    if not isinstance(item_id, str) or len(item_id) > 64:
        raise ProtocolError("invalid_value", "item.id must be a string of at most 64 characters", param="item.id")
    return ItemCreate(event_id, item_id, text)


def _response_create(data: dict[str, Any], event_id: str | None, settings: SessionSettings) -> ResponseCreate:
    """Per-response ``instructions`` and ``metadata`` are honoured; settings that only restate the session's
    (modalities, voice, ``conversation: "auto"``, no tools, ``max_output_tokens: "inf"``) are accepted; the
    rest (out-of-band responses, custom input, tools, prompts, other limits) is refused, never ignored."""
    response = _obj(data.get("response") or {}, "response")  # the SDK sends null for response=None
    extra = set(response) - _RESPONSE_FIELDS
    if extra:
        name = sorted(extra)[0][:64]
        raise ProtocolError("unsupported_parameter", f"response.{name} is not supported by Soma",
                            param=f"response.{name}")
    mods = response.get("output_modalities")
    if mods is not None and (not isinstance(mods, list) or not all(isinstance(m, str) for m in mods)):
        raise ProtocolError("invalid_value", "response.output_modalities must be a list of strings",
                            param="response.output_modalities")
    if mods is not None and tuple(mods) != settings.output_modalities:
        raise ProtocolError("unsupported_parameter", "per-response output_modalities must match the session's; "
                            "use session.update", param="response.output_modalities")
    if response.get("conversation", "auto") != "auto":
        raise ProtocolError("unsupported_parameter", "only conversation \"auto\" is supported: every response "
                            "joins the conversation", param="response.conversation")
    _refuse_unhonoured(response, "response", _RESPONSE_OFF)
    audio = _obj(response.get("audio", {}), "response.audio")
    voice = _obj(audio.get("output", {}), "response.audio.output").get("voice", settings.voice)
    if voice != settings.voice:
        raise ProtocolError("unsupported_parameter", "per-response voice must match the session's; use "
                            "session.update", param="response.audio.output.voice")
    instructions = response.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS_CHARS):
        raise ProtocolError("invalid_value", f"response.instructions must be a string of at most "
                            f"{MAX_INSTRUCTIONS_CHARS} characters", param="response.instructions")
    return ResponseCreate(event_id, instructions or None, _metadata(response.get("metadata")))


_RESPONSE_FIELDS = frozenset(
    {"instructions", "metadata", "conversation", "output_modalities", "tools", "tool_choice", "max_output_tokens",
     "audio"}
)


def _metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata rules: at most 16 pairs, keys up to 64 and values up to 512 characters."""
    if value is None:
        return None
    meta = _obj(value, "response.metadata")
    if len(meta) > 16 or not all(
        isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in meta.items()
    ):
        raise ProtocolError("invalid_value", "response.metadata must map at most 16 string keys (up to 64 "
                            "characters) to strings (up to 512)", param="response.metadata")
    return dict(meta)


def _item_id(data: dict[str, Any]) -> str:
    item_id = data.get("item_id")
    if not isinstance(item_id, str) or not item_id or len(item_id) > 64:
        raise ProtocolError("invalid_value", "item_id must be a string of at most 64 characters", param="item_id")
    return item_id


def _item_truncate(data: dict[str, Any], event_id: str | None, settings: SessionSettings) -> ItemTruncate:
    if data.get("content_index", 0) != 0:
        raise ProtocolError("invalid_value", "content_index must be 0 (an item has one content part)",
                            param="content_index")
    end = data.get("audio_end_ms")
    if not isinstance(end, int) or isinstance(end, bool) or not 0 <= end <= 3_600_000:
        raise ProtocolError("invalid_value", "audio_end_ms must be a whole number of milliseconds, 0 or more",
                            param="audio_end_ms")
    return ItemTruncate(event_id, _item_id(data), end)


def _response_cancel(data: dict[str, Any], event_id: str | None, settings: SessionSettings) -> ResponseCancel:
    response_id = data.get("response_id")
    if response_id is not None and not isinstance(response_id, str):
        raise ProtocolError("invalid_value", "response_id must be a string", param="response_id")
    return ResponseCancel(event_id, response_id)


def _obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("invalid_value", f"{param} must be an object", param=param)
    return value


_PARSERS: dict[str, Any] = {
    "session.update": _session_update,
    "input_audio_buffer.append": _audio_append,
    "input_audio_buffer.commit": lambda d, e, s: AudioCommit(e),
    "input_audio_buffer.clear": lambda d, e, s: AudioClear(e),
    "conversation.item.create": _item_create,
    "conversation.item.retrieve": lambda d, e, s: ItemRetrieve(e, _item_id(d)),
    "conversation.item.delete": lambda d, e, s: ItemDelete(e, _item_id(d)),
    "conversation.item.truncate": _item_truncate,
    "response.create": _response_create,
    "response.cancel": _response_cancel,
}


# ----------------------------------------------------------------------------------------- server events


@dataclass(slots=True)
class EventIds:
    """Numbers server events (``event_…``) in the order they are produced."""

    prefix: str = field(default_factory=lambda: "event_" + secrets.token_hex(4))
    n: int = 0

    def next(self) -> str:
        self.n += 1
        return f"{self.prefix}{self.n:06d}"


def session_object(session_id: str, model: str, s: SessionSettings, persona: str) -> dict[str, Any]:
    """The ``session`` of ``session.created``/``session.updated``."""
    turn_detection = s.turn_detection.as_dict() if s.turn_detection is not None else None
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": model,
        "output_modalities": list(s.output_modalities),
        "instructions": s.instructions if s.instructions is not None else persona,
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": s.input_rate},
                "turn_detection": turn_detection,
                "transcription": {"model": "whisper"},
            },
            "output": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE}, "voice": s.voice},
        },
        "tools": [],
        "tool_choice": "none",
    }


def serialize_event(event: dict[str, Any]) -> str:
    """One server event as JSON text that is always valid UTF-8, for the WebSocket and the WebRTC data channel.

    Non-ASCII text is sent as is (smaller), unless a string holds an unpaired surrogate, which UTF-8 cannot
    encode: then the event is sent ASCII-escaped (``\\ud800``) rather than failing — and with it the writer and
    the connection. The parser refuses such strings, so this is the second line of defence.
    """
    text = json.dumps(event, ensure_ascii=False)
    if text.isascii():  # audio deltas, most events: nothing to check
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(event)
    return text


def response_object(
    response_id: str,
    item_id: str,
    status: str,
    *,
    audio: bool,
    output_text: str | None,
    session_id: str,
    metadata: dict[str, str] | None,
    voice: str,
) -> dict[str, Any]:
    """A ``realtime.response``; its output item is included once there is ``output_text``."""
    output = []
    if output_text is not None:
        item_status = "completed" if status == "completed" else "incomplete"
        output.append(assistant_item(item_id, output_text, audio=audio, status=item_status))
    return {
        "id": response_id,
        "object": "realtime.response",
        "status": status,
        "output": output,
        "output_modalities": ["audio"] if audio else ["text"],
        "conversation_id": session_id,
        "metadata": metadata,
        "audio": {"output": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE}, "voice": voice}},
        "max_output_tokens": "inf",
    }


def duration_usage(seconds: float) -> dict[str, Any]:
    """A transcription's ``usage`` in the SDK's duration shape (seconds of audio transcribed)."""
    return {"type": "duration", "seconds": round(max(0.0, seconds), 3)}


def usage_object(usage: TokenUsage | None) -> dict[str, Any]:
    """``response.usage`` in OpenAI's shape. Soma's model reads and writes text (speech is transcribed before
    and synthesised after it), so every token is a text token; ``cached_tokens`` are the persona prefix's."""
    prompt, cached, out = (usage.prompt_tokens, usage.cached_tokens, usage.generated_tokens) if usage else (0, 0, 0)
    return {
        "total_tokens": prompt + out,
        "input_tokens": prompt,
        "output_tokens": out,
        "input_token_details": {
            "text_tokens": prompt,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": cached,
            "cached_tokens_details": {"text_tokens": cached, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": out, "audio_tokens": 0},
    }


def error_event(exc: ProtocolError, kind: str = "invalid_request_error") -> dict[str, Any]:
    """The ``error`` event for ``exc``; ``kind`` is ``server_error`` when the server, not the client, failed
    (the event's own ``event_id`` is added by the sender)."""
    error = {"type": kind, "code": exc.code, "message": exc.message, "param": exc.param, "event_id": exc.event_id}
    return {"type": "error", "error": error}


def user_item(item_id: str, text: str, *, audio: bool) -> dict[str, Any]:
    """A completed user message item (typed text, or the transcript of spoken audio)."""
    part = {"type": "input_audio", "transcript": text} if audio else {"type": "input_text", "text": text}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
            "content": [part]}


def assistant_item(item_id: str, text: str, *, audio: bool, status: str) -> dict[str, Any]:
    """An assistant message item; ``text`` is what was heard (audio) or sent (text)."""
    part = {"type": "output_audio", "transcript": text} if audio else {"type": "output_text", "text": text}
    return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant", "status": status,
            "content": [part] if text or status != "in_progress" else []}
