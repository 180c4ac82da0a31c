"""Generated captures of many short connections, fast (numpy, no per-packet Python).

Demonstrates the traffic shape of a busy web or API server: each connection is a handshake, one
request, one small response and a close; some are refused, some end in RSTs, some are IPv6.  The
same writer also builds the reset-storm shapes of ``benchmarks/reset_storm.py`` (every connection
ending in a RST, bare RSTs on their own, one SYN repeated).  Records are Ethernet/IPv4 or IPv6/TCP
cut after the TCP header (snaplen 54 or 74), as ``tcpdump -s`` would write them; the IP lengths
still say how much payload each segment carried.

    python tests/shortconns.py OUT.pcap --connections 2000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CLIENT, SERVER = 0, 1

_ETH = [("eth_dst", "V6"), ("eth_src", "V6"), ("ethertype", ">u2")]
_TCP = [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off_flags", ">u2"),
        ("window", ">u2"), ("tcp_csum", ">u2"), ("urg", ">u2")]  # fmt: skip
_PCAP = [("ts_sec", "<u4"), ("ts_usec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4")]
RECORD4 = np.dtype(
    _PCAP + _ETH + [("ver_ihl", "u1"), ("tos", "u1"), ("total_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
                    ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"), ("src", ">u4"), ("dst", ">u4")] + _TCP
)  # fmt: skip
RECORD6 = np.dtype(
    _PCAP + _ETH + [("vtf", ">u4"), ("payload_len", ">u2"), ("next_header", "u1"), ("hop_limit", "u1"),
                    ("src_hi", ">u8"), ("src_lo", ">u8"), ("dst_hi", ">u8"), ("dst_lo", ">u8")] + _TCP
)  # fmt: skip
HEADERS4, HEADERS6 = RECORD4.itemsize - 16, RECORD6.itemsize - 16  # bytes kept per packet (snaplen)


def template(*segments: tuple[int, int, int, int, int]) -> dict[str, np.ndarray]:
    """(side, flags, seq, ack, payload) per segment, numbers relative to each side's ISN."""
    cols = np.array(segments, dtype=np.int64).reshape(-1, 5)
    return dict(zip(("side", "flags", "seq", "ack", "plen"), cols.T, strict=True))


REQ, RESP = 120, 900
TEMPLATES = {
    # One request, one response, an orderly close: 9 packets.
    "fin": template(
        (CLIENT, SYN, 0, 0, 0),
        (SERVER, SYN | ACK, 0, 1, 0),
        (CLIENT, ACK, 1, 1, 0),
        (CLIENT, PSH | ACK, 1, 1, REQ),
        (SERVER, PSH | ACK, 1, 1 + REQ, RESP),
        (CLIENT, ACK, 1 + REQ, 1 + RESP, 0),
        (CLIENT, FIN | ACK, 1 + REQ, 1 + RESP, 0),
        (SERVER, FIN | ACK, 1 + RESP, 2 + REQ, 0),
        (CLIENT, ACK, 2 + REQ, 2 + RESP, 0),
    ),
    # The client aborts after the response (SO_LINGER 0): 7 packets.
    "client_abort": template(
        (CLIENT, SYN, 0, 0, 0),
        (SERVER, SYN | ACK, 0, 1, 0),
        (CLIENT, ACK, 1, 1, 0),
        (CLIENT, PSH | ACK, 1, 1, REQ),
        (SERVER, PSH | ACK, 1, 1 + REQ, RESP),
        (CLIENT, ACK, 1 + REQ, 1 + RESP, 0),
        (CLIENT, RST | ACK, 1 + REQ, 1 + RESP, 0),
    ),
    # A close race: the server closes with the request's tail unread, the client's late ACK is echoed.
    "close_race": template(
        (CLIENT, SYN, 0, 0, 0),
        (SERVER, SYN | ACK, 0, 1, 0),
        (CLIENT, ACK, 1, 1, 0),
        (CLIENT, PSH | ACK, 1, 1, REQ),
        (SERVER, PSH | ACK, 1, 1 + REQ, RESP),
        (SERVER, RST | ACK, 1 + RESP, 1 + REQ, 0),
        (CLIENT, ACK, 1 + REQ, 1 + RESP, 0),
        (SERVER, RST, 1 + RESP, 0, 0),
    ),
    # A refused SYN: 2 packets.
    "refused": template((CLIENT, SYN, 0, 0, 0), (SERVER, RST | ACK, 0, 1, 0)),
}
"""Connection kinds of the short-connection shape."""

RESET_ENDING = template(
    (CLIENT, SYN, 0, 0, 0), (SERVER, SYN | ACK, 0, 1, 0), (CLIENT, ACK, 1, 1, 0),
    (CLIENT, PSH | ACK, 1, 1, REQ), (SERVER, RST | ACK, 1, 1 + REQ, 0),
)  # fmt: skip
"""A connection that ends in one RST, for the reset storm."""
BARE_RST = template((SERVER, RST, 5000, 0, 0))
"""A RST alone on its 4-tuple (a storm of resets to connections the capture never saw)."""


def short_mix(rng: np.random.Generator, count: int) -> np.ndarray:
    """Kinds for ``count`` connections: 5 % refused, 35 % ending in RSTs, the rest closed with FINs."""
    names = np.array(list(TEMPLATES))
    weights = {"fin": 0.60, "client_abort": 0.20, "close_race": 0.15, "refused": 0.05}
    return names[rng.choice(len(names), size=count, p=[weights[n] for n in names])]


def connections_table(kinds, templates: dict, rng: np.random.Generator, *, spacing_ns: int = 20_000,
                      step_ns: int = 150_000, first_conn: int = 0) -> dict[str, np.ndarray]:  # fmt: skip
    """Packets of the connections, one per entry of ``kinds``, interleaved in time order.

    Connection ``k`` starts at about ``k * spacing_ns`` (with jitter); its segments follow one another
    ``step_ns`` apart, so about ``step_ns / spacing_ns`` connections are open at once."""
    kinds = np.asarray(kinds)
    count = len(kinds)
    parts = {k: [] for k in ("side", "flags", "seq", "ack", "plen", "conn", "ts")}
    start = (np.arange(count) * spacing_ns + rng.integers(0, spacing_ns, count)).astype(np.int64)
    for name, tpl in templates.items():
        conns = np.flatnonzero(kinds == name)
        n = len(tpl["side"])
        for key in ("side", "flags", "seq", "ack", "plen"):
            parts[key].append(np.tile(tpl[key], len(conns)))
        parts["conn"].append(np.repeat(conns + first_conn, n))
        parts["ts"].append(np.repeat(start[conns], n) + np.tile(np.arange(n) * step_ns, len(conns)))
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    order = np.argsort(cols["ts"], kind="stable")
    return {k: v[order] for k, v in cols.items()}


def write_pcap(path: str, cols: dict[str, np.ndarray], *, ipv6_every: int = 10, t0_ns: int = 1_700_000_000 * 10**9,
               mode: str = "wb") -> int:  # fmt: skip
    """Write the packets of ``cols`` (from :func:`connections_table`) as a classic pcap; returns the count.

    Connection ``conn`` uses client 10.x.y.z (or fd00::x) port ``1024 + conn % 60000`` and server
    10.100.0.1:80 (or fd00::1); every ``ipv6_every``-th connection is IPv6 (0: none)."""
    n = len(cols["conn"])
    conn, server = cols["conn"], cols["side"] == SERVER
    v6 = (conn % ipv6_every == ipv6_every - 1) if ipv6_every else np.zeros(n, dtype=bool)
    client_port = 1024 + conn % 60000
    isn_c = (conn * 2_654_435_761 + 12345) & 0xFFFFFFFF
    isn_s = (conn * 40_503 + 0x9E3779B9) & 0xFFFFFFFF
    own_isn, peer_isn = np.where(server, isn_s, isn_c), np.where(server, isn_c, isn_s)
    seq = (own_isn + cols["seq"]) & 0xFFFFFFFF
    ack = np.where(cols["flags"] & ACK, (peer_isn + cols["ack"]) & 0xFFFFFFFF, 0)
    ts = t0_ns + cols["ts"]
    client_lo = 0x0A000000 | ((1 + (conn // 60000) % 250) << 8) | 1  # 10.0.x.1
    out_len = np.where(v6, RECORD6.itemsize, RECORD4.itemsize)
    offsets = np.concatenate([[0], np.cumsum(out_len)[:-1]])
    buf = np.zeros(int(out_len.sum()), dtype=np.uint8)
    for is6, dtype in ((False, RECORD4), (True, RECORD6)):
        rows = np.flatnonzero(v6 == is6)
        if not len(rows):
            continue
        rec = np.zeros(len(rows), dtype)
        rec["ts_sec"] = ts[rows] // 10**9
        rec["ts_usec"] = ts[rows] % 10**9 // 1000
        rec["caplen"] = dtype.itemsize - 16
        plen = cols["plen"][rows]
        rec["wirelen"] = dtype.itemsize - 16 + plen
        srv = server[rows]
        if is6:
            rec["ethertype"] = 0x86DD
            rec["vtf"] = 6 << 28
            rec["payload_len"] = 20 + plen
            rec["next_header"] = 6
            rec["hop_limit"] = 64
            hi = 0xFD00 << 48
            c_lo, s_lo = client_lo[rows].astype(np.uint64), np.uint64(1)
            rec["src_hi"], rec["dst_hi"] = hi, hi
            rec["src_lo"] = np.where(srv, s_lo, c_lo)
            rec["dst_lo"] = np.where(srv, c_lo, s_lo)
        else:
            rec["ethertype"] = 0x0800
            rec["ver_ihl"] = 0x45
            rec["total_len"] = 40 + plen
            rec["ip_id"] = rows & 0xFFFF
            rec["frag"] = 0x4000
            rec["ttl"] = 64
            rec["proto"] = 6
            rec["src"] = np.where(srv, 0x0A640001, client_lo[rows])
            rec["dst"] = np.where(srv, client_lo[rows], 0x0A640001)
        rec["sport"] = np.where(srv, 80, client_port[rows])
        rec["dport"] = np.where(srv, client_port[rows], 80)
        rec["seq"], rec["ack"] = seq[rows], ack[rows]
        rec["off_flags"] = (5 << 12) | cols["flags"][rows]
        rec["window"] = 502
        raw = rec.view(np.uint8).reshape(len(rows), dtype.itemsize)
        buf[offsets[rows][:, None] + np.arange(dtype.itemsize)] = raw
    with open(path, mode) as out:
        if mode == "wb":
            out.write(np.array([0xA1B2C3D4], "<u4").tobytes())
            out.write(np.array([2, 4], "<u2").tobytes())
            out.write(np.array([0, 0, RECORD6.itemsize - 16, 1], "<u4").tobytes())
        out.write(buf.tobytes())
    return n


def generate(path: str, connections: int, *, seed: int = 11, batch: int = 50_000) -> int:
    """The short-connection shape: ``connections`` connections (about 7 packets each); returns packets."""
    rng = np.random.default_rng(seed)
    written = 0
    for first in range(0, connections, batch):
        count = min(batch, connections - first)
        cols = connections_table(short_mix(rng, count), TEMPLATES, rng, first_conn=first)
        cols["ts"] += first * 20_000
        written += write_pcap(path, cols, mode="wb" if first == 0 else "ab")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args(argv)
    n = generate(args.output, args.connections)
    print(f"wrote {n:,} packets to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
