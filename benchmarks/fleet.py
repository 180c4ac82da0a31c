"""Fleet benchmark: eight 1M-packet pieces of short-connection traffic, one process vs --jobs 2 vs a
Dask LocalCluster of 2 workers.  Prints wall time, CPU time, speedup, peak RSS per process, the
machine's load, and whether the three documents have identical resets and connections.

    python benchmarks/fleet.py [--pieces 8] [--packets 1000000] [--workdir /tmp/rstscope-fleet-bench]

The capture is one continuous short-connection trace (tests/shortconns.py: handshakes, a request, a
response, closes and RSTs, 7-9 packets a connection, many open at once) cut by ``editcap -c``, so
connections cross every piece boundary.  Not a timed test: the figures depend on the machine and
its load (reported with them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import shortconns  # noqa: E402


def make_pieces(workdir: Path, pieces: int, packets: int) -> Path:
    directory = workdir / f"pieces-{pieces}x{packets}"
    if directory.is_dir() and len(list(directory.glob("*.pcap"))) == pieces:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    whole = workdir / "whole.pcap"
    written = shortconns.generate(str(whole), int(pieces * packets / 7.6) + 1000)
    per = -(-written // pieces)
    subprocess.run(["editcap", "-c", str(per), str(whole), str(directory / "trace.pcap")], check=True)
    whole.unlink()
    return directory


class PeakRss:
    """Peak RSS of each process of a tree (polled), by pid."""

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.peak, self._stop = roots, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for root in self.roots:
                try:
                    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        self.peak[p.pid] = max(self.peak.get(p.pid, 0), p.memory_info().rss)
            time.sleep(0.1)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run(label: str, directory: Path, out: Path, extra: list[str], watch: list[int]) -> dict:
    cmd = [sys.executable, "-m", "rstscope", "analyze", str(directory), "--json", "-o", str(out), *extra]
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    with PeakRss([proc.pid, *watch]) as rss:
        proc.wait()
    wall = time.perf_counter() - start
    after = os.times()
    if proc.returncode:
        raise SystemExit(f"{label}: exit {proc.returncode}")
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    others = [v for pid, v in rss.peak.items() if pid != proc.pid]
    return {"label": label, "wall": wall, "cpu_children": cpu, "parent_mb": rss.peak.get(proc.pid, 0) / 2**20,
            "worker_mb": max(others, default=0) / 2**20, "processes": len(rss.peak)}  # fmt: skip


def same(a: Path, b: Path) -> bool:
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    return x["resets"] == y["resets"] and x["connections"] == y["connections"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets per piece")
    parser.add_argument("--workdir", default="/tmp/rstscope-fleet-bench")
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    directory = make_pieces(workdir, args.pieces, args.packets)
    load = os.getloadavg()
    print(f"{args.pieces} pieces x ~{args.packets:,} packets in {directory}; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    results = [run("single process (--jobs 1)", directory, workdir / "single.json", ["--jobs", "1"], [])]
    results.append(run("--jobs 2", directory, workdir / "jobs2.json", ["--jobs", "2"], []))
    outs = [workdir / "single.json", workdir / "jobs2.json"]
    if not args.no_dask:
        from distributed import LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
            pids = [w.process.pid for w in cluster.workers.values()]
            results.append(run("Dask LocalCluster, 2 workers", directory, workdir / "dask.json",
                               ["--dask", cluster.scheduler_address], pids))  # fmt: skip
        outs.append(workdir / "dask.json")
    base = results[0]["wall"]
    print("peak RSS per process, MB: 'rstscope' is the command's own process (it computes evidence and writes the")
    print("document), 'others' the largest of its helpers (reader child, decoding and shard processes, Dask workers)")
    print(f"{'run':32} {'wall s':>8} {'speedup':>8} {'CPU s':>8} {'rstscope MB':>12} {'others MB':>10} {'procs':>6}")
    for r in results:
        print(f"{r['label']:32} {r['wall']:8.1f} {base / r['wall']:8.2f} {r['cpu_children']:8.1f} "
              f"{r['parent_mb']:12.0f} {r['worker_mb']:10.0f} {r['processes']:6}")  # fmt: skip
    print("CPU s: user + system time of the rstscope command and the processes it waited for (not the Dask workers)")
    identical = all(same(outs[0], o) for o in outs[1:])
    print(f"identical resets and connections in all runs: {identical}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
