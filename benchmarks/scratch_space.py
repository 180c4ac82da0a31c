"""Benchmark: the temporary space ``rstscope analyze`` takes on a capture (README: Temporary space).

Demonstrates how much disk the command's spill files need at most: state that waits (retired and dormant
connections, RST rows, ``--json``'s rows encoded early) goes to temporary files, unlinked while open,
so nothing on disk names them.  This runs the command with ``TMPDIR`` set to a fresh directory and polls
the descriptors its processes (the command and its reader child) hold open in that directory, summing the
blocks of each file once, every 10 ms; it prints the largest sum seen and the command's wall time.

    python benchmarks/scratch_space.py benchmarks/data/flood-1000000pkts-seed9.pcap
    python benchmarks/scratch_space.py CAPTURE --json -o /tmp/out.json

A file that grows and is closed between two polls is missed: the figure is a lower bound of the peak.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

POLL_SECONDS = 0.01


def held_bytes(pids: list[int], directory: str) -> int:
    """Bytes on disk of the files in ``directory`` these processes hold open, each file counted once."""
    seen, total = set(), 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue  # gone since it was listed
        for fd in fds:
            link = f"/proc/{pid}/fd/{fd}"
            try:
                if not os.readlink(link).startswith(directory + os.sep):
                    continue
                st = os.stat(link)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def measure(capture: Path, args: list[str], parent: str | None = None) -> tuple[int, float]:
    """Run ``rstscope analyze CAPTURE ARGS`` with its temporary files in a fresh directory (in ``parent``,
    else the system's): the most bytes its processes held open there at once, and its wall time."""
    with tempfile.TemporaryDirectory(prefix="rstscope-scratch-space-", dir=parent) as directory:
        env = dict(os.environ, TMPDIR=directory)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "rstscope", "analyze", str(capture), *args], env=env,
                                stdout=subprocess.DEVNULL)  # fmt: skip
        peak = 0
        root = psutil.Process(proc.pid)
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):  # (it may end between two calls)
                pids = [proc.pid, *(child.pid for child in root.children(recursive=True))]
                peak = max(peak, held_bytes(pids, os.path.realpath(directory)))
            time.sleep(POLL_SECONDS)
        wall = time.perf_counter() - start
        if proc.returncode:
            raise SystemExit(f"scratch_space: rstscope analyze exited with {proc.returncode}")
    return peak, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("capture", type=Path)
    parser.add_argument("--dir", help="where the fresh directory goes (default: the system's temporary directory; "
                        "a tmpfs holds the files in memory)")  # fmt: skip
    known, rest = parser.parse_known_args(argv)
    if not known.capture.is_file():
        parser.error(f"no such file: {known.capture}")
    peak, wall = measure(known.capture, rest, known.dir)
    print(f"{known.capture.name} {' '.join(rest)}".rstrip() + f": temporary files at most {peak / 1e6:,.0f} MB "
          f"({peak:,} bytes), the command {wall:.2f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
