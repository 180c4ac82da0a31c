"""Tunnels and shims: the inner TCP of every encapsulation the reader follows, its tunnel_id, what is undecoded.

Each capture is a tiny scapy-built conversation (SYN, SYN-ACK, data, RST) inside one encapsulation;
the rows must carry the inner packet's fields, and tshark (looking at the innermost layers) must agree.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.geneve import GENEVE, GeneveOptions
from scapy.contrib.mpls import MPLS
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import GRE, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw
from scapy.utils import wrpcap
from tshark import TSHARK

from rstscope import api
from rstscope.analysis import analyze_capture
from rstscope.cli import Environment, run
from rstscope.packets import ACK, PSH, RST, SYN, format_addr
from rstscope.reader import read_all
from rstscope.reader.decode import DECODE_ERROR_CAUSES
from rstscope.reader.tunnels import (
    TUNNEL_ERSPAN,
    TUNNEL_GENEVE,
    TUNNEL_GRE_KEY,
    TUNNEL_KIND_SHIFT,
    TUNNEL_VXLAN,
    UNDECODED_CAUSES,
)
from tests import scenarios

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

CLIENT, SERVER = ("10.1.0.1", 40000), ("10.1.0.2", 8080)
CLIENT6, SERVER6 = ("2001:db8:1::1", 40000), ("2001:db8:1::2", 8080)
INNER_TTL = 42
# (flags text, sender is the client, seq, ack, payload bytes)
SEGMENTS = [
    ("S", True, 1000, 0, 0),
    ("SA", False, 5000, 1001, 0),
    ("PA", True, 1001, 5001, 10),
    ("R", False, 5001, 0, 0),
]
FLAG_BITS = {"S": SYN, "SA": SYN | ACK, "PA": PSH | ACK, "R": RST}


def inner_packets(ipv6: bool = False) -> list:
    """The conversation, as bare IP packets (no link layer)."""
    client, server = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
    out = []
    for i, (flags, from_client, seq, ack, size) in enumerate(SEGMENTS):
        src, dst = (client, server) if from_client else (server, client)
        ip = (
            IPv6(src=src[0], dst=dst[0], hlim=INNER_TTL)
            if ipv6
            else IP(src=src[0], dst=dst[0], ttl=INNER_TTL, id=100 + i)
        )
        pkt = ip / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=1000 + i)
        out.append(pkt / Raw(b"x" * size) if size else pkt)
    return out


def eth(payload, **kw):
    return Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", **kw) / payload


def outer_ip(payload, proto=None):
    kw = {"proto": proto} if proto is not None else {}
    return IP(src="192.0.2.1", dst="192.0.2.2", ttl=250, id=9, **kw) / payload


def outer_ip6(payload, nh):
    return IPv6(src="2001:db8:ff::1", dst="2001:db8:ff::2", nh=nh) / payload


def gre(proto, **kw):
    return GRE(proto=proto, **kw)


ERSPAN3_O = ERSPAN_III(session_id=99, ft=0, o=1) / ERSPAN_PlatformSpecific(platf_id=3)
GENEVE_OPTIONS = [GeneveOptions(classid=0x0102, type=0x80, length=2, data=b"\x00" * 8)]

# name -> (wrap an inner IP packet into a whole frame, inner is IPv6, expected (tunnel kind, value) or None)
ENCAPSULATIONS = {
    # GRE, RFC 2784/2890
    "gre-key-seq": (lambda p: eth(outer_ip(gre(0x0800, key_present=1, key=0xABCDEF01, seqnum_present=1,
                                                sequence_number=7) / p)), False, (TUNNEL_GRE_KEY, 0xABCDEF01)),
    "gre-checksum": (lambda p: eth(outer_ip(gre(0x0800, chksum_present=1) / p)), False, None),
    "gre-ipv6": (lambda p: eth(outer_ip(gre(0x86DD) / p)), True, None),
    "gre-teb": (lambda p: eth(outer_ip(gre(0x6558, key_present=1, key=5) / eth(p))), False, (TUNNEL_GRE_KEY, 5)),
    "gre-wccp": (lambda p: eth(outer_ip(gre(0x883E) / Raw(b"\x00\x00\x00\x07") / p)), False, None),
    "gre-mpls": (lambda p: eth(outer_ip(gre(0x8847) / MPLS(label=16, s=1) / p)), False, None),
    # ERSPAN over GRE: type I (no sequence number, no header), II, III with and without the platform subheader
    "erspan-1": (lambda p: eth(outer_ip(gre(0x88BE) / eth(p))), False, None),
    "erspan-2": (lambda p: eth(outer_ip(gre(0x88BE, seqnum_present=1, sequence_number=3)
                                        / ERSPAN_II(session_id=77) / eth(p))), False, (TUNNEL_ERSPAN, 77)),
    "erspan-3": (lambda p: eth(outer_ip(gre(0x22EB, seqnum_present=1) / ERSPAN_III(session_id=1023, ft=0)
                                        / eth(p))), False, (TUNNEL_ERSPAN, 1023)),
    "erspan-3-subheader": (lambda p: eth(outer_ip(gre(0x22EB, seqnum_present=1) / ERSPAN3_O / eth(p))), False,
                           (TUNNEL_ERSPAN, 99)),
    # UDP tunnels
    "vxlan": (lambda p: eth(outer_ip(UDP(sport=5555, dport=4789) / VXLAN(vni=4242) / eth(p))), False,
              (TUNNEL_VXLAN, 4242)),
    "geneve-options": (lambda p: eth(outer_ip(UDP(sport=5555, dport=6081)
                                              / GENEVE(vni=0xABCDE, proto=0x6558, options=GENEVE_OPTIONS)
                                              / eth(p))), False, (TUNNEL_GENEVE, 0xABCDE)),
    "geneve-ip-over-ipv6": (lambda p: eth(outer_ip6(UDP(sport=5555, dport=6081) / GENEVE(vni=8, proto=0x0800) / p,
                                                    nh=17)), False, (TUNNEL_GENEVE, 8)),
    # shims: MPLS, PPPoE (over QinQ: 802.1ad outer tag, and the pre-standard 0x9100)
    "mpls-2-labels": (lambda p: eth(MPLS(label=100, s=0) / MPLS(label=200, s=1) / p, type=0x8847), False, None),
    "mpls-ipv6": (lambda p: eth(MPLS(label=100, s=1) / p, type=0x8847), True, None),
    "mpls-pw-control-word": (lambda p: eth(MPLS(label=100, s=0) / MPLS(label=300, s=1) / Raw(b"\0\0\0\0") / eth(p),
                                           type=0x8847), False, None),
    "pppoe-qinq": (lambda p: eth(Dot1AD(vlan=10) / Dot1Q(vlan=20) / PPPoE(sessionid=0x1234) / PPP(proto=0x21) / p),
                   False, None),
    "pppoe-9100-ipv6": (lambda p: eth(Dot1Q(vlan=10, type=0x8100) / Dot1Q(vlan=20, type=0x8864)
                                      / PPPoE(sessionid=1) / PPP(proto=0x57) / p, type=0x9100), True, None),
    # IP in IP
    "ipip": (lambda p: eth(outer_ip(p, proto=4)), False, None),
    "6in4": (lambda p: eth(outer_ip(p, proto=41)), True, None),
    "4in6": (lambda p: eth(outer_ip6(p, nh=4)), False, None),
    "6in6": (lambda p: eth(outer_ip6(p, nh=41)), True, None),
    # nested: VXLAN inside GRE with a key
    "vxlan-in-gre": (lambda p: eth(outer_ip(gre(0x0800, key_present=1, key=5)
                                            / IP(src="198.51.100.1", dst="198.51.100.2")
                                            / UDP(sport=1, dport=4789) / VXLAN(vni=4242) / eth(p))), False,
                     (TUNNEL_VXLAN, 4242)),
}  # fmt: skip


def write(path, frames) -> None:
    for i, frame in enumerate(frames):
        frame.time = 1_700_000_000 + i / 1000
    wrpcap(str(path), frames)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    root = tmp_path_factory.mktemp("tunnels")
    paths = {}
    for name, (wrap, ipv6, _) in ENCAPSULATIONS.items():
        paths[name] = root / f"{name}.pcap"
        write(paths[name], [wrap(p) for p in inner_packets(ipv6)])
    return paths


@pytest.mark.parametrize("name", ENCAPSULATIONS)
def test_inner_tcp_and_tunnel_id(captures, name):
    _, ipv6, tunnel = ENCAPSULATIONS[name]
    table, stats = read_all(captures[name])
    assert dict(stats.undecoded) == {} and stats.warnings == []
    assert len(table) == len(SEGMENTS) and (table["decode_error"] == 0).all()
    client, server = (CLIENT6, SERVER6) if ipv6 else (CLIENT, SERVER)
    for i, (row, (flags, from_client, seq, ack, size)) in enumerate(zip(table, SEGMENTS, strict=True)):
        src, dst = (client, server) if from_client else (server, client)
        assert (format_addr(row["src_hi"], row["src_lo"]), int(row["src_port"])) == src
        assert (format_addr(row["dst_hi"], row["dst_lo"]), int(row["dst_port"])) == dst
        assert (int(row["seq"]), int(row["ack"]), int(row["flags"])) == (seq, ack, FLAG_BITS[flags])
        assert (int(row["payload_len"]), int(row["window"])) == (size, 1000 + i)
        assert (int(row["ip_version"]), int(row["ttl"])) == (6 if ipv6 else 4, INNER_TTL)  # the inner packet's
        assert int(row["ip_id"]) == (0 if ipv6 else 100 + i)
    ids = set(table["tunnel_id"].tolist())
    assert len(ids) == 1
    (tunnel_id,) = ids
    if tunnel is None:
        assert tunnel_id == 0
    else:
        kind, value = tunnel
        assert (tunnel_id >> TUNNEL_KIND_SHIFT, tunnel_id & 0xFFFF_FFFF) == (kind, value)


def test_nested_identifier_differs_from_the_same_vni_alone(captures):
    plain, _ = read_all(captures["vxlan"])
    nested, _ = read_all(captures["vxlan-in-gre"])
    assert plain["tunnel_id"][0] != nested["tunnel_id"][0]


def test_same_vni_value_as_gre_key_is_another_tenant(tmp_path):
    vxlan = eth(outer_ip(UDP(sport=1, dport=4789) / VXLAN(vni=5) / eth(inner_packets()[0])))
    keyed = eth(outer_ip(gre(0x0800, key_present=1, key=5) / inner_packets()[0]))
    write(tmp_path / "t.pcap", [vxlan, keyed])
    table, _ = read_all(tmp_path / "t.pcap")
    assert table["tunnel_id"][0] != table["tunnel_id"][1] and (table["tunnel_id"] & 0xFFFF_FFFF == 5).all()


def test_same_connection_in_two_vnis_is_two_connections(tmp_path):
    frames = []
    for vni in (100, 200):
        frames += [eth(outer_ip(UDP(sport=1, dport=4789) / VXLAN(vni=vni) / eth(p))) for p in inner_packets()]
    write(tmp_path / "two-vnis.pcap", frames)
    doc = api.document(analyze_capture(tmp_path / "two-vnis.pcap"))
    assert len(doc["connections"]) == 2
    assert {c["client"] for c in doc["connections"]} == {f"{CLIENT[0]}:{CLIENT[1]}"}
    assert sorted(r["frame"] for r in doc["resets"]) == [4, 8]
    # the rows tell the tenants apart: VXLAN VNIs 100 and 200 (kind 1 in the top byte)
    assert sorted(c["tunnel_id"] for c in doc["connections"]) == [(1 << 56) | 100, (1 << 56) | 200]


def test_erspan_mirror_of_a_close_race_gives_the_plain_verdicts(tmp_path):
    scenario = scenarios.close_race()
    plain, mirrored = tmp_path / "plain.pcap", tmp_path / "erspan.pcap"
    wrpcap(str(plain), scenario.packets)
    frames = []
    for i, pkt in enumerate(scenario.packets):
        frame = eth(outer_ip(gre(0x88BE, seqnum_present=1, sequence_number=i) / ERSPAN_II(session_id=5) / pkt))
        frame.time = pkt.time
        frames.append(frame)
    wrpcap(str(mirrored), frames)
    got = {}
    for path in (plain, mirrored):
        doc = api.document(analyze_capture(path))
        got[path.stem] = [(r["frame"], r["verdict"], r["in_flight"], r["primary"]) for r in doc["resets"]]
    assert got["erspan"] == got["plain"]
    assert {frame: verdict for frame, verdict, _, _ in got["erspan"]} == scenario.verdicts


# ---------------------------------------------------------------- what is not decoded


def pptp_gre(p) -> Raw:
    """Enhanced GRE (version 1, PPTP): key present (payload length, call id), protocol 0x880b, then PPP."""
    ppp = b"\xff\x03\x00\x21" + bytes(p)
    return Raw(struct.pack("!HHHH", 0x2001, 0x880B, len(ppp), 7) + ppp)


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = run(list(argv), Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False))
    return status, out.getvalue(), err.getvalue()


def test_undecodable_capture_says_so_in_text_and_json(tmp_path):
    path = tmp_path / "pptp.pcap"
    write(path, [eth(outer_ip(pptp_gre(p), proto=47)) for p in inner_packets()])
    status, out, _ = cli("analyze", str(path))
    assert status == 0
    assert "No TCP decoded: 4 packets undecoded (gre: unsupported protocol 0x880b: 4)." in out
    assert "No RST in this capture" not in out
    status, out, _ = cli("analyze", str(path), "--json")
    doc = json.loads(out)
    assert doc["undecoded"] == {"gre: unsupported protocol 0x880b": 4}
    assert doc["captures"][0]["undecoded"] == {"gre: unsupported protocol 0x880b": 4}
    assert doc["captures"][0]["warnings"] == ["4 packets undecoded (gre: unsupported protocol 0x880b: 4)"]


def test_partly_decoded_capture_without_rst_does_not_say_no_rst_in_capture(tmp_path):
    path = tmp_path / "mixed.pcap"
    decoded = [eth(p) for p in inner_packets()[:3]]
    write(path, [*decoded, eth(outer_ip(pptp_gre(inner_packets()[3]), proto=47))])
    _, out, _ = cli("analyze", str(path))
    assert "No RST in the 3 TCP packets decoded; 1 packet undecoded (gre: unsupported protocol 0x880b: 1)." in out
    assert "No RST in this capture" not in out


def cut(frame, keep: int):
    """``frame`` captured with a snaplen of ``keep`` bytes (the wire length stays)."""
    raw = bytes(frame)
    return raw[:keep], len(raw)


def write_cut(path, frames: list[tuple[bytes, int]]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, (data, wire) in enumerate(frames):
            f.write(struct.pack("<IIII", 1_700_000_000, i, len(data), wire) + data)


SYN_PACKET = inner_packets()[0]
# cause -> a frame (or (bytes, wire length) when cut by the snaplen) that has it
UNDECODED = {
    "gre: header cut short": cut(eth(outer_ip(gre(0x0800, key_present=1, key=1) / SYN_PACKET)), 14 + 20 + 6),
    "gre: unsupported protocol 0x0806": eth(outer_ip(gre(0x0806) / Raw(b"\0" * 28))),
    "gre: unsupported version 2": eth(outer_ip(Raw(struct.pack("!HH", 2, 0x0800) + bytes(SYN_PACKET)), proto=47)),
    "gre: source routing": eth(outer_ip(gre(0x0800, routing_present=1) / SYN_PACKET)),
    "erspan: header cut short": cut(eth(outer_ip(gre(0x88BE, seqnum_present=1) / ERSPAN_II() / eth(SYN_PACKET))),
                                    14 + 20 + 8 + 4),
    "erspan: unsupported version 3": eth(outer_ip(gre(0x88BE, seqnum_present=1) / ERSPAN_II(ver=3) / eth(SYN_PACKET))),
    "erspan: unsupported frame type 5": eth(outer_ip(gre(0x22EB, seqnum_present=1) / ERSPAN_III(ft=5) / SYN_PACKET)),
    "vxlan: header cut short": cut(eth(outer_ip(UDP(dport=4789) / VXLAN(vni=1) / eth(SYN_PACKET))), 14 + 20 + 8 + 4),
    "vxlan: no vni flag": eth(outer_ip(UDP(dport=4789) / VXLAN(flags=0, vni=1) / eth(SYN_PACKET))),
    "geneve: header cut short": cut(eth(outer_ip(UDP(dport=6081) / GENEVE(proto=0x6558, options=GENEVE_OPTIONS)
                                                 / eth(SYN_PACKET))), 14 + 20 + 8 + 10),
    "geneve: unsupported version 1": eth(outer_ip(UDP(dport=6081) / GENEVE(version=1, proto=0x0800) / SYN_PACKET)),
    "geneve: unsupported protocol 0x0806": eth(outer_ip(UDP(dport=6081) / GENEVE(proto=0x0806) / SYN_PACKET)),
    "ethernet: header cut short": cut(eth(outer_ip(gre(0x6558) / eth(SYN_PACKET))), 14 + 20 + 4 + 10),
    "mpls: header cut short": cut(eth(MPLS(s=0) / MPLS(s=1) / SYN_PACKET, type=0x8847), 14 + 6),
    "mpls: label stack too deep": eth(MPLS(s=0) / MPLS(s=0) / MPLS(s=0) / MPLS(s=0) / MPLS(s=0) / MPLS(s=0)
                                      / MPLS(s=0) / MPLS(s=0) / MPLS(s=1) / SYN_PACKET, type=0x8847),
    "mpls: no ip after bottom of stack": eth(MPLS(s=1) / Raw(b"\x80" + b"\0" * 40), type=0x8847),
    "pppoe: header cut short": cut(eth(PPPoE() / PPP(proto=0x21) / SYN_PACKET), 14 + 5),
    "pppoe: unsupported ppp protocol 0x002b": eth(PPPoE() / PPP(proto=0x2B) / SYN_PACKET),
    "encapsulation: too deep": eth(outer_ip(outer_ip(outer_ip(outer_ip(outer_ip(SYN_PACKET, 4), 4), 4), 4), 4)),
    "ip fragment": eth(IP(src="10.0.0.1", dst="10.0.0.2", frag=100, proto=6) / Raw(b"\0" * 20)),
    "tcp: bad data offset": eth(IP(src="10.0.0.1", dst="10.0.0.2") / TCP(dataofs=3)),
}  # fmt: skip


@pytest.mark.parametrize("cause", UNDECODED)
def test_each_undecoded_cause(tmp_path, cause):
    frame = UNDECODED[cause]
    path = tmp_path / "one.pcap"
    write_cut(path, [frame if isinstance(frame, tuple) else (bytes(frame), len(frame))])
    table, stats = read_all(path)
    assert dict(stats.undecoded) == {cause: 1}
    assert (table["decode_error"] != 0).all()  # never a usable row
    assert any(cause.startswith(c.split("{")[0]) for c in UNDECODED_CAUSES)


def test_control_traffic_and_inner_arp_are_not_undecoded(tmp_path):
    lcp = eth(PPPoE() / PPP(proto=0xC021) / Raw(b"\x09\x01\x00\x08\x00\x00\x00\x00"))
    arp_in_vxlan = eth(outer_ip(UDP(dport=4789) / VXLAN(vni=1) / eth(Raw(b"\0" * 28), type=0x0806)))
    nhrp = eth(outer_ip(gre(0x2001) / Raw(b"\0" * 20)))
    write(tmp_path / "control.pcap", [lcp, arp_in_vxlan, nhrp])
    table, stats = read_all(tmp_path / "control.pcap")
    assert len(table) == 0 and dict(stats.undecoded) == {} and stats.non_ip == 3


# ---------------------------------------------------------------- tshark, looking at the innermost layers

TSHARK_DECODE_AS = {"mpls-pw-control-word": ["-d", "mpls.label==300,pwethcw"]}
"""tshark does not guess what follows an MPLS stack's bottom; rstscope does (by the first nibble)."""
TSHARK_FIELDS = ["frame.number", "tcp.srcport", "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len",
                 "src", "dst", "ttl"]  # fmt: skip
INNER_IP_FIELDS = {False: ["ip.src", "ip.dst", "ip.ttl"], True: ["ipv6.src", "ipv6.dst", "ipv6.hlim"]}


@needs_tshark
@pytest.mark.parametrize("name", ENCAPSULATIONS)
def test_inner_fields_match_tshark(captures, name):
    cmd = [TSHARK, "-n", "-r", str(captures[name]), "-Y", "tcp", "-T", "fields", "-E", "occurrence=l"]
    cmd += TSHARK_DECODE_AS.get(name, [])
    for f in TSHARK_FIELDS[:-3] + INNER_IP_FIELDS[ENCAPSULATIONS[name][1]]:  # occurrence=l: the innermost
        cmd += ["-e", f]
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=60).stdout.splitlines()
    theirs = [dict(zip(TSHARK_FIELDS, line.split("\t"), strict=True)) for line in lines]
    table, _ = read_all(captures[name])
    ours = [
        {
            "frame.number": str(r["frame"]),
            "tcp.srcport": str(r["src_port"]),
            "tcp.dstport": str(r["dst_port"]),
            "tcp.seq_raw": str(r["seq"]),
            "tcp.ack_raw": str(r["ack"]),
            "tcp.flags": f"0x{int(r['flags']):04x}",
            "tcp.len": str(r["payload_len"]),
            "src": format_addr(r["src_hi"], r["src_lo"]),
            "dst": format_addr(r["dst_hi"], r["dst_lo"]),
            "ttl": str(r["ttl"]),
        }
        for r in table
    ]
    assert len(theirs) == len(SEGMENTS)
    assert ours == theirs


def test_cause_strings_are_unique_and_lower_case():
    assert len(set(UNDECODED_CAUSES)) == len(UNDECODED_CAUSES)
    assert all(c == c.lower() or "{" in c for c in UNDECODED_CAUSES)
    assert np.all([":" in c or c.startswith(("unsupported", "ip fragment")) for c in UNDECODED_CAUSES])


# ---------------------------------------------------------------- damaged tunnels: counted, never lost

ROW_LESS_CAUSES = ("unsupported link type", "ip fragment", *DECODE_ERROR_CAUSES.values())
"""Causes whose packets are also counted elsewhere (unsupported_link, ip_fragments, rows)."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(sorted(ENCAPSULATIONS)),
    edits=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
    keep=st.integers(0, 200),
)
def test_damaged_tunnels_are_counted_once(tmp_path, name, edits, keep):
    wrap, ipv6, _ = ENCAPSULATIONS[name]
    frames = []
    for p in inner_packets(ipv6):
        raw = bytearray(bytes(wrap(p)))
        for pos, value in edits:
            if pos < len(raw):
                raw[pos] = value
        frames.append((bytes(raw[:keep]), len(raw)))
    path = tmp_path / "damaged.pcap"
    write_cut(path, frames)
    table, stats = read_all(path)
    only_here = sum(n for cause, n in stats.undecoded.items() if not cause.startswith(ROW_LESS_CAUSES))
    accounted = stats.tcp_packets + stats.non_ip + stats.non_tcp + stats.ip_fragments + only_here
    assert accounted == stats.records == len(frames)
    assert len(table) == stats.tcp_packets
    errors = sum(n for cause, n in stats.undecoded.items() if cause in DECODE_ERROR_CAUSES.values())
    assert errors == int((table["decode_error"] != 0).sum())


def test_four_tunnels_deep_are_followed_and_a_fifth_is_not(tmp_path):
    def nest(p, depth):
        for _ in range(depth):
            p = outer_ip(p, proto=4)
        return eth(p)

    write(tmp_path / "deep.pcap", [nest(inner_packets()[0], 4), nest(inner_packets()[0], 5)])
    table, stats = read_all(tmp_path / "deep.pcap")
    assert table["frame"].tolist() == [1] and int(table["ttl"][0]) == INNER_TTL
    assert dict(stats.undecoded) == {"encapsulation: too deep": 1}


def test_undecodable_capture_in_the_report_sections(tmp_path):
    from rstscope.report import sections

    path = tmp_path / "pptp.pcap"
    write(path, [eth(outer_ip(pptp_gre(p), proto=47)) for p in inner_packets()])
    doc = api.document(analyze_capture(path))
    headline = str(sections.summary_sentences(doc)[0])
    assert headline == "No RST in 0 decoded connections; 4 packets undecoded (gre: unsupported protocol 0x880b: 4)."
    (paragraph,) = [b for b in sections.evidence_section(doc, level=2) if isinstance(b, sections.Paragraph)]
    assert "4 packets undecoded" in paragraph.text and "No RST in the capture" not in paragraph.text
