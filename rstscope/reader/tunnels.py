"""Encapsulation layers for the batch decoder: tunnels (GRE, ERSPAN, VXLAN, Geneve) and shims (MPLS, PPPoE).

Each function here decodes one layer for a subset of a batch's rows at once (numpy gathers, no
per-packet Python) and answers, per row, where the next header starts and what it is, as an
EtherType-like number: ``0x0800`` IPv4, ``0x86DD`` IPv6, :data:`ETHERTYPE_TEB` an Ethernet frame,
:data:`ETHERTYPE_MPLS` an MPLS label stack, or 0 for something that is not IP and not a failure
(a PPP control packet).  Rows that cannot be decoded are counted by cause in ``undecoded`` (a
``Counter``; the cause strings are :data:`UNDECODED_CAUSES`) and flagged ``ok = False``.
:mod:`.decode` chains the layers (at most ``MAX_ENCAPSULATIONS`` tunnels deep) and keeps the
tenant identifier of each packet in the ``tunnel_id`` column (see :func:`combine_tunnel_id`).

Formats: GRE RFC 2784/2890 (version 0; checksum, key, sequence number); ERSPAN types I, II, III
(draft-foschiano-erspan: type I is GRE 0x88BE without a sequence number and has no ERSPAN header);
Cisco WCCP redirection in GRE (0x883E);
VXLAN RFC 7348 (UDP 4789); Geneve RFC 8926 (UDP 6081; options skipped by their length); MPLS
RFC 3032 (label stacks; after the bottom of the stack the version nibble picks IPv4/IPv6, and a
nibble of 0 is an RFC 4385 pseudowire control word followed by Ethernet; an Ethernet pseudowire
without a control word is not recognised); PPPoE session RFC 2516 (PPP IPv4 0x0021, IPv6 0x0057).

Limits: the identifier is taken as the tenant's, the same in both directions.  A GRE tunnel
configured with a different key per direction (Linux ``ikey``/``okey``) therefore splits each
connection into two one-sided ones.  MPLS labels and PPPoE session ids are not used as
identifiers (labels change hop by hop and differ per direction).  Fragmented tunnel packets are
not reassembled ("ip fragment").
"""

from __future__ import annotations

from collections import Counter

import numpy as np

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows (RFC 1701 protocol type)
ETHERTYPE_MPLS = 0x8847  # MPLS unicast (RFC 3032)
ETHERTYPE_MPLS_MULTICAST = 0x8848
ETHERTYPE_PPPOE_SESSION = 0x8864  # RFC 2516
ETHERTYPE_ERSPAN_2 = 0x88BE  # ERSPAN type II, or type I without a GRE sequence number
ETHERTYPE_ERSPAN_3 = 0x22EB
ETHERTYPE_WCCP = 0x883E  # Cisco WCCP redirection: a 4-byte redirect header (WCCPv2; none in v1), then IPv4
SHIM_TYPES = (ETHERTYPE_TEB, ETHERTYPE_MPLS, ETHERTYPE_MPLS_MULTICAST, ETHERTYPE_PPPOE_SESSION)
"""EtherTypes :mod:`.decode` unwraps before the IP layer (a frame, a label stack, a PPPoE session)."""

IPPROTO_IPIP = 4  # IPv4 in IP (RFC 2003)
IPPROTO_IPV6 = 41  # IPv6 in IP (RFC 4213, RFC 2473)
IPPROTO_GRE = 47
IPPROTO_UDP = 17
UDP_VXLAN = 4789  # RFC 7348
UDP_GENEVE = 6081  # RFC 8926
TUNNEL_PROTOCOLS = (IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE, IPPROTO_UDP)
"""IP protocols that may carry a tunnel (UDP only to the ports above)."""

GRE_CHECKSUM, GRE_ROUTING, GRE_KEY, GRE_SEQUENCE = 0x8000, 0x4000, 0x2000, 0x1000  # RFC 2784, RFC 2890
GRE_VERSION = 0x0007
GRE_CONTROL = (0x2000, 0x2001)  # Cisco CDP, NHRP (RFC 2332): control traffic, not data (counted as non-IP)
MPLS_MAX_LABELS = 8
PPP_IPV4, PPP_IPV6 = 0x0021, 0x0057  # RFC 1332, RFC 5072
PPP_CONTROL = 0x8000  # RFC 1661: 0x8000 and up are control protocols (LCP, IPCP, ...), not data
ERSPAN_3_FRAME_ETHERNET, ERSPAN_3_FRAME_IP = 0, 2

# Tunnel identifiers: kind in the top byte, so that a VNI and a GRE key of equal value differ.
TUNNEL_VXLAN, TUNNEL_GENEVE, TUNNEL_GRE_KEY, TUNNEL_ERSPAN = 1, 2, 3, 4
TUNNEL_KIND_SHIFT = 56
TUNNEL_KIND_NAMES = {TUNNEL_VXLAN: "vxlan vni", TUNNEL_GENEVE: "geneve vni", TUNNEL_GRE_KEY: "gre key",
                     TUNNEL_ERSPAN: "erspan session"}  # fmt: skip

# The causes of ``ReadStats.undecoded``: a small, stable set; ``{}`` takes a number from the packet.
UNDECODED_CAUSES = (
    "unsupported link type {}",  # link type number (pcap-linktype(7)); such records were never read
    "ip fragment",  # a fragment of TCP or of a tunnel: not reassembled
    "ip: header cut short",  # DecodeError.IP_HEADER_TRUNCATED rows
    "ip: bad header",  # DecodeError.IP_BAD_HEADER rows
    "tcp: header cut short",  # DecodeError.TCP_HEADER_TRUNCATED rows
    "tcp: bad data offset",  # DecodeError.TCP_BAD_OFFSET rows
    "tcp: options cut short",  # DecodeError.TCP_OPTIONS_TRUNCATED rows
    "gre: header cut short",
    "gre: unsupported protocol 0x{:04x}",  # e.g. 0x880b: PPTP's enhanced GRE (version 1)
    "gre: unsupported version {}",
    "gre: source routing",  # RFC 1701 routing present bit
    "erspan: header cut short",
    "erspan: unsupported version {}",
    "erspan: unsupported frame type {}",  # type III frame types other than Ethernet and IP
    "vxlan: header cut short",
    "vxlan: no vni flag",  # the I flag is clear: not VXLAN as RFC 7348 has it
    "geneve: header cut short",
    "geneve: unsupported version {}",
    "geneve: unsupported protocol 0x{:04x}",
    "ethernet: header cut short",  # an Ethernet frame inside a tunnel or pseudowire, cut by the snaplen
    "mpls: header cut short",
    "mpls: label stack too deep",  # more than MPLS_MAX_LABELS labels
    "mpls: no ip after bottom of stack",  # neither IPv4, IPv6 nor a pseudowire control word
    "pppoe: header cut short",
    "pppoe: unsupported ppp protocol 0x{:04x}",
    "encapsulation: too deep",  # more tunnels (or shims) than the decoder follows
)
"""Every cause string ``ReadStats.undecoded`` may hold (the stated format, one number filled in)."""


def count_undecoded(undecoded: Counter, cause: str, values: np.ndarray | int) -> None:
    """Add rows to ``undecoded[cause]``: ``values`` is a count, or per-row numbers for the ``{}`` in ``cause``."""
    if isinstance(values, (int, np.integer)):
        if values:
            undecoded[cause] += int(values)
        return
    if len(values) == 0:
        return
    kinds, counts = np.unique(values, return_counts=True)
    for value, k in zip(kinds.tolist(), counts.tolist(), strict=True):
        undecoded[cause.format(value)] += k


def combine_tunnel_id(ident: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """The ``tunnel_id`` after a layer whose identifiers are ``ident`` (0: the layer has none).

    ``ident`` is ``kind << 56 | value`` (value at most 32 bits).  A layer without an identifier
    keeps the outer one; a nested identifier keeps a 24-bit fold of the outer one in bits 32-55,
    so that the same VNI under two GRE keys stays two tenants.
    """
    fold = ((outer * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)) << np.uint64(32)
    fold = np.where(outer != 0, fold, np.uint64(0))
    return np.where(ident != 0, ident | fold, outer)


def _ident(kind: int, value: np.ndarray) -> np.ndarray:
    return (np.uint64(kind) << np.uint64(TUNNEL_KIND_SHIFT)) | value.astype(np.uint64)


def _by_version_nibble(buf, pos, stop) -> np.ndarray:
    """IPv4/IPv6 EtherType from the first nibble at ``pos`` (0 when neither, or nothing captured)."""
    seen = pos < stop
    nibble = np.where(seen, buf.data[np.where(seen, pos, 0)] >> 4, 0)
    return np.select([nibble == 4, nibble == 6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)


# ---------------------------------------------------------------- tunnels (after an IP header)


def gre(buf, pos, stop, undecoded: Counter):
    """GRE (and ERSPAN inside it) at ``pos``: (inner position, inner EtherType, ok, identifier)."""
    n = len(pos)
    head = buf.rows(np.where(pos + 4 <= stop, pos, 0), 4)
    flags = (head[:, 0].astype(np.int64) << 8) | head[:, 1]
    protocol = (head[:, 2].astype(np.int64) << 8) | head[:, 3]
    has_key = (flags & GRE_KEY) != 0
    has_seq = (flags & GRE_SEQUENCE) != 0
    key_at = pos + 4 + np.where((flags & (GRE_CHECKSUM | GRE_ROUTING)) != 0, 4, 0)
    inner = key_at + 4 * has_key + 4 * has_seq
    ok = np.ones(n, dtype=bool)
    ident = np.zeros(n, dtype=np.uint64)
    inner_type = protocol.copy()

    cut = (pos + 4 > stop) | (inner > stop)
    count_undecoded(undecoded, "gre: header cut short", int(cut.sum()))
    ok &= ~cut
    known = np.isin(protocol, (ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_TEB, ETHERTYPE_MPLS, ETHERTYPE_MPLS_MULTICAST,
                               ETHERTYPE_ERSPAN_2, ETHERTYPE_ERSPAN_3, ETHERTYPE_WCCP))  # fmt: skip
    control = np.isin(protocol, GRE_CONTROL)
    inner_type[control] = 0  # not IP: the row ends as non-IP, like ARP
    bad = ok & ~known & ~control
    count_undecoded(undecoded, "gre: unsupported protocol 0x{:04x}", protocol[bad])
    ok &= ~bad
    bad = ok & ((flags & GRE_VERSION) != 0)
    count_undecoded(undecoded, "gre: unsupported version {}", (flags & GRE_VERSION)[bad])
    ok &= ~bad
    bad = ok & ((flags & GRE_ROUTING) != 0)
    count_undecoded(undecoded, "gre: source routing", int(bad.sum()))
    ok &= ~bad
    keyed = ok & has_key
    if keyed.any():
        ident[keyed] = _ident(TUNNEL_GRE_KEY, buf.be(key_at[keyed], 4))

    # WCCP: as Wireshark, an IPv4 version nibble means no redirect header (WCCPv1).
    wccp = ok & (protocol == ETHERTYPE_WCCP)
    if wccp.any():
        v1 = _by_version_nibble(buf, inner[wccp], stop[wccp]) == ETHERTYPE_IPV4
        inner[wccp] += np.where(v1, 0, 4)
        inner_type[wccp] = ETHERTYPE_IPV4
    # ERSPAN type I: 0x88BE without a sequence number, the mirrored frame follows at once.
    type_1 = ok & (protocol == ETHERTYPE_ERSPAN_2) & ~has_seq
    inner_type[type_1] = ETHERTYPE_TEB
    erspan = np.flatnonzero(ok & ~type_1 & ((protocol == ETHERTYPE_ERSPAN_2) | (protocol == ETHERTYPE_ERSPAN_3)))
    if len(erspan):
        e_pos, e_type, e_ok, e_ident = _erspan(buf, inner[erspan], stop[erspan], protocol[erspan], undecoded)
        inner[erspan], inner_type[erspan] = e_pos, e_type
        ok[erspan] = e_ok
        ident[erspan] = combine_tunnel_id(e_ident, ident[erspan])
    return inner, inner_type, ok, ident


def _erspan(buf, pos, stop, protocol, undecoded: Counter):
    """ERSPAN type II (8-byte header) or III (12 bytes, plus an 8-byte platform subheader when O is set)."""
    type_3 = protocol == ETHERTYPE_ERSPAN_3
    base = np.where(type_3, 12, 8)
    cut = pos + base > stop
    head = buf.rows(np.where(cut, 0, pos), 12)
    version = head[:, 0] >> 4
    session = ((head[:, 2].astype(np.int64) & 0x03) << 8) | head[:, 3]
    low = (head[:, 10].astype(np.int64) << 8) | head[:, 11]
    frame_type = (low >> 10) & 0x1F
    subheader = type_3 & ((low & 1) != 0)
    inner = pos + base + 8 * subheader
    cut |= inner > stop
    count_undecoded(undecoded, "erspan: header cut short", int(cut.sum()))
    ok = ~cut
    bad = ok & (version != np.where(type_3, 2, 1))
    count_undecoded(undecoded, "erspan: unsupported version {}", version[bad])
    ok &= ~bad
    as_ip = type_3 & (frame_type == ERSPAN_3_FRAME_IP)
    bad = ok & type_3 & (frame_type != ERSPAN_3_FRAME_ETHERNET) & ~as_ip
    count_undecoded(undecoded, "erspan: unsupported frame type {}", frame_type[bad])
    ok &= ~bad
    inner_type = np.where(as_ip, _by_version_nibble(buf, inner, stop), ETHERTYPE_TEB)
    return inner, inner_type, ok, np.where(ok, _ident(TUNNEL_ERSPAN, session), np.uint64(0))


def udp_tunnel(buf, pos, stop, dst_port, undecoded: Counter):
    """VXLAN or Geneve behind the UDP header at ``pos``: (inner position, EtherType, ok, identifier)."""
    at = pos + 8
    vxlan = dst_port == UDP_VXLAN
    cut = at + 8 > stop
    head = buf.rows(np.where(cut, 0, at), 8)
    vni = (head[:, 4].astype(np.int64) << 16) | (head[:, 5].astype(np.int64) << 8) | head[:, 6]
    # VXLAN: flags, 3 reserved bytes, VNI, 1 reserved byte.
    no_vni = ~cut & vxlan & ((head[:, 0] & 0x08) == 0)
    # Geneve: version(2) option length(6, 4-byte words), flags, protocol type, VNI, reserved.
    version = head[:, 0] >> 6
    options = (head[:, 0].astype(np.int64) & 0x3F) * 4
    protocol = (head[:, 2].astype(np.int64) << 8) | head[:, 3]
    inner = np.where(vxlan, at + 8, at + 8 + options)
    geneve_cut = ~vxlan & ~cut & (inner > stop)
    count_undecoded(undecoded, "vxlan: header cut short", int((cut & vxlan).sum()))
    count_undecoded(undecoded, "geneve: header cut short", int((cut & ~vxlan).sum() + geneve_cut.sum()))
    count_undecoded(undecoded, "vxlan: no vni flag", int(no_vni.sum()))
    ok = ~cut & ~geneve_cut & ~no_vni
    bad = ok & ~vxlan & (version != 0)
    count_undecoded(undecoded, "geneve: unsupported version {}", version[bad])
    ok &= ~bad
    bad = ok & ~vxlan & ~np.isin(protocol, (ETHERTYPE_TEB, ETHERTYPE_IPV4, ETHERTYPE_IPV6))
    count_undecoded(undecoded, "geneve: unsupported protocol 0x{:04x}", protocol[bad])
    ok &= ~bad
    inner_type = np.where(vxlan, ETHERTYPE_TEB, protocol)
    ident = np.where(vxlan, _ident(TUNNEL_VXLAN, vni), _ident(TUNNEL_GENEVE, vni))
    return inner, inner_type, ok, np.where(ok, ident, np.uint64(0))


# ---------------------------------------------------------------- shims (between link and IP)


def mpls(buf, pos, stop, undecoded: Counter):
    """An MPLS label stack at ``pos``: (position after it, EtherType of what follows, ok)."""
    n = len(pos)
    pos = pos.copy()
    ok = np.ones(n, dtype=bool)
    active = np.arange(n)
    for _ in range(MPLS_MAX_LABELS):
        cut = pos[active] + 4 > stop[active]
        count_undecoded(undecoded, "mpls: header cut short", int(cut.sum()))
        ok[active[cut]] = False
        active = active[~cut]
        if len(active) == 0:
            break
        bottom = (buf.data[pos[active] + 2] & 0x01) != 0
        pos[active] += 4
        active = active[~bottom]
        if len(active) == 0:
            break
    count_undecoded(undecoded, "mpls: label stack too deep", len(active))
    ok[active] = False
    inner_type = _by_version_nibble(buf, pos, stop)
    seen = pos < stop
    control_word = ok & seen & (inner_type == 0) & ((buf.data[np.where(seen, pos, 0)] >> 4) == 0)
    inner_type[control_word] = ETHERTYPE_TEB
    pos[control_word] += 4  # RFC 4385 control word, then the Ethernet pseudowire's frame
    bad = ok & (inner_type == 0)
    count_undecoded(undecoded, "mpls: no ip after bottom of stack", int(bad.sum()))
    return pos, inner_type, ok & ~bad


def pppoe(buf, pos, stop, undecoded: Counter):
    """A PPPoE session header and the PPP protocol field: (IP header position, EtherType, ok)."""
    cut = pos + 7 > stop
    head = buf.rows(np.where(cut, 0, pos), 8)
    compressed = (head[:, 6] & 0x01) != 0  # protocol-field compression (RFC 1661): one odd byte
    protocol = np.where(compressed, head[:, 6], (head[:, 6].astype(np.int64) << 8) | head[:, 7])
    inner = pos + 6 + np.where(compressed, 1, 2)
    cut |= inner > stop
    count_undecoded(undecoded, "pppoe: header cut short", int(cut.sum()))
    ok = ~cut
    inner_type = np.select([protocol == PPP_IPV4, protocol == PPP_IPV6], [ETHERTYPE_IPV4, ETHERTYPE_IPV6], 0)
    bad = ok & (inner_type == 0) & (protocol < PPP_CONTROL)
    count_undecoded(undecoded, "pppoe: unsupported ppp protocol 0x{:04x}", protocol[bad])
    return inner, inner_type, ok & ~bad
