"""Telegram Desktop "Export chat history" / "Export Telegram data" ``result.json``, machine-readable JSON.

Two shapes, both streamed (one message object built at a time, ijson events otherwise):

* a single chat: ``{"name", "type", "id", "messages": [...]}``;
* a full export: ``{"personal_information": {"user_id", ...}, ..., "chats": {"list": [{"name", ...,
  "messages": [...]}, ...]}, "left_chats": {"list": [...]}}``. Its ``personal_information.user_id`` names the
  user, so ``from_id == "user<id>"`` marks their messages even when ``me`` is not given.

A message's ``text`` is a string or a list of strings and entity objects (``{"type": "bold", "text": …}``);
both are flattened to plain text. ``at`` is aware UTC from ``date_unixtime`` (naive local ``date`` in exports
older than 2021 that lack it). ``type: "service"`` messages (joins, pins, calls) are skipped as ``system``;
media (``photo``, ``media_type`` voice/video/sticker/animation, ``file``, contacts, locations, polls) set
``attachment``. A message from a deleted account (``from: null``) is sent by "Deleted Account". A message
object over the record bounds (`records.MAX_RECORD_EVENTS` / `MAX_RECORD_CHARS`) is skipped as ``too_large``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any

from voice_server.avatar.importers._io import OVERSIZED, BoundedRecord, check_json, json_events
from voice_server.avatar.importers.records import (
    NOBODY,
    Attachment,
    ImportedMessage,
    ImportFormatError,
    Me,
    Record,
    Skipped,
    clean_name,
    clean_text,
)

_CHAT_PREFIXES = ("chats.list.item", "left_chats.list.item")
_MESSAGES = frozenset({"messages.item", *(f"{p}.messages.item" for p in _CHAT_PREFIXES)})
_NAMES = frozenset({"name", *(f"{p}.name" for p in _CHAT_PREFIXES)})
_MEDIA: dict[str, Attachment] = {
    "voice_message": "voice", "video_message": "video", "video_file": "video", "audio_file": "audio",
    "sticker": "sticker", "animation": "gif",
}
_KEYED: tuple[tuple[str, Attachment], ...] = (
    ("photo", "image"), ("contact_information", "contact"), ("location_information", "location"),
    ("place_name", "location"), ("poll", "other"), ("file", "document"),
)


def parse(f: IO[bytes], *, me: Me = NOBODY) -> Iterator[Record]:
    """Yield every chat's messages and skips in file order; ``conversation`` is the chat's name.

    The whole document is validated first, so `ImportFormatError` (truncated, not UTF-8, not JSON, not a
    Telegram export) comes before any record. ``where`` counts messages across the file from 0.

    Args:
        f: ``result.json``, binary and seekable; left open.
        me: the user's names or ``user<id>``; a full export's own ``user_id`` is added to it.
    """
    offset = check_json(f)
    user_id = _probe(f, offset)
    if user_id is not None:
        me = Me(me.names | {f"user{user_id}"})
    return _messages(f, offset, me)


def _probe(f: IO[bytes], offset: int) -> int | None:
    """Check the top level is a Telegram export; return the exporting user's id when it says."""
    user_id: int | None = None
    for prefix, event, value in json_events(f, offset):
        if prefix == "" and event not in ("start_map", "map_key"):
            break
        if prefix == "personal_information.user_id" and event == "number":
            user_id = int(value)
        if prefix == "" and event == "map_key" and value in ("messages", "chats"):
            return user_id
    raise ImportFormatError('not a Telegram export: no top-level "messages" or "chats" (export as JSON)')


def _messages(f: IO[bytes], offset: int, me: Me) -> Iterator[Record]:
    chat = ""
    index = 0
    builder: BoundedRecord | None = None
    for prefix, event, value in json_events(f, offset):
        if builder is not None:
            if builder.feed(event, value):
                yield _record(index, chat, builder.value, me)
                index += 1
                builder = None
            continue
        if prefix in _MESSAGES:
            if event in ("start_map", "start_array"):
                builder = BoundedRecord()
                builder.feed(event, value)
            elif event not in ("end_array",):
                yield Skipped(index, "bad_record")  # a scalar where a message object should be
                index += 1
        elif prefix in _NAMES and event in ("string", "null"):
            chat = clean_name(value or "")
        elif prefix in _CHAT_PREFIXES and event == "start_map":
            chat = ""


def flatten_text(text: Any) -> str | None:
    """Telegram's ``text`` (a string, or a list of strings and ``{"text": …}`` entities) as plain text."""
    if isinstance(text, str):
        return text
    if isinstance(text, list):
        parts: list[str] = []
        for part in text:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                return None
        return "".join(parts)
    return None


def _record(index: int, chat: str, msg: Any, me: Me) -> Record:
    if msg is OVERSIZED:
        return Skipped(index, "too_large")
    if not isinstance(msg, dict):
        return Skipped(index, "bad_record")
    if msg.get("type") == "service":
        return Skipped(index, "system")
    text = flatten_text(msg.get("text", ""))
    sender = msg.get("from") if "from" in msg else None
    if sender is None and "from_id" in msg:
        sender = "Deleted Account"
    if msg.get("type", "message") != "message" or text is None or not isinstance(sender, str):
        return Skipped(index, "bad_record")
    at = _timestamp(msg)
    attachment = _attachment(msg)
    text = clean_text(text)
    if not text and attachment is None:
        return Skipped(index, "empty")
    from_id = msg.get("from_id") if isinstance(msg.get("from_id"), str) else None
    name = clean_name(sender)
    return ImportedMessage("telegram", chat, name, at, text, me.matches(name, from_id), attachment, index)


def _timestamp(msg: dict[str, Any]) -> datetime | None:
    try:
        if (unix := msg.get("date_unixtime")) is not None:
            return datetime.fromtimestamp(int(unix), UTC)
        if isinstance(date := msg.get("date"), str):
            return datetime.fromisoformat(date)
    except (ValueError, OverflowError, OSError):
        pass
    return None


def _attachment(msg: dict[str, Any]) -> Attachment | None:
    media = msg.get("media_type")
    if isinstance(media, str):
        return _MEDIA.get(media, "other")
    return next((kind for key, kind in _KEYED if key in msg), None)
