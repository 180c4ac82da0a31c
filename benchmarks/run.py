"""Benchmark: rstscope analyze against tshark, scapy and pyshark, side by side, in one run.

Demonstrates how fast each tool gets through the same classic pcap, end to end
(process start to exit), and its peak memory (the child's ru_maxrss).

    python benchmarks/run.py                  # 1M and 10M packets (about 2 minutes)
    python benchmarks/run.py --sizes 1000000  # one size only

Each tool runs in its own process.  rstscope runs ``rstscope analyze FILE
--summary-only`` (the whole pipeline: read, track, evidence, verdicts,
report).  tshark prints the per-packet TCP fields rstscope reads (``-T
fields``).  scapy's PcapReader and pyshark dissect every packet in Python and
are 100-250 times slower, so they read only the first ``--slow-tool-packets``
packets of the file; their rate is still packets per second, and the table
says how many they read.  tshark reads at most ``--tshark-packets`` (default:
all of the 1M file, the first 1M of larger ones).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_capture import generate  # noqa: E402

PYTHON = sys.executable
SCAPY_SNIPPET = """
import sys
from scapy.utils import PcapReader
n = 0
with PcapReader(sys.argv[1]) as r:
    for pkt in r:
        n += 1
        if n >= int(sys.argv[2]):
            break
print(n)
"""
PYSHARK_SNIPPET = """
import sys
import pyshark
cap = pyshark.FileCapture(sys.argv[1], keep_packets=False, display_filter="tcp")
n = 0
for pkt in cap:
    _ = (pkt.tcp.seq_raw, pkt.tcp.ack_raw, pkt.tcp.flags)
    n += 1
    if n >= int(sys.argv[2]):
        break
cap.close()
print(n)
"""


@dataclass
class Result:
    tool: str
    capture: str
    packets: int
    seconds: float
    peak_rss_mb: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


def wall_time(cmd: list[str]) -> float:
    """Run ``cmd`` unobserved; return its wall-clock seconds."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(f"benchmark: {' '.join(cmd[:3])} failed ({proc.returncode}): {err[-1] if err else ''}")
    return seconds


def peak_rss_mb(cmd: list[str]) -> float:
    """Run ``cmd`` again, watched: the largest sum of RSS over the process and all its descendants.

    Sampled every 5 ms with psutil (rstscope reads large files in a child process; pyshark runs
    tshark).  A separate run, because the sampling itself takes CPU from the measured program."""
    import psutil

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]))
        time.sleep(0.005)
    return peak / 2**20


def measure(cmd: list[str], *, repeat: int = 1) -> tuple[float, float]:
    """(median wall seconds over ``repeat`` runs, peak RSS in MB from one more, watched run)."""
    times = sorted(wall_time(cmd) for _ in range(repeat))
    return times[len(times) // 2], peak_rss_mb(cmd)


def run_rstscope(path: Path, packets: int) -> Result:
    rstscope = shutil.which("rstscope") or str(Path(PYTHON).parent / "rstscope")
    seconds, rss = measure([rstscope, "analyze", str(path), "--summary-only"], repeat=3)
    return Result("rstscope analyze", path.name, packets, seconds, rss, "median of 3 runs")


def run_tshark(path: Path, packets: int, limit: int) -> Result | None:
    if not shutil.which("tshark"):
        return None
    n = min(packets, limit)
    fields = ["frame.number", "frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport", "tcp.dstport",
              "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len", "tcp.window_size_value"]  # fmt: skip
    cmd = ["tshark", "-n", "-r", str(path), "-c", str(n), "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    seconds, rss = measure(cmd)
    note = "" if n == packets else f"first {n:,} packets"
    return Result("tshark -T fields", path.name, n, seconds, rss, note)


def run_python_tool(name: str, snippet: str, path: Path, limit: int) -> Result:
    seconds, rss = measure([PYTHON, "-c", snippet, str(path), str(limit)])
    return Result(name, path.name, limit, seconds, rss, f"first {limit:,} packets")


def table(results: list[Result]) -> str:
    head = (
        f"| {'tool':<22} | {'capture':<14} | {'packets':>11} | {'seconds':>8} | {'packets/s':>11} "
        f"| {'peak RSS':>9} | note"
    )
    lines = [head, "|" + "|".join("-" * w for w in (24, 16, 13, 10, 13, 11, 30))]
    for r in results:
        lines.append(
            f"| {r.tool:<22} | {r.capture:<14} | {r.packets:>11,} | {r.seconds:>8.2f} | {r.rate:>11,.0f} | "
            f"{r.peak_rss_mb:>6.0f} MB | {r.note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--data", type=Path, default=HERE / "data", help="where the generated captures go")
    parser.add_argument("--tshark-packets", type=int, default=1_000_000)
    parser.add_argument("--slow-tool-packets", type=int, default=20_000)
    parser.add_argument("--no-slow-tools", action="store_true", help="skip scapy and pyshark")
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    for size in args.sizes:
        path = args.data / f"bench-{size // 1_000_000}M.pcap" if size >= 1_000_000 else args.data / f"bench-{size}.pcap"
        if not path.exists() or path.stat().st_size < 24 + size * 82:
            print(f"generating {path} ({size:,} packets)...", file=sys.stderr)
            generate(str(path), size)
        print(f"measuring {path.name} ...", file=sys.stderr)
        results.append(run_rstscope(path, size))
        tshark = run_tshark(path, size, args.tshark_packets)
        if tshark:
            results.append(tshark)
        if not args.no_slow_tools and size == min(args.sizes):
            results.append(run_python_tool("scapy PcapReader", SCAPY_SNIPPET, path, args.slow_tool_packets))
            results.append(run_python_tool("pyshark FileCapture", PYSHARK_SNIPPET, path, args.slow_tool_packets))
    print(table(results))
    print(f"\nmachine: {os.cpu_count()} cores; rstscope peak RSS limit 200 MB; target 1,000,000 packets/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
