"""Sequence space and in flight: the vectorised pass over a chunk.

Rows are grouped by connection (capture order inside each group); running values per direction are
computed for every row with numpy -- unwrapped sequence and ack positions (see :mod:`rstscope.seqnum`
for the wraparound rule), the sender's ``snd_nxt`` before the row, the highest ack the peer had sent,
retransmissions, zero windows, keepalive probes, the peer segment the row follows -- and carried over
to the next chunk per connection in :class:`ConnArrays`.  Bulk data never leaves numpy.

The pass also picks the *event rows*, the few that go through the per-row event pass
(:mod:`rstscope.connections.events`): SYN/FIN/RST, the first data and first pure ACK of each direction,
the rows where the retransmission or zero-window count reaches 1, 10, 100..., every row of a
connection's first ``EARLY_PACKETS`` and every row after its first FIN or RST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from rstscope import packets as P
from rstscope.grouped import NONE, Groups
from rstscope.seqnum import SEQ_MOD, seq_diff_array

EARLY_PACKETS = 4
PEER_ACKS_KEPT = 8
"""Per connection side, the last ACK segments (frame, ack) kept across chunks: at a RST, the peer's last
ACKs tell which of them the sender had seen when it reset (see evidence.py, "In flight")."""


class ConnArrays:
    """Per-connection carried state for the vectorised pass, one *slot* per live connection.

    A connection's slot is freed when it retires (see :mod:`rstscope.connections.retire`), so these arrays grow
    with the connections alive at once, not with all the connections of the capture."""

    INT_COLUMNS = (
        "orig_is_a",  # 1 if canonical endpoint A is the originator
        "anchor_raw0", "anchor_val0", "anchor_raw1", "anchor_val1",  # seq-space anchor per side (-1 raw: none)
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

    def __init__(self) -> None:
        self.size = 0
        self.capacity = 1024
        self.cols = {name: self._new(name, self.capacity) for name in self.INT_COLUMNS}
        self.free: list[int] = []
        """Slots of retired connections, reused by new ones."""

    def allocate(self, k: int) -> np.ndarray:
        """``k`` slots for new connections, every column at its default."""
        reused = self.free[len(self.free) - k :] if k else []
        del self.free[len(self.free) - len(reused) :]
        fresh = k - len(reused)
        self.grow(fresh)
        slots = np.array(reused + list(range(self.size - fresh, self.size)), dtype=np.int64)
        if reused:
            for name, col in self.cols.items():
                col[slots[: len(reused)]] = self.DEFAULTS.get(name, 0)
        return slots

    def _new(self, name: str, n: int) -> np.ndarray:
        return np.full(n, self.DEFAULTS.get(name, 0), dtype=np.int64)

    def grow(self, n_new: int) -> None:
        need = self.size + n_new
        if need > self.capacity:
            cap = max(need, self.capacity * 3 // 2)  # slots are ~3 KB: grow by half, not double
            for name, old in self.cols.items():
                new = self._new(name, cap)
                new[: self.size] = old[: self.size]
                self.cols[name] = new
            self.capacity = cap
        self.size = need

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]


@dataclass(slots=True)
class ChunkValues:
    """Per row of a chunk (grouped by connection), the running values the event pass and the carry need."""

    cg: Groups
    """The connection groups."""
    conns: np.ndarray
    """Per group, the connection's slot."""
    mask: list
    """Per side, its rows."""
    has_ack: np.ndarray
    is_rst: np.ndarray
    last_of: list
    last_ack_of: list
    seq_val: np.ndarray
    ack_val: np.ndarray
    max_end: list
    max_ack: list
    snd_nxt_before: np.ndarray
    own_ack_before: np.ndarray
    peer_acked: np.ndarray
    peer_snd_nxt: np.ndarray
    retx: np.ndarray
    zero_win: np.ndarray
    pure_ack: np.ndarray
    old_data: np.ndarray
    old_count: np.ndarray
    zw_count: np.ndarray
    probe: np.ndarray
    closing: np.ndarray
    events: np.ndarray
    after_gap: np.ndarray
    peer_prev: np.ndarray
    gap: np.ndarray
    last_plain_of: list
    """Per side, position of its latest segment at/before each row that is neither a probe nor a RST."""


def running_values(arr: ConnArrays, conn, side, flags, seq, ack_raw, plen, ts, window) -> ChunkValues:
    """The running values of a chunk's rows (``conn``: each row's slot, rows grouped by slot)."""
    n = len(conn)
    cstart = np.ones(n, dtype=bool)
    cstart[1:] = conn[1:] != conn[:-1]
    cg = Groups(cstart)
    conns = cg.first(conn)
    has_ack = (flags & P.ACK) != 0
    is_syn = (flags & P.SYN) != 0
    is_fin = (flags & P.FIN) != 0
    is_rst = (flags & P.RST) != 0
    mask = [side == 0, side == 1]
    # Per side: position of the side's latest row at/before each row, and strictly before it.
    last_of = [cg.last_valid_pos(m) for m in mask]
    prev_of = [cg.exclusive(x, -1) for x in last_of]
    last_ack_of = [cg.last_valid_pos(m & has_ack) for m in mask]

    # Sequence-space anchors: carried, else this chunk's first seq of that side,
    # else the first ack the peer sent for it.
    for s in (0, 1):
        anchor_raw = arr[f"anchor_raw{s}"]
        need = anchor_raw[conns] < 0
        if need.any():
            own_first = _first_pos(cg, mask[s])
            peer_ack_first = _first_pos(cg, mask[1 - s] & has_ack)
            use_own = need & (own_first >= 0)
            use_ack = need & ~use_own & (peer_ack_first >= 0)
            c_own, c_ack = conns[use_own], conns[use_ack]
            anchor_raw[c_own] = seq[own_first[use_own]]
            arr[f"anchor_val{s}"][c_own] = 0
            anchor_raw[c_ack] = ack_raw[peer_ack_first[use_ack]]
            arr[f"anchor_val{s}"][c_ack] = 0

    # Unwrapped numbers per side: each row steps from the side's previous row (or the carried anchor).
    # Acks sent by side s live in the peer's sequence space, so they start from the peer's anchor.
    seq_val = np.zeros(n, dtype=np.int64)
    ack_val = np.full(n, NONE, dtype=np.int64)
    for s in (0, 1):
        p = 1 - s
        seq_val = np.where(mask[s], _unwrap(seq, mask[s], prev_of[s], cg, arr, conn, f"last_seq_{{}}{s}", s), seq_val)
        am = mask[s] & has_ack
        prev_a = cg.exclusive(last_ack_of[s], -1)
        ack_val = np.where(am, _unwrap(ack_raw, am, prev_a, cg, arr, conn, f"last_ack_{{}}{s}", p), ack_val)

    seq_end = seq_val + plen + is_syn + is_fin
    max_end = []
    max_ack = []
    for s in (0, 1):
        # A RST's sequence number is not data sent: keep it out of snd_nxt.
        max_end.append(np.maximum(cg.cummax(seq_end, mask[s] & ~is_rst), arr[f"max_end{s}"][conn]))
        max_ack.append(np.maximum(cg.cummax(ack_val, mask[s] & has_ack), arr[f"max_ack{s}"][conn]))
    own = side
    own_end_incl = np.where(own == 0, max_end[0], max_end[1])
    own_ack_incl = np.where(own == 0, max_ack[0], max_ack[1])
    snd_nxt_before = _exclusive_carry(own_end_incl, mask, prev_of, arr, "max_end", conn)
    own_ack_before = _exclusive_carry(own_ack_incl, mask, prev_of, arr, "max_ack", conn)
    peer_acked = np.where(own == 0, max_ack[1], max_ack[0])
    peer_snd_nxt = np.where(own == 0, max_end[1], max_end[0])

    retx = (plen > 0) & ~is_syn & (snd_nxt_before != NONE) & (seq_val < snd_nxt_before)
    zero_win = (window == 0) & ~is_syn & ~is_rst
    pure_ack = has_ack & (plen == 0) & ~(is_syn | is_fin | is_rst)
    # Zeek's retransmission (history T): a segment whose payload was all sent before.
    old_data = (plen > 0) & ~is_syn & (snd_nxt_before != NONE) & (seq_val + plen <= snd_nxt_before)
    old_count = np.zeros(n, dtype=np.int64)  # the side's running count at such rows, 0 elsewhere
    zw_count = np.zeros(n, dtype=np.int64)
    letters = np.zeros(n, dtype=bool)
    for s in (0, 1):
        m = mask[s]
        for name, col, running in (("old", old_data, old_count), ("zw", zero_win, zw_count)):
            count = cg.cumsum(m & col) + arr[f"{name}{s}"][conn]
            running[m & col] = count[m & col]
            letters |= m & col & _is_power_of_ten(count)
        for name, col in (("seen_data", plen > 0), ("seen_pure_ack", pure_ack)):
            firsts = m & col & (cg.cumsum(m & col) == 1) & (arr[f"{name}{s}"][conn] == 0)
            letters |= firsts
    # Keepalive probes (as Wireshark tells them): at most one byte, one below the sender's snd_nxt.
    probe = (
        (plen <= 1) & has_ack & ~(is_syn | is_fin | is_rst) & (snd_nxt_before != NONE) & (seq_val == snd_nxt_before - 1)
    )
    closing = (cg.cumsum(is_fin | is_rst) > 0) | (arr["closing"][conn] > 0)
    closing_before = cg.exclusive(closing, False) | (arr["closing"][conn] > 0)
    index_in_conn = cg.cumsum(np.ones(n, dtype=np.int64)) + arr["pkts0"][conn] + arr["pkts1"][conn]
    control_row = (flags & (P.SYN | P.FIN | P.RST)) != 0
    events = control_row | letters | closing_before | probe | (index_in_conn <= EARLY_PACKETS)
    # Rows skipped since the connection's previous event row: its recent segments are then stale.
    last_event = cg.last_valid_pos(events)
    prev_event = cg.exclusive(last_event, -1)
    row = np.arange(n)
    after_gap = np.where(prev_event >= 0, row - prev_event > 1, (row > cg.elem_first) | (arr["skipped"][conn] > 0))
    final_event = cg.last(last_event)
    arr["skipped"][conns] = (final_event < 0) | (final_event < cg.last_pos)

    # Per side, its latest segment that is neither a keepalive probe nor a RST (probes after it are a run).
    last_plain_of = [cg.last_valid_pos(m & ~probe & ~is_rst) for m in mask]
    # The peer segment each row follows (what a reply-RST answers).
    peer_prev = np.where(side == 0, last_of[1], last_of[0])  # a row is never its own peer: inclusive is fine
    # Silence on the connection before each row (across chunks through the carried last time).
    prev_row = np.arange(n) - 1
    carried_ns = arr["last_ns"][conn]
    seen_before = (arr["pkts0"][conn] + arr["pkts1"][conn]) > 0
    gap = np.where(cg.start, np.where(seen_before, ts - carried_ns, 0), ts - ts[np.maximum(prev_row, 0)]).astype(
        np.int64
    )

    return ChunkValues(
        cg=cg, conns=conns, mask=mask, has_ack=has_ack, is_rst=is_rst, last_of=last_of, last_ack_of=last_ack_of,
        seq_val=seq_val, ack_val=ack_val, max_end=max_end, max_ack=max_ack, snd_nxt_before=snd_nxt_before,
        own_ack_before=own_ack_before, peer_acked=peer_acked, peer_snd_nxt=peer_snd_nxt, retx=retx,
        zero_win=zero_win, pure_ack=pure_ack, old_data=old_data, old_count=old_count, zw_count=zw_count,
        probe=probe, closing=closing, events=events, after_gap=after_gap, peer_prev=peer_prev, gap=gap,
        last_plain_of=last_plain_of,
    )  # fmt: skip


def carry(arr: ConnArrays, v: ChunkValues, seq, ack_raw, flags, plen, ts, frame, ttl, ip_ids, has_ts) -> None:
    """Carry each connection's running values to the next chunk."""
    cg, conns, mask, closing, last_of, last_ack_of = v.cg, v.conns, v.mask, v.closing, v.last_of, v.last_ack_of
    seq_val, ack_val, gap, max_end, max_ack = v.seq_val, v.ack_val, v.gap, v.max_end, v.max_ack
    retx, zero_win, old_data, pure_ack, is_rst = v.retx, v.zero_win, v.old_data, v.pure_ack, v.is_rst
    arr["first_ns"][conns] = np.where(
        arr["pkts0"][conns] + arr["pkts1"][conns] == 0, cg.first(ts), arr["first_ns"][conns]
    )
    arr["last_ns"][conns] = cg.last(ts)
    arr["last_frame"][conns] = cg.last(frame)
    arr["closing"][conns] = cg.last(closing)
    for s in (0, 1):
        m = mask[s]
        last = cg.last(last_of[s])
        got = last >= 0
        c, lp = conns[got], last[got]
        arr[f"last_seq_raw{s}"][c] = seq[lp]
        arr[f"last_seq_val{s}"][c] = seq_val[lp]
        arr[f"last_frame{s}"][c] = frame[lp]
        arr[f"last_flags{s}"][c] = flags[lp]
        arr[f"last_len{s}"][c] = plen[lp]
        arr[f"last_ackrel{s}"][c] = ack_val[lp]
        arr[f"last_seqrel{s}"][c] = seq_val[lp]
        arr[f"last_ns{s}"][c] = ts[lp]
        arr[f"last_gap{s}"][c] = gap[lp]
        plain = cg.last(v.last_plain_of[s])
        arr[f"last_plain_frame{s}"][conns[plain >= 0]] = frame[plain[plain >= 0]]
        arr[f"last_plain_ip_id{s}"][conns[plain >= 0]] = ip_ids[plain[plain >= 0]]
        first = _first_pos(cg, m)
        fresh = (first >= 0) & (arr[f"first_seq_val{s}"][conns] == NONE)
        arr[f"first_seq_val{s}"][conns[fresh]] = seq_val[first[fresh]]
        last_a = cg.last(last_ack_of[s])
        got_a = last_a >= 0
        arr[f"last_ack_raw{s}"][conns[got_a]] = ack_raw[last_a[got_a]]
        arr[f"last_ack_val{s}"][conns[got_a]] = ack_val[last_a[got_a]]
        arr[f"max_end{s}"][conns] = cg.last(max_end[s])
        arr[f"max_ack{s}"][conns] = cg.last(max_ack[s])
        arr[f"pkts{s}"][conns] += np.add.reduceat(m.astype(np.int64), cg.first_pos)
        arr[f"bytes{s}"][conns] += np.add.reduceat(np.where(m, plen, 0), cg.first_pos)
        arr[f"retx{s}"][conns] += np.add.reduceat((m & retx).astype(np.int64), cg.first_pos)
        arr[f"zw{s}"][conns] += np.add.reduceat((m & zero_win).astype(np.int64), cg.first_pos)
        arr[f"old{s}"][conns] += np.add.reduceat((m & old_data).astype(np.int64), cg.first_pos)
        arr[f"seen_data{s}"][conns] |= np.add.reduceat((m & (plen > 0)).astype(np.int64), cg.first_pos) > 0
        arr[f"seen_pure_ack{s}"][conns] |= np.add.reduceat((m & pure_ack).astype(np.int64), cg.first_pos) > 0
        counted = m & ~is_rst  # a RST's TTL is what is being judged: keep it out of the sender's baseline
        arr[f"ttl_n{s}"][conns] += np.add.reduceat(counted.astype(np.int64), cg.first_pos)
        arr[f"ts_n{s}"][conns] += np.add.reduceat((counted & has_ts).astype(np.int64), cg.first_pos)
        arr[f"ttl_min{s}"][conns] = np.minimum(
            arr[f"ttl_min{s}"][conns], np.minimum.reduceat(np.where(counted, ttl, 256), cg.first_pos)
        )
        arr[f"ttl_max{s}"][conns] = np.maximum(
            arr[f"ttl_max{s}"][conns], np.maximum.reduceat(np.where(counted, ttl, -1), cg.first_pos)
        )


class AckRing:
    """Per connection side (by slot), its last PEER_ACKS_KEPT ACK segments: frame and ack, oldest first
    (-1: none)."""

    def __init__(self) -> None:
        self.frame = np.full((1024, 2, PEER_ACKS_KEPT), -1, dtype=np.int64)
        self.ack = np.full((1024, 2, PEER_ACKS_KEPT), NONE, dtype=np.int64)

    def fit(self, capacity: int, new_slots: np.ndarray) -> None:
        """Room for ``capacity`` slots; the ``new_slots`` start empty."""
        if len(self.frame) < capacity:
            grow = capacity - len(self.frame)
            self.frame = np.concatenate([self.frame, np.full((grow, 2, PEER_ACKS_KEPT), -1)])
            self.ack = np.concatenate([self.ack, np.full((grow, 2, PEER_ACKS_KEPT), NONE)])
        self.frame[new_slots] = -1
        self.ack[new_slots] = NONE

    def at_resets(self, rst_rows, conn, side, frame, ack_val, last_ack_of, cg) -> dict[int, tuple]:
        """For each RST row: the peer's last PEER_ACKS_KEPT ACK segments before it (this chunk, then carried)."""
        out: dict[int, tuple] = {}
        if not len(rst_rows):
            return out
        prev_ack_of = [cg.exclusive(x, -1) for x in last_ack_of]
        for r in rst_rows.tolist():
            c, peer = int(conn[r]), 1 - int(side[r])
            found = []
            p = int(last_ack_of[peer][r])
            while p >= 0 and len(found) < PEER_ACKS_KEPT:
                found.append((int(frame[p]), int(ack_val[p])))
                p = int(prev_ack_of[peer][p])
            carried = zip(self.frame[c, peer].tolist(), self.ack[c, peer].tolist(), strict=True)
            older = [(f, a) for f, a in carried if f >= 0]
            acks = (older + found[::-1])[-PEER_ACKS_KEPT:]
            out[int(frame[r])] = tuple(acks)
        return out

    def update(self, conns, frame, ack_val, mask, has_ack, cg) -> None:
        """Append each connection side's ACK segments of this chunk to its ring (keeping the last ones)."""
        k = PEER_ACKS_KEPT
        for s in (0, 1):
            am = mask[s] & has_ack
            running = cg.cumsum(am)
            total = cg.last(running)  # ACK rows of this side per connection
            rank_from_end = total[cg.gi] - running  # 0 for the last ACK row of its connection
            keep = am & (rank_from_end < k)
            fresh = np.minimum(total, k)
            ring_f, ring_a = self.frame[conns, s], self.ack[conns, s]
            new_f = np.full_like(ring_f, -1)
            new_a = np.full_like(ring_a, NONE)
            for slot in range(k):  # slot k-1 is the newest
                from_old = slot < k - fresh
                src = np.minimum(slot + fresh, k - 1)
                new_f[:, slot] = np.where(from_old, ring_f[np.arange(len(conns)), src], -1)
                new_a[:, slot] = np.where(from_old, ring_a[np.arange(len(conns)), src], NONE)
            rows = np.flatnonzero(keep)
            g = cg.gi[rows]
            slot = k - 1 - rank_from_end[rows]
            new_f[g, slot] = frame[rows]
            new_a[g, slot] = ack_val[rows]
            self.frame[conns, s] = new_f
            self.ack[conns, s] = new_a


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


def _unwrap(raw, mask, prev, groups: Groups, arr, conn, carried: str, space: int) -> np.ndarray:
    """Unwrapped positions of the ``mask`` rows' ``raw`` numbers (other rows: meaningless).

    A row steps from ``prev`` (the previous row of the same series, -1 for none); the first row of a
    series in this chunk steps from the series' carried last value (``carried`` with raw/val), else
    from the anchor of sequence space ``space``.  See :mod:`rstscope.seqnum` for the wraparound rule.
    """
    carried_raw, carried_val = arr[carried.format("raw")][conn], arr[carried.format("val")][conn]
    base_raw = np.where(carried_raw >= 0, carried_raw, arr[f"anchor_raw{space}"][conn])
    base_val = np.where(carried_raw >= 0, carried_val, arr[f"anchor_val{space}"][conn])
    has_prev = prev >= 0
    step = np.where(
        has_prev,
        seq_diff_array(raw[np.maximum(prev, 0)], raw),
        base_val + seq_diff_array(base_raw, raw),
    )
    return groups.cumsum(np.where(mask, step, 0))


def _first_pos(groups: Groups, valid: np.ndarray) -> np.ndarray:
    """Per group: position of its first ``valid`` element, or -1."""
    n = groups.n
    pos = np.where(valid, np.arange(n), n)
    first = np.minimum.reduceat(pos, groups.first_pos) if n else pos
    return np.where(first < n, first, -1)


def _exclusive_carry(own_incl: np.ndarray, mask, prev_of, arr, prefix: str, conn) -> np.ndarray:
    """Per row: the running max of the row's own side *before* the row (carried across chunks)."""
    out = np.empty_like(own_incl)
    for s in (0, 1):
        m = mask[s]
        prev = prev_of[s]
        carried = arr[f"{prefix}{s}"][conn]
        vals = np.where(prev >= 0, own_incl[np.maximum(prev, 0)], carried)
        out = np.where(m, vals, out)
    return out


def _is_power_of_ten(count: np.ndarray) -> np.ndarray:
    """True where a running count is 1, 10, 100, ...: Zeek logs T and W letters on that scale."""
    out = count == 1
    k = 10
    while k <= (count.max() if len(count) else 0):
        out |= count == k
        k *= 10
    return out
