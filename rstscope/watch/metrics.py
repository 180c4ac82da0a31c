"""``--metrics HOST:PORT``: a Prometheus endpoint (prometheus-client) with what ``watch`` printed.

=========================================  ================================================================
rstscope_resets_total{verdict,origin}      primary RSTs reported (one per printed reset line)
rstscope_bytes_in_flight_at_reset          histogram of the bytes in flight at those RSTs (when known)
rstscope_listen_queue_overflows_total      listen-queue trouble reported, ``kind`` = syn_retransmitted or
                                           synack_retransmitted (one per printed listen-queue line)
rstscope_packets_seen_total                packet records read from the capture tool
rstscope_packets_dropped_total             packets the capture tool reported dropped (known when it stops)
rstscope_echoes_total                      echo RSTs folded into their primaries
=========================================  ================================================================

Each ``watch`` has its own registry (no process-wide default metrics), served by prometheus-client's
HTTP server in a thread.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from rstscope.status import InputError

IN_FLIGHT_BUCKETS = (0, 1, 1_000, 10_000, 64_000, 256_000, 1_000_000, 4_000_000, 16_000_000)
"""Bytes: nothing, a segment, a few segments, a window, ... a large buffer."""


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``, ``:PORT`` for every address); InputError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"--metrics {text!r}: expected HOST:PORT with a port from 1 to 65535")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class Metrics:
    """The counters, and the HTTP server once :meth:`serve` ran."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.resets = Counter("rstscope_resets", "Primary RSTs reported", ("verdict", "origin"), registry=r)
        self.in_flight = Histogram("rstscope_bytes_in_flight_at_reset", "Bytes in flight at a primary RST",
                                   buckets=IN_FLIGHT_BUCKETS, registry=r)  # fmt: skip
        self.listen_queue = Counter("rstscope_listen_queue_overflows", "Listen-queue trouble reported", ("kind",),
                                    registry=r)  # fmt: skip
        self.packets_seen = Counter("rstscope_packets_seen", "Packet records read from the capture", registry=r)
        self.packets_dropped = Counter("rstscope_packets_dropped", "Packets the capture tool dropped", registry=r)
        self.echoes = Counter("rstscope_echoes", "Echo RSTs folded into their primaries", registry=r)
        self._server = None

    def serve(self, address: str) -> None:
        host, port = parse_address(address)
        try:
            self._server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise InputError(f"--metrics {address}: cannot listen: {exc.strerror or exc}") from None

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
