"""The terminal view of ``rstscope analyze``: a summary a person takes in at a glance, then the RSTs."""

from __future__ import annotations

import csv
import io
import itertools
from typing import TextIO

from rstscope.document import LOST_LISTED, ResetRows, distinct_fixes
from rstscope.packets import describe_undecoded
from rstscope.verdicts import Verdict

TABLE_COLUMNS = (
    "frame",
    "time",
    "sender",
    "src",
    "dst",
    "verdict",
    "confidence",
    "origin",
    "in_flight",
    "primary",
    "echoes",
    "explanation",
)
CSV_COLUMNS = (
    "capture", "frame", "time", "connection", "src", "dst", "sender", "flags", "phase", "verdict", "rule",
    "confidence", "origin", "ttl", "sender_ttl", "primary", "in_flight", "in_flight_basis", "in_flight_capture",
    "in_flight_echoes", "seq_vs_snd_nxt", "peer_unacked", "peer_in_flight",
    "answers_frame", "answers", "echoes", "syn_retransmissions", "synack_retransmissions",
    "synack_after_ack", "client_unacked", "kernel_reason", "explanation",
)  # fmt: skip

_ROWS_PER_WRITE = 512
"""Rows formatted before one write: fewer, larger writes."""

_BOLD, _RED, _YELLOW, _DIM, _RESET = "\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[2m", "\x1b[0m"
_VERDICT_COLOUR = {"close-race": _RED, "backlog": _RED, "late-data": _YELLOW, "refused": _YELLOW,
                   "middlebox": _YELLOW, "keepalive": _YELLOW}  # fmt: skip


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("MB", 1_000_000), ("kB", 1_000)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


class _Style:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, text: str, code: str) -> str:
        return f"{code}{text}{_RESET}" if self.colour and code else text


def write_summary(doc: dict, out: TextIO, *, colour: bool = False) -> None:
    st = _Style(colour)
    s = doc["summary"]
    names = ", ".join(c["path"] for c in doc["captures"])
    out.write(st(f"rstscope: {names}", _BOLD) + "\n")
    out.write(
        f"  {s['packets']:,} packets, {s['tcp_packets']:,} TCP, {s['connections']:,} connections, "
        f"{s['resets']:,} RSTs in {s['connections_reset']:,} connections\n"
    )
    for cap in doc["captures"]:
        for w in cap["warnings"]:
            out.write(st(f"  warning: {cap['path']}: {w}", _YELLOW) + "\n")
    undecoded = describe_undecoded(doc.get("undecoded") or {})
    decoded_tcp = s["tcp_packets"] - sum(sum(c["decode_errors"].values()) for c in doc["captures"])
    if not s["resets"] and undecoded and decoded_tcp <= 0:
        out.write(st(f"\n  No TCP decoded: {undecoded}.\n", _YELLOW))
    elif not s["resets"] and undecoded:
        out.write(f"\n  No RST in the {decoded_tcp:,} TCP packets decoded; " + st(f"{undecoded}.", _YELLOW) + "\n")
    elif not s["resets"]:
        out.write("\n  No RST in this capture.\n")
    else:
        out.write("\n" + st("  RSTs by verdict", _BOLD) + "\n")
        for v in Verdict:
            n = s["by_verdict"].get(v.value, 0)
            if n:
                out.write(f"    {st(f'{v.value:<11}', _VERDICT_COLOUR.get(v.value, ''))} {n:>6}  {v.definition}\n")
    # A summary document lists only the connections printed here; the summary counts them all.
    lost = [c for c in doc["connections"] if c["lost_data"]]
    lost_count = s["connections_lost_data"]
    if lost_count:
        out.write("\n" + st(f"  Connections that lost data: {lost_count}", _BOLD))
        in_flight = s["bytes_in_flight_at_loss"]
        out.write(f" ({_bytes(in_flight)} in flight at the resets)\n" if in_flight else "\n")
        lost.sort(key=lambda c: -(c["in_flight_at_reset"] or 0))
        for c in lost[:LOST_LISTED]:
            outcome = f"  client: {c['client_outcome']}" if c.get("client_outcome") else ""
            what = "never accepted" if c["verdict"] == "backlog" else f"{_bytes(c['in_flight_at_reset'])} in flight"
            out.write(f"    #{c['id']:<5} {c['client']} -> {c['server']}  {c['verdict']:<10} {what:>18}{outcome}\n")
        if lost_count > LOST_LISTED:
            out.write(st(f"    ... {lost_count - LOST_LISTED} more: see --json or --csv\n", _DIM))
    strongest = _strongest(doc)
    if strongest:
        out.write("\n" + st("  Strongest evidence", _BOLD) + "\n")
        for line in strongest:
            out.write(f"    {line}\n")
    lq = doc["listen_queue"]
    if any(lq[k] for k in ("syn_retransmitted", "synack_after_ack", "unanswered")):
        out.write("\n" + st("  Listen queue", _BOLD) + "\n")
        out.write(
            f"    {lq['syn_retransmitted']} connections with SYN retransmitted, "
            f"{lq['synack_after_ack']} with SYN-ACK retransmitted after the client's ACK "
            f"(accept-queue drop suspected), {lq['unanswered']} attempts never answered\n"
        )
    fixes = distinct_fixes(doc)
    if fixes:
        out.write("\n" + st("  What to do", _BOLD) + "\n")
        for verdict, fix in fixes:
            out.write(f"    {verdict}: {fix}\n")
    gt = doc.get("ground_truth")
    if gt:
        out.write("\n" + st("  Ground truth (lab run)", _BOLD) + "\n")
        for key, value in gt.items():
            if not isinstance(value, (dict, list)):
                out.write(f"    {key}: {value}\n")


def _strongest(doc: dict) -> list[str]:
    """One line per verdict: the RST with the most evidence behind it."""
    resets = doc["resets"]
    if isinstance(resets, ResetRows):  # streamed: picked from the columns, the same rule
        return [f"frame {r['frame']}: {r['explanation']}" for r in resets.strongest((Verdict.ECHO, Verdict.UNKNOWN))]
    lines = []
    by_verdict: dict[str, dict] = {}
    for r in resets:
        if r["verdict"] in ("echo", "unknown"):
            continue
        best = by_verdict.get(r["verdict"])
        if best is None or (r["in_flight"] or 0, len(r["findings"])) > (
            best["in_flight"] or 0,
            len(best["findings"]),
        ):
            by_verdict[r["verdict"]] = r
    for r in by_verdict.values():
        lines.append(f"frame {r['frame']}: {r['explanation']}")
    return lines


def write_table(doc: dict, out: TextIO, *, show_echoes: bool = False, colour: bool = False) -> None:
    """The per-RST table; echoes are folded into their primary's ``echoes`` count unless asked for.  The
    rows are written as they are read (``doc["resets"]`` may be a :class:`ResetRows`)."""
    resets = doc["resets"]
    if not len(resets):
        return
    skipped = () if show_echoes else (Verdict.ECHO,)
    if isinstance(resets, ResetRows):  # streamed: the echoes are not even read back
        t0, rows = resets.first_time(), resets.without(skipped)
        hidden = sum(resets.count(v) for v in skipped)
    else:
        t0, rows = min(r["time"] for r in resets), [r for r in resets if show_echoes or r["verdict"] != "echo"]
        hidden = len(resets) - len(rows)
    st = _Style(colour)
    out.write("\n")
    if colour:
        header = [
            "frame",
            "t+s",
            "sender",
            "src -> dst",
            "verdict",
            "conf",
            "origin",
            "in_flight",
            "primary",
            "echoes",
            "explanation",
        ]
        out.write(st("  ".join(header), _BOLD) + "\n")
        for r in rows:
            verdict = st(f"{r['verdict']:<10}", _VERDICT_COLOUR.get(r["verdict"], ""))
            out.write(
                f"{r['frame']:>6}  {r['time'] - t0:9.6f}  {r['sender']:<7} {r['src']} -> {r['dst']}  {verdict} "
                f"{r['confidence']:<6} {r['origin']:<12} {_bytes(r['in_flight']):>9}  {r['primary'] or '-':>7}  "
                f"{r['echoes']:>5}  {r['explanation']}\n"
            )
    elif isinstance(resets, ResetRows):  # piped: plain tab-separated values, one header line
        out.write("\t".join(TABLE_COLUMNS) + "\n")
        for lines in resets.tsv(TABLE_COLUMNS, skipped, _tsv_line):  # the same lines, without decoding the rows
            out.write(lines)
    else:
        out.write("\t".join(TABLE_COLUMNS) + "\n")
        rows = iter(rows)
        while batch := list(itertools.islice(rows, _ROWS_PER_WRITE)):
            out.write("".join(map(_tsv_line, batch)))
    if hidden:
        out.write(
            st(
                f"({hidden} echo RSTs not listed: each is counted under its primary; --all lists them)\n",
                _DIM,
            )
        )


def _tsv_line(r: dict) -> str:
    """A RST's line of the piped table: ``str`` of each field, None as nothing."""
    return "\t".join(["" if r[c] is None else str(r[c]) for c in TABLE_COLUMNS]) + "\n"


def write_csv(doc: dict, out: TextIO) -> None:
    """The RST table as CSV, a row at a time (``doc["resets"]`` may be a :class:`ResetRows`, whose lines are
    copied from the encoded rows where they can be)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    resets = doc["resets"]
    if isinstance(resets, ResetRows):
        for lines in resets.csv(CSV_COLUMNS, _csv_line):
            out.write(lines)
    else:
        writer.writerows(map(_csv_row, resets))


def _csv_line(r: dict) -> str:
    """A RST's CSV line, as ``write_csv``'s writer writes it."""
    line = io.StringIO()
    csv.writer(line, lineterminator="\n").writerow(_csv_row(r))
    return line.getvalue()


_KERNEL_REASON = CSV_COLUMNS.index("kernel_reason")


def _csv_row(r: dict) -> list:
    """A RST's CSV fields (csv writes None as an empty field)."""
    row = [r.get(c) for c in CSV_COLUMNS]
    row[_KERNEL_REASON] = (r.get("kernel") or {}).get("reason")
    return row
