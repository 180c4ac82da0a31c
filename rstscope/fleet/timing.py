"""Where a fleet run's time goes, per process and phase (for ``benchmarks/fleet.py --breakdown``).

Off unless the environment names a file in :data:`ENV`: then every :func:`phase` appends one JSON
line ``{"pid", "role", "phase", "wall", "cpu", "end"}`` to it when it ends (wall and this process's CPU
seconds; ``end``: the clock time it ended, for a timeline).  Workers inherit the variable (forkserver
children, Dask workers started with it set).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

ENV = "RSTSCOPE_FLEET_TIMINGS"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def record(role: str, name: str, wall: float, cpu: float) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"pid": os.getpid(), "role": role, "phase": name, "wall": wall, "cpu": cpu, "end": time.time()})
    line += "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write with O_APPEND: lines of processes do not interleave
    finally:
        os.close(fd)


@contextlib.contextmanager
def phase(role: str, name: str):
    if not enabled():
        yield
        return
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        record(role, name, time.perf_counter() - wall, time.process_time() - cpu)


class Stopwatch:
    """Time summed over many short intervals (a barrier wait per slice), recorded once."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.count = 0

    @contextlib.contextmanager
    def timing(self):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu
            self.count += 1

    def record(self, role: str, name: str) -> None:
        record(role, name, self.wall, self.cpu)


def timed(items: Iterable[T], stopwatch: Stopwatch) -> Iterator[T]:
    """The items (never None), the time spent getting each one (reading a chunk) added to ``stopwatch``."""
    items = iter(items)
    while True:
        with stopwatch.timing():
            item = next(items, None)
        if item is None:
            return
        yield item
