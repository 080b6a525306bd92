"""Realistic export files for the importer tests, generated (no personal data checked in).

Each builder returns the file's bytes exactly as the app writes them (BOMs, U+200E marks, U+202F before
AM/PM, Meta's mojibake, Twitter's ``window.YTD`` prefix). The `*_stream` builders write a large export
to a path chunk by chunk, so the tests that measure memory never hold the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

LRM = "\u200e"
NNBSP = "\u202f"

WHATSAPP_IOS_12H = (
    "\ufeff"
    f"[1/15/23, 2:30:05{NNBSP}PM] Family 🏡: {LRM}Messages and calls are end-to-end encrypted. No one outside of "
    "this chat, not even WhatsApp, can read or listen to them.\n"
    f"{LRM}[1/15/23, 2:30:06{NNBSP}PM] Family 🏡: {LRM}Ana added Bob\n"
    f"[1/15/23, 2:31:00{NNBSP}PM] Ana Souza: Olá! Landed in Porto 🛬\n"
    "Dinner at 8?\n"
    "\n"
    "Bring the 🍷\n"
    f"[1/15/23, 2:32:10{NNBSP}PM] Bob: {LRM}image omitted\n"
    f"{LRM}[1/15/23, 2:33:00{NNBSP}PM] Bob: {LRM}<attached: 00000012-PHOTO-2023-01-15-14-33-00.jpg>\n"
    f"[1/15/23, 11:59:59{NNBSP}PM] Bob: see you tomorrow <This message was edited>\n"
    f"[1/16/23, 12:00:01{NNBSP}AM] Ana Souza: {LRM}This message was deleted\n"
    f"[1/16/23, 12:15:00{NNBSP}PM] Ana Souza: noon ☀️ — שלום {LRM}עולם{LRM}\n"
    f"[1/16/23, 12:16:00{NNBSP}PM] Bob: {LRM}audio omitted\n"
)

WHATSAPP_ANDROID_24H = (
    "15/01/2023, 14:30 - Messages and calls are end-to-end encrypted. No one outside of this chat, not even "
    "WhatsApp, can read or listen to them. Tap to learn more.\n"
    '15/01/2023, 14:30 - Ana created group "Trip 2023"\n'
    "15/01/2023, 14:31 - Ana: Hi all 👋\n"
    "15/01/2023, 14:31 - Carlos joined using this group's invite link\n"
    "15/01/2023, 14:32 - Carlos: first line\n"
    "second line: with a colon\n"
    "03/02/2023, 09:05 - Me Myself: <Media omitted>\n"
    "03/02/2023, 09:06 - Me Myself: IMG-20230203-WA0001.jpg (file attached)\n"
    "the view from the hotel\n"
    "03/02/2023, 09:07 - Me Myself: You deleted this message\n"
    "03/02/2023, 09:08 - Ana: null\n"
    "31/02/2023, 09:09 - Ana: impossible date\n"
    "04/02/2023, 21:00 - Me Myself: location: https://maps.google.com/?q=41.1,-8.6\n"
)


def whatsapp_android_12h(day_first: bool) -> str:
    """An Android 12 h chat over March and April 2024 whose every date is ambiguous (day ≤ 12).

    Only one reading runs forward in time: read the other way, 12/3 → 1/4 jumps back from December to January.
    """
    rows = []
    for month in (3, 4):
        for day in range(1, 13):
            d, m = (day, month) if day_first else (month, day)
            rows.append(f"{d}/{m}/24, 9:0{day % 10}{NNBSP}am - Ana: day {day}\n")
    return "".join(rows)


def telegram_single_chat() -> dict[str, object]:
    """A one-chat ``result.json``: string and entity-list texts, a service line, media, a deleted sender."""
    return {
        "name": "Ana Souza",
        "type": "personal_chat",
        "id": 4821,
        "messages": [
            {"id": 1, "type": "service", "date": "2023-01-15T14:30:00", "date_unixtime": "1673789400",
             "actor": "Ana Souza", "actor_id": "user7", "action": "phone_call", "text": "", "text_entities": []},
            {"id": 2, "type": "message", "date": "2023-01-15T14:31:00", "date_unixtime": "1673789460",
             "from": "Ana Souza", "from_id": "user7", "text": "Olá 😀\nsecond line", "text_entities": []},
            {"id": 3, "type": "message", "date": "2023-01-15T14:32:00", "date_unixtime": "1673789520",
             "from": "Bea", "from_id": "user42",
             "text": ["see ", {"type": "bold", "text": "this"}, " → ", {"type": "link", "text": "https://x.org"}],
             "text_entities": []},
            {"id": 4, "type": "message", "date": "2023-01-15T14:33:00", "date_unixtime": "1673789580",
             "from": "Bea", "from_id": "user42", "file": "voice_messages/audio_1.ogg",
             "media_type": "voice_message", "duration_seconds": 3, "text": "", "text_entities": []},
            {"id": 5, "type": "message", "date": "2023-01-15T14:34:00", "date_unixtime": "1673789640",
             "from": None, "from_id": "user99", "text": "I left", "text_entities": []},
            {"id": 6, "type": "message", "date": "2023-01-15T14:35:00", "date_unixtime": "1673789700",
             "from": "Ana Souza", "from_id": "user7", "photo": "photos/photo_1.jpg", "width": 1, "height": 1,
             "text": "", "text_entities": []},
        ],
    }


def telegram_full_export() -> dict[str, object]:
    """A full "Export Telegram data" with two chats and the user's own id in ``personal_information``."""
    chat = telegram_single_chat()
    other = {
        "name": "Climbing 🧗",
        "type": "private_group",
        "id": 77,
        "messages": [
            {"id": 10, "type": "message", "date": "2023-02-01T08:00:00", "date_unixtime": "1675238400",
             "from": "Bea", "from_id": "user42", "text": "Saturday?", "text_entities": []},
            {"id": 11, "type": "message", "date": "2023-02-01T08:01:00", "date_unixtime": "1675238460",
             "from": "Carl", "from_id": "user5", "text": "in!", "text_entities": []},
        ],
    }
    return {
        "about": "Here is the data you requested.",
        "personal_information": {"user_id": 42, "first_name": "Bea", "last_name": "", "phone_number": "+1"},
        "contacts": {"about": "", "list": [{"first_name": "Ana", "last_name": "Souza", "phone_number": "+2"}]},
        "chats": {"about": "", "list": [chat, other]},
        "left_chats": {
            "about": "",
            "list": [
                {"name": "Old job", "type": "private_supergroup", "id": 9, "messages": [
                    {"id": 1, "type": "message", "date": "2020-05-01T09:00:00", "date_unixtime": "1588323600",
                     "from": "Bea", "from_id": "user42", "text": "bye all 👋", "text_entities": []}]},
            ],
        },
    }


def mojibake(text: str) -> str:
    """What Meta writes for ``text``: its UTF-8 bytes as Latin-1 characters."""
    return text.encode("utf-8").decode("latin-1")


def facebook_thread() -> dict[str, object]:
    """``messages/inbox/ana_123/message_1.json``: newest first, mojibake, unsent, call, photo, share."""
    return {
        "participants": [{"name": mojibake("Ana Souza")}, {"name": mojibake("Zoë Lima")}],
        "messages": [
            {"sender_name": mojibake("Zoë Lima"), "timestamp_ms": 1673789700000,
             "content": mojibake("Café amanhã? 😀"), "is_geoblocked_for_viewer": False},
            {"sender_name": "Ana Souza", "timestamp_ms": 1673789640000, "content": "Ana Souza sent a photo.",
             "photos": [{"uri": "messages/inbox/ana_123/photos/1.jpg", "creation_timestamp": 1673789640}]},
            {"sender_name": "Ana Souza", "timestamp_ms": 1673789600000, "content": "", "is_unsent": True},
            {"sender_name": "Ana Souza", "timestamp_ms": 1673789500000, "content": "Ana called you.",
             "call_duration": 65},
            {"sender_name": mojibake("Zoë Lima"), "timestamp_ms": 1673789400000, "content": "look",
             "share": {"link": "https://example.org/post"}},
        ],
        "title": mojibake("Ana Souza"),
        "is_still_participant": True,
        "thread_path": "inbox/ana_123",
    }


def facebook_posts() -> list[object]:
    """``your_posts_1.json``: a status, a photo post with a caption, an empty share."""
    return [
        {"timestamp": 1673789400, "data": [{"post": mojibake("Back in Porto ❤️")}, {"update_timestamp": 1}],
         "title": "Zoë Lima updated her status."},
        {"timestamp": 1673789500, "attachments": [{"data": [{"media": {"uri": "photos/1.jpg"}}]}],
         "data": [{"post": "Sunset"}]},
        {"timestamp": 1673789600, "data": [{"update_timestamp": 1673789600}], "title": "Zoë shared a memory."},
    ]


def instagram_posts() -> list[object]:
    """Instagram ``posts_1.json``: captions on the media, a video."""
    return [
        {"media": [{"uri": "media/posts/1.jpg", "creation_timestamp": 1673789400, "title": mojibake("Açaí 🍇")}]},
        {"media": [{"uri": "media/posts/2.mp4", "creation_timestamp": 1673789500, "title": ""}]},
    ]


def tweets_js() -> str:
    """``data/tweets.js`` with HTML-escaped text, a t.co link, media and a retweet."""
    tweets = [
        {"tweet": {"id_str": "3", "created_at": "Wed Jan 18 09:00:00 +0000 2023",
                   "full_text": "Tea &amp; toast &lt;3 https://t.co/abc",
                   "entities": {"urls": [{"url": "https://t.co/abc", "expanded_url": "https://blog.example/tea"}]}}},
        {"tweet": {"id_str": "2", "created_at": "Tue Jan 17 23:30:00 -0200 2023",
                   "full_text": "view 🌄 https://t.co/pic",
                   "entities": {"media": [{"url": "https://t.co/pic", "type": "photo"}]},
                   "extended_entities": {"media": [{"url": "https://t.co/pic", "type": "photo"}]}}},
        {"tweet": {"id_str": "1", "created_at": "Mon Jan 16 10:00:00 +0000 2023",
                   "full_text": "RT @someone: not my words"}},
    ]
    return "window.YTD.tweets.part0 = " + json.dumps(tweets, indent=2, ensure_ascii=False)


NOTES_MD = """---
tags: [journal]
---
Loose thoughts before any heading.

# 2023-01-15 Porto
Walked along the Douro 🌊.
Ate *francesinha*.

```python
# not a heading: code
print("hi")
```

## Later that day
Still the same note at split level 1.

# Ideas
- learn to surf
#not-a-heading-hashtag
"""

SENDERS = ("Ana Souza", "Me Myself", "Carlos 🎸", "Zoë")
PHRASES = (
    "Bom dia! ☀️ How did the interview go?",
    "ok",
    "Haha 😂😂 that's hilarious",
    "Let me check my calendar and I'll get back to you about Saturday's climb",
    "שלום, מה שלומך?",
)


def whatsapp_android_stream(path: Path, messages: int) -> int:
    """Write a ``messages``-line Android 24 h export (every 10th message has a second line); return its size."""
    start = datetime(2019, 1, 1, 8, 0)
    with path.open("w", encoding="utf-8") as out:
        for i in range(messages):
            at = start + timedelta(minutes=7 * i)
            body = PHRASES[i % len(PHRASES)] + (f"\nline two of #{i}" if i % 10 == 0 else "")
            out.write(f"{at:%d/%m/%Y, %H:%M} - {SENDERS[i % len(SENDERS)]}: {body}\n")
    return path.stat().st_size


def _telegram_messages(messages: int) -> Iterator[str]:
    start = datetime(2019, 1, 1, 8, 0, tzinfo=UTC)
    for i in range(messages):
        at = start + timedelta(minutes=7 * i)
        text: object = PHRASES[i % len(PHRASES)]
        if i % 5 == 0:
            text = ["see ", {"type": "bold", "text": f"#{i}"}, " ", {"type": "link", "text": "https://x.org"}]
        yield json.dumps(
            {"id": i, "type": "message", "date": at.replace(tzinfo=None).isoformat(),
             "date_unixtime": str(int(at.timestamp())), "from": SENDERS[i % len(SENDERS)],
             "from_id": f"user{i % len(SENDERS)}", "text": text, "text_entities": []},
            ensure_ascii=False,
        )


def telegram_stream(path: Path, messages: int) -> int:
    """Write a single-chat ``result.json`` with ``messages`` messages, streamed; return its size."""
    with path.open("w", encoding="utf-8") as out:
        out.write('{\n "name": "Big chat",\n "type": "private_group",\n "id": 1,\n "messages": [\n')
        for i, line in enumerate(_telegram_messages(messages)):
            out.write(("  " if i == 0 else ",\n  ") + line)
        out.write("\n ]\n}\n")
    return path.stat().st_size
