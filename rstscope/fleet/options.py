"""The fleet options of ``rstscope analyze`` and their dispatch (kept apart from the command)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rstscope.fleet import pieces
from rstscope.status import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fleet = parser.add_argument_group("fleets of captures (several files, DIR or GLOB: pieces of rotated captures)")
    fleet.add_argument(
        "--jobs", type=int, metavar="N", help="parse and track in N processes (default: the cores, for 32 MB or more)"
    )
    fleet.add_argument(
        "--dask", metavar="ADDRESS", help="run on a dask.distributed cluster (tcp://host:8786) seeing the same paths"
    )
    fleet.add_argument(
        "--parquet", metavar="DIR", help="also write resets and connections as Parquet, one file per capture piece"
    )
    fleet.add_argument(
        "--by-host", metavar="PATTERN", help="regular expression naming the host in each path (first group or match)"
    )
    fleet.add_argument("--max-gap", type=float, default=pieces.MAX_GAP_S, metavar="SECONDS",
                       help=f"longest silence between two pieces of one capture ({pieces.MAX_GAP_S:g})")  # fmt: skip


def wanted(args: argparse.Namespace) -> bool:
    """Whether the inputs go through the fleet path: several names, a directory or glob of pieces, or
    a fleet option."""
    from rstscope.fleet.run import is_single

    if args.jobs is not None or args.dask or args.parquet or args.by_host:
        return True
    return len(args.inputs) > 1 or (not is_single(args.inputs[0]) and not Path(args.inputs[0]).is_file())


def analyze(args: argparse.Namespace, env):
    from rstscope.fleet import run

    if args.max_gap < 0:
        raise InputError(f"--max-gap {args.max_gap:g}: give 0 or more seconds")
    if args.parquet:
        from rstscope.fleet import parquet

        parquet.prepare(Path(args.parquet))  # a bad --parquet fails before the analysis
    options = run.Options(jobs=args.jobs, dask=args.dask, by_host=args.by_host, max_gap_s=args.max_gap,
                          connection_rows=bool(args.parquet or not args.json))  # fmt: skip
    return run.analyze(args.inputs, options, env)


def write_parquet(analyses, directory: str) -> None:
    from rstscope.fleet import parquet

    parquet.write(analyses, Path(directory))


def release(analyses) -> None:
    """Stop what analyses still hold: processes streaming their rows to a document that was not written to
    the end (an error, Ctrl-C: a fleet's shards, a reader child, :mod:`rstscope.rowsplit`), and the shards'
    files."""
    for a in analyses:
        close = getattr(a.connections, "close", None)
        if close is not None:
            close()
