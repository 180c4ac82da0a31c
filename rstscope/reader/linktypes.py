"""Link-layer types: which ones the reader decodes, and the names of the others.

Numbers are LINKTYPE_* values from https://www.tcpdump.org/linktypes.html (the
numbers written in pcap file headers and pcapng IDBs).  A few DLT_* values that
some operating systems write instead of the LINKTYPE value are listed too, as
libpcap's ``dlt_to_linktype`` maps them (12 and 14 mean raw IP on OpenBSD/BSD/OS).

Scope: the 10 link type numbers in :data:`DECODED` (8 header layouts).  Above the link layer
the decoder also follows VLAN tags (4 deep), MPLS, PPPoE and tunnels (see
:mod:`rstscope.reader.decode`); the records of any other link type are counted in
``ReadStats.unsupported_link`` and ``ReadStats.undecoded`` ("unsupported link type N"), never
decoded, and a capture none of whose interfaces is decoded is refused when opened.
"""

from __future__ import annotations

import enum


class LinkLayer(enum.Enum):
    """How the decoder finds the IP header behind a link-layer header."""

    ETHERNET = "Ethernet"
    """14-byte header, EtherType at 12, then any number of 802.1Q/802.1ad tags (up to 4 followed)."""
    LINUX_SLL = "Linux cooked v1"
    """16-byte header, protocol (an EtherType) at 14."""
    LINUX_SLL2 = "Linux cooked v2"
    """20-byte header, protocol (an EtherType) at 0."""
    RAW = "raw IP"
    """No header: IPv4 or IPv6 told apart by the version nibble."""
    IPV4 = "IPv4"
    IPV6 = "IPv6"
    NULL = "BSD loopback"
    """4-byte address family in the capturing host's byte order (either order accepted)."""
    LOOP = "OpenBSD loopback"
    """4-byte address family in network byte order."""


DECODED: dict[int, LinkLayer] = {
    1: LinkLayer.ETHERNET,  # LINKTYPE_ETHERNET
    113: LinkLayer.LINUX_SLL,  # LINKTYPE_LINUX_SLL
    276: LinkLayer.LINUX_SLL2,  # LINKTYPE_LINUX_SLL2
    101: LinkLayer.RAW,  # LINKTYPE_RAW
    12: LinkLayer.RAW,  # DLT_RAW on most BSDs, written as-is by some
    14: LinkLayer.RAW,  # DLT_RAW on OpenBSD / BSD/OS
    228: LinkLayer.IPV4,  # LINKTYPE_IPV4
    229: LinkLayer.IPV6,  # LINKTYPE_IPV6
    0: LinkLayer.NULL,  # LINKTYPE_NULL
    108: LinkLayer.LOOP,  # LINKTYPE_LOOP
}
"""Link type number -> decoder.  Everything else is counted in ``ReadStats.unsupported_link``."""

DECODED_SUMMARY = "Ethernet, Linux cooked v1/v2, raw IP, IPv4, IPv6, BSD loopback"
"""The list shown in the 'unsupported link type' error."""

LINKTYPE_CLASS_MASK = 0x03FF_FFFF
"""pcap header: the low 26 bits are the link type; bits 26-31 carry FCS information (pcap-linktype(7))."""

NAMES: dict[int, str] = {
    0: "NULL",
    1: "ETHERNET",
    3: "AX25",
    6: "IEEE802_5",
    7: "ARCNET_BSD",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    12: "RAW (DLT_RAW)",
    14: "RAW (OpenBSD DLT_RAW)",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    100: "ATM_RFC1483",
    101: "RAW",
    104: "C_HDLC",
    105: "IEEE802_11",
    106: "ATM_CLIP",
    107: "FRELAY",
    108: "LOOP",
    113: "LINUX_SLL",
    114: "LTALK",
    117: "PFLOG",
    119: "IEEE802_11_PRISM",
    122: "IP_OVER_FC",
    123: "SUNATM",
    127: "IEEE802_11_RADIOTAP",
    129: "ARCNET_LINUX",
    138: "APPLE_IP_OVER_IEEE1394",
    139: "MTP2_WITH_PHDR",
    140: "MTP2",
    141: "MTP3",
    142: "SCCP",
    143: "DOCSIS",
    144: "LINUX_IRDA",
    147: "USER0",
    148: "USER1",
    149: "USER2",
    150: "USER3",
    151: "USER4",
    152: "USER5",
    153: "USER6",
    154: "USER7",
    155: "USER8",
    156: "USER9",
    157: "USER10",
    158: "USER11",
    159: "USER12",
    160: "USER13",
    161: "USER14",
    162: "USER15",
    163: "IEEE802_11_AVS",
    165: "BACNET_MS_TP",
    166: "PPP_PPPD",
    169: "GPRS_LLC",
    177: "LINUX_LAPD",
    187: "BLUETOOTH_HCI_H4",
    189: "USB_LINUX",
    192: "PPI",
    195: "IEEE802_15_4_WITHFCS",
    196: "SITA",
    197: "ERF",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    202: "AX25_KISS",
    204: "PPP_WITH_DIR",
    215: "IEEE802_15_4_NONASK_PHY",
    220: "USB_LINUX_MMAPPED",
    226: "IPNET",
    227: "CAN_SOCKETCAN",
    228: "IPV4",
    229: "IPV6",
    230: "IEEE802_15_4_NOFCS",
    231: "DBUS",
    235: "DVB_CI",
    239: "NFLOG",
    240: "NETANALYZER",
    247: "INFINIBAND",
    248: "SCTP",
    249: "USBPCAP",
    252: "WIRESHARK_UPPER_PDU",
    254: "BLUETOOTH_LINUX_MONITOR",
    258: "PKTAP",
    263: "IPMI_HPM_2",
    271: "VSOCK",
    274: "NORDIC_BLE",
    276: "LINUX_SLL2",
    279: "IEEE802_15_4_TAP",
    281: "DSA_TAG_BRCM",
    282: "DSA_TAG_BRCM_PREPEND",
    284: "DSA_TAG_DSA",
    285: "DSA_TAG_EDSA",
    288: "EBHSCR",
    290: "AUERSWALD_LOG",
}
"""Names of common link types, for messages (LINKTYPE_ prefix dropped)."""


def link_name(link_type: int) -> str:
    """``ETHERNET``, ``USER0``, ... or ``LINKTYPE 4242`` for a number not in :data:`NAMES`."""
    return NAMES.get(link_type, f"LINKTYPE {link_type}")
