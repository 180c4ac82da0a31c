"""Demonstrates how the reader's tiny format captures are built; rerun to regenerate them.

Run from the repository root: ``python tests/captures/formats/make_formats.py``.  Packets come
from scapy; the file containers (pcap headers in both byte orders and both timestamp units,
pcapng blocks, gzip, damage) are written by hand here so that every byte is deliberate.
The output is deterministic (fixed timestamps, fixed random seed, gzip mtime 0), and each
file stays under 4 KB.  ``tests/reader/test_formats.py`` holds what each file must decode to.
"""

from __future__ import annotations

import gzip
import random
import struct
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Jumbo,
)
from scapy.layers.ipsec import AH
from scapy.layers.l2 import ARP, CookedLinux, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

HERE = Path(__file__).resolve().parent
TS_SEC = 1_700_000_000
"""Every file's first packet is at 2023-11-14 22:13:20 UTC plus a fraction; packet i adds i ms."""

MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)]
LINUX_TS = [("NOP", None), ("NOP", None), ("Timestamp", (1001, 2000))]
SACK = [("NOP", None), ("NOP", None), ("Timestamp", (1002, 2001)), ("NOP", None), ("NOP", None),
        ("SAck", (5000, 6000, 7000, 8000))]  # fmt: skip


def tcp_flow() -> list[bytes]:
    """Six IP packets (no link layer): SYN, SYN-ACK (IPv6), data, SACK, RST, UDP."""
    a, b = "10.0.0.1", "10.0.0.2"
    return [
        bytes(IP(src=a, dst=b, ttl=64, id=1) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=64240,
                                                    options=SYN_OPTIONS)),
        bytes(IPv6(src="2001:db8::1", dst="2001:db8::2", hlim=63)
              / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001, window=65160, options=SYN_OPTIONS)),
        bytes(IP(src=a, dst=b, ttl=64, id=2) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001,
                                                    window=502, options=LINUX_TS) / Raw(b"GET / HTTP/1.0\r\n\r\n")),
        bytes(IP(src=b, dst=a, ttl=64, id=3) / TCP(sport=80, dport=40000, flags="A", seq=5001, ack=1019,
                                                    window=509, options=SACK)),
        bytes(IP(src=b, dst=a, ttl=64, id=4) / TCP(sport=80, dport=40000, flags="R", seq=5001, window=0)),
        bytes(IP(src=a, dst=b, ttl=64, id=5) / UDP(sport=5353, dport=53) / Raw(b"x" * 10)),
    ]  # fmt: skip


def ether(packet: bytes) -> bytes:
    kind = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return bytes(Ether(type=kind, **MAC)) + packet


ARP_FRAME = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=MAC["src"]) / ARP(psrc="10.0.0.1", pdst="10.0.0.2"))


# ---------------------------------------------------------------- classic pcap


def pcap(frames, *, order="<", nano=False, linktype=1, snaplen=65535, wire=None) -> bytes:
    """A classic pcap file; ``frames`` are bytes (cut to ``snaplen``), timestamps TS_SEC + i ms."""
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for i, frame in enumerate(frames):
        frac = (123_456_789 if nano else 123_456) + i * (1_000_000 if nano else 1000)
        data = frame[:snaplen]
        out.append(struct.pack(order + "IIII", TS_SEC, frac, len(data), wire[i] if wire else len(frame)))
        out.append(data)
    return b"".join(out)


# ---------------------------------------------------------------- pcapng


def block(order: str, kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def option(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, linktype: int, snaplen: int = 65535, tsresol: int | None = None, tsoffset: int = 0,
        name: str | None = None) -> bytes:  # fmt: skip
    opts = b""
    if name:
        opts += option(order, 2, name.encode())
    if tsresol is not None:
        opts += option(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += option(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += option(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", linktype, 0, snaplen) + opts)


def epb(order: str, iface: int, ticks: int, frame: bytes, wire: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), wire or len(frame))
    return block(order, 6, head + frame + b"\0" * (-len(frame) % 4))


def spb(order: str, frame: bytes) -> bytes:
    return block(order, 3, struct.pack(order + "I", len(frame)) + frame + b"\0" * (-len(frame) % 4))


def pb(order: str, iface: int, ticks: int, frame: bytes) -> bytes:
    head = struct.pack(order + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
    return block(order, 2, head + frame + b"\0" * (-len(frame) % 4))


def pcapng_simple(order: str) -> bytes:
    frames = [ether(p) for p in tcp_flow()]
    out = [shb(order), idb(order, 1, name="eth0")]
    for i, frame in enumerate(frames):
        out.append(epb(order, 0, (TS_SEC * 1_000_000 + 123_456 + i * 1000), frame))
    return b"".join(out)


def sll(packet: bytes) -> bytes:
    kind = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    return bytes(CookedLinux(pkttype=0, lladdrtype=1, lladdrlen=6, src=b"\x02\0\0\0\0\x01\0\0", proto=kind)) + packet


def sll2(packet: bytes) -> bytes:
    kind = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    # protocol, reserved, ifindex, ARPHRD_ETHER, packet type, address length, address (8)
    return struct.pack(">HHIHBB8s", kind, 0, 2, 1, 0, 6, b"\x02\0\0\0\0\x01") + packet


def pcapng_multi() -> bytes:
    """Two sections (LE then BE), four interfaces, EPB/SPB/PB and blocks to skip."""
    flow = tcp_flow()
    le, be = "<", ">"
    out = [
        shb(le),
        idb(le, 1, snaplen=65535, name="eth0"),  # iface 0: µs (default)
        idb(le, 101, snaplen=65535, tsresol=9, name="tun0"),  # iface 1: raw IP, ns
        idb(le, 113, snaplen=65535, tsresol=0x94, tsoffset=100, name="any"),  # iface 2: SLL, 2**-20 s, +100 s
        epb(le, 0, TS_SEC * 1_000_000 + 123_456, ether(flow[0])),  # frame 1
        epb(le, 1, TS_SEC * 1_000_000_000 + 124_456_789, flow[1]),  # frame 2
        block(le, 0x0BAD, struct.pack(le + "I", 32473) + b"custom"),  # custom block: skipped, takes frame 3
        block(le, 0x0000_0101, b"unknown block type"),  # unknown: skipped, no frame number
        epb(le, 2, (TS_SEC - 100) * (1 << 20) + (1 << 19), sll(flow[2])),  # frame 4: TS_SEC + 0.5 s
        spb(le, ether(flow[3])),  # frame 5: interface 0, no timestamp
        pb(le, 0, TS_SEC * 1_000_000 + 127_456, ether(flow[4])),  # frame 6: obsolete PB
        block(le, 5, struct.pack(le + "III", 0, 0, 0)),  # ISB: skipped
        shb(be),
        idb(be, 276, snaplen=262144, tsresol=3),  # iface 3 (section 2's id 0): SLL2, ms
        epb(be, 0, TS_SEC * 1000 + 200, sll2(flow[5])),  # frame 7: UDP, no row
        epb(be, 0, TS_SEC * 1000 + 201, sll2(flow[4])),  # frame 8
    ]
    return b"".join(out)


# ---------------------------------------------------------------- link types and IP variants


def null_header(family: int, order: str) -> bytes:
    return struct.pack(order + "I", family)


def link_files() -> dict[str, bytes]:
    flow = tcp_flow()
    v4, v6 = flow[0], flow[1]
    return {
        "link-sll.pcap": pcap([sll(v4), sll(v6)], linktype=113),
        "link-sll2.pcap": pcap([sll2(v4), sll2(v6)], linktype=276),
        "link-raw.pcap": pcap([v4, v6], linktype=101),
        "link-raw12.pcap": pcap([v4, v6], linktype=12),
        "link-raw14.pcap": pcap([v4, v6], linktype=14),
        "link-ipv4.pcap": pcap([v4], linktype=228),
        "link-ipv6.pcap": pcap([v6], linktype=229),
        # BSD null: host byte order; FreeBSD AF_INET6 28, macOS 30, little- and big-endian hosts.
        "link-null-le.pcap": pcap([null_header(2, "<") + v4, null_header(30, "<") + v6], linktype=0),
        "link-null-be.pcap": pcap([null_header(2, ">") + v4, null_header(28, ">") + v6], linktype=0, order=">"),
        # OpenBSD loop: network byte order, AF_INET6 24.
        "link-loop.pcap": pcap([null_header(2, ">") + v4, null_header(24, ">") + v6], linktype=108),
        "link-user0.pcap": pcap([v4], linktype=147),
    }


def vlan_file() -> bytes:
    v4 = tcp_flow()[0]
    frames = [
        bytes(Ether(**MAC) / Dot1Q(vlan=10, type=0x0800)) + v4,  # 802.1Q
        bytes(Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=10, type=0x0800)) + v4,  # QinQ, 802.1ad outer
        bytes(Ether(type=0x9100, **MAC)) + bytes(Dot1Q(vlan=100, type=0x8100) / Dot1Q(vlan=10, type=0x0800)) + v4,
    ]
    return pcap(frames)


def ip_variants() -> dict[str, bytes]:
    tcp = TCP(sport=40000, dport=80, flags="A", seq=7, ack=9, window=100)
    payload = Raw(b"A" * 40)
    first = IP(src="10.0.0.1", dst="10.0.0.2", id=9, flags="MF", frag=0) / tcp / payload
    first_bytes = bytes(first)[: 20 + 24]  # 20 TCP bytes and 4 payload bytes in the first fragment
    first_bytes = first_bytes[:2] + struct.pack(">H", len(first_bytes)) + first_bytes[4:]
    later = bytes(IP(src="10.0.0.1", dst="10.0.0.2", id=9, frag=3, proto=6) / Raw(b"A" * 36))
    v6 = {"src": "2001:db8::1", "dst": "2001:db8::2"}
    return {
        "ipv4-options.pcap": pcap(
            [
                ether(
                    bytes(
                        IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR(routers=["192.0.2.1"]), IPOption_NOP()])
                        / tcp
                        / payload
                    )
                )
            ]
        ),
        # First fragment (MF set) of a TCP segment, then a later fragment: both counted, no rows.
        "ipv4-fragments.pcap": pcap(
            [ether(first_bytes), ether(later), ether(bytes(IP(src="10.0.0.1", dst="10.0.0.2", flags="DF") / tcp))]
        ),
        "ipv6-extensions.pcap": pcap(
            [
                # hop-by-hop, destination options, routing (type 0, no addresses), then TCP: a row
                ether(
                    bytes(IPv6(**v6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting() / tcp / payload)
                ),
                # hop-by-hop, dest-opts, atomic fragment (offset 0, M clear), then TCP: a row
                ether(
                    bytes(
                        IPv6(**v6)
                        / IPv6ExtHdrHopByHop()
                        / IPv6ExtHdrDestOpt()
                        / IPv6ExtHdrFragment(id=7)
                        / tcp
                        / payload
                    )
                ),
                # a later fragment (offset 8 x 8 bytes): counted in ip_fragments
                ether(bytes(IPv6(**v6) / IPv6ExtHdrFragment(offset=8, nh=6, id=8) / Raw(b"B" * 16))),
                # first fragment with M set: counted in ip_fragments
                ether(bytes(IPv6(**v6) / IPv6ExtHdrFragment(offset=0, m=1, id=9) / tcp / payload)),
                # AH (length in 4-byte units + 2), then TCP: a row
                ether(bytes(IPv6(**v6) / AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12) / tcp / payload)),
                # no next header (59): non-TCP
                ether(bytes(IPv6(**v6, nh=59))),
                # jumbo: payload length 0, hop-by-hop jumbo option; cut by the snaplen below
                ether(
                    bytes(IPv6(**v6, plen=0) / IPv6ExtHdrHopByHop(options=[Jumbo(jumboplen=70_000)]) / tcp / payload)
                ),
            ],
            snaplen=200,
            wire=[0, 0, 0, 0, 0, 0, 14 + 40 + 70_000],
        ),
    }


def tcp_options_file() -> bytes:
    frames = [ether(p) for p in tcp_flow()[:4]]
    # A SYN whose option list ends with EOL and junk, and one with a malformed option length.
    eol = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=2, flags="S", options=[("MSS", 536), ("EOL", None)])
    frames.append(ether(bytes(eol)))
    syn = TCP(sport=1, dport=2, flags="S", options=[("WScale", 2), ("MSS", 1200)])
    bad = bytearray(bytes(IP(src="10.0.0.1", dst="10.0.0.2") / syn))
    bad[20 + 20 + 3 + 1] = 40  # the MSS option (after the 3-byte WS) claims 40 bytes: parsing stops
    frames.append(ether(bytes(bad)))
    return pcap(frames)


def snaplen_file() -> bytes:
    """snaplen 70: a data segment cut in its payload, a SYN cut in its options, one cut in its TCP header."""
    flow = tcp_flow()
    cuts = [(ether(flow[2]), 70), (ether(flow[0]), 14 + 20 + 30), (ether(flow[2]), 14 + 20 + 10)]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 70, 1)]
    for i, (frame, cut) in enumerate(cuts):
        out.append(struct.pack("<IIII", TS_SEC, 123_456 + i * 1000, cut, len(frame)) + frame[:cut])
    return b"".join(out)


# ---------------------------------------------------------------- damage


def damaged_files(good: bytes) -> dict[str, bytes]:
    flow = [ether(p) for p in tcp_flow()]
    bad_caplen = pcap(flow[:2]) + struct.pack("<IIII", TS_SEC, 0, 70_000, 70_000) + flow[2]
    ng = pcapng_simple("<")
    rng = random.Random(7)
    return {
        "truncated.pcap": good[:-25],  # the last record cut inside its data
        "bad-caplen.pcap": bad_caplen,  # record 3 claims 70000 bytes (> snaplen 65535); the file ends first
        "huge-caplen.pcap": pcap(flow[:2]) + struct.pack("<IIII", TS_SEC, 0, 300_000, 300_000) + flow[2],  # > 256 KiB
        "bad-blocklen.pcapng": ng + struct.pack("<II", 6, 7) + b"\0" * 32,  # an EPB of length 7
        "cut-gzip.pcap.gz": gzip.compress(good, mtime=0)[:-30],
        "garbage.bin": bytes(rng.randrange(256) for _ in range(1000)),
        "empty.pcap": b"",
        "short-header.pcap": good[:10],
    }


def main() -> None:
    flow = [ether(p) for p in tcp_flow()] + [ARP_FRAME]
    files: dict[str, bytes] = {
        "pcap-le-us.pcap": pcap(flow, order="<"),
        "pcap-be-us.pcap": pcap(flow, order=">"),
        "pcap-le-ns.pcap": pcap(flow, order="<", nano=True),
        "pcap-be-ns.pcap": pcap(flow, order=">", nano=True),
        "pcapng-le.pcapng": pcapng_simple("<"),
        "pcapng-be.pcapng": pcapng_simple(">"),
        "pcapng-multi.pcapng": pcapng_multi(),
        "vlan.pcap": vlan_file(),
        "tcp-options.pcap": tcp_options_file(),
        "snaplen.pcap": snaplen_file(),
    }
    files["pcap-le-us.pcap.gz"] = gzip.compress(files["pcap-le-us.pcap"], mtime=0)
    files["pcapng-multi.pcapng.gz"] = gzip.compress(files["pcapng-multi.pcapng"], mtime=0)
    files |= link_files()
    files |= ip_variants()
    files |= damaged_files(files["pcap-le-us.pcap"])
    for name, data in sorted(files.items()):
        assert len(data) < 4096, f"{name} is {len(data)} bytes"
        (HERE / name).write_bytes(data)
        print(f"{name:28} {len(data):5} bytes")


if __name__ == "__main__":
    main()
