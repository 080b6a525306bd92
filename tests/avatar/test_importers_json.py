"""JSON exports: Telegram result.json, Facebook/Instagram messages and posts, X tweets.js, generic JSON."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from tests.avatar import import_fixtures as fx
from voice_server.avatar.importers import (
    ImportedMessage,
    ImportFormatError,
    Me,
    Skipped,
    generic,
    meta,
    telegram,
    twitter,
)


def _bytes(obj: object) -> io.BytesIO:
    return io.BytesIO(json.dumps(obj, ensure_ascii=False, indent=1).encode())


def _messages(records: object) -> list[ImportedMessage]:
    return [r for r in records if isinstance(r, ImportedMessage)]  # type: ignore[attr-defined]


def test_telegram_single_chat_flattens_entities_and_maps_media() -> None:
    """A one-chat result.json: entity-list text flattened, service skipped, voice/photo kinds, deleted sender."""
    records = list(telegram.parse(_bytes(fx.telegram_single_chat()), me=Me.of("Bea")))
    assert records[0] == Skipped(0, "system")
    ana, bea_link, bea_voice, deleted, photo = _messages(records)
    assert ana == ImportedMessage(
        "telegram", "Ana Souza", "Ana Souza", datetime(2023, 1, 15, 13, 31, tzinfo=UTC), "Olá 😀\nsecond line",
        False, None, 1,
    )
    assert (bea_link.text, bea_link.is_user) == ("see this → https://x.org", True)
    assert (bea_voice.attachment, bea_voice.text) == ("voice", "")
    assert deleted.sender == "Deleted Account"
    assert photo.attachment == "image"


def test_telegram_full_export_names_chats_and_finds_the_user_by_id() -> None:
    """chats.list and left_chats.list: messages carry their chat's name; personal_information.user_id marks
    the user's messages."""
    records = _messages(telegram.parse(_bytes(fx.telegram_full_export())))
    assert [(m.conversation, m.sender, m.is_user) for m in records][-4:] == [
        ("Ana Souza", "Ana Souza", False),
        ("Climbing 🧗", "Bea", True),
        ("Climbing 🧗", "Carl", False),
        ("Old job", "Bea", True),
    ]
    assert [m.where for m in records] == sorted(m.where for m in records)


def test_telegram_json_that_is_not_an_export_is_rejected() -> None:
    """Valid JSON with neither "messages" nor "chats" at the top is an ImportFormatError naming the problem."""
    with pytest.raises(ImportFormatError, match="not a Telegram export"):
        telegram.parse(_bytes({"hello": [1, 2, 3]}))


def test_telegram_malformed_records_are_skipped_not_fatal() -> None:
    """A message that is a number or has a non-string sender is skipped as bad_record; the rest is read."""
    chat = {"name": "x", "type": "personal_chat", "id": 1, "messages": [
        7, {"id": 2, "type": "message", "from": 5, "text": "x"},
        {"id": 3, "type": "message", "from": "Ana", "text": [{"type": "bold"}]},
        {"id": 4, "type": "message", "from": "Ana", "text": "ok", "date": "2023-01-01T10:00:00"},
    ]}
    records = list(telegram.parse(_bytes(chat)))
    assert records[:3] == [Skipped(0, "bad_record"), Skipped(1, "bad_record"), Skipped(2, "bad_record")]
    assert _messages(records)[0].at == datetime(2023, 1, 1, 10, 0)  # no unixtime: naive local `date`


def _truncated(obj: object) -> bytes:
    data = json.dumps(obj, ensure_ascii=False).encode()
    return data[: len(data) * 2 // 3]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_truncated(fx.telegram_full_export()), "the JSON is truncated"),
        (b'{"name": "x", "messages": [{"from": "Ana", "text": "caf\xe9"}]}', "the JSON is damaged"),
        (b'{"messages": []} trailing', "the JSON is damaged"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not JSON"),
        (b"", "empty"),
        ("{}".encode("utf-16"), "UTF-16"),
    ],
)
def test_malformed_json_raises_before_any_record(data: bytes, message: str) -> None:
    """Truncated JSON, Latin-1 bytes, trailing junk, binary, empty, UTF-16: the parse call raises clearly."""
    with pytest.raises(ImportFormatError, match=message):
        telegram.parse(io.BytesIO(data))


def test_truncated_file_with_good_records_first_still_yields_nothing() -> None:
    """Thousands of good messages before the cut do not leak out: validation reads the whole file first."""
    chat = {"name": "x", "type": "personal_chat", "id": 1,
            "messages": [{"id": i, "type": "message", "from": "Ana", "text": "hi"} for i in range(5000)]}
    data = json.dumps(chat).encode()[:-40]
    yielded: list[object] = []
    with pytest.raises(ImportFormatError, match="truncated"):
        yielded.extend(telegram.parse(io.BytesIO(data)))
    assert yielded == []


def test_facebook_thread_fixes_mojibake_and_skips_unsent_and_calls() -> None:
    """message_1.json: Latin-1 mojibake decoded, title found after the messages, unsent/call skipped, share kept."""
    records = list(meta.parse_messages(_bytes(fx.facebook_thread()), me=Me.of("Zoë Lima")))
    assert [r for r in records if isinstance(r, Skipped)] == [Skipped(2, "deleted"), Skipped(3, "system")]
    cafe, photo, share = _messages(records)
    assert cafe == ImportedMessage(
        "facebook", "Ana Souza", "Zoë Lima", datetime(2023, 1, 15, 13, 35, tzinfo=UTC), "Café amanhã? 😀", True,
        None, 0,
    )
    assert (photo.attachment, photo.text) == ("image", "")
    assert share.text == "look\nhttps://example.org/post"


def test_fix_mojibake_leaves_real_text_alone() -> None:
    """Text that is already proper unicode (or plain Latin-1 that is not UTF-8) comes back unchanged."""
    assert meta.fix_mojibake(fx.mojibake("Zoë 😀")) == "Zoë 😀"
    assert meta.fix_mojibake("Zoë 😀") == "Zoë 😀"
    assert meta.fix_mojibake("Zoë") == "Zoë"


def test_instagram_thread_path_sets_the_source() -> None:
    """A path under your_instagram_activity makes the records' source "instagram"."""
    assert meta.source_of("your_instagram_activity/messages/inbox/ana_1/message_1.json") == "instagram"
    records = _messages(meta.parse_messages(_bytes(fx.facebook_thread()), source="instagram"))
    assert {m.source for m in records} == {"instagram"}


def test_facebook_and_instagram_posts_are_the_users_with_captions_and_media() -> None:
    """your_posts_1.json and posts_1.json: post text or caption, media kind, empty shares skipped."""
    fb = list(meta.parse_posts(_bytes(fx.facebook_posts()), author="Zoë"))
    assert fb[2] == Skipped(2, "empty")
    status, sunset = _messages(fb)
    assert (status.text, status.sender, status.is_user, status.conversation) == (
        "Back in Porto ❤️",
        "Zoë",
        True,
        "posts",
    )
    assert (sunset.attachment, sunset.at) == ("image", datetime(2023, 1, 15, 13, 31, 40, tzinfo=UTC))
    caption, video = _messages(meta.parse_posts(_bytes(fx.instagram_posts()), source="instagram"))
    assert (caption.text, caption.attachment, video.attachment, video.text) == ("Açaí 🍇", "image", "video", "")


def test_posts_wrapped_in_an_object_are_found() -> None:
    """Older exports wrap the posts array in {"status_updates_v2": [...]}; it is read the same."""
    (post,) = _messages(meta.parse_posts(_bytes({"status_updates_v2": fx.facebook_posts()[:1]})))
    assert post.text == "Back in Porto ❤️"


def test_meta_message_file_without_messages_is_rejected() -> None:
    """A posts file handed to the message parser is an ImportFormatError, not an empty import."""
    with pytest.raises(ImportFormatError, match='no top-level "messages" array'):
        meta.parse_messages(_bytes(fx.facebook_posts()))


def test_tweets_js_prefix_escapes_links_media_and_retweets() -> None:
    """tweets.js: window.YTD prefix skipped, &amp; unescaped, t.co expanded, media link removed, RT skipped."""
    records = list(twitter.parse(io.BytesIO(fx.tweets_js().encode())))
    tea, view = _messages(records)
    assert records[2] == Skipped(2, "retweet")
    assert (tea.text, tea.at) == ("Tea & toast <3 https://blog.example/tea", datetime(2023, 1, 18, 9, 0, tzinfo=UTC))
    assert (view.text, view.attachment, view.at) == ("view 🌄", "image", datetime(2023, 1, 18, 1, 30, tzinfo=UTC))


def test_tweets_js_without_the_prefix_or_truncated_is_rejected() -> None:
    """Plain JSON handed to the X parser, or a cut tweets.js, raise ImportFormatError."""
    with pytest.raises(ImportFormatError, match="window.YTD"):
        twitter.parse(io.BytesIO(b"[]"))
    with pytest.raises(ImportFormatError, match="truncated"):
        twitter.parse(io.BytesIO(fx.tweets_js().encode()[:-30]))


def test_generic_json_array_reads_documented_fields() -> None:
    """Generic JSON array: aware, naive and Unix `at`; conversation/attachment; bad shapes and dates skipped."""
    data = [
        {"sender": "me", "at": "2023-01-15T14:30:05+01:00", "text": "Landed 🛬", "conversation": "Ana"},
        {"sender": "Ana", "at": 1673793065, "text": "Welcome!\nDinner?"},
        {"sender": "Ana", "at": "2023-01-15 20:00", "text": "", "attachment": "image"},
        {"sender": "Ana", "at": "yesterday", "text": "x"},
        {"sender": "", "text": "x"},
        {"sender": "Ana", "text": 5},
        {"sender": "Ana", "text": "x", "attachment": "hologram"},
        "not an object",
    ]
    records = list(generic.parse(_bytes(data), me=Me.of("me")))
    landed, welcome, image = _messages(records)
    assert (landed.at, landed.is_user, landed.conversation) == (
        datetime(2023, 1, 15, 13, 30, 5, tzinfo=UTC),
        True,
        "Ana",
    )
    assert welcome.at == datetime.fromtimestamp(1673793065, UTC) and welcome.text == "Welcome!\nDinner?"
    assert (image.at, image.attachment) == (datetime(2023, 1, 15, 20, 0), "image")
    assert [r for r in records if isinstance(r, Skipped)] == [
        Skipped(3, "bad_date"), Skipped(4, "bad_record"), Skipped(5, "bad_record"), Skipped(6, "bad_record"),
        Skipped(7, "bad_record"),
    ]


def test_generic_file_starting_with_a_brace_must_be_json_lines() -> None:
    """A generic file starting with `{` is JSON Lines; a first line that is not one object is rejected."""
    with pytest.raises(ImportFormatError, match="JSON Lines"):
        generic.parse(io.BytesIO(b'{"sender": "a", "text": "b"} x\n{"sender": 1\n'))
