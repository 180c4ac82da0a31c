"""Dormant connections (rstscope/connections/dormant.py): open connections that went idle leave memory
and come back, unchanged, when their 4-tuple sends again."""

from __future__ import annotations

import sys

import numpy as np

from rstscope.connections import dormant, retire, tracker
from tests import differential, tracker_reference


def test_dormant_connections_come_back_as_they_were(tmp_path, monkeypatch):
    sys.path.insert(0, str(differential.REPO / "benchmarks"))
    import shapes

    path = tmp_path / "flood.pcap"
    shapes.generate(path, shapes.SHAPES["flood"], 3_000)  # half-open handshakes, SYN-ACKs retransmitted later
    with monkeypatch.context() as m:
        m.setattr(tracker.Tracker, "_sleep", lambda self, slots: None)  # open connections stay in memory
        with_nothing_dormant = tracker_reference.tracker_digest(path, chunk_packets=4096)
    monkeypatch.setattr(tracker, "DORMANT_AFTER_FRAMES", 300)  # the threshold changes no result: try a small one
    monkeypatch.setattr(retire, "SPILL_BATCH", 50)  # dormant rows go to the file...
    monkeypatch.setattr(dormant, "COMPACT_AFTER", 100)  # ... which is compacted
    woken, slept = [], []
    sleep, wake = tracker.Tracker._sleep, tracker.Tracker._wake

    def spy_sleep(self, slots):
        slept.append(len(slots))
        sleep(self, slots)

    def spy_wake(self, ids):
        woken.append(len(ids))
        wake(self, ids)

    compactions = []
    compact = dormant.Dormant._compact
    monkeypatch.setattr(dormant.Dormant, "_compact", lambda self: compactions.append(1) or compact(self))
    monkeypatch.setattr(tracker.Tracker, "_sleep", spy_sleep)
    monkeypatch.setattr(tracker.Tracker, "_wake", spy_wake)
    with_dormancy = tracker_reference.tracker_digest(path, chunk_packets=4096)
    assert sum(slept) > 500 and sum(woken) > 500  # many went dormant, and many came back (besides the end)
    assert compactions
    assert with_dormancy == with_nothing_dormant


def test_dormant_rows_keep_the_whole_slot():
    """Every per-slot column of the sequence pass is kept (a column added there is kept too)."""
    from rstscope.connections.dormant import Dormant
    from rstscope.connections.sequence import ConnArrays

    assert set(ConnArrays.INT_COLUMNS) <= set(Dormant(np.dtype([("id", np.int64)])).layout)
