"""Generate a large, realistic classic pcap for the benchmark, fast (numpy, no per-packet Python).

Demonstrates the shape of traffic rstscope is built for: many concurrent HTTP-like
connections (handshake, a request, a response of a few hundred segments with the
client ACKing every second segment, an orderly close), of which 1 in 50 ends in a
close race (server RST|ACK with data in flight, then echo RSTs to the client's
late ACKs).  Records are Ethernet/IPv4/TCP with the Linux timestamp option and are
cut at a snaplen of 66 bytes (headers only), as ``tcpdump -s 66`` would write them:
the IP lengths still say how much payload each segment carried.

    python benchmarks/make_capture.py OUT.pcap --packets 1000000
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

SNAPLEN = 66
MSS = 1448
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

RECORD = np.dtype(
    [
        # pcap record header (little-endian file)
        ("ts_sec", "<u4"), ("ts_usec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4"),
        # Ethernet
        ("eth_dst", "V6"), ("eth_src", "V6"), ("ethertype", ">u2"),
        # IPv4
        ("ver_ihl", "u1"), ("tos", "u1"), ("total_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
        ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
        # TCP with NOP, NOP, timestamps (12 bytes of options)
        ("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off_flags", ">u2"),
        ("window", ">u2"), ("tcp_csum", ">u2"), ("urg", ">u2"),
        ("opt_nop", ">u2"), ("opt_ts_kind", "u1"), ("opt_ts_len", "u1"), ("tsval", ">u4"), ("tsecr", ">u4"),
    ]
)  # fmt: skip
assert RECORD.itemsize == 16 + SNAPLEN


def connection_template(segments: int, close_race: bool) -> dict[str, np.ndarray]:
    """One connection's packets as columns: side (0 client, 1 server), flags, rel seq, rel ack, payload."""
    side, flags, seq, ack, plen = [], [], [], [], []

    def add(s, f, sq, ak, n=0):
        side.append(s), flags.append(f), seq.append(sq), ack.append(ak), plen.append(n)

    add(0, SYN, 0, 0)
    add(1, SYN | ACK, 0, 1)
    add(0, ACK, 1, 1)
    add(0, PSH | ACK, 1, 1, 200)
    add(1, ACK, 1, 201)
    srv = 1
    acked = 1
    for k in range(segments):
        add(1, ACK | (PSH if k == segments - 1 else 0), srv, 201, MSS)
        srv += MSS
        if k % 2 == 1 and not (close_race and k >= segments - 4):
            add(0, ACK, 201, srv)
            acked = srv
    if close_race:
        add(1, RST | ACK, srv, 201)  # aborted with the last segments unacknowledged
        for extra in (acked + MSS, srv):
            add(0, ACK, 201, extra)
            add(1, RST, extra, 0)  # echo
    else:
        add(1, FIN | ACK, srv, 201)
        add(0, FIN | ACK, 201, srv + 1)
        add(1, ACK, srv + 1, 202)
    return {
        "side": np.array(side, np.int64), "flags": np.array(flags, np.int64), "seq": np.array(seq, np.int64),
        "ack": np.array(ack, np.int64), "plen": np.array(plen, np.int64),
    }  # fmt: skip


def generate(path: str, packets: int, *, concurrency: int = 200, seed: int = 7) -> int:
    """Write about ``packets`` packets to ``path``; returns the exact count written."""
    rng = np.random.default_rng(seed)
    templates = [connection_template(300, False), connection_template(300, True)]
    written = 0
    conn_no = 0
    t = 1_700_000_000.0
    with open(path, "wb") as out:
        out.write(np.array([0xA1B2C3D4], "<u4").tobytes())
        out.write(np.array([2, 4], "<u2").tobytes())
        out.write(np.array([0, 0, SNAPLEN, 1], "<u4").tobytes())
        while written < packets:
            # A batch of concurrent connections, interleaved packet by packet.
            cols = {k: [] for k in ("side", "flags", "seq", "ack", "plen", "conn", "order")}
            for j in range(concurrency):
                tpl = templates[1 if (conn_no + j) % 50 == 49 else 0]
                n = len(tpl["side"])
                for k in ("side", "flags", "seq", "ack", "plen"):
                    cols[k].append(tpl[k])
                cols["conn"].append(np.full(n, conn_no + j))
                cols["order"].append(np.arange(n) * concurrency + rng.integers(0, concurrency, n) * 0 + j)
            c = {k: np.concatenate(v) for k, v in cols.items()}
            order = np.argsort(c["order"], kind="stable")
            c = {k: v[order] for k, v in c.items()}
            n = min(len(order), packets - written)
            c = {k: v[:n] for k, v in c.items()}
            rec = np.zeros(n, RECORD)
            ts = t + np.arange(n) * 2e-6
            t = float(ts[-1]) + 2e-6
            rec["ts_sec"] = ts.astype(np.int64)
            rec["ts_usec"] = ((ts % 1) * 1e6).astype(np.int64)
            rec["caplen"] = SNAPLEN
            rec["wirelen"] = 14 + 20 + 32 + c["plen"]
            rec["ethertype"] = 0x0800
            rec["ver_ihl"] = 0x45
            rec["total_len"] = 20 + 32 + c["plen"]
            rec["ip_id"] = np.arange(n) & 0xFFFF
            rec["frag"] = 0x4000
            rec["ttl"] = 64
            rec["proto"] = 6
            conn = c["conn"]
            client_ip = 0x0A000000 | (1 + (conn // 60000) % 250) << 8 | 1
            server_ip = 0x0A640001
            client_port = 1024 + conn % 60000
            server = c["side"] == 1
            rec["src"] = np.where(server, server_ip, client_ip)
            rec["dst"] = np.where(server, client_ip, server_ip)
            rec["sport"] = np.where(server, 80, client_port)
            rec["dport"] = np.where(server, client_port, 80)
            isn_c = (conn * 2_654_435_761) & 0xFFFFFFFF
            isn_s = (conn * 40_503 + 0x9E3779B9) & 0xFFFFFFFF
            own_isn = np.where(server, isn_s, isn_c)
            peer_isn = np.where(server, isn_c, isn_s)
            rec["seq"] = (own_isn + c["seq"]) & 0xFFFFFFFF
            has_ack = (c["flags"] & ACK) != 0
            rec["ack"] = np.where(has_ack, (peer_isn + c["ack"]) & 0xFFFFFFFF, 0)
            rec["off_flags"] = (8 << 12) | c["flags"]
            rec["window"] = 502
            rec["opt_nop"] = 0x0101
            rec["opt_ts_kind"] = 8
            rec["opt_ts_len"] = 10
            rec["tsval"] = (np.arange(n) + written) & 0xFFFFFFFF
            rec["tsecr"] = rec["tsval"] - 1
            out.write(rec.tobytes())
            written += n
            conn_no += concurrency
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--packets", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    n = generate(args.output, args.packets)
    print(f"wrote {n:,} packets to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
