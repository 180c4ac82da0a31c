"""The tracker changes nothing it reports: ``analyze --json`` (and ``conns``) give the digests frozen in
tests/baselines/differential.json on every input we have (see tests/differential.py), and splitting a
capture into chunks of any size gives the document of one big chunk."""

from __future__ import annotations

import json

import pytest

from rstscope import analysis
from rstscope.document import combine
from tests import differential, shortconns


@pytest.mark.parametrize("group", list(differential.GROUPS))
def test_output_matches_the_frozen_digests(group, tmp_path):
    if group == "corpus" and not differential.CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {differential.CORPUS} (it sits beside the repository)")
    baseline = {k: v for k, v in differential.load_baseline().items() if k.startswith(f"{group}/")}
    current = differential.digests(group, tmp_path)
    assert current.keys() == baseline.keys(), "inputs added or gone: run python -m tests.differential --update"
    changed = sorted(name for name in current if current[name] != baseline[name])
    assert not changed, f"{len(changed)} of {len(current)} outputs changed: {changed[:20]}"


@pytest.mark.parametrize("group", ["sample", "corpus", "generated"])
def test_read_by_the_child_and_prepared_ahead_the_digests_are_the_same(group, tmp_path, monkeypatch):
    """Every capture read by the reader child in chunks of 64 packets, each chunk prepared in a thread while
    the one before is tracked (rstscope/ahead.py), gives the frozen digests: documents, warnings, errors
    (truncated, corrupt and undecodable captures among them)."""
    from rstscope import prefetch

    if not prefetch.available():
        pytest.skip("needs os.fork and two CPUs")
    if group == "corpus" and not differential.CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {differential.CORPUS} (it sits beside the repository)")
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0)
    monkeypatch.setattr(analysis, "READ_PACKETS", 64)
    made = []
    sliced = analysis.Tracker.sliced
    monkeypatch.setattr(analysis.Tracker, "sliced", staticmethod(lambda chunk: made.append(1) or sliced(chunk)))
    baseline = {k: v for k, v in differential.load_baseline().items() if k.startswith(f"{group}/")}
    current = {k: v for k, v in differential.digests(group, tmp_path).items() if not k.endswith(":conns")}
    changed = sorted(name for name in current if current[name] != baseline[name])
    assert not changed, f"{len(changed)} of {len(current)} outputs changed: {changed[:20]}"
    assert len(made) > 100  # the chunks went through the thread (many inputs are a few packets)


def _document(path, chunk: int) -> str:
    old = analysis.CHUNK_PACKETS
    analysis.CHUNK_PACKETS = chunk
    try:
        doc = combine([analysis.analyze_capture(path)])
    finally:
        analysis.CHUNK_PACKETS = old
    return json.dumps(doc, sort_keys=True)


@pytest.fixture(scope="module")
def short_capture(tmp_path_factory):
    path = tmp_path_factory.mktemp("short") / "short.pcap"
    packets = shortconns.generate(str(path), 400)
    return path, packets


@pytest.fixture(scope="module")
def unchunked(short_capture):
    path, packets = short_capture
    return _document(path, packets)


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_short_connections_do_not_depend_on_chunking(short_capture, unchunked, chunk):
    """Hundreds of interleaved short connections (refused, reset, closed, IPv6), cut at every size."""
    path, _packets = short_capture
    assert _document(path, chunk) == unchunked


def test_short_connection_capture_has_every_kind(unchunked):
    """The capture the chunking test uses exercises what it should (not an empty document)."""
    doc = json.loads(unchunked)
    assert doc["summary"]["connections"] == 400
    verdicts = doc["summary"]["by_verdict"]
    assert {"refused", "close-race", "abort", "echo"} <= verdicts.keys()
    assert {c["ip_version"] for c in doc["connections"]} == {4, 6}
