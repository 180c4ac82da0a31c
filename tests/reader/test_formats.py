"""The reader on the tiny committed captures of tests/captures/formats (built by make_formats.py)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from rstscope.packets import ACK, PSH, RST, SYN, DecodeError, format_addr
from rstscope.reader import open_capture, read_all
from rstscope.status import InputError

FORMATS = Path(__file__).resolve().parents[1] / "captures" / "formats"
TS = 1_700_000_000 * 10**9


def rows(name: str, **kw):
    return read_all(FORMATS / name, **kw)


# ---------------------------------------------------------------- containers: byte order, timestamp unit

# The same seven frames (SYN, IPv6 SYN-ACK, data, SACK, RST, UDP, ARP), i ms apart.
SAME_FLOW = [
    # name                 format    compressed  first fraction (ns)
    ("pcap-le-us.pcap", "pcap", False, 123_456_000),
    ("pcap-be-us.pcap", "pcap", False, 123_456_000),
    ("pcap-le-ns.pcap", "pcap", False, 123_456_789),
    ("pcap-be-ns.pcap", "pcap", False, 123_456_789),
    ("pcap-le-us.pcap.gz", "pcap", True, 123_456_000),
]


@pytest.mark.parametrize(("name", "fmt", "compressed", "first_ns"), SAME_FLOW)
def test_classic_pcap_variants(name, fmt, compressed, first_ns):
    with open_capture(FORMATS / name) as capture:
        assert (capture.format, capture.compressed) == (fmt, compressed)
        assert [i.link_type for i in capture.interfaces] == [1]
        table = np.concatenate(list(capture.chunks()))
        stats = capture.stats
    assert table["frame"].tolist() == [1, 2, 3, 4, 5]
    assert table["ts_ns"].tolist() == [TS + first_ns + i * 1_000_000 for i in range(5)]
    assert (stats.records, stats.tcp_packets, stats.non_tcp, stats.non_ip) == (7, 5, 1, 1)
    assert stats.warnings == []
    assert table["flags"].tolist() == [SYN, SYN | ACK, PSH | ACK, ACK, RST]
    assert table["ip_version"].tolist() == [4, 6, 4, 4, 4]
    assert format_addr(table["src_hi"][1], table["src_lo"][1]) == "2001:db8::1"
    assert format_addr(table["dst_hi"][0], table["dst_lo"][0]) == "10.0.0.2"
    assert table["payload_len"].tolist() == [0, 0, 18, 0, 0]


@pytest.mark.parametrize("name", ["pcapng-le.pcapng", "pcapng-be.pcapng"])
def test_pcapng_byte_orders(name):
    with open_capture(FORMATS / name) as capture:
        assert capture.format == "pcapng"
        assert [(i.link_type, i.name, i.ts_resolution_ns) for i in capture.interfaces] == [(1, "eth0", 1000.0)]
        table = np.concatenate(list(capture.chunks()))
    assert table["frame"].tolist() == [1, 2, 3, 4, 5]
    assert table["ts_ns"][0] == TS + 123_456_000
    assert table["seq"].tolist() == [1000, 5000, 1001, 5001, 5001]


@pytest.mark.parametrize("name", ["pcapng-multi.pcapng", "pcapng-multi.pcapng.gz"])
@pytest.mark.parametrize("chunk", [1, 2, 65_536])
def test_pcapng_sections_interfaces_and_blocks(name, chunk):
    with open_capture(FORMATS / name, chunk_packets=chunk) as capture:
        tables = list(capture.chunks())
        interfaces = capture.interfaces
        stats = capture.stats
    assert all(len(t) <= chunk for t in tables)
    table = np.concatenate(tables)
    assert [(i.link_type, i.section, i.name) for i in interfaces] == [
        (1, 0, "eth0"),
        (101, 0, "tun0"),
        (113, 0, "any"),
        (276, 1, None),
    ]
    assert [i.ts_resolution_ns for i in interfaces] == [1000.0, 1.0, 1e9 / 2**20, 1e6]
    assert interfaces[2].ts_offset_s == 100
    # Frame 3 is a custom block (a frame number in Wireshark, no packet); frame 7 is UDP.
    assert table["frame"].tolist() == [1, 2, 4, 5, 6, 8]
    assert table["iface"].tolist() == [0, 1, 2, 0, 0, 3]
    assert table["ts_ns"].tolist() == [
        TS + 123_456_000,  # µs (no if_tsresol)
        TS + 124_456_789,  # ns
        TS + 500_000_000,  # 2**-20 s units, if_tsoffset 100 s
        TS + 500_000_000,  # simple packet block: no timestamp, the previous one is reused
        TS + 127_456_000,  # obsolete packet block
        TS + 201_000_000,  # second section, big-endian, ms
    ]
    assert table["sack_blocks"].tolist() == [0, 0, 0, 2, 0, 0]
    assert stats.skipped_blocks == {"0xbad": 1, "0x101": 1, "0x5": 1}
    assert stats.link_types == {1: 3, 101: 1, 113: 1, 276: 2}
    assert (stats.records, stats.non_tcp, stats.warnings) == (7, 1, [])


# ---------------------------------------------------------------- link types


@pytest.mark.parametrize(
    ("name", "link_type"),
    [
        ("link-sll.pcap", 113),
        ("link-sll2.pcap", 276),
        ("link-raw.pcap", 101),
        ("link-raw12.pcap", 12),
        ("link-raw14.pcap", 14),
        ("link-null-le.pcap", 0),  # AF_INET 2 and AF_INET6 30, little-endian host
        ("link-null-be.pcap", 0),  # AF_INET 2 and AF_INET6 28, big-endian host
        ("link-loop.pcap", 108),  # AF_INET 2 and AF_INET6 24, network order
    ],
)
def test_link_types_with_ipv4_and_ipv6(name, link_type):
    table, stats = rows(name)
    assert stats.link_types == {link_type: 2}
    assert table["ip_version"].tolist() == [4, 6]
    assert table["flags"].tolist() == [SYN, SYN | ACK]
    assert table["mss"].tolist() == [1460, 1460]


@pytest.mark.parametrize(("name", "version"), [("link-ipv4.pcap", 4), ("link-ipv6.pcap", 6)])
def test_link_types_ipv4_ipv6(name, version):
    table, _ = rows(name)
    assert table["ip_version"].tolist() == [version]


def test_unsupported_link_type_is_an_input_error():
    with pytest.raises(InputError, match=r"unsupported link type 147 \(USER0\): rstscope decodes Ethernet"):
        open_capture(FORMATS / "link-user0.pcap")


def test_vlan_tags():
    # 802.1Q; 802.1ad + 802.1Q; 0x9100 + 802.1Q + 802.1Q
    table, stats = rows("vlan.pcap")
    assert table["frame"].tolist() == [1, 2, 3]
    assert table["dst_port"].tolist() == [80, 80, 80]
    assert stats.non_ip == 0


# ---------------------------------------------------------------- IP variants


def test_ipv4_options_shift_the_tcp_header():
    table, _ = rows("ipv4-options.pcap")
    assert (table["src_port"][0], table["seq"][0], table["payload_len"][0]) == (40000, 7, 40)


def test_ipv4_fragments_are_counted_not_decoded():
    table, stats = rows("ipv4-fragments.pcap")
    assert table["frame"].tolist() == [3]  # the unfragmented DF packet
    assert stats.ip_fragments == 2


def test_ipv6_extension_header_chain():
    table, stats = rows("ipv6-extensions.pcap")
    # 1: HBH+dest-opts+routing; 2: HBH+dest-opts+atomic fragment; 5: AH; 7: jumbo (cut by the snaplen)
    assert table["frame"].tolist() == [1, 2, 5, 7]
    assert table["decode_error"].tolist() == [0, 0, 0, 0]
    assert table["payload_len"].tolist() == [40, 40, 40, 70_000 - 8 - 20]
    assert table["payload_truncated"].tolist() == [False, False, False, True]
    assert (stats.ip_fragments, stats.non_tcp) == (2, 1)  # later fragment, first fragment with M; no-next-header


# ---------------------------------------------------------------- TCP options and snaplen cuts


def test_tcp_options():
    table, _ = rows("tcp-options.pcap")
    syn, synack, data, sack, eol, bad = table
    assert (syn["mss"], syn["wscale"], syn["sack_permitted"], syn["has_ts"]) == (1460, 7, True, True)
    assert (syn["tsval"], syn["tsecr"], syn["tcp_header_len"]) == (1000, 0, 40)
    assert (synack["mss"], synack["wscale"]) == (1460, 7)
    assert (data["has_ts"], data["tsval"], data["tsecr"], data["wscale"], data["mss"]) == (True, 1001, 2000, -1, 0)
    assert (sack["sack_blocks"], sack["tsval"]) == (2, 1002)
    assert (eol["mss"], eol["has_ts"]) == (536, False)
    assert (bad["wscale"], bad["mss"], bad["decode_error"]) == (2, 0, 0)  # parsing stopped at the bad length


def test_snaplen_cuts():
    table, stats = rows("snaplen.pcap")
    assert table["decode_error"].tolist() == [
        DecodeError.NONE,
        DecodeError.TCP_OPTIONS_TRUNCATED,
        DecodeError.TCP_HEADER_TRUNCATED,
    ]
    assert (table["payload_len"][0], table["payload_truncated"][0]) == (18, True)
    assert (table["seq"][1], table["flags"][1], table["mss"][1], table["wscale"][1]) == (1000, SYN, 0, -1)
    assert (table["src_port"][2], table["dst_port"][2]) == (40000, 80)  # ports survive a cut header
    assert stats.decode_errors == {"TCP_OPTIONS_TRUNCATED": 1, "TCP_HEADER_TRUNCATED": 1}


# ---------------------------------------------------------------- damage: warnings, and rows before it


@pytest.mark.parametrize(
    ("name", "rows_before", "warnings"),
    [
        ("truncated.pcap", 5, [r"^record 7 @0x234: file ends inside the record \(33 of 58 bytes\)"]),
        ("bad-caplen.pcap", 2, [r"^record 3 @0xe0: file ends inside the record \(100 of 70016 bytes\)"]),
        ("huge-caplen.pcap", 2, [r"^record 3 @0xe0: caplen 300000 > 262144"]),
        ("bad-blocklen.pcapng", 5, [r"^block @0x2c0 \(type 0x6, after record 6\): bad block length 7"]),
        ("cut-gzip.pcap.gz", 5, [r"^gzip stream cut short", r"^record 7 @0x234: file ends inside the record"]),
    ],
)
def test_damage_warns_and_keeps_what_came_before(name, rows_before, warnings):
    table, stats = rows(name)
    assert len(table) == rows_before
    assert len(stats.warnings) == len(warnings)
    for warning, pattern in zip(stats.warnings, warnings, strict=True):
        assert "\n" not in warning
        assert re.search(pattern, warning), warning


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("empty.pcap", r"empty\.pcap: empty file$"),
        ("garbage.bin", r"garbage\.bin: not a pcap or pcapng file: first bytes a5 4d ca 18$"),
        ("short-header.pcap", r"truncated pcap file header \(10 of 24 bytes\)$"),
    ],
)
def test_unreadable_files_are_input_errors(name, message):
    with pytest.raises(InputError, match=message):
        open_capture(FORMATS / name)


def test_format_files_are_small():
    files = [p for p in FORMATS.iterdir() if p.suffix != ".py" and p.is_file()]
    assert len(files) >= 30
    assert max(p.stat().st_size for p in files) < 4096


def test_a_damaged_tsoffset_is_ignored_with_a_warning(tmp_path):
    """An if_tsoffset that no clock could have (here 2**62 s: in ns it overflows 64 bits) is damage: the
    interface's timestamps are read without it, and the reader says so."""
    data = (FORMATS / "pcapng-multi.pcapng").read_bytes()
    good = struct.pack("<HHq", 14, 8, 100)  # iface 2's if_tsoffset option: +100 s
    assert data.count(good) == 1
    damaged = tmp_path / "tsoffset.pcapng"
    damaged.write_bytes(data.replace(good, struct.pack("<HHq", 14, 8, 2**62)))
    with open_capture(damaged) as capture:
        table = np.concatenate(list(capture.chunks()))
        stats = capture.stats
    assert stats.warnings == [f"interface 2: if_tsoffset of {2**62} s ignored (more than 100 years)"]
    assert table["ts_ns"].tolist() == [
        TS + 123_456_000,
        TS + 124_456_789,
        TS + 500_000_000 - 100 * 10**9,  # iface 2, without its offset
        TS + 500_000_000 - 100 * 10**9,  # the simple packet block reuses the previous timestamp
        TS + 127_456_000,
        TS + 201_000_000,
    ]


# ---------------------------------------------------------------- the compiled pcapng walk


def _as_pcapng(pcap: bytes, order: str, stats_every: int) -> bytes:
    """The records of a little-endian microsecond pcap as the EPBs of one pcapng section in byte order
    ``order``, with an interface statistics block (not a frame) after every ``stats_every`` packets."""
    u32 = struct.Struct(order + "I")
    link_type, snaplen = struct.unpack_from("<I", pcap, 20)[0], struct.unpack_from("<I", pcap, 16)[0]
    out = [struct.pack(order + "IIIHHqI", 0x0A0D0D0A, 28, 0x1A2B3C4D, 1, 0, -1, 28),
           struct.pack(order + "IIHHII", 1, 20, link_type, 0, snaplen, 20)]  # fmt: skip
    pos, count = 24, 0
    while pos < len(pcap):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", pcap, pos)
        data = pcap[pos + 16 : pos + 16 + caplen]
        ticks = sec * 1_000_000 + usec  # pcapng's default unit: microseconds
        padded = data + bytes(-len(data) % 4)
        length = 32 + len(padded)
        out.append(struct.pack(order + "IIIIIII", 6, length, 0, ticks >> 32, ticks & 0xFFFFFFFF, caplen, wirelen))
        out += [padded, u32.pack(length)]
        pos += 16 + caplen
        count += 1
        if count % stats_every == 0:
            out.append(struct.pack(order + "IIIIII", 5, 24, 0, ticks >> 32, ticks & 0xFFFFFFFF, 24))
    return b"".join(out)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("chunk", [997, 65_536])
def test_pcapng_gives_the_rows_of_the_same_packets_in_pcap(tmp_path, order, chunk):
    """The compiled walk over runs of EPBs (``walk.c``), stopping at every other block and at the end of
    each read of the file (a 2 MB file read in growing blocks), gives the rows of the classic pcap reader."""
    from tests import shortconns

    pcap = tmp_path / "short.pcap"
    packets = shortconns.generate(str(pcap), 3_000)
    pcapng = tmp_path / "short.pcapng"
    pcapng.write_bytes(_as_pcapng(pcap.read_bytes(), order, stats_every=1_000))
    with open_capture(pcap, chunk_packets=chunk) as a, open_capture(pcapng, chunk_packets=chunk) as b:
        classic, walked = np.concatenate(list(a.chunks())), np.concatenate(list(b.chunks()))
        assert (b.format, b.stats.warnings, b.stats.skipped_blocks) == ("pcapng", [], {"0x5": packets // 1_000})
    assert len(walked) == packets > 20_000
    assert pcapng.stat().st_size > 2 << 20
    assert np.array_equal(walked, classic)
