"""The compiled pass for plain frames (``plain.c``) against the column decoder it stands in for.

The pass decides nothing by itself: a frame it takes must come out exactly as the column decoder
makes it, and every other frame is left to that decoder.  So the tests read the same bytes with the
pass on and off and compare the tables byte for byte and the read statistics field by field: on every
capture of the corpora and the repository, and on frames whose header bytes were mutated (lengths,
versions, offsets and options that are almost right are where the two could part).
"""

from __future__ import annotations

import functools
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from rstscope.reader import decode, read_all
from rstscope.status import InputError

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
import shortconns  # noqa: E402

FORMATS = TESTS / "captures" / "formats"
REPO_CAPTURES = TESTS.parent / "captures"
PCAP_HEADER, RECORD_HEADER = 24, 16
BYTES_MUTATED = 100
"""Mutations fall in each frame's first bytes: the link, IP and TCP headers and the options."""
INTERESTING = [0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x0A, 0x11, 0x20, 0x3C, 0x40, 0x45, 0x4F, 0x50, 0x60,
               0x81, 0x86, 0x88, 0x91, 0xC2, 0xDD, 0xF0, 0xFF]  # fmt: skip
INTERESTING_U16 = [0x0000, 0x0001, 0x0014, 0x0028, 0x003C, 0x0800, 0x86DD, 0x8100, 0x88A8, 0x12B5, 0xFFFF]


def read_both(path: Path, monkeypatch) -> tuple[object, object]:
    """What the reader gives with the pass and without it: (table bytes, stats) or the error."""
    outcomes = []
    for plain in (True, False):
        monkeypatch.setattr(decode, "PLAIN_PASS", plain)
        try:
            table, stats = read_all(path)
        except InputError as exc:
            outcomes.append(("InputError", str(exc)))
        else:
            outcomes.append((table.tobytes(), stats))
    return outcomes[0], outcomes[1]


def capture_files(*roots: Path) -> list[Path]:
    """Every file under ``roots``: the reader refuses what is not a capture (both ways alike)."""
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def test_the_pass_equals_the_column_decoder_on_every_capture(corpus, monkeypatch):
    files = capture_files(corpus, REPO_CAPTURES, FORMATS)
    read = 0
    for path in files:
        with_pass, without = read_both(path, monkeypatch)
        assert with_pass == without, path
        read += not isinstance(with_pass[1], str)
    assert read > 500  # the corpora's readable captures, not a directory of errors


def _records(data: bytes) -> list[tuple[int, int]]:
    """(offset, caplen) of each frame of a little-endian classic pcap."""
    frames, pos = [], PCAP_HEADER
    while pos + RECORD_HEADER <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + RECORD_HEADER + caplen > len(data):
            break
        frames.append((pos + RECORD_HEADER, caplen))
        pos += RECORD_HEADER + caplen
    return frames


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for offset, caplen in _records(data):
        reach = min(caplen, BYTES_MUTATED)
        for _ in range(rng.integers(0, 4) if reach else 0):
            at = offset + int(rng.integers(0, reach))
            if rng.random() < 0.3 and at + 2 <= offset + caplen:  # a length or port: 0, tiny, huge
                out[at : at + 2] = int(rng.choice(INTERESTING_U16)).to_bytes(2, "big")
            else:
                out[at] = int(rng.choice(INTERESTING)) if rng.random() < 0.6 else int(rng.integers(0, 256))
    return bytes(out)


LITTLE_ENDIAN_PCAP = (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")  # microsecond and nanosecond


def _little_endian_pcaps() -> list[Path]:
    return [p for p in sorted(FORMATS.glob("*.pcap")) if p.read_bytes()[:4] in LITTLE_ENDIAN_PCAP]


@pytest.mark.parametrize("seed", range(6))
def test_the_pass_equals_the_column_decoder_on_mutated_frames(tmp_path, monkeypatch, seed):
    rng = np.random.default_rng(seed)
    sources = _little_endian_pcaps()
    short = tmp_path / "short.pcap"
    shortconns.generate(str(short), 300, seed=seed)
    sources.append(short)
    assert len(sources) > 15
    differing = 0
    for source in sources:
        original = source.read_bytes()
        for round_ in range(4):
            mutated = _mutate(original, rng)
            differing += mutated != original
            path = tmp_path / f"{source.stem}-{round_}.pcap"
            path.write_bytes(mutated)
            with_pass, without = read_both(path, monkeypatch)
            assert with_pass == without, f"{source.name}, round {round_}, seed {seed}"
    assert differing > 30


def test_only_plain_frames_take_the_pass(tmp_path, monkeypatch):
    """The pass takes plain TCP frames (VLAN-tagged or not, IPv4 with options, IPv6) and leaves
    tunnels, extension headers, fragments, other protocols and cut headers to the column decoder."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
    from scapy.layers.l2 import Dot1Q
    from scapy.layers.l2 import Ether as Ethernet
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import wrpcap

    tcp = TCP(sport=40000, dport=80, flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
    data = tcp / (b"x" * 100)
    Ether = functools.partial(Ethernet, src="02:00:00:00:00:01", dst="02:00:00:00:00:02")  # no ARP lookups
    plain = [Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / tcp,
             Ether() / Dot1Q(vlan=7) / Dot1Q(vlan=8) / IP(options=b"\x01\x01\x01\x00") / tcp,
             Ether() / IPv6(src="2001:db8::1", dst="2001:db8::2") / tcp,
             Ether() / IP(len=0) / data,  # TSO on the capturing host: the wire's length is the truth
             Ether() / IPv6(plen=0) / data]  # fmt: skip
    other = [Ether() / IP() / UDP(dport=4789) / VXLAN(vni=5) / Ether() / IP() / tcp,
             Ether() / IPv6() / IPv6ExtHdrHopByHop() / tcp,
             Ether() / IP(flags="MF") / tcp,
             Ether() / IP() / UDP(dport=53),
             Ether(bytes(Ether() / IP() / tcp)[:40])]  # fmt: skip
    path = tmp_path / "mix.pcap"
    wrpcap(str(path), plain + other)
    taken = []
    original = decode._decode_plain

    def spy(batch):
        table, slow, count = original(batch)
        taken.append(slow.tolist())
        return table, slow, count

    monkeypatch.setattr(decode, "_decode_plain", spy)
    table, _ = read_all(path)
    assert taken == [[False] * len(plain) + [True] * len(other)]
    assert len(table) == len(plain) + 3  # the VXLAN's inner TCP, the IPv6 one and the cut header
    assert table["payload_len"][3:5].tolist() == [100, 100]
    with_pass, without = read_both(path, monkeypatch)
    assert with_pass == without
