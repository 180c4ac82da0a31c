"""Fallback capture with scapy's sniffer, for machines without dumpcap or tcpdump.

Run as ``python -m rstscope.lab.sniff --iface DEV [--filter BPF] [--snaplen N] OUT``
(the lab runs it inside the client namespace).  Writes pcapng, prints
``sniffing on DEV`` on stderr once started and ``captured N dropped N`` when
stopped by SIGINT or SIGTERM.  ``dropped`` is the kernel's count of packets
the sniffer's socket had no room for (``PACKET_STATISTICS``' ``tp_drops``),
read from the socket the sniffer uses; when the kernel does not give it the
line says ``dropped unknown``, never a made-up 0.  A sniffer that cannot start
(no way to compile the filter without libpcap or tcpdump, no such interface)
or that dies while sniffing exits 1 with the reason on stderr.

Much slower than dumpcap: the lab uses it only when asked (``--capture-tool
scapy``), and cross-checks what it kept against the kernel's reset count.
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

    from scapy.all import AsyncSniffer, conf  # imported here: scapy is slow to import and noisy
    from scapy.utils import PcapNgWriter

    try:
        sock = conf.L2listen(iface=args.iface, filter=args.filter)
    except Exception as exc:  # scapy raises many kinds: no libpcap/tcpdump for the filter, no such device
        sys.stderr.write(f"sniff: cannot listen on {args.iface}: {type(exc).__name__}: {exc}\n")
        return 1
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
    sniffer = AsyncSniffer(opened_socket=sock, prn=keep, store=False)
    sniffer.start()
    sys.stderr.write(f"sniffing on {args.iface}\n")
    sys.stderr.flush()
    while not stop.wait(0.2):
        if sniffer.thread is not None and not sniffer.thread.is_alive():
            break  # the sniffing thread died (its traceback is on stderr)
    died = not stop.is_set()
    if not died:
        sniffer.stop()
    dropped = _drops(sock, written=count)
    writer.close()
    sys.stderr.write(f"captured {count} dropped {'unknown' if dropped is None else dropped}\n")
    if died:
        sys.stderr.write("sniff: the sniffer stopped on its own: the capture is incomplete\n")
        return 1
    return 0


PACKET_STATISTICS = 6  # linux/if_packet.h
SOL_PACKET = 263


def _drops(sock, *, written: int) -> int | None:
    """Packets the socket got but the file did not, or None when unknown: those the kernel
    dropped for want of room (``tp_drops``) plus those still queued when the sniffer stopped
    (``tp_packets`` counts every packet, drops included, since the socket opened)."""
    import struct

    try:
        packets, drops = struct.unpack("II", sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except (AttributeError, OSError, struct.error):
        return None
    return drops + max(0, packets - drops - written)


if __name__ == "__main__":
    sys.exit(main())
