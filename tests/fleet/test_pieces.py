"""Which files are pieces of one capture: hosts, interfaces, gaps, overlaps, bad inputs."""

from __future__ import annotations

import json
import shutil

from tests.fleet.conftest import SAMPLE, document, rstscope, without_added
from tests.fleet.test_stitch import assert_same


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
