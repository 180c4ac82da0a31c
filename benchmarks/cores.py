"""What two cores of this machine give on rstscope's own work: one analysis alone, then two at once.

Issue 11 asks ``--jobs 2`` for 1.7x a single process.  That is bounded by what the machine gives
when both of its cores run rstscope's work, and by how much of a second core the single process
already uses (its reader child decodes while it tracks).  This measures the first: the same analysis
(read in process, track, evidence and verdicts, the ``--json`` document to /dev/null) in a fresh
process alone, then in two processes started together, each ``--repeat`` times, alternating.

    python benchmarks/cores.py [FILE] [--repeat 3]

FILE defaults to the first piece of ``benchmarks/fleet.py``'s capture (short connections, 1M
packets), so the work is the fleet's.  Prints per run the wall and CPU seconds of each process, then:

* throughput of two at once: 2 x (alone's wall) / (the pair's wall): 2.0 if the cores do not slow
  each other;
* CPU per analysis, two at once over alone: how much slower each core runs the same work.

Not a timed test: the figures are the machine's, at the load it had (printed).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PIECES = Path("/tmp/rstscope-fleet-bench/pieces-8x1000000")
"""Where benchmarks/fleet.py keeps its pieces (``editcap`` names them ``trace_00000_<time>.pcap`` ...)."""


def _analyze(path: str, start: multiprocessing.synchronize.Event, out) -> None:
    """One analysis in this process, no reader child; (wall, CPU seconds) to ``out``."""
    from rstscope import analysis, prefetch
    from rstscope.commands import analyze

    prefetch.available = lambda: False  # read in this process: the work measured is one core's
    start.wait()
    wall, cpu = time.perf_counter(), time.process_time()
    result = analysis.analyze_capture(path)
    with open(os.devnull, "w") as sink:
        analyze.write_json([result], sink)
    out.put((time.perf_counter() - wall, time.process_time() - cpu))


def run(path: str, together: int) -> list[tuple[float, float]]:
    """``together`` analyses started at once, each in a fresh process: their (wall, CPU) seconds."""
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no state shared with this one
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_analyze, args=(path, start, out)) for _ in range(together)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let both import before the clock starts
    start.set()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", default=str(min(PIECES.glob("trace_*.pcap"), default=PIECES)))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.file).is_file():
        raise SystemExit(f"cores.py: no such file: {args.file} (run benchmarks/fleet.py once to make it)")
    print(f"{args.file}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} cores")
    alone, pair = [], []
    for k in range(args.repeat):
        (a,) = run(args.file, 1)
        two = run(args.file, 2)
        alone.append(a)
        pair.append(two)
        print(f"  round {k + 1}: alone wall {a[0]:.2f} s CPU {a[1]:.2f} s | two at once: "
              + ", ".join(f"wall {w:.2f} s CPU {c:.2f} s" for w, c in two)
              + f" | throughput {2 * a[0] / max(w for w, _ in two):.2f}x")  # fmt: skip
    alone_wall = statistics.median(w for w, _ in alone)
    alone_cpu = statistics.median(c for _, c in alone)
    pair_wall = statistics.median(max(w for w, _ in two) for two in pair)
    pair_cpu = statistics.median(c for two in pair for _, c in two)
    print(f"medians: alone {alone_wall:.2f} s wall, {alone_cpu:.2f} CPU s; two at once {pair_wall:.2f} s wall, "
          f"{pair_cpu:.2f} CPU s each")  # fmt: skip
    print(f"throughput of two at once: {2 * alone_wall / pair_wall:.2f}x one alone")
    print(f"CPU per analysis, two at once over alone: {pair_cpu / alone_cpu:.2f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
