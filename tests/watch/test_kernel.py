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


def test_listener_records_go_to_the_rsts_in_capture_order_across_connections():
    """A listener's records (``dest=0.0.0.0:0``) match a RST to any peer.  The RSTs a batch of watch's events
    prints are joined together in capture order, as the lab joins a capture's, so each gets the record
    logged for it.  Joined connection by connection, connection A's echo took the record of B's primary,
    captured before the echo (a lab run's join and watch's disagreed: INVALID_SYN against TCP_FLAGS)."""
    from types import SimpleNamespace

    from rstscope.verdicts import Verdict
    from rstscope.watch.engine import ResetSeen
    from rstscope.watch.session import Session

    t = 1_000.0

    def rst(frame: int, at: float, dst: str, verdict: Verdict):
        evidence = SimpleNamespace(src="10.0.0.1:8080", dst=dst, time_ns=round((t + at) * 1e9))
        return SimpleNamespace(frame=frame, evidence=evidence, verdict=verdict)

    def kernel() -> KernelJoin:
        join = KernelJoin()
        join._caught_up = float("inf")
        for at, reason in ((0.0, "INVALID_SYN"), (31e-6, "INVALID_SYN"), (50e-6, "TCP_FLAGS")):
            join._records.append({"event": "tcp_send_reset", "time": t + at, "src": "10.0.0.1:8080",
                                  "dst": "0.0.0.0:0", "reason": reason, "state": "TCP_LISTEN",
                                  "listener": True})  # fmt: skip
        return join

    a_primary = rst(302, 27e-6, "10.0.0.2:43685", Verdict.BACKLOG)
    b_primary = rst(303, 35e-6, "10.0.0.2:39929", Verdict.BACKLOG)
    a_echo = rst(305, 56e-6, "10.0.0.2:43685", Verdict.ECHO)
    events = [ResetSeen(record=a_primary, connection=None, resets=[a_primary, a_echo]),
              ResetSeen(record=b_primary, connection=None, resets=[b_primary])]  # fmt: skip
    session = SimpleNamespace(kernel=kernel(), _joined={})
    accounts = Session._kernel_accounts(session, events)
    assert {frame: a["reason"] for frame, a in accounts.items()} == {302: "INVALID_SYN", 303: "INVALID_SYN",
                                                                      305: "TCP_FLAGS"}  # fmt: skip
    by_connection = kernel()  # what joining A's RSTs first, then B's, gave
    assert [a["reason"] for a in by_connection.join([a_primary, a_echo])] == ["INVALID_SYN", "INVALID_SYN"]
