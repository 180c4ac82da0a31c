"""The compiled event loop computes what the per-row Python event pass computed: every public field of
every connection, RST observation, finding and segment after a reset, on the differential inputs and on
benchmark shapes large enough to retire and spill (digests in tests/baselines/tracker.json, frozen from
the Python event pass; see tests/tracker_reference.py)."""

from __future__ import annotations

import json

import pytest

from tests import differential, tracker_reference


@pytest.mark.parametrize("group", list(tracker_reference.GROUPS))
def test_tracker_records_match_the_reference(group, tmp_path):
    if group == "corpus" and not differential.CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {differential.CORPUS}")
    baseline = json.loads(tracker_reference.BASELINE.read_text())
    baseline = {k: v for k, v in baseline.items() if k.split("/")[0] == group}
    current = tracker_reference.digests(group, tmp_path)
    assert current.keys() == baseline.keys()
    changed = sorted(name for name in current if current[name] != baseline[name])
    assert not changed, f"{len(changed)} of {len(current)} inputs changed: {changed[:20]}"


@pytest.fixture(scope="module")
def short_shape(tmp_path_factory):
    """A generated short-connection capture over more than one 64k-packet chunk (port reuse and RSTs
    cross the chunk boundaries)."""
    import sys

    sys.path.insert(0, str(differential.REPO / "benchmarks"))
    import shapes

    path = tmp_path_factory.mktemp("shape") / "short.pcap"
    manifest = shapes.generate(path, shapes.SHAPES["short"], 9_000)
    assert manifest.packets > 65_536 and manifest.ending_in_rst > 300
    return path


def test_short_connections_do_not_depend_on_chunk_or_feed_size(short_shape, monkeypatch):
    from rstscope.connections import tracker

    whole = tracker_reference.tracker_digest(short_shape, chunk_packets=1 << 24)  # one chunk
    assert tracker_reference.tracker_digest(short_shape, chunk_packets=65_536) == whole
    monkeypatch.setattr(tracker, "FEED_ROWS", 1_000)
    assert tracker_reference.tracker_digest(short_shape, chunk_packets=65_536) == whole
    assert tracker_reference.tracker_digest(short_shape, chunk_packets=1 << 24) == whole


def test_event_batches_cut_at_resets_change_nothing(short_shape, monkeypatch):
    """The event pass runs a slice in batches of EVENT_BATCH RSTs: cut after every third RST (batches
    that end anywhere, dozens a slice), the records are those of one batch a slice."""
    from rstscope.connections import events

    whole = tracker_reference.tracker_digest(short_shape)
    cuts = []
    run = events.EventPass._run
    monkeypatch.setattr(
        events.EventPass, "_run", lambda self, idx, *a, **k: cuts.append(len(idx)) or run(self, idx, *a, **k)
    )
    monkeypatch.setattr(events, "EVENT_BATCH", 3)
    assert tracker_reference.tracker_digest(short_shape) == whole
    assert len(cuts) > 150  # the capture's 700-odd RSTs, three a batch
