"""Facebook and Instagram "Download your information" JSON: message threads and the user's posts.

Messages — ``messages/inbox/<thread>/message_1.json`` (Facebook; Instagram's ``your_instagram_activity/
messages/inbox/…`` has the same shape)::

    {"participants": [{"name": …}], "messages": [{"sender_name", "timestamp_ms", "content", "photos",
     "videos", "audio_files", "gifs", "sticker", "files", "share", "is_unsent", "call_duration"}, …],
     "title": …}

Messages come newest first; they are yielded in file order (the job sorts if it cares). ``conversation`` is
the thread's ``title``; Meta writes it after the messages, so the validating pass (which reads the whole
file anyway) picks it up.

Posts — Facebook ``your_posts_1.json`` (an array of ``{"timestamp", "data": [{"post": …}], "attachments",
"title"}``) and Instagram ``posts_1.json`` (an array of ``{"media": [{"uri", "creation_timestamp",
"title"}], "title", "creation_timestamp"}``); an object wrapping one such array
(``{"status_updates_v2": […]}``) is accepted too. Posts are the user's (``sender`` is ``author``).

Meta writes UTF-8 text as if each byte were a Latin-1 character ("CafÃ© ð\\x9f\\x98\\x80" for "Café 😀");
`fix_mojibake` reverses that on every string, and leaves text that is not such mojibake unchanged.
Unsent messages are skipped as ``deleted``; calls, reactions-only and "X joined/left/named the group" lines
as ``system``. ``at`` is aware UTC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal

from voice_server.avatar.importers._io import OVERSIZED, check_json, json_events, json_records
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

MetaSource = Literal["facebook", "instagram"]
_MEDIA_KEYS: tuple[tuple[str, Attachment], ...] = (
    ("photos", "image"), ("videos", "video"), ("audio_files", "voice"), ("gifs", "gif"), ("sticker", "sticker"),
    ("files", "document"),
)
_VIDEO_EXT = (".mp4", ".mov", ".webm")


def source_of(path: str) -> MetaSource:
    """Which service an export path came from ("instagram" anywhere in it, else Facebook)."""
    return "instagram" if "instagram" in path.lower() else "facebook"


def fix_mojibake(text: str) -> str:
    """Undo Meta's Latin-1-escaped UTF-8 ("Ã©" → "é"); text that is not mojibake comes back unchanged."""
    if text.isascii():
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_messages(f: IO[bytes], *, me: Me = NOBODY, source: MetaSource = "facebook") -> Iterator[Record]:
    """Yield one thread file's messages and skips in file order; ``where`` is the message's index.

    Raises:
        ImportFormatError: before any record: damaged JSON, or no top-level ``messages`` array.
    """
    offset = check_json(f)
    title = _probe_messages(f, offset)
    return (_message(i, obj, title, me, source) for i, obj in enumerate(json_records(f, offset, "messages.item")))


def _probe_messages(f: IO[bytes], offset: int) -> str:
    """Check for the ``messages`` array and find the thread's ``title`` (Meta writes it *after* them)."""
    title = ""
    found = False
    events = json_events(f, offset)
    _, first, _ = next(events)
    if first == "start_map":
        for prefix, event, value in events:
            if prefix == "title" and event == "string":
                title = clean_name(fix_mojibake(value))
            elif prefix == "messages" and event == "start_array":
                found = True
    if not found:
        raise ImportFormatError('not a Facebook/Instagram message file: no top-level "messages" array')
    return title


def _message(index: int, obj: Any, title: str, me: Me, source: MetaSource) -> Record:
    if obj is OVERSIZED:
        return Skipped(index, "too_large")
    if not isinstance(obj, dict) or not isinstance(obj.get("sender_name"), str):
        return Skipped(index, "bad_record")
    if obj.get("is_unsent"):
        return Skipped(index, "deleted")
    if "call_duration" in obj or obj.get("type") in ("Call", "Subscribe", "Unsubscribe"):
        return Skipped(index, "system")
    content = obj.get("content", "")
    if not isinstance(content, str):
        return Skipped(index, "bad_record")
    text = clean_text(fix_mojibake(content))
    attachment = next((kind for key, kind in _MEDIA_KEYS if obj.get(key)), None)
    if attachment is None and isinstance(share := obj.get("share"), dict) and isinstance(share.get("link"), str):
        text = f"{text}\n{share['link']}".strip() if share["link"] not in text else text
    if attachment is not None and text.endswith(("sent a photo.", "sent a video.", "sent an attachment.")):
        text = ""  # Meta's stand-in text for a media message, not something the sender wrote
    if not text and attachment is None:
        return Skipped(index, "empty")
    at = _from_ms(obj.get("timestamp_ms"))
    name = clean_name(fix_mojibake(obj["sender_name"]))
    return ImportedMessage(source, title, name, at, text, me.matches(name), attachment, index)


def parse_posts(f: IO[bytes], *, author: str = "me", source: MetaSource = "facebook") -> Iterator[Record]:
    """Yield the user's posts in file order; ``where`` is the post's index.

    Raises:
        ImportFormatError: before any record: damaged JSON, or neither an array nor an object wrapping one.
    """
    offset = check_json(f)
    prefix = _posts_prefix(f, offset)
    return (_post(i, obj, author, source) for i, obj in enumerate(json_records(f, offset, prefix)))


def _posts_prefix(f: IO[bytes], offset: int) -> str:
    events = json_events(f, offset)
    _, first, _ = next(events)
    if first == "start_array":
        return "item"
    for prefix, event, value in events:
        if prefix == "" and event == "map_key":
            _, inner, _ = next(events)
            if inner == "start_array":
                return f"{value}.item"
            break
    raise ImportFormatError("not a Facebook/Instagram posts file: expected an array of posts")


def _post(index: int, obj: Any, author: str, source: MetaSource) -> Record:
    if obj is OVERSIZED:
        return Skipped(index, "too_large")
    if not isinstance(obj, dict):
        return Skipped(index, "bad_record")
    texts: list[str] = []
    for item in obj.get("data") or ():
        if isinstance(item, dict) and isinstance(item.get("post"), str):
            texts.append(fix_mojibake(item["post"]))
    media = [m for m in obj.get("media") or () if isinstance(m, dict)]
    if not texts:
        caption = obj.get("title") if media else None
        caption = caption or (media[0].get("title") if media else None)
        if isinstance(caption, str):
            texts.append(fix_mojibake(caption))
    uris = [m.get("uri", "") for m in media]
    for attached in obj.get("attachments") or ():
        for data in attached.get("data", ()) if isinstance(attached, dict) else ():
            if isinstance(data, dict) and isinstance(data.get("media"), dict):
                uris.append(data["media"].get("uri", ""))
    attachment: Attachment | None = None
    if uris:
        attachment = "video" if any(str(u).lower().endswith(_VIDEO_EXT) for u in uris) else "image"
    text = clean_text("\n".join(t.strip() for t in texts if t.strip()))
    if not text and attachment is None:
        return Skipped(index, "empty")
    stamp = obj.get("timestamp") or obj.get("creation_timestamp")
    stamp = stamp or (media[0].get("creation_timestamp") if media else None)
    at = _from_ms(stamp * 1000) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else None
    return ImportedMessage(source, "posts", author, at, text, True, attachment, index)


def _from_ms(ms: Any) -> datetime | None:
    if not isinstance(ms, int | float) or isinstance(ms, bool):
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None
