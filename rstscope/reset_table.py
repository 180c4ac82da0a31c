"""Every RST of a capture without its evidence in memory: compact columns, and the rows in a spill.

A reset storm has a RST per few packets; keeping each RST's :class:`~rstscope.evidence.ResetEvidence`
and :class:`~rstscope.verdicts.Decision` (≈ 2.7 KB) until the output is written made memory grow with
the RSTs (issue 10).  :func:`build` computes evidence and verdicts connection by connection, from the
tracker's store once the capture has ended (the origin rule needs the final ``host_ttl``), and keeps:

* per RST, ~40 bytes of columns (:class:`ResetTable`): frame, connection, verdict, whether it is its
  connection's primary RST, bytes in flight, how many findings, where its row is;
* its document row (``document`` field names, without ``capture``), encoded once by orjson, in a
  :class:`RowSpill`: in memory up to :data:`ROW_MEMORY_BYTES`, then in an anonymous temporary file.

The summary, the ordering and the connection rows read the columns; the JSON, CSV and text writers
stream the rows back in frame order.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np
import orjson

from rstscope import collector, heap, scratch
from rstscope import evidence as evidence_mod
from rstscope.connections import Connection, TtlRange
from rstscope.evidence import ResetEvidence
from rstscope.verdicts import Decision, Verdict, classify

VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
"""Verdict codes of the ``verdict`` column: an index into this tuple."""
_CODE = {v: i for i, v in enumerate(VERDICTS)}
_CODE_OF_VALUE = {v.value: i for i, v in enumerate(VERDICTS)}
"""The same by value: enum members hash by a Python-level call."""
NOT_PRIMARY = (Verdict.ECHO, Verdict.IGNORED)
"""RSTs that did not end their connection: the primary RST is its first RST of another verdict."""
_NOT_PRIMARY_CODES = np.array([_CODE[v] for v in NOT_PRIMARY], dtype=np.int8)
LOST_DATA_VERDICTS = (Verdict.CLOSE_RACE, Verdict.BACKLOG)
"""A connection lost data when its primary RST has one of these verdicts (``lost_data``)."""
_LOST_CODES = np.array([_CODE[v] for v in LOST_DATA_VERDICTS], dtype=np.int8)
_LOST_CODE_SET = frozenset(_LOST_CODES.tolist())
NO_VALUE = -1
"""``in_flight`` column: the RST's in-flight figure is unknown (None in the document)."""

ROW_MEMORY_BYTES = 8 << 20
"""Encoded rows kept in memory before they go to a temporary file: small captures never touch the disk."""
_WRITE_BYTES = 1 << 20
"""Rows written to the file in blocks of about this size..."""
_READ_BYTES = 1 << 20
"""... and read back in windows of this size (rows are read nearly in the order they were written)."""
_BLOCK = 65_536
"""Rows whose positions become Python ints at once while they are read back."""
_ROWS_PER_READ = 4096
"""Rows read back together by :meth:`ResetTable.raw_blocks`..."""
_GATHER_GAP = 4096
"""... with one read for rows less than this many bytes apart (at most ~4.5 KB a row in memory then)."""
_ROWS_PER_APPEND = 1024
"""Rows :func:`build` joins before it appends them to the spill (one append per row cost ~0.5 µs)."""


def seconds(ns: int) -> float:
    """Integer nanoseconds as float seconds: ``ns / 1e9``, which is also ``round(ns / 1e9, 9)`` (what the
    document has always held) without round's decimal conversion (~1 µs a call).  Why they are equal: if
    the float's spacing at the result is under 1e-9, then ns < 2**53, so ns / 1e9 is the float nearest
    the 9-decimal ns/10**9 and rounding to 9 decimals gives it back; if the spacing is 1e-9 or more, the
    nearest 9-decimal number lies within half a spacing of the float, whose nearest float is itself
    (tests/test_reset_table.py checks samples of every magnitude)."""
    return ns / 1e9


def reset_fields(ev: ResetEvidence, d: Decision) -> dict:
    """A RST's document row, without ``capture`` (see :mod:`rstscope.document`)."""
    return {
        "frame": ev.frame,
        "time": seconds(ev.time_ns),
        "connection": ev.connection,
        "src": ev.src,
        "dst": ev.dst,
        "sender": ev.sender_role,
        "flags": ev.flags,
        "phase": ev.phase._value_,  # _value_: Enum.value is a Python-level property (a call per field)
        "verdict": d.verdict._value_,
        "rule": d.rule,
        "confidence": d.confidence._value_,
        "confidence_reason": d.confidence_reason,
        "origin": ev.origin._value_,
        "origin_findings": list(ev.origin_findings),
        "ttl": ev.ttl,
        "sender_ttl": ev.sender_ttl,
        "primary": ev.primary,
        "in_flight": ev.in_flight,
        "in_flight_basis": ev.in_flight_basis,
        "in_flight_capture": ev.in_flight_capture,
        "in_flight_echoes": ev.in_flight_echoes,
        "seq": ev.seq,
        "seq_vs_snd_nxt": ev.seq_vs_snd_nxt,
        "peer_unacked": ev.peer_unacked,
        "peer_in_flight": ev.peer_in_flight,
        "sender_segments_after": ev.sender_segments_after,
        "receiver_segments_after": ev.receiver_segments_after,
        "idle_before": ev.idle_before_s,
        "keepalive_probes": ev.keepalive_probes,
        "sender_fin_frame": ev.sender_fin_frame,
        "answers_frame": ev.answers_frame,
        "answers": ev.answers,
        "echoes": ev.echoes,
        "syn_retransmissions": ev.syn_retransmissions,
        "synack_retransmissions": ev.synack_retransmissions,
        "synack_after_ack": ev.synack_after_ack,
        "client_unacked": ev.client_unacked,
        "findings": list(ev.findings),
        "explanation": d.explanation,
        "fix": d.fix or d.verdict.fix,
        "wireshark_filter": f"frame.number == {ev.frame}",
    }


def gather(read_range: Callable[[int, int], bytes], offsets: np.ndarray, lengths: np.ndarray,
           gap: int = _GATHER_GAP) -> tuple[bytes, np.ndarray]:  # fmt: skip
    """Rows at ``offsets`` (``lengths`` bytes each) of a spill, read with one ``read_range(offset,
    length)`` per run of rows less than ``gap`` bytes apart: their bytes and where each row starts in them."""
    if not len(offsets):
        return b"", np.zeros(0, dtype=np.int64)
    order = np.argsort(offsets, kind="stable")
    begin, end = offsets[order], offsets[order] + lengths[order]
    reach = np.maximum.accumulate(end)
    new = np.ones(len(begin), dtype=bool)
    new[1:] = begin[1:] > reach[:-1] + gap
    first = np.flatnonzero(new)
    lo, hi = begin[first], np.maximum.reduceat(end, first)
    at = np.cumsum(hi - lo) - (hi - lo)  # where each run starts in the bytes
    run = np.cumsum(new) - 1
    starts = np.empty(len(order), dtype=np.int64)
    starts[order] = at[run] + begin - lo[run]
    return b"".join(map(read_range, lo.tolist(), (hi - lo).tolist())), starts


def pread_exactly(fd: int, length: int, offset: int, *, what: str = "a file of RST rows") -> bytes:
    """Bytes ``[offset, offset + length)`` of a file (``what``, for the error); OSError if it ends before."""
    data = os.pread(fd, length, offset)
    while len(data) < length:  # a regular file gives all at once; but for its end, a short read is not that
        more = os.pread(fd, length - len(data), offset + len(data))
        if not more:
            raise OSError(f"{what} ended at byte {offset + len(data)}, not {offset + length}")
        data += more
    return data


class RowSpill:
    """Encoded rows, appended and read back by (offset, length): in memory up to ``memory_bytes``, then in
    an anonymous temporary file that the OS deletes when it is closed.  With ``path``, every row goes to
    that file instead (:meth:`finish` writes the last), which outlives the spill: a fleet shard's part
    of the RST rows, read by another process."""

    def __init__(self, memory_bytes: int | None = None, *, path: str | os.PathLike | None = None) -> None:
        self._memory_bytes = 0 if path is not None else ROW_MEMORY_BYTES if memory_bytes is None else memory_bytes
        self._path = path
        self._file = None
        self._pending = bytearray()
        self._written = 0
        """Bytes in the file; rows from this offset on are still in ``_pending``."""
        self._window = b""
        self._window_start = 0
        self.size = 0

    def append(self, data: bytes) -> int:
        """Add one row; its offset."""
        offset = self.size
        self._pending += data
        self.size += len(data)
        limit = _WRITE_BYTES if self._file is not None else self._memory_bytes
        if len(self._pending) > limit:
            self._flush()
        return offset

    def finish(self) -> None:
        """A spill with ``path``: write the rows still in memory, so that the file holds them all."""
        if self._path is not None and (self._pending or self._file is None):
            self._flush()

    def _flush(self) -> None:
        with scratch.writing():
            if self._file is None and self._path is not None:
                self._file = open(self._path, "w+b")  # noqa: SIM115 (lives with the table)
            elif self._file is None:
                self._file = tempfile.TemporaryFile(  # noqa: SIM115 (lives with the table)
                    prefix="rstscope-resets-", dir=scratch.directory()
                )
            self._file.write(self._pending)
            self._file.flush()
        self._written += len(self._pending)
        self._pending = bytearray()

    @property
    def on_disk(self) -> bool:
        return self._file is not None

    def read_range(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the spill, in one read (rows that lie together)."""
        if offset >= self._written:
            start = offset - self._written
            return bytes(self._pending[start : start + length])
        on_disk = min(length, self._written - offset)
        data = pread_exactly(self._file.fileno(), on_disk, offset)
        return data + bytes(self._pending[: length - on_disk]) if on_disk < length else data

    def read(self, offset: int, length: int) -> bytes:
        if offset >= self._written:
            start = offset - self._written
            return bytes(self._pending[start : start + length])
        start = offset - self._window_start
        if start < 0 or start + length > len(self._window):
            self._window = os.pread(self._file.fileno(), max(_READ_BYTES, length), offset)
            self._window_start, start = offset, 0
        return self._window[start : start + length]


class ResetTable(Sequence):
    """The RSTs of one capture in frame order.  Items are the document's reset rows (dicts, without
    ``capture``), read back from the spill; the columns answer everything else without reading a row."""

    def __init__(self, columns: dict[str, np.ndarray], spill: RowSpill, fixes: set[tuple[str, str]],
                 first_ns: int | None) -> None:  # fmt: skip
        self.frame = columns["frame"]
        self.connection = columns["connection"]
        """Sorted: rows are added connection by connection (``with_resets()`` order)."""
        self.verdict = columns["verdict"]
        """Index into :data:`VERDICTS`."""
        self.connection_primary = columns["connection_primary"]
        """True for the connection's primary RST (its first that is neither echo nor ignored)."""
        self.in_flight = columns["in_flight"]
        """Bytes in flight at the RST, :data:`NO_VALUE` when unknown."""
        self.findings = columns["findings"]
        """How many findings the RST has (the summary's strongest evidence ranks by it)."""
        self._offset = columns["offset"]
        self._length = columns["length"]
        self._spill = spill
        self.fixes = fixes
        """Each (verdict, fix) of the rows once."""
        self.first_ns = first_ns
        """Capture time of the earliest RST, None without RSTs."""
        self._order: np.ndarray | None = None

    def columns(self) -> dict[str, np.ndarray]:
        """The columns this table is made from (as its constructor takes them): the rows' offsets and
        lengths are into its spill."""
        return {"frame": self.frame, "connection": self.connection, "verdict": self.verdict,
                "connection_primary": self.connection_primary, "in_flight": self.in_flight,
                "findings": self.findings, "offset": self._offset, "length": self._length}  # fmt: skip

    # ------------------------------------------------------------------ rows, in frame order

    def __len__(self) -> int:
        return len(self.frame)

    def order(self) -> np.ndarray:
        """Row positions (in the columns) in frame order."""
        if self._order is None:
            frames = self.frame
            self._order = (
                np.arange(len(frames)) if np.all(frames[1:] > frames[:-1]) else np.argsort(frames, kind="stable")
            )
        return self._order

    def raw(self, position: int) -> bytes:
        """The encoded row at a column position."""
        return self._spill.read(int(self._offset[position]), int(self._length[position]))

    def raw_blocks(self, positions: np.ndarray | None = None) -> Iterator[tuple[bytes, np.ndarray, np.ndarray]]:
        """The encoded rows in frame order (or at these column positions), a block at a time: (bytes, where
        each row starts in them, its length), read from the spill with a few reads per block instead of one
        per row."""
        positions = self.order() if positions is None else positions
        for lo in range(0, len(positions), _ROWS_PER_READ):
            block = positions[lo : lo + _ROWS_PER_READ]
            lengths = self._length[block].astype(np.int64)
            data, starts = gather(self._spill.read_range, self._offset[block].astype(np.int64), lengths)
            yield data, starts, lengths

    def raw_rows(self, positions: np.ndarray | None = None) -> Iterator[bytes]:
        """Encoded rows (orjson, without ``capture``) in frame order, or at these column positions."""
        positions = self.order() if positions is None else positions
        read, offsets, lengths = self._spill.read, self._offset, self._length
        for lo in range(0, len(positions), _BLOCK):  # blocks: no Python int per RST held at once
            block = positions[lo : lo + _BLOCK]
            yield from map(read, offsets[block].tolist(), lengths[block].tolist())

    def __iter__(self) -> Iterator[dict]:
        return map(orjson.loads, self.raw_rows())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [orjson.loads(b) for b in self.raw_rows(self.order()[index])]
        return orjson.loads(self.raw(int(self.order()[index])))

    # ------------------------------------------------------------------ answers from the columns

    def verdict_counts(self) -> dict[str, int]:
        counts = np.bincount(self.verdict, minlength=len(VERDICTS))
        return {v.value: int(n) for v, n in zip(VERDICTS, counts, strict=True) if n}

    def count(self, verdict: Verdict) -> int:
        return int(np.count_nonzero(self.verdict == _CODE[verdict]))

    def span(self, conn_id: int, start: int = 0) -> tuple[int, int]:
        """Column positions [lo, hi) of a connection's RSTs (in frame order; lo == hi without RSTs),
        searching from ``start``."""
        lo = start + int(np.searchsorted(self.connection[start:], conn_id))
        return lo, lo + int(np.searchsorted(self.connection[lo:], conn_id, side="right"))

    def positions_of(self, conn_id: int) -> np.ndarray:
        """Column positions of a connection's RSTs, in frame order."""
        return np.arange(*self.span(conn_id))

    def outcome(self, lo: int, hi: int) -> ConnectionOutcome:
        """What the RSTs at column positions [lo, hi), one connection's, say of it."""
        frames = self.frame[lo:hi].tolist()
        marked = np.flatnonzero(self.connection_primary[lo:hi])
        if not len(marked):
            return ConnectionOutcome(frames, VERDICTS[self.verdict[lo]], None, False)
        p = lo + int(marked[0])
        code, in_flight = int(self.verdict[p]), int(self.in_flight[p])
        return ConnectionOutcome(frames, VERDICTS[code], None if in_flight == NO_VALUE else in_flight,
                                 code in _LOST_CODE_SET)  # fmt: skip

    def outcome_of(self, conn_id: int) -> ConnectionOutcome | None:
        """:meth:`outcome` by connection id, None for a connection without RSTs."""
        lo, hi = self.span(conn_id)
        return self.outcome(lo, hi) if hi > lo else None

    def outcome_columns(self, first_id: int, end_id: int) -> OutcomeColumns | None:
        """:meth:`outcome_of` every connection with ids in [first_id, end_id) that saw a RST, as columns, from
        the table's columns at once (the JSON writer asks it of every connection); None: no connection of
        those ids saw a RST."""
        lo, hi = np.searchsorted(self.connection, [first_id, end_id]).tolist()
        if lo == hi:
            return None
        ids = self.connection[lo:hi]
        starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(ids))))
        # Its primary RST (at most one) decides, else its first RST's verdict without in flight or loss.
        primary = np.flatnonzero(self.connection_primary[lo:hi])
        pick, has_primary = starts.copy(), np.zeros(len(starts), dtype=bool)
        pick[group[primary]], has_primary[group[primary]] = primary, True
        codes, in_flight = self.verdict[lo:hi][pick], self.in_flight[lo:hi][pick]
        known = has_primary & (in_flight != NO_VALUE)
        lost = has_primary & np.isin(codes, _LOST_CODES)
        return OutcomeColumns(ids[starts], np.append(starts, len(ids)), self.frame[lo:hi], codes,
                              np.where(known, in_flight, NO_VALUE), lost)  # fmt: skip

    def losses(self) -> tuple[np.ndarray, np.ndarray]:
        """(connection ids, bytes in flight or NO_VALUE) of the connections that lost data: their primary RST
        has a loss verdict.  In id order."""
        lost = self.connection_primary & np.isin(self.verdict, _LOST_CODES)
        return self.connection[lost], self.in_flight[lost]

    def connections_reset(self) -> int:
        """How many connections saw a RST."""
        ids = self.connection
        return int(np.count_nonzero(ids[1:] != ids[:-1])) + 1 if len(ids) else 0


class ConnectionOutcome:
    """A connection's RSTs as its document row shows them."""

    __slots__ = ("frames", "in_flight", "lost_data", "verdict")

    def __init__(self, frames: list[int], verdict: Verdict, in_flight: int | None, lost_data: bool) -> None:
        self.frames = frames
        """Its RSTs' frames, in order."""
        self.verdict = verdict
        """Its primary RST's verdict, else its first RST's."""
        self.in_flight = in_flight
        """Bytes in flight at its primary RST (None: unknown, or no primary RST)."""
        self.lost_data = lost_data


class OutcomeColumns(NamedTuple):
    """The :class:`ConnectionOutcome` of each connection that saw a RST, as columns (in id order)."""

    ids: np.ndarray
    bounds: np.ndarray
    """Connection ``k``'s RSTs are ``frames[bounds[k] : bounds[k + 1]]``."""
    frames: np.ndarray
    codes: np.ndarray
    """Verdicts (index into :data:`VERDICTS`)."""
    in_flight: np.ndarray
    """Bytes in flight, NO_VALUE for None."""
    lost: np.ndarray


def build(
    connections: Iterable[Connection],
    host_ttl: dict[str, TtlRange] | None = None,
    *,
    memory_bytes: int | None = None,
    extend: Callable[[dict, int], None] | None = None,
    path: str | os.PathLike | None = None,
) -> ResetTable:
    """Evidence and a verdict for every RST of ``connections`` (those that saw one, in id order), one
    connection at a time: only the table's columns and the encoded rows outlive a connection.
    ``extend(row, frame)`` adds fields to each row (a stitched capture's file and frame in it).
    ``path``: the encoded rows all go to this file (the table's offsets are into it).

    ``connections`` may also be lighter objects with the fields evidence reads
    (:meth:`~rstscope.connections.retire.ConnectionsById.reset_subjects`)."""
    with collector.paused():
        table = _build(connections, {} if host_ttl is None else host_ttl, RowSpill(memory_bytes, path=path), extend)
    heap.give_back()  # the evidence objects of a storm of RSTs, gone: what the outputs start from
    return table


def _build(connections: Iterable[Connection], host_ttl: dict[str, TtlRange], spill: RowSpill,
           extend: Callable[[dict, int], None] | None) -> ResetTable:  # fmt: skip
    cols = {name: array(code) for name, code in _COLUMNS.items()}
    frame_c, conn_c, verdict_c, primary_c, in_flight_c, findings_c, offset_c, length_c = cols.values()
    fixes: set[tuple[str, str]] = set()
    first_ns = None
    dumps, of_connection = orjson.dumps, evidence_mod.of_connection
    rows: list[bytes] = []  # encoded rows not yet in the spill, which takes them a block at a time
    at = spill.size  # the offset of the next row
    for conn in connections:
        items = of_connection(conn, host_ttl)
        if len(items) > 1:
            items.sort(key=_frame)
        primary_seen = False
        for ev in items:
            d = classify(ev)
            fields = reset_fields(ev, d)
            if extend is not None:
                extend(fields, ev.frame)
            row = dumps(fields)
            is_primary = not primary_seen and d.verdict not in NOT_PRIMARY
            primary_seen = primary_seen or is_primary
            frame_c.append(ev.frame)
            conn_c.append(ev.connection)
            verdict_c.append(_CODE_OF_VALUE[d.verdict._value_])
            primary_c.append(is_primary)
            in_flight_c.append(NO_VALUE if ev.in_flight is None else ev.in_flight)
            findings_c.append(len(ev.findings))
            offset_c.append(at)
            length_c.append(len(row))
            at += len(row)
            rows.append(row)
            fixes.add((fields["verdict"], fields["fix"]))
            if first_ns is None or ev.time_ns < first_ns:
                first_ns = ev.time_ns
        if len(rows) >= _ROWS_PER_APPEND:
            spill.append(b"".join(rows))
            rows.clear()
    spill.append(b"".join(rows))
    spill.finish()
    columns = {name: np.frombuffer(col, dtype=_COLUMNS[name]) if len(col) else np.zeros(0, _COLUMNS[name])
               for name, col in cols.items()}  # fmt: skip
    columns["connection_primary"] = columns["connection_primary"].astype(bool)
    ids = columns["connection"]
    if np.any(ids[1:] < ids[:-1]):  # connections come in id order: sorted already, but do not rely on it
        order = np.argsort(ids, kind="stable")
        columns = {name: col[order] for name, col in columns.items()}
    return ResetTable(columns, spill, fixes, first_ns)


_COLUMNS = {"frame": "q", "connection": "q", "verdict": "b", "connection_primary": "b", "in_flight": "q",
            "findings": "H", "offset": "q", "length": "I"}  # fmt: skip
"""array.array type codes of the columns while they are built (numpy reads them without a copy)."""


def _frame(ev: ResetEvidence) -> int:
    return ev.frame


def empty() -> ResetTable:
    return build(())
