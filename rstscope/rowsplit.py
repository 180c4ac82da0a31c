"""A capture's connection rows for ``--json``, encoded by two processes: this one and its reader child.

Each connection's document row is read from the tracker's spill and encoded a column at a time
(:mod:`rstscope.columns`); on one million connections that is about 4 s of the 6.7 s the document takes,
after tracking, while the reader child (:mod:`rstscope.prefetch`), done judging, idles.  So the child
encodes every other unit of :data:`UNIT` connections (ids ``[k * UNIT, (k + 1) * UNIT)`` for odd ``k``)
into a ring of shared memory (:mod:`rstscope.fleet.rowstream`: the same pages over and over, no file),
while this process encodes the others; the document takes the units in order, this process's as it
makes them, the child's copied out of the ring.  The child reads the spill through the descriptors it is
sent (nothing is copied), and each unit's row positions and RST outcomes from a file of the reset table's
columns, so its rows are the ones this process would make, byte for byte.  Should the child fail, this
process encodes what it did not send.  Measured in benchmarks/PLAN.md §25.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import numpy as np

from rstscope import columns, scratch
from rstscope.connections.retire import ConnectionsById, ConnectionStore, RowBatch, Spill
from rstscope.fleet import rowstream
from rstscope.fleet.merge import as_capture
from rstscope.reset_table import ResetTable, pread_exactly

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
        meta, fds, positions = store.shared_rows()
        ours, theirs = socket.socketpair()
        # Where each connection's row is, and the RSTs' outcome columns, to a file the child reads a unit's
        # worth of at a time: in a storm of a million RSTs they are 34 MB, which pickled would be held twice.
        with tempfile.TemporaryFile(prefix="rstscope-outcomes-", dir=scratch.directory()) as f:
            layout = {}
            for name, column in (("positions", positions), *((n, getattr(resets, n)) for n in _OUTCOME_COLUMNS)):
                layout[name] = (f.tell(), column.dtype.str)
                np.ascontiguousarray(column).tofile(f)
            f.flush()
            bounds = np.searchsorted(resets.connection, np.minimum(np.arange(0, len(store) + UNIT, UNIT), len(store)))
            job = _Encode(meta, layout, bounds, len(store))
            try:
                child.run_in_child(job, [*fds, f.fileno(), theirs.fileno()])  # its answer: never read
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
        try:
            for k, lo in enumerate(range(0, len(self), UNIT)):
                hi = min(lo + UNIT, len(self))
                if k % 2 and self._receiver is not None:
                    got = self._from_child(hi - lo)
                    if got is not None:
                        data, lengths = got
                        yield as_capture(data, np.cumsum(lengths) - lengths, lengths, capture_index, separator)
                        continue
                yield from self._here(lo, hi, capture_index, separator)
        finally:
            self.close()

    def _here(self, lo: int, hi: int, capture_index: int, separator: bytes) -> Iterator[bytes]:
        unit = _Unit(self._store.rows_of(lo, hi))
        for block, _ends in columns.connection_row_blocks(unit, self._resets, capture_index, None, None, separator):
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


class _Unit:
    """A unit's connections as a store's :meth:`row_batches` (what the encoder reads)."""

    def __init__(self, batch: RowBatch) -> None:
        self._batch = batch

    def row_batches(self):
        yield self._batch


_OUTCOME_COLUMNS = ("frame", "connection", "verdict", "connection_primary", "in_flight")
"""The reset table's columns a connection's RST outcome is made of (:meth:`.ResetTable.outcome_columns`)."""


@dataclass
class _Encode:
    """The child's job: the rows of the odd units into a ring (capture 0, no separator)."""

    spill: dict
    """What :meth:`.Spill.opened` needs besides the descriptors."""
    layout: dict[str, tuple[int, str]]
    """Where each column is in the file of positions and outcomes (its first byte, its dtype)."""
    bounds: np.ndarray
    """Per unit, its first RST in the outcome columns (one more: the end)."""
    count: int

    def __call__(self, fds: list[int]) -> int:
        *spill_fds, columns_fd, conn_fd = fds
        spill = Spill.opened(self.spill, spill_fds)
        conn = Connection(conn_fd)
        try:
            sender = rowstream.Sender(conn, RING_BYTES)
            sender.result(None)
            sent = 0
            for k in range(1, len(self.bounds) - 1, 2):
                lo, hi = k * UNIT, min((k + 1) * UNIT, self.count)
                batch = RowBatch(spill.conns.take(self._read(columns_fd, "positions", lo, hi)), spill)
                outcomes = {n: self._read(columns_fd, n, *self.bounds[k : k + 2].tolist()) for n in _OUTCOME_COLUMNS}
                resets = ResetTable(outcomes | _NO_ROWS, None, set(), None)
                for block, ends in columns.connection_row_blocks(_Unit(batch), resets, 0, None,
                                                                 None, separator=b""):  # fmt: skip
                    sender.block(block, np.diff(ends, prepend=0))
                    sent += len(ends)
            sender.end(None)
            return sent
        finally:
            conn.close()
            spill.close()
            os.close(columns_fd)

    def _read(self, fd: int, name: str, lo: int, hi: int) -> np.ndarray:
        """Values ``[lo, hi)`` of a column of the file."""
        at, dtype = self.layout[name]
        size = np.dtype(dtype).itemsize
        data = pread_exactly(fd, (hi - lo) * size, at + lo * size, what="the file of RST outcomes")
        return np.frombuffer(data, dtype=dtype)


_NO_ROWS = {"findings": np.zeros(0, np.uint16), "offset": np.zeros(0, np.int64), "length": np.zeros(0, np.uint32)}
"""The reset table's columns of its rows, which the outcomes do not read."""
