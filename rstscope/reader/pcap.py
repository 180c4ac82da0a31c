"""Classic pcap (libpcap) files: file header, then records of header + captured bytes.

Format: https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcap/ .  The magic
number decides byte order, timestamp unit and record-header layout once, by
lookup in :data:`MAGIC`; nothing is branched on per record.

The record walk hops from record to record reading just the caplen and collects
the record offsets, in C (``walk.c``: it was the only per-record Python of the
reader, 0.14 µs a record).  Everything else (record-header fields, checks,
timestamps, decoding) is done per batch with numpy.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rstscope.packets import ReadStats
from rstscope.reader.decode import Bytes, RecordBatch
from rstscope.reader.interface import MAX_CAPLEN, Interface, make_interface
from rstscope.reader.linktypes import LINKTYPE_CLASS_MASK
from rstscope.reader.source import Window
from rstscope.status import InputError

try:
    from rstscope.reader._compiled import ffi, lib
except ImportError:  # pragma: no cover - an install without a C compiler: one line, not a traceback
    print("rstscope: error: the compiled reader loops (rstscope/reader/_compiled*.so) is missing: reinstall "
          "with gcc and python3-dev present (scripts/setup.sh installs them)", file=sys.stderr)  # fmt: skip
    raise SystemExit(2) from None

FILE_HEADER = np.dtype(
    [
        ("magic", "u4"),
        ("version_major", "u2"),
        ("version_minor", "u2"),
        ("thiszone", "i4"),  # GMT offset of the timestamps; always 0 in practice, ignored (as libpcap does)
        ("sigfigs", "u4"),  # timestamp accuracy; always 0
        ("snaplen", "u4"),
        ("linktype", "u4"),  # LINKTYPE_* in bits 0-25; bits 26-31: FCS length info
    ]
)
"""pcap file header, 24 bytes (byte order applied per file)."""

RECORD_HEADER = np.dtype(
    [
        ("ts_sec", "u4"),  # unsigned: valid until 2106
        ("ts_frac", "u4"),  # µs or ns, by magic
        ("caplen", "u4"),  # bytes saved in the file
        ("len", "u4"),  # bytes on the wire
    ]
)
"""pcap record header, 16 bytes."""

KUZNETSOV_RECORD_HEADER = np.dtype(
    [
        ("ts_sec", "u4"),
        ("ts_frac", "u4"),
        ("caplen", "u4"),
        ("len", "u4"),
        ("ifindex", "u4"),  # Alexey Kuznetsov's patched libpcap: extra fields, ignored
        ("protocol", "u2"),
        ("pkt_type", "u1"),
        ("pad", "u1"),
    ]
)
"""Record header of the 'modified pcap' format written by old Red Hat tcpdump, 24 bytes."""

CAPLEN_OFFSET = 8
"""Offset of ``caplen`` in every record-header layout."""


@dataclass(frozen=True)
class Flavour:
    byte_order: str
    ts_unit_ns: int
    record_header: np.dtype


MAGIC: dict[bytes, Flavour] = {
    b"\xd4\xc3\xb2\xa1": Flavour("<", 1000, RECORD_HEADER),  # 0xa1b2c3d4 little-endian, µs
    b"\xa1\xb2\xc3\xd4": Flavour(">", 1000, RECORD_HEADER),  # big-endian, µs
    b"\x4d\x3c\xb2\xa1": Flavour("<", 1, RECORD_HEADER),  # 0xa1b23c4d little-endian, ns
    b"\xa1\xb2\x3c\x4d": Flavour(">", 1, RECORD_HEADER),  # big-endian, ns
    b"\x34\xcd\xb2\xa1": Flavour("<", 1000, KUZNETSOV_RECORD_HEADER),  # 0xa1b2cd34 little-endian
    b"\xa1\xb2\xcd\x34": Flavour(">", 1000, KUZNETSOV_RECORD_HEADER),  # big-endian
}
"""First four file bytes -> (byte order, timestamp unit in ns, record-header layout)."""


class PcapReader:
    """Walks the records of a classic pcap file and hands out :class:`RecordBatch` es."""

    format = "pcap"

    def __init__(self, window: Window, stats: ReadStats, path: str):
        self._window = window
        self._stats = stats
        flavour = MAGIC[bytes(window.buf[window.pos : window.pos + 4])]
        if not window.refill(FILE_HEADER.itemsize):
            raise InputError(f"{path}: truncated pcap file header ({window.available} of 24 bytes)")
        order = flavour.byte_order
        header = np.frombuffer(window.buf, FILE_HEADER.newbyteorder(order), 1, window.pos)[0]
        if int(header["version_major"]) != 2:
            raise InputError(
                f"{path}: unsupported pcap version {int(header['version_major'])}."
                f"{int(header['version_minor'])} (only 2.x exists)"
            )
        window.pos += FILE_HEADER.itemsize
        self._record_header = flavour.record_header.newbyteorder(order)
        self._header_len = self._record_header.itemsize
        self._caplen = struct.Struct(order + "I").unpack_from
        self._big_endian = order == ">"
        self._ts_unit_ns = flavour.ts_unit_ns
        self.snaplen = int(header["snaplen"])
        self.link_type = int(header["linktype"]) & LINKTYPE_CLASS_MASK
        self.interfaces: list[Interface] = [
            make_interface(self.link_type, snaplen=self.snaplen, ts_resolution_ns=float(flavour.ts_unit_ns))
        ]
        self._frames = 0
        self._warned_snaplen = False

    def batches(self, limit: int) -> Iterator[RecordBatch]:
        """Batches of at most ``limit`` records, in file order, until EOF or damage."""
        window = self._window
        header_len = self._header_len
        while True:
            offsets, pos = _walk(window.buf, window.pos, window.end, limit, header_len, self._big_endian)
            stop = False
            if len(offsets):
                batch, stop = self._batch(window, offsets)
                window.pos = pos if not stop else window.pos
                if batch is not None:
                    yield batch
                if stop:
                    return
                if len(offsets) == limit:
                    continue
            if not self._refill():
                return

    def _refill(self) -> bool:
        """Bring the next record fully into the window; False (with a warning if due) at its end."""
        window = self._window
        record = self._frames + 1
        need = self._header_len
        if window.available >= need:
            caplen = self._caplen(window.buf, window.pos + CAPLEN_OFFSET)[0]
            if caplen > MAX_CAPLEN:
                self._stats.warnings.append(
                    f"record {record} @0x{window.offset(window.pos):x}: caplen {caplen} > {MAX_CAPLEN}"
                    " (larger than any capture tool writes); stopped reading here"
                )
                return False
            need += caplen
        if window.refill(need):
            return True
        if window.source.damage:
            self._stats.warnings.append(window.source.damage)
        if window.available:
            self._stats.warnings.append(
                f"record {record} @0x{window.offset(window.pos):x}: file ends inside the record "
                f"({window.available} of {need} bytes); stopped reading here"
            )
        return False

    def _batch(self, window: Window, offsets: np.ndarray) -> tuple[RecordBatch | None, bool]:
        """Record-header checks and fields for the walked records; True if reading must stop."""
        data = np.frombuffer(window.buf, dtype=np.uint8)
        headers = Bytes(data).rows(offsets, self._header_len).view(self._record_header).reshape(-1)
        caplen = headers["caplen"].astype(np.int64)
        stop = False
        bad = np.flatnonzero(caplen > MAX_CAPLEN)
        if len(bad):
            first = int(bad[0])
            self._stats.warnings.append(
                f"record {self._frames + first + 1} @0x{window.offset(int(offsets[first])):x}: "
                f"caplen {int(caplen[first])} > {MAX_CAPLEN} (larger than any capture tool writes); "
                "stopped reading here"
            )
            offsets, headers, caplen = offsets[:first], headers[:first], caplen[:first]
            stop = True
        if self.snaplen and not self._warned_snaplen:
            over = np.flatnonzero(caplen > self.snaplen)
            if len(over):
                first = int(over[0])
                self._warned_snaplen = True
                self._stats.warnings.append(
                    f"record {self._frames + first + 1} @0x{window.offset(int(offsets[first])):x}: "
                    f"caplen {int(caplen[first])} > snaplen {self.snaplen}; read anyway (warned once)"
                )
        n = len(offsets)
        if n == 0:
            return None, stop
        frames = np.arange(self._frames + 1, self._frames + n + 1, dtype=np.uint64)
        self._frames += n
        ts_ns = headers["ts_sec"].astype(np.int64) * 1_000_000_000 + headers["ts_frac"].astype(np.int64) * np.int64(
            self._ts_unit_ns
        )
        self._stats.bytes_read = window.offset(int(offsets[-1]) + self._header_len + int(caplen[-1]))
        batch = RecordBatch(
            data=data,
            data_off=offsets + self._header_len,
            caplen=caplen,
            wirelen=headers["len"].astype(np.int64),
            ts_ns=ts_ns,
            frame=frames,
            iface=0,
            link_type=self.link_type,
        )
        return batch, stop


def _walk(buf: bytearray, pos: int, end: int, limit: int, header_len: int, big_endian: bool) -> tuple[np.ndarray, int]:
    """Offsets of up to ``limit`` complete records from ``pos``; and where the walk stopped.

    The per-record hot loop, compiled (``walk.c``; 0.01-0.02 s of CPU per million records, measured): it
    reads each caplen and checks bounds.  A bogus caplen is not checked here (it is checked per batch, and
    the batch is cut at the first bad record); the bounds check alone keeps the walk inside ``buf``.
    """
    offsets = np.empty(limit, dtype=np.int64)
    stopped_at = ffi.new("int64_t *")
    n = lib.pcap_walk(ffi.from_buffer(buf), pos, end, limit, header_len, CAPLEN_OFFSET, big_endian,
                      ffi.from_buffer("int64_t[]", offsets), stopped_at)  # fmt: skip
    return offsets[:n], stopped_at[0]
