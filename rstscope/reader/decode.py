"""Vectorised decoding of a batch of captured frames into PacketTable rows.

The container readers (:mod:`.pcap`, :mod:`.pcapng`) only find where each record's
bytes are; this module turns a whole batch of records into rows at once with
numpy gathers (fancy indexing on a uint8 view of the read buffer).  There is no
per-packet Python here: every loop below runs over *layers* (VLAN tags, IPv6
extension headers, TCP option slots) and shrinks to the rows that still need it.

Plain frames, nearly all of a capture, do not even come here: ``plain.c`` decodes them in one
compiled pass, exactly as these column passes would (tests/reader/test_plain.py), and hands the
rest over (:func:`decode_batch`).

What is decoded, and what happens to everything else:

* link layer: see :mod:`.linktypes` (Ethernet with up to 4 802.1Q/802.1ad/QinQ tags (TPID 0x8100,
  0x88a8, 0x9100) or Cisco FabricPath, Linux cooked v1/v2, raw IP, IPv4, IPv6, BSD null and
  OpenBSD loop).  Other link types -> ``stats.unsupported_link``; other EtherTypes/families ->
  ``stats.non_ip``.
* IPv4 with options; IPv6 with hop-by-hop, routing, fragment, destination-options
  and AH headers (up to 8 of them).  Fragments -> ``stats.ip_fragments``; other
  protocols (including ESP and IPv6 "no next header") -> ``stats.non_tcp``.
* encapsulations (:mod:`.tunnels`), up to ``MAX_ENCAPSULATIONS`` (4) tunnels inside one another:
  GRE (checksum, key, sequence number; carrying IPv4, IPv6, Ethernet, MPLS, ERSPAN), ERSPAN
  types I/II/III, VXLAN (UDP 4789), Geneve (UDP 6081, any options), IPv4/IPv6 in IPv4/IPv6
  (protocols 4 and 41); and before an IP header, MPLS label stacks (up to 8 labels; IPv4/IPv6
  by the version nibble, or a pseudowire control word then Ethernet) and PPPoE sessions.  A
  tunnelled packet's row is the innermost IP packet's (addresses, TTL, IP ID); the tenant
  identifier (VXLAN/Geneve VNI, GRE key, ERSPAN session id) goes to ``tunnel_id``.  Only rows
  whose IP protocol may be a tunnel (4, 41, 47, or UDP to 4789/6081) or whose EtherType is a shim
  (MPLS, PPPoE, Ethernet-in-tunnel) enter these layers: a capture without them pays one
  comparison per packet.
* TCP: fixed header plus options (MSS, window scale, SACK-permitted, SACK block
  count, timestamps; malformed options end option parsing, nothing more).

Whatever may carry TCP but gives no usable row is counted by cause in ``stats.undecoded``
(the cause strings are :data:`.tunnels.UNDECODED_CAUSES`: unsupported link types, fragments of
TCP or of a tunnel, tunnels we do not follow or that are cut short, rows with a decode error).

Lengths come from the IP header, never from caplen: ``payload_len`` is what was on
the wire.  The frame's wire length bounds them (an IP length beyond it is cut to
it, as Wireshark does), and it replaces them for TCP segmentation offload
captured on the sending host: IPv4 total length 0, and IPv6 payload length 0
without a jumbo option (Linux BIG TCP).

A frame whose protocol may be TCP but whose headers are cut short or malformed
still gets a row, with ``decode_error`` set (see :class:`rstscope.packets.DecodeError`);
only the columns before the failure point are valid in such a row.  A frame
cut before the IP protocol field is visible counts as possibly TCP.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from rstscope.packets import PACKET_DTYPE, DecodeError, PacketTable, ReadStats
from rstscope.reader import tunnels
from rstscope.reader._compiled import ffi, lib
from rstscope.reader.linktypes import DECODED, LINKTYPE_CLASS_MASK, LinkLayer
from rstscope.reader.tunnels import count_undecoded

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad, pre-standard QinQ
MAX_VLAN_TAGS = 4
ETHERTYPE_FABRICPATH = 0x8903  # Cisco FabricPath: 2-byte FTag/TTL, then a whole inner Ethernet header
FABRICPATH_SKIP = 2 + 12  # FTag/TTL plus the inner destination and source MACs

AF_INET = 2
AF_INET6 = (24, 28, 30)  # NetBSD/OpenBSD, FreeBSD, macOS (pcap-linktype(7) LINKTYPE_NULL)

IPPROTO_TCP = 6
IPV6_EXTENSIONS = (0, 43, 44, 60, 51)  # hop-by-hop, routing, fragment, dest-opts, AH (RFC 8200, RFC 4302)
IPV6_FRAGMENT = 44
IPV6_AH = 51
IPV6_HOP_BY_HOP = 0
MAX_IPV6_EXTENSIONS = 8
IPV6_JUMBO_OPTION = 0xC2  # RFC 2675
MAX_ENCAPSULATIONS = 4
"""Tunnels followed inside one another (GRE, VXLAN, Geneve, IP-in-IP); deeper ones are undecoded."""
MAX_SHIMS = 4
"""Shim layers (inner Ethernet, MPLS stack, PPPoE) unwrapped in a row before an IP header."""
FRAGMENT_HIDES = (IPPROTO_TCP, tunnels.IPPROTO_IPIP, tunnels.IPPROTO_IPV6, tunnels.IPPROTO_GRE)
"""Protocols whose fragments count as undecoded (they may carry TCP we cannot read)."""
DECODE_ERROR_CAUSES = {
    DecodeError.IP_HEADER_TRUNCATED: "ip: header cut short",
    DecodeError.IP_BAD_HEADER: "ip: bad header",
    DecodeError.TCP_HEADER_TRUNCATED: "tcp: header cut short",
    DecodeError.TCP_BAD_OFFSET: "tcp: bad data offset",
    DecodeError.TCP_OPTIONS_TRUNCATED: "tcp: options cut short",
}
"""The ``undecoded`` cause of rows with a decode error (later stages skip those rows)."""

TCPOPT_EOL, TCPOPT_NOP, TCPOPT_MSS, TCPOPT_WSCALE = 0, 1, 2, 3  # RFC 9293, RFC 7323
TCPOPT_SACK_PERMITTED, TCPOPT_SACK, TCPOPT_TIMESTAMP = 4, 5, 8  # RFC 2018, RFC 7323
TCPOPT_MD5, TCPOPT_AO = 19, 29  # RFC 2385, RFC 5925
LINUX_TS_LAYOUT = 0x0101_080A  # NOP, NOP, TS kind 8 len 10: Linux's 12-byte option block

IPV4_MAPPED_LO = np.uint64(0x0000_FFFF_0000_0000)

# Row fates for bookkeeping (not API).  _UNDECODED rows have their cause counted where it was found.
_ROW, _NON_IP, _NON_TCP, _FRAGMENT, _UNSUPPORTED, _UNDECODED = 0, 1, 2, 3, 4, 5

_BE = {2: np.dtype(">u2"), 4: np.dtype(">u4"), 8: np.dtype(">u8")}

GATHER_PAD = 64
"""Readable bytes a reader guarantees after the last frame of a batch: gathers read fixed-width
windows (at most 40 bytes) that may run past a short frame's end; the extra bytes are masked."""


@dataclass(kw_only=True)
class RecordBatch:
    """Where the frames of a batch of records sit in a read buffer, plus their record-header facts.

    ``data`` views the reader's reusable buffer: a batch is valid until the reader is resumed.
    """

    data: np.ndarray
    """uint8 view of the read buffer holding every frame of the batch, plus GATHER_PAD bytes."""
    data_off: np.ndarray
    """int64: offset of each frame's first captured byte in ``data``."""
    caplen: np.ndarray
    """int64: captured bytes."""
    wirelen: np.ndarray
    """int64: original length on the wire."""
    ts_ns: np.ndarray
    """int64: capture time, ns since the epoch."""
    frame: np.ndarray
    """uint64: 1-based record number in the file."""
    iface: np.ndarray | int
    """uint16 per row, or one interface index for the whole batch."""
    link_type: np.ndarray | int
    """Link type per row, or one link type for the whole batch."""


class Bytes:
    """Fixed-width gathers from a buffer: ``rows(pos, w)`` is an (n, w) uint8 copy of ``data[p:p+w]``.

    Fancy-indexing a sliding-window view copies each window with one index per
    row (about 10 ns per row), five times faster than a 2-D index array.
    """

    def __init__(self, data: np.ndarray):
        self.data = data
        self._views: dict[int, np.ndarray] = {}

    def rows(self, pos: np.ndarray, width: int) -> np.ndarray:
        view = self._views.get(width)
        if view is None:
            view = self._views[width] = sliding_window_view(self.data, width)
        return view[pos]

    def be(self, pos: np.ndarray, width: int) -> np.ndarray:
        """Big-endian unsigned integers of ``width`` (2, 4, 8) bytes at ``pos``."""
        return self.rows(pos, width).view(_BE[width]).reshape(-1)


def _u16(block: np.ndarray, at: int) -> np.ndarray:
    return (block[:, at].astype(np.int64) << 8) | block[:, at + 1]


def _u32(block: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(block[:, at : at + 4]).view(_BE[4]).reshape(-1)


def _safe(ok: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``pos`` where ``ok``, else 0: lets a gather run over every row, masked afterwards."""
    return np.where(ok, pos, 0)


# ---------------------------------------------------------------- link layer
# Each takes (bytes, frame offsets, frame ends) and returns (offset of the network header,
# EtherType-like protocol: 0x0800, 0x86DD, or anything else for "not IP").


def _vlan_tags(buf: Bytes, l3, ethertype, end):
    """Follow 802.1Q/802.1ad tags (and a Cisco FabricPath encapsulation) to the inner EtherType."""
    for _ in range(MAX_VLAN_TAGS):
        tagged = (ethertype == VLAN_TPIDS[0]) | (ethertype == VLAN_TPIDS[1]) | (ethertype == VLAN_TPIDS[2])
        fabricpath = ethertype == ETHERTYPE_FABRICPATH
        inner = tagged | fabricpath
        if not inner.any():
            break
        skip = np.where(fabricpath, FABRICPATH_SKIP + 2, 4)
        ok = inner & (l3 + skip <= end)
        inner_type = buf.be(_safe(ok, l3 + skip - 2), 2)
        ethertype = np.where(inner, np.where(ok, inner_type, 0), ethertype)
        l3 = np.where(inner, l3 + skip, l3)
    return l3, ethertype


def _ethertype_at(buf: Bytes, off, end, type_at, header_len):
    l3 = off + header_len
    ok = l3 <= end
    ethertype = np.where(ok, buf.be(_safe(ok, off + type_at), 2), 0).astype(np.int64)
    return _vlan_tags(buf, l3, ethertype, end)


def _link_ethernet(buf, off, end):
    return _ethertype_at(buf, off, end, 12, 14)


def _link_sll(buf, off, end):
    return _ethertype_at(buf, off, end, 14, 16)


def _link_sll2(buf, off, end):
    return _ethertype_at(buf, off, end, 0, 20)


def _link_raw(buf, off, end):
    ok = off < end
    version = np.where(ok, buf.data[_safe(ok, off)] >> 4, 0)
    return off, np.select([version == 4, version == 6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)


def _link_ipv4(buf, off, end):
    return off, np.full(len(off), ETHERTYPE_IPV4)


def _link_ipv6(buf, off, end):
    return off, np.full(len(off), ETHERTYPE_IPV6)


def _family_to_ethertype(family):
    return np.select([family == AF_INET, np.isin(family, AF_INET6)], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)


def _link_null(buf, off, end):
    ok = off + 4 <= end
    word = buf.rows(_safe(ok, off), 4)
    little = (word[:, 1] == 0) & (word[:, 2] == 0) & (word[:, 3] == 0)
    big = (word[:, 0] == 0) & (word[:, 1] == 0) & (word[:, 2] == 0)
    family = np.where(little, word[:, 0], np.where(big, word[:, 3], -1)).astype(np.int64)
    return off + 4, np.where(ok, _family_to_ethertype(family), 0)


def _link_loop(buf, off, end):
    ok = off + 4 <= end
    family = buf.be(_safe(ok, off), 4).astype(np.int64)
    return off + 4, np.where(ok, _family_to_ethertype(family), 0)


_LINK_DECODERS = {
    LinkLayer.ETHERNET: _link_ethernet,
    LinkLayer.LINUX_SLL: _link_sll,
    LinkLayer.LINUX_SLL2: _link_sll2,
    LinkLayer.RAW: _link_raw,
    LinkLayer.IPV4: _link_ipv4,
    LinkLayer.IPV6: _link_ipv6,
    LinkLayer.NULL: _link_null,
    LinkLayer.LOOP: _link_loop,
}


# ---------------------------------------------------------------- the batch decoder


class _Rows:
    """Per-record working columns of one batch (full length; only some entries meaningful)."""

    def __init__(self, n: int):
        self.fate = np.full(n, _NON_IP, dtype=np.uint8)
        self.err = np.zeros(n, dtype=np.uint8)
        self.ip_version = np.zeros(n, dtype=np.uint8)
        self.src_hi = np.zeros(n, dtype=np.uint64)
        self.src_lo = np.zeros(n, dtype=np.uint64)
        self.dst_hi = np.zeros(n, dtype=np.uint64)
        self.dst_lo = np.zeros(n, dtype=np.uint64)
        self.ttl = np.zeros(n, dtype=np.uint8)
        self.ip_id = np.zeros(n, dtype=np.uint16)
        self.tcp_off = np.zeros(n, dtype=np.int64)
        """Offset of the transport header (TCP, or the tunnel header behind the IP header)."""
        self.ip_payload = np.zeros(n, dtype=np.int64)
        self.protocol = np.zeros(n, dtype=np.uint8)
        """IP protocol (IPv6: the last next-header value)."""
        self.more_fragments = np.zeros(n, dtype=bool)
        self.tunnel_id: np.ndarray | None = None
        """uint64 per row once a tunnel with an identifier was opened in the batch (see tunnels.py)."""


PLAIN_PASS = True
"""Decode plain frames in the compiled pass (``plain.c``) and only the others by columns.  Off, every
frame is decoded by columns: the tests compare the two."""

_PLAIN_LAYERS = {
    layer: code
    for code, layer in enumerate(
        (
            LinkLayer.ETHERNET,
            LinkLayer.LINUX_SLL,
            LinkLayer.LINUX_SLL2,
            LinkLayer.RAW,
            LinkLayer.IPV4,
            LinkLayer.IPV6,
            LinkLayer.NULL,
            LinkLayer.LOOP,
        )
    )
}
"""Link layer -> its number in plain.c."""


def _plain_layer(link_type: int) -> int:
    return _PLAIN_LAYERS.get(DECODED.get(link_type & LINKTYPE_CLASS_MASK), -1)


def _check_plain_layout() -> None:
    """plain.c writes PACKET_DTYPE's rows through a C struct: the two layouts must be one."""
    fields = len(PACKET_DTYPE.names)
    layout = np.zeros(fields + 1, dtype=np.int64)
    lib.plain_row_layout(ffi.from_buffer("int64_t[]", layout), fields + 1)
    expected = [PACKET_DTYPE.fields[name][1] for name in PACKET_DTYPE.names] + [PACKET_DTYPE.itemsize]
    if layout.tolist() != expected:
        raise ImportError(f"plain.c's packet row {layout.tolist()} is not PACKET_DTYPE's {expected}: rebuild")


_check_plain_layout()


def decode_batch(batch: RecordBatch, stats: ReadStats) -> PacketTable:
    """Decode every record of ``batch``; update ``stats``; return the TCP rows in record order.

    Plain frames (see ``plain.c``) are decoded in one compiled pass; the rest, if any, by columns.
    """
    n = len(batch.data_off)
    if n == 0 or not PLAIN_PASS:
        return _decode_columns(batch, stats)[0]
    table, slow, plain = _decode_plain(batch)
    stats.tcp_packets += plain
    stats.records += plain
    if np.ndim(batch.link_type) == 0:
        stats.link_types[int(batch.link_type)] += plain
    else:
        kinds, counts = np.unique(batch.link_type[~slow], return_counts=True)
        stats.link_types.update(dict(zip(kinds.tolist(), counts.tolist(), strict=True)))
    if plain == n:
        return table
    where = np.flatnonzero(slow)
    rest, rows = _decode_columns(_subset(batch, where), stats)
    keep = ~slow
    where = where[rows]
    keep[where] = True
    table[where] = rest
    return table[keep]


def _decode_plain(batch: RecordBatch) -> tuple[PacketTable, np.ndarray, int]:
    """The rows of the batch's plain frames at their records' places, which frames are not plain
    (their rows are garbage), and how many are."""
    n = len(batch.data_off)
    table = np.empty(n, dtype=PACKET_DTYPE)
    slow = np.empty(n, dtype=bool)
    columns = {}
    for name, dtype in (("data_off", np.int64), ("caplen", np.int64), ("wirelen", np.int64), ("ts_ns", np.int64)):
        columns[name] = np.ascontiguousarray(getattr(batch, name), dtype=dtype)
    frame = np.ascontiguousarray(batch.frame, dtype=np.uint64)
    iface, iface_all = ffi.NULL, 0
    if np.ndim(batch.iface) == 0:
        iface_all = int(batch.iface)
    else:
        iface = np.ascontiguousarray(batch.iface, dtype=np.uint16)
    layers, layer_all = ffi.NULL, -1
    if np.ndim(batch.link_type) == 0:
        layer_all = _plain_layer(int(batch.link_type))
    else:
        kinds, inverse = np.unique(batch.link_type, return_inverse=True)
        layers = np.array([_plain_layer(int(k)) for k in kinds], dtype=np.int8)[inverse]
    plain = lib.decode_plain(
        ffi.from_buffer("uint8_t[]", batch.data), n,
        ffi.from_buffer("int64_t[]", columns["data_off"]), ffi.from_buffer("int64_t[]", columns["caplen"]),
        ffi.from_buffer("int64_t[]", columns["wirelen"]), ffi.from_buffer("int64_t[]", columns["ts_ns"]),
        ffi.from_buffer("uint64_t[]", frame),
        iface if iface is ffi.NULL else ffi.from_buffer("uint16_t[]", iface), iface_all,
        layers if layers is ffi.NULL else ffi.from_buffer("int8_t[]", layers), layer_all,
        ffi.from_buffer("uint8_t[]", table), ffi.from_buffer("uint8_t[]", slow),
    )  # fmt: skip
    return table, slow, int(plain)


def _subset(batch: RecordBatch, where: np.ndarray) -> RecordBatch:
    """The records ``where`` of ``batch`` (the same buffer)."""

    def pick(value):
        return value if np.ndim(value) == 0 else value[where]

    return RecordBatch(
        data=batch.data,
        data_off=batch.data_off[where],
        caplen=batch.caplen[where],
        wirelen=batch.wirelen[where],
        ts_ns=batch.ts_ns[where],
        frame=batch.frame[where],
        iface=pick(batch.iface),
        link_type=pick(batch.link_type),
    )


def _decode_columns(batch: RecordBatch, stats: ReadStats) -> tuple[PacketTable, np.ndarray | slice]:
    """Decode every record of ``batch`` by columns; update ``stats``; return the TCP rows in record
    order and the records they came from (an index array, or ``slice(None)`` for all)."""
    n = len(batch.data_off)
    stats.records += n
    if n == 0:
        return np.zeros(0, dtype=PACKET_DTYPE), slice(None)
    buf = Bytes(batch.data)
    off = batch.data_off
    end = off + batch.caplen
    rows = _Rows(n)

    if np.ndim(batch.link_type) == 0:
        groups = [(int(batch.link_type), None, n)]
    else:
        kinds, counts = np.unique(batch.link_type, return_counts=True)
        groups = [(int(k), batch.link_type == k, int(c)) for k, c in zip(kinds, counts, strict=True)]
    l3 = np.zeros(n, dtype=np.int64)
    ethertype = np.zeros(n, dtype=np.int64)
    for link_type, where, count in groups:
        stats.link_types[link_type] += count
        layer = DECODED.get(link_type & LINKTYPE_CLASS_MASK)
        if layer is None:
            stats.unsupported_link[link_type] += count
            count_undecoded(stats.undecoded, f"unsupported link type {link_type}", count)
            rows.fate[slice(None) if where is None else where] = _UNSUPPORTED
        elif where is None:
            l3, ethertype = _LINK_DECODERS[layer](buf, off, end)
        else:
            l3[where], ethertype[where] = _LINK_DECODERS[layer](buf, off[where], end[where])

    wirelen = np.maximum(batch.wirelen, batch.caplen)  # some files have wire length < caplen
    layers = _Layers(buf, off, end, wirelen, rows, stats.undecoded)
    if (ethertype == ETHERTYPE_IPV4).all():  # the fast path: no shim layer, no IPv6
        _decode_ipv4(buf, slice(None), l3, off, end, wirelen, rows)
    else:
        layers.network(np.arange(n), l3, ethertype)
    scope = np.flatnonzero(rows.fate == _NON_TCP)  # outside tunnels, this is all it costs
    for depth in range(MAX_ENCAPSULATIONS + 1 if len(scope) else 0):
        scope = layers.tunnel_candidates(scope)
        if len(scope) == 0:
            break
        if depth == MAX_ENCAPSULATIONS:
            rows.fate[scope] = _UNDECODED
            count_undecoded(stats.undecoded, "encapsulation: too deep", len(scope))
            break
        scope = layers.open_tunnels(scope, l3, ethertype)
        layers.network(scope, l3, ethertype)
        scope = scope[rows.fate[scope] == _NON_TCP]

    fates = np.bincount(rows.fate, minlength=6)
    stats.non_ip += int(fates[_NON_IP])
    stats.non_tcp += int(fates[_NON_TCP])
    stats.ip_fragments += int(fates[_FRAGMENT])
    if fates[_FRAGMENT]:
        fragments = rows.protocol[rows.fate == _FRAGMENT]
        count_undecoded(stats.undecoded, "ip fragment", int(np.isin(fragments, FRAGMENT_HIDES).sum()))
    index = np.flatnonzero(rows.fate == _ROW)
    if len(index) == n:
        index = slice(None)  # every record is a row: views instead of gathers
    iface = batch.iface if np.ndim(batch.iface) == 0 else batch.iface[index]
    table = _decode_tcp(
        buf, index, end, rows, {"frame": batch.frame[index], "ts_ns": batch.ts_ns[index], "iface": iface}
    )
    stats.tcp_packets += len(table)
    if len(table):
        errors = np.bincount(table["decode_error"], minlength=len(DecodeError))
        for code in np.flatnonzero(errors[1:]).tolist():
            stats.decode_errors[DecodeError(code + 1).name] += int(errors[code + 1])
            stats.undecoded[DECODE_ERROR_CAUSES[DecodeError(code + 1)]] += int(errors[code + 1])
    return table, index


class _Layers:
    """The encapsulation layers of one batch: shims before an IP header, tunnels after one.

    Works on index arrays of the rows that need a layer, so a batch without tunnels pays only
    for finding that no row does.  Inner headers overwrite a row's IP columns: a tunnelled
    packet's row describes the innermost IP packet.
    """

    def __init__(self, buf: Bytes, off, end, wirelen, rows: _Rows, undecoded):
        self.buf, self.off, self.end, self.wirelen, self.rows, self.undecoded = buf, off, end, wirelen, rows, undecoded

    def network(self, idx: np.ndarray, l3, ethertype) -> None:
        """Unwrap shims (Ethernet, MPLS, PPPoE) at ``l3`` of rows ``idx``, then decode their IP header."""
        buf, end, rows = self.buf, self.end, self.rows
        for _ in range(MAX_SHIMS):
            shim = idx[np.isin(ethertype[idx], tunnels.SHIM_TYPES)]
            if len(shim) == 0:
                break
            kind = ethertype[shim]
            for layer, types in (
                (_link_ethernet, (tunnels.ETHERTYPE_TEB,)),
                (tunnels.mpls, (tunnels.ETHERTYPE_MPLS, tunnels.ETHERTYPE_MPLS_MULTICAST)),
                (tunnels.pppoe, (tunnels.ETHERTYPE_PPPOE_SESSION,)),
            ):
                these = shim[np.isin(kind, types)]
                if len(these) == 0:
                    continue
                if layer is _link_ethernet:
                    cut = these[l3[these] + 14 > end[these]]
                    count_undecoded(self.undecoded, "ethernet: header cut short", len(cut))
                    rows.fate[cut] = _UNDECODED
                    l3[these], ethertype[these] = layer(buf, l3[these], end[these])  # 0 where cut
                    continue
                pos, inner_type, ok = layer(buf, l3[these], end[these], self.undecoded)
                l3[these], ethertype[these] = pos, np.where(ok, inner_type, 0)
                rows.fate[these[~ok]] = _UNDECODED
        else:
            deep = idx[np.isin(ethertype[idx], tunnels.SHIM_TYPES)]
            count_undecoded(self.undecoded, "encapsulation: too deep", len(deep))
            rows.fate[deep] = _UNDECODED
            ethertype[deep] = 0
        kind = ethertype[idx]
        _decode_ipv4(buf, idx[kind == ETHERTYPE_IPV4], l3, self.off, end, self.wirelen, rows)
        _decode_ipv6(buf, idx[kind == ETHERTYPE_IPV6], l3, self.off, end, self.wirelen, rows)

    def tunnel_candidates(self, scope: np.ndarray) -> np.ndarray:
        """The rows of ``scope`` (non-TCP IP packets) whose payload is a tunnel we follow."""
        rows = self.rows
        scope = scope[(rows.err[scope] == 0) & np.isin(rows.protocol[scope], tunnels.TUNNEL_PROTOCOLS)]
        udp = rows.protocol[scope] == tunnels.IPPROTO_UDP
        if udp.any():
            pos = rows.tcp_off[scope]
            seen = udp & (pos + 4 <= self.end[scope])
            port = np.where(seen, self.buf.be(_safe(seen, pos + 2), 2), 0)
            scope = scope[~udp | (port == tunnels.UDP_VXLAN) | (port == tunnels.UDP_GENEVE)]
        split = rows.more_fragments[scope]  # a first fragment: the inner packet is not all there
        if split.any():
            rows.fate[scope[split]] = _FRAGMENT
            udp_split = rows.protocol[scope[split]] == tunnels.IPPROTO_UDP  # not in FRAGMENT_HIDES
            count_undecoded(self.undecoded, "ip fragment", int(udp_split.sum()))
            scope = scope[~split]
        return scope

    def open_tunnels(self, scope: np.ndarray, l3, ethertype) -> np.ndarray:
        """Decode the tunnel header of rows ``scope``; return the rows whose inner header is next."""
        buf, rows = self.buf, self.rows
        protocol = rows.protocol[scope]
        pos = rows.tcp_off[scope]
        inner = pos.copy()
        inner_type = np.select(
            [protocol == tunnels.IPPROTO_IPIP, protocol == tunnels.IPPROTO_IPV6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0
        )
        ok = np.ones(len(scope), dtype=bool)
        ident = np.zeros(len(scope), dtype=np.uint64)
        for number, layer in ((tunnels.IPPROTO_GRE, tunnels.gre), (tunnels.IPPROTO_UDP, tunnels.udp_tunnel)):
            sel = protocol == number
            if not sel.any():
                continue
            args = (buf, pos[sel], self.end[scope[sel]])
            if number == tunnels.IPPROTO_UDP:
                args += (buf.be(pos[sel] + 2, 2),)
            inner[sel], inner_type[sel], ok[sel], ident[sel] = layer(*args, self.undecoded)
        rows.fate[scope[~ok]] = _UNDECODED
        opened = scope[ok]
        if ident.any():
            if rows.tunnel_id is None:
                rows.tunnel_id = np.zeros(len(rows.fate), dtype=np.uint64)
            rows.tunnel_id[opened] = tunnels.combine_tunnel_id(ident[ok], rows.tunnel_id[opened])
        l3[opened], ethertype[opened] = inner[ok], inner_type[ok]
        rows.fate[opened] = _NON_IP  # until the inner IP header says otherwise
        rows.err[opened] = 0
        rows.src_hi[opened] = rows.dst_hi[opened] = rows.ip_id[opened] = 0  # not every IP decoder sets them
        return opened


def _decode_ipv4(buf: Bytes, idx, l3, off, end, wirelen, rows: _Rows) -> None:
    """IPv4 header of the records ``idx`` (an index array, or ``slice(None)`` for all)."""
    start = l3[idx]
    if len(start) == 0:
        return
    have = end[idx] - start
    hdr = buf.rows(_safe(have >= 1, start), 20)  # bytes past ``have`` are garbage, masked below
    words = hdr.view(_BE[2])  # 16-bit fields: the gather is contiguous, so these are views
    quads = hdr.view(_BE[4])
    visible = have >= 10  # version .. protocol
    full = have >= 20
    version = np.where(have >= 1, hdr[:, 0] >> 4, 4)
    ihl = (hdr[:, 0] & 0x0F).astype(np.int64) * 4
    protocol = hdr[:, 9]
    frag_word = words[:, 3]
    frag_offset = frag_word & 0x1FFF
    more_fragments = (frag_word & 0x2000) != 0
    total_len = words[:, 1].astype(np.int64)
    # The frame's wire length bounds the IP length (as in Wireshark); and with TSO/BIG TCP on
    # the capturing host the total length is 0 and the wire length is the only truth.
    on_wire = wirelen[idx] - (start - off[idx])
    total_len = np.where((total_len == 0) | (total_len > on_wire), on_wire, total_len)

    rows.err[idx] = np.select(
        [~full, ihl < 20, have < ihl, total_len < ihl],
        [
            DecodeError.IP_HEADER_TRUNCATED,
            DecodeError.IP_BAD_HEADER,
            DecodeError.IP_HEADER_TRUNCATED,
            DecodeError.IP_BAD_HEADER,
        ],
        0,
    )
    rows.fate[idx] = np.select(
        [version != 4, ~visible, frag_offset != 0, protocol != IPPROTO_TCP, more_fragments],
        [_NON_IP, _ROW, _FRAGMENT, _NON_TCP, _FRAGMENT],
        _ROW,
    )
    rows.ip_version[idx] = 4
    rows.protocol[idx] = protocol
    rows.more_fragments[idx] = more_fragments
    rows.src_lo[idx] = np.where(full, IPV4_MAPPED_LO | quads[:, 3], 0)
    rows.dst_lo[idx] = np.where(full, IPV4_MAPPED_LO | quads[:, 4], 0)
    rows.ttl[idx] = np.where(full, hdr[:, 8], 0)
    rows.ip_id[idx] = np.where(full, words[:, 2], 0)
    rows.tcp_off[idx] = start + ihl
    rows.ip_payload[idx] = total_len - ihl


def _decode_ipv6(buf: Bytes, idx, l3, off, end, wirelen, rows: _Rows) -> None:
    """IPv6 header and extension-header chain of the records ``idx``."""
    if len(idx) == 0:
        return
    start = l3[idx]
    stop = end[idx]
    have = stop - start
    full = have >= 40
    hdr = buf.rows(_safe(have >= 1, start), 40)
    version = np.where(have >= 1, hdr[:, 0] >> 4, 6)
    payload_len = _u16(hdr, 4)
    next_header = hdr[:, 6].astype(np.int64)
    err = np.where(full, 0, int(DecodeError.IP_HEADER_TRUNCATED)).astype(np.uint8)

    # Walk the extension-header chain, one header per pass, over the rows still inside it.
    pos = start + 40
    frag_offset = np.zeros(len(idx), dtype=np.int64)
    more_fragments = np.zeros(len(idx), dtype=bool)
    jumbo_hbh = []  # (row in idx, position of the hop-by-hop header) for payload length 0
    active = full & np.isin(next_header, IPV6_EXTENSIONS)
    for depth in range(MAX_IPV6_EXTENSIONS):
        a = np.flatnonzero(active)
        if len(a) == 0:
            break
        p = pos[a]
        cut = p + 8 > stop[a]  # every extension header is at least 8 bytes
        err[a[cut]] = DecodeError.IP_HEADER_TRUNCATED
        active[a[cut]] = False
        a, p = a[~cut], p[~cut]
        kind = next_header[a]
        head = buf.rows(p, 4)
        length = np.select(
            [kind == IPV6_FRAGMENT, kind == IPV6_AH],
            [8, (head[:, 1].astype(np.int64) + 2) * 4],
            (head[:, 1].astype(np.int64) + 1) * 8,
        )
        is_frag = kind == IPV6_FRAGMENT
        word = _u16(head, 2)
        frag_offset[a[is_frag]] = word[is_frag] >> 3
        more_fragments[a[is_frag]] = (word[is_frag] & 1) != 0
        if depth == 0:
            hbh = (kind == IPV6_HOP_BY_HOP) & (payload_len[a] == 0)
            jumbo_hbh.extend(zip(a[hbh].tolist(), p[hbh].tolist(), strict=True))
        next_header[a] = head[:, 0]
        pos[a] = p + length
        # Past a non-first fragment header come fragment bytes, not headers.
        active[a] = np.isin(head[:, 0], IPV6_EXTENSIONS) & ~(is_frag & (frag_offset[a] != 0))
    chain_too_long = active
    err[chain_too_long] = DecodeError.IP_BAD_HEADER  # longer chain than we follow
    # The last extension header itself may be cut short.
    err[(err == 0) & (pos > stop)] = DecodeError.IP_HEADER_TRUNCATED

    for row, hbh_pos in jumbo_hbh:
        jumbo = _jumbo_length(buf.data, hbh_pos, int(stop[row]))
        if jumbo is not None:
            payload_len[row] = jumbo
    # The frame's wire length bounds the IP length (as in Wireshark); and with BIG TCP on the
    # capturing host the payload length is 0 with no jumbo option: the wire length is the truth.
    on_wire = wirelen[idx] - (start - off[idx]) - 40
    payload_len = np.where((full & (payload_len == 0)) | (payload_len > on_wire), on_wire, payload_len)
    ip_payload = payload_len - (pos - (start + 40))
    is_tcp = next_header == IPPROTO_TCP
    err[(err == 0) & is_tcp & (ip_payload < 0)] = DecodeError.IP_BAD_HEADER
    rows.fate[idx] = np.select(
        [
            version != 6,
            err == DecodeError.IP_HEADER_TRUNCATED,
            chain_too_long,
            frag_offset != 0,
            ~is_tcp,
            more_fragments,
        ],
        [_NON_IP, _ROW, _ROW, _FRAGMENT, _NON_TCP, _FRAGMENT],
        _ROW,
    )
    rows.err[idx] = err
    rows.ip_version[idx] = 6
    rows.protocol[idx] = next_header
    rows.more_fragments[idx] = more_fragments
    addr = hdr.view(_BE[8])  # 8-byte words 1..4 are the addresses
    rows.src_hi[idx] = addr[:, 1]
    rows.src_lo[idx] = addr[:, 2]
    rows.dst_hi[idx] = addr[:, 3]
    rows.dst_lo[idx] = addr[:, 4]
    rows.ttl[idx] = hdr[:, 7]
    rows.tcp_off[idx] = pos
    rows.ip_payload[idx] = ip_payload


def _jumbo_length(data: np.ndarray, hbh_pos: int, stop: int) -> int | None:
    """Jumbo Payload option value (RFC 2675) in the hop-by-hop header at ``hbh_pos``, if any.

    Only frames with IPv6 payload length 0 come here, so a Python loop is fine.
    """
    hbh_end = min(hbh_pos + (int(data[hbh_pos + 1]) + 1) * 8, stop)
    pos = hbh_pos + 2
    while pos < hbh_end:
        kind = int(data[pos])
        if kind == 0:  # Pad1
            pos += 1
            continue
        if pos + 2 > hbh_end:
            return None
        length = int(data[pos + 1])
        if kind == IPV6_JUMBO_OPTION and length == 4 and pos + 6 <= hbh_end:
            return int.from_bytes(bytes(data[pos + 2 : pos + 6]), "big")
        pos += 2 + length
    return None


def _decode_tcp(buf: Bytes, index, end, rows: _Rows, record: dict) -> PacketTable:
    """TCP header and options of the records ``index`` (an index array, or ``slice(None)`` for all);
    ``record``: more columns of the rows (frame, time, interface)."""
    m = len(rows.fate) if isinstance(index, slice) else len(index)
    if m == 0:
        return np.zeros(0, dtype=PACKET_DTYPE)
    cols = dict(record, wscale=-1)
    for name in ("ip_version", "src_hi", "src_lo", "dst_hi", "dst_lo", "ttl", "ip_id"):
        cols[name] = getattr(rows, name)[index]
    if rows.tunnel_id is not None:
        cols["tunnel_id"] = rows.tunnel_id[index]
    err = rows.err[index]
    start = rows.tcp_off[index]
    ip_payload = rows.ip_payload[index]
    have = end[index] - start
    ip_ok = err == 0
    ports_ok = ip_ok & (have >= 4)
    full = ip_ok & (have >= 20)
    # 32 bytes: the fixed header plus Linux's 12-byte NOP,NOP,TS block (the fast path).
    hdr = buf.rows(_safe(ports_ok, start), 32)
    words = hdr.view(_BE[2])  # aligned views of the contiguous gather
    quads = hdr.view(_BE[4])
    cols["src_port"] = np.where(ports_ok, words[:, 0], 0)
    cols["dst_port"] = np.where(ports_ok, words[:, 1], 0)
    cols["seq"] = np.where(full, quads[:, 1], 0)
    cols["ack"] = np.where(full, quads[:, 2], 0)
    header_len = (hdr[:, 12] >> 4).astype(np.int64) * 4
    cols["flags"] = np.where(full, words[:, 6] & 0x1FF, 0)
    cols["window"] = np.where(full, words[:, 7], 0)
    cols["tcp_header_len"] = np.where(full, header_len, 0)

    bad_offset = full & ((header_len < 20) | (header_len > ip_payload))
    options_cut = full & ~bad_offset & (have < header_len)
    err = np.select(
        [~ip_ok, ~full, bad_offset, options_cut],
        [err, DecodeError.TCP_HEADER_TRUNCATED, DecodeError.TCP_BAD_OFFSET, DecodeError.TCP_OPTIONS_TRUNCATED],
        0,
    )
    cols["decode_error"] = err
    header_ok = full & ~bad_offset
    cols["payload_len"] = np.where(header_ok, ip_payload - header_len, 0)
    cols["payload_truncated"] = header_ok & (have < ip_payload)

    options = header_ok & ~options_cut & (header_len > 20)
    # Fast path: exactly NOP, NOP, TS (every non-SYN segment from Linux).
    linux = options & (header_len == 32) & (quads[:, 5] == LINUX_TS_LAYOUT)
    if linux.any():
        cols["has_ts"] = linux
        cols["tsval"] = np.where(linux, quads[:, 6], 0)
        cols["tsecr"] = np.where(linux, quads[:, 7], 0)
    table = _records(m, cols)
    other = np.flatnonzero(options & ~linux)
    if len(other):
        _decode_options(buf, start[other], header_len[other], table, other)
    return table


def _records(m: int, columns: dict) -> PacketTable:
    """A packet table of ``m`` rows from columns (arrays or scalars, by field name; other fields 0),
    written row by row in one compiled pass (``records.c``) rather than one pass per field."""
    table = np.zeros(m, dtype=PACKET_DTYPE)
    arrays = [np.ascontiguousarray(np.broadcast_to(v, m), dtype=PACKET_DTYPE[name]) for name, v in columns.items()]
    offsets = np.array([PACKET_DTYPE.fields[name][1] for name in columns], dtype=np.int64)
    widths = np.array([a.itemsize for a in arrays], dtype=np.int64)
    buffers = [ffi.from_buffer(a) for a in arrays]  # kept alive for the call
    lib.fill_records(ffi.from_buffer(table), PACKET_DTYPE.itemsize, m, len(arrays),
                     ffi.from_buffer("int64_t[]", offsets), ffi.from_buffer("int64_t[]", widths),
                     ffi.new("uint8_t *[]", buffers))  # fmt: skip
    return table


assert sys.byteorder == "little" and all(PACKET_DTYPE[name].byteorder in "<|=" for name in PACKET_DTYPE.names)


def _decode_options(buf: Bytes, tcp_start, header_len, table, where) -> None:
    """Fill the option columns for rows ``where`` of ``table`` (options fully captured).

    One option per pass over the rows whose option list is not finished: at most
    40 passes, usually 3 to 6 (a SYN's MSS, SACK-permitted, TS, NOP, WS).
    """
    n = len(where)
    mss = np.zeros(n, dtype=np.uint16)
    wscale = np.full(n, -1, dtype=np.int8)
    sack_permitted = np.zeros(n, dtype=bool)
    sack_blocks = np.zeros(n, dtype=np.uint8)
    has_ts = np.zeros(n, dtype=bool)
    tsval = np.zeros(n, dtype=np.uint32)
    tsecr = np.zeros(n, dtype=np.uint32)
    auth = np.zeros(n, dtype=np.uint8)

    pos = tcp_start + 20
    stop = tcp_start + header_len
    active = np.arange(n)
    for _ in range(40):
        if len(active) == 0:
            break
        p = pos[active]
        head = buf.rows(p, 10)  # kind, length, up to 8 value bytes (masked by ``length``)
        kind = head[:, 0]
        has_len = p + 2 <= stop[active]
        length = np.where(has_len, head[:, 1], 0).astype(np.int64)
        single = kind == TCPOPT_NOP
        take = ~single & (kind != TCPOPT_EOL) & has_len & (length >= 2) & (p + length <= stop[active])

        sel = take & (kind == TCPOPT_MSS) & (length == 4)
        mss[active[sel]] = _u16(head[sel], 2)
        sel = take & (kind == TCPOPT_WSCALE) & (length == 3)
        wscale[active[sel]] = np.minimum(head[sel, 2], 127).astype(np.int8)
        sel = take & (kind == TCPOPT_SACK_PERMITTED)
        sack_permitted[active[sel]] = True
        sel = take & (kind == TCPOPT_SACK)
        sack_blocks[active[sel]] = (length[sel] - 2) // 8
        sel = take & (kind == TCPOPT_TIMESTAMP) & (length == 10)
        has_ts[active[sel]] = True
        tsval[active[sel]] = _u32(head[sel], 2)
        tsecr[active[sel]] = _u32(head[sel], 6)
        sel = take & ((kind == TCPOPT_MD5) | (kind == TCPOPT_AO))
        auth[active[sel]] = kind[sel]

        step = np.where(single, 1, length)
        pos[active] = p + step
        keep = (single | take) & (p + step < stop[active])
        active = active[keep]

    table["mss"][where] = mss
    table["wscale"][where] = wscale
    table["sack_permitted"][where] = sack_permitted
    table["sack_blocks"][where] = sack_blocks
    table["has_ts"][where] = has_ts
    table["tsval"][where] = tsval
    table["tsecr"][where] = tsecr
    table["tcp_auth"][where] = auth
