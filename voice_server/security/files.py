"""Files sealed in chunks, so a 1 GB video is encrypted and decrypted as a stream, never whole in memory.

Layout: ``MAGIC`` then records ``length (4 bytes, big-endian) ‖ sealed chunk`` where each chunk is at most
`CHUNK` plaintext bytes sealed by `UserKey.seal_bytes` with associated data naming the file, the chunk's index
and whether it is the last one. Reordered, dropped or swapped chunks fail to open, and so does a file cut
after any chunk (its last remaining chunk was not sealed as the last one). An empty file is one empty final
chunk.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from voice_server.security.keys import DecryptionError, UserKey

MAGIC: Final = b"SOMA-ENC\x01"
CHUNK: Final = 256 * 1024
_LEN = struct.Struct(">I")
_MAX_RECORD: Final = CHUNK + 64  # a sealed chunk is CHUNK + 29 bytes; anything larger is corruption


def _context(context: str, index: int, final: bool) -> str:
    return f"{context}|{index}|{'last' if final else 'more'}"


class FileSealer:
    """Seals a stream of plaintext bytes into the file format (sans-I/O: bytes in, records out).

    Call `feed` with data as it arrives, then `finish` once; write what each returns, in order.
    """

    def __init__(self, key: UserKey, context: str) -> None:
        self._key = key
        self._context = context
        self._index = 0
        self._pending = bytearray()
        self._started = False
        self.plaintext_bytes = 0

    def _record(self, chunk: bytes, final: bool) -> bytes:
        sealed = self._key.seal_bytes(chunk, _context(self._context, self._index, final))
        self._index += 1
        return _LEN.pack(len(sealed)) + sealed

    def feed(self, data: bytes) -> bytes:
        """Seal every full chunk ``data`` completes, keeping one chunk back (it may turn out to be the last)."""
        out = bytearray() if self._started else bytearray(MAGIC)
        self._started = True
        self._pending += data
        self.plaintext_bytes += len(data)
        while len(self._pending) > CHUNK:
            out += self._record(bytes(self._pending[:CHUNK]), final=False)
            del self._pending[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        """Seal the last chunk (possibly empty)."""
        out = bytearray() if self._started else bytearray(MAGIC)
        self._started = True
        out += self._record(bytes(self._pending), final=True)
        self._pending.clear()
        return bytes(out)


def open_records(fh: BinaryIO, key: UserKey, context: str) -> Iterator[bytes]:
    """Yield the plaintext chunks of a sealed file, checking each one (blocking I/O: run in a thread).

    Raises:
        DecryptionError: Wrong key or file, altered, reordered or truncated.
    """
    if fh.read(len(MAGIC)) != MAGIC:
        raise DecryptionError("not a sealed file")
    index = 0
    header = fh.read(_LEN.size)
    while header:
        if len(header) != _LEN.size:
            raise DecryptionError("sealed file is truncated")
        (length,) = _LEN.unpack(header)
        if length > _MAX_RECORD:
            raise DecryptionError("sealed file is corrupted")
        record = fh.read(length)
        if len(record) != length:
            raise DecryptionError("sealed file is truncated")
        header = fh.read(_LEN.size)
        yield key.open_bytes(record, _context(context, index, final=not header))
        index += 1
    if index == 0:
        raise DecryptionError("sealed file is truncated")


async def write_sealed(path: Path, key: UserKey, context: str, chunks: AsyncIterator[bytes], limit: int) -> int:
    """Seal ``chunks`` into ``path`` (created 0600 via a temporary name, renamed when complete); returns the
    plaintext size.

    Raises:
        ValueError: More than ``limit`` bytes arrived (nothing is left on disk).
    """
    sealer = FileSealer(key, context)
    tmp = path.with_name(path.name + ".part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    fh = os.fdopen(fd, "wb")
    try:
        buffered = bytearray()
        async for data in chunks:
            buffered += data
            if sealer.plaintext_bytes + len(buffered) > limit:
                raise ValueError(f"the file exceeds {limit} bytes")
            if len(buffered) >= CHUNK:
                # Sealing and writing a chunk off the event loop: other calls keep their 20 ms pace.
                await asyncio.to_thread(fh.write, sealer.feed(bytes(buffered)))
                buffered.clear()
        await asyncio.to_thread(lambda: fh.write(sealer.feed(bytes(buffered)) + sealer.finish()))
        await asyncio.to_thread(os.fsync, fh.fileno())
        fh.close()
        os.replace(tmp, path)
        return sealer.plaintext_bytes
    except BaseException:
        fh.close()
        tmp.unlink(missing_ok=True)
        raise


async def read_sealed(path: Path, key: UserKey, context: str) -> AsyncIterator[bytes]:
    """The plaintext of a sealed file, chunk by chunk (each read and opened in a worker thread).

    Raises:
        DecryptionError: See `open_records`. A failure after the first chunk was yielded ends the stream.
    """
    with await asyncio.to_thread(path.open, "rb") as fh:
        records = open_records(fh, key, context)
        while True:
            chunk = await asyncio.to_thread(next, records, None)
            if chunk is None:
                return
            yield chunk
