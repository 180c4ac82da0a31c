"""``rstscope report DIR`` over ``analyze --parquet DIR``: the fleet view."""

from __future__ import annotations

import pytest

from tests.fleet.conftest import document, rstscope

pytest.importorskip("pyarrow")


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
