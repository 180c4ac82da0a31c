"""The reader on tcpdump's test corpus: never a crash, never a hang, and the same TCP view as tcpdump.

Corpus: ``<repo>/../shared/corpus/tcpdump`` (see its README.md): 830 captures, many malformed
on purpose (fuzzer finds), plus tcpdump's expected output for the TCP-bearing ones.

1. Every capture must open and iterate within ``TIME_LIMIT_S``, or raise InputError; nothing else.
2. Where a tcpdump test's expected output prints TCP segments (``IP a.p > b.q: Flags [S.], seq 1,
   ack 2, win 3, length 0``) over a link type rstscope decodes, our rows must agree on flags,
   payload length, seq and ack.  tcpdump prints relative sequence numbers unless ``-S``; the
   comparison replays its rule (print-tcp.c: per connection, the first ACK-bearing segment or any
   SYN records the bases and prints absolute numbers; later ones print the difference).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from rstscope.packets import ACK, AE, CWR, ECE, FIN, PSH, RST, SYN, URG, format_addr
from rstscope.reader import open_capture, read_all
from rstscope.status import InputError

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus" / "tcpdump"
TIME_LIMIT_S = 5.0
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"tcpdump corpus not found at {CORPUS}")


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return ["(corpus absent)"]
    return sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng"))


# ---------------------------------------------------------------- 1. no crash, no hang


@needs_corpus
def test_corpus_is_all_there():
    assert len(corpus_files()) == 830


@needs_corpus
@pytest.mark.parametrize("name", corpus_files())
def test_every_capture_reads_or_is_refused(name):
    start = time.monotonic()
    try:
        with open_capture(CORPUS / name, chunk_packets=1000) as capture:
            rows = sum(len(table) for table in capture.chunks())
        assert rows == capture.stats.tcp_packets
        assert all("\n" not in w for w in capture.stats.warnings)
    except InputError as exc:
        assert "\n" not in str(exc)
    assert time.monotonic() - start < TIME_LIMIT_S


# ---------------------------------------------------------------- 2. agreement with tcpdump's output

PLAIN_OPTIONS = {"-v", "-vv", "-vvv", "-vvvv", "-e", "-x", "-xx", "-X", "-XX", "-A", "-AA", "-n", "-vb"}
"""Test options that change neither which packets are printed nor how TCP numbers are shown.
Left out: -q (no flags), -S-less filters (``--``), --skip/-c, -T (reinterpretation), --print-sampling."""

RECORD = re.compile(r"^\s*(\d+)  ", re.M)
TCP_LINE = re.compile(
    r"(?P<src>[0-9a-fA-F.:]+)\.(?P<sport>\d+) > (?P<dst>[0-9a-fA-F.:]+)\.(?P<dport>\d+): "
    r"Flags \[(?P<flags>[^\]]*)\](?:, cksum [^,]*(?:,[^,]*\))?)?"
    r"(?:, seq (?P<seq>\d+)(?::(?P<seq_end>\d+))?)?(?:, ack (?P<ack>\d+))?, win \d+.*?, length (?P<length>\d+)"
)
FLAG_LETTERS = {"F": FIN, "S": SYN, "R": RST, "P": PSH, ".": ACK, "U": URG, "E": ECE, "W": CWR, "e": AE}

# Captures whose tcpdump TCP lines rstscope cannot see, and why (checked: these frames get no row).
NOT_COMPARABLE = {
    # TCP inside tunnels rstscope does not follow (Geneve and VXLAN are followed: compared above)
    "bcm-li.pcap": "Broadcom lawful-intercept encapsulation in UDP",
}

FIRST_FRAGMENTS = {
    # IPv4 first fragments with MF set: tcpdump prints their TCP header, rstscope counts them in
    # stats.ip_fragments (by design: a segment split over fragments is not a segment we can read).
    ("bgp-bgp_capabilities_print-oobr-1.pcap", 1),
    ("bgp-bgp_capabilities_print-oobr-2.pcap", 1),
    ("bgp_pmsi_tunnel-oobr.pcap", 1),
    ("rpki-rtr-oobr.pcap", 1),
}


@dataclass
class Printed:
    """One TCP segment as tcpdump printed it."""

    frame: int
    src: str
    dst: str
    sport: int
    dport: int
    flags: int
    seq: int | None
    ack: int | None
    length: int


def printed_segments(out_text: str) -> dict[int, Printed]:
    """Frame number -> the first TCP segment printed for that frame."""
    found = {}
    starts = list(RECORD.finditer(out_text))
    for i, start in enumerate(starts):
        body = out_text[start.end() : starts[i + 1].start() if i + 1 < len(starts) else len(out_text)]
        match = TCP_LINE.search(body)
        if not match or "[|tcp]" in body[: match.start()]:
            continue
        flags_text = match["flags"]
        flags = 0 if flags_text == "none" else sum(FLAG_LETTERS.get(c, 0) for c in set(flags_text))
        frame = int(start[1])
        found[frame] = Printed(
            frame=frame,
            src=match["src"],
            dst=match["dst"],
            sport=int(match["sport"]),
            dport=int(match["dport"]),
            flags=flags,
            seq=int(match["seq"]) if match["seq"] else None,
            ack=int(match["ack"]) if match["ack"] else None,
            length=int(match["length"]),
        )
    return found


def relative_numbers(table) -> dict[int, tuple[int, int]]:
    """(seq, ack) as tcpdump prints them without -S, per frame (print-tcp.c's rule, replayed)."""
    bases: dict[tuple, tuple[int, int]] = {}
    shown = {}
    for row in table:
        seq, ack, flags = int(row["seq"]), int(row["ack"]), int(row["flags"])
        if not flags & ACK:
            shown[int(row["frame"])] = (seq, ack)
            continue
        src = (int(row["src_hi"]), int(row["src_lo"]))
        dst = (int(row["dst_hi"]), int(row["dst_lo"]))
        sport, dport = int(row["src_port"]), int(row["dst_port"])
        rev = sport > dport or (sport == dport and src > dst)
        key = (dst, src, dport, sport) if rev else (src, dst, sport, dport)
        if key not in bases or flags & SYN:
            bases[key] = (ack - 1, seq) if rev else (seq, ack - 1)  # (th->seq, th->ack)
            shown[int(row["frame"])] = (seq, ack)
        else:
            th_seq, th_ack = bases[key]
            if rev:
                shown[int(row["frame"])] = ((seq - th_ack) % 2**32, (ack - th_seq) % 2**32)
            else:
                shown[int(row["frame"])] = ((seq - th_seq) % 2**32, (ack - th_ack) % 2**32)
    return shown


def tcpdump_tests(*, excluded: bool = False) -> list[dict]:
    """tests.jsonl entries whose expected output can be compared (or, with ``excluded``, the excluded ones)."""
    if not CORPUS.is_dir():
        return []
    chosen = []
    for line in (CORPUS / "tests.jsonl").read_text().splitlines():
        test = json.loads(line)
        if not (test.get("capture_tcp_bearing") and test.get("output_included")) or test.get("condition"):
            continue
        if not set(test["args"].split()) <= PLAIN_OPTIONS or not (CORPUS / test["output"]).exists():
            continue
        if (test["input"] in NOT_COMPARABLE) == excluded:
            chosen.append(test)
    return chosen


def comparable_tests() -> list[dict]:
    return tcpdump_tests()


@needs_corpus
def test_tcp_segments_agree_with_tcpdump():
    compared = Counter()
    problems = []
    captures = 0
    for test in comparable_tests():
        try:
            table, _ = read_all(CORPUS / test["input"])
        except InputError:
            continue  # a link type rstscope does not decode
        printed = printed_segments((CORPUS / test["output"]).read_text(errors="replace"))
        if not printed:
            continue
        captures += 1
        ours = {int(r["frame"]): r for r in table if r["decode_error"] == 0}
        with_errors = {int(r["frame"]) for r in table if r["decode_error"] != 0}
        shown = relative_numbers(table[table["decode_error"] == 0])
        for frame, seg in printed.items():
            row = ours.get(frame)
            where = f"{test['name']} ({test['input']}) frame {frame}"
            if frame in with_errors:
                compared["decode_error rows"] += 1  # tcpdump prints what it can of a cut header
                continue
            if (test["input"], frame) in FIRST_FRAGMENTS:
                compared["first fragments"] += 1
                continue
            if row is None:
                problems.append(f"{where}: tcpdump prints TCP, rstscope has no row")
                continue
            endpoints = (format_addr(row["src_hi"], row["src_lo"]), int(row["src_port"]))
            if endpoints != (seg.src, seg.sport):
                problems.append(f"{where}: source {endpoints} vs tcpdump {(seg.src, seg.sport)}")
                continue
            if int(row["flags"]) & 0x1FF != seg.flags:
                problems.append(f"{where}: flags {int(row['flags']):#x} vs tcpdump {seg.flags:#x}")
            if int(row["payload_len"]) != seg.length:
                problems.append(f"{where}: length {int(row['payload_len'])} vs tcpdump {seg.length}")
            seq, ack = shown[frame]
            if seg.seq is not None and seq != seg.seq:
                problems.append(f"{where}: seq {seq} vs tcpdump {seg.seq}")
            if seg.ack is not None and ack != seg.ack:
                problems.append(f"{where}: ack {ack} vs tcpdump {seg.ack}")
            compared["segments"] += 1
            compared["seq"] += seg.seq is not None
            compared["ack"] += seg.ack is not None
    assert problems == []
    # Real minimums, so that the test cannot pass by comparing nothing.
    assert captures >= 100, captures
    assert compared["segments"] >= 2000, compared
    assert compared["seq"] >= 1400 and compared["ack"] >= 1900, compared


@needs_corpus
def test_excluded_captures_really_hide_their_tcp():
    """Each NOT_COMPARABLE entry is still needed: tcpdump prints TCP there and rstscope has no row."""
    seen = set()
    for test in tcpdump_tests(excluded=True):
        printed = printed_segments((CORPUS / test["output"]).read_text(errors="replace"))
        table, _stats = read_all(CORPUS / test["input"])
        assert not set(printed) & set(table["frame"].tolist()), test["name"]
        if printed:
            seen.add(test["input"])
    assert seen == set(NOT_COMPARABLE)


# ---------------------------------------------------------------- 3. the whole pipeline on the corpus


def analyze_available() -> bool:
    try:
        import rstscope.commands.analyze  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


@needs_corpus
@pytest.mark.skipif(not analyze_available(), reason="rstscope/commands/analyze.py is not there yet")
def test_analyze_json_on_every_capture():
    """`rstscope analyze F --json`: exit 0 or 2, stderr lines are one-line rstscope messages, no traceback."""
    import io

    from rstscope.cli import Environment, run

    exits = Counter()
    problems = []
    for name in corpus_files():
        out, err = io.StringIO(), io.StringIO()
        env = Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False)
        start = time.monotonic()
        status = run(["analyze", str(CORPUS / name), "--json"], env)
        elapsed = time.monotonic() - start
        exits[status] += 1
        lines = err.getvalue().splitlines()
        if status not in (0, 2):
            problems.append(f"{name}: exit {status}: {lines[-1:]}")
        elif "Traceback" in err.getvalue() or not all(line.startswith("rstscope: ") for line in lines):
            problems.append(f"{name}: stderr {lines[:3]}")
        elif status == 2 and (len(lines) != 1 or not lines[0].startswith("rstscope: error: ")):
            problems.append(f"{name}: exit 2 with stderr {lines}")
        elif status == 0 and not out.getvalue().lstrip().startswith(("{", "[")):
            problems.append(f"{name}: exit 0 without JSON on stdout")
        if elapsed > TIME_LIMIT_S:
            problems.append(f"{name}: took {elapsed:.1f} s")
    assert problems == []
    assert exits[0] >= 500 and exits[2] >= 200, exits  # most read; the unsupported link types are refused
