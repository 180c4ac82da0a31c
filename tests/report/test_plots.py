"""The figures: what they read, what their titles and axes say, and that they render headless."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from rstscope.report import plots
from rstscope.report import records as R
from rstscope.report import sections as S
from tests import scenarios
from tests.report.conftest import SAMPLES


def _png_pixels(fig) -> np.ndarray:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=60)
    buffer.seek(0)
    return imread(buffer)


def _not_blank(pixels: np.ndarray) -> bool:
    return float(pixels[..., :3].std()) > 0.05


# -- connection packets: the one place plots read the capture ------------------------------------------


def test_connection_packets_relative_to_each_sides_isn(close_race_doc):
    conn = close_race_doc["connections"][0]
    pk = plots.connection_packets(close_race_doc, conn)
    assert len(pk) == conn["packets"]["client"] + conn["packets"]["server"]
    server = pk.side == 1
    data = server & (pk.payload > 0)
    assert pk.seq[data].min() == 1  # the first payload byte is 1, as in Wireshark
    assert pk.seq[(pk.side == 0) & ((pk.flags & 0x02) != 0)][0] == 0  # the client's SYN
    # The RST's relative seq from the packets is the document's (same convention on both sides).
    rst = next(r for r in close_race_doc["resets"] if r["verdict"] == "close-race")
    assert pk.seq[pk.frame == rst["frame"]][0] == rst["seq"]


def test_connection_packets_across_wraparound(tmp_path):
    from scapy.utils import wrpcap

    path = tmp_path / "wrap.pcap"
    wrpcap(str(path), scenarios.wraparound_close_race().packets)
    doc = S.load([path])[0].doc
    pk = plots.connection_packets(doc, doc["connections"][0])
    server_data = pk.seq[(pk.side == 1) & (pk.payload > 0)]
    assert np.all(np.diff(server_data) > 0) and server_data.max() < 10 * scenarios.MSS


# -- time-sequence graph ----------------------------------------------------------------------------


def test_time_sequence_graph_shades_in_flight_and_states_the_finding(close_race_doc):
    conn = close_race_doc["connections"][0]
    fig = plots.time_sequence_figure(close_race_doc, conn)
    top = fig.axes[0]
    assert top.get_title(loc="left").startswith("Connection 0 (tcp.stream 0): server reset with 4.3 kB in flight")
    assert "relative sequence number (bytes)" in top.get_ylabel()
    assert fig.axes[1].get_xlabel() == "time since the connection's SYN (s)"
    shades = [p for p in top.patches if isinstance(p, Rectangle)]
    assert [p.get_height() for p in shades] == [3 * scenarios.MSS]
    texts = [t.get_text() for t in top.texts]
    assert any("4.3 kB in flight at the RST" in t for t in texts)
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert "3 echo RSTs of frame 12" in legend  # echoes grouped under one label
    assert _not_blank(_png_pixels(fig))


def test_time_sequence_graph_of_a_backlog_reset(backlog_run):
    doc = backlog_run.doc
    conn = next(c for c in doc["connections"] if c["verdict"] == "backlog")
    fig = plots.time_sequence_figure(doc, conn)
    title = fig.axes[0].get_title(loc="left")
    assert "never accepted" in title and "ECONNRESET" in title


# -- overview -------------------------------------------------------------------------------------------


def test_overview_of_a_lab_run(close_race_run):
    fig = plots.overview_figure(close_race_run.doc, label="close-race")
    ax = fig.axes[0]
    n = close_race_run.doc["summary"]["connections"]
    assert ax.get_title(loc="left") == f"close-race: {n} of {n} connections lost data ({n} close-race); " \
                                       f"{n} clients got ECONNRESET"  # fmt: skip
    assert ax.get_xlabel() == "time since first SYN (s)"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"close-race ({n})" in labels and "client read ECONNRESET" in labels


def _many_connections(n: int) -> dict:
    """A document shaped like the analyzer's, with ``n`` connections and no capture behind it."""
    verdicts = ["close-race", None, "backlog", None, "late-data"]
    conns, resets = [], []
    for i in range(n):
        verdict = verdicts[i % len(verdicts)]
        start = 1_700_000_000 + i * 0.01
        conns.append({"capture": 0, "id": i, "client": f"10.0.0.2:{30000 + i}", "server": "10.0.0.1:80",
                      "start": start, "end": start + 0.5, "first_frame": 1 + 10 * i, "last_frame": 10 + 10 * i,
                      "verdict": verdict, "phase": "reset" if verdict else "closed", "lost_data": verdict in
                      ("close-race", "backlog"), "in_flight_at_reset": 1000 if verdict else None,
                      "stream_bytes": {"client": 10, "server": 1000}, "history": "ShADadFf"})  # fmt: skip
        if verdict:
            resets.append({"capture": 0, "connection": i, "frame": 9 + 10 * i, "time": start + 0.4,
                           "verdict": verdict, "sender": "server", "in_flight": 1000, "findings": []})  # fmt: skip
    summary = {"connections": n, "resets": len(resets), "connections_lost_data": sum(c["lost_data"] for c in conns),
               "by_verdict": {}, "bytes_in_flight_at_loss": 0, "packets": 10 * n, "tcp_packets": 10 * n,
               "connections_reset": len(resets)}  # fmt: skip
    return {"captures": [{"index": 0, "path": "none", "warnings": []}], "connections": conns, "resets": resets,
            "summary": summary, "listen_queue": {}}  # fmt: skip


def test_overview_stays_readable_with_hundreds_of_connections():
    doc = _many_connections(600)
    fig = plots.overview_figure(doc)
    assert fig.get_figheight() <= plots.MAX_FIGURE_HEIGHT
    ax = fig.axes[0]
    assert len(ax.get_yticks()) <= 30  # labelled every few rows, not 600 overlapping labels
    assert ax.get_ylabel() == "600 connections, by first SYN"
    assert _not_blank(_png_pixels(fig))


# -- listen queue -------------------------------------------------------------------------------------


def test_listen_queue_shows_retransmissions_and_counters(backlog_run):
    doc = backlog_run.doc
    hs = plots.handshake_times(doc)
    with_syn = [c for c in doc["connections"] if c["history"][:1] == "S"]
    assert len(hs) == len(with_syn)
    retransmitted = sum(1 for c in with_syn if len(hs[(0, c["id"])]["syn"]) > 1)
    assert retransmitted == doc["listen_queue"]["syn_retransmitted"]
    fig = plots.listen_queue_figure(doc, label="backlog", handshakes=hs)
    title = fig.axes[0].get_title(loc="left")
    assert title.startswith(f"backlog: listen queue: {retransmitted} of {len(with_syn)} SYNs retransmitted")
    counter_text = fig.axes[2].texts[0].get_text()
    assert "ListenOverflows" in counter_text
    assert fig.axes[1].get_xlabel() == "time since first SYN (s)"


def test_listen_queue_without_a_run_says_counters_are_unknown(close_race_doc):
    fig = plots.listen_queue_figure(close_race_doc)
    assert "not known: a capture only" in fig.axes[2].texts[0].get_text()


# -- comparison and saving ------------------------------------------------------------------------------


def test_comparison_states_both_outcomes(close_race_run, lingering_run):
    a, b = close_race_run, lingering_run
    fig = plots.comparison_figure(a.doc, b.doc, a.label, b.label)
    n = a.doc["summary"]["connections"]
    assert fig._suptitle.get_text() == f"close-race {n}/{n} clients ECONNRESET  vs  lingering 0/{n} clients ECONNRESET"
    assert _not_blank(_png_pixels(fig))


def test_save_writes_png_and_svg(tmp_path, close_race_doc):
    paths = plots.save(plots.overview_figure(close_race_doc), tmp_path, "overview")
    assert [p.name for p in paths] == ["overview.png", "overview.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = paths[1].read_text()
    assert "<svg" in svg and "time since first SYN (s)" in svg  # text kept as text


@pytest.mark.parametrize("name", ["late-data", "refused", "clean", "backlog-silent"])
def test_every_sample_draws(name):
    path = SAMPLES / name
    if not (path / "run.json").is_file():
        pytest.skip(f"sample {path} missing")
    doc = S.load([path])[0].doc
    for conn in R.example_connections(doc, 1):
        assert _not_blank(_png_pixels(plots.time_sequence_figure(doc, conn)))
    assert plots.overview_figure(doc).axes[0].get_title(loc="left")
