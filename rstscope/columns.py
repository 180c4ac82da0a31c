"""The document's connection rows and the listen-queue counts, from connection rows in batches.

``rstscope analyze --json`` writes a row per connection, and the listen-queue evidence counts over
every connection: on a capture of short connections, making a :class:`~rstscope.connections.Connection`
per connection from the tracker's rows cost more than all of tracking (PLAN §10: 25-90 µs each).
Both read the store's rows instead (``ConnectionStore.row_batches``: :data:`CONN_ROW` arrays in id
order): numpy over the columns, one ``tolist`` per column, then one dict per row for orjson.  The
values are those of ``document.connection_row`` and ``analysis.ListenQueueTally`` on the objects, field
for field and type for type (tests/test_columns.py compares them).

Stores without ``row_batches`` (a fleet's merged shards) are read as objects by the callers.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import orjson

from rstscope import zeek
from rstscope.connections import Connection, Side
from rstscope.connections.records import phase_of
from rstscope.connections.retire import RowBatch
from rstscope.connections.rows import STATES, finding_kind
from rstscope.fleet import frames as fleet_frames
from rstscope.grouped import NONE
from rstscope.packets import format_addr
from rstscope.reset_table import ResetTable

CONN_STATES = list(zeek.ConnState)
_FLAGS = [(saw_syn, saw_synack) for saw_syn in (False, True) for saw_synack in (False, True)]


def _phase_table() -> np.ndarray:
    """Phase names by [orig state, resp state, saw SYN, saw SYN-ACK] (codes of ``rows.STATES``)."""
    table = np.empty((len(STATES), len(STATES), 2, 2), dtype=object)
    for (o, orig), (r, resp), (syn, synack) in itertools.product(enumerate(STATES), enumerate(STATES), _FLAGS):
        table[o, r, int(syn), int(synack)] = phase_of(orig, resp, syn, synack).value
    return table


def _stub(orig, resp, no_payload: bool, history: str) -> Connection:
    """A connection with only what ``zeek.conn_state`` reads."""
    return Connection(id=0, orig_addr="", orig_port=0, resp_addr="", resp_port=0, ip_version=4,
                      originator_inferred=False, first_frame=0, start_ns=0, state=[orig, resp],
                      stream_bytes=(0, 0) if no_payload else (1, 0), history=list(history))  # fmt: skip


def _conn_state_table() -> tuple[np.ndarray, np.ndarray]:
    """``zeek.conn_state`` codes (index into CONN_STATES) by [orig state, resp state, no payload], and
    whether the history may change it there (then it is decided per connection by ``zeek.conn_state``)."""
    table = np.empty((len(STATES), len(STATES), 2), dtype=np.int64)
    by_history = np.zeros_like(table, dtype=bool)
    for (o, orig), (r, resp), no_payload in itertools.product(enumerate(STATES), enumerate(STATES), (0, 1)):
        states = {zeek.conn_state(_stub(orig, resp, bool(no_payload), h)) for h in ("", "SR", "^SR", "SHR")}
        table[o, r, no_payload] = CONN_STATES.index(zeek.conn_state(_stub(orig, resp, bool(no_payload), "")))
        by_history[o, r, no_payload] = len(states) > 1
    return table, by_history


_PHASES = _phase_table()
_CONN_STATE, _CONN_STATE_BY_HISTORY = _conn_state_table()
_CONN_STATE_NAMES = np.array([s.value for s in CONN_STATES], dtype=object)


# --------------------------------------------------------------------------- listen queue


class ListenQueueColumns:
    """``analysis.listen_queue_evidence`` over row batches: the same dict, value for value."""

    def __init__(self) -> None:
        self._ids: dict[str, list[int]] = {k: [] for k in _KINDS}
        self._per_server: dict[str, dict[str, int]] = {}
        self.first_attempt: dict[str, int] = {}
        """Per server, the id of its first connection with a SYN (a fleet shard orders servers by it)."""

    def add(self, batch: RowBatch) -> None:
        rows = batch.rows
        syns = rows["syn"][:, 0]
        attempts = np.flatnonzero(syns > 0)
        if not len(attempts):
            return
        synacks = rows["synack"][attempts, 0]
        flags = {
            "syn_retransmitted": syns[attempts] > 1,
            "synack_retransmitted": synacks > 1,
            "synack_after_ack": rows["synack_after_ack"][attempts, 0] > 0,
            "unanswered": synacks == 0,
        }
        # Unanswered: no SYN-ACK and no RST from the responder (a refused SYN was answered): read the
        # RST rows of the few attempts without a SYN-ACK that saw any RST.
        maybe = np.flatnonzero(flags["unanswered"] & (rows["resets"][attempts, 1] > 0))
        if len(maybe):
            counts = rows["resets"][attempts[maybe], 1]
            sides = batch.table("resets", attempts[maybe])["side"]
            answered = np.zeros(len(maybe), dtype=bool)
            answered[np.repeat(np.arange(len(maybe)), counts)[sides == Side.RESP]] = True
            flags["unanswered"][maybe[answered]] = False
        ids = rows["id"][attempts]
        for kind, flag in flags.items():
            self._ids[kind].extend(ids[flag].tolist())
        # Per server, in order of its first attempt (Python dicts keep insertion order).
        hi, lo, port = (rows[f"resp_{field}"][attempts] for field in ("hi", "lo", "port"))
        first, inverse = _groups(hi, lo, port)
        n = len(first)
        counts = {"attempts": np.bincount(inverse, minlength=n).tolist()}
        for kind, flag in flags.items():
            counts[kind] = np.bincount(inverse[flag], minlength=n).tolist()
        per_server = self._per_server
        for s, (h, low, p) in enumerate(zip(hi[first].tolist(), lo[first].tolist(), port[first].tolist(), strict=True)):
            addr = format_addr(h, low)
            name = f"[{addr}]:{p}" if ":" in addr else f"{addr}:{p}"
            server = per_server.get(name)
            if server is None:
                server = per_server[name] = dict.fromkeys(("attempts", *_KINDS), 0)
                self.first_attempt[name] = int(ids[first[s]])
            for field, column in counts.items():
                server[field] += column[s]

    def result(self) -> dict:
        return {
            **{kind: {"count": len(ids), "connections": ids} for kind, ids in self._ids.items()},
            "servers": self._per_server,
        }


_KINDS = ("syn_retransmitted", "synack_retransmitted", "synack_after_ack", "unanswered")


def listen_queue(store) -> dict:
    """``analysis.listen_queue_evidence`` of a store with ``row_batches``."""
    tally = ListenQueueColumns()
    for batch in store.row_batches():
        tally.add(batch)
    return tally.result()


# --------------------------------------------------------------------------- connection rows


def connection_rows(
    store, resets: ResetTable, capture_index: int = 0, capture=None, tally: ListenQueueColumns | None = None
) -> Iterator[bytes]:
    """Every connection's document row, encoded (``orjson.dumps(document.connection_row(...))``), in id
    order, from ``store.row_batches()``; ``resets`` gives each connection's RST outcome, ``capture`` (its
    ``CaptureInfo``) the file fields of a stitched capture; ``tally`` also counts the listen queue."""
    stitched = capture is not None and getattr(capture, "pieces", None)
    dumps = orjson.dumps
    names = _AddressNames()
    for batch in store.row_batches():
        if tally is not None:
            tally.add(batch)
        rows = batch.rows
        if not len(rows):
            continue
        columns = [rows[name].tolist() for name in _NUMBERS]
        for name in _PAIRS:
            pair = rows[name]
            columns += [pair[:, 0].tolist(), pair[:, 1].tolist()]
        for side in (0, 1):
            unacked = rows["unacked_bytes"][:, side]
            values = unacked.tolist()
            for i in np.flatnonzero(unacked == NONE).tolist():
                values[i] = None
            columns.append(values)
        start, end = rows["start_ns"], rows["end_ns"]
        columns += [(start / 1e9).tolist(), (end / 1e9).tolist(), ((end - start) / 1e9).tolist()]
        columns.append((rows["inferred"] != 0).tolist())
        syns, synacks = rows["syn"][:, 0], rows["synack"][:, 0]
        columns += [np.maximum(syns - 1, 0).tolist(), np.maximum(synacks - 1, 0).tolist()]
        columns.append(rows["synack_after_ack"][:, 0].tolist())
        columns += [names.of(rows["orig_hi"], rows["orig_lo"]), names.of(rows["resp_hi"], rows["resp_lo"])]
        histories = batch.histories()
        columns += [histories, _conn_states(batch, histories)]
        state = rows["state"]
        columns.append(_PHASES[state[:, 0], state[:, 1], (syns > 0).astype(np.int64), (synacks > 0).astype(np.int64)]
                       .tolist())  # fmt: skip
        columns.append(_findings(batch))
        columns.append(_outcomes(resets, rows["id"]))
        for (cid, oport, rport, version, tunnel, first, last, k0, k1, b0, b1, s0, s1, r0, r1, u0, u1, start_s, end_s,
             duration, inferred, syn_retx, synack_retx, after_ack, oaddr, raddr, history, conn_state, phase,
             findings, outcome) in zip(*columns, strict=True):  # fmt: skip
            ip = "ipv6" if version == 6 else "ip"
            row = {
                "capture": capture_index,
                "id": cid,
                "client": f"[{oaddr}]:{oport}" if ":" in oaddr else f"{oaddr}:{oport}",
                "server": f"[{raddr}]:{rport}" if ":" in raddr else f"{raddr}:{rport}",
                "originator_inferred": inferred,
                "ip_version": version,
                "tunnel_id": tunnel,
                "start": start_s,
                "end": end_s,
                "duration": duration,
                "first_frame": first,
                "last_frame": last,
                "packets": {"client": k0, "server": k1},
                "payload_bytes": {"client": b0, "server": b1},
                "stream_bytes": {"client": s0, "server": s1},
                "unacked_bytes": {"client": u0, "server": u1},
                "retransmissions": {"client": r0, "server": r1},
                "history": history,
                "conn_state": conn_state,
                "phase": phase,
                "syn_retransmissions": syn_retx,
                "synack_retransmissions": synack_retx,
                "synack_after_ack": after_ack,
                "resets": outcome.frames if outcome else [],
                "verdict": outcome.verdict.value if outcome else None,
                "in_flight_at_reset": outcome.in_flight if outcome else None,
                "lost_data": outcome.lost_data if outcome else False,
                "findings": findings,
                "wireshark_filter": (
                    f"{ip}.addr == {oaddr} && tcp.port == {oport} && {ip}.addr == {raddr} && "
                    f"tcp.port == {rport} && frame.number >= {first} && frame.number <= {last}"
                ),
            }
            if stitched:
                fleet_frames.add_connection_fields(row, capture, first, last)
            yield dumps(row)


_NUMBERS = ("id", "orig_port", "resp_port", "ip_version", "tunnel_id", "first_frame", "last_frame")
"""Integer columns copied as they are."""
_PAIRS = ("packets", "payload_bytes", "stream_bytes", "retransmissions")
"""Per-side integer columns copied as they are."""


class _AddressNames:
    """Text form of addresses, each distinct one of a batch formatted once (and kept while there are not
    too many: a capture has few servers, and clients come back)."""

    KEPT = 1 << 16

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], str] = {}

    def of(self, hi: np.ndarray, lo: np.ndarray) -> list[str]:
        if len(self._names) > self.KEPT:
            self._names.clear()
        first, inverse = _groups(hi, lo)
        names = np.empty(len(first), dtype=object)
        for i, key in enumerate(zip(hi[first].tolist(), lo[first].tolist(), strict=True)):
            name = self._names.get(key)
            names[i] = name if name is not None else self._names.setdefault(key, format_addr(*key))
        return names[inverse].tolist()


def _groups(*keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows grouped by equal values of ``keys``: each group's first row (groups in the order of their
    first rows) and each row's group."""
    if not len(keys[0]):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.lexsort(keys[::-1])  # stable: a group's rows stay in row order
    new = np.zeros(len(order), dtype=bool)
    new[0] = True
    for key in keys:
        ordered = key[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    group = np.cumsum(new) - 1
    firsts = order[new]
    rank = np.empty(len(firsts), dtype=np.int64)  # groups renumbered by their first row
    rank[np.argsort(firsts, kind="stable")] = np.arange(len(firsts))
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = rank[group]
    return np.sort(firsts), inverse


def _outcomes(resets: ResetTable, ids: np.ndarray) -> list:
    """Per connection of ``ids`` (increasing; consecutive but in a fleet shard), its ``ConnectionOutcome``,
    None without RSTs."""
    out = [None] * len(ids)
    found = resets.outcomes(int(ids[0]), int(ids[-1]) + 1)
    if found:
        for at, outcome in zip(np.searchsorted(ids, list(found)).tolist(), found.values(), strict=True):
            out[at] = outcome
    return out


def _conn_states(batch: RowBatch, histories: list[str]) -> list[str]:
    """``zeek.conn_state(conn).value`` of each connection: a table lookup, and the decision list itself
    for the few whose history decides (an originator's RST with a silent responder)."""
    rows = batch.rows
    orig, resp = rows["state"][:, 0], rows["state"][:, 1]
    no_payload = ((rows["stream_bytes"][:, 0] == 0) & (rows["stream_bytes"][:, 1] == 0)).astype(np.int64)
    codes = _CONN_STATE[orig, resp, no_payload]
    for i in np.flatnonzero(_CONN_STATE_BY_HISTORY[orig, resp, no_payload]).tolist():
        state = zeek.conn_state(_stub(STATES[orig[i]], STATES[resp[i]], bool(no_payload[i]), histories[i]))
        codes[i] = CONN_STATES.index(state)
    return _CONN_STATE_NAMES[codes].tolist()


def _findings(batch: RowBatch) -> list[list[str]]:
    """Each connection's finding kinds (``Connection.findings``)."""
    counts = batch.rows["findings"][:, 1]
    none: list[str] = []  # shared: rows are only encoded
    out = [none] * len(counts)
    which = np.flatnonzero(counts)
    if len(which):
        found = batch.table("findings", which)
        kinds = [finding_kind(e, o) for e, o in zip(found["event"].tolist(), found["old"].tolist(), strict=True)]
        ends = np.cumsum(counts[which]).tolist()
        for i, e, c in zip(which.tolist(), ends, counts[which].tolist(), strict=True):
            out[i] = kinds[e - c : e]
    return out
