"""The connection rows of ``--json`` encoded by two processes (rstscope/rowsplit.py): the reader child encodes
every other unit, and the document is the one this process alone writes, byte for byte, whatever becomes of
the child."""

from __future__ import annotations

import io
import os

import numpy as np
import psutil
import pytest

from rstscope import analysis, cli, document, prefetch, rowsplit
from rstscope.cli import Environment
from rstscope.fleet import rowstream
from tests import shortconns
from tests.test_columns import TEMPLATES

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
