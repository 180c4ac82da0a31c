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


def _rows_by_numpy(table: np.ndarray, ev: np.ndarray, history: np.ndarray, ident: np.ndarray) -> np.ndarray:
    """Connection rows from slot state (rows of the four per-slot arrays), column by column: the tracker's
    formulation before its rows were made in C (``tracker._conn_rows``), kept here as the reference."""
    from rstscope.connections.events import lib
    from rstscope.connections.retire import packed
    from rstscope.connections.sequence import ConnArrays
    from rstscope.grouped import NONE

    col = {name: table[:, i] for i, name in enumerate(ConnArrays.INT_COLUMNS)}
    f = {"end_ns": col["last_ns"], "last_frame": col["last_frame"], "history_len": ev[:, lib.EV_HLEN],
         "history": np.where(np.arange(history.shape[1]) < ev[:, lib.EV_HLEN, None], history, 0),
         "handshake_ack_frame": ev[:, lib.EV_HS_ACK]}  # fmt: skip
    for name, at, width in (("state", lib.EV_STATE, 2), ("prev_state", lib.EV_PREV, 2), ("isn", lib.EV_ISN, 2),
                            ("syn", lib.EV_SYN_N, 3), ("synack", lib.EV_SA_N, 3), ("synack_after_ack", lib.EV_SAA_N, 3),
                            ("fin_frame", lib.EV_FIN, 2), ("first_payload_frame", lib.EV_PAYLOAD, 2),
                            ("probes_n", lib.EV_PROBE_N, 2)):  # fmt: skip
        f[name] = ev[:, at : at + width]
    for name, a in (("packets", "pkts"), ("payload_bytes", "bytes"), ("retransmissions", "retx"),
                    ("zero_windows", "zw"), ("ttl_low", "ttl_min"), ("ttl_high", "ttl_max"), ("ttl_n", "ttl_n"),
                    ("timestamped", "ts_n")):  # fmt: skip
        f[name] = np.stack([col[a + "0"], col[a + "1"]], axis=1)
    stream, unacked = [], []
    for s in (0, 1):
        first, end, peer_ack = col[f"first_seq_val{s}"], col[f"max_end{s}"], col[f"max_ack{1 - s}"]
        known = (first != NONE) & (end != NONE)
        syn_fin = (ev[:, lib.EV_ISN + s] >= 0).astype(np.int64) + (ev[:, lib.EV_FIN + s] >= 0)
        stream.append(np.where(known, np.maximum(0, end - first - syn_fin), 0))
        unacked.append(np.where(known & (peer_ack != NONE), np.maximum(0, end - peer_ack), NONE))
    f["stream_bytes"], f["unacked_bytes"] = np.stack(stream, axis=1), np.stack(unacked, axis=1)
    return packed(CONN_ROW, len(table), f, head=ident)


def test_rows_made_in_c_are_the_numpy_rows(tmp_path, monkeypatch):
    """The connection rows the tracker makes in one C pass equal the column-by-column formulation, byte for
    byte, for live slots mid-capture (short connections with RSTs, refusals, retransmissions) and for
    dormant records (a SYN flood's half-open handshakes)."""
    import sys

    from rstscope.connections import tracker as tracker_module
    from tests import differential

    sys.path.insert(0, str(differential.REPO / "benchmarks"))
    import shapes

    short, flood = tmp_path / "short.pcap", tmp_path / "flood.pcap"
    shortconns.generate(str(short), 3_000)
    shapes.generate(flood, shapes.SHAPES["flood"], 3_000)
    monkeypatch.setattr(tracker_module, "DORMANT_AFTER_FRAMES", 300)  # half-open handshakes go dormant soon
    checked, records_checked = 0, 0
    for path in (short, flood):
        tracker = Tracker()
        _feed(tracker, path, stop_after=2)
        slots = np.flatnonzero(tracker._conn_of_slot[: tracker._arrays.size] >= 0)
        state = tracker._slot_state(slots)
        made = tracker_module._conn_rows(state)
        cols = tracker._events.columns
        reference = _rows_by_numpy(tracker._arrays.table[slots], cols.ev[slots], cols.history[slots],
                                   retire.taken(tracker._ident, slots))  # fmt: skip
        assert made.tobytes() == reference.tobytes()
        dormant = tracker._dormant.ids()
        if len(dormant):
            records, _, probes = tracker._dormant.records(dormant)
            made = tracker_module._conn_rows(tracker_module._record_state(records, probes))
            reference = _rows_by_numpy(records["table"], records["ev"], records["history"], records["ident"])
            assert made.tobytes() == reference.tobytes()
            records_checked += len(dormant)
        checked += len(slots) + len(dormant)
        assert (made["history_len"] > 0).all() and (made["packets"].sum(axis=1) > 0).all()
    assert checked > 500 and records_checked > 100


def test_spill_positions_take_four_bytes_a_connection_until_they_need_eight(monkeypatch):
    """The spill's index (connection id -> its row) is kept for every connection of the capture: int32,
    until a row's position passes 2**31 - 1, from when it is int64 (the rows still read back by id)."""
    rows = np.zeros(4, CONN_ROW)
    rows["id"] = [0, 1, 2, 3]
    rows["packets"][:, 0] = [10, 11, 12, 13]
    spill = retire.Spill()
    spill.put(rows[:2], {}, {})
    assert spill._at.dtype == np.int32
    append = spill.conns.append
    monkeypatch.setattr(spill.conns, "append", lambda got: append(got) + 2**31 - 2)  # as if the file were that long
    spill.put(rows[2:], {}, {})
    assert spill._at.dtype == np.int64 and spill._at[:4].tolist() == [0, 1, 2**31 - 2 + 2, 2**31 - 2 + 3]
    assert spill.rows(np.array([0, 1]))["packets"][:, 0].tolist() == [10, 11]
