"""Sequence space and in flight: the sequence pass over a chunk, one compiled loop (``sequence_loop.c``).

Rows are grouped by connection (capture order inside each group); running values per direction are
computed for every row -- unwrapped sequence and ack positions (see :mod:`rstscope.seqnum` for the
wraparound rule), the sender's ``snd_nxt`` before the row, the highest ack the peer had sent,
retransmissions, zero windows, keepalive probes, the peer segment the row follows -- and carried over
to the next chunk per connection in :class:`ConnArrays`.  Sequence-space anchors: the carried one, else
the side's first segment in the chunk, else the first ack the peer sent for it in the chunk.

The pass also picks the *event rows*, the few that go through the per-row event pass
(:mod:`rstscope.connections.events`): SYN/FIN/RST, the first data and first pure ACK of each direction,
the rows where the retransmission or zero-window count reaches 1, 10, 100..., every row of a
connection's first ``EARLY_PACKETS`` and every row after its first FIN or RST.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from rstscope import packets as P
from rstscope.connections.retire import grown
from rstscope.grouped import NONE

try:
    from rstscope.connections._kernel import ffi, lib
except ImportError:  # pragma: no cover - an install without a C compiler: one line, not a traceback
    print("rstscope: error: the compiled loops (rstscope/connections/_kernel*.so) are missing: reinstall "
          "with gcc and python3-dev present (scripts/setup.sh installs them)", file=sys.stderr)  # fmt: skip
    raise SystemExit(2) from None
from rstscope.seqnum import SEQ_MOD

EARLY_PACKETS = 4
PEER_ACKS_KEPT = 8
"""Per connection side, the last ACK segments (frame, ack) kept across chunks: at a RST, the peer's last
ACKs tell which of them the sender had seen when it reset (see evidence.py, "In flight")."""


class ConnArrays:
    """Per-connection carried state of the sequence pass, one *slot* per live connection: one int64 row
    of :attr:`INT_COLUMNS` per slot (``arr[name]`` is a column), the layout ``sequence_loop.c`` reads.

    A connection's slot is freed when it retires (see :mod:`rstscope.connections.retire`), so this table
    grows with the connections alive at once, not with all the connections of the capture."""

    INT_COLUMNS = (
        "orig_is_a",  # 1 if canonical endpoint A is the originator
        "anchor_raw0", "anchor_raw1", "anchor_val0", "anchor_val1",  # seq-space anchor per side (-1 raw: none)
        "last_seq_raw0", "last_seq_raw1",  # previous raw seq per side (for unwrapping), -1 none
        "last_seq_val0", "last_seq_val1",
        "last_ack_raw0", "last_ack_raw1",  # previous raw ack per side (ACK segments only), -1 none
        "last_ack_val0", "last_ack_val1",
        "max_end0", "max_end1",  # highest seq_end per side (NONE: nothing sent)
        "max_ack0", "max_ack1",  # highest ack per side (NONE)
        "pkts0", "pkts1", "bytes0", "bytes1", "retx0", "retx1", "zw0", "zw1", "old0", "old1",
        "seen_data0", "seen_data1", "seen_pure_ack0", "seen_pure_ack1",
        "closing",  # a FIN or RST was seen
        "skipped",  # rows went by without the event pass after the connection's last event row
        "last_frame0", "last_frame1", "last_flags0", "last_flags1", "last_len0", "last_len1",
        "last_ackrel0", "last_ackrel1", "last_seqrel0", "last_seqrel1",
        "first_ns", "last_ns", "first_seq_val0", "first_seq_val1", "last_frame",
        "ttl_min0", "ttl_min1", "ttl_max0", "ttl_max1", "ttl_n0", "ttl_n1",  # non-RST packets per side
        "ts_n0", "ts_n1",  # non-RST packets per side with a timestamps option
        "last_plain_ip_id0", "last_plain_ip_id1",  # IP ID of the side's last plain segment (-1 none)
        "last_ns0", "last_ns1",  # time of the side's last segment (NONE)
        "last_gap0", "last_gap1",  # silence on the connection before the side's last segment
        "last_plain_frame0", "last_plain_frame1",  # the side's last segment that was neither a probe nor a RST
    )  # fmt: skip
    DEFAULTS: ClassVar[dict[str, int]] = {
        "anchor_raw0": -1, "anchor_raw1": -1, "last_seq_raw0": -1, "last_seq_raw1": -1,
        "last_ack_raw0": -1, "last_ack_raw1": -1, "max_end0": NONE, "max_end1": NONE,
        "max_ack0": NONE, "max_ack1": NONE, "last_frame0": -1, "last_frame1": -1,
        "last_ackrel0": NONE, "last_ackrel1": NONE, "last_seqrel0": NONE, "last_seqrel1": NONE,
        "first_seq_val0": NONE, "first_seq_val1": NONE, "ttl_min0": 256, "ttl_min1": 256, "ttl_max0": -1,
        "ttl_max1": -1, "last_ns0": NONE, "last_ns1": NONE,
        "last_plain_frame0": -1, "last_plain_frame1": -1, "last_plain_ip_id0": -1, "last_plain_ip_id1": -1,
    }  # fmt: skip
    _DEFAULT_ROW = np.array(list(map(DEFAULTS.get, INT_COLUMNS, [0] * len(INT_COLUMNS))), dtype=np.int64)
    _INDEX: ClassVar[dict[str, int]] = dict(zip(INT_COLUMNS, range(len(INT_COLUMNS)), strict=True))

    CARRIED_INTO_RST = (
        "last_frame", "last_flags", "last_len", "last_ackrel", "last_seqrel", "last_ns", "last_gap",  # the peer's
        "last_plain_frame", "last_plain_ip_id",  # the sender's
    )  # fmt: skip
    """What the event pass reads at a RST row as it was carried *into* the chunk (the sequence pass updates
    the table in place): per RST row, these columns of its peer's side, then of its own side."""

    def __init__(self) -> None:
        self.size = 0
        self.capacity = 1024
        self.into_chunk: tuple[np.ndarray, np.ndarray]
        """(positions of the chunk's RST rows, their CARRIED_INTO_RST values), set by :func:`running_values`."""
        self.clear_carried_in()
        self.table = np.tile(self._DEFAULT_ROW, (self.capacity, 1))
        self.free: list[int] = []
        """Slots of retired connections, reused by new ones."""

    def allocate(self, k: int, *, defaults: bool = True) -> np.ndarray:
        """``k`` slots for new connections, every column at its default (unless not ``defaults``: the
        caller writes every column, as waking a dormant connection does)."""
        reused = self.free[len(self.free) - k :] if k else []
        del self.free[len(self.free) - len(reused) :]
        fresh = k - len(reused)
        self.grow(fresh)
        slots = np.array(reused + list(range(self.size - fresh, self.size)), dtype=np.int64)
        if reused and defaults:
            self.table[slots[: len(reused)]] = self._DEFAULT_ROW
        return slots

    def grow(self, n_new: int) -> None:
        need = self.size + n_new
        if need > self.capacity:
            cap = max(need, self.capacity * 3 // 2)  # slots are ~3 KB: grow by half, not double
            table = np.tile(self._DEFAULT_ROW, (cap, 1))
            table[: self.size] = self.table[: self.size]
            self.table = table
            self.capacity = cap
        self.size = need

    def __getitem__(self, name: str) -> np.ndarray:
        """One column (a view: assigning to its elements sets the table)."""
        return self.table[:, self._INDEX[name]]

    def carried_into(self, rows: np.ndarray) -> Callable[[str], np.ndarray]:
        """The columns of CARRIED_INTO_RST at these RST rows of the chunk, as carried into it: by name."""
        positions, values = self.into_chunk
        at = np.searchsorted(positions, rows)
        return lambda name: values[at, self.CARRIED_INTO_RST.index(name)]

    def clear_carried_in(self) -> None:
        """No chunk's values carried in are kept (none yet, or the event pass has read them)."""
        self.into_chunk = (np.zeros(0, dtype=np.int64), np.zeros((0, len(self.CARRIED_INTO_RST)), dtype=np.int64))

    def _keep_carried_in(self, rst_rows: np.ndarray, slots: np.ndarray, sides: np.ndarray) -> None:
        cols = [self._INDEX[f"{name}0"] + (sides if name.startswith("last_plain") else 1 - sides)
                for name in self.CARRIED_INTO_RST]  # fmt: skip
        self.into_chunk = (rst_rows, self.table[slots[:, None], np.stack(cols, axis=1)])


def _check_layout() -> None:
    """``sequence_loop.c`` indexes the carried columns by its ``C_*`` constants: they must agree."""
    for i, name in enumerate(ConnArrays.INT_COLUMNS):
        per_side = name[-1] in "01"
        at = getattr(lib, f"C_{name[:-1].upper()}0") + int(name[-1]) if per_side else getattr(lib, f"C_{name.upper()}")
        assert at == i, (name, at, i)
    assert (len(ConnArrays.INT_COLUMNS), PEER_ACKS_KEPT, EARLY_PACKETS) == (lib.C_WIDTH, lib.SQ_ACKS, lib.SQ_EARLY)


_check_layout()


@dataclass(slots=True)
class ChunkValues:
    """Per row of a chunk (grouped by connection), the running values the event pass needs (the carried
    columns at the chunk's end are in the table already: the compiled pass updates it in place)."""

    conns: np.ndarray
    """Per group, the connection's slot."""
    seq_val: np.ndarray
    ack_val: np.ndarray
    snd_nxt_before: np.ndarray
    own_ack_before: np.ndarray
    peer_acked: np.ndarray
    peer_snd_nxt: np.ndarray
    old_count: np.ndarray
    """The side's running count of old-data segments at such rows, 0 elsewhere."""
    zw_count: np.ndarray
    gap: np.ndarray
    peer_prev: np.ndarray
    """The peer segment each row follows (position in the chunk, -1: none in this chunk)."""
    last_plain: np.ndarray
    """Per row, position of its side's latest segment at/before it that is neither a probe nor a RST."""
    pure_ack: np.ndarray
    probe: np.ndarray
    events: np.ndarray
    after_gap: np.ndarray
    rst_rows: np.ndarray
    """Positions of the RST rows."""
    rst_acks: np.ndarray
    """Per RST row, the peer's last PEER_ACKS_KEPT ACK segments: frames, then acks, oldest first."""

    def peer_acks(self, frame: np.ndarray) -> PeerAcks:
        """Per RST row, by frame: the peer's last ACK segments before it."""
        k = PEER_ACKS_KEPT
        held = self.rst_acks[:, :k] >= 0
        count = held.sum(axis=1)
        pairs = np.zeros((len(count), k, 2), dtype=np.int64)
        some = np.flatnonzero(count)  # (a storm's bare RSTs follow no ACK of their peer)
        frames, acks = self.rst_acks[some, :k], self.rst_acks[some, k:]
        first = np.argsort(~held[some], axis=1, kind="stable")  # the ring's held entries, in order, to the front
        pairs[some] = np.stack([np.take_along_axis(frames, first, 1), np.take_along_axis(acks, first, 1)], axis=2)
        pairs[np.arange(k) >= count[:, None]] = 0
        rst_frame = frame[self.rst_rows]
        order = np.argsort(rst_frame, kind="stable")
        return PeerAcks(rst_frame[order], pairs[order], count[order])


class PeerAcks(NamedTuple):
    """The peer's last ACK segments before each RST row of a chunk (what a RST row's ``peer_acks`` hold)."""

    frame: np.ndarray
    """The RST rows' frames, ascending."""
    pairs: np.ndarray
    """Per RST row, PEER_ACKS_KEPT (frame, ack) pairs, oldest first, the ``count`` held ones first, zeros after."""
    count: np.ndarray

    def of(self, rst_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pairs, count) of the RSTs at these frames (none for a frame not among them)."""
        if not len(self.frame):
            return np.zeros((len(rst_frame), PEER_ACKS_KEPT, 2), dtype=np.int64), np.zeros(len(rst_frame), np.int64)
        at = np.minimum(np.searchsorted(self.frame, rst_frame), len(self.frame) - 1)
        found = self.frame[at] == rst_frame
        return np.where(found[:, None, None], self.pairs[at], 0), np.where(found, self.count[at], 0)


NO_PEER_ACKS = PeerAcks(np.zeros(0, np.int64), np.zeros((0, PEER_ACKS_KEPT, 2), np.int64), np.zeros(0, np.int64))


def running_values(arr: ConnArrays, ring: AckRing, conn, side, flags, seq, ack_raw, plen, ts, window, frame, ttl,
                   ip_ids, has_ts) -> ChunkValues:  # fmt: skip
    """The running values of a chunk's rows (``conn``: each row's slot, rows grouped by slot), in one
    compiled pass (``sequence_loop.c``); the ACK rings and the carried columns are updated in place, but
    for the few values the event pass reads at RST rows as they were carried into the chunk
    (:meth:`ConnArrays.carried_into`, until :meth:`ConnArrays.clear_carried_in`): a copy of every group's
    row would be the largest array of a reset storm's chunk (512 bytes per connection)."""
    n = len(conn)
    cstart = np.ones(n, dtype=bool)
    cstart[1:] = conn[1:] != conn[:-1]
    conns = conn[cstart]
    rst_rows = np.flatnonzero(flags & P.RST)
    arr._keep_carried_in(rst_rows, conn[rst_rows], side[rst_rows])
    i64 = [np.empty(n, dtype=np.int64) for _ in range(11)]
    u8 = [np.empty(n, dtype=np.uint8) for _ in range(4)]
    rst_acks = np.empty((len(rst_rows), 2 * PEER_ACKS_KEPT), dtype=np.int64)
    inputs = [conn, side, flags, seq, ack_raw, plen, ts, frame, ttl, ip_ids, window, has_ts]
    assert all(a.dtype == np.int64 and a.flags.c_contiguous for a in inputs)
    rows_in = ffi.new(
        "struct sq_rows *",
        dict(zip(("slot", "side", "flags", "seq", "ack", "plen", "ts", "frame", "ttl", "ip_id", "window", "has_ts"),
                 (ffi.from_buffer("int64_t[]", a) for a in inputs), strict=True)),
    )  # fmt: skip
    out = ffi.new(
        "struct sq_out *",
        dict(zip(_I64_OUT, (ffi.from_buffer("int64_t[]", a) for a in i64), strict=True))
        | dict(zip(_U8_OUT, (ffi.from_buffer("uint8_t[]", a) for a in u8), strict=True))
        | {"rst_acks": ffi.from_buffer("int64_t[]", rst_acks)},
    )
    assert arr.table.flags.c_contiguous and arr.table.shape[1] == lib.C_WIDTH and (n == 0 or conns.max() < arr.size)
    table, frames, acks = (ffi.from_buffer("int64_t[]", a) for a in (arr.table, ring.frame, ring.ack))
    lib.sequence_pass(n, NONE, rows_in, table, frames, acks, out)
    values = dict(zip(_I64_OUT, i64, strict=True)) | dict(zip(_U8_OUT, (a.view(bool) for a in u8), strict=True))
    return ChunkValues(conns=conns, rst_rows=rst_rows, rst_acks=rst_acks, **values)


_I64_OUT = ("seq_val", "ack_val", "snd_nxt_before", "own_ack_before", "peer_acked", "peer_snd_nxt", "old_count",
            "zw_count", "gap", "peer_prev", "last_plain")  # fmt: skip
_U8_OUT = ("pure_ack", "probe", "events", "after_gap")


class AckRing:
    """Per connection side (by slot), its last PEER_ACKS_KEPT ACK segments: frame and ack, oldest first
    (-1: none).  ``sequence_loop.c`` appends to them row by row."""

    def __init__(self) -> None:
        self.frame = np.full((1024, 2, PEER_ACKS_KEPT), -1, dtype=np.int64)
        self.ack = np.full((1024, 2, PEER_ACKS_KEPT), NONE, dtype=np.int64)

    def fit(self, capacity: int, new_slots: np.ndarray) -> None:
        """Room for ``capacity`` slots; the ``new_slots`` start empty."""
        if len(self.frame) < capacity:  # in place where it can be: no second copy alive while it grows
            size = len(self.frame)
            self.frame, self.ack = grown(self.frame, capacity), grown(self.ack, capacity)
            self.frame[size:], self.ack[size:] = -1, NONE
        self.frame[new_slots] = -1
        self.ack[new_slots] = NONE


def answers(rst_flags, rst_seq, rst_ack, flags, seq, ack, payload):
    """Whether a RST is a reply to a segment (RFC 9293 §3.10.7.1 reset generation), element-wise.

    A segment with ACK draws a bare RST whose seq is the segment's ack (Linux), or a RST|ACK whose seq
    is the segment's ack and whose ack is the segment's end (BSD, Windows, most middleboxes); a segment
    without ACK (a SYN) draws RST|ACK whose ack covers it.  All four numbers in one numbering: raw,
    or relative to each side's first sequence number (``NONE`` for an unknown number).
    """
    rst_has_ack, has_ack = (rst_flags & P.ACK) != 0, (flags & P.ACK) != 0
    syn, fin = (flags & P.SYN) != 0, (flags & P.FIN) != 0
    bare_reply = has_ack & (ack == rst_seq)
    syn_reply = syn & ((seq + 1) % SEQ_MOD == rst_ack % SEQ_MOD)
    end = seq + payload + syn + fin  # SYN and FIN each take a number
    ack_reply = (ack == rst_seq) & (end % SEQ_MOD == rst_ack % SEQ_MOD)
    return np.where(rst_has_ack, np.where(has_ack, ack_reply, syn_reply), bare_reply)
