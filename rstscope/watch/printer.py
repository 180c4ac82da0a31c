"""What ``watch`` prints: one text line per event, or one JSON object per line (``--json``).

Text: a primary RST as ``time  #conn  sender -> receiver  verdict  origin  in flight  explanation``;
a watched connection's end when RSTs were folded into its primary (``3 echoes``) or its verdict was
revised; listen-queue trouble as it is seen; the session summary at the end.

JSON (NDJSON): each RST is the object ``analyze --json`` has in its ``resets`` (the same fields, from
:func:`rstscope.document.reset_row`): the primary within a second, the others (echoes, ignored ones)
when their connection ends.  A ``kernel`` key is added when ``--kernel`` joined the kernel's reason.
Listen-queue trouble is ``{"listen_queue": KIND, ...}``, the summary ``{"summary": {...}}``.
"""

from __future__ import annotations

import datetime as dt
from typing import TextIO

import orjson

from rstscope.document import reset_row
from rstscope.watch.engine import ConnectionEnded, ListenQueueSeen, ResetSeen, SessionCounts

LISTEN_QUEUE_MEANING = {
    "syn_retransmitted": "SYN sent again: the server's SYN queue dropped it, or nothing answered",
    "synack_retransmitted": "SYN-ACK sent again: the accept queue dropped the handshake's last ACK",
}


def clock(ns: int) -> str:
    """Local time of day with microseconds."""
    return dt.datetime.fromtimestamp(ns / 1e9).strftime("%H:%M:%S.%f")


def in_flight_text(value: int | None) -> str:
    return "in flight ?" if value is None else f"in flight {value:,} B"


class Printer:
    """Writes events to ``stream`` (flushed per event: a log shipper reads as they come)."""

    def __init__(self, stream: TextIO, *, json: bool) -> None:
        self._out = stream
        self._json = json

    def reset(self, event: ResetSeen, kernel: dict | None = None) -> None:
        r = event.record
        if self._json:
            row = reset_row(r)
            if kernel is not None:
                row["kernel"] = kernel
            self._write_json(row)
            return
        ev = r.evidence
        line = (
            f"{clock(ev.time_ns)}  #{ev.connection}  {ev.src} -> {ev.dst}  {r.verdict.value}  {ev.origin.value}  "
            f"{in_flight_text(ev.in_flight)}  {r.decision.explanation}"
        )
        if kernel is not None:
            line += (
                f"  [kernel: {kernel.get('reason') or 'no record'}{'; DISAGREES' if kernel.get('disagrees') else ''}]"
            )
        self._write(line)

    def ended(self, event: ConnectionEnded, kernel: list[dict] | None = None) -> None:
        """``kernel``: the joined record of each of ``event.others`` (``--kernel``)."""
        if self._json:
            for i, r in enumerate(event.others):
                row = reset_row(r)
                if kernel is not None:
                    row["kernel"] = kernel[i]
                self._write_json(row)
            return
        if not event.others and not event.revised:
            return
        c = event.connection
        parts = []
        if event.echoes:
            parts.append(f"{event.echoes} echo{'es' if event.echoes != 1 else ''} folded into its primary")
        rest = [r for r in event.others if r.verdict.value != "echo"]
        if rest:
            kinds = ", ".join(sorted({r.verdict.value for r in rest}))
            parts.append(f"{len(rest)} other RST{'s' if len(rest) != 1 else ''} ({kinds})")
        if event.revised:
            final = event.primary.verdict.value if event.primary else "none"
            parts.append(f"verdict revised after the connection went on: now {final}")
        self._write(f"{clock(c.end_ns)}  #{c.id}  ended: " + "; ".join(parts))

    def listen_queue(self, event: ListenQueueSeen) -> None:
        if self._json:
            self._write_json(
                {
                    "listen_queue": event.kind,
                    "time": round(event.time_ns / 1e9, 9),
                    "frame": event.frame,
                    "client": event.client,
                    "server": event.server,
                    "count": event.count,
                }
            )
            return
        meaning = LISTEN_QUEUE_MEANING[event.kind]
        self._write(f"{clock(event.time_ns)}  listen queue  {event.client} -> {event.server}  {event.kind}  {meaning}")

    def summary(self, counts: SessionCounts, capture: dict) -> None:
        doc = {
            "packets": capture.get("records", counts.packets),
            "tcp_packets": counts.packets,
            "dropped": capture.get("dropped"),
            "connections": counts.connections,
            "resets": counts.resets,
            "by_verdict": dict(sorted(counts.primaries.items())),
            "echoes": counts.echoes,
            "listen_queue": dict(sorted(counts.listen_queue.items())),
        }
        if self._json:
            self._write_json({"summary": doc})
            return
        verdicts = ", ".join(f"{k} {v}" for k, v in doc["by_verdict"].items()) or "none"
        listen = ", ".join(f"{k} {v}" for k, v in doc["listen_queue"].items()) or "none"
        dropped = "unknown" if doc["dropped"] is None else f"{doc['dropped']:,}"
        self._write(
            f"session: {doc['packets']:,} packets ({dropped} dropped by the capture), {doc['connections']:,} "
            f"connections, {sum(doc['by_verdict'].values()):,} primary RSTs ({verdicts}), {doc['echoes']:,} "
            f"echo{'es' if doc['echoes'] != 1 else ''}; listen queue: {listen}"
        )

    def _write_json(self, obj: dict) -> None:
        self._write(orjson.dumps(obj).decode())

    def _write(self, line: str) -> None:
        self._out.write(line + "\n")
        self._out.flush()
