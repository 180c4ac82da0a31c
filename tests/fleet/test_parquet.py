"""``--parquet DIR``: one file per piece, the JSON rows back when read."""

from __future__ import annotations

from pathlib import Path

import pytest

from rstscope.report.text import CSV_COLUMNS
from tests.fleet.conftest import document, rstscope

pq = pytest.importorskip("pyarrow.parquet")


def test_parquet_round_trip(short_pieces, tmp_path):
    out = tmp_path / "pq"
    status, _, err = rstscope("analyze", str(short_pieces[0].parent), "--parquet", str(out), "--summary-only")
    assert status == 0, err
    doc = document(str(short_pieces[0].parent))
    reset_files = sorted((out / "resets").glob("*.parquet"))
    conn_files = sorted((out / "connections").glob("*.parquet"))
    assert [f.stem for f in conn_files] == [p.name.split(".")[0] for p in short_pieces]
    resets = [r for f in reset_files for r in pq.read_table(f).to_pylist()]
    conns = [c | {"stored_in": f.stem} for f in conn_files for c in pq.read_table(f).to_pylist()]
    assert len(resets) == len(doc["resets"]) and len(conns) == len(doc["connections"])
    by_frame = {r["frame"]: r for r in doc["resets"]}
    for r in resets:
        want = by_frame[r["frame"]]
        assert {c: r[c] for c in CSV_COLUMNS if c != "kernel_reason"} == {
            c: want[c] for c in CSV_COLUMNS if c != "kernel_reason"
        }
        assert (r["host"], r["file"], r["file_frame"]) == ("", want["file"], want["file_frame"])
    by_id = {c["id"]: c for c in doc["connections"]}
    for c in conns:
        want = by_id[c["id"]]
        assert c["packets_client"] == want["packets"]["client"]
        assert c["unacked_bytes_server"] == want["unacked_bytes"]["server"]
        assert (c["resets"], c["findings"], c["verdict"], c["file"]) == (
            want["resets"],
            want["findings"],
            want["verdict"],
            want["file"],
        )
        assert c["stored_in"] == Path(c["file"]).name.split(".")[0]  # the piece of its first frame


def test_unwritable_parquet_directory_fails_first(short_pieces, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a directory")
    status, out, err = rstscope("analyze", str(short_pieces[0].parent), "--parquet", str(blocked / "pq"))
    assert status == 2 and out == ""
    assert err.startswith("rstscope: error: --parquet ") and err.count("\n") == 1


@pytest.mark.root
def test_a_full_disk_leaves_whole_files_or_none(short_pieces, tmpfs):
    """The Parquet files need ~400 KB and the disk has 128 KB: one line, exit 2; no temporary file is
    left, and each file that is there reads whole."""
    out = tmpfs("128k") / "pq"
    status, _, err = rstscope("analyze", str(short_pieces[0].parent), "--parquet", str(out), "--summary-only")
    assert status == 2
    assert err.startswith(f"rstscope: error: --parquet {out}: cannot write (") and err.count("\n") == 1, err
    assert "No space left on device" in err
    left = sorted(p.name for p in out.rglob("*") if p.is_file())
    assert all(name.endswith(".parquet") and not name.startswith(".") for name in left), left
    for path in out.rglob("*.parquet"):
        assert pq.read_table(path).num_rows > 0
