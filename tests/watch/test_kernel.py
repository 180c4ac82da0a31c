"""The live kernel join without tracefs: records in time order go to the RSTs in capture order, so a
primary and its echo a few microseconds apart (closer than the clocks agree) get their own reasons."""

from __future__ import annotations

from pathlib import Path

from rstscope import evidence as evidence_mod
from rstscope.analysis import ResetRecord, analyze_capture
from rstscope.verdicts import classify
from rstscope.watch.kernel import KernelJoin

CAPTURE = Path(__file__).resolve().parents[2] / "captures" / "close-race" / "capture.pcapng"


def test_records_join_in_order():
    analysis = analyze_capture(CAPTURE)
    cid = analysis.resets[0]["connection"]
    conn = analysis.connections[cid]
    evidence = evidence_mod.collect([conn], analysis.connections.host_ttl)
    resets = [ResetRecord(evidence=ev, decision=classify(ev)) for ev in sorted(evidence, key=lambda ev: ev.frame)]
    primary, echo = resets[0], resets[1]
    assert primary.verdict.value == "close-race" and echo.verdict.value == "echo"
    join = KernelJoin()
    join._caught_up = float("inf")  # no reader thread here: nothing to wait for
    t = primary.evidence.time_ns / 1e9
    # The echo's record seems logged *before* the primary's packet (clock disagreement of 1 ms): order wins.
    join._records.extend([
        {"event": "tcp_send_reset", "time": t - 0.001, "src": primary.evidence.src, "dst": primary.evidence.dst,
         "reason": "TCP_ABORT_ON_CLOSE", "state": "TCP_ESTABLISHED", "listener": False},
        {"event": "tcp_send_reset", "time": t - 0.0009, "src": echo.evidence.src, "dst": echo.evidence.dst,
         "reason": "TCP_FLAGS", "state": None, "listener": False},
        {"event": "tcp_send_reset", "time": t - 0.0005, "src": "10.9.9.9:1", "dst": primary.evidence.dst,
         "reason": "NO_SOCKET", "state": None, "listener": False},
    ])  # fmt: skip
    first, second = join.join([primary, echo])
    assert first == {"reason": "TCP_ABORT_ON_CLOSE", "state": "TCP_ESTABLISHED", "listener": False, "disagrees": False}
    assert second["reason"] == "TCP_FLAGS" and second["disagrees"] is False  # one of echo's reasons
    third = join.join([resets[2]])[0]
    assert third["reason"] is None  # each record is used once; the other sender's is not this one's
    disagreeing = KernelJoin()
    disagreeing._caught_up = float("inf")
    disagreeing._records.append({"event": "tcp_send_reset", "time": t, "src": primary.evidence.src,
                                 "dst": primary.evidence.dst, "reason": "NO_SOCKET", "listener": False})  # fmt: skip
    assert disagreeing.join([primary])[0]["disagrees"] is True
