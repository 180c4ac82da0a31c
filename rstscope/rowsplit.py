"""A capture's connection rows for ``--json``, encoded by two processes: this one and its reader child.

Each connection's document row is read from the tracker's spill and encoded a column at a time
(:mod:`rstscope.columns`); on one million connections that is about 4 s of the 6.7 s the document takes,
after tracking, while the reader child (:mod:`rstscope.prefetch`), done judging, idles.  So the child
encodes every other unit of :data:`UNIT` connections (ids ``[k * UNIT, (k + 1) * UNIT)`` for odd ``k``)
into a ring of shared memory (:mod:`rstscope.fleet.rowstream`: the same pages over and over, no file),
while this process encodes the others; the document takes the units in order, this process's as it
makes them, the child's copied out of the ring.  The child reads the spill through the descriptors it is
sent (nothing is copied) and the RST outcomes from the reset table's columns, so its rows are the ones
this process would make, byte for byte.  Should the child fail, this process encodes what it did not send.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from rstscope import columns
from rstscope.connections.retire import ConnectionsById, ConnectionStore, Spill
from rstscope.fleet import rowstream
from rstscope.fleet.merge import CAPTURE_0
from rstscope.reset_table import ResetTable

UNIT = columns.ROWS_PER_BLOCK
"""Connections a unit (one encoded block): units alternate between the two processes."""
RING_BYTES = 8 << 20
"""The child's ring: about four units of rows (~1 kB a row).  Mapped by both processes."""


class RowsInChild(ConnectionsById):
    """A tracker's :class:`~rstscope.connections.retire.ConnectionStore` whose document rows
    (:meth:`encoded_row_blocks`, what :func:`rstscope.document.write_json` reads) are encoded half here,
    half by ``child`` (a :class:`~rstscope.prefetch.PrefetchedCapture` done with its other jobs, which this
    object now owns: :meth:`close` stops it).  Everything else is the store's."""

    def __init__(self, store: ConnectionStore, resets: ResetTable, child) -> None:
        self._store, self._resets, self._child = store, resets, child
        self._reset_ids = store.reset_ids
        self.host_ttl = store.host_ttl
        ours, theirs = socket.socketpair()
        meta, fds = store.shared_rows()
        try:
            self._job = child.run_in_child(_Encode(meta, resets.columns(), len(store)), [*fds, theirs.fileno()])
        finally:
            theirs.close()
        self._receiver = rowstream.Receiver(Connection(ours.detach()), lambda exc: None)
        self._ring_mapped = False

    # The store's, as it gives them.

    def __len__(self) -> int:
        return len(self._store)

    def _get(self, ids: np.ndarray):
        return self._store._get(ids)

    def reset_subjects(self, ids: np.ndarray | None = None):
        return self._store.reset_subjects(ids)

    def row_batches(self, size: int | None = None):
        return self._store.row_batches(size)

    def encoded_row_blocks(self, capture_index: int, separator: bytes) -> Iterator[bytes]:
        """Every connection's document row in id order, ``capture`` set to ``capture_index``: blocks of a
        unit's rows joined by ``separator``.  Read once; the child is stopped at the end."""
        head, skip = b'{"capture":%d,' % capture_index, len(CAPTURE_0)
        try:
            for k, lo in enumerate(range(0, len(self), UNIT)):
                hi = min(lo + UNIT, len(self))
                if k % 2 and self._receiver is not None:
                    got = self._from_child(hi - lo)
                    if got is not None:
                        data, lengths = got
                        begin = np.cumsum(lengths) - lengths
                        yield columns.join_rows(data, begin + skip, lengths - skip, separator, head=head)
                        continue
                yield from self._here(lo, hi, capture_index, separator)
        finally:
            self.close()

    def _here(self, lo: int, hi: int, capture_index: int, separator: bytes) -> Iterator[bytes]:
        units = _Units(self._store.rows_of, lo, hi)
        for block, _ends in columns.connection_row_blocks(units, self._resets, capture_index, None, None, separator):
            yield block

    def _from_child(self, count: int) -> tuple[bytes, np.ndarray] | None:
        """The child's next ``count`` rows (copied out of the ring) and their lengths; None once it failed
        (and from then on: this process encodes the rest)."""
        parts: list = []
        try:
            if not self._ring_mapped:
                self._receiver.result()
                self._ring_mapped = True
            lengths = self._receiver.take(count, parts)
            data = b"".join(parts)
            parts.clear()
            self._receiver.release()
            return data, lengths
        except (rowstream.Ended, RuntimeError, OSError):
            parts.clear()
            self._receiver.close()
            self._receiver = None
            return None

    def listen_queue(self) -> dict:
        """``analysis.listen_queue_evidence`` of the connections (the analysis knows it already: tallied as
        they retired)."""
        return columns.listen_queue(self._store)

    def close(self) -> None:
        """Stop the child (it may be waiting for room in its ring) and unmap the ring."""
        if self._receiver is not None:
            self._receiver.close()
            self._receiver = None
        self._child.close()


class _Units:
    """Connections ``[lo, hi)`` of a store as :meth:`row_batches` (what the encoder reads), from
    ``rows_of(lo, hi)``."""

    def __init__(self, rows_of, lo: int, hi: int) -> None:
        self._rows_of, self._lo, self._hi = rows_of, lo, hi

    def row_batches(self):
        yield self._rows_of(self._lo, self._hi)


@dataclass
class _Encode:
    """The child's job: the rows of the odd units into a ring (capture 0, no separator)."""

    spill: dict
    """What :meth:`.Spill.opened` needs besides the descriptors."""
    reset_columns: dict
    count: int

    def __call__(self, fds: list[int]) -> int:
        *spill_fds, conn_fd = fds
        spill = Spill.opened(self.spill, spill_fds)
        conn = Connection(conn_fd)
        try:
            store = ConnectionStore(spill, self.count, np.zeros(0, dtype=np.int64))
            resets = ResetTable(self.reset_columns, None, set(), None)
            sender = rowstream.Sender(conn, RING_BYTES)
            sender.result(None)
            sent = 0
            for lo in range(UNIT, self.count, 2 * UNIT):
                units = _Units(store.rows_of, lo, min(lo + UNIT, self.count))
                for block, ends in columns.connection_row_blocks(units, resets, 0, None, None, separator=b""):
                    sender.block(block, np.diff(ends, prepend=0))
                    sent += len(ends)
            sender.end(None)
            return sent
        finally:
            conn.close()
            spill.close()
