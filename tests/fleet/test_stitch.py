"""Pieces of one capture analysed as one: the same resets and connections as the whole file."""

from __future__ import annotations

import pytest

from rstscope.reader import read_all
from tests.fleet.conftest import SAMPLE, document, without_added


def assert_same(stitched: dict, whole: dict, capture: int = 0) -> None:
    resets = [r for r in stitched["resets"] if r["capture"] == capture]
    conns = [c for c in stitched["connections"] if c["capture"] == capture]
    for row in resets + conns:
        row["capture"] = 0
    assert without_added(resets) == whole["resets"]
    assert without_added(conns) == whole["connections"]


@pytest.mark.parametrize("which", ["short", "sample"])
def test_pieces_equal_whole_file(which, short_capture, short_pieces, sample_pieces):
    whole_path, pieces = (short_capture, short_pieces) if which == "short" else (SAMPLE, sample_pieces)
    whole = document(str(whole_path))
    assert whole["resets"], "the capture must have RSTs for the comparison to mean something"
    by_dir = document(str(pieces[0].parent))
    assert len(by_dir["captures"]) == 1
    assert_same(by_dir, whole)
    assert by_dir["summary"] == whole["summary"]
    by_glob = document(str(pieces[0].parent / "piece_*"))
    by_files = document(*map(str, reversed(pieces)))  # order comes from the timestamps, not the names
    for doc in (by_glob, by_files):
        assert without_added(doc["resets"]) == without_added(by_dir["resets"])
        assert without_added(doc["connections"]) == without_added(by_dir["connections"])


def test_connections_cross_piece_boundaries(short_pieces):
    doc = document(str(short_pieces[0].parent))
    crossing = [c for c in doc["connections"] if c["file"] != c["last_file"]]
    assert len(crossing) >= 4  # at least one per boundary


def test_frames_map_back_to_files(short_pieces):
    doc = document(str(short_pieces[0].parent))
    pieces = doc["captures"][0]["pieces"]
    assert [p["path"] for p in pieces] == list(map(str, short_pieces))
    tables = {p: read_all(p)[0] for p in map(str, short_pieces)}
    for r in doc["resets"][::37]:
        start = next(p["first_frame"] for p in pieces if p["path"] == r["file"])
        assert r["frame"] == start + r["file_frame"] - 1
        row = tables[r["file"]][tables[r["file"]]["frame"] == r["file_frame"]]
        assert round(int(row["ts_ns"][0]) / 1e9, 9) == r["time"]
    for c in doc["connections"][::53]:
        assert (c["file"], c["file_frame"]) != (None, None)
