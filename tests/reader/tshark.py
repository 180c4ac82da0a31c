"""tshark as the oracle for per-packet fields (used by the reader tests; skipped where tshark is missing)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from rstscope.packets import format_addr

TSHARK = shutil.which("tshark")

FIELDS = [
    "frame.number",
    "frame.time_epoch",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.seq_raw",
    "tcp.ack_raw",
    "tcp.flags",
    "tcp.len",
    "tcp.window_size_value",
    "tcp.hdr_len",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "tcp.options.mss_val",
    "tcp.options.wscale.shift",
    "tcp.options.timestamp.tsval",
    "tcp.options.timestamp.tsecr",
]


COMPARABLE = (
    "tcp and not icmp and not icmpv6"
    # rstscope counts first fragments with MF set as fragments; tshark dissects their TCP header.
    " and not ip.flags.mf == 1 and not ip.frag_offset > 0 and not ipv6.fragment"
    # Tunnelled frames: the fields below are the outermost occurrences, rstscope's rows the innermost
    # (tests/reader/test_tunnels.py compares those with occurrence=l); sFlow samples are not followed.
    " and not count(ip) > 1 and not count(ipv6) > 1 and not (ip and ipv6)"
)
"""Display filter for the frames where rstscope and tshark should agree."""


def tshark_rows(path: Path, display_filter: str = COMPARABLE) -> dict[int, dict]:
    """frame number -> field dict for every frame tshark decodes as TCP (outermost values)."""
    cmd = [TSHARK, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields", "-E", "occurrence=f"]
    for name in FIELDS:
        cmd += ["-e", name]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout
    rows = {}
    for line in out.splitlines():
        values = dict(zip(FIELDS, line.split("\t"), strict=True))
        rows[int(values["frame.number"])] = values
    return rows


def compare(table: np.ndarray, oracle: dict[int, dict], check_time: bool = True) -> list[str]:
    """Differences between our rows and tshark's, as readable lines (empty when they agree).

    Rows with a decode error are left out: tshark shows what it could read of such
    frames, or nothing, as its dissectors see fit.
    """
    problems = []
    ours = {int(r["frame"]): r for r in table if r["decode_error"] == 0}
    with_errors = {int(r["frame"]) for r in table if r["decode_error"] != 0}
    only_ours = sorted(set(ours) - set(oracle))[:10]
    only_tshark = sorted(set(oracle) - set(ours) - with_errors)[:10]
    if only_ours or only_tshark:
        problems.append(f"frames only in ours {only_ours}, only in tshark {only_tshark}")
    for frame in sorted(set(ours) & set(oracle)):
        row, want = ours[frame], oracle[frame]
        got = {
            "tcp.srcport": str(row["src_port"]),
            "tcp.dstport": str(row["dst_port"]),
            "tcp.seq_raw": str(row["seq"]),
            "tcp.ack_raw": str(row["ack"]),
            "tcp.flags": row["flags"],
            "tcp.len": str(row["payload_len"]),
            "tcp.window_size_value": str(row["window"]),
            "tcp.hdr_len": str(row["tcp_header_len"]),
            "src": format_addr(row["src_hi"], row["src_lo"]),
            "dst": format_addr(row["dst_hi"], row["dst_lo"]),
            "tcp.options.mss_val": str(row["mss"]) if row["mss"] else "",
            "tcp.options.wscale.shift": str(row["wscale"]) if row["wscale"] >= 0 else "",
            "tcp.options.timestamp.tsval": str(row["tsval"]) if row["has_ts"] else "",
            "tcp.options.timestamp.tsecr": str(row["tsecr"]) if row["has_ts"] else "",
        }
        expected = dict(want)
        expected["tcp.flags"] = int(want["tcp.flags"], 16) & 0x1FF if want["tcp.flags"] else 0
        expected["src"] = want["ip.src"] or want["ipv6.src"]
        expected["dst"] = want["ip.dst"] or want["ipv6.dst"]
        for key, value in got.items():
            if value != expected[key]:
                problems.append(f"frame {frame}: {key} ours {value!r} tshark {expected[key]!r}")
        if not want["frame.time_epoch"]:  # pcapng simple packet blocks have no timestamp
            continue
        ts_ns = int(row["ts_ns"])
        seconds, _, frac = want["frame.time_epoch"].partition(".")
        want_ns = int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9])
        if check_time and ts_ns != want_ns:
            problems.append(f"frame {frame}: ts_ns ours {ts_ns} tshark {want_ns}")
    return problems
