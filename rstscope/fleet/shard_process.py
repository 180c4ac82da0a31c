"""A ``--dask`` shard in a process of its own: ``python -m rstscope.fleet.shard_process JOB``.

A Dask task (:func:`rstscope.fleet.cluster._track_task`) starts this process and waits for it, rather
than tracking in the worker itself.  Measured (benchmarks/PLAN.md §13): the same shard work took
≈ 1.4x the CPU in a worker thread: the worker's event loop, heartbeats and profiler thread hold the
GIL, and the nanny's ``MALLOC_TRIM_THRESHOLD_`` turns off glibc's dynamic mmap threshold (every numpy
temporary over 128 KB a fresh mapping); and the worker's own ≈ 110 MB added to the shard's memory.
Here the shard runs as a ``--jobs`` shard does, in a clean process (that variable left out of its
environment).

The shards exchange their pressure counts at every slice through :class:`SocketExchange` (one TCP
round trip; through the scheduler's Variables it took several, each through the worker's event loop).
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rstscope.fleet import shards, timing

TIMEOUT_S = shards.BARRIER_TIMEOUT_S
"""How long a shard waits for the others (to connect, or at one slice)."""
_COUNT = struct.Struct("<q")


CALLED_OFF = "called-off"
"""What ``hub`` says when the run ended before shard 0 listened (:func:`call_off`)."""


def publish(directory: Path, text: str) -> bool:
    """Write ``hub`` whole, unless it exists (False then): shard 0's address, or :data:`CALLED_OFF`."""
    tmp = directory / f"hub.{os.getpid()}.{time.monotonic_ns()}"
    tmp.write_text(text + "\n")
    try:
        os.link(tmp, directory / "hub")
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink()


def call_off(directory: Path) -> None:
    """Stop the shards waiting for shard 0 to listen (it failed before it could)."""
    publish(directory, CALLED_OFF)


class Broken(Exception):
    """A peer shard, or the worker that started this process, went away."""


@dataclass(kw_only=True)
class Job:
    """What a shard process is given (pickled to a file in the work directory)."""

    shard: int
    shards: int
    pieces: list[tuple[int, int]]
    sched: shards.Schedule
    workdir: str
    info: object
    options: shards.ShardOptions
    hub_host: str
    """Address shard 0 listens on (its worker's host), for the others to connect to."""


class SocketExchange:
    """Pressure counts summed over the shards through TCP: shard 0 is the hub.  It listens on its
    worker's host and writes ``host port`` to ``hub`` in the capture's work directory (which every
    worker sees); the others connect and send their shard number.  A round: each sends its count, the
    hub sends back the sum."""

    def __init__(self, shard: int, shards_: int, directory: Path, host: str) -> None:
        self.shard, self.shards = shard, shards_
        self._round = 0
        self.waits = timing.Stopwatch()
        self._parent = os.getppid()
        self.peers: list[socket.socket] = []
        if shards_ == 1:
            return
        if shard == 0:
            self._listen(directory, host)
        else:
            self._connect(directory)

    def _listen(self, directory: Path, host: str) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.create_server((host, 0), family=family) as server:
            server.settimeout(TIMEOUT_S)
            port = server.getsockname()[1]
            if not publish(directory, f"{host} {port}"):
                raise Broken("the run was called off before shard 0 listened")
            by_shard = {}
            while len(by_shard) < self.shards - 1:
                conn, _ = server.accept()
                _setup(conn)
                by_shard[_COUNT.unpack(_recv(conn))[0]] = conn
            self.peers = [by_shard[j] for j in sorted(by_shard)]

    def _connect(self, directory: Path) -> None:
        path, deadline = directory / "hub", time.monotonic() + TIMEOUT_S
        while not path.exists():
            if time.monotonic() > deadline:
                raise Broken("shard 0 never listened")
            self._check_parent()
            time.sleep(0.01)
        address = path.read_text().split()
        if address == [CALLED_OFF]:
            raise Broken("the run was called off")
        host, port = address
        conn = socket.create_connection((host, int(port)), timeout=TIMEOUT_S)
        _setup(conn)
        conn.sendall(_COUNT.pack(self.shard))
        self.peers = [conn]

    def total(self, count: int) -> int:
        self._round += 1
        if self._round % 64 == 0:
            self._check_parent()
        with self.waits.timing():
            if not self.peers:
                return count
            try:
                if self.shard == 0:
                    total = count + sum(_COUNT.unpack(_recv(p))[0] for p in self.peers)
                    message = _COUNT.pack(total)
                    for p in self.peers:
                        p.sendall(message)
                    return total
                self.peers[0].sendall(_COUNT.pack(count))
                return _COUNT.unpack(_recv(self.peers[0]))[0]
            except (OSError, Broken) as exc:  # a peer went away, or a timeout: the others learn it at once
                self.close()
                raise Broken(str(exc)) from None

    def _check_parent(self) -> None:
        if os.getppid() != self._parent:
            raise Broken("the Dask worker that started this shard is gone")

    def close(self) -> None:
        for p in self.peers:
            p.close()


def _setup(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(TIMEOUT_S)


def _recv(conn: socket.socket) -> bytes:
    data = b""
    while len(data) < _COUNT.size:
        part = conn.recv(_COUNT.size - len(data))
        if not part:
            raise Broken("a shard went away")
        data += part
    return data


def main(job_path: str) -> int:
    with open(job_path, "rb") as f:
        job: Job = pickle.load(f)
    directory = Path(shards.output_dir(job.workdir, job.pieces))
    try:
        exchange = SocketExchange(job.shard, job.shards, directory, job.hub_host)
    except (OSError, Broken) as exc:
        if job.shard == 0:
            call_off(directory)
        outcome = ("error", shards.BROKEN if isinstance(exc, Broken) else f"worker {job.shard}: {exc}")
        shards.write_outcome(job.workdir, job.shard, outcome)
        return 1
    try:
        outcome = shards.shard_outcome(job.shard, job.pieces, job.sched, job.workdir, exchange, job.info,
                                       job.options, broken=(Broken,))  # fmt: skip
    finally:
        exchange.close()  # the others' next round ends (a failure here is theirs to report as broken)
    return 0 if outcome[0] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
