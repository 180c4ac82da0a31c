"""The tracker: drives the stages over each chunk of packet rows.

Per chunk (at most ``FEED_ROWS`` rows): the 4-tuple index and the connection instances
(:mod:`.keys`), new connections and their slots, the vectorised running values (:mod:`.sequence`),
the event pass (:mod:`.events`), the carry to the next chunk, and retirement of the connections that
closed and went idle (:mod:`.retire`).  ``finish()`` copies the vectorised aggregates into the live
connections and returns every connection in id order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc

import numpy as np

from rstscope.connections.events import EventPass
from rstscope.connections.keys import TupleTable, ZeekTimers, new_connection
from rstscope.connections.records import Connection, Frames, TtlRange
from rstscope.connections.retire import ConnectionStore, IdleSweep, Spill, fit
from rstscope.connections.sequence import AckRing, ConnArrays, carry, running_values
from rstscope.grouped import NONE

FEED_ROWS = 32_768
"""Rows tracked at once: the temporaries of a 32K-row slice stay in the CPU caches (measured: 16 %
faster than 64K rows, and 2x smaller steps are slower again)."""


class Tracker:
    """Feeds on packet chunks in capture order; ``finish()`` returns the connections."""

    def __init__(self, *, zeek_timers: bool = False) -> None:
        """``zeek_timers``: also end connections the way Zeek's timers do (see :class:`.keys.ZeekTimers`)."""
        self.zeek_timers = zeek_timers
        self._timers = ZeekTimers()
        self._tuples = TupleTable()
        self._arrays = ConnArrays()
        self._ack_ring = AckRing()
        self.host_ttl: dict[str, TtlRange] = {}
        """Per responder address, the TTL range of its non-RST packets over all its connections (a host
        baseline for a RST on a connection where that host sent nothing else, e.g. at the SYN)."""
        self._sweep = IdleSweep()
        self._slot_of = np.full(1024, -1, dtype=np.int64)  # connection id -> slot, -1 once retired
        self._tuple_of = np.full(1024, -1, dtype=np.int64)  # connection id -> tuple id
        self._conn_of_slot = np.full(1024, -1, dtype=np.int64)  # slot -> connection id, -1 free
        self._spill = Spill()
        self.connections: list[Connection | None] = []
        """By id: the live connections, None for retired ones (they are in the spill file)."""
        self._events = EventPass(self.connections, self._arrays)
        self.skipped_decode_errors = 0

    def feed(self, chunk: np.ndarray) -> None:
        good = chunk["decode_error"] == 0
        self.skipped_decode_errors += int(len(chunk) - good.sum())
        rows = chunk[good] if not good.all() else chunk
        with _without_cycle_collection():
            for start in range(0, len(rows), FEED_ROWS):
                self._feed(rows[start : start + FEED_ROWS])

    def _feed(self, rows: np.ndarray) -> None:
        src_is_a, order, tgroups, tids = self._tuples.index(rows)
        # Columns grouped by tuple, capture order inside each group (gathering whole rows is far slower).
        flags = rows["flags"][order].astype(np.int64)
        seq = rows["seq"][order].astype(np.int64)
        ack_raw = rows["ack"][order].astype(np.int64)
        plen = rows["payload_len"][order].astype(np.int64)
        ts = rows["ts_ns"][order]
        frame = rows["frame"][order].astype(np.int64)
        window = rows["window"][order]
        ttl = rows["ttl"][order].astype(np.int64)
        ip_ids = rows["ip_id"][order].astype(np.int64)
        has_ts = rows["has_ts"][order]
        a_side = src_is_a[order]
        tid = tids[tgroups.gi]

        new_inst, cur = self._tuples.instances(tgroups, tids, flags, seq, ack_raw)
        if self.zeek_timers:
            self._timers.reset(self._tuples.recycled)
            new_inst = self._timers.splits(
                new_inst, tgroups, tids, tid, ts.astype(np.int64), flags, a_side, len(self._tuples)
            )
        first_id = len(self.connections)
        new_pos, conn_id = self._tuples.connection_ids(new_inst, order, tgroups, tids, cur, first_id)
        conn = self._new_connections(rows, order, new_pos, conn_id, first_id, tid, a_side)
        orig_is_a = self._arrays["orig_is_a"][conn].astype(bool)
        side = np.where(a_side == orig_is_a, 0, 1)

        v = running_values(self._arrays, conn, side, flags, seq, ack_raw, plen, ts, window)
        self._events.rst_peer_acks.update(
            self._ack_ring.at_resets(np.flatnonzero(v.is_rst), conn, side, frame, v.ack_val, v.last_ack_of, v.cg)
        )
        self._events.run(
            np.flatnonzero(v.events),
            frame, ts, seq, ack_raw, order, conn, conn_id, side, flags, plen, v.seq_val, v.ack_val,
            v.snd_nxt_before, v.peer_acked, v.own_ack_before, v.peer_snd_nxt, v.old_count, v.zw_count, v.pure_ack,
            v.peer_prev, v.after_gap, rows=rows, ttl=ttl, gap=v.gap, probe=v.probe, last_plain_of=v.last_plain_of,
            ip_ids=ip_ids,
        )  # fmt: skip
        carry(self._arrays, v, seq, ack_raw, flags, plen, ts, frame, ttl, ip_ids, has_ts)
        self._ack_ring.update(v.conns, frame, v.ack_val, v.mask, v.has_ack, v.cg)
        self._retire_idle(int(frame.max()), int(ts.max()))  # last: the chunk's rows are all counted by now

    def _new_connections(self, rows, order, new_pos, conn_id, first_id: int, tid, a_side) -> np.ndarray:
        """Slots and records for the connections that start in this chunk; every row's slot."""
        arr = self._arrays
        new_ids = first_id + np.arange(len(new_pos))
        new_slots = arr.allocate(len(new_pos))
        self._slot_of = fit(self._slot_of, first_id + len(new_pos), -1)
        self._tuple_of = fit(self._tuple_of, first_id + len(new_pos), -1)
        self._conn_of_slot = fit(self._conn_of_slot, arr.capacity, -1)
        self._slot_of[new_ids] = new_slots
        self._tuple_of[new_ids] = tid[new_pos]
        self._conn_of_slot[new_slots] = new_ids
        self._ack_ring.fit(arr.capacity, new_slots)
        if len(new_pos):
            first_rows = rows[order[new_pos]]
            columns = ("src_hi", "src_lo", "src_port", "dst_hi", "dst_lo", "dst_port", "flags", "ip_version",
                       "frame", "ts_ns", "tunnel_id")  # fmt: skip
            orig_is_a = arr["orig_is_a"]
            for values in zip(*(first_rows[c].tolist() for c in columns), a_side[new_pos].tolist(),
                              new_slots.tolist(), strict=True):  # fmt: skip
                *fields, src_is_a, slot = values
                c, src_is_orig = new_connection(len(self.connections), *fields)
                orig_is_a[slot] = int(src_is_a == src_is_orig)
                self.connections.append(c)
        return self._slot_of[conn_id]  # from here on, connections are addressed by their slot

    def _retire_idle(self, now_frame: int, now_ns: int) -> None:
        """Connections idle for STALE_AFTER_FRAMES: forget their recent segments (what the event pass would
        do at their next row anyway); if they were closed (FIN or RST), retire them: their summary goes to
        the spill file, their slot and their 4-tuple are freed.  A later packet of that 4-tuple starts
        a new connection, as it would in Zeek once its timers removed the old one.  Past
        LIVE_CLOSED_LIMIT closed connections, those idle for PRESSURE_IDLE_FRAMES and PRESSURE_IDLE_NS retire
        too.  This is what keeps memory bounded by the connections alive at once."""
        arr = self._arrays
        last_frame, live = arr["last_frame"][: arr.size], self._conn_of_slot[: arr.size] >= 0
        closing = arr["closing"][: arr.size] > 0
        idle = self._sweep.idle(now_frame, last_frame, live)
        if idle is not None:
            for cid in self._conn_of_slot[idle].tolist():
                recent = self.connections[cid]._recent
                recent[0].clear()
                recent[1].clear()
            self._retire(idle[closing[idle]].tolist())
            live = self._conn_of_slot[: arr.size] >= 0
        last_ns = arr["last_ns"][: arr.size]
        self._retire(self._sweep.pressured(now_frame, now_ns, last_frame, last_ns, live & closing).tolist())

    def _retire(self, slots: list[int]) -> None:
        """Retire the connections in these slots: finalised, to the spill file, slot and 4-tuple freed."""
        conns = [self.connections[cid] for cid in self._conn_of_slot[slots].tolist()]
        self._finalize(conns, np.asarray(slots, dtype=np.int64))
        for c, slot in zip(conns, slots, strict=True):
            self._spill.put(c)
            self.connections[c.id] = None
            self._tuples.forget(int(self._tuple_of[c.id]), c.id)
            self._slot_of[c.id] = -1
            self._conn_of_slot[slot] = -1
            self._arrays.free.append(slot)

    def finish(self) -> ConnectionStore:
        """Copy the vectorised aggregates into the live connections; all connections, in id order."""
        live = [c for c in self.connections if c is not None]
        with _without_cycle_collection():
            self._finalize(live, self._slot_of[[c.id for c in live]])
        return ConnectionStore(self.connections, self._spill, np.flatnonzero(self._events.saw_reset), self.host_ttl)

    def peek(self, conn_ids) -> list[Connection]:
        """Finalised copies of these connections (live or retired), in the order given, as ``finish()``
        would give them if the capture ended now; tracking goes on undisturbed (the live connections,
        their slots and ``host_ttl`` are left as they were).  For ``rstscope watch``, which judges a
        RST while its connection is still tracked."""
        ids = [int(i) for i in conn_ids]
        out: list[Connection] = []
        live = []
        for cid in ids:
            c = self.connections[cid]
            if c is None:  # retired: already final (the spill's pending ones are shared, hence the copy)
                out.append(_copy_connection(self._spill.get(cid)))
            else:
                out.append(_copy_connection(c))
                live.append(out[-1])
        if live:
            self._finalize(live, self._slot_of[[c.id for c in live]], merge_host_ttl=False)
        return out

    def reset_ids(self) -> np.ndarray:
        """The ids of the connections that saw a RST so far, ascending (live or retired)."""
        return np.flatnonzero(self._events.saw_reset[: len(self.connections)])

    def _finalize(self, conns: list[Connection], slots: np.ndarray, *, merge_host_ttl: bool = True) -> None:
        """Copy the per-slot aggregates into these connections (read from the arrays in one go);
        ``merge_host_ttl``: also add their TTLs to ``host_ttl`` (not for :meth:`peek`'s copies)."""
        arr = self._arrays
        col = {name: arr[name][slots].tolist() for name in _FINAL_COLUMNS}
        for i, c in enumerate(conns):
            c.end_ns = col["last_ns"][i]
            c.last_frame = col["last_frame"][i]
            c.packets = (col["pkts0"][i], col["pkts1"][i])
            c.payload_bytes = (col["bytes0"][i], col["bytes1"][i])
            c.retransmissions = (col["retx0"][i], col["retx1"][i])
            c.zero_windows = (col["zw0"][i], col["zw1"][i])
            stream, unacked = [0, 0], [None, None]
            for s in (0, 1):
                first, end = col[f"first_seq_val{s}"][i], col[f"max_end{s}"][i]
                if first != NONE and end != NONE:
                    syn_fin = (c.isn[s] is not None) + (c.fin_frame[s] is not None)
                    stream[s] = max(0, end - first - syn_fin)
                    peer_ack = col[f"max_ack{1 - s}"][i]
                    if peer_ack != NONE:
                        unacked[s] = max(0, end - peer_ack)
            c.stream_bytes, c.unacked_bytes = tuple(stream), tuple(unacked)
            c.ttl = (
                TtlRange.of(col["ttl_min0"][i], col["ttl_max0"][i], col["ttl_n0"][i]),
                TtlRange.of(col["ttl_min1"][i], col["ttl_max1"][i], col["ttl_n1"][i]),
            )
            c.timestamped = (col["ts_n0"][i], col["ts_n1"][i])
            if merge_host_ttl and c.ttl[1] is not None:
                self.host_ttl[c.resp_addr] = c.ttl[1].merge(self.host_ttl.get(c.resp_addr))


def _copy_connection(c: Connection) -> Connection:
    """A copy whose containers are its own (the tracker goes on appending to the original's)."""
    twin = object.__new__(Connection)  # slots: copy field by field (copy.copy takes 10 times longer)
    for name in _ALL_FIELDS:
        setattr(twin, name, getattr(c, name))
    for name in _CONTAINER_FIELDS:
        value = getattr(c, name)
        if isinstance(value, list):
            setattr(twin, name, [list(v) if isinstance(v, list) else v for v in value])
        elif isinstance(value, dict):
            setattr(twin, name, dict(value))
        elif isinstance(value, Frames):  # counters that grow in place
            setattr(twin, name, Frames(value.count, value.first, value.last))
    return twin


_ALL_FIELDS = tuple(f.name for f in dataclasses.fields(Connection))
_CONTAINER_FIELDS = tuple(
    f.name for f in dataclasses.fields(Connection) if f.default_factory is not dataclasses.MISSING
)
"""The fields whose values are containers (their defaults are made by a factory)."""


@contextlib.contextmanager
def _without_cycle_collection():
    """The cyclic garbage collector paused: the tracker allocates many small containers (a connection is
    a few dozen) and makes no reference cycles, so the collector's passes over the growing heap find
    nothing and cost a quarter of the tracker's time on short connections (measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_FINAL_COLUMNS = (
    "last_ns", "last_frame", "pkts0", "pkts1", "bytes0", "bytes1", "retx0", "retx1", "zw0", "zw1",
    "first_seq_val0", "first_seq_val1", "max_end0", "max_end1", "max_ack0", "max_ack1",
    "ttl_min0", "ttl_min1", "ttl_max0", "ttl_max1", "ttl_n0", "ttl_n1", "ts_n0", "ts_n1",
)  # fmt: skip
"""The per-slot columns a connection's summary is made of."""
