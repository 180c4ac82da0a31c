"""The strict mapping's truth: kernel reason, router records and wire facts measured in a tiny capture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rstscope.lab import truth
from rstscope.lab.rundir import RunDir
from rstscope.lab.truth import WireFacts

SRV, CLI = "10.1.2.1:8080", "10.1.2.2:40000"


def facts(in_flight=0, answers_syn=False, fin=False):
    return WireFacts(answers_syn=answers_syn, in_flight=in_flight, sender_fin_before=fin)


@pytest.mark.parametrize(
    ("key", "wire", "lost", "verdict"),
    [
        # abortive closes: the wire (or the client's short read) decides between the two
        ("TCP_ABORT_ON_CLOSE", facts(in_flight=1448), False, "close-race"),
        ("TCP_ABORT_ON_CLOSE", facts(), True, "close-race"),
        ("TCP_ABORT_ON_CLOSE", facts(), False, "abort"),
        ("TCP_STATE", facts(in_flight=1), False, "close-race"),
        ("TCP_STATE", None, False, "abort"),
        # data reaching a closed socket
        ("TCP_ABORT_ON_DATA", facts(), False, "late-data"),
        ("TCP_ABORT_ON_DATA", facts(in_flight=500), False, "close-race"),
        ("TCP_TIMEWAIT_SOCKET", facts(), False, "late-data"),
        # one verdict whatever the wire
        ("TCP_KEEPALIVE_TIMEOUT", facts(), False, "keepalive"),
        ("INVALID_SYN/LISTEN", facts(), False, "backlog"),
        ("TCP_FLAGS/LISTEN", facts(), False, "backlog"),
        ("TCP_ABORT_ON_MEMORY", facts(), False, "abort"),
        # no socket: what it answered decides
        ("NO_SOCKET", facts(answers_syn=True), False, "refused"),
        ("NO_SOCKET", facts(fin=True), False, "late-data"),
        ("NO_SOCKET", facts(), False, "stale"),
        ("TCP_INVALID_SEQUENCE", facts(), False, "stale"),
    ],
)
def test_endpoint_verdict_is_one_verdict_per_row(key, wire, lost, verdict):
    assert truth.endpoint_verdict(key, wire, lost)[0] == verdict


def record(reason, state="TCP_CLOSE", time=1.0):
    return {"reason": reason, "state": state, "netns": "server", "time": time, "listener": state == "TCP_LISTEN"}


def rst(frame, kernel, connection=0, src=SRV, dst=CLI):
    return {"frame": frame, "time": 1.0 + frame / 1000, "src": src, "dst": dst, "connection": connection,
            "kernel": kernel}  # fmt: skip


def run_dir(tmp_path: Path, *, nft=None, forged=(), trace=True) -> RunDir:
    if forged:
        (tmp_path / truth.INJECTOR_LOG).write_text("".join(json.dumps(f) + "\n" for f in forged))
    return RunDir(path=tmp_path, run={"trace": {"available": trace}, "nft": nft})


def test_later_rsts_on_a_connection_are_echoes(tmp_path):
    resets = [rst(5, record("TCP_ABORT_ON_CLOSE")), rst(6, record("TCP_FLAGS", "TCP_LISTEN"))]
    labels = truth.label(resets, run_dir(tmp_path), lost_by_connection={0: True})
    assert (labels[0].verdict, labels[0].echo) == ("close-race", False)
    assert (labels[1].verdict, labels[1].echo, labels[1].reason) == ("echo", True, "TCP_FLAGS/LISTEN")


def test_a_rst_no_endpoint_sent_is_the_routers_when_a_reject_rule_counted_it(tmp_path):
    nft = {"rules": {"reject-syn": {"packets": 1}, "ct-new": {"packets": 7}}}
    resets = [rst(3, None, connection=0), rst(9, None, connection=1), rst(10, record("NO_SOCKET"), connection=1)]
    labels = truth.label(resets, run_dir(tmp_path, nft=nft))
    first = labels[0]
    assert (first.verdict, first.origin, first.reason) == ("middlebox", "middlebox", "middlebox:nft reject-syn")
    assert 1 not in labels  # one rejection counted, so the second unowned RST has no truth
    assert labels[2].origin == "endpoint"


def test_forged_rsts_follow_the_forgers_intent(tmp_path):
    forged = [
        {"event": "forged_rst", "src": SRV, "dst": CLI, "seq": 1, "intent": "ignored", "why": "outside the window"},
        {"event": "forged_rst", "src": SRV, "dst": CLI, "seq": 2, "intent": "accepted", "why": "exact"},
    ]
    resets = [rst(3, None), rst(4, None), rst(7, record("NO_SOCKET"), src=CLI, dst=SRV)]
    labels = truth.label(resets, run_dir(tmp_path, forged=forged))
    assert [(t.verdict, t.origin, t.echo) for t in labels.values()] == [
        ("ignored", "middlebox", False),
        ("middlebox", "middlebox", False),
        ("echo", "endpoint", True),  # the client's answer to the server's next segment
    ]


def test_without_a_kernel_trace_no_unowned_rst_gets_a_truth(tmp_path):
    labels = truth.label([rst(3, None)], run_dir(tmp_path, nft={"rules": {"reject-syn": {"packets": 1}}}, trace=False))
    assert labels == {}


# --------------------------------------------------------------------------- wire facts from a capture


def write_capture(path: Path, packets) -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.utils import wrpcap

    frames = []
    for when, src, flags, seq, ack, payload in packets:
        sport, dport = (8080, 40000) if src == "s" else (40000, 8080)
        ips = ("10.1.2.1", "10.1.2.2") if src == "s" else ("10.1.2.2", "10.1.2.1")
        frame = IP(src=ips[0], dst=ips[1]) / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack)
        frame = frame / (b"R" * payload) if payload else frame
        frame.time = when
        frames.append(frame)
    wrpcap(str(path), frames)


def test_in_flight_counts_payload_the_peer_had_not_acked_when_the_rst_was_sent(tmp_path):
    capture = tmp_path / "capture.pcap"
    write_capture(capture, [
        (1.00, "c", "S", 100, 0, 0),
        (1.01, "s", "SA", 500, 101, 0),
        (1.02, "c", "A", 101, 501, 0),
        (1.03, "s", "A", 501, 101, 1000),
        (1.04, "s", "FA", 1501, 101, 0),  # a FIN is not a byte of data
        (1.05, "c", "A", 101, 1001, 0),  # acks 500 of the 1000 bytes
        (1.20, "s", "RA", 1502, 101, 0),
    ])  # fmt: skip
    run = RunDir(path=tmp_path, run={}, capture=capture)
    assert truth.wire_facts(run, {7: 1.06})[7] == WireFacts(
        answers_syn=False, in_flight=500, sender_fin_before=True, seq=1502
    )
    assert truth.wire_facts(run, {7: 1.045})[7].in_flight == 1000  # sent before the client's ACK
    write_capture(capture, [
        (1.00, "c", "S", 100, 0, 0), (1.01, "s", "SA", 500, 101, 0), (1.02, "c", "A", 101, 501, 0),
        (1.03, "s", "A", 501, 101, 1000), (1.05, "c", "A", 101, 1502, 0), (1.20, "s", "RA", 1502, 101, 0),
    ])  # fmt: skip
    assert truth.wire_facts(run, {6: 1.2})[6].in_flight == 0


def test_a_rst_answering_a_syn(tmp_path):
    capture = tmp_path / "capture.pcap"
    write_capture(capture, [(1.0, "c", "S", 100, 0, 0), (1.001, "s", "RA", 0, 101, 0)])
    run = RunDir(path=tmp_path, run={}, capture=capture)
    assert truth.wire_facts(run, {2: 1.001})[2].answers_syn is True


def test_a_forged_rst_that_missed_rcv_nxt_changed_nothing(tmp_path):
    capture = tmp_path / "capture.pcap"
    write_capture(capture, [
        (1.00, "c", "S", 100, 0, 0), (1.01, "s", "SA", 500, 101, 0), (1.02, "c", "A", 101, 501, 0),
        (1.03, "s", "A", 501, 101, 1000), (1.04, "s", "RA", 1001, 101, 0),  # aimed at 501+500: stale seq
        (1.05, "s", "RA", 1501, 101, 0),  # exactly at rcv_nxt
    ])  # fmt: skip
    forged = [
        {"event": "forged_rst", "src": SRV, "dst": CLI, "seq": 1001, "intent": "accepted", "why": "exact"},
        {"event": "forged_rst", "src": SRV, "dst": CLI, "seq": 1501, "intent": "accepted", "why": "exact"},
    ]
    run = run_dir(tmp_path, forged=forged)
    run.capture = capture
    labels = truth.label([rst(5, None), rst(6, None)], run)
    assert [t.verdict for t in labels.values()] == ["ignored", "middlebox"]
    assert "rcv_nxt had moved on" in labels[0].rule
