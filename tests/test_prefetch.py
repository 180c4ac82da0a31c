"""Reading in a child process gives the same analysis, and its failures stay one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from rstscope import analysis, api, prefetch
from rstscope.status import InputError, RstscopeError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from make_capture import generate

pytestmark = pytest.mark.skipif(not prefetch.available(), reason="needs os.fork and two CPUs")


def _doc(path, prefetch_bytes, monkeypatch):
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", prefetch_bytes)
    monkeypatch.setattr(analysis, "CHUNK_PACKETS", 4096)
    return api.document(analysis.analyze_capture(path))


def test_same_result_as_reading_in_process(tmp_path, monkeypatch):
    path = tmp_path / "gen.pcap"
    generate(str(path), 30_000, concurrency=25)
    forked = _doc(path, 0, monkeypatch)
    direct = _doc(path, 1 << 60, monkeypatch)
    assert forked["connections"] == direct["connections"] and forked["resets"] == direct["resets"]
    assert forked["captures"][0]["records"] == 30_000


def test_truncated_file_warns_through_the_child(tmp_path, monkeypatch):
    path = tmp_path / "gen.pcap"
    generate(str(path), 2_000, concurrency=10)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    doc = _doc(path, 0, monkeypatch)
    assert doc["captures"][0]["records"] == 1_999 and doc["captures"][0]["warnings"]


def test_unreadable_file_fails_in_the_parent(tmp_path, monkeypatch):
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(InputError):
        _doc(path, 0, monkeypatch)


def test_child_failure_becomes_an_error(tmp_path, monkeypatch):
    path = tmp_path / "gen.pcap"
    generate(str(path), 1_000, concurrency=10)
    capture = prefetch.PrefetchedCapture(path, chunk_packets=100)
    path.unlink()  # the child opens the file again: now it is gone
    with capture, pytest.raises(RstscopeError):
        list(capture.chunks())
