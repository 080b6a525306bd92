"""Reading the file an importer is given: seekable binary in, strictly decoded lines or JSON events out.

Every parser makes two passes over its file: a validating pass (`check_text` / `check_json`) that reads the
whole file in constant memory and raises `ImportFormatError` for anything damaged, then the yielding pass.
Hostile input is bounded here for every format: a text line at `MAX_LINE_CHARS`; a JSON document's nesting
and token sizes by `json_bounds.scan_json` before ijson reads it (see there why ijson cannot be let loose on
deep nesting); one JSON record's size by `json_records` / `BoundedRecord`; one JSON Lines line by
`json_line`.
That is why a parser never yields a record from a file it later rejects, and why files must be seekable (the
import job spools uploads to a sealed temporary file first). A file that changes between the passes is
outside the contract.
"""

from __future__ import annotations

import codecs
import io
import json
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

import ijson  # type: ignore[import-untyped]  # ijson ships no type information
from ijson.common import ObjectBuilder  # type: ignore[import-untyped]

from voice_server.avatar.importers.json_bounds import MAX_DEPTH, scan_json
from voice_server.avatar.importers.records import MAX_RECORD_CHARS, MAX_RECORD_EVENTS, ImportFormatError

JSON_BUF = 64 * 1024
MAX_LINE_CHARS = 1 << 20  # a "line" longer than this is not text a person wrote
_OVERLONG = "\x00overlong"  # marks a line cut at MAX_LINE_CHARS bytes (NUL cannot come from a valid line)


def require_seekable(f: IO[bytes]) -> None:
    """Raise `ValueError` unless ``f`` can be read twice (both passes)."""
    if not f.seekable():
        raise ValueError("importers need a seekable binary file (spool uploads to a temporary file first)")


def _bom_encoding(f: IO[bytes]) -> tuple[str, int]:
    f.seek(0)
    head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith(codecs.BOM_UTF16_LE) or head.startswith(codecs.BOM_UTF16_BE):
        return "utf-16", 0  # the codec reads the BOM itself
    return "utf-8", 0


@contextmanager
def text_lines(f: IO[bytes], *, keepends: bool = False) -> Iterator[Iterator[tuple[int, str]]]:
    """(1-based line number, line without its newline unless ``keepends``) from the start of ``f``.

    UTF-8 (with or without BOM) is decoded line by line, so an error names the exact line; UTF-16 with a
    BOM is accepted too (errors then name the first line of the failing chunk). Other bytes, NUL bytes or
    a line over `MAX_LINE_CHARS` raise `ImportFormatError`. Lines end at ``\n`` (``\r\n`` included).
    ``f`` stays open for the caller.
    """
    require_seekable(f)
    encoding, skip = _bom_encoding(f)
    f.seek(skip)
    if encoding == "utf-16":
        wrapper = io.TextIOWrapper(f, encoding=encoding, errors="strict", newline=None)
        try:
            yield _checked(_numbered(wrapper), encoding, keepends)
        finally:
            wrapper.detach()
    else:
        yield _checked(_utf8_lines(f), encoding, keepends)


def _numbered(wrapper: io.TextIOWrapper) -> Iterator[str]:
    while line := wrapper.readline(MAX_LINE_CHARS + 1):
        yield line


def _utf8_lines(f: IO[bytes]) -> Iterator[str]:
    while raw := f.readline(MAX_LINE_CHARS + 1):
        # An overlong line may be cut inside a character; decode only its start so the error says "too long".
        yield raw.decode("utf-8") if len(raw) <= MAX_LINE_CHARS else raw[:16].decode("utf-8", "replace") + _OVERLONG


def _checked(lines: Iterator[str], encoding: str, keepends: bool) -> Iterator[tuple[int, str]]:
    n = 0
    try:
        for n, line in enumerate(lines, start=1):  # noqa: B007  # n names the failing line below
            if len(line) > MAX_LINE_CHARS or line.endswith(_OVERLONG):
                raise ImportFormatError(f"line {n} is over {MAX_LINE_CHARS:,} characters: not a text export")
            if "\x00" in line:
                raise ImportFormatError(f"line {n} holds binary data (NUL bytes): not a text export")
            yield n, line if keepends else line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ImportFormatError(
            f"line {n + 1} is not {encoding.upper()} text ({e.reason}): re-export the file as UTF-8"
        ) from None


def check_text(f: IO[bytes]) -> int:
    """Decode the whole file once (constant memory); return its line count or raise `ImportFormatError`."""
    count = 0
    with text_lines(f) as lines:
        for count, _ in lines:  # noqa: B007
            pass
    return count


def _json_start(f: IO[bytes]) -> int:
    """Offset of the first JSON byte (after a UTF-8 BOM and whitespace); rejects what cannot be JSON."""
    require_seekable(f)
    f.seek(0)
    head = f.read(64)
    skip = 3 if head.startswith(codecs.BOM_UTF8) else 0
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise ImportFormatError("the file is UTF-16; JSON exports are UTF-8: re-export it")
    body = head[skip:].lstrip()
    if not body:
        raise ImportFormatError("the file is empty")
    if body[:1] not in (b"{", b"["):
        raise ImportFormatError(f"not JSON: it starts with {body[:12]!r}")
    return skip


def check_json(f: IO[bytes], start: int | None = None) -> int:
    """Bound, then parse the whole JSON document once without building it; return the offset it starts at.

    After it returns, the document nests at most `json_bounds.MAX_DEPTH` deep and holds no string or bare
    value over `json_bounds`' limits, so ijson's prefixed parsers are safe to run on it.

    Raises:
        ImportFormatError: not JSON, nested too deep, a value too long, truncated, invalid UTF-8 or
            trailing junk, with the byte offset.
    """
    offset = _json_start(f) if start is None else start
    scan_json(f, offset)
    f.seek(offset)
    try:
        deque(ijson.basic_parse(f, buf_size=JSON_BUF), maxlen=0)
    except ijson.JSONError as e:
        what = "truncated" if "premature EOF" in _first_line(e) else "damaged"
        raise ImportFormatError(f"the JSON is {what} (read up to byte {f.tell():,}): {_first_line(e)}") from None
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"the JSON is damaged near byte {f.tell():,}: {_first_line(e)}") from None
    return offset


def json_events(f: IO[bytes], offset: int) -> Iterator[tuple[str, str, Any]]:
    """ijson's (prefix, event, value) stream from ``offset`` (floats, not Decimals)."""
    f.seek(offset)
    return ijson.parse(f, buf_size=JSON_BUF, use_float=True)  # type: ignore[no-any-return]


class Oversized:
    """Stands for a JSON record `BoundedRecord` stopped building (too many values or characters)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "OVERSIZED"


OVERSIZED = Oversized()


class BoundedRecord:
    """Builds one JSON value from ijson events, up to `MAX_RECORD_EVENTS` events and `MAX_RECORD_CHARS`
    characters of strings and keys; beyond either it drops what it built and only follows the nesting to
    the value's end, so its memory stays bounded and `value` is `OVERSIZED`.

    Feed it the value's events from its ``start_map`` / ``start_array`` on; `feed` returns true at the event
    that ends the value, and `value` is then complete.
    """

    __slots__ = ("_builder", "_chars", "_depth", "_events")

    def __init__(self) -> None:
        self._builder: Any = ObjectBuilder()
        self._depth = self._events = self._chars = 0

    def feed(self, event: str, value: Any) -> bool:
        """Take one event; true when it closed the value."""
        if event in ("start_map", "start_array"):
            self._depth += 1
        elif event in ("end_map", "end_array"):
            self._depth -= 1
        if self._builder is not None:
            self._events += 1
            if isinstance(value, str):
                self._chars += len(value)
            if self._events > MAX_RECORD_EVENTS or self._chars > MAX_RECORD_CHARS:
                self._builder = None
            else:
                self._builder.event(event, value)
        return self._depth == 0

    @property
    def value(self) -> Any:
        """The value built (after `feed` returned true), or `OVERSIZED`."""
        return OVERSIZED if self._builder is None else self._builder.value


def json_records(f: IO[bytes], offset: int, prefix: str) -> Iterator[Any]:
    """Each value at ``prefix`` (e.g. ``"item"`` for a top-level array), built one at a time by a
    `BoundedRecord` (`OVERSIZED` for one over its limits). Call after `check_json`."""
    record: BoundedRecord | None = None
    for path, event, value in json_events(f, offset):
        if record is not None:
            if record.feed(event, value):
                yield record.value
                record = None
        elif path == prefix:
            if event in ("start_map", "start_array"):
                record = BoundedRecord()
                record.feed(event, value)
            elif event not in ("end_map", "end_array", "map_key"):
                yield value  # a scalar where a record should be: the parser skips it


def json_line(line: str) -> Any:
    """One JSON Lines line decoded, refusing nesting over `json_bounds.MAX_DEPTH` (which would otherwise
    end in a `RecursionError` deep inside `json`); the line itself is bounded by `MAX_LINE_CHARS`.

    Raises:
        ValueError: not JSON, or nested too deep (`ImportFormatError`).
    """
    if line.count("[") + line.count("{") > MAX_DEPTH:  # cheap: only then can it nest too deep
        scan_json(io.BytesIO(line.encode()), 0)
    return json.loads(line)


def _first_line(e: Exception) -> str:
    arg = e.args[0] if e.args else ""
    text = (arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
