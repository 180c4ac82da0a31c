"""Fleet benchmark: eight 1M-packet pieces of short-connection traffic, one process vs --jobs 2 vs a
Dask LocalCluster of 2 workers.  Prints wall time, CPU time, speedup, peak RSS per process, the
machine's load, and whether the three documents have identical resets and connections.

    python benchmarks/fleet.py [--pieces 8] [--packets 1000000] [--workdir /tmp/rstscope-fleet-bench] [--ceiling]

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
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import bytecode  # noqa: E402
from rstscope.fleet import timing  # noqa: E402
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
    """Peak RSS and last-seen CPU seconds (user + system) of each process of a tree (polled), by pid.

    The peak is the kernel's own high-water mark (``VmHWM``), so a peak between two polls is not
    missed; only what a process adds in its last :data:`POLL_S` before it exits can be.  The roots that
    lived before the run (Dask workers) have their mark reset first (``clear_refs``), else it would be
    the peak of their earlier work.  Polling every 0.1 s cost 2.8 % of a core (psutil, a tree of 7
    processes): on two busy cores that is taken from the engine measured."""

    POLL_S = 0.25

    def __init__(self, roots: list[int]) -> None:
        self.roots, self.peak, self.cpu, self.first_cpu, self._stop = roots, {}, {}, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            for root in self.roots:
                try:
                    procs = [psutil.Process(root), *psutil.Process(root).children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for p in procs:
                    with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                        self.peak[p.pid] = max(self.peak.get(p.pid, 0), _high_water(p.pid))
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
                        self.first_cpu.setdefault(p.pid, t.user + t.system)
            if self._stop.wait(self.POLL_S):
                return

    def __enter__(self):
        for pid in self.roots[1:]:  # the first root is the command, started just now
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _high_water(pid: int) -> int:
    """A process's peak resident set so far, in bytes (``VmHWM`` of /proc/PID/status)."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def run(label: str, directory: Path, out: Path, extra: list[str], watch: list[int], breakdown: Path | None,
        env: dict | None = None) -> dict:  # fmt: skip
    argv = ["analyze", str(directory), "--json", "-o", str(out), *extra]
    cmd = [sys.executable, "-m", "rstscope", *argv]
    if breakdown is not None:
        breakdown.unlink(missing_ok=True)
        os.environ[timing.ENV] = str(breakdown)  # for this command and the processes it starts
        cmd = [sys.executable, __file__, "--as-rstscope", *argv]
    # Each run starts alike: no document left by an interrupted run (replacing a 1.9 GB file frees its
    # blocks inside the command's final rename: 0.47 s, measured).
    out.unlink(missing_ok=True)
    return measured(label, [cmd], watch, env)


def measured(label: str, cmds: list[list[str]], watch: list[int], env: dict | None = None) -> dict:
    """Run ``cmds`` at once and wait for them all: wall time, CPU time and each process's peak RSS."""
    os.sync()  # no writing-back of the previous run's files still going on
    before = os.times()
    start = time.perf_counter()
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env) for cmd in cmds]
    own = [p.pid for p in procs]
    with PeakRss([*own, *watch]) as rss:
        for p in procs:
            p.wait()
    wall = time.perf_counter() - start
    after = os.times()
    if any(p.returncode for p in procs):
        raise SystemExit(f"{label}: exit {[p.returncode for p in procs]}")
    waited = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    # Forkserver children and Dask workers are not the command's waited-for children: their CPU is
    # polled (a process's last reading; a Dask worker's less its reading when the run began).
    by_pid = {pid: c - (rss.first_cpu[pid] if pid in watch else 0.0) for pid, c in rss.cpu.items()}
    cpu = max(waited, sum(by_pid.values()))
    others = [v for pid, v in rss.peak.items() if pid not in own]
    parent = max(rss.peak.get(pid, 0) for pid in own)
    return {"label": label, "wall": wall, "cpu_children": cpu, "parent_mb": parent / 2**20,
            "worker_mb": max(others, default=0) / 2**20, "processes": len(rss.peak), "pid": own[0],
            "cpu_by_pid": by_pid, "watch": watch, "load": os.getloadavg()}  # fmt: skip


def as_rstscope(argv: list[str]) -> int:
    """``rstscope ARGV`` with the command's own phases timed too: the evidence and verdicts
    (``analysis_of``) and the document's writing (``write_json``)."""
    from rstscope import analysis, cli
    from rstscope.commands import analyze

    def timed(module, name: str, phase: str) -> None:
        inner = getattr(module, name)

        def wrapper(*args, **kwargs):
            with timing.phase("parent", phase):
                return inner(*args, **kwargs)

        setattr(module, name, wrapper)

    timed(analysis, "analysis_of", "evidence and verdicts")
    timed(analyze, "write_json", "write the document")
    with timing.phase("parent", "whole command"):
        status = cli.run(argv)
    return status


def print_breakdown(result: dict, path: Path) -> None:
    """Per phase: wall and CPU seconds summed over the processes that ran it (and how many did)."""
    rows: dict[tuple[str, str], list[float]] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        row = rows.setdefault((r["role"], r["phase"]), [0.0, 0.0, set()])
        row[0] += r["wall"]
        row[1] += r["cpu"]
        row[2].add(r["pid"])
    print(f"  {result['label']}: wall {result['wall']:.1f} s, load average before/after "
          f"{result['load'][0]:.2f}; per phase, summed over processes")  # fmt: skip
    print(f"    {'process':10} {'phase':36} {'wall s':>8} {'CPU s':>8} {'procs':>6}")
    for (role, phase), (wall, cpu, pids) in rows.items():
        print(f"    {role:10} {phase:36} {wall:8.1f} {cpu:8.1f} {len(pids):6}")
    by_pid = result["cpu_by_pid"]
    mine = by_pid.get(result["pid"], 0.0)
    helpers = {pid: c for pid, c in by_pid.items() if pid != result["pid"]}
    print(f"    CPU s by process (polled): rstscope {mine:.1f}; helpers "
          + (", ".join(f"{c:.1f}" for c in sorted(helpers.values(), reverse=True)) or "none")
          + f"; {sum(by_pid.values()) / result['wall']:.2f} cores busy on average")  # fmt: skip


def same(a: Path, b: Path) -> bool:
    """Identical resets and connections: byte-identical documents (compared in blocks), else parsed."""
    if a.stat().st_size == b.stat().st_size:
        with open(a, "rb") as x, open(b, "rb") as y:
            while (block := x.read(1 << 24)) == y.read(1 << 24):
                if not block:
                    return True
    x, y = json.loads(a.read_text()), json.loads(b.read_text())  # a 1M-packet piece's document: GBs
    return x["resets"] == y["resets"] and x["connections"] == y["connections"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=8)
    parser.add_argument("--packets", type=int, default=1_000_000, help="packets per piece")
    parser.add_argument("--workdir", default="/tmp/rstscope-fleet-bench")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--dask-profiler", action="store_true",
                        help="leave the Dask workers' profiler on (off by default, as the README advises)")  # fmt: skip
    parser.add_argument(
        "--only",
        choices=["single", "jobs", "dask"],
        action="append",
        help="run only these (repeatable; the documents are compared among those run)",
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the engines N times in turn; print each round and the medians")  # fmt: skip
    parser.add_argument("--ceiling", action="store_true",
                        help="also run the machine's ceiling each round: the first and the second half of the "
                             "pieces as two independent one-process commands at the same time")  # fmt: skip
    parser.add_argument("--breakdown", action="store_true",
                        help="also time each phase in each process (decode, partition, tracking, barrier waits, "
                             "merge, evidence, output) and print it")  # fmt: skip
    if sys.argv[1:2] == ["--as-rstscope"]:
        return as_rstscope(sys.argv[2:])
    args = parser.parse_args()
    bytecode.compile_package()  # timed runs must not compile modules from source
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    directory = make_pieces(workdir, args.pieces, args.packets)
    load = os.getloadavg()
    print(f"{args.pieces} pieces x ~{args.packets:,} packets in {directory}; load average {load[0]:.2f} "
          f"{load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    wanted = set(args.only or ["single", "jobs", "dask"]) - ({"dask"} if args.no_dask else set())
    rounds: list[list[dict]] = []
    identical = True
    for round_no in range(1, args.repeat + 1):
        if args.repeat > 1:
            print(f"round {round_no} of {args.repeat}")
        results = one_round(args, workdir, directory, wanted)
        identical &= all(same(results[0]["out"], r["out"]) for r in results[1:])
        for r in results:
            r["out"].unlink(missing_ok=True)  # a document of 8 x 1M packets is 1.9 GB
        if args.ceiling:
            results.append(run_halves(workdir, directory))
        print_round(results)
        rounds.append(results)
    if args.repeat > 1:
        print_medians(rounds)
    print(f"identical resets and connections in all runs: {identical}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if identical else 1


def one_round(args, workdir: Path, directory: Path, wanted: set[str]) -> list[dict]:
    """One run of each engine asked for, in the order single, --jobs 2, Dask."""
    results = []

    def one(label: str, name: str, extra: list[str], watch: list[int], env: dict | None = None) -> None:
        breakdown = workdir / f"{name}.timings" if args.breakdown else None
        results.append(run(label, directory, workdir / f"{name}.json", extra, watch, breakdown, env))
        results[-1]["out"] = workdir / f"{name}.json"
        if breakdown is not None:
            print_breakdown(results[-1], breakdown)

    if "single" in wanted:
        one("single process (--jobs 1)", "single", ["--jobs", "1"], [])
    if "jobs" in wanted:
        one("--jobs 2", "jobs2", ["--jobs", "2"], [])
    if "dask" in wanted:
        import dask
        from distributed import LocalCluster

        if args.breakdown:
            os.environ[timing.ENV] = str(workdir / "dask.timings")  # the workers inherit it
        # The README's advice for workers that run rstscope: no statistical profiler sampling every thread's
        # stack 100 times a second (measured: an idle worker's CPU 3.9 % of a core with it, 2.3 % without).
        config = {} if args.dask_profiler else {"distributed.worker.profile.enabled": False}
        # Starting a LocalCluster sets the nanny's MALLOC_TRIM_THRESHOLD_ in this process's environment (for
        # its workers); the command is run in the environment it had before, as a user's shell would start
        # it (with the variable, glibc maps every allocation over 128 KB afresh: the command's writing of
        # the document took 4.0-6.1 CPU s instead of 1.9).
        command_env = dict(os.environ)
        try:
            with dask.config.set(config), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                       dashboard_address=None) as cluster:  # fmt: skip
                pids = [w.process.pid for w in cluster.workers.values()]
                one("Dask LocalCluster, 2 workers", "dask", ["--dask", cluster.scheduler_address], pids, command_env)
        finally:
            os.environ.clear()
            os.environ.update(command_env)  # the next round's commands and cluster start as this one's did
    return results


def run_halves(workdir: Path, directory: Path) -> dict:
    """The machine's ceiling for this work, in the same round: the first and the second half of the
    pieces analysed as two independent captures, by two one-process commands started together (nothing
    shared, no connection followed across the middle).  Its wall time is when both are done; against
    one process on all pieces, the speedup two cores give this work with no fleet machinery at all.  On
    this 2-core VM it moved between 1.53x and 1.92x from one round to the next (benchmarks/PLAN.md §20)."""
    pieces = sorted(directory.glob("*.pcap"))
    halves = [pieces[: len(pieces) // 2], pieces[len(pieces) // 2 :]]
    outs = [workdir / f"half-{i}.json" for i in range(2)]
    for out in outs:
        out.unlink(missing_ok=True)
    cmds = [[sys.executable, "-m", "rstscope", "analyze", *map(str, half), "--jobs", "1", "--json", "-o", str(out)]
            for half, out in zip(halves, outs, strict=True)]  # fmt: skip
    result = measured("two halves at once (ceiling)", cmds, [])
    for out in outs:
        out.unlink()
    return result


def print_round(results: list[dict]) -> None:
    base = results[0]["wall"]
    print("peak RSS per process (VmHWM), MB: 'rstscope' is the command's own process (it computes evidence and")
    print("writes the document), 'others' the largest of its helpers (reader child, decoding and shard processes,")
    print("Dask workers)")
    print(f"{'run':32} {'wall s':>8} {'speedup':>8} {'CPU s':>8} {'rstscope MB':>12} {'others MB':>10} {'procs':>6}")
    for r in results:
        print(f"{r['label']:32} {r['wall']:8.1f} {base / r['wall']:8.2f} {r['cpu_children']:8.1f} "
              f"{r['parent_mb']:12.0f} {r['worker_mb']:10.0f} {r['processes']:6}")  # fmt: skip
    print("CPU s: user + system time of the rstscope command and every process it started, Dask workers included "
          f"(polled every {PeakRss.POLL_S} s: a process's last reading)")  # fmt: skip
    for r in results:
        if r["watch"]:
            print(f"{r['label']}: Dask workers' CPU s (polled): "
                  + ", ".join(f"{r['cpu_by_pid'].get(pid, 0.0):.1f}" for pid in r["watch"]))  # fmt: skip


def print_medians(rounds: list[list[dict]]) -> None:
    """Median wall and CPU seconds of each engine over the rounds, and the speedups of the medians; the
    speedup within each round beside them (the machine's speed drifts between rounds, less within one)."""
    print(f"medians of {len(rounds)} rounds")
    print(f"{'run':32} {'wall s':>8} {'speedup':>8} {'CPU s':>8} {'max MB':>8}  speedup in each round")
    base = statistics.median(r[0]["wall"] for r in rounds)
    for i, label in enumerate(r["label"] for r in rounds[0]):
        walls = [r[i]["wall"] for r in rounds]
        cpu = statistics.median(r[i]["cpu_children"] for r in rounds)
        mb = max(max(r[i]["parent_mb"], r[i]["worker_mb"]) for r in rounds)
        each = ", ".join(f"{r[0]['wall'] / r[i]['wall']:.2f}" for r in rounds)
        print(f"{label:32} {statistics.median(walls):8.1f} {base / statistics.median(walls):8.2f} {cpu:8.1f} "
              f"{mb:8.0f}  {each}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
