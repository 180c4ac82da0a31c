"""RSTs streamed (rstscope.reset_table): rows spilled to a file give the document that evidence and
verdicts held in memory gave, for JSON, CSV and the terminal alike."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest

from rstscope import analysis, document, evidence, reset_table
from rstscope.analysis import ResetRecord, analyze_capture
from rstscope.cli import Environment, run
from rstscope.document import combine, for_json, summary_document, write_json
from rstscope.report import text
from rstscope.verdicts import Verdict, classify
from tests.test_document import ROOT, shapes, typed

SAMPLE = ROOT / "captures" / "close-race" / "capture.pcapng"


@pytest.fixture(scope="module")
def storms(tmp_path_factory) -> list[Path]:
    """A small reset storm (every connection ends in a RST), a listener under a SYN flood (backlog resets:
    data lost) and short connections, generated."""
    where = tmp_path_factory.mktemp("storms")
    paths = []
    for shape, n in (("resets", 1500), ("flood", 1200), ("short", 2000)):
        path = where / f"{shape}.pcap"
        shapes.generate(path, shapes.SHAPES[shape], n)
        paths.append(path)
    return paths


@pytest.fixture
def spill_to_disk(monkeypatch):
    """Rows go to the temporary file from the first one, and are read back through small windows."""
    monkeypatch.setattr(reset_table, "ROW_MEMORY_BYTES", 0)
    monkeypatch.setattr(reset_table, "_WRITE_BYTES", 4096)
    monkeypatch.setattr(reset_table, "_READ_BYTES", 2048)


def held_in_memory(path: Path) -> tuple[list[dict], dict[int, dict]]:
    """The RST rows and per-connection fields as they were computed before streaming: every RST's evidence
    and verdict in memory, sorted by frame."""
    a = analyze_capture(path)
    store = a.connections
    records = [ResetRecord(evidence=ev, decision=classify(ev))
               for ev in evidence.collect(store.with_resets(), store.host_ttl)]  # fmt: skip
    by_conn: dict[int, list[ResetRecord]] = {}
    for r in records:
        by_conn.setdefault(r.evidence.connection, []).append(r)
    per_conn = {}
    for cid, rs in by_conn.items():
        primary = next((r for r in rs if r.verdict not in reset_table.NOT_PRIMARY), None)
        verdict = (primary or rs[0]).verdict
        per_conn[cid] = {
            "resets": [r.frame for r in rs],
            "verdict": verdict.value,
            "in_flight_at_reset": primary.evidence.in_flight if primary else None,
            "lost_data": bool(primary and primary.verdict in reset_table.LOST_DATA_VERDICTS),
        }
    return [document.reset_row(r) for r in records], per_conn


def streamed_json(analyses) -> dict:
    out = io.StringIO()
    write_json(analyses, out)
    return json.loads(out.getvalue())


def test_seconds_is_round_to_nanoseconds():
    rng = random.Random(7)
    for digits in range(1, 20):
        for _ in range(20_000):
            ns = rng.randrange(10**digits)
            assert reset_table.seconds(ns) == round(ns / 1e9, 9), ns


@pytest.mark.parametrize("index", [0, 1, 2], ids=["resets", "flood", "short"])
def test_spilled_rows_give_the_in_memory_document(storms, spill_to_disk, monkeypatch, index):
    path = storms[index]
    rows, per_conn = held_in_memory(path)
    spilled = analyze_capture(path)
    assert spilled.resets._spill.on_disk
    monkeypatch.setattr(reset_table, "ROW_MEMORY_BYTES", 1 << 30)
    in_memory = analyze_capture(path)
    assert not in_memory.resets._spill.on_disk
    assert typed(list(spilled.resets)) == typed([{k: v for k, v in r.items() if k != "capture"} for r in rows])
    new, old = streamed_json([spilled]), json.loads(json.dumps(for_json(combine([in_memory])), indent=1))
    assert typed(new) == typed(old)
    assert typed(new["resets"]) == typed(rows)
    assert len(rows) > 100
    for conn in new["connections"]:
        expected = per_conn.get(conn["id"], {"resets": [], "verdict": None, "in_flight_at_reset": None,
                                             "lost_data": False})  # fmt: skip
        assert {k: conn[k] for k in expected} == expected
    summary = combine([in_memory], all_connections=False)
    assert summary["summary"] == new["summary"]


def test_several_captures_streamed_and_spilled(storms, spill_to_disk):
    analyses = [analyze_capture(p) for p in (SAMPLE, *storms)]
    new = streamed_json(analyses)
    assert typed(new) == typed(json.loads(json.dumps(for_json(combine(analyses)), indent=1)))
    assert new["summary"]["connections_lost_data"] > document.LOST_LISTED
    assert [r["capture"] for r in new["resets"]] == sorted(r["capture"] for r in new["resets"])


def test_listen_queue_tallied_by_the_json_pass_equals_its_own_pass(storms):
    a = analyze_capture(storms[1])
    as_retired = a.listen_queue  # tallied as the connections retired
    a.listen_queue = None  # as a store that did not tally it gives it
    streamed_json([a])  # tallies it while writing the connection rows
    assert a.listen_queue_known
    assert a.listen_queue == analysis.listen_queue_evidence(a.connections) == as_retired
    assert a.listen_queue["synack_after_ack"]["count"] > 0


def terminal(doc: dict, *, show_echoes: bool, colour: bool) -> str:
    out = io.StringIO()
    text.write_summary(doc, out, colour=colour)
    text.write_table(doc, out, show_echoes=show_echoes, colour=colour)
    return out.getvalue()


@pytest.mark.parametrize("colour", [False, True])
def test_terminal_output_streamed_equals_the_in_memory_document(storms, spill_to_disk, colour):
    analyses = [analyze_capture(p) for p in (SAMPLE, *storms)]
    lazy = summary_document(analyses)
    assert isinstance(lazy["resets"], document.ResetRows)
    listed = combine(analyses, all_connections=False)
    assert isinstance(listed["resets"], list)
    for show_echoes in (False, True):
        assert terminal(lazy, show_echoes=show_echoes, colour=colour) == terminal(
            listed, show_echoes=show_echoes, colour=colour
        )
    assert document.distinct_fixes(lazy) == document.distinct_fixes(listed)
    assert len(lazy["resets"]) == len(listed["resets"])


def test_strongest_evidence_picks_as_the_row_loop_does(storms):
    """The column rule against text._strongest's loop over rows, on every capture and all together."""
    analyses = [analyze_capture(p) for p in (SAMPLE, *storms)]
    for group in [[a] for a in analyses] + [analyses]:
        lazy, listed = summary_document(group), combine(group, all_connections=False)
        assert text._strongest(lazy) == text._strongest(listed)


def test_analyze_csv_streams_the_rows(storms, spill_to_disk, monkeypatch, tmp_path):
    """``analyze --csv`` hands the writer a ResetRows (no list of all rows) and writes the rows the
    in-memory document gives."""
    seen = []
    write_csv = text.write_csv
    monkeypatch.setattr(text, "write_csv", lambda doc, out: seen.append(type(doc["resets"])) or write_csv(doc, out))
    target = tmp_path / "out.csv"
    argv = ["analyze", str(SAMPLE), *map(str, storms), "--csv", "-o", str(target)]
    status = run(argv, Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False,
                                   stderr_isatty=False))  # fmt: skip
    assert status == 0 and seen == [document.ResetRows]
    # Several files are ordered as captures by time (rstscope.fleet.pieces): the in-memory document of the
    # same captures, in the order the command chose, is the reference.
    listed = tmp_path / "doc.json"
    assert run(["analyze", str(SAMPLE), *map(str, storms), "--json", "-o", str(listed)], Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), stdout_isatty=False, stderr_isatty=False)) == 0  # fmt: skip
    order = [c["path"] for c in json.loads(listed.read_text())["captures"]]
    assert sorted(order) == sorted(map(str, (SAMPLE, *storms)))
    expected = io.StringIO()
    write_csv(combine([analyze_capture(p) for p in order], all_connections=False), expected)
    assert target.read_text() == expected.getvalue()
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) > 1000 and {r["capture"] for r in rows} == {"0", "1", "2", "3"}


def test_repeated_reads_and_random_access(storms, spill_to_disk):
    a = analyze_capture(storms[0])
    table = a.resets
    rows = list(table)
    assert list(table) == rows  # read back again: the same rows
    assert [r["frame"] for r in rows] == sorted(r["frame"] for r in rows)
    assert table[len(rows) // 2] == rows[len(rows) // 2] and table[-1] == rows[-1]
    assert table[3:6] == rows[3:6]
    cid = rows[len(rows) // 2]["connection"]
    assert a.resets_of(cid) == [r for r in rows if r["connection"] == cid]
    assert a.verdicts_of(cid) == [Verdict(r["verdict"]) for r in rows if r["connection"] == cid]
    assert a.verdict_counts() == {v: n for v in (x.value for x in Verdict)
                                  if (n := sum(r["verdict"] == v for r in rows))}  # fmt: skip


def test_no_resets():
    table = reset_table.empty()
    assert len(table) == 0 and list(table) == [] and table.verdict_counts() == {}
    assert table.connections_reset() == 0 and table.outcome_of(3) is None


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (ROOT / "captures").glob("*/capture.pcapng")))
def test_reset_subjects_give_the_evidence_of_connections(name):
    """The light objects evidence reads (ConnectionStore.reset_subjects) hold what a Connection holds for
    it: the same evidence and verdict, field for field, on every sample capture."""
    store = analyze_capture(ROOT / "captures" / name / "capture.pcapng").connections
    light = [evidence.of_connection(c, store.host_ttl) for c in store.reset_subjects()]
    full = [evidence.of_connection(c, store.host_ttl) for c in store.with_resets()]
    assert light == full
    assert [classify(ev) for evs in light for ev in evs] == [classify(ev) for evs in full for ev in evs]


@pytest.mark.parametrize("gap", [0, 50, 4096])
def test_gather_reads_rows_in_any_order_across_the_memory_and_the_file(gap):
    """Rows read back a block at a time (runs of nearby rows in one read) are the rows read one by one,
    whether they lie in the spill's file, in its memory, or across the two."""
    import numpy as np

    rng = random.Random(gap)
    spill = reset_table.RowSpill(memory_bytes=3000)
    rows = [bytes([65 + i % 26]) * rng.randint(1, 300) for i in range(400)]
    offsets = [spill.append(row) for row in rows]
    assert spill.on_disk and spill._pending  # some rows on disk, the last ones still in memory
    pick = [*rng.sample(range(len(rows)), 150), len(rows) - 1, 0, 0]  # any order, one row twice
    data, starts = reset_table.gather(
        spill.read_range, np.array([offsets[i] for i in pick]), np.array([len(rows[i]) for i in pick]), gap
    )
    assert [data[s : s + len(rows[i])] for s, i in zip(starts.tolist(), pick, strict=True)] == [rows[i] for i in pick]
    assert spill.read_range(offsets[5], offsets[390] - offsets[5]) == b"".join(rows[5:390])  # file, then memory


@pytest.mark.parametrize("connections", [0, 3, None])
def test_table_built_to_a_named_file_holds_every_row_there(storms, tmp_path, connections):
    """A fleet shard's part (``build(path=...)``): every encoded row is in the file, under the table's own
    offsets, whether the rows would have fitted in memory or not; the table reads the rows the default
    build gives."""
    import numpy as np

    store = analyze_capture(storms[0]).connections
    subjects = list(store.reset_subjects())[:connections]
    path = tmp_path / "part"
    named = reset_table.build(subjects, store.host_ttl, path=path)
    default = reset_table.build(subjects, store.host_ttl)
    assert list(named) == list(default)
    data = path.read_bytes()
    assert len(data) == int(np.sum(named._length))
    assert [data[o : o + n] for o, n in zip(named._offset.tolist(), named._length.tolist(), strict=True)] == list(
        named.raw_rows(np.arange(len(named)))
    )
