"""rstscope analyze: explain every RST in one or more captures (or lab run directories)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rstscope import api, heap, inputs
from rstscope.document import combine, for_json, summary_document, write_json
from rstscope.fleet import options as fleet_options
from rstscope.output import atomic_file
from rstscope.report import text
from rstscope.status import ExitStatus, InputError

HELP = "explain every RST in a capture: who sent it, why, and what was in flight"
EXIT_AT_ONCE = True
"""When ``run`` returns, its outputs are closed (atomic files renamed, the writer thread joined) and the
processes it started are gone (the reader child, the fleet's shards, a Dask client closed)."""
DESCRIPTION = """\
Reads pcap or pcapng files (gzip-compressed too) or lab run directories and
gives, for every TCP RST, its sender, the connection's state, the bytes in
flight, and a verdict: backlog, close-race, abort, late-data, refused, echo,
stale or unknown.

examples:
  rstscope analyze trace.pcapng                  summary, then one line per RST
  tcpdump -w - -i eth0 | rstscope analyze -      standard input (a FIFO works too)
  rstscope analyze trace.pcap --all              also list every echo RST
  rstscope analyze trace.pcap --json > out.json  the full document
  rstscope analyze trace.pcap --csv -o rsts.csv  the RST table as CSV
  rstscope analyze captures/runs/2026-11-27T10-00-00-close-race/
                                                 a lab run: adds kernel reasons and client outcomes
  rstscope analyze /var/cap/                     rotated pieces (also 'trace-*.pcap' or A B C) as one capture
  rstscope analyze 'hosts/*/*.pcap' --by-host 'hosts/([^/]+)/' --jobs 8 --parquet out/
                                                 a fleet: one capture per host, 8 processes, Parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inp = parser.add_argument_group("input")
    inp.add_argument(
        "inputs",
        nargs="+",
        metavar="CAPTURE|RUN_DIR",
        help="pcap/pcapng files, directories or glob patterns of them, or run directories",
    )
    out = parser.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="write the full JSON document")
    fmt.add_argument("--csv", action="store_true", help="write the RST table as CSV")
    out.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of standard output")
    out.add_argument("--all", action="store_true", help="list echo RSTs in the table too")
    out.add_argument("--summary-only", action="store_true", help="print the summary without the RST table")
    fleet_options.add_arguments(parser)


def run(args: argparse.Namespace, env) -> ExitStatus:
    heap.keep_freed_top()  # a command that ends: what it frees, it allocates again soon
    if args.inputs.count(inputs.STDIN) > 1:
        raise InputError("standard input (-) given twice: it can be read only once")
    if fleet_options.wanted(args):  # several files, a DIR or GLOB of pieces, a fleet option: rstscope.fleet
        analyses, failed = fleet_options.analyze(args, env)
        try:
            return _report(args, env, analyses, failed)
        finally:
            fleet_options.release(analyses)  # shards still streaming rows (a failed write) are stopped
    # one capture file, standard input or one run directory
    analyses = [_analyze_one(args.inputs[0], env, encode_rows=args.json)]
    try:
        return _report(args, env, analyses, [])
    finally:
        fleet_options.release(analyses)  # a reader child still encoding rows (a failed write) is stopped


def _report(args: argparse.Namespace, env, analyses: list, failed: list[str]) -> ExitStatus:
    if not analyses:
        return ExitStatus.BAD_INPUT
    if args.parquet:
        fleet_options.write_parquet(analyses, args.parquet)
    runs = any(a.run is not None for a in analyses)
    if args.json and not runs:  # streamed, one connection at a time
        if args.output:
            with _output(args.output) as stream:
                write_json(analyses, stream)
        else:
            write_json(analyses, env.stdout)
        _warn(analyses, env)
        return ExitStatus.BAD_INPUT if failed else ExitStatus.OK
    # The terminal summary and the CSV need only the connections that saw a RST, and read the RST rows
    # back one at a time; a lab run's ground truth is joined per connection, and --json lists them all.
    doc = combine(analyses) if runs else summary_document(analyses)
    if args.output or args.json or args.csv or not (env.stdout_isatty and env.stderr_isatty):
        _warn(analyses, env)  # else the summary on the terminal lists them already
    if args.output:
        with _output(args.output) as stream:
            _write(doc, stream, args, colour=False)
    else:
        _write(doc, env.stdout, args, colour=env.stdout_isatty)
    return ExitStatus.BAD_INPUT if failed else ExitStatus.OK


def _warn(analyses, env) -> None:
    for a in analyses:
        for warning in a.capture.stats.warnings:
            env.warn(f"{a.capture.path}: {warning}")


def _output(path: str):
    """The -o file, written whole or not at all (a temporary file renamed at the end)."""
    return atomic_file(path)


def _analyze_one(name: str, env, *, encode_rows: bool = False):
    path = Path(name)
    stream = None
    if inputs.is_read_once(name):  # `-`, a FIFO or a pipe: read in this one pass
        path, stream = inputs.open_stream(name, env)
    size = _file_size(path) if stream is None else 0

    def progress(packets: int, nbytes: int) -> None:
        share = f" ({100 * nbytes / size:.0f}%)" if size else ""
        env.progress(f"{path.name}: {packets:,} packets{share}")

    def judged(done: int, connections: int) -> None:  # a storm of RSTs: most of the time is here
        env.progress(f"{path.name}: evidence and verdicts, {done:,} of {connections:,} connections with RSTs")

    try:
        return api.analyze(path, progress=progress, judged=judged, stream=stream, encode_rows=encode_rows)
    finally:
        env.progress_done()


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0  # the reader says what is wrong with it


def _write(doc: dict, stream, args, *, colour: bool) -> None:
    if args.json:
        json.dump(for_json(doc), stream, indent=1)
        stream.write("\n")
    elif args.csv:
        text.write_csv(doc, stream)
    else:
        text.write_summary(doc, stream, colour=colour)
        if not args.summary_only:
            text.write_table(doc, stream, show_echoes=args.all, colour=colour)
    if stream is sys.stdout:
        stream.flush()
