"""Per-packet fields checked against tshark, on the format captures and on Zeek's test traces."""

from __future__ import annotations

from pathlib import Path

import pytest
from tshark import TSHARK, compare, tshark_rows

from rstscope.reader import read_all

REPO = Path(__file__).resolve().parents[2]
FORMATS = REPO / "tests" / "captures" / "formats"
ZEEK = REPO / ".." / "shared" / "corpus" / "zeek" / "traces"

needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")

# Format captures tshark cannot read (damaged on purpose, or not captures at all).
NOT_FOR_TSHARK = {
    "bad-blocklen.pcapng",
    "bad-caplen.pcap",
    "cut-gzip.pcap.gz",
    "empty.pcap",
    "garbage.bin",
    "huge-caplen.pcap",
    "link-user0.pcap",
    "short-header.pcap",
    "truncated.pcap",
}
FORMAT_FILES = sorted(
    p.name for p in FORMATS.iterdir() if p.suffix != ".py" and p.is_file() and p.name not in NOT_FOR_TSHARK
)

# Zeek traces where tshark and rstscope are known to differ, and why.
ZEEK_KNOWN = {
    # Cisco FabricPath: tshark takes the frame's last 4 bytes for an FCS, leaving a short TCP header
    # (tcp.len empty); rstscope uses the IP lengths and finds a complete 20-byte header, as Zeek does.
    "cisco-fabric-path.pcap": {"tcp.len"},
}


@needs_tshark
@pytest.mark.parametrize("name", FORMAT_FILES)
def test_format_files_match_tshark(name):
    table, _ = read_all(FORMATS / name)
    oracle = tshark_rows(FORMATS / name)
    assert oracle, "tshark saw no comparable TCP frame: the comparison would be vacuous"
    assert compare(table, oracle) == []


def zeek_traces() -> list[str]:
    if not ZEEK.is_dir():
        return []
    return sorted(str(p.relative_to(ZEEK)) for p in ZEEK.rglob("*") if p.suffix in (".pcap", ".pcapng"))


@needs_tshark
@pytest.mark.skipif(not ZEEK.is_dir(), reason=f"Zeek corpus not found at {ZEEK}")
@pytest.mark.parametrize("trace", zeek_traces() or ["(corpus absent)"])
def test_zeek_traces_match_tshark(trace):
    table, stats = read_all(ZEEK / trace)
    oracle = tshark_rows(ZEEK / trace)
    assert len(oracle) > 0
    problems = compare(table, oracle)
    allowed = ZEEK_KNOWN.get(trace, set())
    unexplained = [p for p in problems if not any(f": {field} ours" in p for field in allowed)]
    assert unexplained == []
    assert stats.warnings == []
    assert stats.decode_errors == {}


@pytest.mark.skipif(not ZEEK.is_dir(), reason=f"Zeek corpus not found at {ZEEK}")
def test_zeek_corpus_is_all_there():
    assert len(zeek_traces()) == 37
