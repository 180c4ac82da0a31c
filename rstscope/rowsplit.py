"""A capture's connection rows for ``--json``, encoded by two processes: this one and its reader child.

Each connection's document row is read from the tracker's spill and encoded a column at a time
(:mod:`rstscope.columns`); on one million connections that is about 4 s of the 6.7 s the document takes,
after tracking, while the reader child (:mod:`rstscope.prefetch`), done judging, idles.  So the child
encodes every other unit of :data:`UNIT` connections (ids ``[k * UNIT, (k + 1) * UNIT)``) of those not
encoded early (below) into a ring of shared memory (:mod:`rstscope.fleet.rowstream`: the same pages over
and over, no file), while this process encodes the others; the document takes the units in order, this
process's as it makes them, the child's copied out of the ring.  The child reads the spill through the
descriptors it is sent (nothing is copied), and each unit's row positions and RST outcomes from a file of
the reset table's columns, so its rows are the ones this process would make, byte for byte.  Should the
child fail, this process encodes what it did not send.  Measured in benchmarks/PLAN.md §25.

Most units need not wait for the end (:class:`EarlyUnits`): the row of a connection that retired without a
RST is final, so once most of a unit's connections retired, the child (idle for much of the tracking of
short connections) encodes those rows into a file; at the end only the rows of the unit's other connections
(not retired then, or with a RST and so an outcome) are encoded, and put in their places.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import NamedTuple

import numpy as np

from rstscope import columns, prefetch, scratch
from rstscope.connections.retire import ConnectionsById, ConnectionStore, RowBatch, Spill, fit
from rstscope.fleet import rowstream
from rstscope.fleet.merge import as_capture
from rstscope.reset_table import ResetTable, pread_exactly
from rstscope.status import RstscopeError

UNIT = columns.ROWS_PER_BLOCK
"""Connections a unit (one encoded block): units alternate between the two processes."""
RING_BYTES = 8 << 20
"""The child's ring: about four units of rows (~1 kB a row).  Mapped by both processes."""


class RowsInChild(ConnectionsById):
    """A tracker's :class:`~rstscope.connections.retire.ConnectionStore` whose document rows
    (:meth:`encoded_row_blocks`, what :func:`rstscope.document.write_json` reads) are encoded half here,
    half by ``child`` (a :class:`~rstscope.prefetch.PrefetchedCapture` done with its other jobs, which this
    object now owns: :meth:`close` stops it).  Everything else is the store's."""

    def __init__(self, store: ConnectionStore, resets: ResetTable, child, early: EarlyUnits | None = None) -> None:
        """``early``: the units the child encoded while the capture was tracked (this object closes it)."""
        self._store, self._resets, self._child = store, resets, child
        self._early = early
        self._reset_ids = store.reset_ids
        self.host_ttl = store.host_ttl
        done = early.settle() if early is not None else []
        self._early_units = set(done)
        self._late = _LateRows(store, resets, early, done)
        # The units left alternate between this process and the child.
        left = [k for k in range(-(-len(store) // UNIT)) if k not in self._early_units]
        self._theirs = set(left[1::2])
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
            job = _Encode(meta, layout, bounds, len(store), sorted(self._theirs))
            try:
                child.run_in_child(job, [*fds, f.fileno(), theirs.fileno()])  # its answer: never read
            finally:
                theirs.close()
        self._receiver = rowstream.Receiver(Connection(ours.detach()), lambda exc: None)
        self._ring_mapped = False
        if early is not None:
            early.handed = True

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
                if k in self._early_units:
                    block = self._early_block(k, lo, hi, capture_index, separator)
                    if block is not None:
                        yield block
                        continue
                if k in self._theirs and self._receiver is not None:
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

    def _early_block(self, k: int, lo: int, hi: int, capture_index: int, separator: bytes) -> bytearray | None:
        """Unit ``k`` (connections ``[lo, hi)``) from the rows the child encoded early, and in their places those
        encoded here (:class:`_LateRows`); None if the file cannot give them."""
        try:
            data, early_lengths = self._early.read(k)
        except OSError:
            return None
        at = self._early.encoded(k) - lo
        begin, lengths = np.zeros(hi - lo, dtype=np.int64), np.zeros(hi - lo, dtype=np.int64)
        begin[at], lengths[at] = np.cumsum(early_lengths) - early_lengths, early_lengths
        ids, late, late_begin, late_lengths = self._late.rows(k)
        begin[ids - lo], lengths[ids - lo] = len(data) + late_begin, late_lengths
        return as_capture(b"".join([data, late]), begin, lengths, capture_index, separator)

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
        if self._early is not None:
            self._early.close()


class _LateRows:
    """For each unit encoded early, the rows encoded at the end: of its connections not encoded then (they had
    not retired), and of those with a RST (with their outcomes).  Those of a run of consecutive units are
    encoded together, up to a block of rows (encoding a block costs about 1 ms whatever its size, and a unit of
    short connections has a hundred or two of these rows)."""

    def __init__(self, store: ConnectionStore, resets: ResetTable, early: EarlyUnits | None, units: list[int]) -> None:
        """``units``: those ``early`` encoded, in order."""
        self._store, self._resets = store, resets
        reset_ids = np.unique(resets.connection)
        late = []
        for k in units:
            lo = k * UNIT
            at_the_end = np.ones(UNIT, dtype=bool)
            at_the_end[early.encoded(k) - lo] = False
            # (None of those saw a RST, as EarlyUnits knew them: whatever it knew, a RST's outcome is written.)
            at_the_end[reset_ids[np.searchsorted(reset_ids, lo) : np.searchsorted(reset_ids, lo + UNIT)] - lo] = True
            late.append(lo + np.flatnonzero(at_the_end))
        self._ids = np.concatenate(late) if late else np.zeros(0, dtype=np.int64)
        self._runs: list[tuple[int, int]] = []  # (first unit, last unit)
        in_run = 0  # rows of the last run
        for k, rows in zip(units, late, strict=True):
            if self._runs and k == self._runs[-1][1] + 1 and in_run + len(rows) <= columns.ROWS_PER_BLOCK:
                self._runs[-1], in_run = (self._runs[-1][0], k), in_run + len(rows)
            else:
                self._runs.append((k, k))
                in_run = len(rows)
        self._run = -1  # the run encoded
        self._encoded = (self._ids[:0], b"", self._ids[:0])  # its ids, rows and each row's end

    def rows(self, k: int) -> tuple[np.ndarray, bytes, np.ndarray, np.ndarray]:
        """Unit ``k``'s connections encoded at the end (ids), their rows, where each row begins there and its
        length (``k`` a unit encoded early; asked for in order)."""
        if self._run < 0 or self._runs[self._run][1] < k:  # unit k's run (runs of units not read are skipped)
            self._run = next(i for i in range(self._run + 1, len(self._runs)) if self._runs[i][1] >= k)
            self._encoded = self._encode(*self._runs[self._run])
        ids, data, ends = self._encoded
        lo, hi = np.searchsorted(ids, [k * UNIT, (k + 1) * UNIT]).tolist()
        first = int(ends[lo - 1]) if lo else 0
        lengths = np.diff(ends[lo:hi], prepend=first)
        return ids[lo:hi], data[first : first + int(lengths.sum())], np.cumsum(lengths) - lengths, lengths

    def _encode(self, first: int, last: int) -> tuple[np.ndarray, bytes, np.ndarray]:
        ids = self._ids[slice(*np.searchsorted(self._ids, [first * UNIT, (last + 1) * UNIT]).tolist())]
        if not len(ids):
            return ids, b"", ids
        # All connections with a RST of these units are among them, as the outcomes' encoder needs.
        late = _Unit(self._store.rows_with(ids))  # a block of rows at most: one block
        ((data, ends),) = columns.connection_row_blocks(late, self._resets, 0, None, None, separator=b"")
        return ids, bytes(data), ends


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
    """The child's job: the rows of its units (every other one not encoded early) into a ring (capture 0, no
    separator)."""

    spill: dict
    """What :meth:`.Spill.opened` needs besides the descriptors."""
    layout: dict[str, tuple[int, str]]
    """Where each column is in the file of positions and outcomes (its first byte, its dtype)."""
    bounds: np.ndarray
    """Per unit, its first RST in the outcome columns (one more: the end)."""
    count: int
    units: list[int]
    """The units to encode, in order."""

    def __call__(self, fds: list[int]) -> int:
        *spill_fds, columns_fd, conn_fd = fds
        spill = Spill.opened(self.spill, spill_fds)
        conn = Connection(conn_fd)
        try:
            sender = rowstream.Sender(conn, RING_BYTES)
            sender.result(None)
            sent = 0
            for k in self.units:
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


EARLY_UNITS = 8
"""Units a job encodes while the capture is tracked, one after the other (the child holds a unit's rows at a
time, about 2 MB encoded and the columns they are made of): one job is given at a time, and units retire
in bursts, at each idle sweep."""
EARLY_MAX_LATE = UNIT // 4
"""A unit is encoded early once at most this many of its rows are left to the end: those of its connections
that have not retired, and of those that saw a RST (encoded again then, with their outcomes; a storm of
RSTs: nothing to gain)..."""
EARLY_SETTLED_POLLS = 8
"""... and once all its connections retired, or none for this many chunks: a unit whose connections all close
retires whole, at an idle sweep or two (every STALE_AFTER_FRAMES / 4 frames), but a busy server's long-lived
connections and unanswered SYNs retire only at the end, wherever they are."""


EARLY_MIN_FREE_BYTES = 1 << 30
"""No unit is given once the file system of the early rows has less free space than this: they double the
scratch space ``--json`` takes (about 1 kB a connection), and the tracker's spill, which must be written,
shares it (:mod:`rstscope.scratch`)."""


def _free_bytes(fd: int) -> int:
    """Free space for this process on the file system of an open file (as much as it likes, where the system
    cannot say)."""
    try:
        st = os.fstatvfs(fd)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


class _EarlyRows(NamedTuple):
    """Where a unit's rows encoded while the capture was tracked are in the file: ``size`` bytes from
    ``offset``, then each row's length (``count`` int32)."""

    offset: int
    size: int
    count: int


class EarlyUnits:
    """The units the reader child encodes while the capture is tracked (``--json``), for :class:`RowsInChild`.

    The tracker tells :meth:`retired` of the connections as they retire; after each chunk (:meth:`poll`),
    unless a job given is not answered yet, the child is given up to :data:`EARLY_UNITS` units that settled
    (:data:`EARLY_SETTLED_POLLS`) and whose rows left to the end would be few (:data:`EARLY_MAX_LATE`), to
    encode the rows of their retired connections without a RST into a file of this object's
    (:class:`_EncodeEarly`); the child runs it after the jobs given before (judging RSTs).  :meth:`settle`
    waits for the job in progress and says which units were encoded.  A job that failed, or scratch space
    running low (:data:`EARLY_MIN_FREE_BYTES`), ends the early encoding: the units left are encoded at the
    end."""

    def __init__(self, child, tracker) -> None:
        self._child, self._tracker = child, tracker
        # Per connection, whether it retired without a RST before its unit was given: the rows the child encodes
        # (a byte a connection, all this keeps of them).
        self._final = np.zeros(0, dtype=bool)
        self._retired = np.zeros(0, dtype=np.int64)  # per unit: its connections that retired
        self._reset = np.zeros(0, dtype=np.int64)  # ... and of them, those that saw a RST
        self._given = np.zeros(0, dtype=bool)
        self._polls = 0
        self._changed = np.zeros(0, dtype=np.int64)  # per unit: the poll count when a connection of it last retired
        self._pending = None  # the job given and not answered
        self._done: dict[int, _EarlyRows] = {}
        self._file = None
        self._failed = False
        self.handed = False
        """Whether a :class:`RowsInChild` took this object (and closes it)."""

    def retired(self, batch: RowBatch) -> None:
        """These connections retired (the tracker's ``on_retired``)."""
        rows = batch.rows
        ids = rows["id"]
        units = ids // UNIT
        size = int(units.max()) + 1 if len(units) else 0
        reset = rows["resets"][:, 1] > 0  # their rows are encoded at the end anyway, with their outcomes
        self._retired, self._reset = fit(self._retired, size, 0), fit(self._reset, size, 0)
        self._given, self._changed = fit(self._given, size, False), fit(self._changed, size, 0)
        self._final = fit(self._final, size * UNIT, False)
        final = ids[~reset]
        self._final[final[~self._given[final // UNIT]]] = True
        self._retired[:size] += np.bincount(units, minlength=size)
        self._reset[:size] += np.bincount(units[reset], minlength=size)
        self._changed[units] = self._polls

    def poll(self) -> None:
        """Collect the job given if it is done; if none is pending, give the child the next units ready."""
        self._polls += 1
        if self._pending is not None and self._pending.ready():
            self._answer()
        if self._pending is not None or self._failed:
            return
        whole = min(self._tracker.count // UNIT, len(self._retired))  # units all of whose connections started
        retired = self._retired[:whole]
        settled = (retired == UNIT) | (self._changed[:whole] < self._polls - EARLY_SETTLED_POLLS)
        late = UNIT - retired + self._reset[:whole]
        units = np.flatnonzero(settled & (late <= EARLY_MAX_LATE) & ~self._given[:whole])[:EARLY_UNITS].tolist()
        if units:
            self._give(units)

    def _give(self, units: list[int]) -> None:
        if self._file is None:  # open until close(): RowsInChild reads it after tracking
            self._file = tempfile.TemporaryFile(prefix="rstscope-early-rows-", dir=scratch.directory())  # noqa: SIM115
        if _free_bytes(self._file.fileno()) < EARLY_MIN_FREE_BYTES:  # the spill needs the room more: no more jobs
            self._failed = True
            return
        self._given[units] = True
        ids = [self.encoded(k) for k in units]
        meta, fds, positions = self._tracker.shared_rows(np.concatenate(ids))
        parts = list(zip(units, np.split(positions, np.cumsum([len(unit) for unit in ids])[:-1]), strict=True))
        try:
            self._pending = self._child.run_in_child(_EncodeEarly(meta, parts), [*fds, self._file.fileno()])
        except OSError:  # the child is gone
            self._failed = True

    def _answer(self) -> None:
        job, self._pending = self._pending, None
        try:
            self._done.update((k, _EarlyRows(*where)) for k, *where in job.result())
        except (RstscopeError, OSError):
            self._failed = True

    def settle(self) -> list[int]:
        """Wait for the job in progress; the units encoded early, in order."""
        if self._pending is not None:
            self._answer()
        return sorted(self._done)

    def encoded(self, k: int) -> np.ndarray:
        """The connections of unit ``k`` (given to the child) whose rows the child encodes."""
        return k * UNIT + np.flatnonzero(self._final[k * UNIT : (k + 1) * UNIT])

    def read(self, k: int) -> tuple[bytes, np.ndarray]:
        """Unit ``k``'s rows encoded early, and each one's length; OSError if the file cannot give them."""
        where = self._done[k]
        data = pread_exactly(self._file.fileno(), where.size + 4 * where.count, where.offset,
                             what="the file of rows encoded early")  # fmt: skip
        return data[: where.size], np.frombuffer(data, np.int32, offset=where.size).astype(np.int64)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@contextlib.contextmanager
def while_tracking(capture, tracker) -> Iterator[EarlyUnits | None]:
    """:class:`EarlyUnits` for this capture and tracker if the capture is read by a child, else None.  Closed
    at the end unless :class:`RowsInChild` took it (``handed``), and on an error."""
    if not isinstance(capture, prefetch.PrefetchedCapture):
        yield None
        return
    early = EarlyUnits(capture, tracker)
    try:
        yield early
    except BaseException:
        early.close()
        raise
    if not early.handed:
        early.close()


@dataclass
class _EncodeEarly:
    """The child's job while the capture is tracked: rows of these units (each: its number and where the rows
    of its connections to encode are, none with a RST), for capture 0 without separator, appended to the file,
    each unit's followed by each row's length (int32); per unit, its number, where its rows begin in the file,
    their bytes and how many (:class:`_EarlyRows`)."""

    spill: dict
    units: list[tuple[int, np.ndarray]]

    def __call__(self, fds: list[int]) -> list[tuple[int, int, int, int]]:
        *spill_fds, out = fds
        try:
            spill = Spill.opened(self.spill, spill_fds)
        except BaseException:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        try:
            done = []
            for k, positions in self.units:
                batch = RowBatch(spill.conns.take(positions), spill)
                offset = at = os.fstat(out).st_size
                lengths = []
                for block, ends in columns.connection_row_blocks(_Unit(batch), _NO_RESETS, 0, None, None,
                                                                 separator=b""):  # fmt: skip
                    at = _write_at(out, block, at)
                    lengths.append(np.diff(ends, prepend=0).astype(np.int32))
                lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int32)
                _write_at(out, lengths.tobytes(), at)
                done.append((k, offset, at - offset, len(lengths)))
            return done
        finally:
            spill.close()
            os.close(out)


def _write_at(fd: int, data, at: int) -> int:
    """Write all of ``data`` at byte ``at`` of the file; where it ends."""
    view = memoryview(data)
    while view.nbytes:
        written = os.pwrite(fd, view, at)
        view, at = view[written:], at + written
    return at


_NO_RESETS = ResetTable({name: np.zeros(0, np.int64) for name in _OUTCOME_COLUMNS} | _NO_ROWS, None, set(), None)
"""No RST: the outcomes of the rows encoded early."""
