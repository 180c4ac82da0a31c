"""The connection rows of ``--json`` encoded by two processes (rstscope/rowsplit.py): the reader child encodes
every other unit, and the document is the one this process alone writes, byte for byte, whatever becomes of
the child."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import psutil
import pytest

from rstscope import analysis, cli, document, prefetch, rowsplit
from rstscope.cli import Environment
from rstscope.connections import retire
from rstscope.fleet import rowstream
from tests import shortconns
from tests.test_columns import TEMPLATES
from tests.test_judging import fails_second

pytestmark = pytest.mark.skipif(not prefetch.available(), reason="needs os.fork and two CPUs")


@pytest.fixture
def capture(tmp_path, monkeypatch):
    """Short connections (refused, reset, IPv6), long histories with findings, unanswered SYNs and dropped
    handshakes (tests/test_columns.py's mix); units of 64 connections, read by the reader child."""
    rng = np.random.default_rng(7)
    kinds = shortconns.short_mix(rng, 3000)
    for kind, count in (("resets_again", 150), ("unanswered", 100), ("accept_drop", 100)):
        kinds[rng.choice(len(kinds), count, replace=False)] = kind
    path = tmp_path / "mixed.pcap"
    shortconns.write_pcap(str(path), shortconns.connections_table(kinds, TEMPLATES, rng))
    monkeypatch.setattr(rowsplit, "UNIT", 64)
    monkeypatch.setattr(analysis, "PREFETCH_BYTES", 0)
    return path


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children()}


def _from_child(monkeypatch) -> list[bool]:
    """Per unit of the child's asked for, in order: whether the child's rows came (else encoded here)."""
    got: list[bool] = []
    take = rowsplit.RowsInChild._from_child

    def spy(self, count):
        rows = take(self, count)
        got.append(rows is not None)
        return rows

    monkeypatch.setattr(rowsplit.RowsInChild, "_from_child", spy)
    return got


def _json(path, *, encode_rows: bool) -> tuple[bytes, analysis.Analysis]:
    a = analysis.analyze_capture(path, encode_rows=encode_rows)
    out = io.StringIO()
    document.write_json([a], out)
    return out.getvalue(), a


def test_the_childs_units_make_the_same_document(capture, monkeypatch):
    before = _children()
    alone, a = _json(capture, encode_rows=False)
    assert not isinstance(a.connections, rowsplit.RowsInChild)
    units = _from_child(monkeypatch)
    both, b = _json(capture, encode_rows=True)
    assert isinstance(b.connections, rowsplit.RowsInChild)
    assert both == alone
    assert len(units) > 10 and all(units)
    assert _children() <= before  # the child stopped once the rows were read


def _dies_after_two_blocks(self, data, lengths):
    _dies_after_two_blocks.calls = getattr(_dies_after_two_blocks, "calls", 0) + 1
    if _dies_after_two_blocks.calls > 2:
        os._exit(1)
    return _block(self, data, lengths)


_block = rowstream.Sender.block


def test_what_a_child_that_died_did_not_send_is_encoded_here(capture, monkeypatch):
    alone, _ = _json(capture, encode_rows=False)
    monkeypatch.setattr(rowstream.Sender, "block", _dies_after_two_blocks)  # in the child, forked after this
    units = _from_child(monkeypatch)
    before = _children()
    both, b = _json(capture, encode_rows=True)
    assert isinstance(b.connections, rowsplit.RowsInChild)
    assert both == alone
    assert units == [True, True, False]  # then the rest here, without asking the child again
    assert _children() <= before


def test_a_document_that_cannot_be_written_stops_the_child(capture, tmp_path):
    """``analyze --json -o /dev/full``: the write fails (one line), and the child, waiting for room in its
    ring, is stopped."""
    out, err = io.StringIO(), io.StringIO()
    env = Environment(stdout=out, stderr=err, stdout_isatty=False, stderr_isatty=False)
    before = _children()
    status = cli.run(["analyze", str(capture), "--json", "-o", "/dev/full"], env=env)
    assert status != 0
    assert len(err.getvalue().strip().splitlines()) == 1, err.getvalue()
    assert _children() <= before


@pytest.mark.parametrize("past", ["connections with RSTs", "RSTs only"])
def test_a_storm_of_rsts_is_encoded_here_alone(capture, monkeypatch, past):
    """Past ROWSPLIT_MAX_RESETS the table of RSTs and the child beside it would pass the memory budget: known
    from the connections that saw a RST, before the table is gathered, or from the RSTs once judged."""
    alone, a = _json(capture, encode_rows=False)
    limit = 10 if past == "connections with RSTs" else len(a.connections.reset_ids)
    assert len(a.resets) > limit
    monkeypatch.setattr(analysis, "ROWSPLIT_MAX_RESETS", limit)
    before = _children()
    both, b = _json(capture, encode_rows=True)
    assert len(b.resets) > 10 and not isinstance(b.connections, rowsplit.RowsInChild)
    assert both == alone
    assert _children() <= before  # stopped at once


@pytest.fixture
def retiring(capture, tmp_path, monkeypatch):
    """The same capture, its connections retiring while it is tracked (idle 4,000 frames: the rule's 100,000
    are more than the whole capture), the child polled after each chunk of 2,048 packets, units encoded early
    with up to half their rows left to the end; large temporary files in a directory of the test's."""
    monkeypatch.setattr(retire, "STALE_AFTER_FRAMES", 4_000)
    monkeypatch.setattr(analysis, "READ_PACKETS", 2_048)
    monkeypatch.setattr(rowsplit, "EARLY_MAX_LATE", 32)  # half a unit: a third of these connections see a RST
    monkeypatch.setattr(rowsplit, "EARLY_SETTLED_POLLS", 1)  # a chunk: two idle sweeps
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return capture


def _early_units(monkeypatch) -> list[tuple[int, np.ndarray]]:
    """Per unit taken from the rows the child encoded while tracking, in order: its number and the connections
    whose rows were encoded at the end instead; units the file could not give are not listed."""
    got: list[tuple[int, np.ndarray]] = []
    block, rows = rowsplit.RowsInChild._early_block, rowsplit._LateRows.rows

    def spy_block(self, k, *rest):
        late = rows(self._late, k)[0]
        out = block(self, k, *rest)
        if out is not None:
            got.append((k, late))
        return out

    monkeypatch.setattr(rowsplit.RowsInChild, "_early_block", spy_block)
    return got


def _json_closed(path) -> tuple[bytes, analysis.Analysis]:
    doc, a = _json(path, encode_rows=True)
    assert isinstance(a.connections, rowsplit.RowsInChild)
    assert a.connections._early is None or a.connections._early._file is None  # the file of early rows closed
    return doc, a


def test_units_encoded_while_tracking_make_the_same_document(retiring, monkeypatch):
    alone, a = _json(retiring, encode_rows=False)
    early, late = _early_units(monkeypatch), _from_child(monkeypatch)
    before = _children()
    both, _ = _json_closed(retiring)
    assert both == alone
    units = -(-len(a.connections) // rowsplit.UNIT)
    assert len(early) > units // 3  # most retired well before the end
    assert [k for k, _ in early] == sorted(k for k, _ in early)
    at_the_end = np.concatenate([ids for _, ids in early])
    reset = np.isin(at_the_end, a.connections.reset_ids)
    assert reset.sum() > 50  # rows of connections with a RST, encoded again with their outcomes
    assert (~reset).sum() > 10  # and of connections that had not retired (unanswered SYNs, dropped handshakes)
    assert all(len(ids) <= rowsplit.EARLY_MAX_LATE for _, ids in early)
    assert late and all(late)  # the units left are still shared with the child
    assert _children() <= before


def test_a_unit_with_more_rows_left_than_the_limit_waits_for_the_end(retiring, monkeypatch):
    alone, _ = _json(retiring, encode_rows=False)
    early = _early_units(monkeypatch)
    _json_closed(retiring)
    limit = sorted(len(ids) for _, ids in early)[len(early) // 2]
    monkeypatch.setattr(rowsplit, "EARLY_MAX_LATE", limit)
    early.clear()
    both, _ = _json_closed(retiring)
    assert both == alone
    assert early and all(len(ids) <= limit for _, ids in early)


def test_an_early_encoding_that_failed_leaves_the_units_to_the_end(retiring, monkeypatch):
    alone, _ = _json(retiring, encode_rows=False)
    given = []
    give = rowsplit.EarlyUnits._give
    monkeypatch.setattr(rowsplit.EarlyUnits, "_give", lambda self, units: given.append(units) or give(self, units))
    failing = fails_second(rowsplit._EncodeEarly.__call__, "a bug in the early encoding")
    monkeypatch.setattr(rowsplit._EncodeEarly, "__call__", failing)  # in the child, forked after this
    early = _early_units(monkeypatch)
    both, _ = _json_closed(retiring)
    assert both == alone
    assert len(given) == 2  # none after the failure was seen
    assert [k for k, _ in early] == given[0]  # the units of the first job only


def test_early_rows_that_cannot_be_read_back_are_encoded_here(retiring, monkeypatch):
    alone, _ = _json(retiring, encode_rows=False)

    def unreadable(self, k):
        raise OSError("a disk error")

    monkeypatch.setattr(rowsplit.EarlyUnits, "read", unreadable)
    early = _early_units(monkeypatch)
    both, _ = _json_closed(retiring)
    assert both == alone and not early


def test_units_whose_early_rows_cannot_all_be_read_back_are_encoded_here(retiring, monkeypatch):
    alone, _ = _json(retiring, encode_rows=False)
    read = rowsplit.EarlyUnits.read

    def every_other(self, k):
        if k % 2:
            raise OSError("a disk error")
        return read(self, k)

    monkeypatch.setattr(rowsplit.EarlyUnits, "read", every_other)
    early = _early_units(monkeypatch)
    both, _ = _json_closed(retiring)
    assert both == alone
    assert early and all(k % 2 == 0 for k, _ in early)


class _Child:
    """A reader child for :class:`rowsplit.EarlyUnits` alone: the units of each job given, answered at once."""

    def __init__(self) -> None:
        self.given: list[list[int]] = []

    def run_in_child(self, job, fds):
        self.given.append([k for k, _ in job.units])
        return _Answered()


class _Answered:
    def ready(self) -> bool:
        return True

    def result(self) -> list:
        return []


class _Tracker:
    count = 4 * 64

    def shared_rows(self, ids):
        return {}, [], np.zeros(len(ids), dtype=np.int64)


def _retired(ids, with_rst=()) -> retire.RowBatch:
    rows = np.zeros(len(ids), retire.CONN_ROW)
    rows["id"] = ids
    rows["resets"][np.isin(ids, with_rst), 1] = 1
    return retire.RowBatch(rows, None)


def test_a_unit_is_given_once_its_connections_settled(tmp_path, monkeypatch):
    """Units of 64: at most 16 of a unit's rows left to the end (not retired, or with a RST), and all retired
    or none for 2 chunks."""
    monkeypatch.setattr(rowsplit, "UNIT", 64)
    monkeypatch.setattr(rowsplit, "EARLY_MAX_LATE", 16)
    monkeypatch.setattr(rowsplit, "EARLY_SETTLED_POLLS", 2)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    child = _Child()
    early = rowsplit.EarlyUnits(child, _Tracker())
    try:
        early.retired(_retired(np.arange(0, 60)))  # unit 0: 4 left
        early.retired(_retired(np.arange(64, 128), with_rst=[70, 71]))  # unit 1: all retired, 2 with a RST
        early.retired(_retired(np.arange(128, 168)))  # unit 2: 24 left, too many
        early.poll()
        assert child.given == [[1]]  # unit 0 may still be retiring
        early.retired(_retired(np.arange(192, 256)))  # unit 3, all retired
        early.poll()
        assert child.given == [[1], [3]]
        early.poll()  # unit 0: no connection retired for 2 chunks
        assert child.given == [[1], [3], [0]]
        early.poll()
        early.poll()
        assert child.given == [[1], [3], [0]]  # unit 2 never
        assert list(early.encoded(1)) == [k for k in range(64, 128) if k not in (70, 71)]  # not those with a RST
        early.retired(_retired(np.arange(60, 64)))  # unit 0's last, after it was given: left to the end
        assert list(early.encoded(0)) == list(range(60))
    finally:
        early.close()


def test_no_unit_is_given_when_scratch_space_runs_low(retiring, monkeypatch):
    alone, _ = _json(retiring, encode_rows=False)
    space = iter([1 << 40, 1 << 40, 1 << 20])  # two jobs, then less than EARLY_MIN_FREE_BYTES
    monkeypatch.setattr(rowsplit, "_free_bytes", lambda fd: next(space, 0))
    given = []
    give = rowsplit.EarlyUnits._give
    monkeypatch.setattr(rowsplit.EarlyUnits, "_give", lambda self, units: given.append(units) or give(self, units))
    early = _early_units(monkeypatch)
    both, _ = _json_closed(retiring)
    assert both == alone
    assert len(given) == 3 and [k for k, _ in early] == sorted(given[0] + given[1])  # none asked for after the third


def test_an_error_while_tracking_closes_the_file_of_early_rows(retiring, monkeypatch):
    files = []
    give = rowsplit.EarlyUnits._give

    def kept(self, units):
        give(self, units)
        files.append(self._file)

    feed = analysis.Tracker.feed

    def fails_late(self, chunk):
        if files:  # once the child was given units to encode
            raise RuntimeError("a bug in the tracker")
        feed(self, chunk)

    monkeypatch.setattr(rowsplit.EarlyUnits, "_give", kept)
    monkeypatch.setattr(analysis.Tracker, "feed", fails_late)
    before = _children()
    with pytest.raises(RuntimeError, match="a bug"):
        analysis.analyze_capture(retiring, encode_rows=True)
    assert files and all(f.closed for f in files)
    assert _children() <= before
