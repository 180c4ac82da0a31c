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
from collections.abc import Callable, Iterator

import numpy as np
import orjson

from rstscope import reset_table, zeek
from rstscope.connections import Connection, Side
from rstscope.connections.records import phase_of
from rstscope.connections.retire import RowBatch
from rstscope.connections.rows import PHASES, STATES, finding_kind
from rstscope.connections.sequence import ffi, lib
from rstscope.fleet import frames as fleet_frames
from rstscope.grouped import NONE
from rstscope.packets import format_addr
from rstscope.reset_table import ResetTable

CONN_STATES = list(zeek.ConnState)
_FLAGS = [(saw_syn, saw_synack) for saw_syn in (False, True) for saw_synack in (False, True)]


def _phase_table() -> np.ndarray:
    """Phases (index into ``rows.PHASES``) by [orig state, resp state, saw SYN, saw SYN-ACK] (codes of
    ``rows.STATES``)."""
    table = np.empty((len(STATES), len(STATES), 2, 2), dtype=np.int64)
    for (o, orig), (r, resp), (syn, synack) in itertools.product(enumerate(STATES), enumerate(STATES), _FLAGS):
        table[o, r, int(syn), int(synack)] = PHASES.index(phase_of(orig, resp, syn, synack))
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


_PHASE_TEXT = [orjson.dumps(p.value) for p in PHASES]
_PHASE_CODES = _phase_table()
_CONN_STATE, _CONN_STATE_BY_HISTORY = _conn_state_table()
_CONN_STATE_TEXT = [orjson.dumps(s.value) for s in CONN_STATES]


# --------------------------------------------------------------------------- listen queue


class ListenQueueColumns:
    """``analysis.listen_queue_evidence`` over row batches: the same dict, value for value.  Batches may come
    in any order (the tracker's, as connections retire: ``Tracker(on_retired=...)``); each in id order."""

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
            elif ids[first[s]] < self.first_attempt[name]:  # a batch of earlier connections, retired later
                self.first_attempt[name] = int(ids[first[s]])
            for field, column in counts.items():
                server[field] += column[s]

    def result(self) -> dict:
        """Connections by id, servers in order of their first connection with a SYN (as batches in id order
        would have added them)."""
        first = self.first_attempt
        return {
            **{kind: {"count": len(ids), "connections": sorted(ids)} for kind, ids in self._ids.items()},
            "servers": {name: self._per_server[name] for name in sorted(self._per_server, key=first.__getitem__)},
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
    for block, ends in connection_row_blocks(store, resets, capture_index, capture, tally, separator=b""):
        view, begin = memoryview(block), 0
        for end in ends.tolist():
            yield bytes(view[begin:end])
            begin = end


def connection_row_blocks(
    store,
    resets: ResetTable,
    capture_index: int = 0,
    capture=None,
    tally: ListenQueueColumns | None = None,
    separator: bytes = b",\n  ",
) -> Iterator[tuple[bytearray, np.ndarray]]:
    """:func:`connection_rows`, a batch at a time: the batch's rows joined by ``separator``, and where each
    row ends in that block.  Each value is encoded by orjson a column at a time and the rows are joined
    in one compiled pass (``join_loop.c``): no Python per row but for connections with RSTs or findings,
    and the file fields of a stitched capture."""
    stitched = capture if capture is not None and getattr(capture, "pieces", None) else None
    names = _AddressNames()
    for batch in store.row_batches():
        if tally is not None:
            tally.add(batch)
        histories = batch.histories()
        for lo in range(0, len(batch.rows), ROWS_PER_BLOCK):
            part = _Part(batch, histories, lo, lo + ROWS_PER_BLOCK)
            yield _encoded_batch(part, resets, capture_index, stitched, names, separator)


ROWS_PER_BLOCK = 2048
"""Rows encoded together: fewer, the more numpy calls per row; more, the larger the block in memory (about
1 kB a row)."""


class _Part:
    """Rows [lo, hi) of a row batch, read as the batch is (``rows``, ``histories()``, ``table()``)."""

    __slots__ = ("_batch", "_histories", "_lo", "rows")

    def __init__(self, batch: RowBatch, histories: list[str], lo: int, hi: int) -> None:
        self._batch, self._lo, self.rows, self._histories = batch, lo, batch.rows[lo:hi], histories[lo:hi]

    def histories(self) -> list[str]:
        return self._histories

    def table(self, name: str, which: np.ndarray) -> np.ndarray:
        return self._batch.table(name, which + self._lo)


class _Pieces:
    """One column of a batch's rows as encoded JSON: row ``i``'s value is ``length[k]`` bytes of ``data`` from
    ``start[k]``, ``k = offset + i * stride`` (the columns of one matrix share its arrays)."""

    __slots__ = ("data", "length", "offset", "start", "stride")

    def __init__(self, data: bytes, start: np.ndarray, length: np.ndarray, stride: int = 1, offset: int = 0) -> None:
        self.data, self.start, self.length, self.stride, self.offset = data, start, length, stride, offset

    def column(self, j: int) -> _Pieces:
        """Column ``j`` of a matrix's pieces (``start`` and ``length`` of shape (rows, columns))."""
        return _Pieces(self.data, self.start, self.length, self.start.shape[1], j)

    def total(self) -> int:
        """Bytes of all the column's values."""
        return int(self.length.reshape(-1)[self.offset :: self.stride].sum())


_NUMBER = orjson.OPT_SERIALIZE_NUMPY


def _numbers(matrix: np.ndarray) -> _Pieces:
    """Every number of a (rows, columns) int64 or float64 matrix, or of a flat array, as orjson writes it (a
    Python int or float alike), from one ``orjson.dumps`` of it: its values are the runs between ``,[]``."""
    data = orjson.dumps(np.ascontiguousarray(matrix), option=_NUMBER)
    start, length = np.empty(matrix.shape, dtype=np.int64), np.empty(matrix.shape, dtype=np.int64)
    spans = (ffi.from_buffer("int64_t[]", a) for a in (start, length))
    if lib.value_spans(data, len(data), matrix.size, *spans) != matrix.size:
        raise ValueError("not a matrix of numbers")
    return _Pieces(data, start, length)


def _nulls(matrix: _Pieces, j: int, rows: np.ndarray) -> None:
    """Make these rows' values of column ``j`` of a matrix's pieces ``null``."""
    if len(rows):
        matrix.start[rows, j], matrix.length[rows, j] = len(matrix.data), 4
        matrix.data += b"null"


def _codes(codes: np.ndarray, vocabulary: list[bytes]) -> _Pieces:
    """A column whose values are ``vocabulary[code]``."""
    lengths = np.array([len(v) for v in vocabulary], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    return _Pieces(b"".join(vocabulary), starts[codes], lengths[codes])


def _strings(values: list[str]) -> _Pieces:
    """A column of JSON strings, from one ``orjson.dumps`` of the list when no value needs escaping or is
    outside ASCII (then each encoded text is the value and its quotes), else one dumps per value."""
    data = orjson.dumps(values)
    lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values)) + 2
    if len(data) == 1 + int(lengths.sum()) + len(values):  # "[", each value and "," (or "]")
        return _Pieces(data, np.cumsum(lengths + 1) - lengths, lengths)
    return _joined([orjson.dumps(v) for v in values])


def _joined(pieces: list[bytes]) -> _Pieces:
    lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
    return _Pieces(b"".join(pieces), np.cumsum(lengths) - lengths, lengths)


def _overridden(default: bytes, n: int, rows: np.ndarray | list[int], pieces: _Pieces | None) -> _Pieces:
    """A column of ``default`` but at ``rows``, whose values are ``pieces`` (a column of those rows)."""
    start, length = np.zeros(n, dtype=np.int64), np.full(n, len(default), dtype=np.int64)
    if pieces is None:
        return _Pieces(default, start, length)
    start[rows] = len(default) + pieces.start.reshape(-1)[pieces.offset :: pieces.stride]
    length[rows] = pieces.length.reshape(-1)[pieces.offset :: pieces.stride]
    return _Pieces(default + pieces.data, start, length)


_INTS = ("id", "orig_port", "resp_port", "ip_version", "tunnel_id", "first_frame", "last_frame",
         "syn_retransmissions", "synack_retransmissions", "synack_after_ack")  # fmt: skip
"""Integer values of a row, in the columns of the batch's integer matrix; then the per-side ones."""
_SIDES = ("packets", "payload_bytes", "stream_bytes", "unacked_bytes", "retransmissions")
_VERDICT_TEXT = [orjson.dumps(v.value) for v in reset_table.VERDICTS]


def _encoded_batch(batch: _Part, resets: ResetTable, capture_index: int, stitched, names, separator: bytes):
    """A batch's rows, encoded and joined (:func:`_join`): the template of ``document.connection_row``'s
    fields, in its order, with a column of encoded values in each place a value goes."""
    rows = batch.rows
    n = len(rows)
    ints = np.empty((n, len(_INTS) + 2 * len(_SIDES)), dtype=np.int64)
    for j, name in enumerate(_INTS[:7]):
        ints[:, j] = rows[name]
    syns, synacks = rows["syn"][:, 0], rows["synack"][:, 0]
    ints[:, 7], ints[:, 8] = np.maximum(syns - 1, 0), np.maximum(synacks - 1, 0)
    ints[:, 9] = rows["synack_after_ack"][:, 0]
    ints[:, len(_INTS) :] = np.stack([rows[name] for name in _SIDES], axis=1).reshape(n, -1)
    number = _numbers(ints)
    for side in (0, 1):  # unknown unacked bytes are null
        j = len(_INTS) + 2 * _SIDES.index("unacked_bytes") + side
        _nulls(number, j, np.flatnonzero(ints[:, j] == NONE))
    col = {name: number.column(j) for j, name in enumerate(_INTS)}
    for k, name in enumerate(_SIDES):
        col[name] = (number.column(len(_INTS) + 2 * k), number.column(len(_INTS) + 2 * k + 1))
    start, end = rows["start_ns"], rows["end_ns"]
    times = _numbers(np.stack([start / 1e9, end / 1e9, (end - start) / 1e9], axis=1))
    version = col["ip_version"]
    o_plain, o_named, r_plain, r_named = (*names.of(rows["orig_hi"], rows["orig_lo"]),
                                          *names.of(rows["resp_hi"], rows["resp_lo"]))  # fmt: skip
    histories = batch.histories()
    state = rows["state"]
    phases = _PHASE_CODES[state[:, 0], state[:, 1], (syns > 0).astype(np.int64), (synacks > 0).astype(np.int64)]
    outcome = _outcomes(resets, rows["id"])
    finding_rows, finding_pieces = _findings(batch)
    parts = [
        b'{"capture":%d,"id":' % capture_index, col["id"],
        b',"client":"', o_named, b":", col["orig_port"], b'","server":"', r_named, b":", col["resp_port"],
        b'","originator_inferred":', _codes((rows["inferred"] != 0).astype(np.int64), [b"false", b"true"]),
        b',"ip_version":', version, b',"tunnel_id":', col["tunnel_id"],
        b',"start":', times.column(0), b',"end":', times.column(1), b',"duration":', times.column(2),
        b',"first_frame":', col["first_frame"], b',"last_frame":', col["last_frame"],
    ]  # fmt: skip
    for k, name in enumerate(_SIDES):
        parts += [b'},"%s":{"client":' % name.encode() if k else b',"%s":{"client":' % name.encode(),
                  col[name][0], b',"server":', col[name][1]]  # fmt: skip
    ip = _codes((rows["ip_version"] == 6).astype(np.int64), [b"ip", b"ipv6"])
    parts += [
        b'},"history":', _strings(histories),
        b',"conn_state":', _codes(_conn_state_codes(batch, histories), _CONN_STATE_TEXT),
        b',"phase":', _codes(phases, _PHASE_TEXT),
        b',"syn_retransmissions":', col["syn_retransmissions"],
        b',"synack_retransmissions":', col["synack_retransmissions"],
        b',"synack_after_ack":', col["synack_after_ack"],
        b',"resets":[', outcome["frames"], b'],"verdict":', outcome["verdict"],
        b',"in_flight_at_reset":', outcome["in_flight"], b',"lost_data":', outcome["lost"],
        b',"findings":', _overridden(b"[]", n, finding_rows, _joined(finding_pieces) if finding_rows else None),
        b',"wireshark_filter":"', ip, b".addr == ", o_plain, b" && tcp.port == ", col["orig_port"], b" && ", ip,
        b".addr == ", r_plain, b" && tcp.port == ", col["resp_port"], b" && frame.number >= ", col["first_frame"],
        b" && frame.number <= ", col["last_frame"], b'"',
    ]  # fmt: skip
    if stitched is not None:
        parts += _file_fields(stitched, rows["first_frame"], rows["last_frame"])
    parts.append(b"}")
    return _join(parts, n, separator)


def _file_fields(capture, first: np.ndarray, last: np.ndarray) -> list:
    """The fields ``fleet.frames`` adds to a stitched capture's connection rows, as columns."""
    names = [orjson.dumps(fleet_frames.text(span.path)) for span in capture.pieces]
    pairs = fleet_frames.connection_file_columns(capture, first, last)
    frames = _numbers(np.stack([in_file for *_, in_file in pairs], axis=1))
    parts = []
    for j, (file_field, frame_field, piece, _) in enumerate(pairs):
        parts += [b',"%s":' % file_field.encode(), _codes(piece, names), b',"%s":' % frame_field.encode(),
                  frames.column(j)]  # fmt: skip
    return parts


def join_rows(data: bytes, start: np.ndarray, length: np.ndarray, separator: bytes, *, head: bytes = b"") -> bytearray:
    """Rows that are slices of ``data`` (row ``i``: ``length[i]`` bytes from ``start[i]``), each after
    ``head``, joined by ``separator`` in one compiled pass."""
    return _join([head, _Pieces(data, start, length)], len(start), separator)[0]


def delimited_lines(data: bytes, start: np.ndarray, length: np.ndarray, names: tuple[str, ...],
                    decoded: Callable[[dict], str], *, csv: bool = False, prefix: bytes = b"") -> bytes:  # fmt: skip
    """Lines of the fields ``names`` of encoded rows (row ``i``: ``length[i]`` bytes of ``data`` from
    ``start[i]``), each ``prefix`` then the fields: tab-separated, each as ``str`` of its value prints it,
    None as nothing; or with ``csv``, as Python's csv writer writes them (a missing field as None).  Copied
    in one compiled pass (``delimited_rows``, join_loop.c) where the row holds a field as it would print;
    where not (a string with escapes, say), the row is decoded and ``decoded(row)`` is its line, the one
    the copies stand for.  The text table and the CSV print tens of thousands of RSTs."""
    keys = [name.encode() for name in names]
    key_end = np.cumsum([len(k) for k in keys], dtype=np.int64)
    start, length = np.ascontiguousarray(start, np.int64), np.ascontiguousarray(length, np.int64)
    n, lines, at = len(start), [], 0
    source, joined_keys = ffi.from_buffer("uint8_t[]", data), b"".join(keys)
    # A line: at most its row's bytes, the prefix, separators, quotes and a newline.
    out = bytearray(int(length.sum()) + n * (len(prefix) + 3 * len(names) + 1))
    ends = np.empty(n, dtype=np.int64)
    key_ends, out_at = ffi.from_buffer("int64_t[]", key_end), ffi.from_buffer("uint8_t[]", out)
    ends_at = ffi.from_buffer("int64_t[]", ends)
    separator = ord(",") if csv else ord("\t")
    while at < n:
        done = lib.delimited_rows(n - at, source, ffi.from_buffer("int64_t[]", start[at:]),
                                  ffi.from_buffer("int64_t[]", length[at:]), len(keys), joined_keys, key_ends,
                                  separator, int(csv), prefix, len(prefix), out_at, ends_at)  # fmt: skip
        if done:
            lines.append(bytes(out[: ends[done - 1]]))
        at += done
        if at < n:  # this row does not print as it is written: decoded
            lines.append(decoded(orjson.loads(data[start[at] : start[at] + length[at]])).encode())
            at += 1
    return b"".join(lines)


def _join(parts: list, n: int, separator: bytes) -> tuple[bytearray, np.ndarray]:
    """The ``n`` rows of ``parts`` (literal bytes and :class:`_Pieces` columns, in row order), joined by
    ``separator``; and each row's end."""
    literals, pieces = [b""], []
    for part in parts:
        if isinstance(part, bytes):
            literals[-1] += part
        else:
            pieces.append(part)
            literals.append(b"")
    total = n * sum(map(len, literals)) + (n - 1) * len(separator) + sum(p.total() for p in pieces)
    columns = ffi.new("struct piece_column[]", len(pieces))
    keep = []  # what the structs point into, alive until the call returns
    for c, p in zip(columns, pieces, strict=True):
        data = ffi.from_buffer(p.data)
        start, length = (ffi.from_buffer("int64_t[]", np.ascontiguousarray(a, np.int64)) for a in (p.start, p.length))
        keep += [data, start, length]
        c.data, c.start, c.length, c.stride = data, start + p.offset, length + p.offset, p.stride
    literal_end = np.cumsum([len(x) for x in literals], dtype=np.int64)
    out, ends = bytearray(total), np.empty(n, dtype=np.int64)
    ends_out = ffi.from_buffer("int64_t[]", ends)
    written = lib.join_pieces(n, len(pieces), columns, b"".join(literals), ffi.from_buffer("int64_t[]", literal_end),
                              separator, len(separator), ffi.from_buffer(out), ends_out)  # fmt: skip
    assert written == total
    return out, ends


class _AddressNames:
    """Text form of addresses, each distinct one of a batch formatted once (and kept while there are not
    too many: a capture has few servers, and clients come back)."""

    KEPT = 1 << 16

    def __init__(self) -> None:
        self._names: dict[tuple[int, int], str] = {}

    def of(self, hi: np.ndarray, lo: np.ndarray) -> tuple[_Pieces, _Pieces]:
        """The addresses as a column of their text, and of their text in a host:port (IPv6 in brackets)."""
        if len(self._names) > self.KEPT:
            self._names.clear()
        first, inverse = _groups(hi, lo)
        names = []
        for key in zip(hi[first].tolist(), lo[first].tolist(), strict=True):
            name = self._names.get(key)
            names.append(name if name is not None else self._names.setdefault(key, format_addr(*key)))
        plain = [name.encode() for name in names]
        return _codes(inverse, plain), _codes(inverse, [b"[%s]" % a if b":" in a else a for a in plain])


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


def _outcomes(resets: ResetTable, ids: np.ndarray) -> dict[str, _Pieces]:
    """The columns of a connection's RST outcome (``ConnectionOutcome``) for the rows of ``ids`` (increasing;
    consecutive but in a fleet shard): its RST frames (without brackets), verdict, in flight and lost data."""
    n = len(ids)
    found = resets.outcome_columns(int(ids[0]), int(ids[-1]) + 1)
    if found is None:
        return {"frames": _overridden(b"", n, [], None), "verdict": _overridden(b"null", n, [], None),
                "in_flight": _overridden(b"null", n, [], None), "lost": _overridden(b"false", n, [], None)}  # fmt: skip
    rows = np.searchsorted(ids, found.ids)
    frames = _numbers(np.asarray(found.frames, dtype=np.int64))  # a flat list: values apart by "," only
    first, last = found.bounds[:-1], found.bounds[1:] - 1  # each connection's RST frames: one run of the list
    frame_start = frames.start[first]
    frame_runs = _Pieces(frames.data, frame_start, frames.start[last] + frames.length[last] - frame_start)
    verdict_codes = np.full(n, len(_VERDICT_TEXT), dtype=np.int64)
    verdict_codes[rows] = found.codes
    in_flight = _numbers(np.ascontiguousarray(found.in_flight, dtype=np.int64).reshape(-1, 1))
    _nulls(in_flight, 0, np.flatnonzero(found.in_flight == reset_table.NO_VALUE))
    lost = np.zeros(n, dtype=np.int64)
    lost[rows] = found.lost
    return {"frames": _overridden(b"", n, rows, frame_runs),
            "verdict": _codes(verdict_codes, [*_VERDICT_TEXT, b"null"]),
            "in_flight": _overridden(b"null", n, rows, in_flight),
            "lost": _codes(lost, [b"false", b"true"])}  # fmt: skip


def _conn_state_codes(batch: _Part, histories: list[str]) -> np.ndarray:
    """``zeek.conn_state(conn)`` of each connection (index into CONN_STATES): a table lookup, and the
    decision list itself for the few whose history decides (an originator's RST with a silent responder)."""
    rows = batch.rows
    orig, resp = rows["state"][:, 0], rows["state"][:, 1]
    no_payload = ((rows["stream_bytes"][:, 0] == 0) & (rows["stream_bytes"][:, 1] == 0)).astype(np.int64)
    codes = _CONN_STATE[orig, resp, no_payload]
    for i in np.flatnonzero(_CONN_STATE_BY_HISTORY[orig, resp, no_payload]).tolist():
        state = zeek.conn_state(_stub(STATES[orig[i]], STATES[resp[i]], bool(no_payload[i]), histories[i]))
        codes[i] = CONN_STATES.index(state)
    return codes


def _findings(batch: _Part) -> tuple[list[int], list[bytes]]:
    """The rows of connections with findings, and each one's finding kinds (``Connection.findings``),
    encoded."""
    counts = batch.rows["findings"][:, 1]
    which = np.flatnonzero(counts)
    if not len(which):
        return [], []
    found = batch.table("findings", which)
    kinds = [finding_kind(e, o) for e, o in zip(found["event"].tolist(), found["old"].tolist(), strict=True)]
    ends = np.cumsum(counts[which]).tolist()
    dumps = orjson.dumps
    return which.tolist(), [dumps(kinds[e - c : e]) for e, c in zip(ends, counts[which].tolist(), strict=True)]
