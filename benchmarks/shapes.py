"""Benchmark captures in four traffic shapes, generated fast (numpy writes the pcap records) and seeded.

Demonstrates the traffic shapes rstscope must keep up with (issue 9):

* ``short``: a busy web or API server.  Connections of at most 12 packets (handshake, one request,
  a response of one or two segments, an orderly close): about 100k connections per 1M packets.
  8 % end in a RST (4 % client aborts, 2 % server resets, 2 % refused SYNs); 10 % are IPv6.
* ``long``: today's shape (``make_capture.py``): 200 concurrent connections of about 450 packets.
* ``flood``: a listener under a SYN flood.  Half-open handshakes whose SYN-ACK is retransmitted
  (1 s and 3 s later), SYNs nobody answers (retransmitted by the client), handshakes reset by the
  listener (``tcp_abort_on_overflow=1``: a bare RST answers the client's ACK), handshakes whose ACK
  the full accept queue dropped (the SYN-ACK comes again after the client's ACK), a few normal ones.
* ``many``: the short mix with one million connections in one file (about 10M packets): memory.
* ``resets`` (not in the default run): every connection ends in a client RST (issue 10: memory per
  reset connection).

Each connection is a *template* (one row per packet: side, flags, sequence and ack relative to the
sender's and the receiver's ISN, payload, time offset), instantiated for a batch of connections at
once with random ISNs and RTTs; batches are merged in time order so connections overlap as on a real
server.  4-tuples are never reused.  Records are Ethernet/IPv4 or IPv6/TCP with the timestamp option,
cut after the TCP header as ``tcpdump -s 66`` (IPv4) would cut them: the IP lengths still say how much
payload each segment carried.

    python benchmarks/shapes.py short OUT.pcap --packets 1000000
    python benchmarks/shapes.py many OUT.pcap --connections 1000000

``generate`` returns a :class:`Manifest`: what was written (connections per template, IPv6, packets),
which tests/test_benchmark_shapes.py checks against rstscope's own analysis.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
MSS = 1448
SERVER_PORT = 443
CLIENT_PORTS = 50_000
"""Client ports per client address (10000-59999): a new address every 50,000 connections, so that a
4-tuple is never reused."""
BATCH = 20_000
"""Connections instantiated at once (memory stays small whatever the file size)."""

PCAP_HEADER = (
    np.array([0xA1B2C3D4], "<u4").tobytes()
    + np.array([2, 4], "<u2").tobytes()
    + np.array([0, 0, 65535, 1], "<u4").tobytes()  # thiszone, sigfigs, snaplen, LINKTYPE_ETHERNET
)
_RECORD_HEAD = [("ts_sec", "<u4"), ("ts_usec", "<u4"), ("caplen", "<u4"), ("wirelen", "<u4"),
                ("eth_dst", "V6"), ("eth_src", "V6"), ("ethertype", ">u2")]  # fmt: skip
_TCP = [("sport", ">u2"), ("dport", ">u2"), ("seq", ">u4"), ("ack", ">u4"), ("off_flags", ">u2"),
        ("window", ">u2"), ("tcp_csum", ">u2"), ("urg", ">u2"),
        # NOP, NOP, timestamps: 12 bytes of options, as Linux sends on every segment
        ("opt_nop", ">u2"), ("opt_ts_kind", "u1"), ("opt_ts_len", "u1"),
        ("tsval", ">u4"), ("tsecr", ">u4")]  # fmt: skip
RECORD4 = np.dtype(
    [*_RECORD_HEAD,
     ("ver_ihl", "u1"), ("tos", "u1"), ("total_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
     ("ttl", "u1"), ("proto", "u1"), ("ip_csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
     *_TCP]
)  # fmt: skip
RECORD6 = np.dtype(
    [*_RECORD_HEAD,
     ("ver_tc_flow", ">u4"), ("payload_len", ">u2"), ("next_header", "u1"), ("hop_limit", "u1"),
     ("src_hi", ">u8"), ("src_lo", ">u8"), ("dst_hi", ">u8"), ("dst_lo", ">u8"),
     *_TCP]
)  # fmt: skip
TCP_HEADER = 32
assert RECORD4.itemsize == 16 + 14 + 20 + TCP_HEADER and RECORD6.itemsize == 16 + 14 + 40 + TCP_HEADER


@dataclass(frozen=True)
class Template:
    """One kind of connection: a row per packet.  ``t_rtt`` is the time offset in round trips of that
    connection, ``t_abs`` a further offset in seconds (retransmission timers).  ``seq``/``ack`` are
    relative to the sender's / the receiver's ISN; ``raw_seq`` rows carry ``seq`` as is (a refusing
    RST|ACK has sequence number 0)."""

    name: str
    rows: tuple[tuple, ...]
    """(side 0 client / 1 server, flags, seq, ack, payload, t_rtt, t_abs[, raw_seq])"""
    ends_in_rst: bool = False
    refused: bool = False

    def column(self, k: int, default=0) -> np.ndarray:
        return np.array([r[k] if len(r) > k else default for r in self.rows], dtype=np.float64 if k >= 5 else np.int64)


REQ, RESP = 300, 1200
_HANDSHAKE = (
    (0, SYN, 0, 0, 0, 0.0, 0.0),
    (1, SYN | ACK, 0, 1, 0, 0.5, 0.0),
    (0, ACK, 1, 1, 0, 1.0, 0.0),
)
_REQUEST = ((0, PSH | ACK, 1, 1, REQ, 1.01, 0.0), (1, ACK, 1, 1 + REQ, 0, 1.5, 0.0))

NORMAL = Template("normal", (*_HANDSHAKE, *_REQUEST,
    (1, PSH | ACK, 1, 1 + REQ, RESP, 1.6, 0.0),
    (0, ACK, 1 + REQ, 1 + RESP, 0, 2.1, 0.0),
    (0, FIN | ACK, 1 + REQ, 1 + RESP, 0, 2.11, 0.0),
    (1, FIN | ACK, 1 + RESP, 2 + REQ, 0, 2.6, 0.0),
    (0, ACK, 2 + REQ, 2 + RESP, 0, 3.1, 0.0),
))  # fmt: skip
NORMAL_TWO_SEGMENTS = Template("normal-2seg", (*_HANDSHAKE, *_REQUEST,
    (1, ACK, 1, 1 + REQ, MSS, 1.6, 0.0),
    (1, PSH | ACK, 1 + MSS, 1 + REQ, 800, 1.61, 0.0),
    (0, ACK, 1 + REQ, 1 + MSS + 800, 0, 2.1, 0.0),
    (0, FIN | ACK, 1 + REQ, 1 + MSS + 800, 0, 2.11, 0.0),
    (1, FIN | ACK, 1 + MSS + 800, 2 + REQ, 0, 2.6, 0.0),
    (0, ACK, 2 + REQ, 2 + MSS + 800, 0, 3.1, 0.0),
))  # fmt: skip
CLIENT_ABORT = Template("client-abort", (*_HANDSHAKE, *_REQUEST,
    (1, PSH | ACK, 1, 1 + REQ, RESP, 1.6, 0.0),
    (0, RST | ACK, 1 + REQ, 1 + RESP, 0, 2.1, 0.0),  # the client gave up on the response (SO_LINGER 0)
), ends_in_rst=True)  # fmt: skip
SERVER_RESET = Template("server-reset", (*_HANDSHAKE,
    (0, PSH | ACK, 1, 1, REQ, 1.01, 0.0),
    (1, RST | ACK, 1, 1 + REQ, 0, 1.5, 0.0),  # the server aborted with the request unread
), ends_in_rst=True)  # fmt: skip
REFUSED = Template("refused", (
    (0, SYN, 0, 0, 0, 0.0, 0.0),
    (1, RST | ACK, 0, 1, 0, 0.5, 0.0, 1),  # no listener: RST|ACK, seq 0
), ends_in_rst=True, refused=True)  # fmt: skip

HALF_OPEN = Template("half-open", (
    (0, SYN, 0, 0, 0, 0.0, 0.0),  # spoofed source: nobody answers the SYN-ACK
    (1, SYN | ACK, 0, 1, 0, 0.5, 0.0),
    (1, SYN | ACK, 0, 1, 0, 0.5, 1.0),
    (1, SYN | ACK, 0, 1, 0, 0.5, 3.0),
))  # fmt: skip
UNANSWERED = Template("unanswered", (
    (0, SYN, 0, 0, 0, 0.0, 0.0),  # the SYN queue is full: the client retransmits its SYN
    (0, SYN, 0, 0, 0, 0.0, 1.0),
    (0, SYN, 0, 0, 0, 0.0, 3.0),
))  # fmt: skip
LISTENER_RESET = Template("listener-reset", (*_HANDSHAKE,
    (0, PSH | ACK, 1, 1, REQ, 1.01, 0.0),
    (1, RST, 1, 0, 0, 1.5, 0.0),  # tcp_abort_on_overflow=1: a bare RST answers the handshake's ACK
), ends_in_rst=True)  # fmt: skip
ACCEPT_DROP = Template("accept-drop", (*_HANDSHAKE,
    (0, PSH | ACK, 1, 1, REQ, 1.01, 0.0),
    (1, SYN | ACK, 0, 1, 0, 0.5, 1.0),  # the accept queue dropped the ACK: SYN-ACK again
    (0, ACK, 1 + REQ, 1, 0, 1.0, 1.0),
    (0, PSH | ACK, 1, 1, REQ, 1.0, 1.2),  # the request retransmitted
))  # fmt: skip


@dataclass(frozen=True)
class Shape:
    name: str
    mix: tuple[tuple[Template, float], ...]
    interval_us: int
    """Mean time between connection starts."""
    rtt_us: tuple[int, int]
    """Range of round-trip times, drawn per connection."""
    ipv6_share: float = 0.1

    @property
    def mean_packets(self) -> float:
        return sum(len(t.rows) * w for t, w in self.mix)


SHORT_MIX = ((NORMAL, 0.62), (NORMAL_TWO_SEGMENTS, 0.30), (CLIENT_ABORT, 0.04), (SERVER_RESET, 0.02), (REFUSED, 0.02))
SHAPES: dict[str, Shape] = {
    "short": Shape("short", SHORT_MIX, interval_us=50, rtt_us=(200, 20_000)),
    "flood": Shape(
        "flood",
        ((HALF_OPEN, 0.50), (UNANSWERED, 0.15), (LISTENER_RESET, 0.20), (ACCEPT_DROP, 0.10), (NORMAL, 0.05)),
        interval_us=20,
        rtt_us=(200, 2_000),
    ),
    "many": Shape("many", SHORT_MIX, interval_us=50, rtt_us=(200, 20_000)),
    "resets": Shape("resets", ((CLIENT_ABORT, 1.0),), interval_us=50, rtt_us=(200, 20_000)),
}


@dataclass
class Manifest:
    """What a generated file holds."""

    connections: int = 0
    packets: int = 0
    ipv6: int = 0
    by_template: dict[str, int] = field(default_factory=dict)
    ending_in_rst: int = 0
    refused: int = 0
    max_packets_per_connection: int = 0


def generate(path: str | Path, shape: Shape, connections: int, *, seed: int = 9) -> Manifest:
    """Write ``connections`` connections of ``shape`` to ``path`` (classic pcap)."""
    rng = np.random.default_rng(seed)
    templates = [t for t, _ in shape.mix]
    weights = np.array([w for _, w in shape.mix], dtype=np.float64)
    weights /= weights.sum()
    # All templates' rows in one table: template k's rows start at tpl_first[k].
    lengths = np.array([len(t.rows) for t in templates])
    tpl_first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    table = {
        name: np.concatenate([t.column(k, default) for t in templates])
        for k, (name, default) in enumerate(
            [("side", 0), ("flags", 0), ("seq", 0), ("ack", 0), ("plen", 0), ("t_rtt", 0.0), ("t_abs", 0.0)]
        )
    }
    table["raw_seq"] = np.concatenate([np.array([len(r) > 7 and r[7] for r in t.rows], bool) for t in templates])
    manifest = Manifest(by_template={t.name: 0 for t in templates})
    manifest.max_packets_per_connection = int(lengths.max())
    pending: dict[str, np.ndarray] | None = None
    with open(path, "wb") as out:
        out.write(PCAP_HEADER)
        for first in range(0, connections, BATCH):
            count = min(BATCH, connections - first)
            cols = _instantiate(rng, shape, first, count, weights, lengths, tpl_first, table, templates, manifest)
            if pending is not None:
                cols = {k: np.concatenate([pending[k], cols[k]]) for k in cols}
            order = np.argsort(cols["t_us"], kind="stable")  # pending rows first: stable keeps their order
            cols = {k: v[order] for k, v in cols.items()}
            last_batch = first + count >= connections
            # Every later connection starts at or after the next batch's first start: rows before it are final.
            cutoff = np.iinfo(np.int64).max if last_batch else (first + count) * shape.interval_us
            ready = int(np.searchsorted(cols["t_us"], cutoff))
            _write(out, {k: v[:ready] for k, v in cols.items()}, manifest.packets)
            manifest.packets += ready
            pending = {k: v[ready:] for k, v in cols.items()}
    manifest.connections = connections
    return manifest


def _instantiate(rng, shape, first, count, weights, lengths, tpl_first, table, templates, manifest) -> dict:
    """The packets of connections ``first`` .. ``first + count - 1``, one column per field, unsorted."""
    kind = rng.choice(len(weights), size=count, p=weights)
    for k, n in zip(*np.unique(kind, return_counts=True), strict=True):
        manifest.by_template[templates[k].name] += int(n)
        manifest.ending_in_rst += int(n) if templates[k].ends_in_rst else 0
        manifest.refused += int(n) if templates[k].refused else 0
    conn = first + np.arange(count, dtype=np.int64)
    v6 = rng.random(count) < shape.ipv6_share
    manifest.ipv6 += int(v6.sum())
    start_us = conn * shape.interval_us + rng.integers(0, shape.interval_us, count)
    rtt_us = rng.integers(*shape.rtt_us, count)
    isn = rng.integers(0, 1 << 32, size=(count, 2), dtype=np.int64)
    n_rows = lengths[kind]
    c = np.repeat(np.arange(count), n_rows)  # batch-local connection of each packet
    pos = np.arange(len(c)) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    row = tpl_first[kind][c] + pos
    side = table["side"][row]
    own_isn = np.where(side == 1, isn[c, 1], isn[c, 0])
    peer_isn = np.where(side == 1, isn[c, 0], isn[c, 1])
    flags = table["flags"][row]
    seq = np.where(table["raw_seq"][row], table["seq"][row], (own_isn + table["seq"][row]) & 0xFFFFFFFF)
    ack = np.where(flags & ACK != 0, (peer_isn + table["ack"][row]) & 0xFFFFFFFF, 0)
    t_us = (
        start_us[c] + (table["t_rtt"][row] * rtt_us[c]).astype(np.int64) + (table["t_abs"][row] * 1e6).astype(np.int64)
    )
    return {
        "t_us": t_us, "conn": conn[c], "v6": v6[c], "side": side, "flags": flags, "seq": seq, "ack": ack,
        "plen": table["plen"][row],
    }  # fmt: skip


def _write(out, cols: dict[str, np.ndarray], written_before: int) -> None:
    """Append the records of these packets (in this order) to ``out``."""
    n = len(cols["t_us"])
    if not n:
        return
    v6 = cols["v6"]
    size = np.where(v6, RECORD6.itemsize, RECORD4.itemsize)
    offset = np.cumsum(size) - size
    buf = np.zeros(int(size.sum()), np.uint8)
    conn, server = cols["conn"], cols["side"] == 1
    client_port = 10_000 + conn % CLIENT_PORTS
    client_host = 1 + conn // CLIENT_PORTS
    frame = written_before + np.arange(n)
    for is_v6, dtype in ((False, RECORD4), (True, RECORD6)):
        m = v6 == is_v6
        k = int(m.sum())
        if not k:
            continue
        rec = np.zeros(k, dtype)
        t = cols["t_us"][m]
        rec["ts_sec"] = 1_700_000_000 + t // 1_000_000
        rec["ts_usec"] = t % 1_000_000
        plen = cols["plen"][m]
        ip_header = 40 if is_v6 else 20
        rec["caplen"] = dtype.itemsize - 16
        rec["wirelen"] = dtype.itemsize - 16 + plen
        srv = server[m]
        if is_v6:
            rec["ethertype"] = 0x86DD
            rec["ver_tc_flow"] = 0x6 << 28
            rec["payload_len"] = TCP_HEADER + plen
            rec["next_header"] = 6
            rec["hop_limit"] = 64
            prefix = 0x20010DB8_00000000
            client_lo, server_lo = client_host[m] << 16, 0x443
            rec["src_hi"] = rec["dst_hi"] = prefix
            rec["src_lo"] = np.where(srv, server_lo, client_lo)
            rec["dst_lo"] = np.where(srv, client_lo, server_lo)
        else:
            rec["ethertype"] = 0x0800
            rec["ver_ihl"] = 0x45
            rec["total_len"] = ip_header + TCP_HEADER + plen
            rec["ip_id"] = frame[m] & 0xFFFF
            rec["frag"] = 0x4000
            rec["ttl"] = 64
            rec["proto"] = 6
            client_ip = 0x0A000000 | (client_host[m] << 8) | 1
            server_ip = 0x0A640001
            rec["src"] = np.where(srv, server_ip, client_ip)
            rec["dst"] = np.where(srv, client_ip, server_ip)
        cport = client_port[m]
        rec["sport"] = np.where(srv, SERVER_PORT, cport)
        rec["dport"] = np.where(srv, cport, SERVER_PORT)
        rec["seq"] = cols["seq"][m]
        rec["ack"] = cols["ack"][m]
        rec["off_flags"] = (8 << 12) | cols["flags"][m]
        rec["window"] = 502
        rec["opt_nop"] = 0x0101
        rec["opt_ts_kind"] = 8
        rec["opt_ts_len"] = 10
        rec["tsval"] = (t // 1000) & 0xFFFFFFFF
        rec["tsecr"] = np.where(cols["flags"][m] == SYN, 0, rec["tsval"] - 1)
        raw = rec.view(np.uint8).reshape(k, dtype.itemsize)
        buf[offset[m][:, None] + np.arange(dtype.itemsize)] = raw
    out.write(buf.tobytes())


def connections_for(shape: Shape, packets: int) -> int:
    """About how many connections of ``shape`` make ``packets`` packets."""
    return max(1, round(packets / shape.mean_packets))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("output")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--packets", type=int, help="about this many packets (default 1M)")
    size.add_argument("--connections", type=int, help="exactly this many connections")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args(argv)
    shape = SHAPES[args.shape]
    count = args.connections or connections_for(shape, args.packets or 1_000_000)
    m = generate(args.output, shape, count, seed=args.seed)
    print(f"wrote {m.packets:,} packets, {m.connections:,} connections to {args.output}: {m}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
