"""A shard's encoded connection rows handed to the parent while it writes the document.

Without this, each shard writes its rows to a file of the work directory (``conn-json-{shard}``) and
the parent reads them back once every shard has ended.  Measured on this 2-core VM
(benchmarks/PLAN.md §24), eight 1M-packet pieces: 1.06 GB of rows, whose fresh page-cache pages cost
the shards 1.2-1.5 s of system time each (3 GB into fresh pages: 8.1 s; into pages just freed:
0.7 s), and the parent's copy ran alone after them.  A pipe is no cheaper here (525 MB: 0.3-1.2 s in
the writer, 0.7-1.0 s in the reader).

So the last capture of a ``--json`` run streams: each shard encodes its rows into a ring of shared
memory (a ``memfd`` of :data:`RING_BYTES`, the same pages over and over) and sends, through its pipe
to the parent, where each block lies and its rows' lengths; the parent copies the rows it needs out of
the ring as it writes the document, and says how far it has read.  A block larger than half the ring
travels through the pipe itself.  The shard's process stays alive until its last row is copied.

Messages from the shard (one ``send_bytes`` each, the first byte their kind): :data:`RESULT` (its
:class:`.merge.ShardResult`, pickled, after the ring's file descriptor), :data:`BLOCK` (a block's
place and its rows' lengths), :data:`INLINE` (the same, then the block's bytes as the next message),
:data:`END` (its listen-queue tally, pickled).  From the parent: how many bytes of the ring it has
released, as one integer.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import struct
from collections import deque
from multiprocessing import reduction

import numpy as np

RING_BYTES = 16 << 20
"""Shared memory per shard: several blocks of ROWS_PER_BLOCK rows of about 1 kB."""
RESULT, BLOCK, INLINE, END = b"R", b"B", b"I", b"E"
_PLACE = struct.Struct("<qqq")  # where the block starts (bytes since the first), its bytes, its rows
_RELEASED = struct.Struct("<q")


class Ended(Exception):
    """The shard's process went away before its last row (its outcome file says why)."""


# -- in the shard ------------------------------------------------------------------------------------


class Sender:
    """The shard's end: its rows into the ring, their places through ``conn`` (a duplex Connection)."""

    def __init__(self, conn, ring_bytes: int | None = None) -> None:
        ring_bytes = ring_bytes or RING_BYTES
        self.conn, self._size = conn, ring_bytes
        fd = os.memfd_create("rstscope-rows", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, ring_bytes)
            self._ring = mmap.mmap(fd, ring_bytes)
            reduction.send_handle(conn, fd, os.getppid())  # the receiver maps the same pages
        finally:
            os.close(fd)
        self._head = 0  # bytes since the first block, padding included
        self._released = 0

    def result(self, result) -> None:
        self.conn.send_bytes(RESULT + pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))

    def block(self, data, lengths: np.ndarray) -> None:
        """One block of encoded rows (``lengths``: each row's bytes, in order, adding up to ``len(data)``)."""
        size = len(data)
        lengths = np.ascontiguousarray(lengths, dtype=np.int64)
        while self.conn.poll():  # what the parent has released so far (its messages never pile up)
            self._released = _RELEASED.unpack(self.conn.recv_bytes())[0]
        if size > self._size // 2:  # it would hold the ring alone
            self.conn.send_bytes(INLINE + _PLACE.pack(-1, size, len(lengths)) + lengths.tobytes())
            self.conn.send_bytes(data)
            return
        start = self._head
        if start % self._size + size > self._size:  # never split: a block is one slice of the ring
            start += self._size - start % self._size
        while start + size - self._released > self._size:
            self._released = _RELEASED.unpack(self.conn.recv_bytes())[0]  # wait for the parent to read
        at = start % self._size
        self._ring[at : at + size] = data
        self._head = start + size
        self.conn.send_bytes(BLOCK + _PLACE.pack(start, size, len(lengths)) + lengths.tobytes())

    def end(self, tally) -> None:
        self.conn.send_bytes(END + pickle.dumps(tally, protocol=pickle.HIGHEST_PROTOCOL))
        self._ring.close()


# -- in the parent -----------------------------------------------------------------------------------


class Receiver:
    """The parent's end of one shard's stream (``conn``: the Connection; ``fail``: called with the
    exception when the stream ends early, raises the shard's own error)."""

    def __init__(self, conn, fail) -> None:
        self.conn, self._fail = conn, fail
        self._ring: mmap.mmap | None = None
        self._blocks: deque = deque()  # (data, lengths, end in the ring or None): received, not released
        self._taken = 0  # of them, blocks whose rows were all taken
        self._row = 0  # rows of the next block already taken
        self._offset = 0  # and their bytes

    def _recv(self) -> bytes:
        try:
            return self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            self._fail(exc)  # raises the shard's own error
            raise Ended(str(exc)) from exc

    def result(self):
        """The shard's ShardResult: its first message (with the ring before it).  :class:`Ended` if the
        shard went away first (its outcome file says why)."""
        try:
            fd = reduction.recv_handle(self.conn)
            message = self.conn.recv_bytes()
        except (EOFError, OSError) as exc:
            raise Ended(str(exc)) from exc
        try:
            self._ring = mmap.mmap(fd, 0, prot=mmap.PROT_READ)  # the whole ring, whatever its size
        finally:
            os.close(fd)
        if message[:1] != RESULT:
            raise RuntimeError(f"a shard's stream began with {message[:1]!r}")
        return pickle.loads(message[1:])

    def take(self, count: int, parts: list) -> np.ndarray:
        """The next ``count`` rows: their bytes appended to ``parts`` in pieces (views of the ring: copy
        them, drop them, then :meth:`release`), and each row's length."""
        lengths, mine = [], []
        while count:
            if self._taken == len(self._blocks):
                if self._taken:  # they may fill the ring the shard must write the next block into
                    for i in mine:
                        parts[i] = bytes(parts[i])
                    self.release()
                self._next_block()
            data, block_lengths, _ = self._blocks[self._taken]
            part = block_lengths[self._row : self._row + count]
            size = int(part.sum())
            mine.append(len(parts))
            parts.append(data[self._offset : self._offset + size])
            lengths.append(part)
            self._row += len(part)
            self._offset += size
            count -= len(part)
            if self._row == len(block_lengths):  # the next rows are the next block's
                self._taken += 1
                self._row = self._offset = 0
        return np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)

    def release(self) -> None:
        """Give the ring's room back for the blocks whose rows were all taken (and copied)."""
        end = None
        while self._taken:
            data, _, block_end = self._blocks.popleft()
            self._taken -= 1
            data.release()
            if block_end is not None:
                end = block_end
        if end is not None:
            # The shard may have sent its last block and gone; were rows missing, _recv would say so.
            with contextlib.suppress(OSError):
                self.conn.send_bytes(_RELEASED.pack(end))

    def _next_block(self) -> None:
        message = self._recv()
        kind = message[:1]
        if kind not in (BLOCK, INLINE):
            raise RuntimeError(f"a shard sent {kind!r} where rows were due")
        start, size, rows = _PLACE.unpack_from(message, 1)
        lengths = np.frombuffer(message, dtype=np.int64, count=rows, offset=1 + _PLACE.size)
        if kind == INLINE:
            data, end = memoryview(self._recv()), None
        else:
            at = start % len(self._ring)
            data, end = memoryview(self._ring)[at : at + size], start + size
        self._blocks.append((data, lengths, end))

    def finish(self):
        """The shard's listen-queue tally, once every row was taken."""
        self.release()
        if self._blocks:
            raise RuntimeError("a shard sent more rows than it has connections")
        message = self._recv()
        if message[:1] != END:
            raise RuntimeError(f"a shard sent {message[:1]!r} where its end was due")
        self.close()
        return pickle.loads(message[1:])

    def close(self) -> None:
        while self._blocks:
            self._blocks.popleft()[0].release()
        if self._ring is not None:
            with contextlib.suppress(BufferError):  # views still held (an error midway): unmapped when dropped
                self._ring.close()
            self._ring = None
        self.conn.close()
