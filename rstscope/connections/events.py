"""The event pass: the rows that change something a person cares about, in capture order, in one
compiled loop per chunk.

:mod:`rstscope.connections.sequence` picks the event rows and computes their running values; the loop
(``event_loop.c``, built at install by cffi) writes each connection's history, the frames evidence needs
(SYN and SYN-ACK counts, the handshake ACK, FINs, first payload, keepalive probes), runs the state table
of :mod:`.state` (passed in as int tables) and writes out findings, segments after a RST, and at each RST
what the connection knew then.  Here those outputs become rows (:mod:`.rows`) kept per live connection
in :class:`PendingRows` until it retires; no Python object is made per row or per connection.

Per connection, the loop's state is one slot of :class:`EventColumns` (``EV_*`` columns of
``event_loop.c``), beside the sequence pass's :class:`~rstscope.connections.sequence.ConnArrays`.
"""

from __future__ import annotations

import itertools
import sys

import numpy as np

from rstscope import packets as P
from rstscope.connections import retire
from rstscope.connections.records import EndpointState, Phase, phase_of
from rstscope.connections.retire import grown
from rstscope.connections.rows import AFTER_ROW, FINDING_ROW, LETTERS, PEER_ACKS_KEPT, RING, RST_ROW, STATES, runs
from rstscope.connections.sequence import NO_PEER_ACKS, ConnArrays, answers
from rstscope.connections.state import Event, events_of, tables
from rstscope.grouped import NONE, members

try:
    from rstscope.connections._kernel import ffi, lib
except ImportError:  # pragma: no cover - an install without a C compiler: one line, not a traceback
    print("rstscope: error: the compiled event loop (rstscope/connections/_kernel*.so) is missing: reinstall "
          "with gcc and python3-dev present (scripts/setup.sh installs them)", file=sys.stderr)  # fmt: skip
    raise SystemExit(2) from None

AFTER_RESET_KEPT = RING
"""Segments kept after a connection's first RST: whether the supposed sender went on sending and the
receiver went on with the connection tells a forged or ignored RST from a real one."""
PROBES_KEPT = RING
"""Keepalive probes kept per side (the last ones)."""
RECENT_SEGMENTS = RING
"""Per side, the last event rows kept: a reply-RST is matched to the segment it answers through them."""
assert (lib.RING, lib.HISTORY_MAX) == (RING, 24) and LETTERS.index("^") == lib.L_CARET

_EV_DEFAULTS = np.zeros(lib.EV_WIDTH, dtype=np.int64)
_EV_DEFAULTS[[lib.EV_STATE, lib.EV_STATE + 1, lib.EV_PREV, lib.EV_PREV + 1]] = STATES.index(EndpointState.INACTIVE)
_EV_DEFAULTS[lib.EV_FLAGSEQ : lib.EV_FLAGSEQ + 6] = -1
for _col in ("SYN_FIRST", "SYN_LAST", "SA_FIRST", "SA_LAST", "SAA_FIRST", "SAA_LAST", "HS_ACK"):
    _EV_DEFAULTS[getattr(lib, f"EV_{_col}")] = -1
for _col in ("ISN", "FIN", "PAYLOAD", "RST_FIRST"):
    _EV_DEFAULTS[getattr(lib, f"EV_{_col}") + np.arange(2)] = -1


class BlockPool:
    """Blocks of int64 numbers (each of ``shape``) shared by the slots: a slot holds the numbers of the
    blocks it took (-1: none) and gives them back when it is done; the free blocks are a stack (the C
    loop takes and gives back through :attr:`struct`)."""

    def __init__(self, shape: tuple[int, ...], least: int) -> None:
        self.shape = shape
        self._least = least  # blocks added at least when the pool grows
        self.data = np.zeros((0, *shape), dtype=np.int64)
        self.free = np.zeros(0, dtype=np.int32)
        self.struct = ffi.new("struct pool *")

    @property
    def n_free(self) -> int:
        return int(self.struct.n_free)

    def __len__(self) -> int:
        return len(self.data)

    def reserve(self, k: int) -> None:
        """At least ``k`` free blocks (the pool grows by half, as the slots do)."""
        n_free, size = self.n_free, len(self.data)
        if n_free >= k:
            return
        new = size + max(k - n_free, size // 2, self._least)
        self.data, self.free = grown(self.data, new), grown(self.free, new)
        self.free[n_free : n_free + new - size] = np.arange(new - 1, size - 1, -1, dtype=np.int32)
        self.struct.n_free = n_free + new - size

    def take(self, k: int) -> np.ndarray:
        """``k`` free blocks' numbers, taken."""
        self.reserve(k)
        n_free = self.n_free
        taken = self.free[n_free - k : n_free].copy()
        self.struct.n_free = n_free - k
        return taken

    def give(self, blocks: np.ndarray) -> None:
        """Give these blocks back (numbers < 0 are no block)."""
        blocks = blocks[blocks >= 0]
        n_free = self.n_free
        self.free[n_free : n_free + len(blocks)] = blocks
        self.struct.n_free = n_free + len(blocks)

    def bind(self) -> None:
        """Point the C view at the current arrays (they move when the pool grows)."""
        self.struct.data = ffi.cast("int64_t *", self.data.ctypes.data)
        self.struct.free = ffi.cast("int32_t *", self.free.ctypes.data)


class EventColumns:
    """The event loop's per-slot state: the ``EV_*`` columns and history letter codes per slot; the recent
    segments and keepalive probes per side in shared pools (:class:`BlockPool`): a slot holds the numbers
    of its blocks.  A slot's blocks are given back when its connection retires or goes dormant, and its
    recent-segment blocks when the loop forgets those segments."""

    def __init__(self) -> None:
        self.ev = np.empty((0, lib.EV_WIDTH), dtype=np.int64)
        self.history = np.empty((0, lib.HISTORY_MAX), dtype=np.int8)
        self.blocks = np.empty((0, 2, lib.BLOCKS), dtype=np.int32)  # per side, its recent-segment blocks
        self.probe_block = np.empty(0, dtype=np.int32)
        self.recent = BlockPool((lib.BLOCK, lib.SEG), least=4096)
        self.probes = BlockPool((2, RING, 2), least=64)

    def fit(self, capacity: int, new_slots: np.ndarray, flipped: np.ndarray) -> None:
        """Room for ``capacity`` slots; the ``new_slots`` (holding no blocks) start afresh, with ``^`` first
        where ``flipped``."""
        if len(self.ev) < capacity:  # ConnArrays decides how much room
            size = len(self.ev)
            for name in ("ev", "history", "blocks", "probe_block"):
                setattr(self, name, grown(getattr(self, name), capacity))
            self.ev[size:] = _EV_DEFAULTS
            self.blocks[size:] = -1
            self.probe_block[size:] = -1
        self.ev[new_slots] = _EV_DEFAULTS
        self.ev[new_slots, lib.EV_HLEN] = flipped
        self.history[new_slots[flipped], 0] = lib.L_CARET

    def forget_recent(self, slots: np.ndarray) -> None:
        """These connections' recent segments are no longer the last ones (what the loop does at their next
        row anyway): their blocks go back to the pool."""
        self.ev[slots, lib.EV_RECENT_N] = 0
        self.ev[slots, lib.EV_RECENT_N + 1] = 0
        self.recent.give(self.blocks[slots].ravel())
        self.blocks[slots] = -1

    def release(self, slots: np.ndarray) -> None:
        """These slots are done (their connection retired or went dormant): all their blocks go back."""
        self.recent.give(self.blocks[slots].ravel())
        self.blocks[slots] = -1
        self.probes.give(self.probe_block[slots])
        self.probe_block[slots] = -1

    def probes_of(self, slots: np.ndarray) -> np.ndarray:
        """The keepalive-probe rings of these slots, (slot, side, RING, 2); zeros where no block."""
        blocks = self.probe_block[slots]
        out = np.zeros((len(slots), 2, RING, 2), dtype=np.int64)
        held = blocks >= 0
        out[held] = self.probes.data[blocks[held]]
        return out

    def restore_probes(self, slots: np.ndarray, probes: np.ndarray) -> None:
        """Keepalive-probe rings back into these slots (holding no probe block): blocks for those that count
        probes.  (Their recent segments: ``restore_rings``, slots_loop.c.)"""
        probed = self.ev[slots, lib.EV_PROBE_N : lib.EV_PROBE_N + 2].any(axis=1)
        taken = self.probes.take(int(probed.sum()))
        self.probe_block[slots[probed]] = taken
        self.probes.data[taken] = probes[probed]


class PendingRows:
    """Rows of one table (findings, RST observations, segments after a reset) of the live connections."""

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._parts: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            self._parts.append(rows)

    def rows(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [retire.joined(self._parts, self.dtype)]
        return self._parts[0]

    def __len__(self) -> int:
        return sum(map(len, self._parts))

    def take(self, conn_ids: np.ndarray, *, keep: bool = False) -> np.ndarray:
        """The rows of these connections, in capture order; forgotten here unless ``keep``."""
        if not self._parts:
            return np.zeros(0, self.dtype)
        rows = self.rows()
        mine = members(rows["conn"], conn_ids)
        if not keep:
            self._parts = [retire.taken(rows, ~mine)]
        return retire.taken(rows, mine)


class FiledRows(PendingRows):
    """:class:`PendingRows` of a wide table (RST observations, 647 bytes a row) kept in a
    :class:`~.retire.RecordFile` (memory up to a batch, then a temporary file), with only each row's
    connection and position in memory: a reset storm keeps tens of thousands of connections with a RST
    live at once.  The index is kept by connection (capture order in each), and a connection's rows are
    found by bisection and marked taken: a batch of retiring connections costs its own rows, not a pass
    over every pending one (a million bare RSTs: 1.28 -> 0.78 s of the tracker's profile, reading
    included).  When the file holds more taken rows than pending ones, the pending ones move to a fresh
    file."""

    def __init__(self, dtype: np.dtype) -> None:
        super().__init__(dtype)
        self._file = retire.RecordFile(dtype)
        self._index = np.zeros((0, 2), dtype=np.int64)  # (conn, position) per row, by conn, capture order in each
        self._taken = np.zeros(0, dtype=bool)  # per row of the index
        self._added: list[np.ndarray] = []  # (conn, position) per row added since the index was sorted
        self._pending = 0
        self._taken_in_file = 0

    def add(self, rows: np.ndarray) -> None:
        if len(rows):
            start = self._file.append(rows)
            self._added.append(np.stack([rows["conn"], start + np.arange(len(rows))], axis=1))
            self._pending += len(rows)

    def _sorted(self) -> np.ndarray:
        """The index with the rows added since merged in (and the taken ones left out)."""
        if self._added:
            joined = np.concatenate([self._index[~self._taken], *self._added])
            self._added = []
            # Stable: a connection's rows stay in position order, which is capture order.
            self._index = joined[np.argsort(joined[:, 0], kind="stable")]
            self._taken = np.zeros(len(self._index), dtype=bool)
        return self._index

    def rows(self) -> np.ndarray:
        index = self._sorted()
        return self._file.take(np.sort(index[~self._taken, 1]))

    def __len__(self) -> int:
        return self._pending

    def take(self, conn_ids: np.ndarray, *, keep: bool = False) -> np.ndarray:
        """The rows of these connections, each one's in capture order (connections in the index's order:
        :meth:`.retire.Spill.put` takes them in any)."""
        index = self._sorted()
        conns = index[:, 0]
        first = np.searchsorted(conns, conn_ids)
        count = np.searchsorted(conns, conn_ids, side="right") - first
        at = runs(first, count)
        at = at[~self._taken[at]]
        out = self._file.take(index[at, 1])
        if not keep:
            self._taken[at] = True
            self._pending -= len(at)
            self._taken_in_file += len(at)
            if self._taken_in_file > max(self._pending, COMPACT_ROWS):
                self._compact()
        return out

    def _compact(self) -> None:
        """Copy the pending rows to a fresh file (the old one, mostly taken rows, is closed and gone)."""
        index, old = self._sorted(), self._file
        index = index[~self._taken]
        self._file, self._index, self._taken = retire.RecordFile(self.dtype), index[:0], self._taken[:0]
        self._pending = self._taken_in_file = 0
        for start in range(0, len(index), retire.SPILL_BATCH):  # a batch of rows in memory at once, not all
            self.add(old.take(index[start : start + retire.SPILL_BATCH, 1]))


EVENT_BATCH = 8_192
"""RSTs run through the loop at once (with the event rows between them): a reset storm's chunk is all
RSTs, and what the loop writes per RST (about 1.3 KB) and the RST rows made from them stay a few
megabytes.  A slice with fewer RSTs runs in one batch: the batch's fixed cost (a few dozen numpy calls
around the loop and around its RST rows) is paid once, not once per 8,192 event rows (on short
connections nearly every row is an event row, and a slice has a few dozen RSTs)."""
COMPACT_ROWS = 1 << 16
"""Taken rows a :class:`FiledRows` file holds at least before it is compacted."""


class EventPass:
    """Runs a chunk's event rows through the compiled loop."""

    def __init__(self, arrays: ConnArrays) -> None:
        self._arrays = arrays
        self.columns = EventColumns()
        self.resets = FiledRows(RST_ROW)
        self.findings = PendingRows(FINDING_ROW)
        self.after = PendingRows(AFTER_ROW)
        self.overflow: dict[int, list[int]] = {}
        """Connection id -> its history letter codes past the 24 of its slot."""
        self.saw_reset = np.zeros(1024, dtype=bool)
        """By connection id: it saw a RST (one byte per connection, not a set entry of about 60)."""
        self.rst_peer_acks = NO_PEER_ACKS
        """The peer's last ACK segments before each RST row of the rows being tracked (set per chunk or part)."""
        self._tables = tables()  # kept alive: the struct below points into them
        self._struct = ffi.new("struct tables *")
        t = self._struct
        t.transitions, t.peer_rules, t.peer_effects = (ffi.from_buffer("int8_t[]", a) for a in self._tables)
        t.n_states, t.n_events = len(STATES), len(Event)
        t.reset, t.closed = STATES.index(EndpointState.RESET), STATES.index(EndpointState.CLOSED)
        t.none, t.stale_frames, t.after_kept = NONE, retire.STALE_AFTER_FRAMES, AFTER_RESET_KEPT

    def drop_slots(self, arrays: ConnArrays) -> None:
        """The tracker dropped its slots (every connection retired): drop the event loop's too."""
        self._arrays = arrays
        self.columns = EventColumns()

    def run(self, idx, frame_col, ts, seq_raw, ack_raw, order, conn, conn_id, side, flags, *columns, **named) -> None:
        """Run the event rows ``idx`` (positions in the grouped chunk, in capture order) through the loop,
        EVENT_BATCH RSTs at a time; the other arguments (see :meth:`_run`) are the chunk's columns and
        running values, grouped by connection."""
        if not len(idx):
            return
        cuts = np.flatnonzero(flags[idx] & P.RST)[EVENT_BATCH::EVENT_BATCH]  # a batch ends before its 8,193rd RST
        for first, end in itertools.pairwise([0, *cuts.tolist(), len(idx)]):
            self._run(idx[first:end], frame_col, ts, seq_raw, ack_raw, order, conn, conn_id, side, flags, *columns,
                      **named)  # fmt: skip

    def _run(self, idx, frame_col, ts, seq_raw, ack_raw, order, conn, conn_id, side, flags, plen, seq_val,
             ack_val, snd_nxt_before, peer_acked, own_ack_before, peer_snd_nxt, retx_count, zw_count, pure_ack,
             peer_prev, after_gap, *, rows, ttl, gap, probe, last_plain_of, ip_ids):  # fmt: skip
        n = len(idx)
        ev_rows = np.empty((n, lib.R_WIDTH), dtype=np.int64)
        columns = [np.ascontiguousarray(c, dtype=np.int64)  # the flags (pure_ack, after_gap, probe) are bools
                   for c in (conn, side, flags, plen, frame_col, ts, seq_val, ack_val, seq_raw, ack_raw, retx_count,
                             zw_count, pure_ack, after_gap, probe)]  # fmt: skip
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        lib.event_rows(n, _ptr(idx), len(columns), [_ptr(c) for c in columns], _ptr(_ROW_COLUMNS),
                       ffi.from_buffer("int8_t[]", _EVENT_OF), _ptr(ev_rows))  # fmt: skip
        n_rst = int(np.count_nonzero(ev_rows[:, lib.R_FLAGS] & P.RST))
        findings = np.empty((n, 3), dtype=np.int64)
        after = np.empty(n, dtype=np.int64)
        rsts = np.empty((max(n_rst, 1), lib.X_WIDTH), dtype=np.int64)
        overflow = np.empty((3 * n, 2), dtype=np.int64)
        counts = np.zeros(4, dtype=np.int64)
        c = self.columns
        done = 0
        while done < n:  # the loop stops where a pool ran out of free blocks: grown here, resumed there
            for pool in (c.recent, c.probes):
                pool.reserve(1)
                pool.bind()
            done = lib.event_loop(
                self._struct, done, n, _ptr(ev_rows), _ptr(c.ev), ffi.from_buffer("int8_t[]", c.history),
                ffi.cast("int32_t *", c.blocks.ctypes.data), c.recent.struct,
                ffi.cast("int32_t *", c.probe_block.ctypes.data), c.probes.struct, _ptr(findings), _ptr(after),
                _ptr(rsts), _ptr(overflow), _ptr(counts),
            )  # fmt: skip
        cid = conn_id[idx]
        n_find, n_after, n_rst_out, n_over = counts.tolist()
        if n_find:
            f = findings[:n_find]
            out = np.empty(n_find, FINDING_ROW)
            out["conn"], out["frame"], out["side"] = (
                cid[f[:, 0]],
                ev_rows[f[:, 0], lib.R_FRAME],
                ev_rows[f[:, 0], lib.R_SIDE],
            )
            out["event"], out["old"] = f[:, 1], f[:, 2]
            self.findings.add(out)
        if n_after:
            a = idx[after[:n_after]]
            out = np.empty(n_after, AFTER_ROW)
            out["conn"] = cid[after[:n_after]]
            for name, values in (("frame", frame_col), ("ts_ns", ts), ("side", side), ("flags", flags),
                                 ("seq", seq_val), ("payload", plen), ("ttl", ttl), ("ip_id", ip_ids)):  # fmt: skip
                out[name] = values[a]
            out["ack"] = np.where(flags[a] & P.ACK, ack_val[a], NONE)
            self.after.add(out)
        for row, code in overflow[:n_over].tolist():
            self.overflow.setdefault(int(cid[row]), []).append(code)
        if n_rst_out:
            self._resets(rsts[:n_rst_out], idx, cid, frame_col, ts, seq_raw, ack_raw, order, conn, side, flags,
                         plen, seq_val, ack_val, snd_nxt_before, peer_acked, own_ack_before, peer_snd_nxt,
                         peer_prev, rows, ttl, gap, last_plain_of, ip_ids)  # fmt: skip

    def _resets(self, x, idx, cid, frame_col, ts, seq_raw, ack_raw, order, conn, side, flags, plen, seq_val,
                ack_val, snd_nxt_before, peer_acked, own_ack_before, peer_snd_nxt, peer_prev, rows, ttl, gap,
                last_plain_of, ip_ids) -> None:  # fmt: skip
        """The RST observations of this chunk, from what the loop wrote at each RST (``x``)."""
        r = idx[x[:, lib.X_ROW]]  # the RST rows' positions in the grouped chunk
        out = np.zeros(len(r), RST_ROW)
        out["conn"] = cid[x[:, lib.X_ROW]]
        s = side[r]
        for name, values in (("frame", frame_col), ("ts_ns", ts), ("side", side), ("flags", flags), ("seq", seq_val),
                             ("seq_raw", seq_raw), ("snd_nxt", snd_nxt_before), ("peer_acked", peer_acked),
                             ("sender_acked", own_ack_before), ("peer_snd_nxt", peer_snd_nxt), ("ttl", ttl),
                             ("ip_id", ip_ids), ("payload", plen)):  # fmt: skip
            out[name] = values[r]
        has_ack = (flags[r] & P.ACK) != 0
        out["ack"] = np.where(has_ack, ack_val[r], NONE)
        wire = rows[order[r]]
        out["tcp_auth"], out["window"], out["has_ts"] = wire["tcp_auth"], wire["window"], wire["has_ts"]
        for name, col in (("sender_state", lib.X_SENDER_STATE), ("peer_state", lib.X_PEER_STATE),
                          ("sender_fin_frame", lib.X_SENDER_FIN), ("peer_fin_frame", lib.X_PEER_FIN),
                          ("sender_prior_rst_frame", lib.X_PRIOR_RST), ("sender_first_payload_frame",
                          lib.X_FIRST_PAYLOAD), ("synacks_before", lib.X_SYNACKS_BEFORE),
                          ("synacks_after_ack_before", lib.X_SAA_BEFORE)):  # fmt: skip
            out[name] = x[:, col]
        orig = np.where(s == 0, x[:, lib.X_SENDER_STATE], x[:, lib.X_PEER_STATE])
        resp = np.where(s == 0, x[:, lib.X_PEER_STATE], x[:, lib.X_SENDER_STATE])
        saw_syn, saw_synack = (x[:, lib.X_SYN_N] > 0).astype(np.intp), (x[:, lib.X_SA_N] > 0).astype(np.intp)
        out["phase"] = _PHASE_CODE[orig, resp, saw_syn, saw_synack]  # (0/1 ints: a bool array would be a mask)

        # The peer segment the RST follows (this chunk, else the carried last segment of the peer).
        carried = self._arrays.carried_into(r)  # as carried into the chunk (the sequence pass updated the table since)

        pp = peer_prev[r]
        have_pp = pp >= 0
        ppi = np.maximum(pp, 0)

        pp_frame = np.where(have_pp, frame_col[ppi], carried("last_frame"))
        pp_flags = np.where(have_pp, flags[ppi], carried("last_flags"))
        pp_len = np.where(have_pp, plen[ppi], carried("last_len"))
        pp_ack = np.where(have_pp, ack_val[ppi], carried("last_ackrel"))
        pp_seq = np.where(have_pp, seq_val[ppi], carried("last_seqrel"))
        out["peer_seen"] = pp_frame >= 0
        out["peer_last_ns"] = np.where(have_pp, ts[ppi], carried("last_ns"))
        out["answered_idle_ns"] = np.where(have_pp, gap[ppi], carried("last_gap"))
        own_plain = np.where(s == 0, last_plain_of[0][r], last_plain_of[1][r])
        plain_ok = own_plain >= 0
        last_plain_frame = np.where(plain_ok, frame_col[np.maximum(own_plain, 0)], carried("last_plain_frame"))
        out["prev_ip_id"] = np.where(plain_ok, ip_ids[np.maximum(own_plain, 0)], carried("last_plain_ip_id"))

        # What a reply-RST answers (RFC 9293 §3.10.7.1): the latest of the peer's recent segments whose
        # numbers it answers (raw numbers); else the peer segment it follows, if it answers that one
        # (relative numbers).  A bare RST is a reply; a RST|ACK when its numbers say so (see evidence.py).
        seg = x[:, lib.X_RECENT :].reshape(len(r), RING, lib.X_SEG)
        in_ring, k = np.zeros(len(r), dtype=bool), np.zeros(len(r), dtype=np.intp)
        some = np.flatnonzero(x[:, lib.X_RECENT_N])  # (a storm's bare RSTs have no peer segments to answer)
        if len(some):
            rs, ss = r[some], seg[some]
            valid = np.arange(RING) < x[some, lib.X_RECENT_N, None]
            match = valid & answers(flags[rs, None], seq_raw[rs, None], ack_raw[rs, None], ss[:, :, 1], ss[:, :, 2],
                                    ss[:, :, 3], ss[:, :, 4])  # fmt: skip
            in_ring[some], k[some] = match.any(axis=1), match.argmax(axis=1)
        hit = seg[np.arange(len(r)), k]
        fallback = (
            ~in_ring & (pp_frame >= 0) & answers(flags[r], seq_val[r], ack_val[r], pp_flags, pp_seq, pp_ack, pp_len)
        )
        answered = in_ring | fallback
        ans_flags = np.where(in_ring, hit[:, 1], pp_flags)
        ans_ack = np.where(in_ring, hit[:, 6], pp_ack)
        out["answered"] = answered
        out["answered_frame"] = np.where(in_ring, hit[:, 0], pp_frame)
        out["answered_flags"] = ans_flags
        out["answered_payload"] = np.where(in_ring, hit[:, 4], pp_len)
        out["answered_ack"] = np.where(answered & ((ans_flags & P.ACK) != 0), ans_ack, NONE)
        out["answered_seq"] = np.where(answered, np.where(in_ring, hit[:, 5], pp_seq), NONE)

        # The sender's keepalive probes since its last other segment, oldest first (rows of senders that sent
        # any: the others' stay zeros).
        probed = np.flatnonzero(x[:, lib.X_PROBES_N])
        probes = x[probed, lib.X_PROBES : lib.X_PROBES + 2 * RING].reshape(len(probed), RING, 2)[:, ::-1]
        n_probes = x[probed, lib.X_PROBES_N]
        kept = (np.arange(RING)[::-1] < n_probes[:, None]) & (probes[:, :, 0] > last_plain_frame[probed, None])
        n_kept = kept.sum(axis=1)
        order_kept = np.argsort(~kept, axis=1, kind="stable")
        kept_first = np.take_along_axis(probes, order_kept[:, :, None], axis=1)
        # Zeros past the count: the ring's other entries are whatever the slot held before (a row's bytes
        # would then depend on slot reuse; readers take the first probes_n only).
        out["probes"][probed] = np.where((np.arange(RING) < n_kept[:, None])[:, :, None], kept_first, 0)
        out["probes_n"][probed] = n_kept
        out["peer_acks"], out["peer_acks_n"] = self.rst_peer_acks.of(out["frame"])
        self.resets.add(out)
        self.saw_reset = retire.fit(self.saw_reset, int(out["conn"].max()) + 1, False)
        self.saw_reset[out["conn"]] = True


_PHASES = list(Phase)
assert len(_PHASES) < 128 and PEER_ACKS_KEPT == 8
_PHASE_CODE = np.array([[[[_PHASES.index(phase_of(o, r, syn, synack)) for synack in (False, True)]
                          for syn in (False, True)] for r in STATES] for o in STATES], dtype=np.int8)  # fmt: skip
"""records.phase_of as a table: [originator's state, responder's state, saw a SYN, saw a SYN-ACK] -> phase code."""


_ROW_COLUMNS = np.array([lib.R_SLOT, lib.R_SIDE, lib.R_FLAGS, lib.R_PLEN, lib.R_FRAME, lib.R_TS, lib.R_SEQ, lib.R_ACK,
                         lib.R_SEQ_RAW, lib.R_ACK_RAW, lib.R_RETX, lib.R_ZW, lib.R_PURE_ACK, lib.R_AFTER_GAP,
                         lib.R_PROBE], dtype=np.int64)  # fmt: skip
"""Where :meth:`EventPass._run`'s columns go in the loop's rows, in the order it passes them."""


def _event_table() -> np.ndarray:
    """:func:`.state.events_of` for every key ``event_rows`` (event_loop.c) looks up: side | RST << 1 |
    FIN << 2 | SYN << 3 | ACK << 4 | (payload > 0) << 5."""
    key = np.arange(64)
    bit = [(key >> b) & 1 for b in range(6)]
    flags = bit[1] * P.RST | bit[2] * P.FIN | bit[3] * P.SYN | bit[4] * P.ACK
    return events_of(bit[0], flags, bit[5]).astype(np.int8)


_EVENT_OF = _event_table()


def _ptr(a: np.ndarray):
    assert a.flags.c_contiguous and a.dtype == np.int64
    return ffi.cast("int64_t *", a.ctypes.data)
