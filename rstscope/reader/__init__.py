"""The capture reader: pcap / pcapng files (optionally gzip-compressed) -> PacketTable chunks.

Usage::

    with open_capture("trace.pcap") as capture:
        for table in capture.chunks():      # numpy arrays of packets.PACKET_DTYPE, file order
            ...
        print(capture.stats.warnings)

Layout: :mod:`.source` (bytes, gzip, sliding window) -> :mod:`.pcap` / :mod:`.pcapng`
(record walk: where each frame is, its timestamp, interface, link type) ->
:mod:`.decode` (all frames of a batch at once: link layer, IP, TCP, options).

Fast path and its scope: classic pcap records and pcapng EPBs, of the link types in
:mod:`.linktypes`, carrying IPv4/IPv6 (any options or extension headers) and TCP with any
options, are decoded in batches of 65 536 records.  Plain frames (no tunnel, shim, fragment, IPv6
extension header or decode error: nearly all of them) are decoded in one compiled pass (``plain.c``,
about 25 ns a frame); the others by numpy, by columns (:mod:`.decode`), as every frame was before
it.  With that pass the reader took 1 M packets of ``bench_reader.py``'s file (below) at 7.9-12.2 M
packets/s from a classic pcap (3.7-4.6 M without it, the same runs alternating), 5.8-6.5 M from
pcapng (3.0-4.0 M) and 4.1-4.4 M gzip-compressed (2.8-3.1 M), at 50-55 MB peak RSS.  The figures
that follow are from before it.  The per-record loops are compiled
(``walk.c``: the pcap record walk, once one ``unpack_from`` per record, about 0.14 µs;
``records.c``: the table's rows written in one pass instead of one pass per field; together they
took the long benchmark capture's 1 M packets from 0.48-0.50 to 0.31 s of CPU:
benchmarks/PLAN.md §14; the figures below are from before them). Measured on the project's
2-core box with ``tests/reader/bench_reader.py`` (1 M Ethernet/IPv4/TCP packets, Linux
NOP,NOP,TS options, a SYN with full options every 1000, frames cut at a 128-byte snaplen;
113 MB): classic pcap 2.3-2.4 M packets/s, pcapng 1.9 M packets/s, gzip-compressed pcap 1.8 M
packets/s; peak RSS of the reading process 72 MB (pcapng 82 MB, gzip 99 MB). The first batches
pay for fresh memory: the same records repeated into an 8 M-packet, 904 MB file read at 2.9 M
packets/s, still at 72 MB peak RSS (memory does not grow with the file). Roughly, per packet:
walk 0.14 µs, record headers 0.04 µs, decode 0.15-0.2 µs, file reads 0.04 µs. TCP options other
than NOP,NOP,TS take a slower vectorised loop (one pass per option). SPB and obsolete PB
records, and every non-packet block, are handled in Python (a few µs each). Records of other
link types are counted in ``stats.unsupported_link`` and skipped; other protocols are counted
(``non_ip``, ``non_tcp``, ``ip_fragments``). Tunnels and shims (GRE, ERSPAN, VXLAN, Geneve,
IP-in-IP, MPLS, PPPoE; see :mod:`.decode`) are vectorised layers run only on the rows that carry
them: plain Ethernet/IPv4/TCP pays one comparison per packet (whole reader, best CPU time of 7
reads, alternating with the code before tunnels on a loaded machine: 0.58-0.64 s against 0.65 s
for the 1 M-packet file above; the decoder alone within ±4 %, the noise); the same 1 M packets
inside VXLAN (50 more bytes each) take 0.90-1.18 s of CPU (about 1.1 M packets/s).
What may carry TCP but could not be decoded is counted by cause in ``stats.undecoded`` and
summed up in one warning.

Errors: :func:`open_capture` raises :class:`rstscope.status.InputError` (one line)
when the file cannot be read as a capture at all.  Damage met while reading (a
truncated record, an impossible length, a cut gzip stream) ends reading with a
one-line warning in ``stats.warnings``; every packet before it is still yielded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np

from rstscope.packets import PACKET_DTYPE, PacketTable, ReadStats, describe_undecoded
from rstscope.reader.decode import decode_batch
from rstscope.reader.interface import Interface
from rstscope.reader.linktypes import DECODED_SUMMARY
from rstscope.reader.pcap import MAGIC as PCAP_MAGIC
from rstscope.reader.pcap import PcapReader
from rstscope.reader.pcapng import SHB_MAGIC, PcapngReader
from rstscope.reader.source import Source, Window
from rstscope.status import InputError

__all__ = ["Capture", "Interface", "open_capture", "read_all"]

DEFAULT_CHUNK_PACKETS = 262_144
DECODE_BATCH = 65_536
"""Most records decoded at once (a chunk holds the rows of ``min(chunk_packets, DECODE_BATCH)``
records): big enough to amortise numpy's per-call cost, small enough that the decoder's temporaries
stay near 20 MB (a 262 144-record batch needs about 80 MB, for no gain)."""


class Capture:
    """An open capture file.  Use as a context manager; :meth:`chunks` is single-pass."""

    path: Path
    """The file as given to :func:`open_capture`."""
    format: Literal["pcap", "pcapng"]
    compressed: bool
    """True when the file is gzip-compressed (detected by its magic bytes, not its name)."""
    stats: ReadStats
    """Counters and warnings, filled in while :meth:`chunks` runs."""
    interfaces: list[Interface]
    """Capture interfaces (pcapng: grows when IDBs appear later in the file); ``iface`` indexes it."""

    def __init__(self, path: Path, source: Source, reader: PcapReader | PcapngReader, stats: ReadStats, chunk: int):
        self.path = path
        self.format = reader.format
        self.compressed = source.compressed
        self.stats = stats
        self.interfaces = reader.interfaces
        self._source = source
        self._reader = reader
        self._chunk_packets = chunk
        self._started = False

    def chunks(self) -> Iterator[PacketTable]:
        """PacketTable chunks in file order, each of at most ``chunk_packets`` rows.

        A chunk holds the TCP rows of up to ``min(chunk_packets, 65 536)`` records, so chunks
        are often smaller than ``chunk_packets``; chunks without rows are not yielded.
        """
        if self._started:
            raise RuntimeError("Capture.chunks() can run only once; open the capture again to re-read it")
        self._started = True
        try:
            for batch in self._reader.batches(min(self._chunk_packets, DECODE_BATCH)):
                table = decode_batch(batch, self.stats)
                if len(table):
                    yield table
            if self.stats.undecoded:
                self.stats.warnings.append(describe_undecoded(self.stats.undecoded))
        finally:
            self.close()

    def close(self) -> None:
        self._source.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        gz = ", gzip" if self.compressed else ""
        return f"<Capture {str(self.path)!r} {self.format}{gz}, {len(self.interfaces)} interface(s)>"


def open_capture(
    path: str | os.PathLike, *, chunk_packets: int = DEFAULT_CHUNK_PACKETS, stream: BinaryIO | None = None
) -> Capture:
    """Open a pcap or pcapng file (plain or gzip) for reading.

    Raises :class:`InputError` (one-line message) for a missing, unreadable, empty
    or non-capture file, and for a capture none of whose interfaces has a link type
    rstscope decodes.  For pcapng, the blocks before the first packet are read here,
    so the check covers the interfaces declared before the first packet.

    ``stream``: an open binary stream to read instead of opening ``path`` (standard input, a
    FIFO already waited on: see :mod:`rstscope.inputs`); ``path`` then only names it.
    """
    if chunk_packets < 1:
        raise ValueError(f"chunk_packets must be at least 1, not {chunk_packets}")
    path = Path(path)
    raw = stream if stream is not None else _open(path)
    source = Source(raw)
    try:
        stats = ReadStats()
        window = Window(source)
        window.refill(4)
        inside = " (inside gzip)" if source.compressed else ""
        if window.available == 0:
            damage = f": {source.damage}" if source.damage else ""
            raise InputError(f"{path}: empty file{inside}{damage}")
        magic = bytes(window.buf[: min(4, window.available)])
        if magic in PCAP_MAGIC:
            reader = PcapReader(window, stats, str(path))
        elif magic == SHB_MAGIC:
            reader = PcapngReader(window, stats, str(path))
        else:
            raise InputError(f"{path}: not a pcap or pcapng file{inside}: first bytes {magic.hex(' ')}")
        if reader.interfaces and not any(i.decoded for i in reader.interfaces):
            kinds = ", ".join(sorted({f"{i.link_type} ({i.link_name})" for i in reader.interfaces}))
            plural = "s" if "," in kinds else ""
            raise InputError(f"{path}: unsupported link type{plural} {kinds}: rstscope decodes {DECODED_SUMMARY}")
    except BaseException:
        source.close()
        raise
    return Capture(path, source, reader, stats, chunk_packets)


def _open(path: Path):
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a directory, not a capture file")
    try:
        return open(path, "rb")
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from None


def read_all(path: str | os.PathLike, **kw) -> tuple[PacketTable, ReadStats]:
    """Every TCP row of a capture in one table, and the read statistics (for tests and small files)."""
    with open_capture(path, **kw) as capture:
        tables = list(capture.chunks())
        table = np.concatenate(tables) if tables else np.zeros(0, dtype=PACKET_DTYPE)
        return table, capture.stats
