"""``rstscope watch``: verdicts live, as resets happen, with metrics (see :mod:`rstscope.watch`)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from pathlib import Path

from rstscope.status import ExitStatus, InputError

HELP = "print a verdict for each TCP reset as it happens (live capture), with Prometheus metrics"

DESCRIPTION = """\
Captures on an interface (dumpcap, else tcpdump) and prints one line per
primary RST within a second of it: time, connection, sender -> receiver,
verdict, origin, bytes in flight and the one-line explanation; the same
verdicts `rstscope analyze` gives the same packets.  Echo RSTs are folded
into their primary (counted when the connection ends).  Listen-queue
trouble (SYN and SYN-ACK retransmissions) is printed as it is seen.
Ctrl-C or SIGTERM ends the session: the last RSTs are judged and a summary
is printed (exit status 0).  A capture tool that dies is an error (2).

  --json        one JSON object per RST (the fields of `analyze --json`'s
                resets), per listen-queue event, and the summary (NDJSON)
  --kernel      join the kernel's tcp:tcp_send_reset reason of each RST
                (this host's resets; a private tracefs instance, removed on
                exit) and mark verdicts the reason disagrees with
  --metrics     serve Prometheus metrics: rstscope_resets_total{verdict,origin},
                rstscope_bytes_in_flight_at_reset, rstscope_listen_queue_overflows_total,
                rstscope_packets_seen_total, rstscope_packets_dropped_total
  --ring        keep the packets in a rotating ring of capture files
  --snapshot    for each primary RST of these verdicts, write a run directory
                with the last --snapshot-seconds of packets (`rstscope report DIR`)

examples:
  sudo rstscope watch -i eth0
  sudo rstscope watch -i eth0 -f 'tcp port 443' --json >> resets.ndjson
  sudo rstscope watch -i eth0 --kernel --metrics :9464
  sudo rstscope watch -i eth0 --ring /var/lib/rstscope/ring --snapshot close-race,backlog
"""

SNAPSHOT_KINDS = ("close-race", "backlog", "middlebox")
SNAPLEN = 512
"""Bytes kept per packet by default: rstscope reads headers only, and on loopback (64 kB segments) whole
packets made the capture tool drop most of them at a few thousand packets per second (measured)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--iface", required=True, help="interface to capture on (any: all)")
    parser.add_argument("-f", "--filter", default="tcp", metavar="BPF", help="capture filter (default: tcp)")
    parser.add_argument("--json", action="store_true", help="NDJSON: one object per RST (analyze --json's fields)")
    parser.add_argument("--kernel", action="store_true", help="join the kernel's tcp_send_reset reasons live")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here (:PORT for all)")
    parser.add_argument("--ring", type=Path, metavar="DIR", help="keep a rotating ring of capture files in DIR")
    parser.add_argument("--ring-files", type=int, default=10, metavar="N", help="files in the ring (default: 10)")
    parser.add_argument("--ring-size", type=float, default=100.0, metavar="MB", help="size of each ring file (100)")
    parser.add_argument("--snapshot", metavar="VERDICTS",
                        help=f"run directory per primary RST of verdict ({','.join(SNAPSHOT_KINDS)})")  # fmt: skip
    parser.add_argument("--snapshot-seconds", type=float, default=30.0, metavar="K",
                        help="seconds of packets before the RST in a snapshot (default: 30)")  # fmt: skip
    parser.add_argument("--snapshot-dir", type=Path, metavar="DIR",
                        help="where snapshots go (default: the ring directory's snapshots/)")  # fmt: skip
    parser.add_argument("--capture-tool", choices=("auto", "dumpcap", "tcpdump"), default="auto")
    parser.add_argument("--snaplen", type=int, default=SNAPLEN, metavar="BYTES",
                        help=f"bytes kept per packet (default {SNAPLEN}: headers, tunnels too; 0: all)")  # fmt: skip
    parser.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until Ctrl-C)")


def _check(args) -> tuple[str, ...]:
    """Option errors before anything starts; the snapshot verdicts."""
    from rstscope.watch.metrics import parse_address

    if args.metrics is not None:
        parse_address(args.metrics)
    if args.duration is not None and args.duration <= 0:
        raise InputError(f"--duration {args.duration}: must be positive")
    if args.ring_files < 1 or args.ring_size <= 0:
        raise InputError("--ring-files and --ring-size must be positive")
    kinds: tuple[str, ...] = ()
    if args.snapshot:
        kinds = tuple(k.strip() for k in args.snapshot.split(",") if k.strip())
        unknown = [k for k in kinds if k not in SNAPSHOT_KINDS]
        if unknown:
            raise InputError(f"--snapshot {','.join(unknown)}: not one of {', '.join(SNAPSHOT_KINDS)}")
        if args.ring is None and args.snapshot_dir is None:
            raise InputError("--snapshot needs --ring DIR or --snapshot-dir DIR (where the run directories go)")
    if args.snapshot_seconds <= 0:
        raise InputError("--snapshot-seconds must be positive")
    return kinds


def run(args: argparse.Namespace, env) -> ExitStatus:
    kinds = _check(args)
    from rstscope.watch.session import Session

    session = Session(args, env, snapshot_kinds=kinds)
    with _stop_on_sigterm(), contextlib.ExitStack() as cleanup:
        cleanup.callback(session.close)
        session.start()
        deadline = None if args.duration is None else time.monotonic() + args.duration
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM: end the session normally
            session.loop(deadline)
        session.finish()
    return ExitStatus.OK


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM (and SIGHUP) end the session like Ctrl-C (only the main thread can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(*_):
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
