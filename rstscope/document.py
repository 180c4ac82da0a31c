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
``captures``) tells them apart.
"""

from __future__ import annotations

import json
from collections import Counter

from rstscope import __version__, zeek
from rstscope.analysis import SCHEMA_VERSION, Analysis
from rstscope.connections import Connection, Side
from rstscope.verdicts import Verdict


def _time(ns: int) -> float:
    return round(ns / 1e9, 9)


def reset_row(analysis: Analysis, record, capture_index: int = 0) -> dict:
    ev, d = record.evidence, record.decision
    return {
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


def connection_row(analysis: Analysis, conn: Connection, capture_index: int = 0) -> dict:
    resets = analysis.resets_of(conn.id)
    verdict = analysis.connection_verdict(conn)
    primary = next((r for r in resets if r.verdict not in (Verdict.ECHO, Verdict.IGNORED)), None)
    return {
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
        "lost_data": bool(primary and primary.verdict in (Verdict.CLOSE_RACE, Verdict.BACKLOG)),
        "findings": [f.kind for f in conn.findings],
        "wireshark_filter": _conn_filter(conn),
    }


def _conn_filter(conn: Connection) -> str:
    ip = "ipv6" if conn.ip_version == 6 else "ip"
    return (
        f"{ip}.addr == {conn.orig_addr} && tcp.port == {conn.orig_port} && "
        f"{ip}.addr == {conn.resp_addr} && tcp.port == {conn.resp_port} && "
        f"frame.number >= {conn.first_frame} && frame.number <= {conn.last_frame}"
    )


def capture_row(analysis: Analysis, index: int = 0) -> dict:
    cap, st = analysis.capture, analysis.capture.stats
    return {
        "index": index,
        "path": cap.path,
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
        "warnings": list(st.warnings),
    }


def combine(analyses: list[Analysis], *, all_connections: bool = True) -> dict:
    """One document for several captures.

    ``all_connections=False`` lists only the connections that saw a RST (the summary still counts
    them all): what the terminal summary needs, without a row per connection of a huge capture."""
    captures, connections, resets = [], [], []
    total_connections = 0
    listen = {"syn_retransmitted": 0, "synack_retransmitted": 0, "synack_after_ack": 0, "unanswered": 0}
    listen_detail = []
    by_verdict: dict[str, int] = {}
    undecoded: Counter = Counter()
    for i, a in enumerate(analyses):
        captures.append(capture_row(a, i))
        undecoded.update(a.capture.stats.undecoded)
        total_connections += len(a.connections)
        listed = a.connections if all_connections else a.connections.with_resets()
        connections.extend(connection_row(a, c, i) for c in listed)
        resets.extend(reset_row(a, r, i) for r in a.resets)
        for key in listen:
            listen[key] += a.listen_queue[key]["count"]
        listen_detail.append({"capture": i, **a.listen_queue})
        for k, v in a.verdict_counts().items():
            by_verdict[k] = by_verdict.get(k, 0) + v
    lost = [c for c in connections if c["lost_data"]]
    summary = {
        "packets": sum(c["records"] for c in captures),
        "tcp_packets": sum(c["tcp_packets"] for c in captures),
        "connections": total_connections,
        "resets": len(resets),
        "by_verdict": by_verdict,
        "connections_reset": sum(1 for c in connections if c["resets"]),
        "connections_lost_data": len(lost),
        "bytes_in_flight_at_loss": sum(c["in_flight_at_reset"] or 0 for c in lost),
    }
    doc = {
        "schema": SCHEMA_VERSION,
        "connections_listed": "all" if all_connections else "with RSTs",
        "tool": f"rstscope {__version__}",
        "captures": captures,
        "summary": summary,
        "undecoded": dict(undecoded.most_common()),
        "connections": connections,
        "resets": resets,
        "listen_queue": {**listen, "per_capture": listen_detail},
    }
    runs = [a.run for a in analyses if a.run is not None]
    if len(runs) == 1 and len(analyses) == 1:
        from rstscope.lab import groundtruth

        doc = groundtruth.join(doc, runs[0])
    return doc


def write_json(analyses: list[Analysis], stream) -> None:
    """The same document as ``json.dump(combine(analyses), ...)``, written as it is produced: one
    connection row at a time, so that a capture with millions of connections does not need them all
    in memory at once (retired connections are read back from the tracker's spill file)."""
    doc = combine(analyses, all_connections=False)
    doc["connections_listed"] = "all"
    stream.write("{\n")
    for i, key in enumerate(doc):
        stream.write(f" {json.dumps(key)}: ")
        if key == "connections":
            stream.write("[")
            first = True
            for index, a in enumerate(analyses):
                for conn in a.connections:
                    stream.write("\n  " if first else ",\n  ")
                    stream.write(json.dumps(connection_row(a, conn, index)))
                    first = False
            stream.write("\n ]" if not first else "]")
        else:
            stream.write(json.dumps(doc[key], indent=1).replace("\n", "\n "))
        stream.write(",\n" if i < len(doc) - 1 else "\n")
    stream.write("}\n")


def distinct_fixes(doc: dict) -> list[tuple[str, str]]:
    """Each (verdict, fix) of the document's RSTs once, in verdict order; echoes and unknown have none of
    their own.  A middlebox's fix depends on its kind, so one verdict can carry several."""
    order = [v.value for v in Verdict]
    seen = {(r["verdict"], r.get("fix") or Verdict(r["verdict"]).fix) for r in doc["resets"]}
    return sorted(((v, f) for v, f in seen if v not in ("echo", "unknown")), key=lambda vf: (order.index(vf[0]), vf[1]))
