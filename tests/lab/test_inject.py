"""The forger's bookkeeping, without sockets: what it knows of a flow, when and what it forges."""

from __future__ import annotations

import io
import json

from rstscope.lab import inject

SERVER, CLIENT = "10.1.2.1", "10.1.2.130"


def segment(src, flags, seq, ack, payload=0, ttl=63, ip_id=7):
    from scapy.layers.inet import IP, TCP

    sport, dport = (8080, 40000) if src == SERVER else (40000, 8080)
    dst = CLIENT if src == SERVER else SERVER
    packet = IP(src=src, dst=dst, ttl=ttl, id=ip_id) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
    return bytes(packet / (b"R" * payload) if payload else packet)


def forger(mode="exact"):
    out = io.StringIO()
    return inject.Injector(iface="x", server=SERVER, port=8080, mode=mode, after_bytes=1000, gap=0.1, out=out), out


def feed(injector):
    for when, raw in (
        (0.00, segment(CLIENT, "S", 100, 0)),
        (0.01, segment(SERVER, "SA", 5000, 101)),
        (0.02, segment(CLIENT, "PA", 101, 5001, payload=16)),
        (0.03, segment(SERVER, "A", 5001, 117, payload=1448, ip_id=41)),
        (0.04, segment(CLIENT, "A", 117, 6449)),
    ):
        injector.observe(inject.parse(raw), when)


def test_parse_reads_the_fields_a_forger_copies():
    packet = inject.parse(segment(SERVER, "A", 5001, 117, payload=100, ttl=63, ip_id=41))
    assert (packet["src"], packet["sport"], packet["seq"], packet["payload"]) == (SERVER, 8080, 5001, 100)
    assert (packet["ttl"], packet["ip_id"]) == (63, 41)
    assert inject.parse(b"\x60" + b"\0" * 60) is None  # not IPv4


def test_forges_only_after_enough_bytes_and_a_gap():
    injector, _ = forger()
    feed(injector)
    flow = injector.flows[40000]
    assert (flow.server_next, flow.client_next, flow.server_bytes) == (6449, 117, 1448)
    assert injector.due(0.05) == []  # no gap yet
    assert injector.due(0.2) == [flow]


def test_exact_mode_sends_one_rst_at_rcv_nxt_and_logs_it():
    injector, out = forger("exact")
    feed(injector)
    injector.inject(injector.flows[40000], CLIENT)
    [log] = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (log["seq"], log["ack"], log["intent"], log["ttl"], log["ip_id"]) == (6449, 117, "accepted", 63, 42)
    assert log["src"] == f"{SERVER}:8080" and log["dst"] == f"{CLIENT}:40000"
    assert injector.due(1.0) == []  # once per connection


def test_ignored_mode_sends_one_rst_out_of_window_and_one_inexact():
    injector, out = forger("ignored")
    feed(injector)
    injector.inject(injector.flows[40000], CLIENT)
    logs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(log["seq"] - 6449) % 2**32 for log in logs] == [inject.OUT_OF_WINDOW, inject.INEXACT]
    assert {log["intent"] for log in logs} == {"ignored"}


def test_a_flow_that_ended_is_left_alone():
    injector, _ = forger()
    feed(injector)
    injector.observe(inject.parse(segment(SERVER, "FA", 6449, 117)), 0.05)
    assert injector.due(1.0) == []
