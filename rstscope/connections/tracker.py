"""The tracker: drives the stages over each chunk of packet rows.

Per slice of a chunk (at most ``FEED_ROWS`` rows): first what depends on the rows alone (:class:`Slice`:
their grouping by 4-tuple, the fields read, in that order; made ahead, in another thread, when the
capture is read by a child process), then the 4-tuple index and the connection instances (:mod:`.keys`),
new connections and their slots, the vectorised running values (:mod:`.sequence`), the event pass
(:mod:`.events`), the carry to the next chunk, and retirement of the connections that closed and went
idle (:mod:`.retire`).  ``finish()`` retires the rest and returns every connection in id order, made from
its rows when read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np

from rstscope import collector, heap
from rstscope.connections import dormant
from rstscope.connections.dormant import DORMANT_AFTER_FRAMES, Dormant
from rstscope.connections.events import EventPass, ffi, lib
from rstscope.connections.keys import ByTuple, TupleTable, ZeekTimers, by_tuple, grouped_columns, originators
from rstscope.connections.records import Connection, TtlRange
from rstscope.connections.retire import ConnectionStore, IdleSweep, RowBatch, Spill, fit, grown, opaque, packed, taken
from rstscope.connections.rows import CONN_ROW, PROBE_ROW
from rstscope.connections.sequence import AckRing, ConnArrays, running_values
from rstscope.grouped import NONE
from rstscope.packets import ACK, RST, SYN, format_addr

FEED_ROWS = 32_768
"""Rows tracked at once: the temporaries of a 32K-row slice stay in the CPU caches (measured: 16 %
faster than 64K rows, and 2x smaller steps are slower again)."""
STORM_PART_ROWS = 8_192
"""Past LIVE_CLOSED_LIMIT closed connections (a reset storm), a slice that may start more connections than
this (:func:`_storming`) is tracked in parts of this many rows, with idle connections going dormant
between them: every connection of a part needs a slot (1.3 KB) while it is tracked, and a slice of bare
RSTs is 32,768 new connections.  A busy server's slice of short connections (one SYN in ten rows) is
tracked whole: parts cost about 1.5 ms each, and it starts too few connections for them to save memory."""


class Tracker:
    """Feeds on packet chunks in capture order; ``finish()`` returns the connections."""

    def __init__(self, *, zeek_timers: bool = False, on_retired: Callable[[RowBatch], None] | None = None) -> None:
        """``zeek_timers``: also end connections the way Zeek's timers do (see :class:`.keys.ZeekTimers`).
        ``on_retired``: called with each batch of connections that retire, as rows (final: what the store
        gives of them later), batches in any order, each in id order."""
        self.zeek_timers = zeek_timers
        self._on_retired = on_retired
        self._timers = ZeekTimers()
        self._tuples = TupleTable()
        self._arrays = ConnArrays()
        self._ack_ring = AckRing()
        self._sweep = IdleSweep()
        self._quiet = IdleSweep(DORMANT_AFTER_FRAMES)  # connections to put out of memory
        # Per connection ever (4 bytes each: slots and 4-tuples are bounded by what memory holds at once).
        self._slot_of = np.full(1024, -1, dtype=np.int32)  # connection id -> slot, -1 once retired
        self._tuple_of = np.full(1024, -1, dtype=np.int32)  # connection id -> tuple id
        self._conn_of_slot = np.full(1024, -1, dtype=np.int64)  # slot -> connection id, -1 free
        self._spill = Spill()
        self.count = 0
        """Connections so far (ids 0 .. count - 1)."""
        self._ident = np.zeros(0, _IDENT)  # per slot: who the connection is
        self._host_ttl: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._events = EventPass(self._arrays)
        self._dormant = Dormant(_IDENT)
        self._closed_kept = 0
        """Closed connections in slots or dormant after the last sweep (this tracker's own count)."""

    def feed(self, chunk: np.ndarray | Sliced) -> None:
        """Track a chunk of packet rows, in capture order (or the chunk :meth:`sliced` already).  Rows with a
        decode error are left out (the reader counts them: ``ReadStats.decode_errors``)."""
        slices = chunk.slices if isinstance(chunk, Sliced) else map(prepared, _slices(_decoded(chunk)))
        with collector.paused():
            for piece in slices:
                self._feed(piece)

    @staticmethod
    def sliced(chunk: np.ndarray) -> Sliced:
        """A chunk made ready to :meth:`feed`, in slices: this depends on the chunk alone, so it can be done in
        another thread while the tracker tracks the chunk before (:mod:`rstscope.ahead`)."""
        return Sliced([prepared(piece) for piece in _slices(_decoded(chunk))])

    def _feed(self, piece: Slice) -> None:
        """One slice: tracked, then swept.  In a storm of closed connections the slice is tracked in parts,
        the idle ones going dormant between them (never a change of results, see :mod:`.dormant`)."""
        rows = piece.rows
        if self._sweep.pressing(self._closed_kept) and piece.storming:
            for start in range(0, len(rows), STORM_PART_ROWS):
                now_frame = self._track(prepared(rows[start : start + STORM_PART_ROWS]))
                if start + STORM_PART_ROWS < len(rows):
                    self._doze(now_frame)
        else:
            self._track(piece)
        # Last: the slice's rows are all counted by now.
        self._retire_idle(piece.last_frame, piece.last_ns)

    def _track(self, piece: Slice) -> int:
        """Track these rows (a slice or a part of one); their last frame."""
        rows, (a_side, order, position, tgroups, keys) = piece.rows, piece.by_tuple
        tids = self._tuples.index(keys)
        flags, seq, ack_raw, plen, ts, frame, window, ttl, ip_ids, has_ts = piece.columns
        tid = tids[tgroups.gi]

        new_inst, cur = self._tuples.instances(tgroups, tids, flags, seq, ack_raw)
        if self.zeek_timers:
            self._timers.reset(self._tuples.recycled)
            new_inst = self._timers.splits(
                new_inst, tgroups, tids, tid, ts.astype(np.int64), flags, a_side, len(self._tuples)
            )
        first_id = self.count
        new_pos, conn_id = self._tuples.connection_ids(new_inst, order, tgroups, tids, cur, first_id)
        conn = self._new_connections(rows, order, new_pos, conn_id, first_id, tid, a_side)
        orig_is_a = self._arrays["orig_is_a"][conn].astype(bool)
        side = (a_side != orig_is_a).astype(np.int64)

        v = running_values(
            self._arrays, self._ack_ring, conn, side, flags, seq, ack_raw, plen, ts, window, frame, ttl, ip_ids, has_ts
        )
        self._events.rst_peer_acks = v.peer_acks(frame)
        self._events.run(
            position[np.flatnonzero(v.events[position])],  # the event rows, in capture order
            frame, ts, seq, ack_raw, order, conn, conn_id, side, flags, plen, v.seq_val, v.ack_val,
            v.snd_nxt_before, v.peer_acked, v.own_ack_before, v.peer_snd_nxt, v.old_count, v.zw_count, v.pure_ack,
            v.peer_prev, v.after_gap, rows=rows, ttl=ttl, gap=v.gap, probe=v.probe,
            last_plain_of=[v.last_plain, v.last_plain], ip_ids=ip_ids,
        )  # fmt: skip
        # The running values are already in the table for the next chunk; the values carried into this one
        # were kept for the event pass, which has read them.
        self._arrays.clear_carried_in()
        return int(frame.max())

    def _new_connections(self, rows, order, new_pos, conn_id, first_id: int, tid, a_side) -> np.ndarray:
        """Slots for the connections that start in this chunk, and who they are; every row's slot."""
        arr = self._arrays
        k = len(new_pos)
        new_ids = first_id + np.arange(k)
        self.count = first_id + k
        self._slot_of = fit(self._slot_of, self.count, -1)
        self._tuple_of = fit(self._tuple_of, self.count, -1)
        self._tuple_of[new_ids] = tid[new_pos]
        new_slots = self._allocate(new_ids)
        first = taken(rows, order[new_pos])
        src_is_orig, inferred = originators(first["flags"], first["src_port"], first["dst_port"])
        f = {"id": new_ids}
        for end, src, dst in (("hi", "src_hi", "dst_hi"), ("lo", "src_lo", "dst_lo"), ("port", "src_port", "dst_port")):
            f[f"orig_{end}"] = np.where(src_is_orig, first[src], first[dst])
            f[f"resp_{end}"] = np.where(src_is_orig, first[dst], first[src])
        f["ip_version"], f["inferred"] = first["ip_version"], inferred
        f["first_frame"], f["start_ns"], f["tunnel_id"] = first["frame"], first["ts_ns"], first["tunnel_id"]
        opaque(self._ident)[new_slots] = opaque(packed(_IDENT, k, f))
        arr["orig_is_a"][new_slots] = a_side[new_pos] == src_is_orig
        self._events.columns.fit(arr.capacity, new_slots, ~src_is_orig)  # ``^``: Zeek's flip
        slot = self._slot_of[conn_id]
        asleep = conn_id[slot < 0]  # rows of connections in no slot: dormant ones
        if len(asleep):
            self._wake(self._dormant.waking(asleep))
            slot = self._slot_of[conn_id]
        return slot.astype(np.int64)  # from here on, connections are addressed by their slot

    def _allocate(self, ids: np.ndarray, *, defaults: bool = True) -> np.ndarray:
        """Slots for these connections: their per-slot columns at their defaults, but for the event loop's
        (:meth:`.EventColumns.fit` sets those); not ``defaults``: as they were, every column to be written
        (a dormant connection's record is)."""
        arr = self._arrays
        slots = arr.allocate(len(ids), defaults=defaults)
        self._conn_of_slot = fit(self._conn_of_slot, arr.capacity, -1)
        self._slot_of[ids] = slots
        self._conn_of_slot[slots] = ids
        self._ack_ring.fit(arr.capacity, slots if defaults else slots[:0])
        if len(self._ident) < arr.capacity:
            self._ident = grown(self._ident, arr.capacity)
        return slots

    def _sleep(self, slots: np.ndarray) -> None:
        """The connections in these slots go dormant (:mod:`.dormant`): slot freed, 4-tuple kept."""
        # In id order: connections wake in runs of ids (those that started together retransmit together),
        # which then read runs of the file.
        slots = slots[np.argsort(self._conn_of_slot[slots], kind="stable")]
        for start in range(0, len(slots), _SLOT_BATCH):
            batch = slots[start : start + _SLOT_BATCH]
            ids = self._conn_of_slot[batch]
            self._dormant.put(ids, batch, self._arrays, self._events.columns, self._ack_ring, self._ident)
            self._events.columns.release(batch)
            self._slot_of[ids] = -1
            self._conn_of_slot[batch] = -1
            self._arrays.free.extend(batch.tolist())

    def _wake(self, ids: np.ndarray) -> None:
        """These dormant connections back in slots, as they were."""
        for start in range(0, len(ids), _SLOT_BATCH):  # the end of a flood wakes thousands at once
            batch = ids[start : start + _SLOT_BATCH]
            slots = self._allocate(batch, defaults=False)  # the records hold every column of a slot
            self._events.columns.fit(self._arrays.capacity, slots[:0], np.zeros(0, dtype=bool))
            self._dormant.take(batch, slots, self._arrays, self._events.columns, self._ack_ring, self._ident)

    def _retire_idle(self, now_frame: int, now_ns: int) -> None:
        """Connections idle for STALE_AFTER_FRAMES: forget their recent segments (what the event pass would
        do at their next row anyway); if they were closed (FIN or RST), retire them: their rows go to
        the spill file, their slot and their 4-tuple are freed.  A later packet of that 4-tuple starts
        a new connection, as it would in Zeek once its timers removed the old one.  Open connections idle
        DORMANT_AFTER_FRAMES go dormant (:mod:`.dormant`): out of memory, back if their 4-tuple sends
        again; closed ones too past CLOSED_DORMANT_ABOVE, and they still retire when these rules say,
        from there.  Past LIVE_CLOSED_LIMIT closed connections (in slots or dormant), those idle for
        PRESSURE_IDLE_FRAMES and PRESSURE_IDLE_NS retire too.  This is what keeps memory bounded by the
        connections alive at once; dormancy changes when a connection leaves memory, never what becomes
        of it."""
        now_frame, now_ns = self.sweep_clock(now_frame, now_ns)
        arr = self._arrays
        size = arr.size
        last_frame, live = arr["last_frame"][:size], self._conn_of_slot[:size] >= 0
        closing = arr["closing"][:size] > 0
        # The sweeps see the slots, then the closed dormant connections (positions from ``size`` on).
        d_ids, d_frame, d_ns = self._dormant.closed()
        idle = None
        if self._sweep.due(now_frame):
            everyone = np.ones(len(d_ids), dtype=bool)
            idle = self._sweep.idle(now_frame, np.concatenate([last_frame, d_frame]), np.concatenate([live, everyone]))
        if idle is not None:
            in_slot = idle[idle < size]
            self._events.columns.forget_recent(in_slot)
            self._retire(in_slot[closing[in_slot]])
            self._retire_dormant(d_ids[idle[idle >= size] - size])
        self._doze(now_frame)
        live = self._conn_of_slot[:size] >= 0
        self._closed_kept = self._closed_count(live, closing)
        kept = self.closed_kept(self._closed_kept)
        if not self._sweep.pressing(kept):  # the usual case: the arrays below are not made
            return
        d_ids, d_frame, d_ns = self._dormant.closed()
        closed = np.concatenate([live & closing, np.ones(len(d_ids), dtype=bool)])
        pressured = self._sweep.pressured(
            now_frame, now_ns, np.concatenate([last_frame, d_frame]), np.concatenate([arr["last_ns"][:size], d_ns]),
            closed, kept=kept,
        )  # fmt: skip
        self._retire(pressured[pressured < size])
        self._retire_dormant(d_ids[pressured[pressured >= size] - size])

    def _doze(self, now_frame: int) -> None:
        """Open connections idle DORMANT_AFTER_FRAMES go dormant (:mod:`.dormant`); closed ones too in a
        storm (past CLOSED_DORMANT_ABOVE closed connections), else they stay in their slots: they retire soon
        anyway, and the file costs time and memory."""
        size = self._arrays.size
        live = self._conn_of_slot[:size] >= 0
        quiet = self._quiet.idle(now_frame, self._arrays["last_frame"][:size], live)
        if quiet is None:
            return
        closing = self._arrays["closing"][:size] > 0
        storm = self._closed_count(live, closing) > dormant.CLOSED_DORMANT_ABOVE
        self._sleep(quiet if storm else quiet[~closing[quiet]])

    def _closed_count(self, live: np.ndarray, closing: np.ndarray) -> int:
        """Closed connections this tracker keeps (``live`` and ``closing`` per slot): in slots and dormant."""
        return int(np.count_nonzero(live & closing)) + len(self._dormant.closed()[0])

    def _retire_dormant(self, ids: np.ndarray) -> None:
        """Retire these dormant connections: their rows made from their dormant records (no slot)."""
        for start in range(0, len(ids), _SLOT_BATCH):
            batch = np.sort(ids[start : start + _SLOT_BATCH])
            records, _, probes = self._dormant.records(batch)
            self._put(self._rows(_record_state(records, probes), batch, keep=False))
            self._forget(batch)

    # Hooks for a tracker of one shard of a capture (rstscope.fleet.shards: a shard's rows are a part of
    # each slice, and it must sweep and count as the tracker of the whole capture does).

    def sweep(self, now_frame: int, now_ns: int) -> None:
        """Run the idle sweep that follows each slice now (a shard with no rows in a slice still sweeps)."""
        self._retire_idle(now_frame, now_ns)

    def sweep_clock(self, now_frame: int, now_ns: int) -> tuple[int, int]:
        """The frame and time a sweep runs at: by default the slice's last frame and latest time."""
        return now_frame, now_ns

    def closed_kept(self, count: int) -> int:
        """The closed connections the pressure rule (:meth:`.retire.IdleSweep.pressured`) counts, given
        this tracker's ``count``: by default its own (a shard's tracker sums them over the shards)."""
        return count

    def _retire(self, slots: np.ndarray) -> None:
        """Retire the connections in these slots: their rows to the spill file, slot and 4-tuple freed."""
        slots = slots[np.argsort(self._conn_of_slot[slots], kind="stable")]  # in id order: read back in id order
        for start in range(0, len(slots), _SLOT_BATCH):  # a storm retires tens of thousands at once
            batch = slots[start : start + _SLOT_BATCH]
            ids = self._conn_of_slot[batch]
            self._put(self._rows(self._slot_state(batch), ids, keep=False))
            self._events.columns.release(batch)
            self._forget(ids)
            self._slot_of[ids] = -1
            self._conn_of_slot[batch] = -1
            self._arrays.free.extend(batch.tolist())

    def _put(self, rows: tuple) -> None:
        """Retired connections' rows (:meth:`_rows`) to the spill, and to ``on_retired``."""
        self._spill.put(*rows)
        if self._on_retired is not None:
            self._on_retired(RowBatch(rows[0], self._spill))  # with their tables' places, set by put

    def _forget(self, ids: np.ndarray) -> None:
        """These connections retired: their 4-tuples are forgotten, but those a newer connection lives on."""
        self._tuples.forget_many(self._tuple_of[ids], ids)

    def finish(self) -> ConnectionStore:
        """Retire the live connections too; all connections, in id order.  The tracker's slots are then
        given back to the system: the stages after tracking run while the tracker is still referenced."""
        with collector.paused():
            live = np.flatnonzero(self._conn_of_slot[: self._arrays.size] >= 0)
            self._retire(live)
            self._dormant.draining = True
            self._retire_dormant(self._dormant.ids())
        self._drop_slots()
        heap.give_back()  # the slots' holes in the heap: the stages after tracking start from what is left
        host_ttl = {format_addr(hi, lo): TtlRange(*r) for (hi, lo), r in self._host_ttl.items()}
        return ConnectionStore(self._spill, self.count, np.flatnonzero(self._events.saw_reset), host_ttl)

    def _drop_slots(self) -> None:
        """Every connection retired: the slot columns, rings and 4-tuples go (small empty ones instead)."""
        self._arrays = ConnArrays()
        self._events.drop_slots(self._arrays)
        self._ack_ring = AckRing()
        self._ident = np.zeros(0, _IDENT)
        self._conn_of_slot = np.full(1024, -1, dtype=np.int64)
        self._tuples = TupleTable()
        self._tuple_of = np.zeros(0, dtype=np.int32)
        self._dormant = Dormant(_IDENT)

    @property
    def connections(self) -> list[Connection | None]:
        """By id: finalised copies of the live connections, None for retired and dormant ones (they are in
        spill files).  Made when asked for, all at once: for tests and inspection, not for the pipeline."""
        ids = np.arange(self.count)
        out: list[Connection | None] = [None] * self.count
        live = ids[self._slot_of[: self.count] >= 0]
        for c in self.peek(live) if len(live) else []:
            out[c.id] = c
        return out

    def reset_ids(self) -> np.ndarray:
        """The ids of the connections that saw a RST so far, ascending (live, dormant or retired)."""
        return np.flatnonzero(self._events.saw_reset[: self.count])

    def shared_subjects(self, ids: np.ndarray):
        """What another process needs to judge these retired connections (:meth:`.retire.Spill.shared`)."""
        return self._spill.shared(ids)

    def shared_rows(self, ids: np.ndarray) -> tuple[dict, list[int], np.ndarray]:
        """What another process needs to read the rows of these retired connections
        (:meth:`.retire.Spill.shared_rows`), and where each one's row is."""
        return self._spill.shared_rows(self.count, ids)

    def hosts_with_ttl(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        """Whether each address (``hi``, ``lo``) has a TTL range in ``host_ttl`` so far (as a responder of a
        connection retired, whose packets other than RSTs it sent)."""
        hosts = zip(hi.tolist(), lo.tolist(), strict=True)
        return np.fromiter(map(self._host_ttl.__contains__, hosts), dtype=bool, count=len(hi))

    def peek(self, conn_ids) -> list[Connection]:
        """Finalised copies of these connections (live or retired), without disturbing tracking."""
        ids = np.asarray(conn_ids, dtype=np.int64)
        self._wake(self._dormant.waking(ids))  # back in a slot until the end (results do not change)
        slots = self._slot_of[ids].astype(np.int64)
        out: dict[int, Connection] = {}
        live = slots >= 0
        if live.any():
            conn_rows, tables, overflow = self._rows(self._slot_state(slots[live]), ids[live], keep=True)
            spill = Spill()
            spill.put(conn_rows, tables, overflow)
            out.update(zip(ids[live].tolist(), spill.get(ids[live]), strict=True))
        if (~live).any():
            out.update(zip(ids[~live].tolist(), self._spill.get(ids[~live]), strict=True))
        return [out[cid] for cid in ids.tolist()]

    def _slot_state(self, slots: np.ndarray) -> _SlotState:
        arr, cols = self._arrays, self._events.columns
        probes = cols.probes_of(slots) if (cols.probe_block[slots] >= 0).any() else None
        return _SlotState(slots, arr.table, cols.ev, cols.history, self._ident, probes)

    def _rows(self, slot: _SlotState, ids: np.ndarray, *, keep: bool):
        """The rows of these connections, from their slots' state (see :mod:`.rows`): connection rows, their
        table rows (taken from the pending ones unless ``keep``), their long histories."""
        ev = self._events
        out = _conn_rows(slot)
        if not keep:
            self._merge_host_ttl(out)
        tables = {"resets": ev.resets.take(ids, keep=keep), "findings": ev.findings.take(ids, keep=keep),
                  "after": ev.after.take(ids, keep=keep),
                  "probes": _probe_rows(slot.probes, ids, out["probes_n"])}  # fmt: skip
        overflow = {}
        for cid in ids[out["history_len"] > lib.HISTORY_MAX].tolist():
            overflow[cid] = ev.overflow[cid] if keep else ev.overflow.pop(cid)
        return out, tables, overflow

    def _merge_host_ttl(self, conn_rows: np.ndarray) -> None:
        """Per responder address, the TTL range of its packets over the connections retired so far."""
        seen = np.flatnonzero(conn_rows["ttl_n"][:, 1] > 0)
        if not len(seen):
            return
        hi, lo = conn_rows["resp_hi"][seen], conn_rows["resp_lo"][seen]
        order = np.lexsort((lo, hi))  # hosts in (hi, lo) order: the order they are first added in
        hi, lo = hi[order], lo[order]
        first = np.flatnonzero(np.r_[True, (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])])
        at = seen[order]
        low = np.minimum.reduceat(conn_rows["ttl_low"][at, 1], first)
        high = np.maximum.reduceat(conn_rows["ttl_high"][at, 1], first)
        n = np.add.reduceat(conn_rows["ttl_n"][at, 1], first)
        for host_hi, host_lo, lo_ttl, hi_ttl, count in zip(hi[first].tolist(), lo[first].tolist(), low.tolist(),
                                                            high.tolist(), n.tolist(), strict=True):  # fmt: skip
            old = self._host_ttl.get((host_hi, host_lo))
            if old is None:
                self._host_ttl[(host_hi, host_lo)] = (lo_ttl, hi_ttl, count)
            else:
                self._host_ttl[(host_hi, host_lo)] = (min(old[0], lo_ttl), max(old[1], hi_ttl), old[2] + count)


class Slice(NamedTuple):
    """At most FEED_ROWS packet rows (no decode errors) and what tracking them needs that depends on the
    rows alone: their grouping by 4-tuple, and the fields the tracker reads (``_FEED_COLUMNS``), grouped
    by tuple, capture order inside each group, as int64.  Made ahead of tracking (:meth:`Tracker.sliced`,
    in another thread: :mod:`rstscope.ahead`), or as each slice is tracked."""

    rows: np.ndarray
    by_tuple: ByTuple
    columns: list[np.ndarray]
    storming: bool
    """Whether the slice may start more than STORM_PART_ROWS connections (:func:`_storming`)."""
    last_frame: int
    last_ns: int
    """The slice's last frame and latest time: when the sweep after it runs."""


class Sliced(NamedTuple):
    """A chunk made into :class:`Slice` s (its rows with a decode error left out)."""

    slices: list[Slice]


def prepared(rows: np.ndarray) -> Slice:
    """The slice of these rows (at most FEED_ROWS, no decode errors), ready to track."""
    grouping = by_tuple(rows)
    columns = grouped_columns(rows, grouping.order, _FEED_COLUMNS)
    flags, ts, frame = (columns[_FEED_COLUMNS.index(name)] for name in ("flags", "ts_ns", "frame"))
    return Slice(rows, grouping, columns, _storming(flags), int(frame.max()), int(ts.max()))


def _slices(rows: np.ndarray) -> Iterator[np.ndarray]:
    """A chunk's rows (no decode errors) FEED_ROWS at a time."""
    return (rows[start : start + FEED_ROWS] for start in range(0, len(rows), FEED_ROWS))


def _decoded(chunk: np.ndarray) -> np.ndarray:
    """The chunk's rows without decode errors."""
    good = chunk["decode_error"] == 0
    return chunk if good.all() else taken(chunk, good)


def _storming(flags: np.ndarray) -> bool:
    """Whether a slice (its rows' ``flags``, in any order) may start more than STORM_PART_ROWS connections:
    its RSTs and its SYNs without ACK are more.  In a storm these are what starts connections (a bare RST,
    a SYN of a flood); a slice of rows of unknown 4-tuples mid-stream can start as many, as it can outside
    a storm."""
    starts = np.count_nonzero(((flags & RST) != 0) | ((flags & (SYN | ACK)) == SYN))
    return starts > STORM_PART_ROWS


def _probe_rows(probes: np.ndarray | None, ids: np.ndarray, probes_n: np.ndarray) -> np.ndarray:
    """The :data:`.rows.PROBE_ROW` rows of these connections (their probe counts per side, their probe rings
    or None for zeros): one for each that sent keepalive probes."""
    probed = np.flatnonzero(probes_n.any(axis=1))
    out = np.zeros(len(probed), PROBE_ROW)
    out["conn"] = ids[probed]
    if probes is not None:
        out["ring"] = probes[probed]
    return out


class _SlotState(NamedTuple):
    """What connections' rows are made of: row ``slots[i]`` of each array below for connection ``i`` (the
    tracker's per-slot arrays, or the fields of dormant records), and their keepalive-probe rings."""

    slots: np.ndarray
    table: np.ndarray
    """Rows of :attr:`.sequence.ConnArrays.table`."""
    ev: np.ndarray
    history: np.ndarray
    ident: np.ndarray
    probes: np.ndarray | None
    """Per connection, in order; None: no keepalive probes (all zeros)."""


def _record_state(records: np.ndarray, probes: np.ndarray) -> _SlotState:
    """The slot state of dormant connections, from their records (:meth:`.dormant.Dormant.records`, in order)."""
    probed = records["ev"][:, lib.EV_PROBE_N : lib.EV_PROBE_N + 2].any()
    return _SlotState(np.arange(len(records)), records["table"], records["ev"], records["history"], records["ident"],
                      probes if probed else None)  # fmt: skip


def _conn_rows(slot: _SlotState) -> np.ndarray:
    """The connection rows (:data:`.rows.CONN_ROW`) of these connections, made in one C pass (``conn_rows``,
    slots_loop.c), which writes, per connection:

    - who it is (the first fields: its ident), ``end_ns`` and ``last_frame`` (the table's ``last_ns``,
      ``last_frame``);
    - ``history`` (its letter codes up to its length, zeros past it: a row depends on its connection only,
      not on what an earlier connection left in the slot) and ``history_len``;
    - from the event loop's columns: ``state``, ``prev_state``, ``isn``, ``syn``, ``synack``,
      ``synack_after_ack`` (count, first, last), ``handshake_ack_frame``, ``fin_frame``,
      ``first_payload_frame``, ``probes_n``;
    - per side from the table: ``packets``, ``payload_bytes``, ``retransmissions``, ``zero_windows``,
      ``ttl_low``, ``ttl_high``, ``ttl_n``, ``timestamped``;
    - ``stream_bytes``: ``max_end - first_seq_val`` less the SYN's and FIN's numbers, at least 0, 0 when
      either is unknown; ``unacked_bytes``: ``max_end`` less the peer's ``max_ack``, at least 0, NONE when
      any is unknown.

    The table spans are left zero (the spill sets them)."""
    n = len(slot.slots)
    out = np.zeros(n, CONN_ROW)
    slots = np.ascontiguousarray(slot.slots, dtype=np.int64)
    for array, width in ((slot.table, 8 * len(ConnArrays.INT_COLUMNS)), (slot.ev, 8 * lib.EV_WIDTH),
                         (slot.history, lib.HISTORY_MAX), (slot.ident, _IDENT.itemsize)):  # fmt: skip
        assert array[0].nbytes == width and (n == 0 or len(array) > slots.max()), width
    # The structs are passed by value; their owners stay alive until the call returns.
    owners = [ffi.new("struct slot_rows *", {"data": ffi.cast("uint8_t *", a.ctypes.data), "stride": a.strides[0]})
              for a in (slot.table, slot.ev, slot.history, slot.ident)]  # fmt: skip
    lib.conn_rows(n, _ROW_LAYOUT, ffi.cast("int64_t *", slots.ctypes.data), *(p[0] for p in owners),
                  ffi.from_buffer("uint8_t[]", out))  # fmt: skip
    return out


_FEED_COLUMNS = ("flags", "seq", "ack", "payload_len", "ts_ns", "frame", "window", "ttl", "ip_id", "has_ts")
"""The packet fields the tracker reads per row."""
_IDENT = np.dtype([(name, CONN_ROW[name]) for name in (
    "id", "orig_hi", "orig_lo", "orig_port", "resp_hi", "resp_lo", "resp_port", "ip_version", "inferred",
    "first_frame", "start_ns", "tunnel_id",
)])  # fmt: skip
"""Per slot, who the connection is (set when it starts): the first fields of a connection row, as they are laid
out there (a connection row starts with its bytes)."""
assert all(CONN_ROW.fields[name] == _IDENT.fields[name] for name in _IDENT.names)
_PAIRS = {"packets": "pkts0", "payload_bytes": "bytes0", "retransmissions": "retx0", "zero_windows": "zw0",
          "ttl_low": "ttl_min0", "ttl_high": "ttl_max0", "ttl_n": "ttl_n0", "timestamped": "ts_n0"}  # fmt: skip
"""Connection row fields of two values (per side) copied from the table: the column of side 0 (side 1's next)."""


def _row_layout():
    """Where :func:`_conn_rows`'s C pass writes each field of a row, and reads each column of the table."""
    at = {name: CONN_ROW.fields[name][1] for name in CONN_ROW.names}
    column = {name: i for i, name in enumerate(ConnArrays.INT_COLUMNS)}
    for first in (*_PAIRS.values(), "first_seq_val0", "max_end0", "max_ack0"):  # pairs: side 1 next to side 0
        assert column[first[:-1] + "1"] == column[first] + 1
    layout = ffi.new("struct row_layout *")
    layout.size, layout.head, layout.none = CONN_ROW.itemsize, _IDENT.itemsize, NONE
    for name in ("end_ns", "last_frame", "history", "history_len", "state", "prev_state", "isn", "syn", "synack",
                 "synack_after_ack", "handshake_ack_frame", "fin_frame", "first_payload_frame", "probes_n",
                 "stream_bytes", "unacked_bytes"):  # fmt: skip
        setattr(layout, name, at[name])
    layout.pairs = len(_PAIRS)
    for k, (name, first) in enumerate(_PAIRS.items()):
        layout.pair_at[k], layout.pair_column[k] = at[name], column[first]
    layout.last_ns_column, layout.last_frame_column = column["last_ns"], column["last_frame"]
    layout.first_seq_column, layout.max_end_column = column["first_seq_val0"], column["max_end0"]
    layout.max_ack_column = column["max_ack0"]
    return layout


_ROW_LAYOUT = _row_layout()
_SLOT_BATCH = 2_048
"""Connections retired or put to sleep at once: their rows are made together (a few kilobytes each).
Against 4 096, measured on 1M-packet captures: tracker peak 9-13 MB lower on a reset storm and a SYN
flood, CPU within noise (1 024 saves no more and costs 10 %: per-batch work over the pending rows)."""
