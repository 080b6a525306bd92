"""Files sealed in chunks, so a 1 GB video is encrypted and decrypted as a stream, never whole in memory.

Layout: ``MAGIC`` then records ``length (4 bytes, big-endian) ‖ sealed chunk`` where each chunk is at most
`CHUNK` plaintext bytes sealed by `UserKey.seal_bytes` with associated data naming the file, the chunk's index
and whether it is the last one. Reordered, dropped or swapped chunks fail to open, and so does a file cut
after any chunk (its last remaining chunk was not sealed as the last one). An empty file is one empty final
chunk.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

from voice_server.security.keys import SEALED_OVERHEAD, DecryptionError, UserKey

MAGIC: Final = b"SOMA-ENC\x01"
CHUNK: Final = 256 * 1024
_LEN = struct.Struct(">I")
_MAX_RECORD: Final = CHUNK + SEALED_OVERHEAD  # anything larger is corruption


def _context(context: str, index: int, final: bool) -> str:
    return f"{context}|{index}|{'last' if final else 'more'}"


class FileSealer:
    """Seals a stream of plaintext bytes into the file format (sans-I/O: bytes in, records out).

    Call `feed` with data as it arrives, then `finish` once; write what each returns, in order. Each call
    allocates its output once and seals chunks straight into it (at 256 KiB a chunk, temporary copies would
    make throughput depend on how the allocator maps fresh memory).
    """

    def __init__(self, key: UserKey, context: str) -> None:
        self._key = key
        self._context = context
        self._index = 0
        self._pending = bytearray()
        self._started = False
        self.plaintext_bytes = 0

    def _seal(self, sizes: int, final_last: bool) -> bytearray:
        """Seal the first ``sizes`` chunks of the pending data (the last one flagged final if asked)."""
        header = b"" if self._started else MAGIC
        self._started = True
        lengths = [min(CHUNK, len(self._pending) - i * CHUNK) for i in range(sizes)]
        out = bytearray(len(header) + sum(_LEN.size + n + SEALED_OVERHEAD for n in lengths))
        out[: len(header)] = header
        position, consumed = len(header), 0
        with memoryview(self._pending) as plain, memoryview(out) as view:
            for i, n in enumerate(lengths):
                final = final_last and i == sizes - 1
                _LEN.pack_into(view, position, n + SEALED_OVERHEAD)
                position += _LEN.size
                target = view[position : position + n + SEALED_OVERHEAD]
                self._key.seal_into(plain[consumed : consumed + n], _context(self._context, self._index, final), target)
                position += n + SEALED_OVERHEAD
                consumed += n
                self._index += 1
        del self._pending[:consumed]
        return out

    def feed(self, data: bytes | bytearray) -> bytearray:
        """Seal every full chunk ``data`` completes, keeping one chunk back (it may turn out to be the last)."""
        self._pending += data
        self.plaintext_bytes += len(data)
        full = max(0, (len(self._pending) - 1) // CHUNK)  # always keep the last (possibly full) chunk back
        return self._seal(full, final_last=False)

    def finish(self) -> bytearray:
        """Seal the last chunk (possibly empty)."""
        return self._seal(1, final_last=True)


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

        def seal_and_write(data: bytes | bytearray, last: bool) -> None:
            fh.write(sealer.feed(data))
            if last:
                fh.write(sealer.finish())

        async for data in chunks:
            buffered += data
            if sealer.plaintext_bytes + len(buffered) > limit:
                raise ValueError(f"the file exceeds {limit} bytes")
            if len(buffered) >= CHUNK:
                # Sealing and writing off the event loop (both, in the thread): other calls keep their pace.
                await asyncio.to_thread(seal_and_write, buffered, False)  # awaited before `buffered` changes
                buffered.clear()
        await asyncio.to_thread(seal_and_write, buffered, True)
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


class SealedReader(io.RawIOBase):
    """A sealed file read as a seekable, read-only binary file of its plaintext (blocking: use in a thread).

    Every chunk but the last holds exactly `CHUNK` bytes, so a plaintext offset maps to one record; one
    opened chunk is kept (a parser's sequential reads cost one decryption per chunk). Wrap it in
    `io.BufferedReader` for line reads.

    Raises:
        DecryptionError: On open (bad header, truncated) or on a read (a chunk altered or out of place).
    """

    def __init__(self, path: Path, key: UserKey, context: str) -> None:
        super().__init__()
        self._fh = path.open("rb")
        self._key = key
        self._context = context
        full = _LEN.size + _MAX_RECORD
        body = os.fstat(self._fh.fileno()).st_size - len(MAGIC)
        if self._fh.read(len(MAGIC)) != MAGIC or body < _LEN.size + SEALED_OVERHEAD:
            self._fh.close()
            raise DecryptionError("not a sealed file")
        self._chunks = -(-body // full)
        self._pos = 0
        self._cached: tuple[int, bytes] = (-1, b"")
        try:
            # Opening the last chunk authenticates the end up front: a truncated file fails here.
            self.size = (self._chunks - 1) * CHUNK + len(self._chunk(self._chunks - 1))
        except BaseException:
            self._fh.close()
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def _chunk(self, index: int) -> bytes:
        if self._cached[0] != index:
            self._fh.seek(len(MAGIC) + index * (_LEN.size + _MAX_RECORD))
            (length,) = _LEN.unpack(self._fh.read(_LEN.size))
            record = self._fh.read(length)
            if length > _MAX_RECORD or len(record) != length:
                raise DecryptionError("sealed file is corrupted")
            final = index == self._chunks - 1
            self._cached = (index, self._key.open_bytes(record, _context(self._context, index, final)))
        return self._cached[1]

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        index, start = divmod(self._pos, CHUNK)
        data = self._chunk(index)[start : start + len(buffer)]
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()
