"""pcapng files: sections (SHB) of interface descriptions (IDB) and packet blocks.

Format: https://datatracker.ietf.org/doc/draft-ietf-opsawg-pcapng/ .  Each
section has its own byte order (decided once per SHB from its byte-order
magic) and its own interfaces, each with a link type, snaplen, and timestamp
resolution (``if_tsresol``, a power of ten or of two) and offset (``if_tsoffset``).

Packet blocks: Enhanced (EPB) on the fast path (walked like pcap records, fields
gathered per batch with numpy); Simple (SPB: interface 0, no timestamp, so it
gets the previous packet's timestamp) and the obsolete Packet Block (PB) in
Python, since no current tool writes many of them.  Every other block (name
resolution, interface statistics, decryption secrets, custom, unknown) is
skipped and counted in ``stats.skipped_blocks``; custom and systemd-journal blocks
still take a frame number, as in Wireshark, so that frame numbers agree with it.

Interfaces are numbered across the whole file (the ``iface`` column indexes
:attr:`Capture.interfaces`); in a single-section file that is the pcapng
interface id.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rstscope.grouped import distinct
from rstscope.packets import ReadStats
from rstscope.reader._compiled import ffi, lib
from rstscope.reader.decode import Bytes, RecordBatch
from rstscope.reader.interface import MAX_CAPLEN, Interface, make_interface
from rstscope.reader.source import Window
from rstscope.status import InputError

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_PB = 0x00000002  # obsolete Packet Block
BLOCK_SPB = 0x00000003
BLOCK_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
FRAME_BLOCKS = (0x0000_0BAD, 0x4000_0BAD, 0x0000_0009)
"""Custom blocks and systemd journal export blocks: not packets, but Wireshark gives them a frame
number, so they take one here too (and are counted in ``skipped_blocks``), keeping frame numbers equal."""

MAX_BLOCK_LEN = 16 << 20
"""Largest block accepted (Wireshark's limit too); a longer one means a corrupt length field."""

SHB = np.dtype(
    [
        ("block_type", "u4"),
        ("block_total_length", "u4"),
        ("byte_order_magic", "u4"),  # 0x1A2B3C4D in the section's byte order
        ("major_version", "u2"),
        ("minor_version", "u2"),
        ("section_length", "i8"),  # -1: not given; not used here
    ]
)
"""Section Header Block (fixed part), 24 bytes; options follow."""

IDB = np.dtype(
    [
        ("block_type", "u4"),
        ("block_total_length", "u4"),
        ("link_type", "u2"),
        ("reserved", "u2"),
        ("snap_len", "u4"),
    ]
)
"""Interface Description Block (fixed part), 16 bytes; options follow."""

EPB = np.dtype(
    [
        ("block_type", "u4"),
        ("block_total_length", "u4"),
        ("interface_id", "u4"),
        ("timestamp_upper", "u4"),  # 64-bit timestamp in if_tsresol units, high half first
        ("timestamp_lower", "u4"),
        ("captured_packet_length", "u4"),
        ("original_packet_length", "u4"),
    ]
)
"""Enhanced Packet Block (fixed part), 28 bytes; packet data (padded to 4) and options follow."""

PB = np.dtype(
    [
        ("block_type", "u4"),
        ("block_total_length", "u4"),
        ("interface_id", "u2"),
        ("drops_count", "u2"),
        ("timestamp_upper", "u4"),
        ("timestamp_lower", "u4"),
        ("captured_len", "u4"),
        ("packet_len", "u4"),
    ]
)
"""Obsolete Packet Block (fixed part), 28 bytes."""

SPB = np.dtype([("block_type", "u4"), ("block_total_length", "u4"), ("original_packet_length", "u4")])
"""Simple Packet Block (fixed part), 12 bytes; interface 0, captured length = min(wire, snaplen, room)."""

OPT_ENDOFOPT = 0
IF_NAME = 2
IF_TSRESOL = 9
IF_TSOFFSET = 14
DEFAULT_TSRESOL = 6  # µs when the IDB has no if_tsresol

# Walk stop reasons.
_LIMIT, _MORE, _SECTION, _DAMAGE = range(4)


@dataclass
class _Section:
    order: str
    index: int
    interfaces: list[int]
    """Section interface id -> index into the file's interface list."""
    header: struct.Struct
    u32: struct.Struct


MAX_TSOFFSET_S = 100 * 365 * 86_400
"""An ``if_tsoffset`` beyond a century either way is damage, not a clock: ignored, with a warning."""


def ts_to_ns(ticks: np.ndarray, tsresol: int, tsoffset_s: int) -> np.ndarray:
    """pcapng timestamps (uint64 ticks) to int64 ns since the epoch, exact to the ns."""
    ticks = ticks.astype(np.uint64)
    exponent = tsresol & 0x7F
    if tsresol & 0x80:  # 2**-exponent seconds (exponents above 63 act as 63: no 64-bit tick is that fine)
        exponent = min(exponent, 63)
        whole = (ticks >> np.uint64(exponent)).astype(np.int64) * 1_000_000_000
        frac = ticks & np.uint64((1 << exponent) - 1)
        shift = max(exponent - 34, 0)  # keep frac * 1e9 below 2**64
        frac = (frac >> np.uint64(shift)) * np.uint64(1_000_000_000) >> np.uint64(exponent - shift)
        ns = whole + frac.astype(np.int64)
    elif exponent <= 9:
        ns = ticks.astype(np.int64) * np.int64(10 ** (9 - exponent))
    else:
        ns = (ticks // np.uint64(10 ** min(exponent - 9, 19))).astype(np.int64)
    return ns + np.int64(tsoffset_s) * 1_000_000_000 if tsoffset_s else ns


def _resolution_ns(tsresol: int) -> float:
    exponent = tsresol & 0x7F
    return 1e9 / (2**exponent) if tsresol & 0x80 else 1e9 / (10**exponent)


class PcapngReader:
    """Walks the blocks of a pcapng file and hands out :class:`RecordBatch` es."""

    format = "pcapng"

    def __init__(self, window: Window, stats: ReadStats, path: str):
        self._window = window
        self._stats = stats
        self.interfaces: list[Interface] = []
        self._tsresol: list[int] = []
        self._link_types = np.zeros(0, dtype=np.int64)
        self._frames = 0
        self._sections = 0
        self._last_ts = 0
        self._warned_snaplen = False
        self._warned_record = False
        self._done = False
        if not window.refill(SHB.itemsize):
            raise InputError(f"{path}: truncated pcapng section header ({window.available} of 28 bytes)")
        problem = self._start_section()
        if problem:
            raise InputError(f"{path}: {problem}")
        self._prescan()

    # ------------------------------------------------------------ sections and interfaces

    def _start_section(self) -> str | None:
        """Parse the SHB at the window position; a problem description if it is not usable."""
        window = self._window
        if not window.refill(SHB.itemsize + 4):
            return f"section header @0x{window.offset(window.pos):x}: file ends inside the block"
        buf, pos = window.buf, window.pos
        order = {0x1A2B3C4D: "<", 0x4D3C2B1A: ">"}.get(struct.unpack_from("<I", buf, pos + 8)[0])
        where = f"section header @0x{window.offset(pos):x}"
        if order is None:
            magic = buf[pos + 8 : pos + 12].hex(" ")
            return f"{where}: bad byte-order magic {magic} (expected 1a 2b 3c 4d or 4d 3c 2b 1a)"
        header = np.frombuffer(buf, SHB.newbyteorder(order), 1, pos)[0]
        length = int(header["block_total_length"])
        if int(header["major_version"]) != 1:
            return f"{where}: unsupported pcapng version {header['major_version']}.{header['minor_version']}"
        if length < SHB.itemsize + 4 or length % 4 or length > MAX_BLOCK_LEN:
            return f"{where}: bad block length {length}"
        if not window.refill(length):
            return f"{where}: file ends inside the section header block"
        self._section = _Section(
            order=order,
            index=self._sections,
            interfaces=[],
            header=struct.Struct(order + "II"),
            u32=struct.Struct(order + "I"),
        )
        self._sections += 1
        window.pos += length
        return None

    def _add_interface(self, buf: bytes, pos: int, length: int) -> None:
        section = self._section
        fixed = np.frombuffer(buf, IDB.newbyteorder(section.order), 1, pos)[0]
        options = _options(buf, pos + IDB.itemsize, pos + length - 4, section.order)
        tsresol = options[IF_TSRESOL][0] if options.get(IF_TSRESOL) else DEFAULT_TSRESOL
        offset_bytes = options.get(IF_TSOFFSET, b"")
        tsoffset = struct.unpack(section.order + "q", offset_bytes)[0] if len(offset_bytes) == 8 else 0
        if abs(tsoffset) > MAX_TSOFFSET_S:  # a damaged option: in ns it would not even fit 64 bits
            self._stats.warnings.append(
                f"interface {len(self.interfaces)}: if_tsoffset of {tsoffset} s ignored (more than "
                f"{MAX_TSOFFSET_S // (365 * 86_400)} years)"
            )
            tsoffset = 0
        name = options[IF_NAME].split(b"\0")[0].decode("utf-8", "replace") if IF_NAME in options else None
        interface = make_interface(
            int(fixed["link_type"]),
            snaplen=int(fixed["snap_len"]),
            ts_resolution_ns=_resolution_ns(tsresol),
            ts_offset_s=tsoffset,
            name=name,
            section=section.index,
        )
        section.interfaces.append(len(self.interfaces))
        self.interfaces.append(interface)
        self._tsresol.append(tsresol)
        self._link_types = np.append(self._link_types, interface.link_type)

    # ------------------------------------------------------------ the block walk

    def batches(self, limit: int) -> Iterator[RecordBatch]:
        """Batches of at most ``limit`` packet records, in file order, until EOF or damage."""
        if self._done:
            return
        while True:
            offsets, extras, pos, reason = self._walk(limit)
            self._window.pos = pos
            if len(offsets):
                batch = self._batch(offsets, extras)
                if batch is not None:
                    yield batch
            if not self._continue_after(reason):
                return

    def _prescan(self) -> None:
        """Process the blocks before the first packet block, so that interfaces are known at open time."""
        while True:
            _, _, pos, reason = self._walk(0)
            self._window.pos = pos
            if reason == _LIMIT or not self._continue_after(reason):
                return

    def _continue_after(self, reason: int) -> bool:
        """Act on a walk's stop reason; False when reading is over."""
        if reason == _MORE:
            return self._refill()
        if reason == _SECTION:
            problem = self._start_section()
            if problem:
                self._stats.warnings.append(f"{problem}; stopped reading here")
                self._done = True
                return False
            return True
        if reason == _DAMAGE:
            self._done = True
            return False
        return True

    def _refill(self) -> bool:
        window = self._window
        need = 12
        if window.available >= 8:
            need = max(need, self._section.header.unpack_from(window.buf, window.pos)[1])
        if need <= MAX_BLOCK_LEN and window.refill(need):
            return True
        if window.source.damage:
            self._stats.warnings.append(window.source.damage)
        if window.available:
            self._stats.warnings.append(
                f"block @0x{window.offset(window.pos):x} (after record {self._frames}): file ends inside"
                f" the block ({window.available} of {need} bytes); stopped reading here"
            )
        self._done = True
        return False

    def _walk(self, limit: int) -> tuple[np.ndarray, list, int, int]:
        """Walk blocks from the window position: packet-block offsets, SPB/PB records, stop position, reason.

        Runs of well-formed EPBs take the compiled walk (``walk.c``: ``pcapng_walk``); the block it stops
        at, anything else, is looked at here (an SPB, PB or odd EPB by :meth:`_other_packet`).  An SPB/PB
        is entered in ``offsets`` as ``-1 - i`` for ``extras[i]``.
        """
        window = self._window
        buf = window.buf
        pos = window.pos
        end = window.end
        header = self._section.header.unpack_from
        u32 = self._section.u32.unpack_from
        offsets = np.empty(limit, dtype=np.int64)
        walked = ffi.from_buffer("int64_t[]", offsets)
        data = ffi.from_buffer(buf)
        stopped_at = ffi.new("int64_t *")
        big_endian = self._section.order == ">"
        extras: list[tuple] = []
        count = 0
        while pos + 12 <= end:
            if count < limit:
                count += lib.pcapng_walk(data, pos, end, limit - count, big_endian, MAX_BLOCK_LEN,
                                         walked + count, stopped_at)  # fmt: skip
                pos = stopped_at[0]
                if pos + 12 > end:
                    break
            kind, length = header(buf, pos)
            after = pos + length
            if kind == BLOCK_SHB:
                return offsets[:count], extras, pos, _SECTION
            where = f"block @0x{window.offset(pos):x} (type 0x{kind:x}, after record {self._frames + count})"
            if length < 12 or length & 3 or length > MAX_BLOCK_LEN:
                self._stats.warnings.append(f"{where}: bad block length {length}; stopped reading here")
                return offsets[:count], extras, pos, _DAMAGE
            if after > end:
                return offsets[:count], extras, pos, _MORE
            if u32(buf, after - 4)[0] != length:
                self._stats.warnings.append(
                    f"{where}: trailing block length {u32(buf, after - 4)[0]} != leading {length}; stopped reading here"
                )
                return offsets[:count], extras, pos, _DAMAGE
            if kind in (BLOCK_EPB, BLOCK_SPB, BLOCK_PB):
                if count >= limit:
                    return offsets[:count], extras, pos, _LIMIT
                offsets[count] = -1 - len(extras)
                extras.append(self._other_packet(buf, pos, kind, length, where))
                count += 1
            elif kind == BLOCK_IDB and length >= IDB.itemsize + 4:
                self._add_interface(buf, pos, length)
            else:
                self._stats.skipped_blocks[f"0x{kind:x}"] += 1
                if kind in FRAME_BLOCKS:
                    if count >= limit:
                        self._stats.skipped_blocks[f"0x{kind:x}"] -= 1  # seen again on the next walk
                        return offsets[:count], extras, pos, _LIMIT
                    offsets[count] = -1 - len(extras)
                    extras.append((pos, pos, 0, 0, None, 0, False, False))
                    count += 1
            pos = after
        return offsets[:count], extras, pos, _MORE

    def _other_packet(self, buf, pos, kind, length, where) -> tuple:
        """An SPB, a PB or a too-short EPB, in Python.

        Returns (block offset, data offset, caplen, wirelen, timestamp ticks or None, iface, usable,
        is a packet record).
        """
        order = self._section.order
        ifaces = self._section.interfaces
        if kind == BLOCK_SPB and length >= 16:
            wirelen = int(np.frombuffer(buf, SPB.newbyteorder(order), 1, pos)[0]["original_packet_length"])
            if not ifaces:
                return self._bad_record(pos, f"{where}: simple packet block before any interface")
            snaplen = self.interfaces[ifaces[0]].snaplen or MAX_CAPLEN
            caplen = min(wirelen, snaplen, length - 16)
            return (pos, pos + 12, caplen, wirelen, None, ifaces[0], True, True)
        if kind in (BLOCK_PB, BLOCK_EPB) and length >= 32:
            dtype = PB if kind == BLOCK_PB else EPB
            fixed = np.frombuffer(buf, dtype.newbyteorder(order), 1, pos)[0].tolist()
            iface, ticks, caplen, wirelen = fixed[2], (fixed[4] << 32) | fixed[5], fixed[6], fixed[7]
            if iface >= len(ifaces):
                return self._bad_record(pos, f"{where}: interface {iface} not declared")
            if caplen > length - 32:
                return self._bad_record(pos, f"{where}: caplen {caplen} > room in block {length - 32}")
            return (pos, pos + 28, caplen, wirelen, ticks, ifaces[iface], True, True)
        return self._bad_record(pos, f"{where}: packet block too short ({length} bytes)")

    def _bad_record(self, pos: int, message: str) -> tuple:
        if not self._warned_record:
            self._warned_record = True
            self._stats.warnings.append(f"{message}; record skipped (further ones not reported)")
        return (pos, pos, 0, 0, None, 0, False, True)

    # ------------------------------------------------------------ batch fields

    def _batch(self, offsets: np.ndarray, extras: list) -> RecordBatch | None:
        window = self._window
        section = self._section
        data = np.frombuffer(window.buf, dtype=np.uint8)
        n = len(offsets)
        fast = offsets >= 0
        fast_offsets = offsets[fast]
        fixed = Bytes(data).rows(fast_offsets, EPB.itemsize).view(EPB.newbyteorder(section.order)).reshape(-1)
        data_off = np.empty(n, dtype=np.int64)
        caplen = np.empty(n, dtype=np.int64)
        wirelen = np.empty(n, dtype=np.int64)
        ticks = np.empty(n, dtype=np.uint64)
        iface = np.empty(n, dtype=np.int64)
        has_ts = np.ones(n, dtype=bool)
        data_off[fast] = fast_offsets + EPB.itemsize
        caplen[fast] = fixed["captured_packet_length"]
        wirelen[fast] = fixed["original_packet_length"]
        ticks[fast] = (fixed["timestamp_upper"].astype(np.uint64) << np.uint64(32)) | fixed["timestamp_lower"]
        local_iface = fixed["interface_id"].astype(np.int64)
        room = fixed["block_total_length"].astype(np.int64) - 32
        section_map = np.array(section.interfaces, dtype=np.int64)
        known = local_iface < len(section_map)
        iface[fast] = np.where(known, section_map[np.where(known, local_iface, 0)] if len(section_map) else 0, 0)
        valid = np.ones(n, dtype=bool)
        valid[fast] = known & (caplen[fast] <= room)
        block_pos = offsets.copy()
        is_record = np.ones(n, dtype=bool)
        slots = np.flatnonzero(~fast).tolist()
        for slot, (pos, off, cap, wire, tick, idx, ok, record) in zip(slots, extras, strict=True):
            block_pos[slot], data_off[slot], caplen[slot], wirelen[slot], iface[slot] = pos, off, cap, wire, idx
            ticks[slot] = tick or 0
            has_ts[slot] = tick is not None
            valid[slot] = ok
            is_record[slot] = record

        bad_fast = fast & ~valid
        if bad_fast.any():
            first = int(np.flatnonzero(bad_fast)[0])
            fast_index = int(np.count_nonzero(fast[:first]))
            if not self._warned_record:
                self._warned_record = True
                problem = (
                    f"interface {int(local_iface[fast_index])} not declared"
                    if not known[fast_index]
                    else f"caplen {int(caplen[first])} > room in block {int(room[fast_index])}"
                )
                self._stats.warnings.append(
                    f"record {self._frames + first + 1} @0x{window.offset(int(block_pos[first])):x}: {problem};"
                    " record skipped (further ones not reported)"
                )
        frames = np.arange(self._frames + 1, self._frames + n + 1, dtype=np.uint64)
        self._frames += n
        skipped = int(np.count_nonzero(~valid))
        self._stats.records += int(np.count_nonzero(~valid & is_record))
        if skipped:
            data_off, caplen, wirelen, ticks, iface, has_ts, frames, block_pos = (
                column[valid] for column in (data_off, caplen, wirelen, ticks, iface, has_ts, frames, block_pos)
            )
        if len(frames) == 0:
            return None

        ts_ns = np.zeros(len(frames), dtype=np.int64)
        used = distinct(iface)
        for index in used.tolist():
            rows = iface == index
            ts_ns[rows] = ts_to_ns(ticks[rows], self._tsresol[index], self.interfaces[index].ts_offset_s)
        if not has_ts.all():
            # SPBs carry no timestamp: give them the previous packet's (0 before any).
            known_ts = np.where(has_ts, np.arange(len(ts_ns)), -1)
            np.maximum.accumulate(known_ts, out=known_ts)
            ts_ns = np.where(known_ts >= 0, ts_ns[np.maximum(known_ts, 0)], self._last_ts)
        self._last_ts = int(ts_ns[-1])

        if not self._warned_snaplen:
            snaplens = np.array([i.snaplen for i in self.interfaces], dtype=np.int64)[iface]
            over = np.flatnonzero((snaplens > 0) & (caplen > snaplens))
            if len(over):
                self._warned_snaplen = True
                first = int(over[0])
                self._stats.warnings.append(
                    f"record {int(frames[first])} @0x{window.offset(int(block_pos[first])):x}: "
                    f"caplen {int(caplen[first])} > snaplen {int(snaplens[first])}; read anyway (warned once)"
                )
        big = caplen > MAX_CAPLEN
        if big.any():
            # Not corrupt framing (the block length holds it), just more than we decode.
            caplen = np.minimum(caplen, MAX_CAPLEN)
        self._stats.bytes_read = window.offset(int(data_off[-1] + caplen[-1]))
        return RecordBatch(
            data=data,
            data_off=data_off,
            caplen=caplen,
            wirelen=wirelen,
            ts_ns=ts_ns,
            frame=frames,
            iface=iface.astype(np.uint16),
            link_type=self._link_types[iface],
        )


def _options(buf: bytes, pos: int, end: int, order: str) -> dict[int, bytes]:
    """Options of a block (code -> value; the first of repeated codes wins), stopping at damage."""
    options: dict[int, bytes] = {}
    head = struct.Struct(order + "HH")
    while pos + 4 <= end:
        code, length = head.unpack_from(buf, pos)
        if code == OPT_ENDOFOPT or pos + 4 + length > end:
            break
        options.setdefault(code, bytes(buf[pos + 4 : pos + 4 + length]))
        pos += 4 + ((length + 3) & ~3)
    return options
