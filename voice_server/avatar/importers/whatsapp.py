"""WhatsApp "Export chat" ``.txt`` files (without or with media), both phone styles.

Line styles (one per file, taken from the first message line)::

    [15/01/2023, 14:30:05] Ana: text           iOS ("ios"); system lines and media start with U+200E
    15/01/2023, 14:30 - Ana: text              Android ("android")

Dates are ``d/m/y``, ``m/d/y`` (``/``, ``.`` or ``-``, 2- or 4-digit years) or ``y-m-d``; times are 24 h
or 12 h (``2:30 PM``, ``2:30\u202fpm``, ``2:30 p.m.``), seconds optional. Which of day and month comes
first is not in the file, so the validating pass decides it from the *whole* file's evidence: a first field
over 12 proves day-first, a second field over 12 proves month-first (both → `ImportFormatError`); with no
such evidence (every day ≤ 12) the order under which the messages run chronologically wins, and a tie falls
back to ``day_first`` (default day-first, the more common locale order).

A line that does not start with a timestamp continues the previous message (multi-line messages). Lines
before the first message line are an error (not an export). Timestamps are naive local wall-clock time.

Skipped, with reasons: system lines ("Messages and calls are end-to-end encrypted", "Ana joined using this
group's invite link", "Ana added Bob", Android lines without ``Sender:``, iOS lines whose text starts with
U+200E and is not media), deleted messages, view-once ``null`` and a header with an impossible date.
Media placeholders (``<Media omitted>``, ``image omitted``, ``<attached: 0001-PHOTO-….jpg>``,
``IMG-….jpg (file attached)``) set ``attachment``; a caption stays as text. ``<This message was edited>``
is removed from the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Literal

from voice_server.avatar.importers._io import check_text, require_seekable, text_lines
from voice_server.avatar.importers.records import (
    NOBODY,
    Attachment,
    ImportedMessage,
    ImportFormatError,
    Me,
    Record,
    Skipped,
    clean_name,
)

Style = Literal["ios", "android"]
MAX_MESSAGE_CHARS = 64 * 1024  # continuation lines beyond this are dropped: bounded memory per message

_SP = "[ \u00a0\u202f]"
_DATE = r"(?P<d1>\d{1,4})[./-](?P<d2>\d{1,2})[./-](?P<d3>\d{1,4})"
_TIME = rf"(?P<h>\d{{1,2}})[:.](?P<m>\d{{2}})(?:[:.](?P<s>\d{{2}}))?(?:{_SP}?(?P<ampm>[AaPp])\.?{_SP}?[Mm]\.?)?"
_HEADERS: dict[Style, re.Pattern[str]] = {
    "ios": re.compile(rf"^[\u200e\u200f]*\[{_DATE},?{_SP}{_TIME}\]{_SP}?(?P<rest>.*)$"),
    "android": re.compile(rf"^[\u200e\u200f]*{_DATE},?{_SP}{_TIME}{_SP}?[-\u2013]{_SP}(?P<rest>.*)$"),
}
_SYSTEM = re.compile(
    r"end-to-end encrypted|joined using this group's invite link|\bjoined$|\bleft$|\badded\b|\bremoved\b|"
    r"created (?:the )?group|changed (?:the )?(?:subject|group|this group's|their phone number|the group)|"
    r"security code (?:with .* )?changed|is a contact\.?$|disappearing messages|pinned a message|"
    r"Missed (?:voice|video) call|changed to \+|now an admin",
    re.IGNORECASE,
)
_DELETED = re.compile(r"^(?:This message was deleted|You deleted this message)\.?$", re.IGNORECASE)
_EDITED = "<This message was edited>"
# A file name is at most 255 characters: the bound keeps a search linear on text full of "<attached: ".
_ATTACHED = re.compile(r"<attached: (?P<file>[^>]{1,255})>")
_FILE_ATTACHED = re.compile(r"^(?P<file>\S+\.\w{2,5}) \(file attached\)")
_OMITTED = re.compile(
    r"(?:^|\s)(?P<kind>image|video|audio|sticker|GIF|document|Contact card|<Media) omitted>?$", re.IGNORECASE
)
_OMITTED_KINDS: dict[str, Attachment] = {
    "image": "image", "video": "video", "audio": "audio", "sticker": "sticker", "gif": "gif",
    "document": "document", "contact card": "contact", "<media": "other",
}
_EXTENSIONS: dict[str, Attachment] = {
    "jpg": "image", "jpeg": "image", "png": "image", "heic": "image", "webp": "sticker", "gif": "gif",
    "mp4": "video", "mov": "video", "3gp": "video", "opus": "voice", "ogg": "voice", "m4a": "audio",
    "mp3": "audio", "aac": "audio", "vcf": "contact", "pdf": "document", "docx": "document", "txt": "document",
}


@dataclass(frozen=True, slots=True)
class Layout:
    """What the validating pass found: the line style, the field order and how many message lines."""

    style: Style
    day_first: bool
    messages: int


def conversation_from_filename(name: str) -> str:
    """ "WhatsApp Chat with Ana.txt" (or "…- Ana.txt") → "Ana"; any other name → its stem."""
    stem = name.rsplit("/", 1)[-1].removesuffix(".txt")
    return re.sub(r"^WhatsApp Chat (?:with |- )", "", stem).strip()


def sniff(text: str) -> Style | None:
    """The style of the first non-empty line of ``text``, if it is a WhatsApp message line."""
    for line in text.lstrip("\ufeff").splitlines():
        if line.strip():
            return next((style for style, rx in _HEADERS.items() if rx.match(line)), None)
    return None


def scan(f: IO[bytes], *, day_first: bool = True) -> Layout:
    """The validating pass: decode the whole file, find the style and the day/month order.

    Args:
        f: the export, binary and seekable.
        day_first: the order to assume when the file holds no evidence either way.

    Raises:
        ImportFormatError: undecodable bytes, no message line at the top, or contradictory dates.
    """
    check_text(f)  # decoding errors first: they name the line, which the header checks below cannot
    style: Style | None = None
    rx: re.Pattern[str] | None = None
    dmy_proof = mdy_proof = 0
    prev_dmy: tuple[int, ...] = ()
    prev_mdy: tuple[int, ...] = ()
    dmy_back = mdy_back = messages = 0
    with text_lines(f) as lines:
        for n, line in lines:
            if rx is None:
                if not line.strip():
                    continue
                style = sniff(line)
                if style is None:
                    raise ImportFormatError(
                        f"not a WhatsApp chat export: line {n} does not start with a date and time ({line[:40]!r})"
                    )
                rx = _HEADERS[style]
            m = rx.match(line)
            if m is None:
                continue
            messages += 1
            d1, d2, d3 = int(m["d1"]), int(m["d2"]), int(m["d3"])
            if len(m["d1"]) == 4:
                continue  # year first: always y-m-d
            dmy_proof += d1 > 12
            mdy_proof += d2 > 12
            if dmy_proof and mdy_proof:
                raise ImportFormatError(
                    f"line {n}: dates read both day-first and month-first in this file ({line[:24]!r}); "
                    "it is not one export"
                )
            if not (dmy_proof or mdy_proof):
                clock = (int(m["h"]) % 12 + 12 * (m["ampm"] in ("P", "p")) if m["ampm"] else int(m["h"]), int(m["m"]))
                dmy, mdy = (d3, d2, d1, *clock), (d3, d1, d2, *clock)
                dmy_back += dmy < prev_dmy
                mdy_back += mdy < prev_mdy
                prev_dmy, prev_mdy = dmy, mdy
    if style is None:
        raise ImportFormatError("the file is empty: no WhatsApp messages")
    if dmy_proof or mdy_proof:
        day_first = bool(dmy_proof)
    elif dmy_back != mdy_back:
        day_first = dmy_back < mdy_back
    return Layout(style=style, day_first=day_first, messages=messages)


def parse(f: IO[bytes], *, me: Me = NOBODY, conversation: str = "", day_first: bool = True) -> Iterator[Record]:
    """Yield the export's messages and skips in file order.

    Validates the whole file first (`scan`), so `ImportFormatError` comes before any record. ``where`` is
    the 1-based line a message starts on.

    Args:
        f: the export, binary and seekable; left open.
        me: which sender is the user.
        conversation: the chat's name (see `conversation_from_filename`).
        day_first: the order to assume only when the file holds no evidence (see the module docstring).
    """
    require_seekable(f)
    layout = scan(f, day_first=day_first)
    return _messages(f, layout, me, conversation)


def _messages(f: IO[bytes], layout: Layout, me: Me, conversation: str) -> Iterator[Record]:
    rx = _HEADERS[layout.style]
    start = 0
    head: re.Match[str] | None = None
    body: list[str] = []
    size = 0
    with text_lines(f) as lines:
        for n, line in lines:
            m = rx.match(line)
            if m is None:
                if head is not None and size < MAX_MESSAGE_CHARS:
                    body.append(line)
                    size += len(line) + 1
                continue
            if head is not None:
                yield _record(start, head, body, layout, me, conversation)
            start, head, body, size = n, m, [m["rest"]], len(m["rest"])
    if head is not None:
        yield _record(start, head, body, layout, me, conversation)


def _record(where: int, m: re.Match[str], body: list[str], layout: Layout, me: Me, conversation: str) -> Record:
    at = _timestamp(m, layout.day_first)
    if at is None:
        return Skipped(where, "bad_date")
    rest = body[0]
    sender, sep, first = rest.partition(": ")
    if not sep:
        return Skipped(where, "system")  # Android: "Ana added Bob", the encryption notice
    text = "\n".join([first, *body[1:]])[:MAX_MESSAGE_CHARS]
    text = unicodedata.normalize("NFC", text).strip()
    # Not a regex with a leading \s*: that retries at every space of a long blank run (quadratic).
    text = text.removesuffix(_EDITED).rstrip()
    attachment, attached_file, text = _attachment(text)
    if attachment is None:
        if _DELETED.match(text.strip("\u200e\u200f")):
            return Skipped(where, "deleted")
        if layout.style == "ios" and text.startswith("\u200e"):
            return Skipped(where, "system")  # iOS marks system text with U+200E (a user's RTL text uses U+200F)
        if layout.style == "android" and _is_system(sender):
            return Skipped(where, "system")
        if text in ("", "null"):
            return Skipped(where, "empty")
    name = clean_name(sender)
    text = text.strip("\u200e\u200f").strip()
    return ImportedMessage(
        "whatsapp", conversation, name, at, text, me.matches(name), attachment, where, attachment_name=attached_file
    )


def _is_system(sender: str) -> bool:
    # Android system lines have no "Sender: "; a few that contain ": " are still recognisable by wording.
    return len(sender) > 60 or bool(_SYSTEM.search(sender))


def _attachment(text: str) -> tuple[Attachment | None, str, str]:
    """(what is attached, the attached file's name when the line names it, the text left)."""
    bare = text.strip("\u200e\u200f ")
    if m := _ATTACHED.search(bare):
        rest = (bare[: m.start()] + bare[m.end() :]).strip("\u200e\u200f \n")
        return _by_extension(m["file"]), m["file"].strip(), rest
    if m := _FILE_ATTACHED.match(bare):
        return _by_extension(m["file"]), m["file"], bare[m.end() :].strip("\u200e\u200f \n")
    first, _, caption = bare.partition("\n")
    if m := _OMITTED.search(first.strip("\u200e\u200f ")):
        return _OMITTED_KINDS[m["kind"].lower()], "", caption.strip()
    if bare.lower().startswith("location: "):
        return "location", "", bare
    return None, "", text


def _by_extension(file: str) -> Attachment:
    if "-PTT-" in file or ("AUDIO" in file and file.lower().endswith(".opus")):
        return "voice"
    if "STICKER" in file:
        return "sticker"
    return _EXTENSIONS.get(file.rsplit(".", 1)[-1].lower(), "other")


def _timestamp(m: re.Match[str], day_first: bool) -> datetime | None:
    d1, d2, d3 = int(m["d1"]), int(m["d2"]), int(m["d3"])
    if len(m["d1"]) == 4:
        year, month, day = d1, d2, d3
    elif day_first:
        day, month, year = d1, d2, d3
    else:
        month, day, year = d1, d2, d3
    if year < 100:
        year += 2000
    hour, minute, second = int(m["h"]), int(m["m"]), int(m["s"] or 0)
    if m["ampm"]:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if m["ampm"] in ("P", "p") else 0)
    try:
        return datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None
