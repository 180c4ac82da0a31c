"""Kernel counters around a run: ``nstat`` snapshots per namespace and their deltas.

Snapshots are absolute (``nstat -a -s -z``: all counters, zeros included, no
history file touched), so two runs never disturb each other's baselines.  The
delta of each counter in :data:`COUNTERS` is kept, zeros included, so that "no
ListenOverflows" is a recorded fact and not a missing key; any other counter that
moved is kept under ``other``.
"""

from __future__ import annotations

import json

COUNTERS = (
    "TcpExtListenOverflows",  # 3rd ACK or SYN dropped because the accept queue was full
    "TcpExtListenDrops",  # every drop at a listener (includes ListenOverflows)
    "TcpExtTCPReqQFullDrop",  # SYN dropped: SYN queue full and no syncookies
    "TcpExtTCPReqQFullDoCookies",  # SYN answered with a cookie because the SYN queue was full
    "TcpExtSyncookiesSent",
    "TcpExtSyncookiesRecv",
    "TcpExtSyncookiesFailed",
    "TcpExtEmbryonicRsts",  # RST for a request socket (accept queue full, tcp_abort_on_overflow=1)
    "TcpExtTCPAbortOnData",  # RST: data after close, or SO_LINGER {1,0} close
    "TcpExtTCPAbortOnClose",  # RST: close() with unread data (the close race)
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPAbortOnTimeout",  # gave up after retransmissions (no RST sent)
    "TcpExtTCPAbortOnLinger",
    "TcpExtTCPAbortFailed",
    "TcpEstabResets",  # established connections reset (RST received or sent)
    "TcpOutRsts",  # segments sent with RST
    "TcpAttemptFails",
    "TcpActiveOpens",
    "TcpPassiveOpens",
    "TcpRetransSegs",
    "TcpExtTCPSynRetrans",  # SYN and SYN-ACK retransmissions
    "TcpExtTCPTimeouts",
)
"""Counters every run reports, in this order (the groups named in issue 3, plus context)."""


def parse_json(text: str) -> dict[str, int]:
    """``nstat --json`` output -> {counter: value}."""
    data = json.loads(text)
    values: dict[str, int] = {}
    for group in data.values():  # one group, "kernel"
        values.update({name: int(value) for name, value in group.items()})
    return values


def parse_text(text: str) -> dict[str, int]:
    """``nstat`` text output (``Name  value  rate``) -> {counter: value}."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#") and parts[1].isdigit():
            values[parts[0]] = int(parts[1])
    return values


def parse(text: str) -> dict[str, int]:
    """Either format (JSON when it starts with ``{``)."""
    return parse_json(text) if text.lstrip().startswith("{") else parse_text(text)


def delta(before: dict[str, int], after: dict[str, int]) -> dict:
    """``{"counters": {name: delta for COUNTERS}, "other": {name: delta != 0}}``."""
    moved = {name: after[name] - before.get(name, 0) for name in after}
    return {
        "counters": {name: moved.get(name, 0) for name in COUNTERS},
        "other": {name: value for name, value in sorted(moved.items()) if value and name not in COUNTERS},
    }
