"""Connection rows and the listen queue from row batches (rstscope/columns.py) are the ones built from
Connection objects (``document.connection_row``, ``analysis.ListenQueueTally``), byte for byte."""

from __future__ import annotations

import io

import numpy as np
import orjson
import pytest

from rstscope import analysis, columns, document, reset_table
from rstscope.connections import retire
from rstscope.connections.records import EndpointState
from rstscope.connections.rows import CONN_ROW, STATES
from rstscope.grouped import NONE
from rstscope.packets import IPV4_MAPPED_HI
from tests import shortconns as S

C, V = S.CLIENT, S.SERVER
_RESETS_AGAIN = [(C, S.SYN, 0, 0, 0), (V, S.SYN | S.ACK, 0, 1, 0), (C, S.ACK, 1, 1, 0), (C, S.PSH | S.ACK, 1, 1, 100)]
for _k in range(25):  # RSTs at new sequence numbers: a history longer than a row's 24 letters
    _RESETS_AGAIN += [(V, S.PSH | S.ACK, 1 + 10 * _k, 101, 10), (C, S.RST, 101 + 1000 * _k, 0, 0)]
_RESETS_AGAIN += [(C, S.PSH | S.ACK, 200, 1, 50), (C, S.SYN, 0, 0, 0)]  # data and a SYN after its RST: findings
TEMPLATES = {
    **S.TEMPLATES,
    "resets_again": S.template(*_RESETS_AGAIN),
    "unanswered": S.template((C, S.SYN, 0, 0, 0), (C, S.SYN, 0, 0, 0), (C, S.SYN, 0, 0, 0)),
    "accept_drop": S.template(
        (C, S.SYN, 0, 0, 0), (V, S.SYN | S.ACK, 0, 1, 0), (C, S.ACK, 1, 1, 0), (V, S.SYN | S.ACK, 0, 1, 0),
        (V, S.SYN | S.ACK, 0, 1, 0), (C, S.ACK, 1, 1, 0),
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Short connections (some refused, some reset, every 10th IPv6), long histories with findings,
    unanswered SYNs and dropped handshakes; the capture cut while the last connections are open.  Enough
    connections that retired rows go to the spill file."""
    rng = np.random.default_rng(5)
    kinds = S.short_mix(rng, 6000)
    kinds[rng.choice(len(kinds), 300, replace=False)] = "resets_again"
    kinds[rng.choice(len(kinds), 200, replace=False)] = "unanswered"
    kinds[rng.choice(len(kinds), 200, replace=False)] = "accept_drop"
    cols = S.connections_table(kinds, TEMPLATES, rng)
    cols = {k: v[:-200] for k, v in cols.items()}  # the last connections are still open at the end
    path = tmp_path_factory.mktemp("columns") / "mixed.pcap"
    S.write_pcap(str(path), cols)
    return analysis.analyze_capture(path)


def _object_rows(a) -> list[bytes]:
    return [orjson.dumps(document.connection_row(a, c)) for c in a.connections]


def test_the_capture_has_every_case(mixed):
    conns = list(mixed.connections)
    assert mixed.connections._spill.conns._written  # rows came back from the spill file too
    assert any(c.ip_version == 6 for c in conns) and any(c.ip_version == 4 for c in conns)
    assert any(len(c.history) > 24 for c in conns)
    assert any(c.findings for c in conns)
    assert any(c.rst_frames[1] and not c.synack_frames for c in conns)  # refused
    assert any(c.resets for c in conns) and len(mixed.resets)
    assert any(EndpointState.ESTABLISHED in c.state for c in conns[-50:])  # open at the end
    queue = analysis.listen_queue_evidence(conns)
    assert all(queue[k]["count"] for k in ("syn_retransmitted", "synack_retransmitted", "synack_after_ack",
                                           "unanswered"))  # fmt: skip


@pytest.mark.parametrize("batch", [None, 1, 777])
def test_rows_from_columns_are_the_rows_from_objects(mixed, batch, monkeypatch):
    if batch:
        monkeypatch.setattr(retire, "ROW_BATCH", batch)
    assert list(columns.connection_rows(mixed.connections, mixed.resets)) == _object_rows(mixed)


def test_listen_queue_from_columns_is_the_one_from_objects(mixed):
    from_objects = analysis.listen_queue_evidence(list(mixed.connections))  # a list: the object path
    from_columns = analysis.listen_queue_evidence(mixed.connections)
    assert orjson.dumps(from_columns) == orjson.dumps(from_objects)


@pytest.mark.parametrize("stale", [None, 2_000], ids=["retiring at the end", "retiring while tracked"])
def test_listen_queue_tallied_as_connections_retire_is_the_one_from_objects(mixed, monkeypatch, stale):
    """``analyze_capture`` tallies the listen queue as connections retire: dormant ones and open ones later
    than closed ones of higher ids (out of id order), yet the same dict as the pass over the connections."""
    if stale:
        monkeypatch.setattr(retire, "STALE_AFTER_FRAMES", stale)
    a = analysis.analyze_capture(mixed.capture.path)
    assert a.listen_queue_known
    tallied = orjson.dumps(a.listen_queue)
    a.listen_queue = None
    assert tallied == orjson.dumps(analysis.listen_queue_evidence(list(a.connections)))
    assert len(a.listen_queue["servers"]) > 1


def test_write_json_from_columns_is_the_document_from_objects(mixed):
    out = io.StringIO()
    mixed.listen_queue = None
    document.write_json([mixed], out)
    expected = document.for_json(document.combine([mixed]))
    assert orjson.loads(out.getvalue()) == orjson.loads(orjson.dumps(expected))
    assert orjson.loads(out.getvalue())["connections"] == [orjson.loads(r) for r in _object_rows(mixed)]


def _random_store(n: int, seed: int) -> retire.ConnectionStore:
    """Connection rows with random values in every field the document reads (all endpoint-state pairs,
    histories of any length, unknown values): what the tracker could write, not what it does."""
    rng = np.random.default_rng(seed)
    rows = np.zeros(n, CONN_ROW)
    rows["id"] = np.arange(n)
    v6 = rng.random(n) < 0.3
    for side in ("orig", "resp"):
        rows[f"{side}_hi"] = np.where(v6, 0xFD00 << 48, IPV4_MAPPED_HI).astype(np.uint64)
        rows[f"{side}_lo"] = np.where(v6, rng.integers(0, 5, n), 0xFFFF_0A00_0000 + rng.integers(0, 5, n))
        rows[f"{side}_port"] = rng.integers(0, 65536, n)
    rows["ip_version"] = np.where(v6, 6, 4)
    rows["inferred"] = rng.integers(0, 2, n)
    rows["tunnel_id"] = rng.integers(0, 3, n)
    rows["first_frame"] = rng.integers(1, 10**6, n)
    rows["last_frame"] = rows["first_frame"] + rng.integers(0, 100, n)
    rows["start_ns"] = rng.integers(0, 2**62, n)
    rows["end_ns"] = rows["start_ns"] + rng.integers(0, 10**12, n)
    rows["state"] = rng.integers(0, len(STATES), (n, 2))
    for name in ("syn", "synack", "synack_after_ack"):
        rows[name][:, 0] = rng.integers(0, 4, n)
    for name in ("packets", "payload_bytes", "retransmissions"):
        rows[name] = rng.integers(0, 1000, (n, 2))
    rows["stream_bytes"] = rng.integers(0, 3, (n, 2)) * rng.integers(0, 2, (n, 2))
    rows["unacked_bytes"] = np.where(rng.random((n, 2)) < 0.3, NONE, rng.integers(0, 5000, (n, 2)))
    rows["isn"] = -1
    letters = np.array([0, 1, 2, 3, 4, 5, 9, 10, 16, 17, 18, 19, 20, 21])  # S H A D F R Q ^, lower case
    rows["history"] = rng.choice(letters, (n, 24))
    rows["history"][::5, :2] = (0, 5)  # "SR...": Zeek's RSTOS0 when the originator reset and the responder was silent
    rows["history_len"] = rng.integers(0, 30, n)
    overflow = {i: rng.choice(letters, int(length) - 24).tolist()
                for i, length in enumerate(rows["history_len"].tolist()) if length > 24}  # fmt: skip
    spill = retire.Spill()
    spill.put(rows, {}, overflow)
    return retire.ConnectionStore(spill, n, np.zeros(0, np.int64))


def test_every_state_pair_and_history(monkeypatch):
    """Random rows: every conn_state and phase rule, histories past 24 letters, unknown unacked bytes."""
    store = _random_store(3000, seed=2)
    a = analysis.Analysis(capture=None, connections=store, resets=reset_table.empty())
    monkeypatch.setattr(retire, "ROW_BATCH", 500)
    assert list(columns.connection_rows(store, a.resets)) == _object_rows(a)
    assert orjson.dumps(columns.listen_queue(store)) == orjson.dumps(analysis.listen_queue_evidence(list(store)))


def test_values_encoded_a_column_at_a_time_are_orjsons_per_value():
    """The batch encoder's pieces (orjson over a whole matrix, over a whole list of strings) are each
    value's own ``orjson.dumps``: extreme integers, floats of every magnitude, strings that need escaping
    or are not ASCII (which take the per-value way)."""
    rng = np.random.default_rng(3)
    ints = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 300), [0, -1, 2**63 - 1, -(2**63), NONE]]).reshape(-1, 5)
    special = [0.0, -0.0, 1e16, 1e-7, 5e-324, 1.7e9 + 0.001931, 1e300, -2.5, 3.0, 1e15]
    floats = np.concatenate([rng.random(290) * 10.0 ** rng.integers(-30, 30, 290), special]).reshape(-1, 3)
    for matrix in (ints, floats):
        pieces = columns._numbers(matrix)
        for j in range(matrix.shape[1]):
            column = pieces.column(j)
            got = _values(column, len(matrix))
            assert got == [orjson.dumps(v) for v in matrix[:, j].tolist()]
    for texts in (["ShAdFf", "", "^hADr"], ["plain", 'quote"', "back\\slash", "tab\t", "é", "\u2028"]):
        assert _values(columns._strings(texts), len(texts)) == [orjson.dumps(t) for t in texts]
    rows, n = [1, 4], 6
    overridden = columns._overridden(b"null", n, rows, columns._joined([b"[1]", b'"x"']))
    assert _values(overridden, n) == [b"null", b"[1]", b"null", b"null", b'"x"', b"null"]
    joined, ends = columns._join([b"{", overridden, b",", columns._strings(list("abcdef")), b"}"], n, b";")
    rows = [b"{%s,%s}" % (v, orjson.dumps(t)) for v, t in zip(_values(overridden, n), "abcdef", strict=True)]
    assert bytes(joined) == b";".join(rows)
    assert ends.tolist() == (np.cumsum([len(r) + 1 for r in rows]) - 1).tolist()


def _values(pieces, n: int) -> list[bytes]:
    start = pieces.start.reshape(-1)[pieces.offset :: pieces.stride]
    length = pieces.length.reshape(-1)[pieces.offset :: pieces.stride]
    return [pieces.data[s : s + k] for s, k in zip(start.tolist(), length.tolist(), strict=True)][:n]


def test_rows_of_a_stitched_capture_from_columns_are_the_rows_from_objects(mixed):
    """The file fields of a capture made of pieces (``fleet.frames``), computed a column at a time: the
    same bytes as added row by row, for frames in every piece and a file name that is not UTF-8."""
    import dataclasses

    from rstscope.fleet import stitch

    last = max(c.last_frame for c in mixed.connections)
    per = last // 7 + 1
    spans = [stitch.Span(path=f"/captures/piece-{k}-\udcff.pcap", offset=k * per, records=per) for k in range(7)]
    own = {f.name: getattr(mixed.capture, f.name) for f in dataclasses.fields(mixed.capture) if f.init}
    stitched = dataclasses.replace(mixed, capture=stitch.StitchedCaptureInfo(**own, host="h", pieces=spans))
    rows = list(columns.connection_rows(stitched.connections, stitched.resets, capture=stitched.capture))
    assert rows == _object_rows(stitched)
    files = {orjson.loads(r)["last_file"] for r in rows}
    assert len(files) == 7 and all("\\xff" in f for f in files)


def test_delimited_lines_print_each_field_as_str_does(monkeypatch):
    """The text table's lines copied from the encoded rows (``columns.delimited_lines``) are what decoding each row
    and printing ``str`` of its fields gives: numbers as written where Python prints them so, strings
    without escapes as their bytes, and every other value (escapes, exponents, floats Python prints with
    one, booleans, lists) from the decoded row."""
    names = ("frame", "time", "src", "in_flight", "primary", "explanation")
    plain = {
        "frame": [1, 22, -3, 10**15, 0],
        "time": [0.0, 1.5, 0.0001, 0.00012, 9999999999999998.0, 1700000000.123456, -2.25, 12.0],
        "src": ["10.0.0.1:80", "[2001:db8::1]:443", "é → ✓", ""],
        "in_flight": [None, 0, 1448],
        "primary": [None, 7],
        "explanation": ["The server reset.", "It said no."],
    }
    other = {
        "time": [1e-05, 1e16, 5e-324, 1.5e-07],
        "src": ['quote " inside', "back\\slash", "tab\there"],
        "in_flight": [True, False],
        "primary": [[1, 2], {"a": 1}],
        "explanation": ['It said "no".', "line\nbreak", "\u0001control"],
    }
    rng = np.random.default_rng(4)

    def rows(n: int, odd: float) -> list[dict]:
        out = []
        for i in range(n):
            row = {"first": [i, {"k": "]"}]}  # a field the table skips, with brackets and strings inside
            for name in names:
                pool = other[name] if name in other and rng.random() < odd else plain[name]
                row[name] = pool[rng.integers(len(pool))]
            row["extra"] = {"nested": [i, "x"], "s": '"'}
            out.append(row)
        return out

    decoded = []
    loads = orjson.loads
    monkeypatch.setattr(columns.orjson, "loads", lambda b: decoded.append(1) or loads(b))
    for batch, odd in ((rows(2_000, 0.1), 0.1), (rows(500, 0.0), 0.0)):
        encoded = [orjson.dumps(row) for row in batch]
        data = b"".join(encoded)
        lengths = np.array([len(e) for e in encoded])
        starts = np.cumsum(lengths) - lengths
        expected = "".join("\t".join("" if r[c] is None else str(r[c]) for c in names) + "\n" for r in batch)
        decoded.clear()
        line = lambda r: "\t".join("" if r[c] is None else str(r[c]) for c in names) + "\n"  # noqa: E731
        assert columns.delimited_lines(data, starts, lengths, names, line).decode() == expected
        assert 0 < len(decoded) < len(batch) / 2 if odd else not decoded  # plain rows are copied, not decoded


def test_delimited_lines_write_csv_as_the_csv_writer_does(monkeypatch):
    """With ``csv``, the copied lines are what Python's csv writer writes for the decoded rows: a string
    holding a comma quoted, a missing field empty, the line's prefix first; rows with quotes, line breaks,
    escapes, booleans or exponents decoded."""
    import csv

    names = ("frame", "time", "src", "verdict", "explanation", "answers", "kernel_reason")
    pools = {
        "frame": [1, -3, 10**15],
        "time": [0.5, 1700000000.123456, 1e-05, 12.0],
        "src": ["10.0.0.1:80", "a,b", ",", 'quote " in', "é, ✓"],
        "verdict": ["close-race", None, True],
        "explanation": ["The server reset, with data in flight.", "plain", "line\nbreak", "back\\slash", ""],
        "answers": ["FIN", None],
    }
    rng = np.random.default_rng(6)
    rows = []
    for i in range(3_000):
        row = {"first": {"x": [i, ","]}}
        for name, pool in pools.items():
            if rng.random() < 0.9:  # else missing: the csv writer's row has None there
                row[name] = pool[rng.integers(len(pool))]
        rows.append(row)
    encoded = [orjson.dumps(row) for row in rows]
    data = b"".join(encoded)
    lengths = np.array([len(e) for e in encoded])
    starts = np.cumsum(lengths) - lengths

    def line(row: dict) -> str:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow([row.get(c) for c in ("capture", *names)])
        return out.getvalue()

    expected = "".join(line({"capture": 7, **row}) for row in rows)
    decoded = []

    def decode(row: dict) -> str:
        decoded.append(1)
        return line({"capture": 7, **row})

    got = columns.delimited_lines(data, starts, lengths, names, decode, csv=True, prefix=b"7,")
    assert got.decode() == expected
    assert 0 < len(decoded) < len(rows)  # some rows copied, some decoded
