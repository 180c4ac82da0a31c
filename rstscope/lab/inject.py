"""The ``inject`` and ``ignored`` presets' forger: RSTs sent by a middlebox in the router namespace.

Run inside the router namespace as ``python -m rstscope.lab.inject`` (the plan
starts it).  It watches the server's segments leaving the router towards the
client (an ``AF_PACKET`` socket on the router's client-side interface), and when
a connection's response pauses (no server segment for ``--gap`` seconds after at
least ``--after-bytes`` of payload), it forges RSTs in the server's name, built
with scapy and sent through a raw socket (the router's own stack: no ARP of its
own, so the RST leaves at once):

========= ===================================================================
mode      what is sent per connection, and what the client's kernel does
========= ===================================================================
exact     RST|ACK at exactly the client's rcv_nxt: accepted, the connection is
          reset (the server keeps sending after the pause: its segments draw
          the client's ``NO_SOCKET`` RSTs)
ignored   one RST far outside the window (dropped silently, RFC 5961 3.2) and
          one in the window but not at rcv_nxt (answered with a challenge ACK,
          RFC 5961 3.2): neither ends the connection
========= ===================================================================

The RSTs copy what a forger can copy: the server's TTL as seen at the client
(the router sends them itself, so no hop is subtracted), its next IP ID, its
window.  Each RST sent is one JSON line on stdout, the ground truth of the run
(``injector.jsonl``): time, addresses, seq, ack, flags, TTL, IP ID, window and
the intent (``accepted`` or ``ignored``) with why.

The forged seq is only exact when no server segment is still on its way, which
is why the server pauses mid-response (``rstscope pair server --pause-after``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass

ETH_P_ALL = 0x0003
"""Outgoing (forwarded) packets reach only ETH_P_ALL taps, not an ETH_P_IP packet socket."""
ETH_P_IP = 0x0800
OUT_OF_WINDOW = 1 << 30
"""Offset of the out-of-window RST's seq from rcv_nxt: far beyond any receive window."""
INEXACT = 1000
"""Offset of the in-window, inexact RST's seq: inside the client's window (≥ 64 KiB here), not rcv_nxt."""


@dataclass(kw_only=True)
class Flow:
    """What the forger knows of one connection, from the segments it saw."""

    client_port: int
    server_next: int = 0
    """The server's next sequence number (seq + payload of its latest segment)."""
    client_next: int = 0
    """The client's next sequence number: what an ACK from the server would acknowledge."""
    server_bytes: int = 0
    last_server: float = 0.0
    ttl: int = 64
    ip_id: int = 0
    window: int = 0
    done: bool = False


def _seq_after(a: int, b: int) -> bool:
    """``a`` is after ``b`` in sequence space (RFC 1982 arithmetic on 32 bits)."""
    return 0 < ((a - b) & 0xFFFFFFFF) < 0x80000000


def parse(packet: bytes) -> dict | None:
    """IPv4/TCP fields of a packet (no link header), or None for anything else."""
    if len(packet) < 40 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_TCP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    ip_id, ttl = struct.unpack_from("!H", packet, 4)[0], packet[8]
    sport, dport, seq, ack, offset_flags, window = struct.unpack_from("!HHIIHH", packet, ihl)
    data_offset = (offset_flags >> 12) * 4
    return {
        "src": socket.inet_ntoa(packet[12:16]),
        "dst": socket.inet_ntoa(packet[16:20]),
        "sport": sport,
        "dport": dport,
        "seq": seq,
        "ack": ack,
        "flags": offset_flags & 0x3F,
        "window": window,
        "payload": total - ihl - data_offset,
        "ttl": ttl,
        "ip_id": ip_id,
    }


SYN, FIN, RST = 0x02, 0x01, 0x04


def forged(flow: Flow, mode: str) -> list[tuple[int, str]]:
    """(seq, intent) of the RSTs to send for ``flow`` in ``mode``."""
    if mode == "exact":
        return [(flow.server_next, "accepted: seq is exactly the client's rcv_nxt")]
    return [
        ((flow.server_next + OUT_OF_WINDOW) & 0xFFFFFFFF, "ignored: seq outside the client's window"),
        ((flow.server_next + INEXACT) & 0xFFFFFFFF, "ignored: seq in the window but not rcv_nxt (challenge ACK)"),
    ]


class Injector:
    def __init__(self, *, iface: str, server: str, port: int, mode: str, after_bytes: int, gap: float, out) -> None:
        self.server, self.port, self.mode = server, port, mode
        self.after_bytes, self.gap, self.out = after_bytes, gap, out
        self.iface = iface
        self.flows: dict[int, Flow] = {}
        self.raw: socket.socket | None = None

    def observe(self, packet: dict, now: float) -> None:
        from_server = packet["src"] == self.server and packet["sport"] == self.port
        to_server = packet["dst"] == self.server and packet["dport"] == self.port
        if not (from_server or to_server):
            return
        client_port = packet["dport"] if from_server else packet["sport"]
        flow = self.flows.setdefault(client_port, Flow(client_port=client_port))
        flags = packet["flags"]
        if flags & RST:
            flow.done = True  # someone reset it (maybe us): nothing more to forge
            return
        end = packet["seq"] + packet["payload"] + (1 if flags & (SYN | FIN) else 0)
        if from_server:
            if (flow.server_bytes == 0 and flow.server_next == 0) or _seq_after(end, flow.server_next):
                flow.server_next = end & 0xFFFFFFFF
            flow.server_bytes += packet["payload"]
            flow.ttl, flow.ip_id, flow.window = packet["ttl"], packet["ip_id"], packet["window"]
            if packet["payload"]:
                flow.last_server = now
            if flags & FIN:
                flow.done = True  # the response ended without a pause long enough
        elif flow.client_next == 0 or _seq_after(end, flow.client_next):
            flow.client_next = end & 0xFFFFFFFF

    def due(self, now: float) -> list[Flow]:
        return [
            f
            for f in self.flows.values()
            if not f.done and f.server_bytes >= self.after_bytes and now - f.last_server >= self.gap
        ]

    def inject(self, flow: Flow, client: str) -> None:
        """Send the mode's RSTs for ``flow`` and log each one."""
        from scapy.layers.inet import IP, TCP  # imported by run() before "ready": no delay here

        for number, (seq, intent) in enumerate(forged(flow, self.mode)):
            ip_id = (flow.ip_id + 1 + number) & 0xFFFF
            packet = IP(src=self.server, dst=client, ttl=flow.ttl, id=ip_id, flags="DF") / TCP(
                sport=self.port, dport=flow.client_port, flags="RA", seq=seq, ack=flow.client_next, window=0
            )
            if self.raw is not None:
                self.raw.sendto(bytes(packet), (client, 0))
            record = {
                "event": "forged_rst",
                "time": time.time(),
                "src": f"{self.server}:{self.port}",
                "dst": f"{client}:{flow.client_port}",
                "seq": seq,
                "ack": flow.client_next,
                "flags": "RST,ACK",
                "ttl": flow.ttl,
                "ip_id": ip_id,
                "window": 0,
                "rcv_nxt": flow.server_next,
                "intent": intent.split(":", 1)[0],
                "why": intent.split(": ", 1)[1],
            }
            self.out.write(json.dumps(record) + "\n")
            self.out.flush()
        flow.done = True

    def run(self, client: str) -> None:
        """Watch and forge until interrupted (the sockets need root, in the router namespace)."""
        listen = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
        listen.bind((self.iface, ETH_P_ALL))
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        # Importing scapy takes most of a second: done before "ready", or the first forged RST would
        # leave after the pause it was timed into (its seq then behind the client's window).
        import scapy.layers.inet  # noqa: F401

        self.out.write(json.dumps({"event": "ready", "mode": self.mode, "time": time.time()}) + "\n")
        self.out.flush()
        while True:
            readable, _, _ = select.select([listen], [], [], 0.01)
            now = time.time()
            while readable:  # every queued segment first: a forged seq must be the latest
                try:
                    data, address = listen.recvfrom(65535, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                packet = parse(data) if address[1] == ETH_P_IP else None
                if packet is not None:
                    self.observe(packet, now)
            for flow in self.due(now):
                self.inject(flow, client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rstscope.lab.inject", description=__doc__.split("\n")[0])
    parser.add_argument("--iface", required=True, help="the router's interface towards the client")
    parser.add_argument("--server", required=True, metavar="IP:PORT")
    parser.add_argument("--client", required=True, metavar="IP")
    parser.add_argument("--mode", choices=("exact", "ignored"), required=True)
    parser.add_argument("--after-bytes", type=int, default=10_000, metavar="N")
    parser.add_argument("--gap", type=float, default=0.15, metavar="S")
    args = parser.parse_args(argv)
    host, _, port = args.server.rpartition(":")
    injector = Injector(
        iface=args.iface, server=host, port=int(port), mode=args.mode, after_bytes=args.after_bytes, gap=args.gap,
        out=sys.stdout,
    )  # fmt: skip
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT is how the plan stops it
        injector.run(args.client)
    return 0


if __name__ == "__main__":
    sys.exit(main())
