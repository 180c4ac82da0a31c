"""Dormant connections: connections that went idle leave memory, and come back if their 4-tuple does.

A connection that never closed (a half-open handshake of a SYN flood, an unanswered SYN, a connection
the capture left in the middle) cannot retire: a later packet of its 4-tuple still belongs to it.  A
closed one can retire only after a while (see :mod:`.retire`; a reset storm keeps a second's worth of
them).  Once idle for :data:`DORMANT_AFTER_FRAMES` it goes *dormant*: its whole slot (the sequence pass's carried
columns, the event loop's columns and rings, its ACK ring and who it is) becomes one record in
:class:`~.retire.RecordFile` tables and the slot is freed; its 4-tuple stays known.  When the 4-tuple sends
again the record is put back in a slot as it was, so tracking goes on exactly as if it had stayed: the
threshold trades memory for reads and writes, never results.  A dormant connection that retires (at
the end of the capture, or a closed one the sweeps retire) is made into rows straight from its record.

Records are kept *squeezed*: only the words that differ from the values most records hold, after a bitmap
of which (``squeeze_records``, slots_loop.c).  Most of a slot is defaults its connection never changed: on
the SYN flood of benchmarks/, a record keeps 42 of its 154 words on average, 396 bytes with its bitmap and
padding against 1,232, and the command's temporary files took at most 345 MB instead of 473.
"""

from __future__ import annotations

import numpy as np

from rstscope.connections.events import EventColumns, ffi, lib
from rstscope.connections.retire import RecordFile, fit, holding
from rstscope.connections.rows import RING, runs
from rstscope.connections.sequence import AckRing, ConnArrays
from rstscope.grouped import distinct

DORMANT_AFTER_FRAMES = 10_000
"""Connections silent this many frames go dormant.  A SYN flood keeps its half-open connections
alive for seconds (SYN-ACK retransmissions at 1, 3, 7 ... s): short enough to keep only the handshakes
in progress in memory, long enough that a request and its reply do not go dormant in between."""


CLOSED_DORMANT_ABOVE = 16_000
"""Closed connections (in slots or dormant) past which the idle closed ones go dormant too.  A reset storm
keeps a second's worth of them (50,000 at one RST per 20 µs), which in slots would take 65 MB; a busy
server of short connections keeps about LIVE_CLOSED_LIMIT, which stay in their slots: putting them out and
back costs more than it saves there (measured on the short shape: 12.5-13.3 s CPU and 153 MB with them
dormant, 10.6-12.8 s and 126 MB without)."""
COMPACT_AFTER = 1 << 19
"""Dead rows of squeezed records (of connections that woke or retired; 64 bytes a row, about 6 a record)
the files hold at least, in regions that also hold live ones (regions with none left are written over
already: :meth:`.RecordFile.release`), and as many as live ones, before they are compacted.  Records die
about in the order they were written (connections wake after about the same sleep), so this is rare.
Measured on the 1M-packet SYN flood of benchmarks/ (records not squeezed then, 1,225 bytes each): no
compaction instead of two, the process tree's peak 197 -> 179 MB (the compaction's batches), the files
814 -> 616 MB on disk at most, the analysis 6.3-8.2 -> 5.8-7.2 CPU s (three pairs of runs, in turn)."""
COMPACT_BATCH = 4_096
"""Records copied at once when the files are compacted."""
PAGE_BYTES = 16_384
"""Records are read back a page of about this many bytes at a time: connections wake in no useful order,
so a large page reads mostly rows nobody asked for (256 rows of the first layout were 770 KB a page)."""


class Dormant:
    """The dormant connections' slots, by connection id: one record per connection (the slot's columns,
    who it is), squeezed into whole rows of a :class:`~.retire.RecordFile`; its recent segments only in the
    ring blocks its counts say it holds, and its keepalive probes only if it had any, in files of their own.
    Records of connections that woke or retired are released (regions of the files with nothing alive are
    written over by later records); when as many dead rows still take room as there are live ones, the
    live records are copied to fresh files."""

    def __init__(self, ident: np.dtype) -> None:
        self._ident = ident
        arrays, columns, acks = ConnArrays(), EventColumns(), AckRing()
        fields = [
            ("table", arrays.table.dtype, arrays.table.shape[1:]), ("ev", columns.ev.dtype, columns.ev.shape[1:]),
            ("history", columns.history.dtype, columns.history.shape[1:]),
            ("ack_frame", acks.frame.dtype, acks.frame.shape[1:]), ("ack_value", acks.ack.dtype, acks.ack.shape[1:]),
            ("ident", ident), ("recent_at", np.int64), ("probes_at", np.int64),
        ]  # fmt: skip
        pad = -np.dtype(fields).itemsize % 8
        self.dtype = np.dtype([*fields, ("pad", np.uint8, pad)] if pad else fields)
        """One record: the slot's carried columns (``table``: every column of ConnArrays, in its order), the
        event loop's columns, the ACK ring, who the connection is, and where its rings are (whole words:
        records are squeezed a word at a time; the padding is zeros)."""
        self._words = self.dtype.itemsize // 8
        self._usual: np.ndarray | None = None  # per word of a record, the value most records hold
        self._full = np.zeros(0, self.dtype)  # records packed before they are squeezed (reused: fresh pages are dear)
        self._recent_dtype = np.dtype([("seg", columns.recent.data.dtype, columns.recent.shape)])
        self._probes_dtype = np.dtype([("p", columns.probes.data.dtype, columns.probes.shape)])
        self._new_files()
        self._at = np.zeros(0, dtype=np.int32)  # connection id -> its record's first row, -1: not dormant
        self._span = np.zeros(0, dtype=np.int8)  # connection id -> its record's rows
        assert _squeezed_rows_max(self._words) <= np.iinfo(self._span.dtype).max
        self._live_rows = 0  # rows of the dormant connections' records
        self._count = 0  # dormant connections: len() is asked per batch, and _at spans every id ever seen
        # Per connection that was closed when it went dormant: id, last frame, last ns, and its record's first
        # row then (the entry holds while the record does: a connection that woke, or slept again, has another).
        self._closed: list[np.ndarray] = []
        self.draining = False
        """Set when every dormant connection is about to leave (the end of the capture): no more compaction."""

    def _new_files(self) -> None:
        self._rows = RecordFile(SQUEEZED, run_page_bytes=PAGE_BYTES)
        self._recent = RecordFile(self._recent_dtype, run_page_bytes=PAGE_BYTES)
        self._probes = RecordFile(self._probes_dtype, run_page_bytes=PAGE_BYTES)

    def __len__(self) -> int:
        return self._count

    def ids(self) -> np.ndarray:
        return np.flatnonzero(self._at >= 0)

    def closed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dormant connections that had closed (FIN or RST): ids, last frames, last times.  They retire
        from here when they would have retired from a slot (the tracker's sweeps look at them too)."""
        closed = self._closed_now()
        return closed[:, 0], closed[:, 1], closed[:, 2]

    def _closed_now(self) -> np.ndarray:
        """The entries of the closed connections still dormant in the sleep they were made for (the others
        are dropped here, a sweep at a time, not as each batch wakes: a storm wakes hundreds of batches)."""
        if not self._closed:
            return np.zeros((0, 4), dtype=np.int64)
        joined = np.concatenate(self._closed) if len(self._closed) > 1 else self._closed[0]
        joined = joined[self._at[joined[:, 0]] == joined[:, 3]]
        self._closed = [joined] if len(joined) else []
        return joined

    def put(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
            ident: np.ndarray) -> None:  # fmt: skip
        """These connections (in these slots) go dormant; the caller frees the slots (and their blocks)."""
        n = len(ids)
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        if len(self._full) < n:
            self._full = np.zeros(n, self.dtype)
        rows = self._full[:n]  # every byte but the padding written below
        # The recent-segment blocks the loop may read (those of the segments it counts), one after another.
        segs = np.empty((2 * lib.BLOCKS * n, *columns.recent.shape), columns.recent.data.dtype)
        per, probed = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint8)
        k, where = self._slot_arrays(arrays, columns, acks, ident)
        columns.recent.bind()
        rings = _rings(columns)
        blocks = lib.pack_sleepers(n, ffi.cast("int64_t *", slots.ctypes.data), k, where,
                                   ffi.from_buffer("uint8_t[]", rows), self.dtype.itemsize, rings[0],
                                   ffi.from_buffer("int64_t[]", segs), ffi.from_buffer("int64_t[]", per),
                                   ffi.from_buffer("uint8_t[]", probed))  # fmt: skip
        segs = segs[:blocks].copy()  # (the file keeps what it is given until it writes it)
        rows["recent_at"] = self._recent.append(_as_records(segs, self._recent_dtype)) + np.cumsum(per) - per
        probed = probed.view(bool)
        rows["probes_at"] = -1
        if probed.any():
            probes = columns.probes_of(slots[probed])
            rows["probes_at"][probed] = self._probes.append(_as_records(probes, self._probes_dtype)) + np.arange(
                len(probes)
            )
        self._at = fit(self._at, int(ids.max()) + 1, -1)
        self._span = fit(self._span, len(self._at), 0)
        self._at[ids], self._span[ids] = self._squeezed_into_file(rows)
        self._count += n
        closed = arrays["closing"][slots] > 0
        if closed.any():
            at = slots[closed]
            mine = ids[closed]
            self._closed.append(np.stack([mine, arrays["last_frame"][at], arrays["last_ns"][at], self._at[mine]], 1))

    def waking(self, ids: np.ndarray) -> np.ndarray:
        """Of these connection ids (any), the dormant ones, each once."""
        ids = ids[ids < len(self._at)]
        return distinct(ids[self._at[ids] >= 0])

    def take(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
             ident: np.ndarray) -> None:  # fmt: skip
        """Put these dormant connections back, into these (fresh) slots, as they were."""
        rows, recent, probes = self.records(ids, rings=True)
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        k, where = self._slot_arrays(arrays, columns, acks, ident)
        lib.unpack_slots(len(ids), ffi.from_buffer("uint8_t[]", rows), self.dtype.itemsize, k, where,
                         ffi.cast("int64_t *", slots.ctypes.data))  # fmt: skip
        columns.recent.reserve(len(recent))
        columns.recent.bind()
        recent, rings = np.ascontiguousarray(recent), _rings(columns)
        lib.restore_rings(len(ids), ffi.cast("int64_t *", slots.ctypes.data), rings[0],
                          ffi.from_buffer("int64_t[]", recent))  # fmt: skip
        columns.restore_probes(slots, probes)

    def _slot_arrays(self, arrays: ConnArrays, columns: EventColumns, acks: AckRing, ident: np.ndarray):
        """The per-slot arrays a record holds a row of, for pack_slots and unpack_slots (slots_loop.c): how
        many, and where each one's rows are and go in a record."""
        per_slot = (arrays.table, columns.ev, columns.history, acks.frame, acks.ack, ident)
        out = ffi.new("struct slot_array[]", len(per_slot))
        for entry, name, array in zip(out, _SLOT_FIELDS, per_slot, strict=True):
            field, at = self.dtype.fields[name][:2]
            assert array.flags.c_contiguous and array[0].nbytes == field.itemsize, name  # a row is the field's bytes
            entry.data, entry.width, entry.at = ffi.cast("uint8_t *", array.ctypes.data), field.itemsize, at
        return len(out), out

    def records(self, ids: np.ndarray, *, rings: bool = False):
        """These dormant connections' records, no longer dormant: (records, recent segments or None unless
        ``rings``, keepalive-probe rings), in the order of ``ids``.  The recent segments are those of the ring
        blocks that hold counted ones (:func:`_held` of the records, in its order: what ``restore_rings`` puts
        back); the probe rings per connection, in order, as :meth:`.EventColumns.probes_of` gives them
        (zeros where none)."""
        first, span = self._at[ids], self._span[ids]
        rows = self._expanded(*self._rows.take_runs(first, span))
        n = len(ids)
        held = _held(rows["ev"][:, lib.EV_RECENT_N : lib.EV_RECENT_N + 2])
        per = held.reshape(n, -1).sum(axis=1)
        segments = runs(rows["recent_at"], per)
        recent = self._recent.take(segments)["seg"] if rings else None
        probes = np.zeros((n, *self._probes_dtype["p"].shape), self._probes_dtype["p"].base)
        probes_at = rows["probes_at"]
        probed = probes_at >= 0
        if probed.any():
            probes[probed] = self._probes.take(probes_at[probed])["p"]
        # Never read again: the files give back the room of regions where nothing is left alive.
        self._rows.release(runs(first, span))
        self._recent.release(segments)
        self._probes.release(probes_at[probed])
        self._at[ids] = -1
        self._count -= n
        self._live_rows -= int(span.sum())
        if self._rows.dead_kept > max(self._live_rows, COMPACT_AFTER) and not self.draining:
            self._compact()
        return rows, recent, probes

    def _compact(self) -> None:
        """Copy the live records and their rings to fresh files (the old ones, mostly dead, are closed and gone)."""
        rows, recent, probes = self._rows, self._recent, self._probes
        closed = self._closed_now()  # (their records' rows change below)
        self._new_files()
        ids = self.ids()
        self._live_rows = 0
        for start in range(0, len(ids), COMPACT_BATCH):  # small batches: each is in memory twice for a while
            batch = ids[start : start + COMPACT_BATCH]
            got = self._expanded(*rows.take_runs(self._at[batch], self._span[batch]))
            held = _held(got["ev"][:, lib.EV_RECENT_N : lib.EV_RECENT_N + 2]).reshape(len(batch), -1).sum(axis=1)
            at = runs(got["recent_at"], held)
            got["recent_at"] = self._recent.append(recent.take(at)) + np.cumsum(held) - held
            probed = got["probes_at"] >= 0
            if probed.any():
                got["probes_at"][probed] = self._probes.append(probes.take(got["probes_at"][probed])) + np.arange(
                    int(probed.sum())
                )
            self._at[batch], self._span[batch] = self._squeezed_into_file(got)
        if len(closed):
            closed[:, 3] = self._at[closed[:, 0]]  # (the entries kept: _closed_now returned them, not a copy)

    def _squeezed_into_file(self, records: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append these records, squeezed, to the file: where each one's rows start, and how many."""
        if self._usual is None:  # the first records tell: any values would do, these squeeze best
            self._usual = _most_common(records.view(np.uint64).reshape(len(records), self._words))
        n = len(records)
        out = np.empty(n * _squeezed_rows_max(self._words), SQUEEZED)
        span = np.empty(n, dtype=np.int64)
        used = lib.squeeze_records(n, ffi.from_buffer("uint8_t[]", records), self._words,
                                   ffi.from_buffer("uint64_t[]", self._usual), ffi.from_buffer("uint64_t[]", out),
                                   ffi.from_buffer("int64_t[]", span))  # fmt: skip
        self._live_rows += used
        first = self._rows.append(out[:used].copy())  # (the file keeps what it is given until it writes it)
        self._at = holding(self._at, first + used)
        return first + np.cumsum(span) - span, span

    def _expanded(self, squeezed: np.ndarray, at: np.ndarray) -> np.ndarray:
        """Records from their squeezed rows, record ``i``'s starting at ``squeezed[at[i]]``."""
        records = np.empty(len(at), self.dtype)
        at = np.ascontiguousarray(at, dtype=np.int64)
        lib.expand_records(len(at), ffi.from_buffer("uint64_t[]", squeezed), ffi.cast("int64_t *", at.ctypes.data),
                           self._words, ffi.from_buffer("uint64_t[]", self._usual),
                           ffi.from_buffer("uint8_t[]", records))  # fmt: skip
        return records


SQUEEZED = np.dtype([("words", np.uint64, lib.SQUEEZED_ROW)])
"""A row of the squeezed records' file."""


def _squeezed_rows_max(words: int) -> int:
    """The most rows a squeezed record of ``words`` words takes: its bitmap and every word."""
    return -(-(-(-words // 64) + words) // lib.SQUEEZED_ROW)


def _most_common(words: np.ndarray) -> np.ndarray:
    """Per column of ``words``, the value most rows hold."""
    usual = np.empty(words.shape[1], np.uint64)
    for k, column in enumerate(words.T):
        values, counts = np.unique(column, return_counts=True)
        usual[k] = values[np.argmax(counts)]
    return usual


_SLOT_FIELDS = ("table", "ev", "history", "ack_frame", "ack_value", "ident")
"""The record's fields that are rows of per-slot arrays, in the order :meth:`Dormant._slot_arrays` gives them."""


def _as_records(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Rows of ``values`` as records of ``dtype`` (one field of the rows' shape)."""
    return np.ascontiguousarray(values).reshape(len(values), values[0].size if len(values) else 0).view(dtype).ravel()


def _rings(columns: EventColumns):
    """The event loop's columns and recent-segment pool, for pack_sleepers and restore_rings (slots_loop.c):
    a pointer to the struct they take by value (``[0]``; the pointer owns its memory: keep it until the
    call returns)."""
    assert columns.ev.flags.c_contiguous and columns.ev.shape[1] == lib.EV_WIDTH and columns.blocks.flags.c_contiguous
    ev, blocks = ffi.cast("int64_t *", columns.ev.ctypes.data), ffi.cast("int32_t *", columns.blocks.ctypes.data)
    return ffi.new("struct slot_rings *", {"ev": ev, "blocks": blocks, "recent": columns.recent.struct})


def _held(recent_n: np.ndarray) -> np.ndarray:
    """Per connection (rows of ``recent_n``: its two ``EV_RECENT_N`` columns), side and ring block: whether
    the block holds counted segments (the rule of ``held_blocks`` in slots_loop.c, which packs and puts
    back the segments whose places in the files this reads)."""
    counts = np.minimum(recent_n, RING)
    return np.arange(lib.BLOCKS) < -(-counts[:, :, None] // lib.BLOCK)
