"""Pieces of one capture analysed as one: the same resets and connections as the whole file."""

from __future__ import annotations

import json
import shutil

import pytest

from rstscope.reader import read_all
from tests.fleet.conftest import SAMPLE, document, rstscope, without_added


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


def test_hosts_are_separate_captures(short_capture, short_pieces, tmp_path):
    for host in ("alpha", "beta"):
        (tmp_path / host).mkdir()
        for p in short_pieces:
            shutil.copy(p, tmp_path / host / p.name)
    whole = document(str(short_capture))
    doc = document(str(tmp_path / "*" / "*.pcap"), "--by-host", r"/(alpha|beta)/")
    assert [c["host"] for c in doc["captures"]] == ["alpha", "beta"]
    assert_same(doc, whole, 0)
    assert_same(doc, whole, 1)
    # Without --by-host the copies overlap in time: separate captures, and a warning says why.
    status, _, err = rstscope("analyze", str(tmp_path / "*" / "*.pcap"), "--summary-only")
    assert status == 0
    assert "overlaps" in err and "separate capture" in err


def test_interfaces_are_separate_captures():
    refused = SAMPLE.parent.parent / "refused" / "capture.pcapng"  # another run: another veth name
    doc = document(str(SAMPLE), str(refused))
    assert [c["pieces"][0]["path"] for c in doc["captures"]] == [str(SAMPLE), str(refused)]
    assert without_added(doc["resets"]) == [
        {**r, "capture": i} for i, p in enumerate((SAMPLE, refused)) for r in document(str(p))["resets"]
    ]


def test_gap_splits_captures(short_pieces):
    status, out, err = rstscope("analyze", "--json", str(short_pieces[0].parent), "--max-gap", "0")
    assert status == 0
    splits = err.count("more than --max-gap 0 s): analysed as a separate capture")
    assert splits >= 2  # pieces whose first packet shares the previous one's microsecond stay together
    assert len(json.loads(out)["captures"]) == splits + 1


def test_bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    status, _, err = rstscope("analyze", str(empty))
    assert status == 2 and err.startswith("rstscope: error: ") and "no capture files" in err and "empty" in err
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("not a capture\n")
    status, _, err = rstscope("analyze", str(junk))
    assert status == 2 and "none a pcap or pcapng" in err and "Traceback" not in err
    status, _, err = rstscope("analyze", str(tmp_path / "nothing-*.pcap"))
    assert status == 2 and "no file matches" in err
    shutil.copy(SAMPLE, junk / "a.pcapng")
    status, _, err = rstscope("analyze", str(junk), "--summary-only")
    assert status == 0 and "skipped 1 file(s) that are not captures (notes.txt)" in err
    status, _, err = rstscope("analyze", str(junk), "--by-host", "(")
    assert status == 2 and "--by-host" in err
