"""The packet table: one numpy row per TCP segment read from a capture.

Every later stage (connections, evidence, verdicts, plots) reads packets only
through this table, so its columns are API.  A reader yields the table in
chunks (``PacketTable`` arrays of at most a few hundred thousand rows) so that
memory stays bounded by the chunk size, not by the file size.

Rows exist only for packets that carry TCP (over IPv4 or IPv6).  Everything
else a capture holds is counted in :class:`ReadStats` and otherwise ignored.
A packet that looked like TCP but could not be decoded keeps a row with a
non-zero ``decode_error`` (and whatever fields were readable); later stages
skip such rows but count them.

Addresses are 128-bit, split in two big-endian halves (``*_hi``, ``*_lo``);
IPv4 addresses are stored IPv4-mapped (``::ffff:a.b.c.d``), so one key works
for both families.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

# TCP flag bits as they sit in the 16-bit word after the data offset (RFC 9293, RFC 3168).
FIN = 0x001
SYN = 0x002
RST = 0x004
PSH = 0x008
ACK = 0x010
URG = 0x020
ECE = 0x040
CWR = 0x080
AE = 0x100  # formerly NS (RFC 3540, obsoleted); AccECN (RFC 9768) reuses the bit

IPV4_MAPPED_HI = 0
IPV4_MAPPED_LO_PREFIX = 0x0000_FFFF_0000_0000


class DecodeError(enum.IntEnum):
    """Why a TCP-looking packet could not be fully decoded (``decode_error`` column)."""

    NONE = 0
    """Decoded; every column is valid."""
    IP_HEADER_TRUNCATED = 1
    """The capture cut the packet inside the IP header (or IPv6 extension chain)."""
    IP_BAD_HEADER = 2
    """IPv4 IHL below 5, or total length shorter than the header."""
    TCP_HEADER_TRUNCATED = 3
    """The capture cut the packet inside the 20-byte TCP header; ports may be valid, nothing else."""
    TCP_BAD_OFFSET = 4
    """TCP data offset below 5 words, or beyond the IP payload."""
    TCP_OPTIONS_TRUNCATED = 5
    """Fixed TCP header present but options cut by the snaplen; option columns are absent."""


PACKET_DTYPE = np.dtype(
    [
        ("frame", "<u8"),  # 1-based record number in the file, as Wireshark's frame.number
        ("ts_ns", "<i8"),  # capture time, nanoseconds since the Unix epoch
        ("iface", "<u2"),  # pcapng interface id (0 for classic pcap)
        ("ip_version", "u1"),  # 4 or 6
        ("src_hi", "<u8"),  # source address, high 64 bits (0 for IPv4-mapped)
        ("src_lo", "<u8"),  # source address, low 64 bits
        ("dst_hi", "<u8"),
        ("dst_lo", "<u8"),
        ("src_port", "<u2"),
        ("dst_port", "<u2"),
        ("seq", "<u4"),  # raw sequence number
        ("ack", "<u4"),  # raw acknowledgment number (meaningful only with the ACK flag)
        ("flags", "<u2"),  # FIN..CWR bits plus AE (0x100)
        ("window", "<u2"),  # raw window field; scaling is the connection's business
        ("payload_len", "<u4"),  # TCP payload bytes on the wire, from the IP lengths (not caplen)
        ("tcp_header_len", "u1"),  # data offset in bytes (20..60)
        ("mss", "<u2"),  # MSS option value, 0 when absent
        ("wscale", "i1"),  # window-scale shift, -1 when absent
        ("sack_permitted", "?"),
        ("sack_blocks", "u1"),  # number of SACK blocks carried
        ("has_ts", "?"),  # timestamps option present
        ("tsval", "<u4"),
        ("tsecr", "<u4"),
        ("ttl", "u1"),  # IPv4 TTL or IPv6 hop limit
        ("ip_id", "<u2"),  # IPv4 identification field (0 for IPv6, which has none outside fragments)
        ("tcp_auth", "u1"),  # TCP authentication option kind carried: 19 (TCP-MD5, RFC 2385), 29 (TCP-AO, RFC 5925), 0
        ("tunnel_id", "<u8"),  # tenant key of a decapsulated packet (VNI, GRE key, ERSPAN session; kind in the
        # top byte: rstscope.reader.tunnels), 0 when not tunnelled or tunnelled without an identifier
        ("payload_truncated", "?"),  # the snaplen cut the payload (headers are complete)
        ("decode_error", "u1"),  # DecodeError
    ]
)
"""One row per TCP segment.  Column meanings are in the comments above."""

PacketTable = np.ndarray
"""A 1-D structured array of PACKET_DTYPE (type alias for documentation)."""


def empty(n: int = 0) -> PacketTable:
    """A zero-filled table of ``n`` rows with option columns marked absent."""
    table = np.zeros(n, dtype=PACKET_DTYPE)
    table["wscale"] = -1
    return table


@dataclass(kw_only=True)
class ReadStats:
    """What a reader saw besides the TCP rows it yielded.  Filled in while reading."""

    records: int = 0
    """Packet records read from the file (every link type, every protocol)."""
    tcp_packets: int = 0
    """Rows yielded (TCP over IP), including rows with a decode error."""
    non_ip: int = 0
    """Records whose link layer carried something other than IPv4/IPv6 (ARP, STP, ...)."""
    non_tcp: int = 0
    """IP packets of another protocol (UDP, ICMP, ...)."""
    ip_fragments: int = 0
    """Non-first IPv4/IPv6 fragments and first fragments of fragmented TCP: counted, not reassembled."""
    undecoded: Counter = field(default_factory=Counter)
    """Packets that may carry TCP but gave no usable row, by cause (``rstscope.reader.tunnels.UNDECODED_CAUSES``):
    unsupported link types, tunnels we do not follow or that are cut short, fragments of TCP or of a
    tunnel, and rows with a decode error.  Empty when every such packet was decoded."""
    unsupported_link: Counter = field(default_factory=Counter)
    """Records skipped because their link type is not decoded, by link type number."""
    decode_errors: Counter = field(default_factory=Counter)
    """Rows by DecodeError name, for rows with a non-zero decode_error."""
    link_types: Counter = field(default_factory=Counter)
    """Records by link type number."""
    skipped_blocks: Counter = field(default_factory=Counter)
    """pcapng blocks skipped, by block type (hex string)."""
    warnings: list[str] = field(default_factory=list)
    """One-line warnings: truncated file, corrupt record, ... (reading stopped or resumed there)."""
    bytes_read: int = 0
    """Bytes consumed from the (decompressed) file."""


def describe_undecoded(undecoded: dict[str, int], *, most: int = 4) -> str:
    """``1,234 packets undecoded (gre: unsupported protocol 0x880b: 1,200, ip fragment: 34)``, the
    most frequent causes first (at most ``most`` of them, then ``...``); empty when nothing was."""
    total = sum(undecoded.values())
    if not total:
        return ""
    causes = sorted(undecoded.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{cause}: {n:,}" for cause, n in causes[:most])
    more = ", ..." if len(causes) > most else ""
    return f"{total:,} packet{'s' if total != 1 else ''} undecoded ({shown}{more})"


@functools.lru_cache(maxsize=65_536)
def format_addr(hi: int, lo: int) -> str:
    """Text form of a 128-bit address: dotted quad for IPv4-mapped, RFC 5952 otherwise."""
    hi, lo = int(hi), int(lo)
    if hi == IPV4_MAPPED_HI and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFF_FFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def format_endpoint(hi: int, lo: int, port: int) -> str:
    """``ip:port`` for IPv4, ``[ip]:port`` for IPv6 (the JSON ``src``/``dst`` form)."""
    addr = format_addr(hi, lo)
    return f"[{addr}]:{int(port)}" if ":" in addr else f"{addr}:{int(port)}"


def parse_addr(text: str) -> tuple[int, int]:
    """Inverse of :func:`format_addr`."""
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return IPV4_MAPPED_HI, IPV4_MAPPED_LO_PREFIX | int(ip)
    value = int(ip)
    return value >> 64, value & 0xFFFF_FFFF_FFFF_FFFF


def flag_names(flags: int) -> str:
    """Wireshark-like flag text, e.g. ``SYN,ACK`` or ``RST``."""
    names = [
        (SYN, "SYN"),
        (FIN, "FIN"),
        (RST, "RST"),
        (PSH, "PSH"),
        (ACK, "ACK"),
        (URG, "URG"),
        (ECE, "ECE"),
        (CWR, "CWR"),
        (AE, "AE"),
    ]
    return ",".join(name for bit, name in names if flags & bit) or "none"
