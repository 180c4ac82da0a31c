"""Joining analyzer verdicts with kernel records and client outcomes (hand-built documents)."""

from __future__ import annotations

from pathlib import Path

from rstscope.lab import groundtruth
from rstscope.lab.rundir import RunDir

SRV, CLI = "10.1.2.1:8080", "10.1.2.2:40000"


def reset(frame, time, verdict, src=SRV, dst=CLI, connection=0):
    return {"frame": frame, "time": time, "src": src, "dst": dst, "sender": "server", "verdict": verdict,
            "primary": None, "in_flight": 0, "explanation": "", "connection": connection}  # fmt: skip


def send_reset(time, reason, state, src=SRV, dst=CLI):
    return {"event": "tcp_send_reset", "time": time, "src": src, "dst": dst, "state": state, "reason": reason,
            "netns": "server", "listener": dst == "0.0.0.0:0", "active": reason == "TCP_ABORT_ON_CLOSE"}  # fmt: skip


def make_run(kernel, clients=(), queue="200ms"):
    return RunDir(
        path=Path("/runs/x-close-race"),
        run={"options": {"scenario": "close-race", "queue": queue}, "trace": {"available": True}},
        kernel=list(kernel),
        clients=list(clients),
    )


DOC = {
    "captures": [],
    "connections": [{"id": 0, "client": CLI, "server": SRV, "start": 100.0, "end": 100.5}],
    "resets": [
        # the close-race RST and its echoes, each arriving behind a 200 ms queue; frame 11's
        # timestamp is a few µs before frame 10's (seen on veth): capture order wins
        reset(10, 100.2101, "close-race"),
        reset(11, 100.2100, "echo"),
        reset(12, 100.2300, "echo"),
    ],
    "listen_queue": {},
}
KERNEL = [
    send_reset(100.0100, "TCP_ABORT_ON_CLOSE", "TCP_CLOSE"),
    send_reset(100.0150, "TCP_FLAGS", "TCP_LISTEN", dst="0.0.0.0:0"),
    send_reset(100.0300, "TCP_FLAGS", "TCP_LISTEN", dst="0.0.0.0:0"),
]
ATTEMPT = {"attempt": 1, "client_port": 40000, "t_start": 99.9, "t_end": 100.6, "outcome": "ECONNRESET@read",
           "bytes_read": 93000, "bytes_expected": 200000}  # fmt: skip


def test_join_matches_by_sender_and_order_not_time():
    doc = groundtruth.join(DOC, make_run(KERNEL, [ATTEMPT]))
    reasons = [(r["frame"], r["kernel"]["reason"], r["kernel"]["listener"]) for r in doc["resets"]]
    assert reasons == [(10, "TCP_ABORT_ON_CLOSE", False), (11, "TCP_FLAGS", True), (12, "TCP_FLAGS", True)]
    assert all(r["kernel_agrees"] for r in doc["resets"])
    assert doc["connections"][0]["client_outcome"] == "ECONNRESET@read"
    gt = doc["ground_truth"]
    assert gt["resets_matched"] == 3 and gt["kernel_unmatched"] == 0 and gt["kernel_agreement"] == 1.0
    assert gt["kernel_reasons"] == {"TCP_FLAGS/LISTEN": 2, "TCP_ABORT_ON_CLOSE": 1}
    assert "kernel" not in DOC["resets"][0]  # the input document is not modified


def test_a_record_whose_packet_was_lost_does_not_steal_a_later_one():
    lost = [send_reset(90.0, "TCP_ABORT_ON_CLOSE", "TCP_CLOSE"), *KERNEL]  # its RST never reached the capture
    doc = groundtruth.join(DOC, make_run(lost))
    assert doc["resets"][0]["kernel"]["time"] == 100.0100
    assert doc["ground_truth"]["kernel_unmatched"] == 1


def test_no_kernel_records_means_null_and_no_agreement():
    doc = groundtruth.join(DOC, make_run([]))
    assert all(r["kernel"] is None and r["kernel_agrees"] is None for r in doc["resets"])
    assert doc["ground_truth"]["kernel_agreement"] is None
    assert doc["connections"][0]["client_outcome"] is None


def test_client_attempt_chosen_by_port_and_time_when_ports_repeat():
    early = dict(ATTEMPT, t_start=10.0, t_end=11.0, outcome="ok")
    doc = groundtruth.join(DOC, make_run([], [early, ATTEMPT]))
    assert doc["connections"][0]["client_outcome"] == "ECONNRESET@read"


def test_window_follows_the_queue():
    assert groundtruth._window_for(make_run([], queue="200ms")) == groundtruth.WINDOW
    assert groundtruth._window_for(make_run([], queue="5s")) == 6.0


def nft_listing(packets: int, *, with_drop: bool) -> str:
    """``nft -j list table inet rstscope`` as nftables 1.0 prints it (abridged)."""
    import json

    rules = [{"rule": {"family": "inet", "table": "rstscope", "chain": "forward", "handle": 2,
                       "comment": "reject-syn",
                       "expr": [{"match": {}}, {"counter": {"packets": packets, "bytes": 60 * packets}},
                                {"reject": {"type": "tcp reset"}}]}}]  # fmt: skip
    if with_drop:
        rules.append({"rule": {"family": "inet", "table": "rstscope", "chain": "forward", "handle": 3,
                               "expr": [{"counter": {"packets": 4, "bytes": 208}}, {"drop": None}]}})  # fmt: skip
    return json.dumps({"nftables": [{"metainfo": {"version": "1.0.6"}}, {"table": {"name": "rstscope"}}, *rules]})


def test_nft_counters_per_rule_before_and_after():
    counters = groundtruth.nft_counters(nft_listing(0, with_drop=False), nft_listing(3, with_drop=True))
    rules = counters["rules"]
    assert rules["reject-syn"]["packets"] == 3 and rules["reject-syn"]["bytes"] == 180
    assert rules["reject-syn"]["before"] == {"packets": 0, "bytes": 0}
    # a rule added during the run (no comment): named by its handle, counted from zero
    assert rules["handle 3"]["packets"] == 4 and rules["handle 3"]["chain"] == "forward"
    assert groundtruth.nft_counters("not json", None) == {"error": "nft output (before) is not JSON"}
