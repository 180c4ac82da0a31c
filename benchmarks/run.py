"""Benchmark: rstscope analyze beside tshark and tcptrace, on four traffic shapes, in one run.

Demonstrates how fast each tool gets through the same classic pcap, end to end (process start to
exit), and the peak memory of its whole process tree.  The shapes (see ``shapes.py``):

* ``short``: 1M packets of short connections (about 100k of them, 8 % ending in RSTs, 10 % IPv6);
* ``long``: 1M packets of long flows (``make_capture.py``: 200 concurrent connections of ~450 packets);
* ``flood``: 1M packets of a listener under a SYN flood (half-open handshakes, SYN-ACK
  retransmissions, resets from the listener);
* ``many``: one million short connections in one file (about 10M packets).

    python benchmarks/run.py                                   # everything (long: tens of minutes)
    python benchmarks/run.py --shapes short long --repeat 1    # a quick look
    python benchmarks/run.py --packets 100000 --many-connections 100000

Per shape: ``rstscope analyze FILE`` (the text summary and RST table, to /dev/null) and ``rstscope
analyze FILE --json -o OUT`` (median of ``--repeat`` runs each), ``tshark -T fields`` with the
per-packet TCP fields rstscope reads (reads at most ``--tshark-packets`` packets), and ``tcptrace
-n`` (Debian package tcptrace; the whole file), once each.  Peak RSS is the largest sum of RSS over
the process and all its descendants, sampled every 10 ms (rstscope reads large files in a forked
child), or the process's own peak if that is larger: GNU ``time`` (Debian package time) runs each
command and reports it exactly, so a tool that ends within one sampling period still shows its peak
(tcptrace read a 3,000-packet file before the first sample saw it).  CPU is the user + system time of
the process and the children it waited for.  Before and after, a loop of Python is timed alone and then
two at once: rstscope uses both cores, and on a virtual machine the second may be shared with work
outside it, which the figures of the run then show.  Files are generated once, seeded, into
``benchmarks/data/`` (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bytecode  # noqa: E402
import make_capture  # noqa: E402
import shapes  # noqa: E402

PYTHON = sys.executable
SHAPES = ("short", "long", "flood", "many")
TSHARK_FIELDS = ("frame.number", "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
                 "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len", "tcp.window_size_value")  # fmt: skip


@dataclass
class Result:
    shape: str
    tool: str
    packets: int
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


GNU_TIME = "/usr/bin/time"
"""GNU time: ``-f %M`` is the peak RSS of the process it runs (``wait4``'s ``ru_maxrss``).  That figure
cannot be had from here: a child spawned by this process reports this process's own peak as its own
(``/bin/true`` spawned from a process holding 500 MB: 511 MB; through GNU time: 1 MB)."""


def run_once(cmd: list[str]) -> Run:
    """Run ``cmd`` (output to /dev/null), timing it and sampling its process tree's RSS every 10 ms."""
    import psutil

    wrapped = os.access(GNU_TIME, os.X_OK)
    own_peak = None
    if wrapped:
        fd, name = tempfile.mkstemp(prefix="rstscope-bench-", suffix=".maxrss")
        os.close(fd)
        own_peak = Path(name)
    start = time.perf_counter()
    full = [GNU_TIME, "-f", "%M", "-o", str(own_peak), *cmd] if wrapped else cmd
    proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            while not done.is_set():
                with contextlib.suppress(psutil.Error):
                    tree = root.children(recursive=True) if wrapped else [root, *root.children(recursive=True)]
                    peak = max(peak, sum(p.memory_info().rss for p in tree))
                done.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    text = ""
    if own_peak is not None:
        text = own_peak.read_text().strip()
        own_peak.unlink()
    if proc.returncode != 0:
        lines = stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(f"benchmark: {' '.join(cmd[:3])} failed ({proc.returncode}): {lines[-1] if lines else ''}")
    if text:
        peak = max(peak, int(text.splitlines()[-1]) * 1024)  # GNU time reports KB
    return Run(seconds, usage.ru_utime + usage.ru_stime, peak / 2**20)


def measure(cmd: list[str], repeat: int) -> tuple[Run, str]:
    """The median run by wall time (its CPU time), and the highest peak RSS of all runs."""
    runs = [run_once(cmd) for _ in range(repeat)]
    median = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    note = f"median of {repeat}" if repeat > 1 else "one run"
    if repeat > 1:
        note += f" ({min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f} s)"
    return Run(median.seconds, median.cpu_seconds, max(r.peak_rss_mb for r in runs)), note


def capture(shape: str, args: argparse.Namespace) -> tuple[Path, int]:
    """The shape's capture file (generated on first use) and its packet count."""
    if shape == "many":
        count, unit = args.many_connections, "conns"
    else:
        count, unit = args.packets, "pkts"
    path = args.data / f"{shape}-{count}{unit}-seed{args.seed}.pcap"
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        return path, json.loads(sidecar.read_text())["packets"]
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    if shape == "long":
        meta = {"packets": make_capture.generate(str(path), count, seed=args.seed)}
    else:
        spec = shapes.SHAPES[shape]
        conns = count if shape == "many" else shapes.connections_for(spec, count)
        meta = vars(shapes.generate(path, spec, conns, seed=args.seed))
    sidecar.write_text(json.dumps(meta))
    print(f"  {meta['packets']:,} packets in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return path, meta["packets"]


def bench_shape(shape: str, args: argparse.Namespace) -> list[Result]:
    path, packets = capture(shape, args)
    rstscope = shutil.which("rstscope", path=str(Path(PYTHON).parent)) or "rstscope"
    out = args.data / f"out-{shape}.json"
    results = []
    for tool, cmd in (
        ("rstscope analyze", [rstscope, "analyze", str(path)]),
        ("rstscope analyze --json -o", [rstscope, "analyze", str(path), "--json", "-o", str(out)]),
    ):
        print(f"  {shape}: {tool} x{args.repeat} ...", file=sys.stderr, flush=True)
        run, note = measure(cmd, args.repeat)
        results.append(Result(shape, tool, packets, run.seconds, run.cpu_seconds, run.peak_rss_mb, note))
    out.unlink(missing_ok=True)
    if "tshark" not in args.skip and shutil.which("tshark"):
        n = min(packets, args.tshark_packets)
        cmd = ["tshark", "-n", "-r", str(path), "-c", str(n), "-T", "fields"]
        for f in TSHARK_FIELDS:
            cmd += ["-e", f]
        print(f"  {shape}: tshark ...", file=sys.stderr, flush=True)
        run, note = measure(cmd, 1)
        if n < packets:
            note += f", first {n:,} packets"
        results.append(Result(shape, "tshark -T fields", n, run.seconds, run.cpu_seconds, run.peak_rss_mb, note))
    if "tcptrace" not in args.skip and shutil.which("tcptrace"):
        print(f"  {shape}: tcptrace ...", file=sys.stderr, flush=True)
        run, note = measure(["tcptrace", "-n", str(path)], 1)
        results.append(Result(shape, "tcptrace -n", packets, run.seconds, run.cpu_seconds, run.peak_rss_mb, note))
    return results


def table(results: list[Result]) -> str:
    lines = [
        "| shape | tool | packets | wall s | CPU s | packets/s | peak RSS | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.shape} | {r.tool} | {r.packets:,} | {r.seconds:.2f} | {r.cpu_seconds:.2f} | {r.rate:,.0f} | "
            f"{r.peak_rss_mb:.0f} MB | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets per file (short, long, flood)")
    parser.add_argument("--many-connections", type=int, default=1_000_000, help="connections in the 'many' file")
    parser.add_argument("--repeat", type=int, default=3, help="rstscope runs per measurement (median)")
    parser.add_argument("--tshark-packets", type=int, default=1_000_000, help="tshark reads at most this many")
    parser.add_argument("--skip", nargs="*", choices=("tshark", "tcptrace"), default=[], help="tools not to run")
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--data", type=Path, default=HERE / "data", help="where the generated captures go")
    parser.add_argument("--capacity-loop", type=int, default=20_000_000, metavar="N",
                        help="additions in the loop that times the cores before and after (0: none)")  # fmt: skip
    args = parser.parse_args(argv)
    bytecode.compile_package()  # timed runs must not compile modules from source
    args.data.mkdir(parents=True, exist_ok=True)
    before = capacity(args.capacity_loop)
    results: list[Result] = []
    for shape in args.shapes:
        results.extend(bench_shape(shape, args))
        print(table([r for r in results if r.shape == shape]), file=sys.stderr, flush=True)
    print(table(results))
    load = os.getloadavg()[0]
    print(f"\nmachine: {os.cpu_count()} cores, load average {load:.1f} at the end (other work on the machine "
          f"slows every tool); target for rstscope: >= 1,000,000 packets/s and <= 200 MB peak RSS")  # fmt: skip
    print(f"rstscope: median of {args.repeat} run(s) by wall time; tshark and tcptrace: one run")
    if args.capacity_loop:
        print(f"the machine's cores, {CAPACITY_NOTE}: before {before}, after {capacity(args.capacity_loop)}")
    return 0


CAPACITY_NOTE = "a loop of Python alone / two at once (a second core shared with other work shows as a slower second)"


def capacity(additions: int) -> str:
    """How fast this machine runs one Python loop alone, then two at once: rstscope uses both cores, and on a
    virtual machine the second may be shared with work outside it (the figures of a run depend on it).
    Nothing if ``additions`` is 0."""
    if not additions:
        return ""
    code = f"import time\nt = time.perf_counter()\ni = 0\nwhile i < {additions}: i += 1\nprint(time.perf_counter() - t)"

    def timed(count: int) -> list[float]:
        loop = [PYTHON, "-c", code]
        procs = [subprocess.Popen(loop, stdout=subprocess.PIPE, text=True) for _ in range(count)]
        return sorted(float(proc.communicate()[0]) for proc in procs)  # each loop's own time

    alone, both = timed(1), timed(2)
    return f"{alone[0]:.2f} s / {both[0]:.2f} and {both[1]:.2f} s"


if __name__ == "__main__":
    sys.exit(main())
