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

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator

import orjson

from rstscope import __version__, zeek
from rstscope.analysis import Analysis, ResetRecord
from rstscope.connections import Connection, Side
from rstscope.fleet import frames as fleet_frames
from rstscope.verdicts import Verdict

SCHEMA_VERSION = 1


def _time(ns: int) -> float:
    return round(ns / 1e9, 9)


def reset_row(analysis: Analysis, record, capture_index: int = 0) -> dict:
    ev, d = record.evidence, record.decision
    row = {
        "capture": capture_index,
        "frame": ev.frame,
        "time": _time(ev.time_ns),
        "connection": ev.connection,
        "src": ev.src,
        "dst": ev.dst,
        "sender": ev.sender_role,
        "flags": ev.flags,
        "phase": ev.phase.value,
        "verdict": d.verdict.value,
        "rule": d.rule,
        "confidence": d.confidence.value,
        "confidence_reason": d.confidence_reason,
        "origin": ev.origin.value,
        "origin_findings": list(ev.origin_findings),
        "ttl": ev.ttl,
        "sender_ttl": ev.sender_ttl,
        "primary": ev.primary,
        "in_flight": ev.in_flight,
        "in_flight_basis": ev.in_flight_basis,
        "in_flight_capture": ev.in_flight_capture,
        "in_flight_echoes": ev.in_flight_echoes,
        "seq": ev.seq,
        "seq_vs_snd_nxt": ev.seq_vs_snd_nxt,
        "peer_unacked": ev.peer_unacked,
        "peer_in_flight": ev.peer_in_flight,
        "sender_segments_after": ev.sender_segments_after,
        "receiver_segments_after": ev.receiver_segments_after,
        "idle_before": ev.idle_before_s,
        "keepalive_probes": ev.keepalive_probes,
        "sender_fin_frame": ev.sender_fin_frame,
        "answers_frame": ev.answers_frame,
        "answers": ev.answers,
        "echoes": ev.echoes,
        "syn_retransmissions": ev.syn_retransmissions,
        "synack_retransmissions": ev.synack_retransmissions,
        "synack_after_ack": ev.synack_after_ack,
        "client_unacked": ev.client_unacked,
        "findings": list(ev.findings),
        "explanation": d.explanation,
        "fix": d.fix or d.verdict.fix,
        "wireshark_filter": f"frame.number == {ev.frame}",
    }
    fleet_frames.add_reset_fields(row, analysis.capture, ev.frame)  # a stitched capture: file, file_frame
    return row


def connection_row(analysis: Analysis, conn: Connection, capture_index: int = 0) -> dict:
    resets = analysis.resets_of(conn.id)
    verdict = analysis.connection_verdict(conn)
    primary = analysis.primary_reset(conn.id)
    row = {
        "capture": capture_index,
        "id": conn.id,
        "client": conn.orig,
        "server": conn.resp,
        "originator_inferred": conn.originator_inferred,
        "ip_version": conn.ip_version,
        "tunnel_id": conn.tunnel_id,
        "start": _time(conn.start_ns),
        "end": _time(conn.end_ns),
        "duration": round((conn.end_ns - conn.start_ns) / 1e9, 9),
        "first_frame": conn.first_frame,
        "last_frame": conn.last_frame,
        "packets": {"client": conn.packets[Side.ORIG], "server": conn.packets[Side.RESP]},
        "payload_bytes": {"client": conn.payload_bytes[Side.ORIG], "server": conn.payload_bytes[Side.RESP]},
        "stream_bytes": {"client": conn.stream_bytes[Side.ORIG], "server": conn.stream_bytes[Side.RESP]},
        "unacked_bytes": {"client": conn.unacked_bytes[Side.ORIG], "server": conn.unacked_bytes[Side.RESP]},
        "retransmissions": {
            "client": conn.retransmissions[Side.ORIG],
            "server": conn.retransmissions[Side.RESP],
        },
        "history": conn.history_text,
        "conn_state": zeek.conn_state(conn).value,
        "phase": conn.phase().value,
        "syn_retransmissions": max(0, len(conn.syn_frames) - 1),
        "synack_retransmissions": max(0, len(conn.synack_frames) - 1),
        "synack_after_ack": len(conn.synack_after_ack_frames),
        "resets": [r.frame for r in resets],
        "verdict": verdict.value if verdict else None,
        "in_flight_at_reset": primary.evidence.in_flight if primary else None,
        "lost_data": bool(primary and primary.verdict in LOST_DATA_VERDICTS),
        "findings": [f.kind for f in conn.findings],
        "wireshark_filter": _conn_filter(conn),
    }
    fleet_frames.add_connection_fields(row, analysis.capture, conn.first_frame, conn.last_frame)
    return row


def _conn_filter(conn: Connection) -> str:
    ip = "ipv6" if conn.ip_version == 6 else "ip"
    return (
        f"{ip}.addr == {conn.orig_addr} && tcp.port == {conn.orig_port} && "
        f"{ip}.addr == {conn.resp_addr} && tcp.port == {conn.resp_port} && "
        f"frame.number >= {conn.first_frame} && frame.number <= {conn.last_frame}"
    )


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


LOST_DATA_VERDICTS = (Verdict.CLOSE_RACE, Verdict.BACKLOG)
"""A connection lost data when its primary RST has one of these verdicts (``lost_data``)."""
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
    if all_connections:
        connections = [connection_row(a, c, i) for i, a in enumerate(analyses) for c in a.connections]
    else:
        connections = [connection_row(analyses[i], analyses[i].connections[cid], i) for i, cid in _most_lost(analyses)]
    resets = [reset_row(a, r, i) for i, a in enumerate(analyses) for r in a.resets]
    doc = _head(analyses, "all" if all_connections else f"lost data, at most {LOST_LISTED}, largest first")
    doc["connections"] = connections
    doc["resets"] = resets
    doc["listen_queue"] = _listen_queue(analyses)
    runs = [a.run for a in analyses if a.run is not None]
    if len(runs) == 1 and len(analyses) == 1:
        from rstscope.lab import groundtruth

        doc = groundtruth.join(doc, runs[0])
    return doc


def _primaries(a: Analysis) -> dict[int, ResetRecord | None]:
    """Per connection that saw a RST: its primary RST (what happened to it), None if it had none."""
    return {cid: a.primary_reset(cid) for cid in dict.fromkeys(r.evidence.connection for r in a.resets)}


def _losses(primaries: dict[int, ResetRecord | None]) -> dict[int, int | None]:
    """Connection id -> bytes in flight at its primary RST, for the connections that lost data."""
    return {
        cid: r.evidence.in_flight for cid, r in primaries.items() if r is not None and r.verdict in LOST_DATA_VERDICTS
    }


def _most_lost(analyses: list[Analysis]) -> list[tuple[int, int]]:
    """(capture index, connection id) of the LOST_LISTED connections with the most data in flight, in
    that order (ties: capture, then connection order)."""
    lost = [
        (-(in_flight or 0), i, cid)
        for i, a in enumerate(analyses)
        for cid, in_flight in _losses(_primaries(a)).items()
    ]
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
        primaries = _primaries(a)
        connections_reset += len(primaries)
        losses = _losses(primaries)
        connections_lost += len(losses)
        in_flight_lost += sum(v or 0 for v in losses.values())
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
"""Rows encoded before one write to the stream: fewer, larger writes."""


def write_json(analyses: list[Analysis], stream) -> None:
    """The document of ``combine(analyses)``, written as it is produced: one connection row and one
    RST row at a time (encoded by orjson), so that a capture with millions of connections or RSTs
    never has their rows in memory at once (retired connections are read back from the tracker's
    spill file one by one).  The same values as ``json.dump(combine(analyses), ...)``
    (tests/test_document.py); the layout differs: one row per line.  Lab runs are not streamed:
    :func:`combine` joins their ground truth per connection."""
    doc = for_json(_head(analyses, "all"))
    stream.write("{\n")
    for key, value in doc.items():
        indent = orjson.OPT_INDENT_2 if isinstance(value, (dict, list)) else 0
        stream.write(f' "{key}": {_encode(value, indent).replace(chr(10), chr(10) + " ")},\n')
    rows = (connection_row(a, c, i) for i, a in enumerate(analyses) for c in a.connections)
    _write_rows(stream, "connections", rows)
    stream.write(",\n")
    _write_rows(stream, "resets", (reset_row(a, r, i) for i, a in enumerate(analyses) for r in a.resets))
    stream.write(f',\n "listen_queue": {_encode(_listen_queue(analyses))}\n}}\n')


def _write_rows(stream, key: str, rows: Iterator[dict]) -> None:
    stream.write(f' "{key}": [')
    separator = "\n  "
    while batch := [orjson.dumps(row) for row in itertools.islice(rows, _ROWS_PER_WRITE)]:
        stream.write(separator + b",\n  ".join(batch).decode())
        separator = ",\n  "
    stream.write("]" if separator == "\n  " else "\n ]")


def _encode(value, option: int = 0) -> str:
    return orjson.dumps(value, option=option).decode()


def distinct_fixes(doc: dict) -> list[tuple[str, str]]:
    """Each (verdict, fix) of the document's RSTs once, in verdict order; echoes and unknown have none of
    their own.  A middlebox's fix depends on its kind, so one verdict can carry several."""
    order = [v.value for v in Verdict]
    seen = {(r["verdict"], r.get("fix") or Verdict(r["verdict"]).fix) for r in doc["resets"]}
    return sorted(((v, f) for v, f in seen if v not in ("echo", "unknown")), key=lambda vf: (order.index(vf[0]), vf[1]))
