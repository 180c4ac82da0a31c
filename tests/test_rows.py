"""Connections as rows and back (rstscope/connections/rows.py): a connection read from its rows is the
connection the tracker built, whether it was retired to the spill file, still live (``peek``), or
finished."""

from __future__ import annotations

import numpy as np

from rstscope.connections import Tracker, retire
from rstscope.connections.rows import CONN_ROW, LETTERS, history_text
from rstscope.reader import open_capture
from tests import shortconns
from tests.tracker_reference import connection_text


def _feed(tracker: Tracker, path, stop_after: int | None = None) -> None:
    with open_capture(path, chunk_packets=1000) as cap:
        for i, chunk in enumerate(cap.chunks()):
            if stop_after is not None and i == stop_after:
                return
            tracker.feed(chunk)


def test_peek_is_what_finish_would_give(tmp_path, monkeypatch):
    """``peek`` copies live and retired connections without changing what tracking goes on to find."""
    monkeypatch.setattr(retire, "LIVE_CLOSED_LIMIT", 30)
    monkeypatch.setattr(retire, "PRESSURE_IDLE_FRAMES", 500)
    monkeypatch.setattr(retire, "PRESSURE_IDLE_NS", 0)
    monkeypatch.setattr(retire, "SPILL_BATCH", 50)  # the spill file is written and read back
    path = tmp_path / "short.pcap"
    shortconns.generate(str(path), 400)
    peeking, stopped = Tracker(), Tracker()
    _feed(peeking, path, stop_after=3)
    ids = np.arange(peeking.count)
    live = peeking._slot_of[ids] >= 0
    assert live.any() and (~live).any()  # both kinds are peeked at
    peeked = [connection_text(c) for c in peeking.peek(ids[::-1])][::-1]
    _feed(stopped, path, stop_after=3)
    assert peeked == [connection_text(c) for c in stopped.finish()]
    with open_capture(path, chunk_packets=1000) as cap:  # tracking goes on as if nobody had looked
        for chunk in list(cap.chunks())[3:]:
            peeking.feed(chunk)
    whole = Tracker()
    _feed(whole, path)
    assert [connection_text(c) for c in peeking.finish()] == [connection_text(c) for c in whole.finish()]


def test_history_codes_decode_both_cases():
    codes = bytes([LETTERS.index("S"), LETTERS.index("H") + 16, LETTERS.index("^"), LETTERS.index("D") + 16])
    assert history_text(codes) == "Sh^d"


def test_connection_row_is_compact():
    """A retired connection costs about half a kilobyte of rows, not a few kilobytes of objects (PLAN.md §4;
    its keepalive probes, rare, are rows of a table of their own)."""
    assert CONN_ROW.itemsize <= 512


def test_keepalive_probes_come_back_from_their_own_table(tmp_path):
    """A connection's keepalive probes are rows of a table of their own (``PROBE_ROW``), one row for a
    connection that sent any: read back through the spill they are the probes the tracker saw, as when the
    connection is still live."""
    from scapy.utils import wrpcap

    from tests import scenarios_wild

    sc = scenarios_wild.keepalive_timeout()  # probe, probe, the server's RST
    path = tmp_path / "keepalive.pcap"
    wrpcap(str(path), sc.packets)
    n = len(sc.packets)
    expected = [(frame, round(float(sc.packets[frame - 1].time) * 1e6) * 1000) for frame in (n - 2, n - 1)]  # pcap: µs
    tracker = Tracker()
    _feed(tracker, path)
    (live,) = tracker.peek([0])
    store = tracker.finish()
    (retired,) = list(store)
    assert retired.keepalive_probes == live.keepalive_probes == [[], expected]  # the server (responder) probed
    assert len(store._spill.tables["probes"]) == 1
    assert connection_text(retired) == connection_text(live)
