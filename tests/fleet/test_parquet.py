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


def test_report_fleet_view(short_pieces, tmp_path):
    for host in ("alpha", "beta"):
        (tmp_path / "hosts" / host).mkdir(parents=True)
        for p in short_pieces:
            (tmp_path / "hosts" / host / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "pq"
    status, _, err = rstscope("analyze", str(tmp_path / "hosts"), "--by-host", r"hosts/(\w+)/", "--parquet", str(out),
                              "--summary-only")  # fmt: skip
    assert status == 0, err
    doc = document(str(short_pieces[0].parent))
    html = tmp_path / "fleet.html"
    status, _, err = rstscope("report", str(out), "-o", str(html))
    assert status == 0, err
    text = html.read_text()
    assert "Resets by verdict per host" in text and "Resets by verdict per hour" in text
    assert "<td>alpha</td>" in text and "<td>beta</td>" in text
    total = sum(1 for _ in doc["resets"])
    assert f"{2 * total:,} RSTs in {2 * len(short_pieces)} capture pieces of 2 hosts" in text
    lost = sum(c["lost_data"] for c in doc["connections"])
    assert f"{2 * lost:,} connections lost data in flight" in text
    assert text.count("<img") == 2  # per hour and per host
    assert (tmp_path / "fleet.md").is_file() and (tmp_path / "fleet-figures").is_dir()
