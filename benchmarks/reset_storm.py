"""Memory on reset storms (issue 10): peak RSS and CPU time of the tracker alone and of ``analyze --json``.

Demonstrates that the tracker's memory does not grow with the number of connections that saw a RST.
Shapes, generated into a scratch directory (``tests/shortconns.py``'s writer):

* ``reset-ending``: N connections, each a handshake, a request and a RST|ACK from the server;
* ``bare-rsts``: N RSTs, each alone on its own 4-tuple;
* ``repeated-syns``: one connection whose SYN is sent N times.

    python benchmarks/reset_storm.py --connections 200000 [--full] [--keep DIR]

Each figure is measured in a fresh process: ``tracker`` feeds the capture to the Tracker, finishes, and
reads back every connection that saw a RST as a ``Connection`` (``ConnectionStore.with_resets``; no
evidence, no document): the read back is most of its CPU (1M bare RSTs: the tracker 7.7 s, the read back
23 s, measured apart); ``--full`` also runs ``rstscope analyze FILE`` (the terminal summary and
table, to /dev/null), ``analyze FILE --json -o OUT`` and ``analyze FILE --csv -o OUT``: evidence and
verdicts are computed connection by connection and only ~40 bytes of columns stay per RST
(``rstscope.reset_table``), so these too must stay within 200 MB (issue 10 item 7).  CPU is user +
system seconds; peak MB is the RSS of the process and its children (the prefetch reader) summed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from benchmarks import bytecode  # noqa: E402
from tests import shortconns  # noqa: E402

TRACKER_ONLY = """
import sys
from rstscope.connections import Tracker
from rstscope.reader import open_capture
tracker = Tracker()
with open_capture(sys.argv[1], chunk_packets=65536) as cap:
    for chunk in cap.chunks():
        tracker.feed(chunk)
store = tracker.finish()
print(len(store), sum(1 for _ in store.with_resets()))
"""

STAGES = """
import io, os, resource, sys, time
import psutil
from rstscope import document, reset_table
from rstscope.analysis import Analysis, CaptureInfo
from rstscope.connections import Tracker
from rstscope.reader import open_capture
from rstscope.report import text
me = psutil.Process()
def say(stage):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"  {stage:<44} RSS {me.memory_info().rss >> 20:5,} MB, peak so far {peak:5,} MB, "
          f"CPU {time.process_time():7.1f} s", flush=True)
tracker = Tracker()
with open_capture(sys.argv[1], chunk_packets=65536) as cap:
    for chunk in cap.chunks():
        tracker.feed(chunk)
    info = CaptureInfo(path=sys.argv[1], format=cap.format, compressed=False, link_types=[], stats=cap.stats)
store = tracker.finish()
say("tracked (Tracker.finish)")
table = reset_table.build(store.with_resets(), store.host_ttl)
say(f"evidence + verdicts ({len(table):,} RSTs, rows on disk: {table._spill.on_disk})")
a = Analysis(capture=info, connections=store, resets=table)
with open(os.devnull, "w") as sink:
    doc = document.summary_document([a])
    text.write_summary(doc, sink)
    text.write_table(doc, sink)
    say("terminal summary + table")
    text.write_csv(document.summary_document([a]), sink)
    say("--csv")
    a.listen_queue = None
    document.write_json([a], sink)
    say("--json")
"""
"""``--stages``: one process, the RSS after each stage (what the tracker holds, what the outputs add)."""


def make(shape: str, path: Path, n: int) -> int:
    rng = shortconns.np.random.default_rng(1)
    if shape == "repeated-syns":
        syn = shortconns.template(*[(shortconns.CLIENT, shortconns.SYN, 0, 0, 0)] * n)
        return shortconns.write_pcap(str(path), shortconns.connections_table(["s"], {"s": syn}, rng, step_ns=1000),
                                     ipv6_every=0)  # fmt: skip
    template = {"reset-ending": shortconns.RESET_ENDING, "bare-rsts": shortconns.BARE_RST}[shape]
    written, batch = 0, 100_000
    for first in range(0, n, batch):
        count = min(batch, n - first)
        cols = shortconns.connections_table(["x"] * count, {"x": template}, rng, first_conn=first)
        cols["ts"] += first * 20_000
        written += shortconns.write_pcap(str(path), cols, mode="wb" if first == 0 else "ab")
    return written


def _packets(path: Path) -> int:
    """Records in a capture kept from an earlier run (--keep)."""
    from rstscope.reader import open_capture

    with open_capture(path) as cap:
        return sum(len(chunk) for chunk in cap.chunks())


def measure(argv: list[str]) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, peak RSS in MB summed over the process and its children) of one command
    (rstscope reads large files in a forked child: the sum is what the machine pays)."""
    start, before = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = psutil.Popen(argv, stdout=subprocess.DEVNULL, cwd=REPO, env={"PYTHONPATH": str(REPO)})
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree))
        except psutil.Error:
            pass  # a child ended between the listing and the reading
        time.sleep(0.02)
    wall = time.monotonic() - start
    if proc.returncode:
        raise SystemExit(f"{argv} failed with exit status {proc.returncode}")
    # The command's CPU and its children's (it waits for them), once each: summing each process's own
    # figures counted a child twice, in its own and in what its parent reaped.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return cpu, wall, peak // 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200_000, help="connections (or RSTs, or SYNs) per shape")
    storms = ["reset-ending", "bare-rsts", "repeated-syns"]
    parser.add_argument("--shapes", nargs="+", choices=storms, default=storms)
    parser.add_argument("--full", action="store_true", help="also measure rstscope analyze --json")
    parser.add_argument("--keep", type=Path, help="write the captures here and keep them")
    parser.add_argument("--stages", action="store_true",
                        help="also one process printing its RSS after tracking and after each output")  # fmt: skip
    args = parser.parse_args(argv)
    bytecode.compile_package()  # timed runs must not compile modules from source
    print("shape          packets    run       CPU s   wall s  peak MB", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for shape in args.shapes:
            path = where / f"{shape}-{args.connections}.pcap"
            packets = make(shape, path, args.connections) if not path.exists() else _packets(path)
            runs = [("tracker", [sys.executable, "-c", TRACKER_ONLY, str(path)])]
            if args.full:
                analyze = [sys.executable, "-m", "rstscope", "analyze", str(path)]
                runs.append(("text", analyze))
                runs.append(("--json", [*analyze, "--json", "-o", str(where / f"{shape}.json")]))
                runs.append(("--csv", [*analyze, "--csv", "-o", str(where / f"{shape}.csv")]))
            for name, command in runs:
                cpu, wall, peak = measure(command)
                print(f"{shape:14} {packets:>9,}  {name:8} {cpu:7.2f} {wall:8.2f} {peak:8,}", flush=True)
            if args.stages:
                print(f"{shape}, stage by stage in one process:", flush=True)
                subprocess.run([sys.executable, "-c", STAGES, str(path)], cwd=REPO, env={"PYTHONPATH": str(REPO)},
                               check=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
