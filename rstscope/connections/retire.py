"""Retirement and spill: how memory follows the connections alive at once, not the capture's size.

A connection that closed (FIN or RST) and then saw no packet for :data:`STALE_AFTER_FRAMES` frames
retires: its rows (:mod:`.rows`) go to the spill (:class:`Spill`: tables of rows, in memory, then in a
temporary file read back through a memory map, no pickling), its slot is reused and its 4-tuple
forgotten.  :class:`IdleSweep` finds those connections; :class:`ConnectionStore` gives all connections
back in id order, made from their rows a batch at a time, or as the rows themselves (:class:`RowBatch`:
for the consumers of every connection, :mod:`rstscope.columns`).
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from rstscope import scratch
from rstscope.connections.records import Connection, TtlRange
from rstscope.connections.rows import (
    AFTER_ROW,
    CONN_ROW,
    FINDING_ROW,
    PROBE_ROW,
    RST_ROW,
    ResetSubject,
    histories,
    reset_subjects,
    runs,
    span_positions,
)
from rstscope.connections.rows import connections as rows_to_connections
from rstscope.grouped import distinct

SPILL_BATCH = 4_096
"""Retired connections' rows (and their tables' rows) are written to the spill file in batches of at most
this many..."""
BUFFER_BYTES = 1 << 20
"""... and at most about this many bytes of them (a dormant connection's row is 3 KB: 4,096 of them would
be 12 MB held until they are written)."""
ROW_BATCH = 8_192
"""Connections per batch of :meth:`ConnectionStore.row_batches` (about 8 MB of rows)."""
STALE_AFTER_FRAMES = 100_000
"""A connection's recent segments are forgotten once this many frames went by without one of its event
rows: a later RST cannot be answering them.  This also keeps closed connections small."""
LIVE_CLOSED_LIMIT = 10_000
"""Closed connections kept in memory at most before they have been idle STALE_AFTER_FRAMES frames: past
this many (a reset storm: one short connection, or one bare RST, per few frames), closed connections
idle for PRESSURE_IDLE_FRAMES retire at once.  Memory then stays bounded whatever the share of
connections that end in a RST."""
PRESSURE_IDLE_FRAMES = 5_000
"""Under pressure, a closed connection silent for this many frames retires (a later segment of its
4-tuple then starts a new connection, as after any retirement)..."""
PRESSURE_IDLE_NS = 1_000_000_000
"""... and for this long in capture time too: on a busy link 5,000 frames pass in milliseconds, while the
segments that still belong to a closed connection (the peer's ACKs that draw echo RSTs, a retransmitted
FIN) come up to a round trip later; a second covers the round trips of real paths."""


class IdleSweep:
    """Every ``frames`` / 4 frames, the slots of the connections that went idle since the last sweep (no
    packet for ``frames`` frames; by default STALE_AFTER_FRAMES)."""

    def __init__(self, frames: int | None = None) -> None:
        self._frames = frames
        self._next_sweep = frames or STALE_AFTER_FRAMES
        self._swept_cutoff = 0

    def due(self, now_frame: int) -> bool:
        """Whether :meth:`idle` sweeps at ``now_frame`` (else it returns None)."""
        return now_frame >= self._next_sweep

    @staticmethod
    def pressing(kept: int) -> bool:
        """Whether :meth:`pressured` retires anything with ``kept`` closed connections kept."""
        return kept > LIVE_CLOSED_LIMIT

    def idle(self, now_frame: int, last_frame: np.ndarray, live: np.ndarray) -> np.ndarray | None:
        """Slots idle now (``last_frame``/``live`` per slot), None when no sweep is due."""
        if now_frame < self._next_sweep:
            return None
        frames = self._frames or STALE_AFTER_FRAMES
        self._next_sweep = now_frame + frames // 4
        cutoff = now_frame - frames
        idle = np.flatnonzero(live & (last_frame >= self._swept_cutoff) & (last_frame < cutoff))
        self._swept_cutoff = cutoff
        return idle

    @staticmethod
    def pressured(now_frame: int, now_ns: int, last_frame: np.ndarray, last_ns: np.ndarray,
                  closed: np.ndarray, kept: int | None = None) -> np.ndarray:  # fmt: skip
        """Slots of closed connections (``closed`` per slot) to retire now because too many are kept
        (``kept``: how many, by default those of ``closed``)."""
        if not IdleSweep.pressing(np.count_nonzero(closed) if kept is None else kept):
            return np.zeros(0, dtype=np.int64)
        quiet = (last_frame < now_frame - PRESSURE_IDLE_FRAMES) & (last_ns < now_ns - PRESSURE_IDLE_NS)
        return np.flatnonzero(closed & quiet)


class RecordFile:
    """A table of rows of one dtype: kept in memory up to SPILL_BATCH rows (BUFFER_BYTES), then appended to an anonymous
    temporary file (``ndarray.tofile``) and read back with ``pread`` (not a memory map: mapped pages would
    count in the process's resident memory).  Small captures never touch the disk."""

    PAGE = 256
    PAGE_BYTES = 1 << 18
    PAGES_KEPT = 16
    """Rows are read back a page of PAGE rows (at most PAGE_BYTES) at a time, and the last PAGES_KEPT pages
    are kept: reading in id order comes back to the same few places of the file (connections retire in
    runs of ids)."""

    def __init__(self, dtype: np.dtype, *, run_page_bytes: int | None = None) -> None:
        """``run_page_bytes``: rows are read in any order (no cache of pages): each take reads the pages of
        about this many bytes that hold the rows asked for, runs of consecutive pages in one read.  Such a
        table also writes new rows over the regions of the file whose rows were all released
        (:meth:`release`), rather than punching holes there and growing the file."""
        self.dtype = dtype
        self._run_rows = None if run_page_bytes is None else max(1, run_page_bytes // dtype.itemsize)
        self._file = None
        self._written = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._pages: dict[int, np.ndarray] = {}
        self._batch = max(1, min(SPILL_BATCH, BUFFER_BYTES // dtype.itemsize))  # rows buffered at most
        self._page_rows = max(1, min(self.PAGE, self.PAGE_BYTES // dtype.itemsize))
        self._region_rows = max(1, REGION_BYTES // dtype.itemsize)
        if self._run_rows is not None:  # whole pages in a region: a page is never split between two places
            self._run_rows = min(self._run_rows, self._region_rows)
            self._region_rows -= self._region_rows % self._run_rows
        self._released = np.zeros(0, dtype=np.int64)  # per region of the file: rows released; -1: punched
        self._released_total = self._punched_rows = self._punched_upto = 0
        # Recycling (run_page_bytes): row positions go on growing, and each region of them is written where
        # the file has room: over a region all released, else at its end.
        self._place = np.zeros(0, dtype=np.int64)  # region of positions -> region of the file it is written in
        self._placed = 0  # regions of positions placed so far
        self._room: list[int] = []  # regions of the file all released, to be written over
        self._file_regions = 0
        self.regions_reused = 0
        """Regions of the file written over after all their rows were released."""

    def __len__(self) -> int:
        return self._written + self._buffered

    @property
    def dead_kept(self) -> int:
        """Rows released (:meth:`release`) that still take room in the file: their region holds live rows too."""
        return self._released_total - self._punched_rows

    def release(self, positions: np.ndarray) -> None:
        """These rows (each released once) will not be read again: a region of the file whose rows are all
        released is handed back to the file system (a hole), or written over by later rows in a table read
        in any order, so a file whose rows die about in the order they were written keeps about its live
        rows on disk, without copying them (as a compaction does)."""
        if not len(positions):
            return
        regions = np.asarray(positions, dtype=np.int64) // self._region_rows
        self._released = fit(self._released, int(regions.max()) + 1, 0)
        np.add.at(self._released, regions, 1)
        self._released_total += len(positions)
        self._punch()

    def _punch(self) -> None:
        """Holes for the regions all released and all in the file, not punched yet (or, recycling, their
        room to be written over: the file's pages are written again instead of new ones; page cache pages
        this machine has not touched before cost several times more to write, PLAN §20)."""
        done = min(len(self._released), self._written // self._region_rows)  # regions wholly in the file
        dead = np.flatnonzero(self._released[self._punched_upto : done] == self._region_rows) + self._punched_upto
        if len(dead):
            self._released[dead] = -1  # punched: never counted again
            self._punched_rows += len(dead) * self._region_rows
            if self._run_rows is not None:
                self._room.extend(self._place[dead].tolist())
            else:
                size = self.dtype.itemsize * self._region_rows
                for region in dead.tolist():
                    _punch_hole(self._file.fileno(), region * size, size)
        while self._punched_upto < done and self._released[self._punched_upto] == -1:
            self._punched_upto += 1

    def append(self, rows: np.ndarray) -> int:
        """Append ``rows``; the position of the first."""
        start = len(self)
        if len(rows):
            self._buffer.append(rows)
            self._buffered += len(rows)
            if self._buffered >= self._batch:
                self._flush()
        return start

    def _one(self) -> np.ndarray:
        if len(self._buffer) != 1:
            self._buffer = [joined(self._buffer, self.dtype)]
        return self._buffer[0]

    def _flush(self) -> None:
        with scratch.writing():
            if self._file is None:
                # Lives as long as the tracker and its store; the OS deletes it when it is closed.
                self._file = tempfile.TemporaryFile(prefix="rstscope-connections-", dir=scratch.directory())  # noqa: SIM115
            if self._run_rows is not None:
                self._write_placed()
            else:
                self._file.seek(0, os.SEEK_END)
                for part in self._buffer:  # one after the other: concatenating them first would copy them again
                    part.tofile(self._file)
                self._file.flush()
        self._pages.pop(self._written // self._page_rows, None)  # a partial last page grows: read it again
        self._written += self._buffered
        self._buffer, self._buffered = [], 0
        if self.dead_kept:
            self._punch()  # regions released while their last rows were still in memory

    def _write_placed(self) -> None:
        """The buffered rows to the file, each region of their positions where :attr:`_place` puts it (a
        region whose first rows these are is placed now: over released room, else at the end)."""
        first, end, size, per = self._written, self._written + self._buffered, self.dtype.itemsize, self._region_rows
        last_region = (end - 1) // per
        self._place = fit(self._place, last_region + 1, -1)
        while self._placed <= last_region:
            if self._room:
                self._place[self._placed] = self._room.pop()
                self.regions_reused += 1
            else:
                self._place[self._placed] = self._file_regions
                self._file_regions += 1
            self._placed += 1
        # The parts' bytes cut at the regions' ends, one pwritev a region (no copy of the parts joined).
        parts = [memoryview(np.ascontiguousarray(p).view(np.uint8).reshape(-1)) for p in self._buffer]
        k, offset, fd = 0, 0, self._file.fileno()  # the part and the byte in it where the next region starts
        for region in range(first // per, last_region + 1):
            lo, hi = max(first, region * per), min(end, (region + 1) * per)
            want, pieces = (hi - lo) * size, []
            while want:
                take = min(want, len(parts[k]) - offset)
                pieces.append(parts[k][offset : offset + take])
                want -= take
                offset += take
                if offset == len(parts[k]):
                    k, offset = k + 1, 0
            at = (int(self._place[region]) * per + lo - region * per) * size
            if os.pwritev(fd, pieces, at) != (hi - lo) * size:
                raise OSError(f"short write to {self._file.name}")

    def _file_row(self, positions: np.ndarray) -> np.ndarray:
        """Where rows at these positions (all in the file) are in it, in rows."""
        if self._run_rows is None:
            return positions
        region = positions // self._region_rows
        return self._place[region] * self._region_rows + positions - region * self._region_rows

    def shared(self) -> tuple[int, int]:
        """This table for another process to read (:meth:`opened`): its file's descriptor and its rows, once
        every row is in the file.  Not for a table that recycles its file (its rows are not in order)."""
        assert self._run_rows is None
        if self._file is None or self._buffered:
            self._flush()
        return self._file.fileno(), self._written

    @classmethod
    def opened(cls, dtype: np.dtype, fd: int, rows: int) -> RecordFile:
        """The first ``rows`` rows of a table another process :meth:`shared`, read through ``fd`` (closed with
        the table), by :meth:`take` only."""
        table = cls(dtype)
        table._file = os.fdopen(fd, "rb", buffering=0)
        table._written = rows
        return table

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def take(self, positions: np.ndarray) -> np.ndarray:
        """The rows at these positions."""
        positions = np.asarray(positions, dtype=np.int64)
        # Rows are copied as opaque bytes: numpy copies a structured row field by field, 6x slower.
        raw = np.dtype((np.void, self.dtype.itemsize))
        if not self._written:
            return self._one().view(raw)[positions].view(self.dtype) if len(positions) else np.zeros(0, self.dtype)
        in_memory = positions >= self._written
        if self._run_rows is not None and not in_memory.any():  # the usual case: no copy into ``out``
            return self._read_runs(positions).view(self.dtype)
        out = np.empty(len(positions), raw)
        if in_memory.any():
            out[in_memory] = self._one().view(raw)[positions[in_memory] - self._written]
        on_disk = np.flatnonzero(~in_memory)
        if self._run_rows is not None:
            out[on_disk] = self._read_runs(positions[on_disk])
            return out.view(self.dtype)
        pages = positions[on_disk] // self._page_rows
        for page in distinct(pages).tolist():
            mine = on_disk[pages == page]
            out[mine] = self._page(page).view(raw)[positions[mine] - page * self._page_rows]
        return out.view(self.dtype)

    def take_runs(self, first: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Runs of rows, ``first[i] .. first[i] + count[i] - 1`` each (none empty), as ``(rows, at)``: run ``i``
        is ``rows[at[i] : at[i] + count[i]]``.  In a table read in any order, the rows as read: pages are
        read whole and in order, so the pages of a run (at most two) follow one another."""
        first, count = np.asarray(first, dtype=np.int64), np.asarray(count, dtype=np.int64)
        last = first + count - 1
        if self._run_rows is not None and len(first) and last.max() < self._written and count.max() <= self._run_rows:
            rows, at = self._read_runs(np.concatenate([first, last]), spread=True)
            return rows, at[: len(first)]
        return self.take(runs(first, count)), np.cumsum(count) - count

    def _read_runs(self, positions: np.ndarray, *, spread: bool = False):
        """The rows at these positions (all in the file), as opaque bytes: the pages that hold them, each run
        of consecutive pages in one ``pread``; ``spread``: those pages and where each row is in them."""
        raw, size, per = np.dtype((np.void, self.dtype.itemsize)), self.dtype.itemsize, self._run_rows
        if not len(positions):
            return (np.zeros(0, raw), positions) if spread else np.zeros(0, raw)
        pages = positions // per
        needed = distinct(pages)
        # A run: pages next to each other in positions and in the file (regions are placed apart).
        breaks = np.flatnonzero((np.diff(needed) != 1) | (np.diff(self._file_row(needed * per)) != per)) + 1
        first = needed[np.r_[0, breaks]] * per
        end = np.minimum((needed[np.r_[breaks - 1, len(needed) - 1]] + 1) * per, self._written)
        into = np.cumsum(end - first) - (end - first)  # where each run goes in the buffer
        rows = np.empty(int(into[-1] + end[-1] - first[-1]), raw)
        buffer, fd = memoryview(rows.view(np.uint8)), self._file.fileno()
        for f, e, at, where in zip(first.tolist(), end.tolist(), into.tolist(), self._file_row(first).tolist(),
                                   strict=True):  # fmt: skip
            if os.preadv(fd, [buffer[at * size : (at + e - f) * size]], where * size) != (e - f) * size:
                raise OSError(f"short read of {self._file.name}: rows {f}..{e}")
        run = np.searchsorted(first, positions, side="right") - 1
        at = into[run] + positions - first[run]
        return (rows, at) if spread else rows[at]

    def _page(self, page: int) -> np.ndarray:
        """A page of rows from the file (the last page may be shorter), from the cache of the last ones read."""
        rows = self._pages.pop(page, None)
        if rows is None:
            first, size = page * self._page_rows, self.dtype.itemsize
            count = min(self._page_rows, self._written - first)
            rows = np.frombuffer(os.pread(self._file.fileno(), count * size, first * size), self.dtype)
            if len(self._pages) >= self.PAGES_KEPT:
                del self._pages[next(iter(self._pages))]  # the least recently used
        self._pages[page] = rows  # (re)inserted last: most recently used
        return rows


REGION_BYTES = 1 << 20
"""Released rows are handed back to the file system a region of about this many bytes at a time."""
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE (linux/falloc.h)
_BLOCK = 4096
"""Only whole blocks of the file system are punched: in a partial one the range's bytes would be written
with zeros, and nothing freed."""


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the file system blocks wholly inside ``[offset, offset + length)`` of the file (its size and
    the bytes around them unchanged).  Where the file system cannot (no ``fallocate``), the bytes stay:
    only disk space is at stake, never what is read."""
    start, end = -(-offset // _BLOCK) * _BLOCK, (offset + length) // _BLOCK * _BLOCK
    fallocate = _fallocate()
    if end > start and fallocate is not None:
        fallocate(fd, _PUNCH_HOLE, start, end - start)  # failures (EOPNOTSUPP) ignored, as said


@functools.cache
def _fallocate():
    """libc's ``fallocate`` (Python's ``os`` has no call that punches holes), or None where there is none.
    Looked up on first use, in the symbols the process already has: no ``ldconfig`` at start-up."""
    import ctypes

    try:
        fallocate = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux
        return None
    fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fallocate.restype = ctypes.c_int
    return fallocate


class Spill:
    """Retired connections as rows (see :mod:`.rows`): a connection row per connection, by id, and its RST
    observations, findings, segments after a reset and keepalive probes in tables of their own."""

    def __init__(self) -> None:
        self.conns = RecordFile(CONN_ROW)
        self.tables = {name: RecordFile(dtype) for name, dtype in TABLES.items()}
        self.overflow: dict[int, list[int]] = {}
        """Connection id -> history letter codes past its row's 24."""
        # Connection id -> position of its row, -1 live (:func:`holding`; readers take positions of any
        # integer type, RecordFile.take).
        self._at = np.zeros(0, dtype=np.int32)

    def put(self, conn_rows: np.ndarray, tables: dict[str, np.ndarray], overflow: dict[int, list[int]]) -> None:
        """Store retired connections: their rows, their rows of each table (any order), their long histories."""
        ids = conn_rows["id"]
        for name, rows in tables.items():
            by_conn = np.argsort(rows["conn"], kind="stable")  # by connection, capture order in each
            rows = taken(rows, by_conn)
            start = self.tables[name].append(rows)
            first = np.searchsorted(rows["conn"], ids)
            count = np.searchsorted(rows["conn"], ids, side="right") - first
            conn_rows[name][:, 0] = start + first
            conn_rows[name][:, 1] = count
        self._at = fit(self._at, int(ids.max()) + 1 if len(ids) else 0, -1)
        first = self.conns.append(conn_rows)
        self._at = holding(self._at, first + len(ids))
        self._at[ids] = first + np.arange(len(ids))
        self.overflow.update(overflow)

    def get(self, ids: np.ndarray) -> list[Connection]:
        """The connections with these ids (all retired)."""
        return rows_to_connections(self.rows(ids), self._take, self.overflow)

    def subjects(self, ids: np.ndarray) -> list[ResetSubject]:
        """What evidence reads of the connections with these ids (all retired; see :func:`.rows.reset_subjects`)."""
        return reset_subjects(self.rows(ids), self._take)

    def _take(self, name: str, positions: np.ndarray) -> np.ndarray:
        return self.tables[name].take(positions)

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """The connection rows of these ids (all retired)."""
        return self.conns.take(self._at[ids])

    def shared_rows(self, count: int, ids: np.ndarray | None = None) -> tuple[dict, list[int], np.ndarray]:
        """This spill's rows for another process to read (:meth:`opened`): what it needs besides the files'
        descriptors, the descriptors (to send along, over a Unix socket), and where each connection's row is
        in :attr:`conns`: of connections ``0 .. count - 1`` (all retired; a view), or of ``ids`` only (then
        the long histories sent are theirs alone)."""
        files = {"conns": self.conns.shared(), **{name: table.shared() for name, table in self.tables.items()}}
        overflow, positions = self.overflow, self._at[:count]
        if ids is not None:
            overflow = {cid: overflow[cid] for cid in ids.tolist() if cid in overflow}
            positions = self._at[ids]
        meta = {"rows": {kind: rows for kind, (_, rows) in files.items()}, "overflow": overflow}
        return meta, [fd for fd, _ in files.values()], positions

    @classmethod
    def opened(cls, meta: dict, fds: list[int]) -> Spill:
        """In the receiving process, the rows another one :meth:`shared_rows` (read only, by position:
        ``conns.take``; closed with :meth:`close`)."""
        spill = cls()
        rows = meta["rows"]
        tables = dict(zip(rows, fds, strict=True))
        spill.conns = RecordFile.opened(CONN_ROW, tables.pop("conns"), rows["conns"])
        spill.tables = {name: RecordFile.opened(TABLES[name], fd, rows[name]) for name, fd in tables.items()}
        spill.overflow = meta["overflow"]
        return spill

    def close(self) -> None:
        self.conns.close()
        for table in self.tables.values():
            table.close()

    def shared(self, ids: np.ndarray) -> tuple[SharedSubjects, list[int]]:
        """The subjects of these connections (all retired) for another process: what it needs to read them
        from this spill's files, and the files' descriptors (to send along, over a Unix socket)."""
        tables = {"conns": self.conns, **self.tables}
        files = {kind: tables[kind].shared() for kind in SUBJECT_FILES}
        subjects = SharedSubjects(self._at[ids], {kind: rows for kind, (_, rows) in files.items()})
        return subjects, [fd for fd, _ in files.values()]


TABLES = {"resets": RST_ROW, "findings": FINDING_ROW, "after": AFTER_ROW, "probes": PROBE_ROW}
"""A retired connection's tables of rows besides its connection row, and their rows (:class:`Spill`)."""
SUBJECT_TABLES = {"resets": RST_ROW, "after": AFTER_ROW}
"""The tables evidence reads of a connection (:func:`.rows.reset_subjects`), and their rows."""
SUBJECT_FILES = {"conns": CONN_ROW, **SUBJECT_TABLES}
"""The files a connection's subjects are read from, by kind: its connection rows, and its rows of each table."""


class SharedSubjects:
    """Connections' subjects (what evidence reads of them) in another process's spill (:meth:`Spill.shared`):
    where their rows are in its files, read through the descriptors it sent (:meth:`open`)."""

    def __init__(self, positions: np.ndarray, rows: dict[str, int]) -> None:
        self.positions = positions
        """Per connection, in the order they were asked for: its row in the file of connection rows."""
        self.rows = rows
        """Rows in each of SUBJECT_FILES, in its order."""
        self._files: dict[str, RecordFile] = {}

    def __getstate__(self) -> dict:
        return {"positions": self.positions, "rows": self.rows, "_files": {}}  # descriptors go apart

    def open(self, fds: list[int]) -> None:
        """In the receiving process: the files, by the descriptors received (in the order of :attr:`rows`)."""
        self._files = {kind: RecordFile.opened(SUBJECT_FILES[kind], fd, n)
                       for (kind, n), fd in zip(self.rows.items(), fds, strict=True)}  # fmt: skip

    def subjects(self, start: int, end: int) -> list[ResetSubject]:
        """The subjects of connections ``[start, end)``."""
        conn_rows = self._files["conns"].take(self.positions[start:end])
        return reset_subjects(conn_rows, lambda name, positions: self._files[name].take(positions))

    def close(self) -> None:
        for table in self._files.values():
            table.close()


class RowBatch:
    """Connections as rows, no objects: what a consumer of every connection reads (consecutive ids from
    ``ConnectionStore.row_batches``; those that retired together from ``Tracker(on_retired=...)``)."""

    __slots__ = ("_spill", "rows")

    def __init__(self, rows: np.ndarray, spill: Spill) -> None:
        self.rows = rows
        """:data:`CONN_ROW` rows, in id order."""
        self._spill = spill

    def table(self, name: str, which: np.ndarray | None = None) -> np.ndarray:
        """The rows of table ``name`` (``"resets"``, ``"findings"``, ``"after"``, ``"probes"``) of these
        connections, or of those at indices ``which`` of :attr:`rows`: connection by connection, each in
        capture order, ``rows[name][:, 1]`` rows each."""
        spans = self.rows[name] if which is None else self.rows[name][which]
        return self._spill.tables[name].take(span_positions(spans))

    def histories(self) -> list[str]:
        """Each connection's history letters (``Connection.history_text``)."""
        return histories(self.rows, self._spill.overflow)


class ConnectionsById(Sequence):
    """Connections in id order, made from rows when read (so iterating does not hold them all), ``BATCH``
    at a time: a subclass says how many there are, which saw a RST (``_reset_ids``, sorted) and how to
    make those of some ids (``_get``)."""

    BATCH = 2048
    _reset_ids: np.ndarray

    def _get(self, ids: np.ndarray) -> list[Connection]:
        raise NotImplementedError

    @property
    def reset_ids(self) -> np.ndarray:
        """The ids of the connections that saw a RST, sorted."""
        return self._reset_ids

    def with_resets(self) -> Iterator[Connection]:
        """Only the connections that saw a RST, in id order (no pass over all the others)."""
        yield from self._batches(self._reset_ids)

    def reset_subjects(self) -> Iterator[Connection | ResetSubject]:
        """:meth:`with_resets`, or lighter objects with what evidence reads of them (:mod:`rstscope.evidence`)."""
        return self.with_resets()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self._batches(np.arange(len(self))[index]))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._get(np.array([index]))[0]

    def __iter__(self) -> Iterator[Connection]:
        yield from self._batches(np.arange(len(self)))

    def _batches(self, ids: np.ndarray, make=None) -> Iterator:
        """Those of ``ids``, ``BATCH`` at a time, made by ``make`` (by default :meth:`_get`)."""
        make = make or self._get
        for start in range(0, len(ids), self.BATCH):
            yield from make(ids[start : start + self.BATCH])


class ConnectionStore(ConnectionsById):
    """All connections of a capture (those the tracker retired to its spill)."""

    def __init__(self, spill: Spill, count: int, reset_ids: np.ndarray, host_ttl: dict[str, TtlRange] | None = None):
        """``reset_ids``: the ids of the connections that saw a RST, sorted."""
        self._spill = spill
        self._count = count
        self._reset_ids = reset_ids
        self.host_ttl = host_ttl or {}
        """Per responder address, its TTL range over all connections (see ``Tracker.host_ttl``)."""

    def __len__(self) -> int:
        return self._count

    def _get(self, ids: np.ndarray) -> list[Connection]:
        return self._spill.get(ids)

    def reset_subjects(self, ids: np.ndarray | None = None) -> Iterator[ResetSubject]:
        """Those of :meth:`with_resets`, or of these ids (of connections that saw a RST)."""
        return self._batches(self._reset_ids if ids is None else ids, self._spill.subjects)

    def shared_subjects(self, ids: np.ndarray) -> tuple[SharedSubjects, list[int]]:
        """The subjects of these connections for another process to read (:meth:`Spill.shared`)."""
        return self._spill.shared(ids)

    def row_batches(self, size: int | None = None) -> Iterator[RowBatch]:
        """All connections as rows, ``size`` (ROW_BATCH) consecutive ids a batch, in id order (no Connection
        made)."""
        size = size or ROW_BATCH
        for start in range(0, self._count, size):
            yield self.rows_of(start, min(start + size, self._count))

    def rows_of(self, lo: int, hi: int) -> RowBatch:
        """Connections ``[lo, hi)`` as rows."""
        return self.rows_with(np.arange(lo, hi))

    def rows_with(self, ids: np.ndarray) -> RowBatch:
        """The connections of these ids (increasing) as rows."""
        return RowBatch(self._spill.rows(ids), self._spill)

    def shared_rows(self) -> tuple[dict, list[int], np.ndarray]:
        """Every connection for another process to read (:meth:`Spill.shared_rows`), and where each one's row
        is in the file of connection rows."""
        return self._spill.shared_rows(self._count)


def packed(dtype: np.dtype, n: int, fields: dict[str, np.ndarray], head: np.ndarray | None = None) -> np.ndarray:
    """``n`` rows of ``dtype`` with these fields (each ``n`` values of the field's shape, cast to its type),
    the others zero: each field copied as bytes (numpy assigns a structured field element by element, several
    times slower).  ``head``: ``n`` structured rows whose bytes are the first bytes of each row."""
    out = np.zeros((n, dtype.itemsize), dtype=np.uint8)
    if head is not None:
        out[:, : head.dtype.itemsize] = np.ascontiguousarray(head).view(np.uint8).reshape(n, head.dtype.itemsize)
    for name, values in fields.items():
        field, at = dtype.fields[name][:2]
        raw = np.ascontiguousarray(np.reshape(values, (n, *field.shape)), dtype=field.base)
        out[:, at : at + field.itemsize] = raw.view(np.uint8).reshape(n, field.itemsize)
    return out.view(dtype).ravel()


def opaque(array: np.ndarray) -> np.ndarray:
    """A structured array's rows as opaque bytes: gathered and scattered whole (numpy copies a structured
    row field by field, several times slower)."""
    return array.view(np.dtype((np.void, array.dtype.itemsize)))


def taken(rows: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``rows[index]`` (a mask or positions) for rows of a structured dtype, gathered as opaque bytes rather
    than field by field (12x faster for 100-byte packet rows, measured)."""
    return opaque(rows)[index].view(rows.dtype)


def joined(parts: list[np.ndarray], dtype: np.dtype) -> np.ndarray:
    """Rows of ``dtype`` in parts, concatenated as opaque bytes (``np.concatenate`` of structured rows copies
    them field by field: 12x slower for 100-byte packet rows, measured)."""
    if not parts:
        return np.zeros(0, dtype)
    return np.concatenate([opaque(p) for p in parts]).view(dtype)


def grown(array: np.ndarray, rows: int) -> np.ndarray:
    """``array`` with ``rows`` rows, the new ones zero: resized in place where it can be (a large block grows
    by remapping its pages, without a second copy alive while it is copied), else copied."""
    if array.flags.owndata and array.base is None:
        try:
            array.resize((rows, *array.shape[1:]), refcheck=False)  # nothing else refers to it: see callers
            return array
        except ValueError:
            pass
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out


def holding(array: np.ndarray, largest: int) -> np.ndarray:
    """``array``, as int64 once it is to hold ``largest``, past its type's range: the positions of rows in a
    file only grow, and a long capture passes 2**31 of them (int32 until then: arrays by connection id keep
    an entry for every connection of the capture)."""
    return array.astype(np.int64) if largest > np.iinfo(array.dtype).max else array


def fit(array: np.ndarray, size: int, fill: int | bool) -> np.ndarray:
    """``array`` grown by half (at least to ``size`` entries), in place where it can be (:func:`grown`), the
    new entries set to ``fill``.  For the arrays indexed by connection id, which grow with the capture:
    doubling by copy had the old and the new one alive at once, and up to half of the new one unused."""
    if len(array) >= size:
        return array
    old = len(array)
    array = grown(array, max(size, old + old // 2, 1024))
    array[old:] = fill
    return array
