"""Notes, generic JSON Lines and CSV, the format sniffer, and the survey/participants entry points."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from tests.avatar import import_fixtures as fx
from voice_server.avatar import importers
from voice_server.avatar.importers import ImportedMessage, ImportFormatError, Me, Skipped, detect, generic, notes


def _messages(records: object) -> list[ImportedMessage]:
    return [r for r in records if isinstance(r, ImportedMessage)]  # type: ignore[attr-defined]


def test_markdown_splits_at_level_one_headings_and_ignores_code_and_front_matter() -> None:
    """One note per `#` heading (preamble its own note); `#` in code fences and hashtags do not split."""
    records = _messages(notes.parse(io.BytesIO(fx.NOTES_MD.encode()), title="journal", author="Zoë"))
    preamble, porto, ideas = records
    assert (preamble.text, preamble.where, preamble.at) == ("Loose thoughts before any heading.", 4, None)
    assert porto.at == datetime(2023, 1, 15) and porto.text.startswith("# 2023-01-15 Porto\nWalked along the Douro 🌊")
    assert "# not a heading: code" in porto.text and "## Later that day" in porto.text
    assert ideas.text == "# Ideas\n- learn to surf\n#not-a-heading-hashtag"
    assert {(m.sender, m.is_user, m.conversation, m.source) for m in records} == {("Zoë", True, "journal", "notes")}


def test_notes_split_level_two_and_whole_file_mode() -> None:
    """split_level=2 also splits at `##`; split_level=None keeps the file as one note."""
    by_two = _messages(notes.parse(io.BytesIO(fx.NOTES_MD.encode()), split_level=2))
    assert [m.text.split("\n", 1)[0] for m in by_two][1:] == ["# 2023-01-15 Porto", "## Later that day", "# Ideas"]
    (whole,) = _messages(notes.parse(io.BytesIO(fx.NOTES_MD.encode()), split_level=None))
    assert whole.where == 4 and whole.text.endswith("#not-a-heading-hashtag")


def test_plain_text_note_and_binary_file() -> None:
    """A plain .txt is one note; a binary file handed to the notes parser is an ImportFormatError."""
    (note,) = _messages(notes.parse(io.BytesIO("Remember: call grandma on Sunday 📞\n".encode())))
    assert note.text == "Remember: call grandma on Sunday 📞"
    with pytest.raises(ImportFormatError, match="binary data"):
        notes.parse(io.BytesIO(b"PK\x03\x04\x14\x00\x00\x00\x08\x00"))


def test_generic_jsonl_reads_lines_and_skips_broken_middle_lines() -> None:
    """JSON Lines: blank lines ignored, a broken line in the middle is a bad_record at its line number."""
    lines = [
        json.dumps({"sender": "me", "at": "2023-01-15T14:30:05Z", "text": "Landed in Porto 🛬"}, ensure_ascii=False),
        "",
        '{"sender": "Ana", "text": "cut',
        json.dumps({"sender": "Ana", "at": None, "text": "Welcome!"}),
    ]
    records = list(generic.parse(io.BytesIO("\n".join(lines).encode()), me=Me.of("me")))
    assert records[1] == Skipped(3, "bad_record")
    landed, welcome = _messages(records)
    assert (landed.at, landed.is_user, landed.where) == (datetime(2023, 1, 15, 14, 30, 5, tzinfo=UTC), True, 1)
    assert (welcome.at, welcome.where) == (None, 4)


def test_generic_jsonl_with_a_truncated_last_line_is_rejected() -> None:
    """A JSON Lines file cut mid-record (last line not an object) raises ImportFormatError, nothing yielded."""
    data = b'{"sender": "a", "at": null, "text": "ok"}\n{"sender": "b", "te'
    with pytest.raises(ImportFormatError, match="last line .*truncated"):
        generic.parse(io.BytesIO(data))


CSV = (
    "\ufeffSender,At,Text,Extra\n"
    'me,2023-01-15T14:30:05+01:00,"Landed, finally 🛬",x\n'
    'Ana,1673793065,"Welcome!\nDinner at 8?",y\n'
    "Ana,not a date,x,z\n"
    "short\n"
    "\n"
)


def test_generic_csv_header_any_case_quoted_multiline_and_short_rows() -> None:
    """CSV: BOM + case-insensitive header, extra columns ignored, quoted commas/newlines, short row skipped."""
    records = list(generic.parse(io.BytesIO(CSV.encode()), me=Me.of("ME")))
    landed, welcome = _messages(records)
    assert (landed.text, landed.is_user, landed.where) == ("Landed, finally 🛬", True, 2)
    assert (welcome.text, welcome.where) == ("Welcome!\nDinner at 8?", 4)
    assert [r for r in records if isinstance(r, Skipped)] == [Skipped(5, "bad_date"), Skipped(6, "bad_record")]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"name,when,body\nme,2023-01-01,hi\n", "missing sender, at, text"),
        (b'sender,at,text\nme,2023-01-01,"unterminated\n', "CSV line"),
        ("sender,at,text\nme,2023-01-01,café\n".encode("cp1252"), "line 2 is not UTF-8"),
    ],
)
def test_generic_csv_without_header_or_with_broken_quoting_is_rejected(data: bytes, message: str) -> None:
    """Wrong header, an unterminated quote or non-UTF-8 bytes: ImportFormatError from the parse call."""
    with pytest.raises(ImportFormatError, match=message):
        generic.parse(io.BytesIO(data))


@pytest.mark.parametrize(
    ("path", "data", "expected"),
    [
        ("WhatsApp Chat with Ana.txt", fx.WHATSAPP_IOS_12H.encode(), "whatsapp"),
        ("chat.txt", fx.WHATSAPP_ANDROID_24H.encode(), "whatsapp"),
        ("result.json", json.dumps(fx.telegram_full_export()).encode(), "telegram"),
        ("result.json", json.dumps(fx.telegram_single_chat()).encode(), "telegram"),
        ("message_1.json", json.dumps(fx.facebook_thread()).encode(), "meta_messages"),
        ("your_posts_1.json", json.dumps(fx.facebook_posts()).encode(), "meta_posts"),
        ("posts_1.json", json.dumps(fx.instagram_posts()).encode(), "meta_posts"),
        ("tweets.js", fx.tweets_js().encode(), "twitter"),
        ("export.json", b'[{"sender": "me", "at": null, "text": "hi"}]', "generic"),
        ("export.jsonl", b'{"sender": "me", "at": null, "text": "hi"}\n', "generic"),
        ("export.csv", CSV.encode(), "generic"),
        ("journal.md", fx.NOTES_MD.encode(), "notes"),
        ("Notes", "shopping: 🍞".encode("utf-16"), "notes"),
    ],
)
def test_detect_recognises_each_format_from_its_head(path: str, data: bytes, expected: str) -> None:
    """detect(path, head) names the right importer from the first HEAD_BYTES, even mid-character."""
    assert detect(path, data[: importers.HEAD_BYTES]) == expected
    assert detect(path, data[:150]) == expected  # a short head cut anywhere (here mid-way) still works


@pytest.mark.parametrize(
    ("path", "data", "message"),
    [
        ("photo.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "binary or not UTF-8"),
        ("data.json", b'{"unrelated": true}', "JSON of no known export"),
        ("data.csv", b"a,b,c\n1,2,3\n", "needs a header"),
        ("program.exe", b"MZ just text", "unrecognised file"),
    ],
)
def test_detect_rejects_what_no_importer_reads(path: str, data: bytes, message: str) -> None:
    """Images, unrelated JSON, header-less CSV and unknown files raise a clear ImportFormatError (a ZIP is a
    WhatsApp export with media now: tests/avatar/test_importers_media.py)."""
    with pytest.raises(ImportFormatError, match=message):
        detect(path, data)


def test_survey_reports_counts_skips_and_participants_for_the_ui() -> None:
    """survey(): messages, per-reason skips, time span and participants most-active first; no `me` needed."""
    report = importers.survey(
        "whatsapp", io.BytesIO(fx.WHATSAPP_ANDROID_24H.encode()), path="WhatsApp Chat with Trip.txt"
    )
    assert (report.messages, report.from_user) == (5, 0)
    assert report.skipped == {"bad_date": 1, "deleted": 1, "empty": 1, "system": 3}
    assert report.participants == (("Me Myself", 3), ("Ana", 1), ("Carlos", 1))
    assert (report.first_at, report.last_at) == (datetime(2023, 1, 15, 14, 31), datetime(2023, 2, 4, 21, 0))
    again = importers.participants("whatsapp", io.BytesIO(fx.WHATSAPP_ANDROID_24H.encode()))
    assert again == report.participants


def test_parse_dispatch_takes_names_from_the_path() -> None:
    """parse(fmt, f, path=…): WhatsApp chat name and note title from the file name, me applied."""
    (first, *_) = _messages(
        importers.parse("whatsapp", io.BytesIO(fx.WHATSAPP_ANDROID_24H.encode()), path="x/WhatsApp Chat with Trip.txt",
                        me=Me.of("Ana"))
    )
    assert (first.conversation, first.is_user) == ("Trip", True)
    note = _messages(importers.parse("notes", io.BytesIO(b"# Idea\nsurf"), path="vault/Ideas 2023.md"))[0]
    assert note.conversation == "Ideas 2023"


def test_tally_caps_distinct_participants() -> None:
    """Beyond MAX_PARTICIPANTS distinct senders, the rest are counted together (bounded report memory)."""
    tally = importers.Tally()
    limit = importers.records.MAX_PARTICIPANTS
    for i in range(limit + 5):
        tally.add(ImportedMessage("generic", "", f"s{i}", None, "x", False))
    report = tally.report()
    assert len(report.participants) == limit + 1 and (importers.records.OTHER_SENDERS, 5) in report.participants


def test_a_file_without_line_breaks_is_refused_as_overlong() -> None:
    """Megabytes with no newline (minified data, a disk image) stop at MAX_LINE_CHARS with a clear error."""
    data = "é".encode() * (importers._io.MAX_LINE_CHARS // 2 + 7)  # 2-byte characters: the cut lands mid-way
    with pytest.raises(ImportFormatError, match="line 1 is over"):
        notes.parse(io.BytesIO(data))
