"""Hostile import files stay bounded: JSON nesting, long values and oversized records in every JSON parser,
JSON Lines and CSV bounds, and text patterns that made WhatsApp and notes parsing quadratic."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voice_server.avatar import importers
from voice_server.avatar.importers import (
    ImportedMessage,
    ImportFormatError,
    Record,
    Skipped,
    generic,
    json_bounds,
    meta,
    notes,
    telegram,
    twitter,
    whatsapp,
)
from voice_server.avatar.importers.records import MAX_RECORD_EVENTS, MAX_TEXT_CHARS

Parser = Callable[[IO[bytes]], Iterator[Record]]


def _reference(data: bytes) -> tuple[int, int, int]:
    """(deepest nesting, longest string as quote-to-quote distance, longest bare token) of valid JSON, byte
    by byte: the obvious definition the vectorised scan must agree with."""
    depth = deepest = longest = bare = longest_bare = start = 0
    inside = escaped = False
    for i, b in enumerate(data):
        if inside:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                inside, longest = False, max(longest, i - start)
        elif b == 0x22:
            inside, start, bare = True, i, 0
        elif b in b"[{":
            depth, bare = depth + 1, 0
            deepest = max(deepest, depth)
        elif b in b"]}":
            depth, bare = depth - 1, 0
        elif b <= 0x20 or b in b",:":
            bare = 0
        else:
            bare += 1
            longest_bare = max(longest_bare, bare)
    return deepest, longest, longest_bare


def _accepts(data: bytes) -> bool:
    try:
        json_bounds.scan_json(io.BytesIO(data), 0)
    except ImportFormatError:
        return False
    return True


_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(allow_nan=False, allow_infinity=False),
    st.text(alphabet=st.sampled_from('ab"\\[]{},: \n\u00e9\U0001f600'), max_size=40),
)
_DOCUMENTS = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(alphabet='k"\\[{', max_size=5), inner,
                                                                 max_size=5),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_DOCUMENTS, chunk=st.integers(1, 23), ascii_only=st.booleans(), indent=st.sampled_from([None, 0, 3]))
def test_the_vectorised_scan_agrees_with_a_byte_by_byte_one(
    doc: Any, chunk: int, ascii_only: bool, indent: int | None
) -> None:
    """For any valid JSON (escaped quotes, backslash runs, brackets inside strings) cut into any chunk size,
    the scan refuses exactly when nesting, a string or a bare token goes one past its limit."""
    data = json.dumps(doc, ensure_ascii=ascii_only, indent=indent).encode()
    deepest, longest, longest_bare = _reference(data)
    limits = {"MAX_DEPTH": deepest, "MAX_STRING_BYTES": longest, "MAX_SCALAR_BYTES": longest_bare}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_bounds, "CHUNK", chunk)
        for name, value in limits.items():
            mp.setattr(json_bounds, name, value)
        assert _accepts(data)
        for name, value in limits.items():
            if value > 0:
                mp.setattr(json_bounds, name, value - 1)
                assert not _accepts(data), name
                mp.setattr(json_bounds, name, value)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=600), chunk=st.integers(1, 64))
def test_any_bytes_are_accepted_or_refused_cleanly(data: bytes, chunk: int) -> None:
    """Junk never crashes the scan: it returns or raises `ImportFormatError`."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(json_bounds, "CHUNK", chunk)
        _accepts(data)


def _nested(depth: int) -> bytes:
    """A Telegram chat whose one message is a list nested ``depth`` deep."""
    return b'{"name": "x", "type": "personal_chat", "messages": [' + b"[" * depth + b"]" * depth + b"]}"


def test_deep_telegram_nesting_is_refused_before_ijson_sees_it() -> None:
    """The attack: 100,000 levels in 200 KB made ijson's prefixes grow with depth squared (gigabytes). Now
    it is refused in well under a second with a few MB traced."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ImportFormatError, match="nests deeper than 64 levels"):
            telegram.parse(io.BytesIO(_nested(100_000)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 2 and peak < 20 << 20


JSON_PARSERS: dict[str, tuple[Parser, Callable[[bytes], bytes]]] = {
    "telegram": (lambda f: telegram.parse(f), lambda v: b'{"messages": [{"text": ' + v + b"}]}"),
    "meta_messages": (lambda f: meta.parse_messages(f), lambda v: b'{"messages": [{"content": ' + v + b"}]}"),
    "meta_posts": (lambda f: meta.parse_posts(f), lambda v: b'[{"data": ' + v + b"}]"),
    "twitter": (lambda f: twitter.parse(f), lambda v: b'window.YTD.tweets.part0 = [{"tweet": ' + v + b"}]"),
    "generic": (lambda f: generic.parse(f), lambda v: b'[{"sender": "a", "at": null, "text": ' + v + b"}]"),
}


@pytest.mark.parametrize("fmt", sorted(JSON_PARSERS))
def test_every_json_parser_bounds_depth_strings_and_numbers(fmt: str) -> None:
    """Telegram, Facebook/Instagram, X and generic JSON all refuse, before any record: nesting past 64, a
    string over 4 MiB, a number of 300 digits; nesting of exactly 64 is read."""
    parse, wrap = JSON_PARSERS[fmt]
    outer = _reference(wrap(b"1"))[0]
    fits = b"[" * (json_bounds.MAX_DEPTH - outer) + b"]" * (json_bounds.MAX_DEPTH - outer)
    list(parse(io.BytesIO(wrap(fits))))
    cases = {
        "nests deeper": b"[" * (json_bounds.MAX_DEPTH - outer + 1) + b"]" * (json_bounds.MAX_DEPTH - outer + 1),
        "string over": b'"' + b"a" * (json_bounds.MAX_STRING_BYTES + 1) + b'"',
        "not a string": b"1" * 300,
    }
    for message, value in cases.items():
        with pytest.raises(ImportFormatError, match=message):
            parse(io.BytesIO(wrap(value)))


@pytest.mark.parametrize("fmt", sorted(JSON_PARSERS))
def test_an_oversized_record_is_skipped_and_the_next_one_read(fmt: str) -> None:
    """A record with more values than MAX_RECORD_EVENTS is dropped as it streams (skipped as too_large,
    never built whole); the record after it is read as usual."""
    parse, _ = JSON_PARSERS[fmt]
    huge: dict[str, Any] = {"sender": "a", "from": "a", "text": "x", "filler": [0] * (MAX_RECORD_EVENTS + 1)}
    good = {"sender": "Ana", "sender_name": "Ana", "from": "Ana", "text": "hello", "content": "hello",
            "full_text": "hello", "data": [{"post": "hello"}], "at": None}
    items = [huge, {**good, "tweet": good}] if fmt == "twitter" else [huge, good]
    body = json.dumps(items).encode()
    data = {
        "telegram": b'{"messages": ' + body + b"}", "meta_messages": b'{"messages": ' + body + b"}",
        "twitter": b"window.YTD.tweets.part0 = " + body,
    }.get(fmt, body)
    records = list(parse(io.BytesIO(data)))
    assert records[0] == Skipped(0, "too_large")
    assert isinstance(records[1], ImportedMessage) and records[1].text == "hello"


def test_message_text_is_capped() -> None:
    """A 1 MB message text (one JSON string, allowed) is kept to MAX_TEXT_CHARS: bounded work downstream."""
    chat = {"messages": [{"type": "message", "from": "Ana", "text": "é" * 1_000_000}]}
    (message,) = telegram.parse(io.BytesIO(json.dumps(chat, ensure_ascii=False).encode()))
    assert isinstance(message, ImportedMessage) and len(message.text) == MAX_TEXT_CHARS


def test_jsonl_lines_nested_too_deep_are_bad_records_and_a_deep_first_line_refuses_the_file() -> None:
    """A JSON Lines line nested 10,000 deep (which would raise RecursionError inside json) is a bad record in
    the middle of a file, and makes the file an error when it is the first line."""
    good = '{"sender": "a", "at": null, "text": "hi"}'
    deep = "[" * 10_000 + "]" * 10_000
    records = list(generic.parse(io.BytesIO(f"{good}\n{deep}\n{good}\n".encode())))
    assert [type(r) for r in records] == [ImportedMessage, Skipped, ImportedMessage]
    with pytest.raises(ImportFormatError, match="line 1: the JSON nests deeper than 64"):
        generic.parse(io.BytesIO(f'{{"a": {deep}}}\n{good}\n'.encode()))


def test_csv_enormous_fields_and_rows_are_refused() -> None:
    """A CSV field over csv's 131,072-character limit, or one quoted row spanning lines past MAX_ROW_CHARS,
    is an error naming the line, before anything is read."""
    field = "sender,at,text\nAna,," + "x" * 200_000 + "\n"
    with pytest.raises(ImportFormatError, match="CSV line 2: field larger than field limit"):
        generic.parse(io.BytesIO(field.encode()))
    row = "sender,at,text\nAna,," + '"a\n",' * (generic.MAX_ROW_CHARS // 4) + "\n"
    with pytest.raises(ImportFormatError, match="CSV row starting at line 2 is over"):
        generic.parse(io.BytesIO(row.encode()))


@pytest.mark.parametrize(
    "text",
    ["<attached: " * 5000, "a" + " " * 60_000 + "b", " " * 60_000 + "image omitted", "x." * 30_000],
    ids=["attached", "blank-run", "omitted", "dots"],
)
def test_whatsapp_patterns_stay_linear_on_hostile_messages(text: str) -> None:
    """Messages built to make the media/edited-marker patterns backtrack (0.8-3 s each before) parse in
    milliseconds, so a file of thousands of them cannot hold the import worker for hours."""
    lines = "".join(f"01/02/2023, 10:{i:02d} - Ana: {text}\n" for i in range(10))
    started = time.perf_counter()
    records = list(whatsapp.parse(io.BytesIO(lines.encode())))
    assert len(records) == 10 and time.perf_counter() - started < 1.5


def test_whatsapp_edited_marker_is_still_removed() -> None:
    """Rewriting the edited-marker pattern kept its meaning: the marker and the space before it go."""
    (message,) = whatsapp.parse(io.BytesIO(b"01/02/2023, 10:00 - Ana: see you  <This message was edited>\n"))
    assert isinstance(message, ImportedMessage) and message.text == "see you"


def test_notes_heading_full_of_hashes_is_linear_and_still_stripped() -> None:
    """A heading line of 500,000 "#" (quadratic for the old lazy pattern) splits at once; "# C# #" keeps
    its title "C"."""
    started = time.perf_counter()
    records = list(notes.parse(io.BytesIO(("# " + "#" * 500_000 + "x\nbody\n").encode())))
    assert len(records) == 1 and time.perf_counter() - started < 1.5
    (note,) = notes.parse(io.BytesIO(b"# 2023-01-15 C# #\ntext\n"))
    assert isinstance(note, ImportedMessage) and note.at is not None and note.text.startswith("# 2023-01-15 C# #")


def test_detection_never_parses_json() -> None:
    """Format detection reads only the head's text (no JSON parser): a deep document is detected instantly
    and refused by the importer's bounds."""
    data = _nested(100_000)
    assert importers.detect("result.json", data[: importers.HEAD_BYTES]) == "telegram"
