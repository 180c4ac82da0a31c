"""rstscope conns: one line per connection, with Zeek's conn_state and history and rstscope's verdicts."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rstscope import api, inputs, zeek
from rstscope.analysis import Analysis
from rstscope.connections import Connection, Side
from rstscope.document import connection_row
from rstscope.output import atomic_file
from rstscope.status import ExitStatus

HELP = "list connections: 4-tuple, duration, bytes and packets each way, Zeek's conn_state and history, verdicts"
DESCRIPTION = """\
Reads a pcap or pcapng file (or a lab run directory) and prints one line per
TCP connection: its id and 4-tuple, start time, duration, bytes and packets
each way, Zeek's conn_state and history (computed as Zeek defines them), and
the verdicts of its RSTs.  A readable table on a terminal, TSV when piped.

examples:
  rstscope conns trace.pcapng                    table on a terminal
  rstscope conns trace.pcap | sort -t$'\\t' -k9   TSV with a header line when piped
  rstscope conns trace.pcap --zeek > conn.log    Zeek's conn.log layout (#fields/#types headers)
  rstscope conns trace.pcap --json               one JSON record per connection

The conn_state codes (Zeek's definitions):
""" + "\n".join(f"  {s.value:<7}{s.definition}" for s in zeek.ConnState)

COLUMNS = (
    "id", "orig", "resp", "start", "duration", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts",
    "conn_state", "history", "verdicts",
)  # fmt: skip
"""The table and TSV columns; bytes are Zeek's (sequence space, without SYN and FIN)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inp = parser.add_argument_group("input")
    inp.add_argument("input", metavar="CAPTURE|RUN_DIR", help="a pcap/pcapng file or a run directory")
    out = parser.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--zeek", action="store_true", help="write Zeek's conn.log layout (TSV with # headers)")
    fmt.add_argument("--json", action="store_true", help="write one JSON record per connection")
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")


def run(args: argparse.Namespace, env) -> ExitStatus:
    analysis = _analyze(args.input, env)
    for warning in analysis.capture.stats.warnings:  # a truncated capture still gives a table: say so
        env.warn(f"{analysis.capture.path}: {warning}")
    if args.output:
        with atomic_file(args.output) as stream:
            _write(analysis, stream, args, env, table=False)
    else:
        _write(analysis, env.stdout, args, env, table=env.stdout_isatty)
    return ExitStatus.OK


def _analyze(name: str, env) -> Analysis:
    path, stream = Path(name), None
    if inputs.is_read_once(name):  # `-`, a FIFO or a pipe: read in this one pass
        path, stream = inputs.open_stream(name, env)
    try:
        return api.analyze(
            path,
            zeek_timers=True,
            progress=lambda packets, _: env.progress(f"{path.name}: {packets:,} packets"),
            stream=stream,
        )
    finally:
        env.progress_done()


def _write(analysis: Analysis, stream, args, env, *, table: bool) -> None:
    if args.zeek:
        zeek.write_conn_log((zeek.conn_log_row(c) for c in analysis.connections), stream, clock=env.clock)
    elif args.json:
        json.dump([connection_row(analysis, c) for c in analysis.connections], stream, indent=1)
        stream.write("\n")
    else:
        rows = [_row(analysis, c) for c in analysis.connections]
        _write_table(rows, stream) if table else _write_tsv(rows, stream)


def _row(analysis: Analysis, conn: Connection) -> dict[str, str]:
    verdicts = sorted({v.value for v in analysis.verdicts_of(conn.id)})
    return {
        "id": str(conn.id),
        "orig": conn.orig,
        "resp": conn.resp,
        "start": f"{conn.start_ns / 1e9:.6f}",
        "duration": f"{(conn.end_ns - conn.start_ns) / 1e9:.6f}",
        "orig_bytes": str(zeek.stream_size(conn, Side.ORIG)),
        "resp_bytes": str(zeek.stream_size(conn, Side.RESP)),
        "orig_pkts": str(conn.packets[Side.ORIG]),
        "resp_pkts": str(conn.packets[Side.RESP]),
        "conn_state": zeek.conn_state(conn).value,
        "history": conn.history_text,
        "verdicts": ",".join(verdicts) or "-",
    }


def _write_tsv(rows: list[dict[str, str]], stream) -> None:
    stream.write("\t".join(COLUMNS) + "\n")
    for row in rows:
        stream.write("\t".join(row[c] for c in COLUMNS) + "\n")


def _write_table(rows: list[dict[str, str]], stream) -> None:
    if not rows:
        stream.write("No TCP connection in this capture.\n")
        return
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in COLUMNS}
    right = {"id", "duration", "orig_bytes", "resp_bytes", "orig_pkts", "resp_pkts"}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(cells[c].rjust(widths[c]) if c in right else cells[c].ljust(widths[c]) for c in COLUMNS)

    stream.write(line({c: c for c in COLUMNS}).rstrip() + "\n")
    for row in rows:
        stream.write(line(row).rstrip() + "\n")
