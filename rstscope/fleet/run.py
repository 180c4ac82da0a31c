"""``analyze`` over a fleet of files: which engine reads each group of pieces.

Run directories and read-once inputs (``-``, FIFOs) are analysed as before, one at a time; every
other name (DIR, GLOB, FILE) goes through :func:`rstscope.fleet.pieces.discover`.  A group is read
in this process when one job is asked for or when it is small (:data:`PARALLEL_MIN_BYTES`: starting
processes costs more than it saves), else in ``jobs`` processes (:mod:`.shards`) or on a Dask
cluster (:mod:`.cluster`).  Every engine gives the same Analysis.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rstscope import api, inputs
from rstscope.analysis import Analysis
from rstscope.fleet import pieces as P
from rstscope.fleet import stitch
from rstscope.fleet.progress import Progress
from rstscope.status import InputError

PARALLEL_MIN_BYTES = 32 << 20
"""Below this many bytes of captures, the default ``--jobs`` reads them in this process."""


@dataclass(kw_only=True)
class Options:
    jobs: int | None = None
    """Processes; None: the number of cores, for inputs of at least PARALLEL_MIN_BYTES."""
    dask: str | None = None
    by_host: str | None = None
    max_gap_s: float = P.MAX_GAP_S
    zeek_timers: bool = False
    connection_rows: bool = True
    """Whether the analysis must give connection objects (the text summary, CSV, Parquet); with ``--json``
    alone the shards encode every row themselves and keep their connections' rows to themselves."""


def is_single(name: str) -> bool:
    """Whether a name is analysed on its own as before: a run directory or a read-once input."""
    if inputs.is_read_once(name):
        return True
    path = Path(name)
    if path.is_dir():
        from rstscope.lab import rundir

        return rundir.is_run_dir(path)
    return False


def jobs_for(options: Options, size: int) -> int:
    if options.jobs is not None:
        if options.jobs < 1:
            raise InputError(f"--jobs {options.jobs}: give at least 1")
        return options.jobs
    return (os.cpu_count() or 1) if size >= PARALLEL_MIN_BYTES else 1


def analyze(names: list[str], options: Options, env) -> tuple[list[Analysis], list[str]]:
    """The analyses of all inputs, and the names that failed (their errors already on stderr)."""
    analyses: list[Analysis] = []
    failed: list[str] = []

    def error(message: str) -> None:
        env.stderr.write(f"rstscope: error: {message}\n")

    singles = [n for n in names if is_single(n)]
    for name in singles:
        try:
            path, stream = inputs.open_stream(name, env) if inputs.is_read_once(name) else (Path(name), None)
            analyses.append(api.analyze(path, stream=stream, zeek_timers=options.zeek_timers))
        except InputError as exc:
            if len(names) == 1:
                raise
            error(str(exc))
            failed.append(name)
    rest = [n for n in names if n not in singles]
    if not rest:
        return analyses, failed
    groups, warnings = P.discover(rest, by_host=options.by_host, on_error=lambda m: (error(m), failed.append(m)))
    for warning in warnings:
        env.warn(warning)
    size = P.total_size(groups)
    jobs = jobs_for(options, size)
    progress = Progress(env, pieces=sum(len(g) for g in groups), size=size)
    try:
        for k, group in enumerate(groups):
            # The last group's shards may hand their rows straight to the document (--json alone): nothing
            # runs after it while they wait for the document to be written.
            stream = k == len(groups) - 1 and not options.connection_rows
            analyses.extend(_analyze_group(group, options, jobs, progress, env, stream=stream))
    finally:
        progress.done()
    return analyses, failed


def _analyze_group(group: list[P.Piece], options: Options, jobs: int, progress: Progress, env, *,
                   stream: bool = False) -> list[Analysis]:  # fmt: skip
    report = progress.group(len(group))
    if options.dask:
        from rstscope.fleet import cluster

        return cluster.analyze_group(group, options, address=options.dask, progress=report, warn=env.warn)
    if jobs > 1:
        from rstscope.fleet import shards

        return shards.analyze_group(group, options, jobs=jobs, progress=report, warn=env.warn, stream=stream)
    return stitch.analyze_group(
        group, max_gap_s=options.max_gap_s, zeek_timers=options.zeek_timers, progress=report, warn=env.warn
    )
