"""Benchmark (not a timed test): does ``rstscope watch`` keep its memory flat under steady mixed traffic?

Runs the lab's reproducer pair (``rstscope pair``) on loopback for ``--minutes`` (default 10): a
close-race server (naive close with unread request bytes: RST and echoes), a lingering server (clean
closes), an SO_LINGER-0 server (aborts), a late-data server (RST after FIN) and a port nobody listens
on (refused), each with ``--rate`` connections per second (a client started each second; ``--rate 0``:
one client looping as fast as it can, which on loopback is far more than watch reads), while
``rstscope watch -i lo --json --metrics`` watches their ports.  Every ``--sample-seconds`` it prints the
watch process's RSS (psutil), its CPU seconds and
the counters it serves (packets seen, primary RSTs reported).  At the end: RSS at the end of the warm-up
(the first sample at or after ``--warmup`` seconds; by default half the run: the tracker keeps up to 10,000
closed connections in memory before it retires them under pressure (``connections/retire.py``), so RSS
climbs for the first minutes, until that many connections went by), the largest RSS after it, the slope
of a least-squares line through the samples after it (MB per hour), and whether the largest stayed
within 10 % of the warm-up figure ("flat").

    sudo .venv/bin/python benchmarks/watch_rss.py                    # 10 minutes
    sudo .venv/bin/python benchmarks/watch_rss.py --minutes 2 --sample-seconds 5

Needs dumpcap or tcpdump (and root, or capture rights on lo).  Everything started is stopped at the end,
also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

SERVERS = {
    # name: (server options, client options)
    "close-race": (["--close", "close", "--read-bytes", "16"], ["--request-bytes", "16", "--trailing-bytes", "8"]),
    "lingering": (["--close", "lingering", "--read-bytes", "16"], ["--request-bytes", "16", "--trailing-bytes", "8"]),
    "linger0": (["--close", "linger0", "--read-bytes", "16"], ["--request-bytes", "16"]),
    "late-data": (["--close", "close", "--read-bytes", "16", "--response-bytes", "2000"],
                  # no trailing bytes: unread bytes at the close would make it an abort before the late data
                  ["--request-bytes", "16", "--trailing-bytes", "0", "--late-bytes", "100", "--late-delay", "0.05"]),
}  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(rstscope_\w+?)(?:\{.*\})? (\S+)$", line)
        if m and not m[1].endswith("_created"):
            values[m[1]] = values.get(m[1], 0.0) + float(m[2])
    return values


def paced(argv: tuple[str, ...], rate: int, duration: float, stop: threading.Event, out) -> None:
    """Start ``rstscope pair client ... --count RATE`` once a second (or as soon as the last one ended)."""
    end = time.monotonic() + duration
    while not stop.is_set() and time.monotonic() < end:
        started = time.monotonic()
        subprocess.run([PY, "-m", "rstscope", *argv, "--count", str(rate)], stdout=out, stderr=out, cwd=REPO,
                       timeout=60, check=False)  # fmt: skip
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sample-seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, metavar="S", help="seconds before the baseline (default: half)")
    parser.add_argument("--rate", type=int, default=20, metavar="N",
                        help="connections per second per kind (a client started each second with --count N; "
                             "0: one client looping as fast as it can)")  # fmt: skip
    args = parser.parse_args()
    duration = args.minutes * 60
    if args.warmup is None:
        args.warmup = duration / 2
    ports = {name: free_port() for name in SERVERS}
    refused = free_port()
    metrics_port = free_port()
    port_filter = " or ".join(f"port {p}" for p in [*ports.values(), refused])
    procs: list[subprocess.Popen] = []
    stop = threading.Event()
    out = open(os.devnull, "w")  # noqa: SIM115  (closed in finally)
    lines = tempfile.TemporaryFile("w+")  # noqa: SIM115  (watch's NDJSON: the summary at the end)
    try:

        def spawn(*argv: str) -> None:
            procs.append(subprocess.Popen([PY, "-m", "rstscope", *argv], stdout=out, stderr=out, cwd=REPO))

        for name, (server_opts, _) in SERVERS.items():
            spawn("pair", "server", "--host", "127.0.0.1", "--port", str(ports[name]), *server_opts)
        watch = subprocess.Popen([PY, "-m", "rstscope", "watch", "-i", "lo", "-f", f"tcp and ({port_filter})", "--json",
                                  "--metrics", f"127.0.0.1:{metrics_port}"], stdout=lines, stderr=subprocess.PIPE,
                                 cwd=REPO, text=True)  # fmt: skip
        procs.append(watch)
        ready = watch.stderr.readline()
        if "watching" not in ready:
            print(f"watch did not start: {ready.strip()} {watch.stderr.read().strip()}")
            return 1
        time.sleep(1.0)
        clients = [("pair", "client", "127.0.0.1", "--port", str(ports[name]), "--timeout", "2", *opts)
                   for name, (_, opts) in SERVERS.items()]  # fmt: skip
        clients.append(("pair", "client", "127.0.0.1", "--port", str(refused), "--timeout", "2"))
        if args.rate:
            for argv in clients:
                threading.Thread(target=paced, args=(argv, args.rate, duration, stop, out), daemon=True).start()
        else:
            for argv in clients:
                spawn(*argv, "--duration", str(duration))
        process = psutil.Process(watch.pid)
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        print(f"{'s':>6} {'RSS MB':>8} {'CPU s':>7} {'packets':>10} {'resets':>8}  (watch pid {watch.pid}, "
              f"{args.minutes:g} min, load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        while (elapsed := time.monotonic() - started) < duration:
            if watch.poll() is not None:
                print(f"watch exited early with {watch.returncode}: {watch.stderr.read().strip()}")
                return 1
            rss = process.memory_info().rss / 1e6
            cpu = sum(process.cpu_times()[:2])
            m = scrape(metrics_port)
            samples.append((elapsed, rss))
            print(f"{elapsed:6.0f} {rss:8.1f} {cpu:7.1f} {m.get('rstscope_packets_seen_total', 0):10.0f} "
                  f"{m.get('rstscope_resets_total', 0):8.0f}", flush=True)  # fmt: skip
            time.sleep(min(args.sample_seconds, max(0.0, duration - elapsed)))
        after = [(t, r) for t, r in samples if t >= args.warmup]
        if len(after) < 2:
            print("too short to judge: give more --minutes than --warmup seconds")
            return 1
        base = after[0][1]
        peak = max(r for _, r in after)
        n = len(after)
        mt = sum(t for t, _ in after) / n
        mr = sum(r for _, r in after) / n
        slope = sum((t - mt) * (r - mr) for t, r in after) / max(1e-9, sum((t - mt) ** 2 for t, _ in after))
        flat = peak <= base * 1.10
        watch.send_signal(signal.SIGINT)
        watch.wait(30)
        lines.seek(0)
        summary = [line for line in lines if line.startswith('{"summary"')]
        if summary:
            print(f"watch's summary: {summary[-1].strip()}")
        verdict = "FLAT within 10 %" if flat else "NOT flat"
        print(f"RSS after warm-up {base:.1f} MB, largest after it {peak:.1f} MB (+{100 * (peak / base - 1):.1f} %), "
              f"slope {slope * 3600:+.1f} MB/h over {n} samples: {verdict}")  # fmt: skip
        return 0 if flat else 3
    finally:
        stop.set()
        for p in reversed(procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT if p is procs[len(SERVERS)] else signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        out.close()
        lines.close()


if __name__ == "__main__":
    sys.exit(main())
