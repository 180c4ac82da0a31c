"""Bytes in: the file (or its gzip content) read block by block through a sliding window.

Memory is bounded by the block size, never by the file size: the window holds
the unread tail of the previous block plus the next block.  gzip is detected
by its magic bytes (1f 8b), not by the file name, and decompressed as a stream
with ``zlib`` so that a stream cut short still yields everything before the
cut (``gzip.GzipFile`` would drop the last buffer with its ``EOFError``).
"""

from __future__ import annotations

import contextlib
import io
import zlib
from typing import BinaryIO

BLOCK_SIZE = 4 << 20
"""Bytes read per refill of the window, once it has grown (it starts at FIRST_BLOCK_SIZE)."""
FIRST_BLOCK_SIZE = 64 << 10
"""The first read is small and each next one 4 times larger, up to BLOCK_SIZE: small files
(most test captures) then never pay for a 16 MiB buffer."""

GZIP_MAGIC = b"\x1f\x8b"
_RAW_READ = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer, CRC checked


class Gunzip:
    """Streaming gzip decompressor over a binary file (several members allowed)."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self._zlib = zlib.decompressobj(_GZIP_WBITS)
        self._input = b""
        self._done = False
        self.damage: str | None = None
        """One-line description of the damage that ended the stream early, if any."""
        self.compressed_read = 0

    def read(self, size: int) -> bytes:
        out: list[bytes] = []
        got = 0
        while got < size and not self._done:
            if not self._input:
                self._input = self._raw.read(_RAW_READ)
                self.compressed_read += len(self._input)
                if not self._input:
                    self._finish_at_eof(out)
                    break
            try:
                piece = self._zlib.decompress(self._input, size - got)
            except zlib.error as exc:
                self.damage = f"gzip data corrupt after {self.compressed_read} compressed bytes ({exc})"
                self._done = True
                break
            self._input = self._zlib.unconsumed_tail
            out.append(piece)
            got += len(piece)
            if self._zlib.eof:
                self._next_member()
        return b"".join(out)

    def _next_member(self) -> None:
        rest = self._zlib.unused_data + self._input
        if not rest:
            rest = self._raw.read(_RAW_READ)
            self.compressed_read += len(rest)
        self._zlib = zlib.decompressobj(_GZIP_WBITS)
        self._input = rest
        if not rest:
            self._done = True
        elif not rest.startswith(GZIP_MAGIC):
            if rest.strip(b"\0"):
                self.damage = "non-gzip data after the end of the gzip stream ignored"
            self._done = True

    def _finish_at_eof(self, out: list[bytes]) -> None:
        self._done = True
        with contextlib.suppress(zlib.error):
            out.append(self._zlib.flush())
        self.damage = f"gzip stream cut short after {self.compressed_read} compressed bytes"


class Source:
    """The decompressed byte stream of a capture file."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        head = raw.peek(2)[:2] if isinstance(raw, io.BufferedReader) else b""
        self.compressed = head == GZIP_MAGIC
        """True when the file is gzip data (by magic bytes)."""
        self._gunzip = Gunzip(raw) if self.compressed else None
        self.damage: str | None = None
        """Why the stream ended early (gzip damage or an I/O error), else None."""

    def readinto(self, target: memoryview) -> int:
        """Fill ``target`` as far as the stream goes; fewer bytes only at its end (or where damage ended it)."""
        size = len(target)
        got = 0
        try:
            if self._gunzip is not None:
                data = self._gunzip.read(size)
                self.damage = self._gunzip.damage
                target[: len(data)] = data
                return len(data)
            while got < size:
                count = self._raw.readinto(target[got:])
                if not count:
                    break
                got += count
        except OSError as exc:
            self.damage = f"read error: {exc.strerror or exc}"
        return got

    def close(self) -> None:
        self._raw.close()


class Window:
    """A sliding window over a :class:`Source`: ``buf[pos:end]`` is the unread data.

    One buffer is reused for every block (the unread tail moves to its front),
    so arrays that view it are valid only until the next :meth:`refill`.
    ``buf`` always has ``pad`` zero bytes after ``end``, so that fixed-width
    gathers near the end of the data stay inside it.
    """

    def __init__(self, source: Source, pad: int = 64):
        self.source = source
        self._pad = pad
        self.buf = bytearray(pad)
        self.pos = 0
        self.end = 0
        self.base = 0
        """File offset (in the decompressed stream) of ``buf[0]``."""
        self.eof = False
        self._block = FIRST_BLOCK_SIZE

    @property
    def available(self) -> int:
        return self.end - self.pos

    def offset(self, pos: int) -> int:
        """File offset of buffer position ``pos``."""
        return self.base + pos

    def refill(self, need: int) -> bool:
        """Make at least ``need`` unread bytes available; False if the stream ends first."""
        while not self.eof and self.available < need:
            keep = self.available
            want = max(min(self._block, BLOCK_SIZE), need - keep)
            self._block *= 4
            size = keep + want + self._pad
            if len(self.buf) < size:
                fresh = bytearray(size)
                fresh[:keep] = memoryview(self.buf)[self.pos : self.end]
                self.buf = fresh
            elif keep:
                view = memoryview(self.buf)
                view[:keep] = bytes(view[self.pos : self.end])
            got = self.source.readinto(memoryview(self.buf)[keep : keep + want])
            self.base += self.pos
            self.pos = 0
            self.end = keep + got
            self.buf[self.end : self.end + self._pad] = bytes(self._pad)
            if not got:
                self.eof = True
        return self.available >= need
