"""rstscope plot: draw the figures of a capture or lab run (PNG and SVG)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rstscope import inputs
from rstscope.output import check_writable_dir
from rstscope.status import ExitStatus, InputError

HELP = "draw timelines: overview, per-connection time-sequence graphs, listen queue, comparison"
DESCRIPTION = """\
Analyses a capture (or a lab run directory) and writes its figures to DIR, each
as PNG and SVG:

  overview.png          one row per connection from SYN to its end, coloured by
                        outcome (clean, close-race, backlog, late-data ...), RSTs
                        and clients' ECONNRESETs marked
  connection-N.png      time-sequence graph (tcptrace style) of connection N:
                        data segments, the peer's ACKs, snd_nxt, FIN, RST, the
                        bytes in flight at the RST shaded, echo RSTs grouped
  listen-queue.png      SYNs, SYN and SYN-ACK retransmissions and handshake
                        delays along time, with kernel counters for lab runs
  comparison.png        with two inputs (or a `lab --compare` directory): the
                        two runs side by side

Without --connection the time-sequence graphs are drawn for one example
connection per verdict (the one with the most bytes in flight).

examples:
  rstscope plot trace.pcapng -o plots/
  rstscope plot trace.pcapng -o plots/ --connection 12
  rstscope plot trace.pcapng -o plots/ --connection 10.0.0.2:41234-10.0.0.1:8080
  rstscope plot trace.pcapng -o plots/ --connection tcp.stream=7 --format svg
  rstscope plot captures/close-race/ -o plots/       a lab run: adds client outcomes and counters
  rstscope plot captures/runs/A captures/runs/B -o plots/
                                                   two runs side by side (comparison.png)
"""

FIGURES = ("overview", "connections", "listen-queue", "comparison")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inp = parser.add_argument_group("input")
    inp.add_argument("inputs", nargs="+", metavar="CAPTURE|RUN_DIR",
                     help="a capture or run directory; two (or a compare directory) for a comparison")  # fmt: skip
    inp.add_argument("--connection", action="append", default=[], metavar="SPEC",
                     help="draw this connection's time-sequence graph: its id (as `rstscope analyze` prints it), "
                          "tcp.stream=N, a 4-tuple ADDR:PORT-ADDR:PORT, or one endpoint; repeatable")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for the figures (created)")
    out.add_argument("--format", default="png,svg", metavar="LIST", help="comma-separated: png, svg, pdf (png,svg)")
    out.add_argument("--examples", type=int, default=3, metavar="N",
                     help="time-sequence graphs of example connections when --connection is not given (3)")  # fmt: skip
    out.add_argument("--only", choices=FIGURES, action="append", metavar="FIGURE",
                     help=f"draw only these figures ({', '.join(FIGURES)}); repeatable")  # fmt: skip


def run(args: argparse.Namespace, env) -> ExitStatus:
    formats = tuple(f.strip().lower() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad or not formats:
        raise InputError(f"--format {args.format!r}: choose among png, svg, pdf")
    out = check_writable_dir(args.output, what="output directory")  # a bad -o fails before the analysis
    with inputs.spooled(args.inputs, env) as names:  # figures go back to the capture: FIFOs are copied first
        return _draw(args, env, names, formats, out)


def _draw(args: argparse.Namespace, env, names: list[str], formats: tuple[str, ...], out: Path) -> ExitStatus:
    from rstscope.report import plots
    from rstscope.report import records as R
    from rstscope.report import sections as S

    loaded = S.load(names, progress=env.progress)
    env.progress_done()
    if len(loaded) > 2:
        raise InputError(f"{len(loaded)} inputs: give one capture or run, or two to compare")
    only = set(args.only or FIGURES)
    written: list[Path] = []
    for i, item in enumerate(loaded):
        prefix = f"{S.slug(item.label)}-" if len(loaded) == 2 else ""
        if len(loaded) == 2 and i == 1 and prefix == f"{S.slug(loaded[0].label)}-":
            prefix = f"b-{prefix}"
        for cap in item.doc["captures"]:
            for warning in cap["warnings"]:
                env.warn(f"{cap['path']}: {warning}")
        doc = item.doc
        env.progress(f"drawing {item.label}")
        if "overview" in only:
            written += plots.save(plots.overview_figure(doc, label=item.label), out, f"{prefix}overview", formats)
        if "listen-queue" in only and (R.listen_queue_trouble(doc) or R.kernel_counters(doc) is not None):
            written += plots.save(plots.listen_queue_figure(doc, label=item.label), out, f"{prefix}listen-queue",
                                  formats)  # fmt: skip
        if "connections" in only or args.connection:
            if args.connection:
                chosen = [R.find_connection(doc, spec) for spec in args.connection]
            else:
                chosen = R.example_connections(doc, args.examples)
            for conn in chosen:
                env.progress(f"drawing connection {conn['id']}")
                fig = plots.time_sequence_figure(doc, conn)
                written += plots.save(fig, out, f"{prefix}connection-{conn['id']}", formats)
    if len(loaded) == 2 and "comparison" in only:
        a, b = loaded
        written += plots.save(plots.comparison_figure(a.doc, b.doc, a.label, b.label), out, "comparison", formats)
    env.progress_done()
    for path in written:
        env.stdout.write(f"{path}\n")
    return ExitStatus.OK
