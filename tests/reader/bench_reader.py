"""Demonstrates the reader's speed: writes a synthetic Ethernet/IPv4/TCP pcap and times reading it.

Run: ``python tests/reader/bench_reader.py [--packets N] [--path /tmp/bench.pcap] [--gzip] [--pcapng]``.
Prints packets/s and peak RSS.  The file is built with numpy (a few seconds for 1 M packets):
Linux-like segments with the NOP,NOP,TS option block, one SYN/SYN-ACK with full options every
1000 packets, payloads of 0 to 1448 bytes cut at a 128-byte snaplen (as ``tcpdump -s 128`` would).
"""

from __future__ import annotations

import argparse
import gzip
import resource
import struct
import time
from pathlib import Path

import numpy as np


def frames(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame bytes as an (n, 98) array cut to the snaplen, caplen, wire length)."""
    rng = np.random.default_rng(seed)
    payload = rng.choice([0, 0, 100, 1448], size=n)
    template = bytes.fromhex(
        "020000000002"
        "020000000001"
        "0800"  # Ethernet
        "45000000000040004006"
        "0000"
        "0a000001"
        "0a000002"  # IPv4, length filled below
        "a0b80050"
        "00000000"
        "00000000"
        "8010"
        "01f6"
        "0000"
        "0000"  # TCP, doff 8
        "0101080a"
        "00000000"
        "00000000"  # NOP NOP TS
    )
    snap = 128
    out = np.zeros((n, snap), dtype=np.uint8)
    out[:, : len(template)] = np.frombuffer(template, dtype=np.uint8)
    total = 20 + 32 + payload
    out[:, 16] = total >> 8
    out[:, 17] = total & 0xFF
    seq = np.cumsum(payload).astype(np.uint32)
    out[:, 38:42] = seq.astype(">u4").view(np.uint8).reshape(n, 4)
    out[:, 58:62] = np.arange(n, dtype=">u4").view(np.uint8).reshape(n, 4)
    # Every 1000th packet a SYN with MSS, SACK-permitted, TS, NOP, WS (Linux's SYN layout).
    syn = np.arange(0, n, 1000)
    out[syn, 46] = 0xA0
    out[syn, 47] = 0x02
    out[syn, 54:74] = np.frombuffer(bytes.fromhex("020405b40402080a0000000100000000") + b"\x01\x03\x03\x07", np.uint8)
    out[syn, 16:18] = [0, 60]
    payload[syn] = 0
    wire = 14 + 20 + np.where(np.isin(np.arange(n), syn), 40, 32) + payload
    caplen = np.minimum(wire, snap)
    return out, caplen, wire


def write_pcap(path: Path, n: int, compress: bool = False) -> None:
    data, caplen, wire = frames(n)
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 128, 1))
        step = 100_000
        for start in range(0, n, step):
            parts = []
            for i in range(start, min(n, start + step)):
                parts.append(struct.pack("<IIII", 1_700_000_000 + i // 1000, (i % 1000) * 1000, caplen[i], wire[i]))
                parts.append(data[i, : caplen[i]].tobytes())
            f.write(b"".join(parts))


def write_pcapng(path: Path, n: int) -> None:
    data, caplen, wire = frames(n)
    with open(path, "wb") as f:
        f.write(struct.pack("<IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28))
        f.write(struct.pack("<IIHHII", 1, 20, 1, 0, 128, 20))
        step = 100_000
        for start in range(0, n, step):
            parts = []
            for i in range(start, min(n, start + step)):
                padded = (int(caplen[i]) + 3) & ~3
                length = 32 + padded
                ts = (1_700_000_000 + i // 1000) * 1_000_000 + (i % 1000) * 1000
                parts.append(struct.pack("<IIIIIII", 6, length, 0, ts >> 32, ts & 0xFFFFFFFF, caplen[i], wire[i]))
                parts.append(data[i, : caplen[i]].tobytes() + b"\0" * (padded - int(caplen[i])))
                parts.append(struct.pack("<I", length))
            f.write(b"".join(parts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--path", type=Path, default=None)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--pcapng", action="store_true")
    args = parser.parse_args()
    suffix = ".pcapng" if args.pcapng else ".pcap"
    path = args.path or Path(f"/tmp/rstscope-bench-{args.packets}{suffix}{'.gz' if args.gzip else ''}")
    if not path.exists():
        (write_pcapng if args.pcapng else lambda p, n: write_pcap(p, n, args.gzip))(path, args.packets)
    from rstscope.reader import open_capture

    start = time.perf_counter()
    rows = 0
    with open_capture(path) as capture:
        for table in capture.chunks():
            rows += len(table)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{path}: {path.stat().st_size / 1e6:.0f} MB, {capture.stats.records} records, {rows} rows "
        f"in {elapsed:.2f} s = {capture.stats.records / elapsed / 1e6:.2f} M packets/s; peak RSS {peak_mb:.0f} MB"
    )


if __name__ == "__main__":
    main()
