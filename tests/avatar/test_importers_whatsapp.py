"""WhatsApp chat export parser: both line styles, both clocks, date order, multi-line, system lines, media."""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from tests.avatar import import_fixtures as fx
from voice_server.avatar.importers import ImportedMessage, ImportFormatError, Me, Skipped, whatsapp


def _parse(text: str | bytes, me: str = "Me Myself", **kw: object) -> list[ImportedMessage | Skipped]:
    data = text.encode() if isinstance(text, str) else text
    return list(whatsapp.parse(io.BytesIO(data), me=Me.of(me), **kw))  # type: ignore[arg-type]


def _messages(records: list[ImportedMessage | Skipped]) -> list[ImportedMessage]:
    return [r for r in records if isinstance(r, ImportedMessage)]


def test_ios_12h_export_reads_messages_media_and_skips() -> None:
    """iOS `[m/d/yy, h:mm:ss PM] Sender:` lines: BOM, U+202F, multi-line, media, edits, deletes, RTL text."""
    records = _parse(fx.WHATSAPP_IOS_12H, me="bob", conversation="Family 🏡")
    assert [r for r in records if isinstance(r, Skipped)] == [
        Skipped(1, "system"),
        Skipped(2, "system"),
        Skipped(10, "deleted"),
    ]
    ana, photo1, photo2, edited, noon, voice = _messages(records)
    assert ana == ImportedMessage(
        "whatsapp", "Family 🏡", "Ana Souza", datetime(2023, 1, 15, 14, 31),
        "Olá! Landed in Porto 🛬\nDinner at 8?\n\nBring the 🍷",
        False, None, 3,
    )
    assert (photo1.attachment, photo1.text, photo1.is_user, photo1.where) == ("image", "", True, 7)
    assert (photo2.attachment, photo2.sender) == ("image", "Bob")
    assert (edited.text, edited.at) == ("see you tomorrow", datetime(2023, 1, 15, 23, 59, 59))
    assert noon.at == datetime(2023, 1, 16, 12, 15) and noon.text.startswith("noon ☀️ — שלום")
    assert voice.attachment == "audio"


def test_android_24h_export_reads_messages_and_recognises_system_lines() -> None:
    """Android `dd/mm/yyyy, HH:MM - Sender:` lines: system lines without a sender, captions, null, bad dates."""
    records = _parse(fx.WHATSAPP_ANDROID_24H)
    skipped = [(r.where, r.reason) for r in records if isinstance(r, Skipped)]
    assert skipped == [(1, "system"), (2, "system"), (4, "system"), (10, "deleted"), (11, "empty"), (12, "bad_date")]
    hi, multi, media, file_attached, location = _messages(records)
    assert (hi.sender, hi.text, hi.at) == ("Ana", "Hi all 👋", datetime(2023, 1, 15, 14, 31))
    assert multi.text == "first line\nsecond line: with a colon"
    assert (media.attachment, media.text, media.is_user, media.at) == ("other", "", True, datetime(2023, 2, 3, 9, 5))
    assert (file_attached.attachment, file_attached.text) == ("image", "the view from the hotel")
    assert location.attachment == "location" and "maps.google.com" in location.text


@pytest.mark.parametrize("day_first", [True, False])
def test_ambiguous_dates_take_the_order_that_runs_chronologically(day_first: bool) -> None:
    """With every day ≤ 12 the whole file's chronology decides d/m vs m/d, whatever the fallback says."""
    records = _messages(_parse(fx.whatsapp_android_12h(day_first), day_first=not day_first))
    assert [m.at for m in records] == [
        datetime(2024, month, day, 9, day % 10) for month in (3, 4) for day in range(1, 13)
    ]


def test_evidence_late_in_the_file_decides_the_order_for_early_lines() -> None:
    """A day over 12 on the last line makes the first line's 02/03 read as 2 March (whole-file evidence)."""
    text = "02/03/2023, 10:00 - Ana: a\n" + "01/03/2023, 10:00 - Ana: b\n" * 3 + "25/03/2023, 10:00 - Ana: c\n"
    first = _messages(_parse(text))[0]
    assert first.at == datetime(2023, 3, 2, 10, 0)


def test_contradictory_date_orders_are_rejected_before_anything_is_yielded() -> None:
    """13/01 and 01/13 in one file cannot both be right: the parse call raises, no iterator is returned."""
    text = "13/01/2023, 10:00 - Ana: a\n01/13/2023, 10:00 - Ana: b\n"
    with pytest.raises(ImportFormatError, match="both day-first and month-first"):
        whatsapp.parse(io.BytesIO(text.encode()))


def test_year_first_dates_and_dotted_times_parse() -> None:
    """`2023-01-15 14.30 - ` (ISO date, dotted time, no comma) is an Android line too."""
    (msg,) = _messages(_parse("2023-01-15 14.30 - Ana: ok\n"))
    assert msg.at == datetime(2023, 1, 15, 14, 30)


def test_twelve_am_and_pm_map_to_midnight_and_noon() -> None:
    """12:xx AM is 00:xx, 12:xx PM is 12:xx, and `p. m.` style markers are understood."""
    text = "1/20/23, 12:05 AM - A: x\n1/20/23, 12:05 PM - A: y\n1/20/23, 3:00 p. m. - A: z\n"
    assert [m.at for m in _messages(_parse(text))] == [
        datetime(2023, 1, 20, 0, 5),
        datetime(2023, 1, 20, 12, 5),
        datetime(2023, 1, 20, 15, 0),
    ]


def test_me_matches_names_case_and_direction_marks_insensitively() -> None:
    """`me` given as several names matches each regardless of case and U+200E marks around the name."""
    text = "15/01/2023, 10:00 - \u200eMe Myself\u200e: a\n15/01/2023, 10:01 - Ana: b\n15/01/2023, 10:02 - Mimi: c\n"
    records = _messages(list(whatsapp.parse(io.BytesIO(text.encode()), me=Me.of(["me myself", "MIMI"]))))
    assert [(m.sender, m.is_user) for m in records] == [("Me Myself", True), ("Ana", False), ("Mimi", True)]


def test_utf16_export_with_bom_decodes() -> None:
    """A chat re-saved as UTF-16 (BOM) reads the same as UTF-8."""
    (msg,) = _messages(_parse("15/01/2023, 10:00 - Ana: Olá 😀\n".encode("utf-16")))
    assert msg.text == "Olá 😀"


def test_crlf_line_endings_do_not_leak_into_text() -> None:
    """Windows line endings end lines; no `\\r` in the text of a multi-line message."""
    (msg,) = _messages(_parse(b"15/01/2023, 10:00 - Ana: one\r\ntwo\r\n"))
    assert msg.text == "one\ntwo"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"hello there\n15/01/2023, 10:00 - Ana: x\n", "line 1 does not start with a date"),
        ("15/01/2023, 10:00 - Ana: caf\u00e9\n".encode("latin-1"), "line 1 is not UTF-8"),
        (b"15/01/2023, 10:00 - Ana: ok\n" * 50 + b"\x89PNG\r\n\x1a\n\x00\x00", "line 51 is not UTF-8"),
        (b"15/01/2023, 10:00 - Ana: ok\nbinary\x00junk\n", "line 2 holds binary data"),
        (b"\n\n", "empty"),
    ],
)
def test_malformed_files_raise_a_clear_error_before_any_record(data: bytes, message: str) -> None:
    """Junk anywhere in the file (even after 50 good lines) fails the parse call itself: nothing is yielded."""
    with pytest.raises(ImportFormatError, match=message):
        whatsapp.parse(io.BytesIO(data))


def test_parsing_is_deterministic_and_leaves_the_file_open() -> None:
    """Two parses of one file object give equal records, fingerprints included; the caller's file stays open."""
    f = io.BytesIO(fx.WHATSAPP_ANDROID_24H.encode())
    first = list(whatsapp.parse(f))
    second = list(whatsapp.parse(f))
    assert first == second and not f.closed
    prints = [m.fingerprint() for m in _messages(first)]
    assert prints == [m.fingerprint() for m in _messages(second)] and len(set(prints)) == len(prints)


def test_fingerprint_ignores_position_so_a_longer_reexport_keeps_old_keys() -> None:
    """The same message at another line (re-export with history prepended) has the same fingerprint."""
    line = "15/01/2023, 10:00 - Ana: hi\n"
    (short,) = _messages(_parse(line))
    longer = _messages(_parse("14/01/2023, 09:00 - Ana: earlier\n" + line))
    assert longer[1].where != short.where and longer[1].fingerprint() == short.fingerprint()


def test_conversation_name_comes_from_the_export_filename() -> None:
    """ "WhatsApp Chat with Ana 🌸.txt" names the conversation "Ana 🌸"."""
    assert whatsapp.conversation_from_filename("exports/WhatsApp Chat with Ana 🌸.txt") == "Ana 🌸"
    assert whatsapp.conversation_from_filename("WhatsApp Chat - Trip 2023.txt") == "Trip 2023"
    assert whatsapp.conversation_from_filename("chat.txt") == "chat"


def test_an_overlong_message_is_capped() -> None:
    """A message with endless continuation lines keeps at most MAX_MESSAGE_CHARS (bounded memory)."""
    text = "15/01/2023, 10:00 - Ana: start\n" + ("x" * 999 + "\n") * 200
    (msg,) = _messages(_parse(text))
    assert len(msg.text) <= whatsapp.MAX_MESSAGE_CHARS and msg.text.startswith("start\nxxx")


def test_android_system_line_containing_a_colon_is_still_system() -> None:
    """`Ana changed the subject from "A" to "B: C"` has ": " but is a system line; RTL-marked user text is kept."""
    text = (
        '15/01/2023, 10:00 - Ana changed the subject from "A" to "B: C"\n'
        "15/01/2023, 10:01 - Your security code with Ana changed. Tap to learn more.\n"
        "15/01/2023, 10:02 - Dana: \u200fשלום לכולם\n"
    )
    records = _parse(text)
    assert records[:2] == [Skipped(1, "system"), Skipped(2, "system")]
    assert _messages(records)[0].text == "שלום לכולם"  # kept, without the invisible mark


def test_text_is_nfc_normalised() -> None:
    """A decomposed "é" (e + U+0301) comes out composed, so the same words compare equal across sources."""
    (msg,) = _messages(_parse("15/01/2023, 10:00 - Ana: cafe\u0301\n"))
    assert msg.text == "caf\u00e9"


class _Pipe(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def readinto(self, buffer: object) -> int:
        return 0


def test_a_non_seekable_stream_is_refused_up_front() -> None:
    """Both passes need to re-read the file: a pipe is a ValueError telling the caller to spool it first."""
    with pytest.raises(ValueError, match="seekable"):
        whatsapp.parse(io.BufferedReader(_Pipe()))
