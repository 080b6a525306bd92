"""WhatsApp "Export chat → Attach media": a ZIP of the chat text plus the files its lines name.

Android names the text ``WhatsApp Chat with Ana.txt``, iOS ``_chat.txt`` (the chat's name is then the
archive's: ``WhatsApp Chat - Ana.zip``). Lines point at the media as ``<attached: 00000012-AUDIO-….opus>``
(iOS) or ``PTT-20240312-WA0004.opus (file attached)`` (Android); the WhatsApp parser keeps that name in
`ImportedMessage.attachment_name`.

Nothing is extracted to disk: members are read as streams from the (seekable) archive. Before anything is
read, `open_chat_zip` refuses what could exhaust the machine — more than `MAX_MEMBERS` entries or a
central directory over `MAX_DIRECTORY_BYTES` (checked from the end record, before `zipfile` builds its
index), encrypted members, a member larger than its kind's limit, or one compressed more than `MAX_RATIO`
times (a zip bomb) — and `zipfile` itself never yields more than a member's declared size and checks each
member's CRC at its end.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import PurePath
from typing import IO

from voice_server.avatar.importers.recordings import AUDIO_SUFFIXES
from voice_server.avatar.importers.records import NOBODY, ImportedMessage, ImportFormatError, ImportReport, Me, Tally
from voice_server.avatar.importers.whatsapp import conversation_from_filename
from voice_server.avatar.importers.whatsapp import parse as parse_chat

MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 64 << 20
MAX_CHAT_BYTES = 1 << 30
MAX_AUDIO_BYTES = 256 << 20  # a voice note is rarely over 10 MB; a 256 MB one is hours long
MAX_RATIO = 100  # text compresses ~10x and audio not at all; bombs reach 1000x
RATIO_FLOOR = 1 << 20  # small members may compress well without harm
TRANSCRIBED = frozenset({"voice", "audio"})
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"


@dataclass(frozen=True, slots=True)
class ChatZip:
    """An archive `open_chat_zip` accepted: the open `zipfile.ZipFile`, the chat member and the chat's name.

    ``members`` maps each file's base name to its entry (lines name attachments without folders).
    """

    archive: zipfile.ZipFile
    chat: zipfile.ZipInfo
    conversation: str
    members: dict[str, zipfile.ZipInfo]

    def open_member(self, info: zipfile.ZipInfo) -> IO[bytes]:
        """A member as a (slowly) seekable binary stream, decompressed as it is read."""
        return self.archive.open(info)

    def attachment(self, message: ImportedMessage) -> zipfile.ZipInfo | None:
        """The archive entry of the voice note or audio file ``message`` names, if the archive holds it."""
        if message.attachment not in TRANSCRIBED or not message.attachment_name:
            return None
        return self.members.get(PurePath(message.attachment_name).name)

    def close(self) -> None:
        self.archive.close()


def is_zip(head: bytes) -> bool:
    """Whether ``head`` starts like a ZIP archive (an empty one included)."""
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def open_chat_zip(f: IO[bytes], name: str = "") -> ChatZip:
    """Check the archive's shape and find its chat; the caller closes the result (not ``f``).

    Raises:
        ImportFormatError: not a ZIP, damaged, too many entries, encrypted, a member too large or too
            compressed, or no WhatsApp chat text inside.
    """
    entries = _directory_entries(f)
    if entries > MAX_MEMBERS:
        raise ImportFormatError(f"the archive lists {entries:,} files; the limit is {MAX_MEMBERS:,}")
    f.seek(0)
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise ImportFormatError(f"not a readable ZIP archive ({exc})") from None
    try:
        chat, members = _members(archive)
        conversation = _conversation(chat.filename, name)
        return ChatZip(archive, chat, conversation, members)
    except BaseException:
        archive.close()
        raise


def survey(f: IO[bytes], name: str = "", me: Me = NOBODY) -> ImportReport:
    """The archive's chat surveyed like a text export (`importers.survey`): counts and participants."""
    chat = open_chat_zip(f, name)
    try:
        tally = Tally()
        with chat.open_member(chat.chat) as member:
            for record in parse_chat(member, me=me, conversation=chat.conversation):
                tally.add(record)
        return tally.report()
    finally:
        chat.close()


def _directory_entries(f: IO[bytes]) -> int:
    """The entry count the end-of-central-directory record states (zip64 included), read before `zipfile`
    loads the whole directory into memory."""
    f.seek(0, 2)
    size = f.tell()
    f.seek(max(0, size - 65_557))  # the end record (22 bytes) plus the longest comment
    tail = f.read()
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise ImportFormatError("not a readable ZIP archive (no end of central directory: truncated?)")
    entries, directory_size = struct.unpack("<xxxxxxxxxxHI", tail[at : at + 16])
    locator = tail.rfind(_EOCD64_LOCATOR, 0, at)
    if locator >= 0 and at - locator == 20:
        (offset,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        f.seek(offset)
        record = f.read(56)
        if len(record) == 56 and record[:4] == b"PK\x06\x06":
            entries, directory_size = struct.unpack("<QQ", record[32:48])
    if directory_size > MAX_DIRECTORY_BYTES:
        raise ImportFormatError(f"the archive's directory is {directory_size:,} bytes: not a chat export")
    return int(entries)


def _members(archive: zipfile.ZipFile) -> tuple[zipfile.ZipInfo, dict[str, zipfile.ZipInfo]]:
    chats: list[zipfile.ZipInfo] = []
    texts: list[zipfile.ZipInfo] = []
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        if info.is_dir():
            continue
        base = PurePath(info.filename).name
        if info.flag_bits & 0x1:
            raise ImportFormatError(f"{base} in the archive is encrypted: export the chat again without a password")
        is_text = base.lower().endswith(".txt")
        if is_text:
            texts.append(info)
            if base == "_chat.txt" or base.startswith("WhatsApp Chat"):
                chats.append(info)
        if is_text or _is_audio(base):  # only what this importer reads is checked: photos are never opened
            limit = MAX_CHAT_BYTES if is_text else MAX_AUDIO_BYTES
            if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(1, info.compress_size):
                raise ImportFormatError(f"{base} in the archive expands "
                                        f"{info.file_size // max(1, info.compress_size):,} times: refused (a ZIP "
                                        "bomb?)")
            if info.file_size > limit:
                raise ImportFormatError(f"{base} in the archive is {info.file_size:,} bytes; the limit is {limit:,}")
        members.setdefault(base, info)
    if not chats and len(texts) == 1:
        chats = texts  # a renamed chat file: the only text in the archive
    if not chats:
        raise ImportFormatError('no WhatsApp chat in the archive (expected _chat.txt or "WhatsApp Chat with ….txt")')
    if len(chats) > 1:
        raise ImportFormatError(f"the archive holds {len(chats)} chats; import one export at a time")
    return chats[0], members


def _is_audio(base: str) -> bool:
    return PurePath(base).suffix.lower() in AUDIO_SUFFIXES


def _conversation(member: str, archive_name: str) -> str:
    base = PurePath(member).name
    if base != "_chat.txt":
        return conversation_from_filename(base)
    stem = PurePath(archive_name).name
    stem = stem[: -len(".zip")] if stem.lower().endswith(".zip") else stem
    return conversation_from_filename(stem + ".txt") if stem else ""
