"""Soma's generic message format, for anything another tool can convert: JSON array, JSON Lines or CSV.

Each message has these fields (names are case-sensitive in JSON, case-insensitive in a CSV header)::

    sender        string, required     who wrote it, as the user would recognise them ("Ana", "me")
    text          string, required     what they wrote; "" only together with an attachment
    at            optional             ISO 8601 ("2023-01-15T14:30:05+01:00" → aware; without an offset →
                                       local wall-clock time; a date alone → midnight), or a number of Unix
                                       seconds (→ UTC), or null/"" (unknown)
    conversation  string, optional     the chat or thread it belongs to ("" when absent)
    attachment    string, optional     image, video, audio, voice, sticker, gif, document, contact,
                                       location or other

Three containers, recognised by their first byte (after a UTF-8 BOM and whitespace):

* ``[`` — a JSON array of message objects (streamed, one object at a time);
* ``{`` — JSON Lines: one message object per line, blank lines ignored;
* anything else — CSV (RFC 4180, comma-separated, UTF-8) with a header row naming at least ``sender``,
  ``at`` and ``text``; other columns are ignored; quoted fields may span lines.

Example (JSON Lines)::

    {"sender": "me", "at": "2023-01-15T14:30:05+01:00", "text": "Landed in Porto 🛬"}
    {"sender": "Ana", "at": 1673793065, "text": "Welcome!\\nDinner at 8?", "conversation": "Ana"}

Whole-file errors (`ImportFormatError`, before any record): not UTF-8, truncated or damaged JSON, a JSON
Lines file whose first or last line is not a JSON object (a truncated last line), a CSV without the header,
or with broken quoting, a CSV field over 131,072 characters or a row over `MAX_ROW_CHARS`, JSON nested too
deep or with an overlong value (`json_bounds`). A record with the wrong shape (missing ``sender``, ``text``
not a string, a short CSV row, a JSON Lines line that is not an object or nests too deep) is skipped as
``bad_record``; a JSON record over the record bounds as ``too_large``; an ``at`` that does not parse is
skipped as ``bad_date``. ``where`` is the 0-based array index, or the 1-based line number for JSON
Lines and CSV.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal, get_args

from voice_server.avatar.importers._io import (
    OVERSIZED,
    check_json,
    check_text,
    json_events,
    json_line,
    json_records,
    text_lines,
)
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

Container = Literal["json", "jsonl", "csv"]
REQUIRED = ("sender", "at", "text")
MAX_ROW_CHARS = 1 << 20  # one CSV row, however many lines its quoted fields span
_ATTACHMENTS: frozenset[str] = frozenset(get_args(Attachment))
_BAD_AT = object()


def container_of(head: bytes) -> Container:
    """Which container a file is, from its first bytes."""
    body = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return "json" if body[:1] == b"[" else "jsonl" if body[:1] == b"{" else "csv"


def parse(f: IO[bytes], *, me: Me = NOBODY) -> Iterator[Record]:
    """Yield the file's messages and skips in order (see the module docstring for the format).

    Args:
        f: the file, binary and seekable; left open.
        me: which sender is the user.

    Raises:
        ImportFormatError: before any record, for the whole-file errors listed in the module docstring.
    """
    f.seek(0)
    match container_of(f.read(64)):
        case "json":
            offset = check_json(f)
            _, event, _ = next(json_events(f, offset))
            if event != "start_array":
                raise ImportFormatError("generic JSON must be an array of message objects")
            return (_record(i, obj, me) for i, obj in enumerate(json_records(f, offset, "item")))
        case "jsonl":
            _check_jsonl(f)
            return _jsonl(f, me)
        case "csv":
            header = _check_csv(f)
            return _csv(f, header, me)


def _check_jsonl(f: IO[bytes]) -> None:
    check_text(f)
    first: tuple[int, str] | None = None
    last: tuple[int, str] | None = None
    with text_lines(f) as lines:
        for n, line in lines:
            if line.strip():
                last = (n, line)
                first = first or last
    if first is None or last is None:
        raise ImportFormatError("the JSON Lines file has no lines")
    for n, line in (first, last):
        try:
            ok = isinstance(json_line(line), dict)
        except ImportFormatError as e:
            raise ImportFormatError(f"JSON Lines: line {n}: {e}") from None
        except ValueError:
            ok = False
        if not ok:
            where = f"line {n}" if n == first[0] else f"the last line ({n}; truncated?)"
            raise ImportFormatError(f"JSON Lines: {where} is not a JSON object")


def _jsonl(f: IO[bytes], me: Me) -> Iterator[Record]:
    with text_lines(f) as lines:
        for n, line in lines:
            if not line.strip():
                continue
            try:
                obj = json_line(line)
            except ValueError:
                yield Skipped(n, "bad_record")
                continue
            yield _record(n, obj, me)


class _RowSpan:
    """The lines `csv.reader` reads, bounded per row: a quoted field may span lines, so without a bound one
    row could take in the whole file before the reader returns it. Call `row_done` after each row."""

    def __init__(self, lines: Iterator[tuple[int, str]]) -> None:
        self._lines = lines
        self._chars = 0
        self._first = 0

    def __iter__(self) -> Iterator[str]:
        for n, line in self._lines:
            if not self._chars:
                self._first = n
            self._chars += len(line)
            if self._chars > MAX_ROW_CHARS:
                raise ImportFormatError(f"CSV row starting at line {self._first} is over {MAX_ROW_CHARS:,} "
                                        "characters (an unclosed quote?)")
            yield line

    def row_done(self) -> None:
        """The reader returned a row: the next line starts a new one."""
        self._chars = 0


def _csv_reader(span: _RowSpan) -> Any:
    # csv's own per-field limit (`csv.field_size_limit`, 131,072 by default) refuses one enormous field.
    return csv.reader(span, strict=True)


def _check_csv(f: IO[bytes]) -> dict[str, int]:
    """Validate every row's quoting; return the header's column index per known field name."""
    check_text(f)
    with text_lines(f, keepends=True) as lines:
        span = _RowSpan(lines)
        reader = _csv_reader(span)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportFormatError("the CSV file is empty")
            columns = {name.strip().lstrip("\ufeff").lower(): i for i, name in enumerate(header)}
            missing = [name for name in REQUIRED if name not in columns]
            if missing:
                raise ImportFormatError(
                    f"CSV header must name {', '.join(REQUIRED)}; missing {', '.join(missing)} (found {header[:6]})"
                )
            span.row_done()
            for _ in reader:
                span.row_done()
        except csv.Error as e:
            raise ImportFormatError(f"CSV line {reader.line_num}: {e}") from None
    return columns


def _csv(f: IO[bytes], columns: dict[str, int], me: Me) -> Iterator[Record]:
    width = max(columns.values()) + 1
    with text_lines(f, keepends=True) as lines:
        span = _RowSpan(lines)
        reader = _csv_reader(span)
        next(reader)
        span.row_done()
        for row in reader:
            span.row_done()
            where = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) < width:
                yield Skipped(where, "bad_record")
                continue
            yield _record(where, {name: row[i] for name, i in columns.items()}, me)


def parse_at(value: Any) -> datetime | None | object:
    """``at`` as a datetime, ``None`` when absent, or the private ``_BAD_AT`` marker when unparseable."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            return _BAD_AT
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
        if isinstance(value, str):
            text = value.strip()
            if text.replace(".", "", 1).isdigit():
                return datetime.fromtimestamp(float(text), UTC)
            return datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except (ValueError, OverflowError, OSError):
        pass
    return _BAD_AT


def _record(where: int, obj: Any, me: Me) -> Record:
    if obj is OVERSIZED:
        return Skipped(where, "too_large")
    if not isinstance(obj, dict):
        return Skipped(where, "bad_record")
    sender, text = obj.get("sender"), obj.get("text")
    conversation, attachment = obj.get("conversation") or "", obj.get("attachment") or None
    if not (isinstance(sender, str) and clean_name(sender) and isinstance(text, str)):
        return Skipped(where, "bad_record")
    if not isinstance(conversation, str) or (attachment is not None and attachment not in _ATTACHMENTS):
        return Skipped(where, "bad_record")
    at = parse_at(obj.get("at"))
    if at is _BAD_AT:
        return Skipped(where, "bad_date")
    text = clean_text(text)
    if not text and attachment is None:
        return Skipped(where, "empty")
    name = clean_name(sender)
    stamp = at if isinstance(at, datetime) else None
    return ImportedMessage("generic", conversation, name, stamp, text, me.matches(name), attachment, where)
