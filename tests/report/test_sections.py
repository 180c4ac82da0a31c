"""What the report says, read from the document: outcomes, stream numbers, lookups, the summary."""

from __future__ import annotations

import pytest

from rstscope.report import records as R
from rstscope.report import sections as S
from rstscope.status import InputError


def _doc(*conns: dict) -> dict:
    return {"connections": list(conns), "resets": [], "captures": [{"index": 0}]}


def _conn(id_: int, first: int, client: str = "10.0.0.2:4000", server: str = "10.0.0.1:80", **kw) -> dict:
    return {"capture": 0, "id": id_, "first_frame": first, "client": client, "server": server, **kw}


def test_stream_index_is_the_rank_of_the_first_frame():
    doc = _doc(_conn(0, 325), _conn(1, 11), _conn(2, 1))
    assert R.stream_indices(doc) == {(0, 0): 2, (0, 1): 1, (0, 2): 0}


# -- --connection ---------------------------------------------------------------------------------
DOC = _doc(
    _conn(0, 5, "10.0.0.2:4000"),
    _conn(1, 1, "10.0.0.2:4001"),
    _conn(2, 9, "[2001:db8::2]:4002", "[2001:db8::1]:443"),
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1", 1),  # the document's id
        ("tcp.stream=0", 1),  # Wireshark's index: first frame order
        ("tcp.stream == 1", 0),
        ("10.0.0.2:4000-10.0.0.1:80", 0),  # 4-tuple, either order, several separators
        ("10.0.0.1:80 10.0.0.2:4001", 1),
        ("10.0.0.1:80,10.0.0.2:4001", 1),
        ("10.0.0.2:4001", 1),  # one endpoint
        (":4002", 2),  # a port
        ("[2001:db8::2]:4002-[2001:db8::1]:443", 2),
    ],
)
def test_find_connection(spec, expected):
    assert R.find_connection(DOC, spec)["id"] == expected


@pytest.mark.parametrize(("spec", "message"), [("7", "no such connection"), (":80", "matches 2 connections"),
                                               ("tcp.stream=x", "wants a number")])  # fmt: skip
def test_find_connection_errors_are_one_line(spec, message):
    with pytest.raises(InputError, match=message):
        R.find_connection(_doc(*DOC["connections"][:2]), spec)


def test_outcome_of_connections_without_reset():
    assert R.connection_outcome({"verdict": None, "phase": "closed"}) == R.OUTCOME_CLEAN
    assert R.connection_outcome({"verdict": None, "phase": "handshake"}) == R.OUTCOME_INCOMPLETE
    assert R.connection_outcome({"verdict": "backlog", "phase": "reset"}) == "backlog"


def test_format_bytes():
    assert [R.format_bytes(n) for n in (None, 0, 999, 4344, 1_250_000)] == ["?", "0 B", "999 B", "4.3 kB", "1.2 MB"]


# -- the report's words ----------------------------------------------------------------------------


def test_summary_headline_of_a_close_race(close_race_doc):
    sentences = S.summary_sentences(close_race_doc)
    assert sentences[0] == ("1 connection of 1 lost data: 1 by a close race (the sender aborted with data in flight), "
                            "with 4.3 kB in flight at those resets.")  # fmt: skip
    assert any("1 primary and 3 echoes" in s for s in sentences)


def test_example_connections_pick_the_most_in_flight(close_race_run):
    doc = close_race_run.doc
    [best] = R.example_connections(doc, 1)
    assert best["in_flight_at_reset"] == max(c["in_flight_at_reset"] or 0 for c in doc["connections"])


def test_single_report_sections(close_race_run):
    blocks = S.single_report(close_race_run)
    headings = [b.text for b in blocks if isinstance(b, S.Heading)]
    assert headings == ["rstscope report: close-race", "Summary", "RSTs by verdict", "Figures",
                        "Connections that lost data", "Evidence per RST", "Agreement with the kernel (lab run)",
                        "Recommended fix"]  # fmt: skip
    figures = [b.name for b in blocks if isinstance(b, S.FigureBlock)]
    assert figures[0] == "overview" and figures[-1].startswith("connection-")


def test_a_compare_directory_stands_for_its_runs(tmp_path, close_race_run, lingering_run):
    (tmp_path / "a").symlink_to(close_race_run.source.resolve(), target_is_directory=True)
    (tmp_path / "b").symlink_to(lingering_run.source.resolve(), target_is_directory=True)
    assert [p.name for p in S.expand_inputs([tmp_path])] == ["a", "b"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no run directories inside it"):
        S.expand_inputs([empty])
