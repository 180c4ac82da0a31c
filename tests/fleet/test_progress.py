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


def test_tracking_line_then_the_stages_after_it():
    """Time left to track is paced from when tracking began (not from the start of the run); once every
    slice is tracked the line says what is going on, without a count it does not have."""
    clock = Clock()
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, stdout_isatty=False, stderr_isatty=True)
    progress = Progress(env, pieces=8, size=800, clock=clock)
    report = progress.group(8)
    clock.now += 30.0  # reading the pieces
    report(8, 8_000_000, 800)
    report.tracking(0, 100)
    clock.now += 5.0
    report.tracking(25, 100)
    assert err.getvalue().endswith("8/8 pieces read; tracking connections: slice 25 of 100, 15 s left to track")
    clock.now += 15.0
    report.tracking(100, 100)
    assert err.getvalue().endswith("8/8 pieces read; connections tracked; judging RSTs and encoding rows")


def test_no_progress_when_not_a_terminal():
    err = io.StringIO()
    env = Environment(stdout=io.StringIO(), stderr=err, stdout_isatty=False, stderr_isatty=False)
    progress = Progress(env, pieces=1, size=10)
    progress.group(1)(1, 5, 10)
    progress.done()
    assert err.getvalue() == ""
