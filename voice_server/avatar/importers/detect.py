"""Which importer a file needs, from its name and first bytes (the CLI and the upload API call this).

Sans-I/O: the caller reads the head (`HEAD_BYTES` is enough) and passes it in with the file's path or
upload name. Content wins over the name; the name only breaks ties between text formats (``.csv``), says
whether Meta JSON came from Instagram (see `meta.source_of`) and whether an MP4/Matroska file is a sound
recording (``.m4a``) or a video (see `recordings.sniff`). Audio, video and ZIP archives (a WhatsApp export with
media) are `MEDIA_FORMATS`: the import job transcribes them instead of calling `importers.parse`.
"""

from __future__ import annotations

import codecs
from pathlib import PurePath
from typing import Literal

# Each sibling by its full name, not ``from voice_server.avatar.importers import …``: that form depends on the
# package itself, whose ``__init__`` imports this module (an import circle).
from voice_server.avatar.importers.recordings import looks_like_media
from voice_server.avatar.importers.recordings import sniff as sniff_media
from voice_server.avatar.importers.records import ImportFormatError
from voice_server.avatar.importers.twitter import is_archive_head
from voice_server.avatar.importers.whatsapp import sniff as sniff_whatsapp
from voice_server.avatar.importers.whatsapp_zip import is_zip

Format = Literal[
    "whatsapp", "telegram", "generic", "notes", "meta_messages", "meta_posts", "twitter", "audio", "video",
    "whatsapp_zip",
]
FORMATS: tuple[Format, ...] = ("whatsapp", "telegram", "generic", "notes", "meta_messages", "meta_posts", "twitter",
                               "audio", "video", "whatsapp_zip")
MEDIA_FORMATS: frozenset[Format] = frozenset({"audio", "video", "whatsapp_zip"})
HEAD_BYTES = 8192
NOTE_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".text", ".org", ""})


def detect(path: str | PurePath, head: bytes) -> Format:
    """The format of a file whose first bytes are ``head`` (up to `HEAD_BYTES`; fewer is fine).

    Raises:
        ImportFormatError: the head is binary, not text in UTF-8/UTF-16, or JSON of no known export,
            with a message naming what was found.
    """
    name = PurePath(path).name.lower()
    if is_archive_head(head):
        return "twitter"
    if is_zip(head):
        return "whatsapp_zip"
    kind = sniff_media(name, head)
    if kind is not None:
        return kind
    if not looks_like_media(name):
        return _text_format(name, head)
    try:
        return _text_format(name, head)  # content wins: an export that happens to be named .ogg
    except ImportFormatError:
        raise ImportFormatError(f"{name} is named like audio or video but is not: no audio/video header") from None


def _text_format(name: str, head: bytes) -> Format:
    text = _decode(head)
    body = text.lstrip("\ufeff \t\r\n")
    if sniff_whatsapp(body) is not None:  # before JSON: an iOS export starts with "["
        return "whatsapp"
    if body[:1] in ("{", "["):
        return _json_format(body)
    if "\x00" in text:
        raise ImportFormatError(f"{name or 'the file'} is binary, not an export")
    first_line = body.split("\n", 1)[0].strip().lower()
    header = {cell.strip().strip('"') for cell in first_line.split(",")}
    if {"sender", "at", "text"} <= header:
        return "generic"
    if name.endswith(".csv"):
        raise ImportFormatError("a CSV import needs a header naming sender, at and text")
    if PurePath(name).suffix in NOTE_SUFFIXES:
        return "notes"
    raise ImportFormatError(f"unrecognised file {name!r}: not a known export or a text/Markdown note")


def _decode(head: bytes) -> str:
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        encoding = "utf-16"
    else:
        encoding = "utf-8"
    try:
        # final=False: the head may end inside a multi-byte character.
        return codecs.getincrementaldecoder(encoding)("strict").decode(head, final=False)
    except UnicodeDecodeError:
        raise ImportFormatError("the file is binary or not UTF-8 text") from None


def _json_format(body: str) -> Format:
    if '"participants"' in body and ('"sender_name"' in body or '"messages"' in body):
        return "meta_messages"
    if '"personal_information"' in body or '"chats"' in body or ('"messages"' in body and '"type"' in body):
        return "telegram"
    if '"sender"' in body:
        return "generic"
    if any(key in body for key in ('"data"', '"media"', '"creation_timestamp"', '"status_updates')):
        return "meta_posts"
    raise ImportFormatError("JSON of no known export (expected Telegram, Facebook/Instagram or the generic format)")
