"""``--ring`` and ``--snapshot``: the live byte stream kept in rotating capture files, and run directories
cut from its last seconds.

:class:`Ring` sees every byte the capture tool wrote (``PipeStream``'s tee) and splits it at block
(pcapng) or record (pcap) boundaries: each ring file starts with the stream's header (pcapng: the
section header and interface blocks; pcap: the file header), so that every file is a capture on its
own.  A file past ``--ring-size`` MB is closed and the next one started; past ``--ring-files`` files the
oldest is deleted.  For snapshots, the packet blocks of the last ``keep_seconds`` (by arrival time,
within milliseconds of their capture time) are also kept in memory, at most :data:`SNAPSHOT_MAX_BYTES`.

:class:`Snapshots` writes, for a primary RST, a run directory (``rstscope.lab.rundir`` layout: run.json
and capture.pcapng or capture.pcap) holding the packets from ``--snapshot-seconds`` before the RST to the
moment it was judged: ``rstscope report DIR`` makes a report of it.  Frame numbers there count from the
snapshot's first packet; run.json's ``watch`` block names the RST by connection and time.
"""

from __future__ import annotations

import contextlib
import struct
import threading
import time
from collections import deque
from pathlib import Path

from rstscope.lab import rundir
from rstscope.status import InputError

SNAPSHOT_MAX_BYTES = 256 << 20
"""Packet bytes kept in memory for snapshots at most (the oldest go first)."""
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_IDB = 0x00000001
_PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}


class Ring:
    def __init__(self, directory: Path | None, *, files: int = 10, size_mb: float = 100.0,
                 keep_seconds: float = 0.0) -> None:  # fmt: skip
        self.directory = directory
        self.files = files
        self.size = int(size_mb * 1e6)
        self.keep_ns = int(keep_seconds * 1e9)
        self.format: str | None = None
        """``pcapng`` or ``pcap`` once the stream's first bytes came."""
        self.header = b""
        """The stream's header blocks (pcapng SHB and IDBs) or file header (pcap)."""
        self._buf = bytearray()
        self._order = "<"
        self._file = None
        self._written = 0
        self._number = 0
        self._paths: deque[Path] = deque()
        self._recent: deque[tuple[int, bytes]] = deque()
        self._recent_bytes = 0
        self._lock = threading.Lock()
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"--ring {directory}: {exc.strerror}") from None

    @property
    def paths(self) -> list[Path]:
        """The ring's files, oldest first."""
        return list(self._paths)

    def write(self, data: bytes) -> None:
        """More bytes of the stream (called by the reader thread)."""
        self._buf += data
        if self.format is None and not self._detect():
            return
        now = time.time_ns()
        pos = 0
        buf = self._buf
        while True:
            length = self._next_length(buf, pos)
            if length is None or pos + length > len(buf):
                break
            block = bytes(buf[pos : pos + length])
            pos += length
            self._block(block, now)
        del self._buf[:pos]

    def _detect(self) -> bool:
        if len(self._buf) < 24:
            return False
        head = bytes(self._buf[:4])
        if head == b"\x0a\x0d\x0d\x0a":
            self.format = "pcapng"
            self._order = "<" if bytes(self._buf[8:12]) == b"\x4d\x3c\x2b\x1a" else ">"
        elif head in _PCAP_MAGICS:
            self.format = "pcap"
            self._order = _PCAP_MAGICS[head]
            self.header = bytes(self._buf[:24])
            del self._buf[:24]
        else:
            self.format = "unknown"  # not a capture: the reader reports it; the ring keeps nothing
        return self.format != "unknown"

    def _next_length(self, buf: bytearray, pos: int) -> int | None:
        if self.format == "pcapng":
            if len(buf) - pos < 8:
                return None
            return struct.unpack_from(self._order + "I", buf, pos + 4)[0] or None
        if len(buf) - pos < 16:
            return None
        return 16 + struct.unpack_from(self._order + "I", buf, pos + 8)[0]

    def _block(self, block: bytes, now_ns: int) -> None:
        if self.format == "pcapng":
            kind = struct.unpack_from(self._order + "I", block, 0)[0]
            if kind == _PCAPNG_SHB:
                self._order = "<" if block[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
                self.header = block
                self._rotate()
                return
            if kind == _PCAPNG_IDB:
                self.header += block
                if self._file is not None:
                    self._write(block)
                return
        if self._file is None or self._written >= self.size:
            self._rotate()
        self._write(block)
        if self.keep_ns:
            with self._lock:
                self._recent.append((now_ns, block))
                self._recent_bytes += len(block)
                while self._recent and (
                    self._recent[0][0] < now_ns - self.keep_ns - 5_000_000_000
                    or self._recent_bytes > SNAPSHOT_MAX_BYTES
                ):
                    self._recent_bytes -= len(self._recent.popleft()[1])

    def _rotate(self) -> None:
        if self.directory is None:
            return
        self.close()
        self._number += 1
        path = self.directory / f"ring-{self._number:06d}.{self.format}"
        self._file = path.open("wb")
        self._paths.append(path)
        self._written = 0
        self._write(self.header)
        while len(self._paths) > self.files:
            with contextlib.suppress(OSError):
                self._paths.popleft().unlink()

    def _write(self, data: bytes) -> None:
        if self._file is not None:
            self._file.write(data)
            self._written += len(data)

    def recent(self, since_ns: int) -> bytes:
        """A capture of the packets that arrived since ``since_ns`` (wall clock): header, then blocks."""
        with self._lock:
            blocks = [b for t, b in self._recent if t >= since_ns]
        return self.header + b"".join(blocks)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Snapshots:
    """Run directories for primary RSTs, under ``root``."""

    def __init__(self, root: Path, ring: Ring, *, seconds: float, iface: str) -> None:
        self.root = root
        self.ring = ring
        self.seconds = seconds
        self.iface = iface
        self.written: list[Path] = []

    def write(self, event, printer=None) -> Path | None:
        """The run directory of this primary RST (``ResetSeen``), None before the stream had a header."""
        if self.ring.format not in ("pcapng", "pcap"):
            return None
        ev, verdict = event.record.evidence, event.record.verdict.value
        data = self.ring.recent(ev.time_ns - int(self.seconds * 1e9))
        path = rundir.new_run_dir(self.root, f"watch-{verdict}")
        name = f"capture.{self.ring.format}"
        tmp = path / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(path / name)
        run = {
            rundir.MARKER: rundir.LAYOUT_VERSION,
            "kind": "watch",
            "scenario": f"watch-{verdict}",
            "status": "ok",
            "options": {"scenario": f"watch-{verdict}", "iface": self.iface, "snapshot_seconds": self.seconds},
            "capture": {"file": name},
            "trace": {"available": False, "message": "watch snapshots carry no kernel trace"},
            "addresses": {},
            "warnings": [],
            "watch": {
                "connection": ev.connection,
                "live_frame": ev.frame,
                "time": round(ev.time_ns / 1e9, 9),
                "src": ev.src,
                "dst": ev.dst,
                "verdict": verdict,
                "note": "frame numbers in capture files count from the snapshot's first packet",
            },
        }
        rundir.write_json(path / rundir.RUN_JSON, run)
        self.written.append(path)
        return path
