"""The incremental engine on committed lab captures fed as if live: the same primaries and verdicts as
``analyze``, each reported within the grace plus one step of the clock."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from rstscope.analysis import analyze_capture
from rstscope.reader import read_all
from rstscope.watch.engine import GRACE_NS, ConnectionEnded, Engine, ListenQueueSeen, ResetSeen

CAPTURES = Path(__file__).resolve().parents[2] / "captures"
RUNS = sorted(p.name for p in CAPTURES.iterdir() if (p / "capture.pcapng").exists())
STEP_NS = 50_000_000


def replay(path: Path, step_ns: int = STEP_NS, **engine_options):
    """Feed the capture in slices of ``step_ns`` of capture time, asking for due events after each slice
    with "now" at the slice's end; (events with the "now" they came at, listen-queue events)."""
    table, _ = read_all(path)
    engine = Engine(**engine_options)
    out, listen = [], []
    if not len(table):
        return engine, out, listen
    start = int(table["ts_ns"][0])
    bounds = np.searchsorted(table["ts_ns"], np.arange(start, int(table["ts_ns"][-1]) + 2 * step_ns, step_ns))
    now = start
    for lo, hi in itertools.pairwise(bounds):
        now += step_ns
        listen += engine.feed(table[lo:hi])
        out += [(e, now) for e in engine.due(now)]
    for _ in range(int(2 * GRACE_NS // step_ns)):  # the stream goes quiet: the clock still runs
        now += step_ns
        out += [(e, now) for e in engine.due(now)]
    out += [(e, None) for e in engine.finish()]
    return engine, out, listen


@pytest.mark.parametrize("run", RUNS)
def test_live_primaries_equal_analyze(run):
    path = CAPTURES / run / "capture.pcapng"
    analysis = analyze_capture(path)
    engine, events, listen = replay(path)
    assert engine.epochs == 1 and engine.counts.connections == len(analysis.connections)
    seen = [(e, now) for e, now in events if isinstance(e, ResetSeen)]
    expected = {}
    rows = list(analysis.resets)  # the document's rows, in frame order
    for cid in dict.fromkeys(r["connection"] for r in rows):
        primary = analysis.primary_reset(cid)
        if primary is not None:
            expected[cid] = (primary["frame"], primary["verdict"], primary["origin"], primary["in_flight"])
    got = {e.connection.id: (e.record.frame, e.record.verdict.value, e.record.evidence.origin.value,
                             e.record.evidence.in_flight) for e, _ in seen}  # fmt: skip
    assert got == expected
    for e, now in seen:  # reported in time: the grace, plus one step of the clock
        assert now is not None and now - e.record.evidence.time_ns <= GRACE_NS + STEP_NS
    ended = [e for e, _ in events if isinstance(e, ConnectionEnded)]
    assert sorted(r.frame for e in ended for r in ([e.primary] if e.primary else []) + e.others) == sorted(
        r["frame"] for r in rows
    )
    final = {r.frame: r.verdict.value for e in ended for r in e.others}
    assert final == {r["frame"]: r["verdict"] for r in rows if r["frame"] not in {v[0] for v in expected.values()}}
    lq = analysis.listen_queue
    kinds = [e.kind for e in listen]
    assert kinds.count("syn_retransmitted") == lq["syn_retransmitted"]["count"]
    assert kinds.count("synack_retransmitted") == lq["synack_retransmitted"]["count"]
    assert all(isinstance(e, ListenQueueSeen) for e in listen)
    assert not any(e.revised for e in ended)


def test_peek_leaves_tracking_undisturbed():
    """Peeking every connection between chunks changes nothing that finish() gives."""
    from rstscope.connections import Tracker

    path = CAPTURES / "close-race" / "capture.pcapng"
    table, _ = read_all(path)
    plain, peeked = Tracker(), Tracker()
    plain.feed(table)
    for lo in range(0, len(table), 97):
        peeked.feed(table[lo : lo + 97])
        copies = peeked.peek(range(len(peeked.connections)))
        assert [c.id for c in copies] == list(range(len(peeked.connections)))
        assert set(peeked.reset_ids().tolist()) == {c.id for c in copies if c.resets}
    a, b = plain.finish(), peeked.finish()
    assert a.host_ttl == b.host_ttl
    assert [(c.id, c.end_ns, c.packets, c.ttl, len(c.resets)) for c in a] == [
        (c.id, c.end_ns, c.packets, c.ttl, len(c.resets)) for c in b
    ]


@pytest.mark.parametrize("run", ["close-race", "backlog", "clean", "late-data", "keepalive"])
def test_epochs_hand_over_without_changing_verdicts(run):
    """New trackers every 2 connections, the old one dropped after 1 s without rows (10 s for keepalive:
    longer than any connection of these captures is idle): the same RSTs with the same verdicts
    (connection ids then count per epoch).  A connection idle across a whole handover is seen
    mid-stream afterwards: keepalive with a 1 s handover gives ``lone`` (the documented limit)."""
    path = CAPTURES / run / "capture.pcapng"
    analysis = analyze_capture(path)
    engine, events, _ = replay(path, epoch_syns=2, handover_quiet_ns=(10 if run == "keepalive" else 1) * 1_000_000_000)
    assert engine.epochs >= (3 if run == "backlog" else 2)  # backlog: an old tracker dropped on the way
    ended = [e for e, _ in events if isinstance(e, ConnectionEnded)]
    got = {r.frame: r.verdict.value for e in ended for r in ([e.primary] if e.primary else []) + e.others}
    assert got == {r["frame"]: r["verdict"] for r in analysis.resets}
    seen = {e.record.frame: e.record.verdict.value for e, _ in events if isinstance(e, ResetSeen)}
    primaries = [analysis.primary_reset(c) for c in dict.fromkeys(r["connection"] for r in analysis.resets)]
    assert seen == {p["frame"]: p["verdict"] for p in primaries if p is not None}


@pytest.mark.parametrize("run", ["close-race", "late-data"])
def test_retired_connections_are_judged_the_same(run, monkeypatch):
    """With retirement after 150 idle frames, the engine peeks connections that the tracker already
    retired (spilled): the verdicts are still ``analyze``'s under the same retirement."""
    from rstscope.connections import retire

    monkeypatch.setattr(retire, "STALE_AFTER_FRAMES", 150)
    path = CAPTURES / run / "capture.pcapng"
    analysis = analyze_capture(path)
    _, events, _ = replay(path, step_ns=20_000_000)
    ended = [e for e, _ in events if isinstance(e, ConnectionEnded)]
    got = {r.frame: (r.verdict.value, r.evidence.in_flight) for e in ended
           for r in ([e.primary] if e.primary else []) + e.others}  # fmt: skip
    assert got == {r["frame"]: (r["verdict"], r["in_flight"]) for r in analysis.resets}
