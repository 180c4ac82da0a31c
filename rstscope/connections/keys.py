"""Connection keys and instances: which 4-tuple a row belongs to, and which lifetime of it.

Keys.  A connection is keyed by its 4-tuple, symmetrically: A->B and B->A land on the same key (the
two endpoints are ordered by address, then port: endpoint A is the lower).  One 4-tuple can carry
several connections over time (port reuse): a new connection *instance* starts at a SYN without ACK
whose sequence number differs from the tuple's previous SYN (a retransmitted SYN keeps its ISN) or
that follows a FIN or RST on the tuple -- unless an earlier SYN-ACK acknowledged exactly that SYN --
and at the very first packet of a tuple.  With Zeek's timers (for ``conns``), :class:`ZeekTimers`
also ends connections.

Originator.  See :func:`originator`.
"""

from __future__ import annotations

import functools
import sys
from typing import ClassVar, NamedTuple

import numpy as np

from rstscope import packets as P
from rstscope.connections.sequence import ffi, lib
from rstscope.grouped import NONE, Groups, distinct
from rstscope.seqnum import SEQ_MOD


class ByTuple(NamedTuple):
    """Packet rows grouped by 4-tuple (:func:`by_tuple`): what depends on the rows alone."""

    a_side: np.ndarray
    """Per row, in ``order``: whether its sender is the canonical endpoint A."""
    order: np.ndarray
    """The rows grouped by tuple: groups in order of their first row, capture order inside each."""
    position: np.ndarray
    """Per row, in capture order, where it is in ``order`` (``order[position[i]] == i``)."""
    groups: Groups
    keys: np.ndarray
    """Per group, its 4-tuple's key (six words: A address, B address, ports, tunnel)."""


def by_tuple(rows: np.ndarray) -> ByTuple:
    """These packet rows grouped by canonical 4-tuple (``tuple_groups_of_rows``, keys_loop.c: one pass
    over the rows)."""
    rows = np.ascontiguousarray(rows)
    n = len(rows)
    a_side, start = np.empty(n, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    order, keys = np.empty(n, dtype=np.int64), np.empty((n, 6), dtype=np.uint64)
    count = lib.tuple_groups_of_rows(
        ffi.from_buffer(rows), rows.dtype.itemsize, n, ffi.from_buffer("int64_t[]", _key_fields(rows.dtype)),
        ffi.from_buffer("uint8_t[]", a_side), ffi.from_buffer("int64_t[]", order),
        ffi.from_buffer("uint8_t[]", start), ffi.from_buffer("uint64_t[]", keys),
    )  # fmt: skip
    if count < 0:
        raise MemoryError("grouping a chunk by 4-tuple")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    return ByTuple(a_side.view(bool), order, position, Groups(start.view(bool)), keys[:count].copy())


class TupleTable:
    """The 4-tuples alive, each with a tuple id, its current connection and what instance splitting
    carries from chunk to chunk.  A tuple is forgotten when its last connection retires."""

    def __init__(self) -> None:
        self.ids = TupleIndex()
        """The 4-tuples alive: canonical key (A address, B address, ports, tunnel; 48 bytes) -> tuple id.
        The ids of forgotten 4-tuples are handed out again: memory follows the tuples alive."""
        self.recycled = np.zeros(0, dtype=np.int64)
        """The ids the last :meth:`index` handed out again (their per-tuple values are reset)."""
        self.conn = np.full(1024, -1, dtype=np.int64)  # current connection per tuple
        self.syn = np.full(1024, -1, dtype=np.int64)  # last pure-SYN seq per tuple, -1 none
        self.closed = np.zeros(1024, dtype=np.int64)  # a FIN or RST since the tuple's last SYN
        self.synack_ack = np.full(1024, -1, dtype=np.int64)  # ack of the tuple's last SYN-ACK, -1 none

    def __len__(self) -> int:
        """Tuple ids handed out so far (the size per-tuple arrays must have)."""
        return len(self.conn)

    def index(self, keys: np.ndarray) -> np.ndarray:
        """The tuple ids of these 4-tuples (:attr:`ByTuple.keys`: the groups' keys)."""
        tids, self.recycled = self.ids.assign(keys)
        self.conn[self.recycled] = -1
        self.syn[self.recycled] = -1
        self.closed[self.recycled] = 0
        self.synack_ack[self.recycled] = -1
        handed_out = self.ids.next_tid()
        if handed_out > len(self.conn):
            grow = max(handed_out, 2 * len(self.conn)) - len(self.conn)
            self.conn = np.concatenate([self.conn, np.full(grow, -1, dtype=np.int64)])
            self.syn = np.concatenate([self.syn, np.full(grow, -1, dtype=np.int64)])
            self.closed = np.concatenate([self.closed, np.zeros(grow, dtype=np.int64)])
            self.synack_ack = np.concatenate([self.synack_ack, np.full(grow, -1, dtype=np.int64)])
        return tids

    def instances(self, tgroups: Groups, tids, flags, seq, ack_raw) -> tuple[np.ndarray, np.ndarray]:
        """Rows (grouped by tuple) that start a new connection instance, and per tuple group the
        connection carried from earlier chunks (-1: none).  Updates what is carried per tuple.

        A SYN without ACK starts a new connection when its ISN is new, or when a FIN or RST was seen
        since the tuple's previous SYN -- unless an earlier SYN-ACK already acknowledged exactly this
        SYN (the capture saw the SYN-ACK first).  Zeek draws the same lines.
        Only SYN, SYN-ACK, FIN and RST rows matter here: work on those few positions."""
        n = len(flags)
        control = flags & (P.SYN | P.ACK | P.RST)
        syn_pos = np.flatnonzero(control == P.SYN)
        synack_pos = np.flatnonzero(control == (P.SYN | P.ACK))
        close_pos = np.flatnonzero(flags & (P.FIN | P.RST))
        gi, group_first, group_last = tgroups.gi, tgroups.first_pos, tgroups.last_pos
        cur = self.conn[tids]  # per tuple group: the connection carried from earlier chunks
        new_inst = np.zeros(n, dtype=bool)
        new_inst[group_first[cur < 0]] = True  # a tuple's very first packet
        if len(syn_pos):
            g = gi[syn_pos]
            same = np.zeros(len(syn_pos), dtype=bool)
            same[1:] = g[1:] == g[:-1]  # the previous SYN of the same tuple is in this chunk
            prev = np.concatenate([[0], syn_pos[:-1]])
            prev_syn_seq = np.where(same, seq[prev], self.syn[tids[g]])
            since = np.where(same, prev, group_first[g])
            closes_between = np.searchsorted(close_pos, syn_pos) - np.searchsorted(close_pos, since)
            closed_since_syn = (closes_between > 0) | (~same & (self.closed[tids[g]] > 0))
            synack_ack = self.synack_ack[tids[g]]
            if len(synack_pos):  # a SYN-ACK of the same tuple earlier in this chunk overrides the carried one
                k = np.maximum(np.searchsorted(synack_pos, syn_pos) - 1, 0)
                in_chunk = (synack_pos[k] < syn_pos) & (gi[synack_pos[k]] == g)
                synack_ack = np.where(in_chunk, ack_raw[synack_pos[k]], synack_ack)
            acked_by_synack = (synack_ack >= 0) & ((synack_ack - 1) % SEQ_MOD == seq[syn_pos])
            new_inst[syn_pos] |= ~acked_by_synack & ((prev_syn_seq != seq[syn_pos]) | closed_since_syn)
            # Carry, per tuple: its last SYN's seq, and whether a FIN or RST came after it.
            last = np.ones(len(syn_pos), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            last_syn, last_g = syn_pos[last], g[last]
            self.syn[tids[last_g]] = seq[last_syn]
            closes_after = np.searchsorted(close_pos, group_last[last_g], side="right") - np.searchsorted(
                close_pos, last_syn
            )
            self.closed[tids[last_g]] = closes_after > 0
            no_syn = np.ones(tgroups.count, dtype=bool)
            no_syn[last_g] = False
        else:
            no_syn = np.ones(tgroups.count, dtype=bool)
        closes_in_group = np.searchsorted(close_pos, group_last, side="right") - np.searchsorted(close_pos, group_first)
        self.closed[tids[no_syn]] |= closes_in_group[no_syn] > 0
        if len(synack_pos):
            g = gi[synack_pos]
            last = np.ones(len(synack_pos), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            self.synack_ack[tids[g[last]]] = ack_raw[synack_pos[last]]
        return new_inst, cur

    def connection_ids(self, new_inst, order, tgroups: Groups, tids, cur, first_id: int):
        """Positions of the rows that start connections (in capture order) and every row's connection
        id: new ones numbered from ``first_id`` in order of their first packet."""
        n, gi, group_first, group_last = len(order), tgroups.gi, tgroups.first_pos, tgroups.last_pos
        # Connection ids: new ones in order of their first packet; each segment repeats its id.
        new_pos = np.flatnonzero(new_inst)
        new_pos = new_pos[np.argsort(order[new_pos], kind="stable")]
        seg_start = distinct(np.concatenate((group_first, new_pos)))
        seg_conn = cur[gi[seg_start]]
        seg_conn[np.searchsorted(seg_start, new_pos)] = first_id + np.arange(len(new_pos))
        conn_id = np.repeat(seg_conn, np.diff(np.append(seg_start, n)))
        self.conn[tids] = conn_id[group_last]
        return new_pos, conn_id

    def forget_many(self, tids: np.ndarray, cids: np.ndarray) -> None:
        """Connections ``cids`` retired: forget each one's 4-tuple (of ``tids``) unless a newer connection
        lives on it, in one compiled pass."""
        self.ids.forget(tids, cids, self.conn)


class TupleIndex:
    """The 4-tuples alive: canonical key -> tuple id, a hash table in C (``keys_loop.c``) with no Python
    object per tuple.  A key not held gets the id of the 4-tuple forgotten last, else a new one."""

    def __init__(self) -> None:
        index = lib.tuple_index_new()
        if index == ffi.NULL:
            raise MemoryError("the 4-tuple index")
        self.handle = ffi.gc(index, lib.tuple_index_free)

    def __len__(self) -> int:
        """4-tuples alive."""
        return lib.tuple_index_count(self.handle)

    def next_tid(self) -> int:
        return lib.tuple_index_next(self.handle)

    def assign(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tuple ids of ``keys`` (rows of six uint64 words), and the ids handed out again among them."""
        keys = np.ascontiguousarray(keys, dtype=np.uint64)
        n = len(keys)
        tids, recycled = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        out = (ffi.from_buffer("int64_t[]", a) for a in (tids, recycled))
        k = lib.tuple_index_assign(self.handle, n, ffi.from_buffer("uint64_t[]", keys), *out)
        if k < 0:
            raise MemoryError("the 4-tuple index")
        return tids, recycled[:k].copy()

    def forget(self, tids: np.ndarray, cids: np.ndarray, conn: np.ndarray) -> None:
        """Each tuple of ``tids`` whose current connection (``conn``, set to -1 then) is the one of ``cids``."""
        tids = np.ascontiguousarray(tids, dtype=np.int64)
        cids = np.ascontiguousarray(cids, dtype=np.int64)
        assert conn.dtype == np.int64 and conn.flags.c_contiguous and len(tids) == len(cids)
        if not len(tids):
            return
        if tids.min() < 0 or tids.max() >= len(conn):
            raise IndexError("tuple id out of range")
        buffers = (ffi.from_buffer("int64_t[]", a) for a in (tids, cids, conn))
        _check(lib.tuple_index_forget(self.handle, len(tids), *buffers))


def _check(status: int) -> None:
    """Raise for the index's errors (-1: memory ran out; -2: a tuple forgotten that was not held)."""
    if status == -2:
        raise KeyError("a 4-tuple not held")
    if status < 0:
        raise MemoryError("the 4-tuple index")


class ZeekTimers:
    """Per tuple, what Zeek's connection timers need from earlier chunks."""

    DEFAULTS: ClassVar[dict[str, int]] = {
        "last_ts": NONE, "syn_ts": NONE, "syn_a": 0, "closed_ts": NONE, "fin_a": 0, "fin_b": 0, "rst": 0,
    }  # fmt: skip

    def __init__(self) -> None:
        self.state: dict[str, np.ndarray] = {}

    def reset(self, tids: np.ndarray) -> None:
        """These tuple ids name new 4-tuples: forget the timers of the tuples that had them."""
        for name, values in self.state.items():
            values[tids[tids < len(values)]] = self.DEFAULTS[name]

    ATTEMPT_NS = 5_000_000_000  # Zeek's tcp_attempt_delay
    CLOSE_NS = 5_000_000_000  # Zeek's tcp_close_delay and tcp_reset_delay
    INACTIVITY_NS = 300_000_000_000  # Zeek's tcp_inactivity_timeout

    def splits(self, new_inst, tgroups, tids, tid, ts, flags, a_side, size: int) -> np.ndarray:
        """Zeek's timers as connection boundaries, for ``conns`` to line up with conn.log.

        Zeek removes a connection 5 s after its first SYN if the responder has sent nothing, 5 s after
        the close completed (both FINs, or a RST), and after 5 min without a packet; a later packet of
        the same 4-tuple then starts a new connection.  ``analyze`` does not use this: there a
        connection is one 4-tuple lifetime, as Wireshark's tcp.stream is, so that a SYN retransmitted
        at 7 s stays with its first SYN.  Splits depend on each other, so they are found in rounds.
        """
        st = self.state
        for name, default in self.DEFAULTS.items():
            if name not in st or len(st[name]) < size:
                old = st.get(name, np.empty(0, dtype=np.int64))
                st[name] = np.concatenate([old, np.full(size - len(old), default, dtype=np.int64)])
        n = len(ts)
        is_syn = (flags & (P.SYN | P.ACK | P.RST)) == P.SYN
        fin, rst = (flags & P.FIN) != 0, (flags & P.RST) != 0
        prev_ts = np.where(tgroups.start, st["last_ts"][tid], np.concatenate([[NONE], ts[:-1]]))
        idle = (prev_ts != NONE) & (ts - prev_ts > self.INACTIVITY_NS)
        for _round in range(n + 1):
            starts = new_inst | idle | tgroups.start
            sg = Groups(starts)
            first = sg.first_pos[sg.gi]
            carried = ~(new_inst | idle)[first]  # the segment continues the tuple's carried connection
            syn_ts = np.where(carried, st["syn_ts"][tid], np.where(is_syn[first], ts[first], NONE))
            syn_a = np.where(carried, st["syn_a"][tid], a_side[first])
            responder = a_side != syn_a.astype(bool)
            answered_before = sg.exclusive(sg.cumsum(responder) > 0, False)
            attempt = (syn_ts != NONE) & ~answered_before & (ts - syn_ts > self.ATTEMPT_NS)
            fin_a = (sg.cumsum(fin & a_side) > 0) | (carried & (st["fin_a"][tid] > 0))
            fin_b = (sg.cumsum(fin & ~a_side) > 0) | (carried & (st["fin_b"][tid] > 0))
            was_reset = (sg.cumsum(rst) > 0) | (carried & (st["rst"][tid] > 0))
            closed = (fin_a & fin_b) | was_reset
            closed_pos = sg.last_valid_pos(closed & ~sg.exclusive(closed, False))  # the row that closed it
            carried_closed = np.where(carried, st["closed_ts"][tid], NONE)
            closed_ts = np.where(
                carried_closed != NONE, carried_closed, np.where(closed_pos >= 0, ts[closed_pos], NONE)
            )
            closed_before = sg.exclusive(closed, False)
            closed_before[sg.first_pos] = carried[sg.first_pos] & (carried_closed[sg.first_pos] != NONE)
            expired = closed_before & (closed_ts != NONE) & (ts - closed_ts > self.CLOSE_NS)
            split = (attempt | expired) & ~(new_inst | idle)
            if not split.any():
                break
            # Only the first split of each segment counts: everything after it is a new connection.
            first_split = split & (sg.cumsum(split) == 1)
            new_inst = new_inst | first_split
        last = tgroups.last_pos
        st["last_ts"][tids] = ts[last]
        st["syn_ts"][tids] = np.where(answered_before[last] | responder[last], NONE, syn_ts[last])
        st["syn_a"][tids] = syn_a[last]
        st["closed_ts"][tids] = closed_ts[last]
        st["fin_a"][tids] = fin_a[last]
        st["fin_b"][tids] = fin_b[last]
        st["rst"][tids] = was_reset[last]
        return new_inst | idle


@functools.cache
def _key_fields(dtype: np.dtype) -> np.ndarray:
    """Where ``tuple_groups_of_rows`` reads the key's fields in a row of ``dtype`` (a packet row's: src_hi,
    src_lo, dst_hi, dst_lo, src_port, dst_port, tunnel_id; words of 8 bytes, the ports 2 bytes)."""
    names = ("src_hi", "src_lo", "dst_hi", "dst_lo", "src_port", "dst_port", "tunnel_id")
    widths = (8, 8, 8, 8, 2, 2, 8)
    for name, width in zip(names, widths, strict=True):
        field = dtype.fields[name][0]
        assert field.kind == "u" and field.itemsize == width and field.byteorder in "<|=" and sys.byteorder == "little"
    return np.array([dtype.fields[name][1] for name in names], dtype=np.int64)


def grouped_columns(rows: np.ndarray, order: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
    """Fields ``names`` of ``rows[order]`` as int64 arrays, in one compiled pass over the rows."""
    rows = np.ascontiguousarray(rows)
    fields = [rows.dtype.fields[name] for name in names]
    assert sys.byteorder == "little" and all(f[0].byteorder in "<|=" and f[0].itemsize in (1, 2, 4, 8) for f in fields)
    n = len(order)
    out = np.empty((len(names), n), dtype=np.int64)
    offsets = np.array([f[1] for f in fields], dtype=np.int64)
    widths = np.array([f[0].itemsize for f in fields], dtype=np.int64)
    order = np.ascontiguousarray(order, dtype=np.int64)
    lib.grouped_columns(ffi.from_buffer(rows), rows.dtype.itemsize, n, ffi.from_buffer("int64_t[]", order),
                        len(names), ffi.from_buffer("int64_t[]", offsets), ffi.from_buffer("int64_t[]", widths),
                        ffi.from_buffer("int64_t[]", out))  # fmt: skip
    return list(out)


def originators(flags: np.ndarray, src_port: np.ndarray, dst_port: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per new connection, from its first packet: (that packet's sender is the originator, that was inferred).

    The originator is the sender of the instance's first SYN.  When the capture starts with the
    SYN-ACK, its receiver.  When no handshake was captured, a heuristic (``originator_inferred``): the
    sender of the first packet, unless its source port is below 1024 and the destination port is not
    (or both are and the source port is the lower), in which case the first packet is taken to come
    from the server (Zeek's rule).  When the originator is not the first packet's sender, the history
    starts with ``^``."""
    syn, ack = (flags & P.SYN) != 0, (flags & P.ACK) != 0
    src_port, dst_port = src_port.astype(np.int64), dst_port.astype(np.int64)
    # Zeek's WantConnection heuristic, with the well-known ports (below 1024) as likely server ports.
    # (For a SYN-ACK, Zeek keeps its sender as originator unless its port is one of
    # ``likely_server_ports``, which depends on the scripts loaded: see docs/zeek-agreement.md.)
    src_server, dst_server = src_port < 1024, dst_port < 1024
    heuristic = ~(src_server & (~dst_server | (src_port < dst_port)))
    return np.where(syn, ~ack, heuristic), ~syn
