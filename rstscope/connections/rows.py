"""Connections as rows: the compact records the tracker keeps instead of objects, and the objects again.

While a capture is tracked, a connection is a slot of columns (:mod:`.events`, :mod:`.sequence`); when
it retires it becomes one :data:`CONN_ROW`, with its RST observations, findings, segments after a
reset and keepalive probes as rows of their own tables (:data:`RST_ROW`, :data:`FINDING_ROW`,
:data:`AFTER_ROW`, :data:`PROBE_ROW`), in
:mod:`.retire`'s store.  :func:`connections` turns rows back into the :mod:`.records` objects,
value for value, when someone reads them.  "None" is a sentinel in a row: -1 for frames, counts and
ids, ``NONE`` for sequence numbers and times.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from dataclasses import dataclass

import numpy as np

from rstscope import packets as P
from rstscope.connections.records import (
    Connection,
    EndpointState,
    Finding,
    Frames,
    Phase,
    RstObservation,
    SegmentAfterReset,
    Side,
    TtlRange,
    _endpoint,
)
from rstscope.connections.state import Event
from rstscope.grouped import NONE

RING = 16
"""Recent segments, keepalive probes and segments after a reset kept per connection (see events.py)."""
PEER_ACKS_KEPT = 8
STATES = list(EndpointState)
EVENTS = list(Event)
PHASES = list(Phase)
LETTERS = "SHADFRTWIQ^"
"""History letter codes of the event loop (its L_* enum): upper case for the originator; + 16: lower case."""
_DECODE = bytes(range(256)).maketrans(
    bytes(range(32)), (LETTERS + "?" * (16 - len(LETTERS)) + LETTERS.lower() + "?" * (16 - len(LETTERS))).encode()
)

_CODE_POINTS = np.frombuffer(bytes(range(256)).translate(_DECODE).decode("latin-1").encode("utf-32-le"), np.uint32)
"""History letter codes (as bytes) -> code points of their letters."""

I8, I64, U64 = np.int8, np.int64, np.uint64
CONN_ROW = np.dtype([
    ("id", I64), ("orig_hi", U64), ("orig_lo", U64), ("orig_port", I64), ("resp_hi", U64), ("resp_lo", U64),
    ("resp_port", I64), ("ip_version", I64), ("inferred", I8), ("first_frame", I64), ("start_ns", I64),
    ("tunnel_id", I64), ("end_ns", I64), ("last_frame", I64),
    ("history", I8, 24), ("history_len", I64), ("state", I8, 2), ("prev_state", I8, 2), ("isn", I64, 2),
    ("syn", I64, 3), ("synack", I64, 3), ("synack_after_ack", I64, 3),  # count, first, last (-1 none)
    ("handshake_ack_frame", I64), ("fin_frame", I64, 2), ("first_payload_frame", I64, 2),
    ("probes_n", I64, 2),  # keepalive probes per side, all ever (the rings: PROBE_ROW)
    ("packets", I64, 2), ("payload_bytes", I64, 2), ("stream_bytes", I64, 2), ("unacked_bytes", I64, 2),
    ("retransmissions", I64, 2), ("zero_windows", I64, 2), ("ttl_low", I64, 2), ("ttl_high", I64, 2),
    ("ttl_n", I64, 2), ("timestamped", I64, 2),
    ("resets", I64, 2), ("findings", I64, 2), ("after", I64, 2), ("probes", I64, 2),  # (start, count) in the tables
])  # fmt: skip
RST_ROW = np.dtype([
    ("conn", I64), ("frame", I64), ("ts_ns", I64), ("side", I8), ("flags", I64), ("seq", I64), ("ack", I64),
    ("seq_raw", I64), ("snd_nxt", I64), ("peer_acked", I64), ("sender_acked", I64), ("peer_snd_nxt", I64),
    ("phase", I8), ("sender_state", I8), ("peer_state", I8), ("sender_fin_frame", I64), ("peer_fin_frame", I64),
    ("sender_prior_rst_frame", I64), ("sender_first_payload_frame", I64), ("answered", I8),
    ("answered_frame", I64), ("answered_flags", I64), ("answered_payload", I64), ("answered_ack", I64),
    ("answered_seq", I64), ("peer_acks_n", I64), ("peer_acks", I64, (PEER_ACKS_KEPT, 2)), ("ttl", I64),
    ("ip_id", I64), ("tcp_auth", I64), ("has_ts", I8), ("prev_ip_id", I64), ("window", I64), ("payload", I64),
    ("peer_seen", I8), ("peer_last_ns", I64), ("answered_idle_ns", I64), ("probes_n", I64),
    ("probes", I64, (RING, 2)), ("synacks_before", I64), ("synacks_after_ack_before", I64),
])  # fmt: skip
PROBE_ROW = np.dtype([("conn", I64), ("ring", I64, (2, RING, 2))])
"""A connection's keepalive probes: per side a ring of (frame, ts), written ``probes_n`` times.  A table of
its own, one row for a connection that sent probes: in the connection row the rings were half of its
bytes (512 of 1,005), zeros for nearly every connection, written to the spill and read back each time."""
FINDING_ROW = np.dtype([("conn", I64), ("frame", I64), ("side", I8), ("event", I8), ("old", I8)])
AFTER_ROW = np.dtype([
    ("conn", I64), ("frame", I64), ("ts_ns", I64), ("side", I8), ("flags", I64), ("seq", I64), ("ack", I64),
    ("payload", I64), ("ttl", I64), ("ip_id", I64),
])  # fmt: skip


def history_text(codes: bytes) -> str:
    """Letter codes (bytes of the event loop's history) as history letters."""
    return codes.translate(_DECODE).decode()


@functools.lru_cache(maxsize=1 << 16)
def _addr(hi: int, lo: int) -> str:
    return P.format_addr(hi, lo)


def _opt(v: int, none: int = -1):
    return None if v == none else v


def rst_observations(rows: np.ndarray) -> list[RstObservation]:
    """:data:`RST_ROW` rows as observations."""
    names, columns = _rst_columns(rows)
    return [RstObservation(**dict(zip(names, values, strict=True))) for values in zip(*columns, strict=True)]


ObservedRst = dataclasses.make_dataclass(
    "ObservedRst", tuple(RstObservation.__dataclass_fields__), slots=True, eq=False
)
ObservedRst.__module__ = __name__
ObservedRst.__doc__ = """An :class:`RstObservation`'s fields, in its order, as plain slots: what
:mod:`rstscope.evidence` reads of each RST (:func:`reset_subjects`).  Made positionally, without the frozen
dataclass's per-field setting (most of its cost) or an instance dict (45 keys: ~10x slower to make, slower
to read)."""


_NO_VALUE = {"ack": NONE, "snd_nxt": NONE, "peer_acked": NONE, "sender_acked": NONE, "peer_snd_nxt": NONE,
             "answered_ack": NONE, "answered_seq": NONE, "sender_fin_frame": -1, "peer_fin_frame": -1,
             "sender_prior_rst_frame": -1, "sender_first_payload_frame": -1, "prev_ip_id": -1}  # fmt: skip
"""RST_ROW fields whose sentinel stands for None, and that sentinel."""
_ONLY_IF = {"answered_frame": "answered", "answered_flags": "answered", "answered_payload": "answered",
            "peer_last_ns": "peer_seen", "answered_idle_ns": "peer_seen"}  # fmt: skip
"""RST_ROW fields that are None unless the flag field named holds."""
_CODED = {"side": list(Side), "phase": PHASES, "sender_state": STATES, "peer_state": STATES}
"""RST_ROW fields stored as codes of these members."""
_RINGS = {"peer_recent_acks": ("peer_acks", "peer_acks_n"), "keepalive_probes": ("probes", "probes_n")}
"""Observation fields kept as (frame, value) pairs in a subarray field of the row, and its count field."""


def _rst_columns(rows: np.ndarray) -> tuple[tuple[str, ...], list[list]]:
    """The fields of :class:`RstObservation` (names), each as a list of one value per row: sentinels as
    None and codes as members column by column, not row by row."""
    names = tuple(RstObservation.__dataclass_fields__)
    plain = [name for name in names if name not in _RINGS]
    # One aligned int64 copy of the scalar fields, then one tolist: the packed row's fields convert slowly.
    numbers = np.empty((len(plain), len(rows)), dtype=np.int64)
    for j, name in enumerate(plain):
        numbers[j] = rows[name]
    at = {name: j for j, name in enumerate(plain)}
    listed = numbers.tolist()
    columns = []
    for name in names:
        if name in _RINGS:
            field, count = _RINGS[name]
            values = [()] * len(rows)
            some = np.flatnonzero(rows[count] > 0)  # subarrays are slow to convert: only rows with any
            pairs_of = np.ascontiguousarray(rows[field][some]).tolist()
            for i, n, pairs in zip(some.tolist(), rows[count][some].tolist(), pairs_of, strict=True):
                values[i] = tuple(map(tuple, pairs[:n]))
        elif name in _CODED:
            members = _CODED[name]
            values = [members[c] for c in listed[at[name]]]
        elif name == "has_ts":
            values = [bool(v) for v in listed[at[name]]]
        else:
            values = listed[at[name]]
            if name in _NO_VALUE:
                none = numbers[at[name]] == _NO_VALUE[name]
            elif name in _ONLY_IF:
                none = rows[_ONLY_IF[name]] == 0
            else:
                none = None
            if none is not None:
                for i in np.flatnonzero(none).tolist():
                    values[i] = None
        columns.append(values)
    return names, columns


@dataclass(slots=True, eq=False)
class ResetSubject:
    """What :mod:`rstscope.evidence` reads of a connection that saw a RST, by a :class:`Connection`'s names:
    made from its rows without the rest (history, state findings, probes, byte counts)."""

    id: int
    originator_inferred: bool
    orig_addr: str
    orig_port: int
    resp_addr: str
    resp_port: int
    orig: str
    """Its originator as ``addr:port`` (:meth:`endpoint`)."""
    resp: str
    packets: tuple[int, int]
    timestamped: tuple[int, int]
    zero_windows: tuple[int, int]
    isn: list[int | None]
    ttl: tuple[TtlRange | None, TtlRange | None]
    syn_frames: Frames
    """How many SYNs (evidence reads how many, not which)."""
    saw_syn: bool
    saw_synack: bool
    resets: list[ObservedRst]
    rst_frames: list[list[int]]
    after_reset: list[SegmentAfterReset]

    def endpoint(self, side: Side) -> str:
        return self.orig if side is Side.ORIG else self.resp


def reset_subjects(conn_rows: np.ndarray, take) -> list[ResetSubject]:
    """:data:`CONN_ROW` rows as :class:`ResetSubject` (``take`` as for :func:`connections`), made column by
    column and then positionally (setting 19 attributes one by one cost more than the rest)."""
    resets = _per_connection(conn_rows, take, "resets", _observed)
    after = _per_connection(conn_rows, take, "after", _after)
    orig_addr = list(map(_addr, conn_rows["orig_hi"].tolist(), conn_rows["orig_lo"].tolist()))
    resp_addr = list(map(_addr, conn_rows["resp_hi"].tolist(), conn_rows["resp_lo"].tolist()))
    orig_port, resp_port = conn_rows["orig_port"].tolist(), conn_rows["resp_port"].tolist()
    packets, timestamped, zero_windows = (list(zip(*conn_rows[k].T.tolist(), strict=True))  # (orig, resp) pairs
                                          for k in ("packets", "timestamped", "zero_windows"))  # fmt: skip
    isn = np.where(conn_rows["isn"] < 0, None, conn_rows["isn"]).tolist()
    ttl = [[None] * len(conn_rows), [None] * len(conn_rows)]
    for side in (0, 1):
        seen = np.flatnonzero(conn_rows["ttl_n"][:, side])
        ranges = (conn_rows[k][seen, side].tolist() for k in ("ttl_low", "ttl_high", "ttl_n"))
        for i, lo, hi, n in zip(seen.tolist(), *ranges, strict=True):
            ttl[side][i] = _ttl_range(lo, hi, n)
    syn_n, synack_n = conn_rows["syn"][:, 0], conn_rows["synack"][:, 0]
    return list(map(
        ResetSubject, conn_rows["id"].tolist(), (conn_rows["inferred"] != 0).tolist(), orig_addr, orig_port,
        resp_addr, resp_port, map(_endpoint, orig_addr, orig_port), map(_endpoint, resp_addr, resp_port), packets,
        timestamped, zero_windows, isn, zip(*ttl, strict=True), map(Frames, syn_n.tolist()), (syn_n > 0).tolist(),
        (synack_n > 0).tolist(), resets, map(_rst_frames, resets), after,
    ))  # fmt: skip


def _rst_frames(resets: list[ObservedRst]) -> list[list[int]]:
    """``Connection.rst_frames``: the RSTs' frames by side."""
    if len(resets) == 1:  # most connections that saw a RST saw one
        return [[resets[0].frame], []] if resets[0].side == 0 else [[], [resets[0].frame]]
    return [[r.frame for r in resets if r.side == 0], [r.frame for r in resets if r.side == 1]]


_ttl_range = functools.lru_cache(maxsize=1 << 14)(TtlRange)
"""TtlRange (frozen) by its values, shared: connections repeat a few ranges, and making one costs ~1 µs."""


def _observed(rows: np.ndarray) -> list[ObservedRst]:
    _names, columns = _rst_columns(rows)  # in RstObservation's order, which is ObservedRst's
    return list(itertools.starmap(ObservedRst, zip(*columns, strict=True)))


def _per_connection(conn_rows: np.ndarray, take, table: str, make) -> list[list]:
    """Each connection's rows of ``table`` made into objects by ``make`` (a list per connection)."""
    spans = conn_rows[table]
    objs = make(take(table, span_positions(spans))) if spans[:, 1].any() else []
    ends = np.cumsum(spans[:, 1]).tolist()
    return [objs[e - n : e] for e, n in zip(ends, spans[:, 1].tolist(), strict=True)]


def span_positions(spans: np.ndarray) -> np.ndarray:
    """Row positions of (start, count) spans, concatenated."""
    return runs(spans[:, 0], spans[:, 1])


def runs(first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``first[i], first[i] + 1, ... first[i] + count[i] - 1`` for each ``i``, concatenated (int64)."""
    first, count = np.asarray(first, dtype=np.int64), np.asarray(count, dtype=np.int64)
    return np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))


def connections(conn_rows: np.ndarray, take, overflow: dict[int, list[int]]) -> list[Connection]:
    """:data:`CONN_ROW` rows as connections; ``take(table, positions)`` reads rows of the tables
    ``"resets"``, ``"findings"``, ``"after"`` and ``"probes"``; ``overflow``: history letter codes past the
    row's 24."""
    per = {table: _per_connection(conn_rows, take, table, make)
           for table, make in (("resets", rst_observations), ("findings", _findings), ("after", _after),
                               ("probes", _probe_rings))}  # fmt: skip
    hist = conn_rows["history"].tobytes()
    # One list per connection of all its numbers (one tolist: a structured array's fields are slow to
    # convert one by one); addresses apart, unsigned.
    n = len(conn_rows)
    numbers = np.concatenate([conn_rows[name].reshape(n, -1).astype(np.int64) for name in _NUMBERS], axis=1)
    addrs = np.stack([conn_rows[k] for k in ("orig_hi", "orig_lo", "resp_hi", "resp_lo")], axis=1).tolist()
    out = []
    for i, row in enumerate(numbers.tolist()):
        (cid, oport, rport, version, inferred, first_frame, start_ns, tunnel, end_ns, last_frame, n_hist, hs_ack,
         s0, s1, p0, p1, isn0, isn1, syn_n, syn_f, syn_l, sa_n, sa_f, sa_l, saa_n, saa_f, saa_l, fin0, fin1,
         pay0, pay1, pn0, pn1, k0, k1, b0, b1, st0, st1, u0, u1, r0, r1, z0, z1, lo0, lo1, hi0, hi1, tn0, tn1,
         ts0, ts1) = row  # fmt: skip
        history = history_text(hist[24 * i : 24 * i + min(n_hist, 24)])
        if n_hist > 24:
            history += history_text(bytes(overflow[cid]))
        resets = per["resets"][i]
        ohi, olo, rhi, rlo = addrs[i]
        ring = per["probes"][i][0] if per["probes"][i] else None
        out.append(Connection(
            id=cid, orig_addr=_addr(ohi, olo), orig_port=oport, resp_addr=_addr(rhi, rlo), resp_port=rport,
            ip_version=version, originator_inferred=bool(inferred), first_frame=first_frame, start_ns=start_ns,
            tunnel_id=tunnel, end_ns=end_ns, last_frame=last_frame, history=list(history),
            state=[STATES[s0], STATES[s1]], prev_state=[STATES[p0], STATES[p1]], findings=per["findings"][i],
            isn=[None if isn0 < 0 else isn0, None if isn1 < 0 else isn1],
            syn_frames=Frames(syn_n, syn_f, syn_l) if syn_n else Frames(),
            synack_frames=Frames(sa_n, sa_f, sa_l) if sa_n else Frames(),
            synack_after_ack_frames=Frames(saa_n, saa_f, saa_l) if saa_n else Frames(),
            handshake_ack_frame=None if hs_ack < 0 else hs_ack,
            fin_frame=[None if fin0 < 0 else fin0, None if fin1 < 0 else fin1],
            rst_frames=[[r.frame for r in resets if r.side == 0], [r.frame for r in resets if r.side == 1]]
            if resets else [[], []],
            first_payload_frame=[None if pay0 < 0 else pay0, None if pay1 < 0 else pay1], resets=resets,
            after_reset=per["after"][i],
            keepalive_probes=[_ring(ring[0], pn0), _ring(ring[1], pn1)] if ring else [[], []],
            packets=(k0, k1), payload_bytes=(b0, b1), stream_bytes=(st0, st1),
            unacked_bytes=(None if u0 == NONE else u0, None if u1 == NONE else u1), retransmissions=(r0, r1),
            zero_windows=(z0, z1),
            ttl=(TtlRange(lo0, hi0, tn0) if tn0 else None, TtlRange(lo1, hi1, tn1) if tn1 else None),
            timestamped=(ts0, ts1),
        ))  # fmt: skip
    return out


_NUMBERS = (
    "id", "orig_port", "resp_port", "ip_version", "inferred", "first_frame", "start_ns", "tunnel_id", "end_ns",
    "last_frame", "history_len", "handshake_ack_frame", "state", "prev_state", "isn", "syn", "synack",
    "synack_after_ack", "fin_frame", "first_payload_frame", "probes_n", "packets", "payload_bytes", "stream_bytes",
    "unacked_bytes", "retransmissions", "zero_windows", "ttl_low", "ttl_high", "ttl_n", "timestamped",
)  # fmt: skip
"""The numbers of a connection row, in the order :func:`connections` unpacks them."""


def _ring(ring: list, n: int) -> list[tuple[int, int]]:
    """A ring of RING entries written n times, oldest first."""
    if n <= RING:
        return [tuple(x) for x in ring[:n]]
    at = n % RING
    return [tuple(x) for x in ring[at:] + ring[:at]]


def _probe_rings(rows: np.ndarray) -> list[list]:
    """:data:`PROBE_ROW` rows as their rings (per side, RING (frame, ts) pairs)."""
    return rows["ring"].tolist()


def _findings(rows: np.ndarray) -> list[Finding]:
    out = []
    for frame, s, e, o in zip(*(rows[k].tolist() for k in ("frame", "side", "event", "old")), strict=True):
        side, event, old = Side(s), EVENTS[e], STATES[o]
        out.append(Finding(kind=finding_kind(e, o), frame=frame, side=side,
                           detail=f"{side.role} sent {event.value} while {old.value}"))  # fmt: skip
    return out


@functools.cache
def finding_kind(event: int, old: int) -> str:
    """The kind of a :data:`FINDING_ROW`'s finding, from its ``event`` and ``old`` codes."""
    return f"state.{EVENTS[event].value}_after_{STATES[old].value}"


def histories(conn_rows: np.ndarray, overflow: dict[int, list[int]]) -> list[str]:
    """The history text of each :data:`CONN_ROW` row (``overflow``: letter codes past the row's 24, by id),
    decoded in one pass."""
    # Letters as code points, NUL past each history's length: numpy's fixed-width strings drop trailing NULs.
    letters = _CODE_POINTS[conn_rows["history"].view(np.uint8)]
    letters[np.arange(24) >= conn_rows["history_len"][:, None]] = 0
    out = letters.view("<U24").reshape(-1).tolist()
    for i in np.flatnonzero(conn_rows["history_len"] > 24).tolist():
        out[i] += history_text(bytes(overflow[int(conn_rows["id"][i])]))
    return out


def _after(rows: np.ndarray) -> list[SegmentAfterReset]:
    names = ("frame", "ts_ns", "side", "flags", "seq", "ack", "payload", "ttl", "ip_id")
    return [
        SegmentAfterReset(frame, ts, Side(s), flags, seq, _opt(ack, NONE), plen, ttl, ip_id)
        for frame, ts, s, flags, seq, ack, plen, ttl, ip_id in zip(*(rows[k].tolist() for k in names), strict=True)
    ]
