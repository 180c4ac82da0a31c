"""rstscope report: one self-contained HTML report (and its Markdown twin) of a capture, a run, or two."""

from __future__ import annotations

import argparse
from pathlib import Path

from rstscope import inputs
from rstscope.output import check_writable_dir, write_text
from rstscope.status import ExitStatus, InputError

HELP = "write a self-contained HTML report (plus a Markdown twin): verdicts, evidence, figures, fixes"
DESCRIPTION = """\
Analyses a capture or a lab run directory and writes one HTML file that holds
everything (figures embedded, no script, nothing fetched: it opens offline and
can be mailed), and the same report as Markdown beside it (figures as PNG files
in a folder next to it).

The report holds a summary in plain words and the verdict table; the
connections that lost data; the evidence for every RST with the Wireshark
display filter that opens it (frame.number == N, tcp.stream eq N); for a lab
run, how the verdicts agree with the kernel's own reset records and what the
clients saw; and the recommended fix.

Two inputs (or a directory holding two runs, as `rstscope lab --compare`
leaves) give a side-by-side report.

examples:
  rstscope report trace.pcapng -o report.html          also writes report.md and report-figures/
  rstscope report captures/close-race/ -o close-race.html
  rstscope report captures/runs/A captures/runs/B -o compare.html
  rstscope report trace.pcap -o report.html --no-markdown --connection 12
  rstscope report out/ -o fleet.html                   the fleet view of `analyze ... --parquet out/`
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    inp = parser.add_argument_group("input")
    inp.add_argument("inputs", nargs="+", metavar="CAPTURE|RUN_DIR",
                     help="a capture or run directory; two (or a compare directory) for a comparison")  # fmt: skip
    inp.add_argument("--connection", action="append", default=[], metavar="SPEC",
                     help="also draw this connection's time-sequence graph (id, tcp.stream=N or 4-tuple)")  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", default="report.html", metavar="FILE", help="the HTML file (report.html)")
    out.add_argument("--markdown", metavar="FILE", help="the Markdown twin (default: FILE with .md)")
    out.add_argument("--no-markdown", action="store_true", help="write the HTML only")
    out.add_argument(
        "--examples",
        type=int,
        default=3,
        metavar="N",
        help="time-sequence graphs of example connections per capture (3; 1 per run when comparing)",
    )
    out.add_argument("--max-rows", type=int, default=200, metavar="N",
                     help="rows per table before the rest is cut with a notice (200)")  # fmt: skip


def run(args: argparse.Namespace, env) -> ExitStatus:
    output = Path(args.output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"-o {output}: the report is HTML; name it *.html (the Markdown twin gets .md)")
    check_writable_dir(output.parent, what="output directory")  # a bad -o fails before the analysis
    with inputs.spooled(args.inputs, env) as names:  # figures go back to the capture: FIFOs are copied first
        return _report(args, env, names, output)


def _report(args: argparse.Namespace, env, names: list[str], output: Path) -> ExitStatus:
    from rstscope.fleet import view as fleet_view
    from rstscope.report import records as R
    from rstscope.report import sections as S

    if len(names) == 1 and fleet_view.is_fleet_dir(names[0]):  # the Parquet files of `analyze --parquet`
        return _write(
            args, env, fleet_view.blocks(Path(names[0]), max_rows=args.max_rows), "rstscope fleet report", output
        )
    loaded = S.load(names, progress=env.progress)
    env.progress_done()
    if len(loaded) > 2:
        raise InputError(f"{len(loaded)} inputs: give one capture or run, or two to compare")
    for item in loaded:
        for cap in item.doc["captures"]:
            for warning in cap["warnings"]:
                env.warn(f"{cap['path']}: {warning}")
    env.progress("writing the report")
    if len(loaded) == 1:
        item = loaded[0]
        extra = [R.find_connection(item.doc, spec) for spec in args.connection]
        blocks = S.single_report(item, examples=args.examples, max_rows=args.max_rows, connections=extra)
        title = f"rstscope report: {item.label}"
    else:
        if args.connection:
            raise InputError("--connection works with one input; with two, plot them with `rstscope plot`")
        a, b = loaded
        examples = 1 if args.examples == 3 else args.examples
        blocks = S.compare_report(a, b, examples=examples, max_rows=args.max_rows)
        title = f"rstscope comparison: {a.label} vs {b.label}"
    return _write(args, env, blocks, title, output)


def _write(args: argparse.Namespace, env, blocks, title: str, output: Path) -> ExitStatus:
    from rstscope.report import html, markdown

    # Each file is written whole or not at all; a name that is not UTF-8 shows escaped inside them.
    written = []
    write_text(output, html.render(blocks, title=title), errors="backslashreplace")
    written.append(output)
    if not args.no_markdown:
        md_path = Path(args.markdown) if args.markdown else output.with_suffix(".md")
        figures = md_path.parent / f"{md_path.stem}-figures"
        write_text(md_path, markdown.render(blocks, figures, relative_to=md_path.parent), errors="backslashreplace")
        written.append(md_path)
    env.progress_done()
    for path in written:
        env.stdout.write(f"{path}\n")
    return ExitStatus.OK
