"""Every lab and capture option checked before anything is created.

A value that a step would only reject half-way through a run (``tc`` refusing ``--rate 0mbit``, a
client loop exiting on ``--timeout -1``), or worse accept (``--rate=-5mbit`` wraps around to 18
Ebit/s in tc), is refused here with one line that names the option, the value and what is
allowed.  The command calls these checks before it probes the machine, creates a namespace or a
run directory.

The checks are one table per option kind (:data:`LAB_CHECKS`), keyed by the :class:`LabOptions`
field; a field without an entry (a new option) is not checked here and must check itself.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from pathlib import Path

from rstscope.lab.scenarios import CaptureOptions, LabOptions
from rstscope.status import InputError

RATE_UNITS = {
    "bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
    "kibit": 1024, "mibit": 1024**2, "gibit": 1024**3, "tibit": 1024**4,
    "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9, "tbps": 8e12,
    "kibps": 8 * 1024, "mibps": 8 * 1024**2, "gibps": 8 * 1024**3, "tibps": 8 * 1024**4,
}  # fmt: skip
"""tc's rate units (tc-rate(8)); a bare number is bytes per second."""
TIME_UNITS = {"s": 1.0, "sec": 1.0, "secs": 1.0, "ms": 1e-3, "msec": 1e-3, "msecs": 1e-3,
              "us": 1e-6, "usec": 1e-6, "usecs": 1e-6}  # fmt: skip
"""tc's time units (tc(8) TIMES); a bare number is microseconds."""
MAX_SNAPLEN = 262_144
"""dumpcap's and tcpdump's largest snapshot length."""
MAX_LOOPS = 10_000
"""Each client loop is a thread of the client process; far more would measure Python, not TCP."""
INT_MAX = 2**31 - 1

_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse_rate(text: str) -> float:
    """tc rate text -> bits per second; ValueError when tc would refuse it or it is not positive."""
    match = _NUMBER.match(text)
    if not match:
        raise ValueError("expected a positive number with a unit, e.g. 20mbit")
    number, unit = float(match[1]), match[2].lower()
    if unit and unit not in RATE_UNITS:
        raise ValueError(f"unknown unit {match[2]!r} (use bit, kbit, mbit, gbit, or bps, kbps, mbps)")
    bits = number * (RATE_UNITS[unit] if unit else 8)
    if not math.isfinite(bits) or bits <= 0:
        raise ValueError("the rate must be more than 0")
    if bits >= 2**64:
        raise ValueError("the rate is beyond what tc can hold")
    return bits


def parse_time(text: str) -> float:
    """tc time text -> seconds (not negative); ValueError otherwise."""
    match = _NUMBER.match(text)
    if not match:
        raise ValueError("expected a number with a unit, e.g. 200ms")
    number, unit = float(match[1]), match[2].lower()
    if unit and unit not in TIME_UNITS:
        raise ValueError(f"unknown unit {match[2]!r} (use s, ms or us)")
    seconds = number * (TIME_UNITS[unit] if unit else 1e-6)
    if not math.isfinite(seconds):
        raise ValueError("not a finite time")
    return seconds


def _number(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[object], str | None]:
    """A check that a number is finite and within [low, high] (``low_open``: above ``low``)."""

    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "expected a number"
        if not math.isfinite(value):
            return "expected a finite number"
        if value < low or (low_open and value == low):
            return f"must be {'more than' if low_open else 'at least'} {low:g}"
        if value > high:
            return f"must be at most {high:g}"
        return None

    return check


def _tc_rate(value) -> str | None:
    try:
        parse_rate(str(value))
    except ValueError as exc:
        return str(exc)
    return None


def _tc_time(*, positive: bool) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        try:
            seconds = parse_time(str(value))
        except ValueError as exc:
            return str(exc)
        if positive and seconds <= 0:
            return "must be more than 0"
        return None

    return check


def _close_mode(value) -> str | None:
    from rstscope.pair import parse_close_mode

    try:
        parse_close_mode(str(value))
    except ValueError as exc:  # the pair's own message names the mode and the choices
        raise InputError(str(exc)) from None
    return None


def _snaplen(value) -> str | None:
    problem = _number(0, MAX_SNAPLEN)(value)
    if problem is None and int(value) != value:
        return "expected a whole number of bytes"
    return problem


LAB_CHECKS: dict[str, Callable[[object], str | None]] = {
    # link
    "rate": _tc_rate,
    "client_rate": _tc_rate,
    "queue": _tc_time(positive=True),
    "delay": _tc_time(positive=False),
    "loss": _number(0, 100),
    # server
    "port": _number(0, 65535),
    "close": _close_mode,
    "backlog": _number(0, INT_MAX),
    "accept_delay": _number(0),
    "read_bytes": _number(0),
    "response_bytes": _number(0),
    # clients
    "loops": _number(1, MAX_LOOPS),
    "count": _number(1, INT_MAX),
    "duration": _number(0, low_open=True),
    "request_bytes": _number(0),
    "trailing_bytes": _number(0),
    "late_bytes": _number(0),
    "late_delay": _number(0),
    "timeout": _number(0, low_open=True),
    # server namespace sysctls
    "somaxconn": _number(0, INT_MAX),
    "abort_on_overflow": _number(0, 1),
    "syncookies": _number(0, 2),
    "synack_retries": _number(0, 255),
    # capture
    "snaplen": _snaplen,
    "settle": _number(0),
}
"""LabOptions field -> check returning what is wrong (None: fine).  None values are not checked."""


def check_lab_options(options: LabOptions) -> None:
    """Raise InputError for the first option that a step would refuse or misread."""
    for field, check in LAB_CHECKS.items():
        value = getattr(options, field, None)
        if value is None:
            continue
        problem = check(value)
        if problem:
            raise InputError(f"{_flag(field)} {value}: {problem}")


def check_capture_options(options: CaptureOptions) -> None:
    """``rstscope capture``'s options: durations, snaplen, and an interface that exists."""
    checks = {
        "duration": _number(0, low_open=True),
        "settle": _number(0),
        "snaplen": _snaplen,
    }
    for field, check in checks.items():
        value = getattr(options, field)
        if value is None:
            continue
        problem = check(value)
        if problem:
            raise InputError(f"{_flag(field)} {value}: {problem}")
    interfaces = _interfaces()
    if interfaces and options.iface not in interfaces and options.iface != "any" and not options.iface.isdigit():
        raise InputError(f"--iface {options.iface}: no such interface (this host has {', '.join(sorted(interfaces))})")
    if not options.bpf.strip():
        raise InputError("--filter is empty: give a capture filter, e.g. 'tcp'")


def _interfaces() -> set[str]:
    try:
        return set(os.listdir("/sys/class/net"))
    except OSError:
        return set()


def check_run_root(path: Path) -> Path:
    """The run root (or, when it does not exist yet, its nearest parent) takes a file; one error
    line otherwise.  Nothing is created: the run makes its directory once its checks passed."""
    from rstscope.output import check_writable_dir

    return check_writable_dir(path, what="run root", create=False)
