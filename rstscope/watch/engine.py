"""The incremental engine: packet chunks in, reset verdicts and listen-queue trouble out, as they happen.

The tracker is fed chunk by chunk.  A connection that saw a RST is judged on a finalised copy
(:meth:`Tracker.peek`) once ``grace`` has passed after the RST on the capture's clock, so that the
segments answering it (echoes, the receiver's challenge ACK, data sent on regardless) are in: with
the same functions ``analyze`` runs (:func:`rstscope.evidence.collect`, :func:`rstscope.verdicts.classify`),
its primary RST gets the verdict ``analyze`` gives it when the same packets are read from a file.  The
connection stays watched until it was quiet for ``linger``; then its echoes and other RSTs are reported
with their final verdicts (:class:`ConnectionEnded`).

Listen-queue trouble needs no RST: a retransmitted SYN (a SYN queue that dropped it, or nothing
listening that answers) and a retransmitted SYN-ACK (an accept queue that dropped the handshake's last
ACK) are seen in the SYN rows themselves, reported once per connection attempt as they happen.

Limits: a verdict printed live can differ from the offline one when what decides it comes after the
grace (a connection that goes on long after a RST, making it ``ignored``); the host TTL baseline of a RST
is what was seen so far, not the whole capture's.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rstscope import evidence as evidence_mod
from rstscope import packets as P
from rstscope.analysis import ResetRecord
from rstscope.connections import Connection, Tracker, TtlRange
from rstscope.grouped import distinct
from rstscope.reset_table import NOT_PRIMARY
from rstscope.verdicts import classify

GRACE_NS = 500_000_000
"""How long after a RST (capture clock) it is judged: the echoes and segments after it come within a
round trip; 0.5 s covers the round trips of real paths (and a peer that answers a forged RST
by going on within it) and leaves 0.5 s of the 1 s budget for the 0.2 s clock step and the work."""
LINGER_NS = 5_000_000_000
"""A watched connection quiet for this long has ended: its echoes and other RSTs are reported."""
EPOCH_SYNS = 250_000
"""A new tracker (epoch) after this many new connections (SYNs: about 10 MB of the tracker's per-id
arrays and 300 MB of its spill file) ..."""
EPOCH_NS = 6 * 3600 * 1_000_000_000
"""... or this long (capture clock), whichever comes first."""
HANDOVER_QUIET_NS = 120 * 1_000_000_000
"""The old tracker is dropped once it got no row for this long ..."""
HANDOVER_MAX_NS = 1800 * 1_000_000_000
"""... or this long after the switch (its connections still open then are seen mid-stream)."""
EPOCH_ID_STRIDE = 1_000_000_000
"""Connection ids of epoch k start at k times this."""
SYN_MEMORY_NS = 75_000_000_000
"""SYN and SYN-ACK rows are remembered this long: Linux retransmits a SYN 6 times (1 + 2 + ... + 32 s =
63 s), a SYN-ACK 5 times (31 s)."""
SYN_MEMORY_MAX = 50_000
"""At most this many SYNs and SYN-ACKs remembered (the oldest forgotten first), about 10 MB: memory stays
bounded at any connection rate, and at more than 50,000 handshakes in 75 s the retransmissions of the
oldest ones are missed."""


@dataclass(kw_only=True)
class ResetSeen:
    """A connection's primary RST, judged."""

    record: ResetRecord
    connection: Connection
    resets: list[ResetRecord] = field(default_factory=list)
    """All the connection's RSTs so far, in capture order (the primary among them)."""


@dataclass(kw_only=True)
class ConnectionEnded:
    """A watched connection went quiet: its primary (if any) and the RSTs folded into it."""

    connection: Connection
    primary: ResetRecord | None
    others: list[ResetRecord]
    """Its other RSTs (echoes, ignored ones, ...), final verdicts."""
    revised: bool = False
    """The primary's final verdict differs from the one reported live (what decided it came after the
    grace), or another RST turned out to be the primary."""

    @property
    def echoes(self) -> int:
        return sum(1 for r in self.others if r.verdict.value == "echo")


@dataclass(kw_only=True)
class ListenQueueSeen:
    """A handshake segment sent again: ``syn_retransmitted`` or ``synack_retransmitted``."""

    kind: str
    time_ns: int
    frame: int
    client: str
    server: str
    count: int
    """How many times that segment was seen so far (2 at the first retransmission)."""


@dataclass
class _Watched:
    """A connection that saw a RST, until it ends."""

    primary_frame: int | None = None
    primary_verdict: str | None = None
    due_ns: int = 0
    """Capture time at which it must be judged again (its next RST's grace ends), 0: none pending."""
    end_check_ns: int = 0
    """Capture time from which it may have ended (its last packet + linger), 0: not looked at yet."""


@dataclass(kw_only=True)
class SessionCounts:
    """What the session saw, for the summary at the end."""

    packets: int = 0
    connections: int = 0
    resets: int = 0
    primaries: dict[str, int] = field(default_factory=dict)
    echoes: int = 0
    listen_queue: dict[str, int] = field(default_factory=dict)


class _Epoch:
    """One tracker and what the engine keeps about its connections (ids local to the tracker)."""

    def __init__(self, base: int, started_ns: int) -> None:
        self.tracker = Tracker()
        self.base = base
        """Added to the tracker's connection ids in what the engine reports."""
        self.started_ns = started_ns
        self.last_row_ns = started_ns
        self.syns = 0
        """SYNs (without ACK) fed: about the connections the tracker started."""
        self.known = np.zeros(1024, dtype=bool)  # by local id: already watched (or done)
        self.watched: dict[int, _Watched] = {}

    def new_reset_ids(self) -> list[int]:
        ids = self.tracker.reset_ids()
        if len(ids) and ids[-1] >= len(self.known):
            grown = np.zeros(max(2 * len(self.known), int(ids[-1]) + 1), dtype=bool)
            grown[: len(self.known)] = self.known
            self.known = grown
        new = ids[~self.known[ids]]
        self.known[new] = True
        return new.tolist()


class Engine:
    """Feed chunks with :meth:`feed`, call :meth:`due` with the capture clock's "now" (at least every
    200 ms), :meth:`finish` at the end; each returns the events ready, in capture order.

    Memory for days: a tracker keeps a few dozen bytes per connection it ever saw (and a spill file of
    the retired ones), and keeps open connections that went idle for good.  So the engine starts a new
    tracker (an *epoch*) every :data:`EPOCH_SYNS` new connections or :data:`EPOCH_NS`; during a handover
    the 4-tuples whose SYN came after the switch go to the new tracker and every other row to the old
    one, until the old one got no row for :data:`HANDOVER_QUIET_NS` (or :data:`HANDOVER_MAX_NS` passed);
    then its watched connections end and it is dropped, with whatever idle connections it held.  A
    connection older than that is seen mid-stream by the new tracker: a RST on a connection that
    was idle across a whole handover is judged without its start (``stale``, ``unknown``).  Connection
    ids of epoch ``k`` start at ``k * EPOCH_ID_STRIDE``: within the first epoch they are ``analyze``'s."""

    def __init__(self, *, grace_ns: int = GRACE_NS, linger_ns: int = LINGER_NS, epoch_syns: int = EPOCH_SYNS,
                 epoch_ns: int = EPOCH_NS, handover_quiet_ns: int = HANDOVER_QUIET_NS) -> None:  # fmt: skip
        self.grace_ns = grace_ns
        self.linger_ns = linger_ns
        self.epoch_syns = epoch_syns
        self.epoch_ns = epoch_ns
        self.handover_quiet_ns = handover_quiet_ns
        self.counts = SessionCounts()
        self._epochs: list[_Epoch] = []  # the current one last; two during a handover
        self._epoch_count = 0
        self._new_keys = np.zeros(0, dtype=np.uint64)  # during a handover: 4-tuples of the new epoch
        self._dirty_ns: int | None = None  # earliest unjudged RST row's time
        self._last_ts = 0
        self._next_sweep_ns = 0
        self._handshakes = _Handshakes()
        self._host_ttl = _HostTtl()

    @property
    def last_ts(self) -> int:
        """Capture time of the last packet fed (ns)."""
        return self._last_ts

    @property
    def epochs(self) -> int:
        """Trackers started so far."""
        return self._epoch_count

    def feed(self, chunk: np.ndarray) -> list[ListenQueueSeen]:
        """Track one chunk of packet rows; the listen-queue trouble in it."""
        if not len(chunk):
            return []
        last = int(chunk["ts_ns"].max())
        if not self._epochs:
            self._start_epoch(int(chunk["ts_ns"][0]))
        syn = (chunk["flags"] & (P.SYN | P.ACK | P.RST)) == P.SYN
        current = self._epochs[-1]
        if len(self._epochs) == 2:
            keys = _tuple_keys(chunk)
            self._new_keys = distinct(np.concatenate((self._new_keys, keys[syn])))
            new = syn | np.isin(keys, self._new_keys)
            old = self._epochs[0]
            if not new.all():
                old.tracker.feed(chunk[~new])
                old.last_row_ns = last
            if new.any():
                current.tracker.feed(chunk[new])
        else:
            current.tracker.feed(chunk)
        current.syns += int(np.count_nonzero(syn))
        current.last_row_ns = last
        self.counts.packets += len(chunk)
        self._last_ts = max(self._last_ts, last)
        rst = (chunk["flags"] & P.RST) != 0
        if rst.any():
            first = int(chunk["ts_ns"][rst].min())
            self._dirty_ns = first if self._dirty_ns is None else min(self._dirty_ns, first)
        self._host_ttl.feed(chunk)
        seen = self._handshakes.feed(chunk)
        for event in seen:
            self.counts.listen_queue[event.kind] = self.counts.listen_queue.get(event.kind, 0) + 1
        if len(self._epochs) == 1 and (current.syns >= self.epoch_syns or last - current.started_ns >= self.epoch_ns):
            self._start_epoch(last)
        return seen

    def _start_epoch(self, now_ns: int) -> None:
        self._epochs.append(_Epoch(self._epoch_count * EPOCH_ID_STRIDE, now_ns))
        self._epoch_count += 1
        self._new_keys = np.zeros(0, dtype=np.uint64)

    def due(self, now_ns: int) -> list[ResetSeen | ConnectionEnded]:
        """The events ready at ``now_ns`` (capture clock): primaries whose grace is over, connections
        that ended."""
        events: list = []
        judge = self._dirty_ns is not None and now_ns >= self._dirty_ns + self.grace_ns
        if judge:
            self._dirty_ns = None
            for epoch in self._epochs:
                for cid in epoch.new_reset_ids():
                    epoch.watched[cid] = _Watched()
        sweep = now_ns >= self._next_sweep_ns
        if sweep:
            self._next_sweep_ns = now_ns + 1_000_000_000
        for epoch in self._epochs:
            # Only what may have changed: a RST without its verdict yet, a RST whose grace just ended, a
            # connection that may have ended (looked at again only once it could have): under a reset
            # storm, each connection is copied a few times, not at every step.
            ids = [
                cid
                for cid, w in epoch.watched.items()
                if (judge and w.primary_frame is None)
                or (w.due_ns and now_ns >= w.due_ns)
                or (sweep and w.end_check_ns and now_ns >= w.end_check_ns)
            ]
            events += self._look(epoch, now_ns, ids)
        if len(self._epochs) == 2:
            old, new = self._epochs
            if now_ns - old.last_row_ns >= self.handover_quiet_ns or now_ns - new.started_ns >= HANDOVER_MAX_NS:
                events += self._end_epoch(old)
                self._epochs.pop(0)
                self._new_keys = np.zeros(0, dtype=np.uint64)
        self._handshakes.forget_before(now_ns - SYN_MEMORY_NS)
        events.sort(key=_event_order)
        return events

    def finish(self) -> list[ResetSeen | ConnectionEnded]:
        """The end of the stream: everything still pending judged, every watched connection ended."""
        events = []
        for epoch in self._epochs:
            events += self._end_epoch(epoch)
        self._epochs = []
        events.sort(key=_event_order)
        return events

    def _end_epoch(self, epoch: _Epoch) -> list:
        for cid in epoch.new_reset_ids():
            epoch.watched[cid] = _Watched()
        events = self._look(epoch, np.iinfo(np.int64).max, list(epoch.watched), ended=True)
        self.counts.connections += len(epoch.tracker.finish())
        return events

    def _look(self, epoch: _Epoch, now_ns: int, ids: list[int], *, ended: bool = False) -> list:
        """Judge these watched connections on copies; report primaries past their grace and the ends."""
        if not ids:
            return []
        conns = epoch.tracker.peek(ids)
        host_ttl = self._host_ttl.table
        events: list = []
        cutoff = now_ns - self.grace_ns
        for c in conns:
            watched = epoch.watched[c.id]
            local = c.id
            c.id += epoch.base  # a copy: the session's id
            records = [ResetRecord(evidence=ev, decision=classify(ev)) for ev in evidence_mod.collect([c], host_ttl)]
            primary = next((r for r in records if r.verdict not in NOT_PRIMARY), None)
            if watched.primary_frame is None and primary is not None and primary.evidence.time_ns <= cutoff:
                watched.primary_frame, watched.primary_verdict = primary.frame, primary.verdict.value
                self.counts.primaries[primary.verdict.value] = self.counts.primaries.get(primary.verdict.value, 0) + 1
                events.append(ResetSeen(record=primary, connection=c, resets=records))
            later = [r.evidence.time_ns for r in records if r.evidence.time_ns > cutoff]
            watched.due_ns = min(later) + self.grace_ns if later else 0
            watched.end_check_ns = c.end_ns + self.linger_ns
            if ended or (now_ns - c.end_ns >= self.linger_ns and not later):
                del epoch.watched[local]
                mine = next((r for r in records if r.frame == watched.primary_frame), None)
                others = [r for r in records if r is not mine]
                self.counts.resets += len(records)
                revised = watched.primary_frame is not None and (
                    primary is not mine or mine.verdict.value != watched.primary_verdict
                )
                event = ConnectionEnded(connection=c, primary=mine, others=others, revised=revised)
                self.counts.echoes += event.echoes
                events.append(event)
        return events


def _tuple_keys(chunk: np.ndarray) -> np.ndarray:
    """A 64-bit key per row, the same for both directions of a 4-tuple (collisions: about 2**-64)."""

    def endpoint(hi, lo, port):
        h = hi.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        h ^= lo.astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= port.astype(np.uint64) * np.uint64(0x165667B19E3779F9)
        return h ^ (h >> np.uint64(29))

    a = endpoint(chunk["src_hi"], chunk["src_lo"], chunk["src_port"])
    b = endpoint(chunk["dst_hi"], chunk["dst_lo"], chunk["dst_port"])
    low, high = np.minimum(a, b), np.maximum(a, b)
    return (low * np.uint64(0xFF51AFD7ED558CCD)) ^ high ^ (chunk["tunnel_id"].astype(np.uint64) << np.uint64(48))


def _event_order(event) -> tuple[int, int]:
    if isinstance(event, ResetSeen):
        return (0, event.record.frame)
    return (1, event.connection.last_frame)


class _HostTtl:
    """Per server address (one that answered or was sent a SYN), the TTL range of its non-RST packets
    so far: the host baseline that ``analyze`` takes from all connections at the end
    (``Tracker.host_ttl``), kept from the rows as they come, live connections included."""

    def __init__(self) -> None:
        self.table: dict[str, TtlRange] = {}
        self._servers: set[tuple[int, int]] = set()

    def feed(self, chunk: np.ndarray) -> None:
        flags = chunk["flags"]
        syn = (flags & (P.SYN | P.RST)) == P.SYN
        if syn.any():
            synack = syn & ((flags & P.ACK) != 0)
            hi = np.where(synack, chunk["src_hi"], chunk["dst_hi"])[syn]
            lo = np.where(synack, chunk["src_lo"], chunk["dst_lo"])[syn]
            self._servers.update(zip(hi.tolist(), lo.tolist(), strict=True))
            if len(self._servers) > SYN_MEMORY_MAX:  # a SYN scan of many addresses: start over
                self._servers = set(zip(hi.tolist(), lo.tolist(), strict=True))
        rows = chunk[(flags & P.RST) == 0]
        if not len(rows):
            return
        addr = rows[["src_hi", "src_lo"]]
        keys, inverse = np.unique(addr, return_inverse=True)
        ttl = rows["ttl"].astype(np.int64)
        low = np.full(len(keys), 1 << 16, dtype=np.int64)
        high = np.full(len(keys), -1, dtype=np.int64)
        np.minimum.at(low, inverse, ttl)
        np.maximum.at(high, inverse, ttl)
        count = np.bincount(inverse, minlength=len(keys))
        for (hi, lo), lo_ttl, hi_ttl, n in zip(keys.tolist(), low.tolist(), high.tolist(), count.tolist(), strict=True):
            if (hi, lo) in self._servers:
                name = P.format_addr(hi, lo)
                self.table[name] = TtlRange(lo_ttl, hi_ttl, n).merge(self.table.get(name))


class _Handshakes:
    """SYN and SYN-ACK rows by (4-tuple, sequence number): the second one of a kind is a retransmission."""

    def __init__(self) -> None:
        self._seen: OrderedDict[int, list[int]] = OrderedDict()  # hash of the key -> [count, first ts]

    def feed(self, chunk: np.ndarray) -> list[ListenQueueSeen]:
        syn = np.flatnonzero((chunk["flags"] & (P.SYN | P.RST)) == P.SYN)
        if not len(syn):
            return []
        rows = chunk[syn]
        out = []
        cols = ("src_hi", "src_lo", "src_port", "dst_hi", "dst_lo", "dst_port", "tunnel_id", "flags", "seq",
                "ts_ns", "frame")  # fmt: skip
        for sh, sl, sp, dh, dl, dp, tun, flags, seq, ts, frame in zip(*(rows[c].tolist() for c in cols), strict=True):
            synack = bool(flags & P.ACK)
            client, server = ((dh, dl, dp), (sh, sl, sp)) if synack else ((sh, sl, sp), (dh, dl, dp))
            key = hash((client, server, tun, synack, seq))  # an int: a fifth of the tuple's memory
            entry = self._seen.get(key)
            if entry is None:
                self._seen[key] = [1, ts]
                if len(self._seen) > SYN_MEMORY_MAX:
                    self._seen.popitem(last=False)
                continue
            entry[0] += 1
            if entry[0] == 2:  # once per attempt: the first retransmission
                out.append(
                    ListenQueueSeen(
                        kind="synack_retransmitted" if synack else "syn_retransmitted",
                        time_ns=ts,
                        frame=frame,
                        client=P.format_endpoint(*client),
                        server=P.format_endpoint(*server),
                        count=entry[0],
                    )
                )
        return out

    def forget_before(self, ts_ns: int) -> None:
        while self._seen:
            key, (_count, first) = next(iter(self._seen.items()))
            if first >= ts_ns:
                return
            del self._seen[key]
