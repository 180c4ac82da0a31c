"""The benchmark's generated captures hold what benchmarks/shapes.py says they hold, by rstscope's own analysis."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rstscope import api
from rstscope.reader import open_capture

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import shapes


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes") / "short.pcap"
    manifest = shapes.generate(path, shapes.SHAPES["short"], 3000)
    return manifest, api.document(api.analyze(path))


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    path = tmp_path_factory.mktemp("shapes") / "flood.pcap"
    manifest = shapes.generate(path, shapes.SHAPES["flood"], 2000)
    return manifest, api.document(api.analyze(path))


def test_short_connections_are_short_and_about_100k_per_million_packets(short):
    manifest, doc = short
    assert doc["summary"]["connections"] == manifest.connections == 3000
    assert doc["summary"]["tcp_packets"] == manifest.packets
    sizes = [c["packets"]["client"] + c["packets"]["server"] for c in doc["connections"]]
    assert max(sizes) <= 12
    assert 9.0 <= manifest.packets / manifest.connections <= 11.0  # 90k-110k connections per 1M packets
    assert 90_000 <= shapes.connections_for(shapes.SHAPES["short"], 1_000_000) <= 110_000


def test_short_rst_share_ipv6_share_and_refused_syns(short):
    manifest, doc = short
    reset = sum(1 for c in doc["connections"] if c["resets"])
    assert reset == manifest.ending_in_rst
    assert 0.05 <= reset / manifest.connections <= 0.10
    ipv6 = sum(1 for c in doc["connections"] if c["ip_version"] == 6)
    assert ipv6 == manifest.ipv6
    assert 0.08 <= ipv6 / manifest.connections <= 0.12
    assert doc["summary"]["by_verdict"]["refused"] == manifest.refused > 0


def test_short_templates_end_as_described(short):
    manifest, doc = short
    states = Counter(c["conn_state"] for c in doc["connections"])
    by = manifest.by_template
    assert states == {
        "SF": by["normal"] + by["normal-2seg"],  # both FINs
        "RSTO": by["client-abort"],
        "RSTR": by["server-reset"],
        "REJ": by["refused"],
    }


def test_flood_is_half_open_handshakes_retransmissions_and_listener_resets(flood):
    manifest, doc = flood
    by = manifest.by_template
    assert doc["summary"]["connections"] == manifest.connections == 2000
    assert by["half-open"] / manifest.connections > 0.4
    lq = doc["listen_queue"]
    assert lq["synack_retransmitted"] == by["half-open"] + by["accept-drop"]
    assert lq["synack_after_ack"] == by["accept-drop"]
    assert lq["syn_retransmitted"] == lq["unanswered"] == by["unanswered"]
    senders = Counter((r["sender"], r["verdict"]) for r in doc["resets"])
    assert senders == {("server", "backlog"): by["listener-reset"]}
    states = Counter(c["conn_state"] for c in doc["connections"])
    assert states["S0"] == by["unanswered"]
    assert states["S1"] == by["half-open"] + by["accept-drop"]  # handshakes never finished or closed


def test_generation_is_seeded(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    shapes.generate(a, shapes.SHAPES["short"], 500, seed=1)
    shapes.generate(b, shapes.SHAPES["short"], 500, seed=1)
    shapes.generate(c, shapes.SHAPES["short"], 500, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()


def test_batches_merge_in_time_order(tmp_path, monkeypatch):
    """Connections of consecutive batches overlap in time (the flood's retransmissions come seconds
    later): the records must still be written in time order, and every connection whole."""
    monkeypatch.setattr(shapes, "BATCH", 100)
    path = tmp_path / "flood.pcap"
    manifest = shapes.generate(path, shapes.SHAPES["flood"], 900)
    with open_capture(path) as cap:
        ts = np.concatenate([chunk["ts_ns"] for chunk in cap.chunks()])
    assert len(ts) == manifest.packets
    assert (np.diff(ts) >= 0).all()
    assert ts[-1] - ts[0] > 3_000_000_000  # the last batch's 3 s retransmissions were written too
    doc = api.document(api.analyze(path))
    assert doc["summary"]["connections"] == 900
    assert (
        doc["listen_queue"]["synack_retransmitted"]
        == manifest.by_template["half-open"] + manifest.by_template["accept-drop"]
    )


def test_run_py_measures_each_shape_with_each_tool(tmp_path, capsys):
    import run

    argv = ["--shapes", "short", "flood", "--packets", "3000", "--repeat", "1", "--data", str(tmp_path)]
    assert run.main([*argv, "--capacity-loop", "100000"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ")]
    # The machine's cores, timed before and after: a loop alone, then two at once.
    assert re.search(r"cores, .*: before \d+\.\d\d s / \d+\.\d\d and \d+\.\d\d s, after \d+\.\d\d s / ", out)
    table = {(r[0].strip(), r[1].strip()): r for r in rows[1:]}
    for shape in ("short", "flood"):
        for tool in ("rstscope analyze", "rstscope analyze --json -o", "tshark -T fields", "tcptrace -n"):
            packets, seconds, rss = (table[shape, tool][i].strip() for i in (2, 3, 6))
            assert int(packets.replace(",", "")) > 2500
            assert float(seconds) > 0
            # RSS is sampled every 10 ms: tcptrace and tshark can finish a file this small before the
            # first sample sees more than their start-up; a Python process is always caught.
            assert float(rss.removesuffix(" MB")) > (20 if tool.startswith("rstscope") else 0)
    assert not list(tmp_path.glob("out-*.json"))  # the --json output is removed


def test_scratch_space_sees_the_dormant_connections_files(tmp_path):
    """``benchmarks/scratch_space.py`` finds the temporary files the command holds open (unlinked, so only
    its descriptors show them): a SYN flood's dormant connections go to such files; and its directory is
    gone after."""
    import scratch_space

    path = tmp_path / "flood.pcap"
    shapes.generate(path, shapes.SHAPES["flood"], 20_000)  # about 90,000 packets: thousands go dormant
    peak, _ = scratch_space.measure(path, [], str(tmp_path))
    assert peak > 1 << 20
    assert [p.name for p in tmp_path.iterdir()] == ["flood.pcap"]
