"""The JSON document: the streamed writer (orjson) gives the json module's document, value for value."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from rstscope import document
from rstscope.analysis import analyze_capture
from rstscope.document import LOST_LISTED, combine, for_json, write_json

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted((ROOT / "captures").glob("*/capture.pcap*"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import shapes  # noqa: E402


def typed(value):
    """``value`` with every scalar paired with its type: 1, 1.0 and True compare equal in Python."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, value)


def streamed(analyses) -> dict:
    out = io.StringIO()
    write_json(analyses, out)
    return json.loads(out.getvalue())


def json_module_document(analyses) -> dict:
    return json.loads(json.dumps(for_json(combine(analyses)), indent=1))


@pytest.fixture(scope="module")
def flood(tmp_path_factory):
    """A generated capture with hundreds of connections that lost data (backlog resets), 10 % IPv6."""
    path = tmp_path_factory.mktemp("doc") / "flood.pcap"
    shapes.generate(path, shapes.SHAPES["flood"], 1500)
    return analyze_capture(path)


def test_there_are_sample_captures():
    assert len(SAMPLES) >= 6


@pytest.mark.parametrize("capture", SAMPLES, ids=lambda p: p.parent.name)
def test_streamed_document_equals_json_module_document(capture):
    analyses = [analyze_capture(capture)]
    new, old = streamed(analyses), json_module_document(analyses)
    assert typed(new) == typed(old)
    assert list(new) == list(old)  # key order too


def test_streamed_document_of_several_captures_and_a_generated_one(flood):
    analyses = [analyze_capture(SAMPLES[0]), flood, analyze_capture(SAMPLES[-1])]
    new, old = streamed(analyses), json_module_document(analyses)
    assert typed(new) == typed(old)
    assert new["summary"]["connections_lost_data"] > LOST_LISTED
    assert {c["capture"] for c in new["connections"]} == {0, 1, 2}


def test_rows_are_one_per_line(flood):
    out = io.StringIO()
    write_json([flood], out)
    lines = out.getvalue().splitlines()
    connection_lines = [line for line in lines if line.startswith('  {"capture":') and '"conn_state"' in line]
    assert len(connection_lines) == len(flood.connections)


def test_summary_document_builds_only_the_rows_the_terminal_prints(flood, monkeypatch):
    built = []
    row = document.connection_row
    monkeypatch.setattr(document, "connection_row", lambda a, c, i=0: built.append(c.id) or row(a, c, i))
    summary_doc = combine([flood], all_connections=False)
    assert len(built) == LOST_LISTED
    monkeypatch.setattr(document, "connection_row", row)
    full = combine([flood])
    assert summary_doc["summary"] == full["summary"]
    lost = sorted((c for c in full["connections"] if c["lost_data"]), key=lambda c: -(c["in_flight_at_reset"] or 0))
    assert summary_doc["connections"] == lost[:LOST_LISTED]
    assert full["summary"]["connections_lost_data"] == len(lost)


def test_undecodable_file_name_is_written_escaped(tmp_path):
    name = os.fsdecode(b"caf\xe9.pcapng")  # Latin-1 bytes in a UTF-8 file system: a lone surrogate
    path = tmp_path / name
    shutil.copy(SAMPLES[0], path)
    analyses = [analyze_capture(path)]
    new = streamed(analyses)
    assert new["captures"][0]["path"].endswith("caf\\xe9.pcapng")
    assert typed(new) == typed(json_module_document(analyses))
