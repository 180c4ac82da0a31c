"""The JSON document of an analysis: stable field names, plain types.

Shape::

    {"schema": 1, "tool": "rstscope X.Y",
     "captures": [...], "summary": {...}, "undecoded": {...},
     "connections": [...], "resets": [...], "listen_queue": {...}}

Every reset has at least ``frame``, ``time``, ``src``, ``dst``, ``sender``,
``verdict``, ``primary``, ``in_flight`` and ``explanation``; field meanings are
the docstrings of :class:`rstscope.evidence.ResetEvidence`.  ``undecoded`` counts, by cause,
the packets that may have carried TCP but were not analysed, summed over the captures (each
capture row has its own); the causes are ``rstscope.reader.tunnels.UNDECODED_CAUSES``.  Several captures
analysed together keep their own connection ids; ``capture`` (an index into
``captures``) tells them apart.  A capture stitched from several files adds fields that say which
file holds each frame (:mod:`rstscope.fleet.frames`).
"""

from __future__ import annotations

import codecs
import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator

import numpy as np
import orjson

from rstscope import __version__, columns, output, reset_table, zeek
from rstscope.analysis import Analysis, ListenQueueTally, ResetRecord
from rstscope.connections import Connection
from rstscope.fleet import frames as fleet_frames
from rstscope.reset_table import ConnectionOutcome, reset_fields, seconds
from rstscope.verdicts import Verdict

SCHEMA_VERSION = 1


def reset_row(record: ResetRecord, capture_index: int = 0) -> dict:
    """A RST's row from its evidence and verdict (the rows of an analysis come from its ``resets``)."""
    return {"capture": capture_index, **reset_fields(record.evidence, record.decision)}


def connection_row(analysis: Analysis, conn: Connection, capture_index: int = 0) -> dict:
    row = _connection_row(conn, capture_index, analysis.resets.outcome_of(conn.id))
    fleet_frames.add_connection_fields(row, analysis.capture, conn.first_frame, conn.last_frame)
    return row


def _connection_row(conn: Connection, capture_index: int, outcome: ConnectionOutcome | None) -> dict:
    """``connection_row`` with the connection's RST outcome given: written for speed (one call per
    connection of the capture in ``--json``), the same values as the record's own properties give."""
    packets, payload, stream, unacked, retx = (conn.packets, conn.payload_bytes, conn.stream_bytes,
                                               conn.unacked_bytes, conn.retransmissions)  # fmt: skip
    start, end, first, last = conn.start_ns, conn.end_ns, conn.first_frame, conn.last_frame
    orig_addr, orig_port, resp_addr, resp_port = conn.orig_addr, conn.orig_port, conn.resp_addr, conn.resp_port
    ip = "ipv6" if conn.ip_version == 6 else "ip"
    syns, synacks = len(conn.syn_frames), len(conn.synack_frames)
    return {
        "capture": capture_index,
        "id": conn.id,
        "client": f"[{orig_addr}]:{orig_port}" if ":" in orig_addr else f"{orig_addr}:{orig_port}",
        "server": f"[{resp_addr}]:{resp_port}" if ":" in resp_addr else f"{resp_addr}:{resp_port}",
        "originator_inferred": conn.originator_inferred,
        "ip_version": conn.ip_version,
        "tunnel_id": conn.tunnel_id,
        "start": start / 1e9,  # seconds(start), inlined: see reset_table.seconds
        "end": end / 1e9,
        "duration": (end - start) / 1e9,
        "first_frame": first,
        "last_frame": last,
        "packets": {"client": packets[0], "server": packets[1]},
        "payload_bytes": {"client": payload[0], "server": payload[1]},
        "stream_bytes": {"client": stream[0], "server": stream[1]},
        "unacked_bytes": {"client": unacked[0], "server": unacked[1]},
        "retransmissions": {"client": retx[0], "server": retx[1]},
        "history": "".join(conn.history),
        "conn_state": zeek.conn_state(conn).value,
        "phase": conn.phase().value,
        "syn_retransmissions": syns - 1 if syns > 1 else 0,
        "synack_retransmissions": synacks - 1 if synacks > 1 else 0,
        "synack_after_ack": len(conn.synack_after_ack_frames),
        "resets": outcome.frames if outcome else [],
        "verdict": outcome.verdict.value if outcome else None,
        "in_flight_at_reset": outcome.in_flight if outcome else None,
        "lost_data": outcome.lost_data if outcome else False,
        "findings": [f.kind for f in conn.findings] if conn.findings else [],
        "wireshark_filter": (
            f"{ip}.addr == {orig_addr} && tcp.port == {orig_port} && {ip}.addr == {resp_addr} && "
            f"tcp.port == {resp_port} && frame.number >= {first} && frame.number <= {last}"
        ),
    }


def capture_row(analysis: Analysis, index: int = 0) -> dict:
    cap, st = analysis.capture, analysis.capture.stats
    row = {
        "index": index,
        "path": cap.path,  # the real name (plots reopen it); written to JSON through _text
        "format": cap.format,
        "compressed": cap.compressed,
        "link_types": cap.link_types,
        "records": st.records,
        "tcp_packets": st.tcp_packets,
        "non_ip": st.non_ip,
        "non_tcp": st.non_tcp,
        "ip_fragments": st.ip_fragments,
        "decode_errors": dict(st.decode_errors),
        "undecoded": dict(st.undecoded),
        "unsupported_link": {str(k): v for k, v in st.unsupported_link.items()},
        "warnings": [_text(w) for w in st.warnings],
    }
    fleet_frames.add_capture_fields(row, cap)
    return row


LOST_LISTED = 10
"""Connections that lost data listed in a summary document (``all_connections=False``): the terminal
summary prints these, largest in flight first, and only counts the rest."""


def for_json(doc: dict) -> dict:
    """The document as written to a JSON file: capture paths through :func:`_text` (in memory they keep the
    file's real name, which the plots reopen)."""
    return {**doc, "captures": [{**c, "path": _text(c["path"])} for c in doc["captures"]]}


def _text(text: str) -> str:
    """``text`` as valid Unicode: a file name's undecodable bytes (held as lone surrogates) become
    ``\\xNN`` escapes, which every JSON encoder writes alike.  In-memory documents keep the real name
    (the plots reopen the capture by it); only written JSON carries the escaped one."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def combine(analyses: list[Analysis], *, all_connections: bool = True) -> dict:
    """One document for several captures.

    ``all_connections=False`` lists only the :data:`LOST_LISTED` connections that lost the most data
    in flight (the summary still counts them all): what the terminal summary prints, without a row
    per connection of a huge capture."""
    doc = summary_document(analyses, all_connections=all_connections)
    doc["resets"] = list(doc["resets"])
    runs = [a.run for a in analyses if a.run is not None]
    if len(runs) == 1 and len(analyses) == 1:
        from rstscope.lab import groundtruth

        doc = groundtruth.join(doc, runs[0])
    return doc


def summary_document(analyses: list[Analysis], *, all_connections: bool = False) -> dict:
    """:func:`combine`'s document (without a lab run's ground truth) whose ``resets`` is a
    :class:`ResetRows`: read back from the analyses' spills as it is iterated, never all in memory."""
    if all_connections:
        connections = [connection_row(a, c, i) for i, a in enumerate(analyses) for c in a.connections]
    else:
        connections = [connection_row(analyses[i], analyses[i].connections[cid], i) for i, cid in _most_lost(analyses)]
    doc = _head(analyses, "all" if all_connections else f"lost data, at most {LOST_LISTED}, largest first")
    doc["connections"] = connections
    doc["resets"] = ResetRows(analyses)
    doc["listen_queue"] = _listen_queue(analyses)
    return doc


class ResetRows:
    """The RST rows of several analyses (capture by capture, each in frame order), decoded as they are
    iterated; the questions the terminal summary asks of all of them are answered from the columns."""

    def __init__(self, analyses: list[Analysis]) -> None:
        self._tables = [a.resets for a in analyses]

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables)

    def __iter__(self) -> Iterator[dict]:
        return self.without(())

    def without(self, verdicts: tuple[Verdict, ...]) -> Iterator[dict]:
        """The rows but those of these verdicts, which are not even read back."""
        loads = orjson.loads
        for i, table in enumerate(self._tables):
            head = b'{"capture":%d,' % i
            for raw in table.raw_rows(self._order(table, verdicts)):
                yield loads(head + raw[1:])

    def tsv(self, names: tuple[str, ...], verdicts: tuple[Verdict, ...], line: Callable[[dict], str]) -> Iterator[str]:
        """:meth:`without`'s rows as tab-separated lines of the fields ``names``, as ``line(row)`` of the
        decoded row gives them, a block of lines at a time, copied from the encoded rows where they print
        as they are written (:func:`rstscope.columns.delimited_lines`)."""
        for table in self._tables:
            for data, starts, lengths in table.raw_blocks(self._order(table, verdicts)):
                yield columns.delimited_lines(data, starts, lengths, names, line).decode()

    def csv(self, names: tuple[str, ...], line: Callable[[dict], str]) -> Iterator[str]:
        """Every row as a CSV line of the fields ``names`` (the first ``capture``), as ``line(row)`` of the
        decoded row gives it, a block of lines at a time, copied from the encoded rows where they print as
        they are written (:func:`rstscope.columns.delimited_lines`)."""
        assert names[0] == "capture"
        for i, table in enumerate(self._tables):

            def decoded(row: dict, i=i) -> str:
                return line({"capture": i, **row})

            for data, starts, lengths in table.raw_blocks():
                if b'"kernel":' in data:  # a lab run's rows: their kernel reason is nested, decoded
                    rows = zip(starts.tolist(), lengths.tolist(), strict=True)
                    yield "".join(decoded(orjson.loads(data[s : s + n])) for s, n in rows)
                else:
                    yield columns.delimited_lines(data, starts, lengths, names[1:], decoded, csv=True,
                                                  prefix=b"%d," % i).decode()  # fmt: skip

    @staticmethod
    def _order(table: reset_table.ResetTable, verdicts: tuple[Verdict, ...]) -> np.ndarray:
        """The table's column positions in frame order, but those of these verdicts."""
        order = table.order()
        if verdicts:
            order = order[~np.isin(table.verdict[order], [reset_table.VERDICTS.index(v) for v in verdicts])]
        return order

    def first_time(self) -> float:
        """The earliest RST's ``time`` (0.0 without RSTs)."""
        return min((seconds(t.first_ns) for t in self._tables if t.first_ns is not None), default=0.0)

    def count(self, verdict: Verdict) -> int:
        return sum(t.count(verdict) for t in self._tables)

    def fixes(self) -> set[tuple[str, str]]:
        """Each (verdict, fix) of the rows once."""
        return set().union(*(t.fixes for t in self._tables))

    def strongest(self, skip: tuple[Verdict, ...]) -> list[dict]:
        """Per verdict not in ``skip``, its RST with the most evidence (bytes in flight, then findings;
        the first of equals), verdicts in the order of their first RST: ``text._strongest``'s rule on
        the columns, reading only the rows it picks."""
        best: dict[int, tuple[tuple[int, int], int, int]] = {}
        skipped = [reset_table.VERDICTS.index(v) for v in skip]
        for i, table in enumerate(self._tables):
            order = table.order()
            verdicts = table.verdict[order]
            in_flight = np.maximum(table.in_flight[order], 0)
            findings = table.findings[order]
            codes, firsts = np.unique(verdicts, return_index=True)
            for code, _first in sorted(zip(codes.tolist(), firsts.tolist(), strict=True), key=lambda cf: cf[1]):
                if code in skipped:
                    continue
                rows = np.flatnonzero(verdicts == code)
                rows = rows[in_flight[rows] == in_flight[rows].max()]
                top = int(rows[np.argmax(findings[rows])])  # argmax: the first of equals
                key = (int(in_flight[top]), int(findings[top]))
                if code not in best or key > best[code][0]:
                    best[code] = (key, i, int(order[top]))
        picked = []
        for _key, i, position in best.values():
            picked.append(orjson.loads(b'{"capture":%d,' % i + self._tables[i].raw(position)[1:]))
        return picked


def _most_lost(analyses: list[Analysis]) -> list[tuple[int, int]]:
    """(capture index, connection id) of the LOST_LISTED connections with the most data in flight, in
    that order (ties: capture, then connection order)."""
    lost = []
    for i, a in enumerate(analyses):
        ids, in_flight = a.resets.losses()
        top = np.lexsort((ids, -np.maximum(in_flight, 0)))[:LOST_LISTED]  # the same key, within one capture
        lost.extend((-max(int(in_flight[p]), 0), i, int(ids[p])) for p in top.tolist())
    return [(i, cid) for _, i, cid in heapq.nsmallest(LOST_LISTED, lost)]


def _head(analyses: list[Analysis], listed: str) -> dict:
    """The document's keys before ``connections``, computed without any connection row."""
    captures = [capture_row(a, i) for i, a in enumerate(analyses)]
    undecoded: Counter = Counter()
    by_verdict: dict[str, int] = {}
    connections_reset = connections_lost = in_flight_lost = 0
    for a in analyses:
        undecoded.update(a.capture.stats.undecoded)
        for k, v in a.verdict_counts().items():
            by_verdict[k] = by_verdict.get(k, 0) + v
        connections_reset += a.resets.connections_reset()
        _ids, in_flight = a.resets.losses()
        connections_lost += len(in_flight)
        in_flight_lost += int(np.maximum(in_flight, 0).sum())
    summary = {
        "packets": sum(c["records"] for c in captures),
        "tcp_packets": sum(c["tcp_packets"] for c in captures),
        "connections": sum(len(a.connections) for a in analyses),
        "resets": sum(len(a.resets) for a in analyses),
        "by_verdict": by_verdict,
        "connections_reset": connections_reset,
        "connections_lost_data": connections_lost,
        "bytes_in_flight_at_loss": in_flight_lost,
    }
    return {
        "schema": SCHEMA_VERSION,
        "connections_listed": listed,
        "tool": f"rstscope {__version__}",
        "captures": captures,
        "summary": summary,
        "undecoded": dict(undecoded.most_common()),
    }


def _listen_queue(analyses: list[Analysis]) -> dict:
    listen = {"syn_retransmitted": 0, "synack_retransmitted": 0, "synack_after_ack": 0, "unanswered": 0}
    for a in analyses:
        for key in listen:
            listen[key] += a.listen_queue[key]["count"]
    return {**listen, "per_capture": [{"capture": i, **a.listen_queue} for i, a in enumerate(analyses)]}


_ROWS_PER_WRITE = 512
"""Rows encoded one by one (RST rows, a fleet's) joined before one write to the stream: fewer, larger
writes."""


def write_json(analyses: list[Analysis], stream) -> None:
    """The document of ``combine(analyses)``, written as it is produced: a batch of connection rows
    (encoded a column at a time: :func:`rstscope.columns.connection_row_blocks`) or of RST rows at a time,
    so that a capture with millions of connections or RSTs never has their rows in memory at once.  Each
    connection is read once (retired ones from the tracker's spill file), and the listen-queue counts are
    tallied on the way; RST rows are copied as encoded by :mod:`rstscope.reset_table`.  The same values
    as ``json.dump(combine(analyses), ...)`` (tests/test_document.py); the layout differs: one row per
    line.  Lab runs are not streamed: :func:`combine` joins their ground truth per connection."""
    doc = for_json(_head(analyses, "all"))
    stream.write("{\n")
    for key, value in doc.items():
        indent = orjson.OPT_INDENT_2 if isinstance(value, (dict, list)) else 0
        stream.write(f' "{key}": {_encode(value, indent).replace(chr(10), chr(10) + " ")},\n')
    _write_rows(stream, "connections", _encoded_connection_rows(analyses))
    stream.write(",\n")
    _write_rows(stream, "resets", _encoded_reset_rows(analyses))
    stream.write(f',\n "listen_queue": {_encode(_listen_queue(analyses))}\n}}\n')


def _encoded_connection_rows(analyses: list[Analysis]) -> Iterator[bytes | bytearray]:
    """Every connection's row, encoded, in blocks of rows joined by :data:`_ROW_SEPARATOR`, reading each
    connection once; an analysis whose listen-queue counts are not known yet gets them from the same pass.
    A store that encoded its rows itself (``encoded_row_blocks``: rstscope.fleet's, in its worker
    processes, with the listen-queue counts, known once streamed rows are read) gives them as they are;
    the tracker's store gives its rows in batches (:mod:`rstscope.columns`, encoded a column at a time);
    other stores give connection objects."""
    for i, a in enumerate(analyses):
        store = a.connections
        own = getattr(store, "encoded_row_blocks", None)
        if own is not None:
            yield from own(i, _ROW_SEPARATOR)
            if not a.listen_queue_known:  # streamed rows: their tally followed them
                a.listen_queue = store.listen_queue()
        elif hasattr(store, "row_batches"):
            tally = None if a.listen_queue_known else columns.ListenQueueColumns()
            for block, _ends in columns.connection_row_blocks(store, a.resets, i, a.capture, tally, _ROW_SEPARATOR):
                yield block
            if tally is not None:
                a.listen_queue = tally.result()
        else:
            yield from _blocks(map(orjson.dumps, _object_rows(a, i)))


def _object_rows(a: Analysis, i: int) -> Iterator[dict]:
    """The connection rows of analysis ``a`` (capture index ``i``) from its connection objects."""
    tally = None if a.listen_queue_known else ListenQueueTally()
    table = a.resets
    reset_ids = table.connection  # sorted: walked alongside the connections
    hi, next_id = 0, int(reset_ids[0]) if len(reset_ids) else -1
    stitched = getattr(a.capture, "pieces", None)  # then each row also says in which files it is
    for conn in a.connections:
        if tally is not None:
            tally.add(conn)
        if conn.id == next_id:
            lo, hi = table.span(next_id, hi)
            row = _connection_row(conn, i, table.outcome(lo, hi))
            next_id = int(reset_ids[hi]) if hi < len(reset_ids) else -1
        else:
            row = _connection_row(conn, i, None)
        if stitched:
            fleet_frames.add_connection_fields(row, a.capture, conn.first_frame, conn.last_frame)
        yield row
    if tally is not None:
        a.listen_queue = tally.result()


def _encoded_reset_rows(analyses: list[Analysis]) -> Iterator[bytes]:
    """Every RST's row, encoded, in blocks of rows joined by :data:`_ROW_SEPARATOR`."""
    for i, a in enumerate(analyses):
        head = b'{"capture":%d,' % i  # in place of each row's "{"
        for data, starts, lengths in a.resets.raw_blocks():
            yield columns.join_rows(data, starts + 1, lengths - 1, _ROW_SEPARATOR, head=head)


_ROW_SEPARATOR = b",\n  "


def _blocks(rows: Iterator[bytes]) -> Iterator[bytes]:
    """Encoded rows joined by :data:`_ROW_SEPARATOR`, :data:`_ROWS_PER_WRITE` at a time."""
    while batch := list(itertools.islice(rows, _ROWS_PER_WRITE)):
        yield _ROW_SEPARATOR.join(batch)


def _write_rows(stream, key: str, blocks: Iterator[bytes | bytearray]) -> None:
    """``"key": [rows]``, one row per line, from blocks of rows joined by :data:`_ROW_SEPARATOR`."""
    stream.write(f' "{key}": [')
    separator, raw = "\n  ", _utf8_bytes(stream)
    if raw is None:
        for block in blocks:
            if block:
                stream.write(separator + block.decode())
                separator = ",\n  "
    else:  # the encoded rows as they are (no decoding and encoding again), copied while the next are made
        stream.flush()
        with output.writes_behind(raw) as write:
            for block in blocks:
                if block:
                    write(separator.encode(), block)
                    separator = ",\n  "
    stream.write("]" if separator == "\n  " else "\n ]")


def _utf8_bytes(stream):
    """The byte stream under a UTF-8 text stream (a file's, standard output's), else None."""
    buffer, encoding = getattr(stream, "buffer", None), getattr(stream, "encoding", None)
    if buffer is None or not isinstance(encoding, str) or codecs.lookup(encoding).name != "utf-8":
        return None
    return buffer


def _encode(value, option: int = 0) -> str:
    return orjson.dumps(value, option=option).decode()


def distinct_fixes(doc: dict) -> list[tuple[str, str]]:
    """Each (verdict, fix) of the document's RSTs once, in verdict order; echoes and unknown have none of
    their own.  A middlebox's fix depends on its kind, so one verdict can carry several."""
    order = [v.value for v in Verdict]
    resets = doc["resets"]
    if isinstance(resets, ResetRows):
        seen = resets.fixes()
    else:
        seen = {(r["verdict"], r.get("fix") or Verdict(r["verdict"]).fix) for r in resets}
    return sorted(((v, f) for v, f in seen if v not in ("echo", "unknown")), key=lambda vf: (order.index(vf[0]), vf[1]))
