"""The progress line: pieces done of total, packets/s, time left; only on a terminal."""

from __future__ import annotations

import io

from rstscope.cli import Environment
from rstscope.fleet.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_line():
    clock = Clock()
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, stdout_isatty=False, stderr_isatty=True)
    progress = Progress(env, pieces=8, size=800, clock=clock)
    report = progress.group(8)
    clock.now += 2.0
    report(2, 1_000_000, 200)
    assert err.getvalue().endswith("2/8 pieces, 1,000,000 packets, 500,000 packets/s, 6 s left")
    progress.done()
    assert err.getvalue().endswith("\r\x1b[K")


def test_no_progress_when_not_a_terminal():
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, stdout_isatty=False, stderr_isatty=False)
    progress = Progress(env, pieces=1, size=10)
    progress.group(1)(1, 5, 10)
    progress.done()
    assert err.getvalue() == ""
