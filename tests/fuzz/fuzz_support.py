"""Shared by the fuzz tests: read bytes as a capture and check the reader's contract on them."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from rstscope.packets import PACKET_DTYPE
from rstscope.reader import open_capture
from rstscope.status import InputError

SEEDS = Path(__file__).resolve().parents[1] / "captures" / "formats"
TIME_LIMIT_S = 2.0


def seed_files() -> list[Path]:
    return sorted(p for p in SEEDS.iterdir() if p.suffix in (".pcap", ".pcapng", ".gz"))


def check_bytes(data: bytes, path: Path, chunk_packets: int = 3) -> str:
    """Write ``data`` to ``path`` and read it: InputError or clean iteration, in bounded time.

    Returns "refused" or "read"; any other outcome raises (AssertionError or the reader's exception).
    """
    path.write_bytes(data)
    start = time.monotonic()
    try:
        capture = open_capture(path, chunk_packets=chunk_packets)
    except InputError as exc:
        assert "\n" not in str(exc)
        return "refused"
    with capture:
        last = 0
        rows = 0
        for table in capture.chunks():
            assert table.dtype == PACKET_DTYPE
            assert 0 < len(table) <= chunk_packets
            frames = table["frame"].astype(np.int64)
            assert frames[0] > last and np.all(np.diff(frames) > 0)
            last = int(frames[-1])
            rows += len(table)
        stats = capture.stats
    assert rows == stats.tcp_packets <= stats.records
    assert all("\n" not in w for w in stats.warnings)
    assert time.monotonic() - start < TIME_LIMIT_S
    return "read"
