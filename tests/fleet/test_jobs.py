"""``--jobs N``: the same document as one process, including the tracker's capture-wide rules."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope.connections import retire
from tests import shortconns
from tests.fleet.conftest import document, split, without_added


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_jobs_equal_single_process(jobs, short_pieces, sample_pieces):
    for pieces in (short_pieces, sample_pieces):
        single = document(str(pieces[0].parent), "--jobs", "1")
        parallel = document(str(pieces[0].parent), "--jobs", jobs)
        assert parallel == single


@pytest.fixture(scope="module")
def busy_pieces(tmp_path_factory):
    """Enough short connections that the tracker retires idle ones and works under pressure
    (more than LIVE_CLOSED_LIMIT closed connections alive at once)."""
    path = tmp_path_factory.mktemp("busy") / "busy.pcap"
    rng = np.random.default_rng(5)
    cols = shortconns.connections_table(
        shortconns.short_mix(rng, 40_000), shortconns.TEMPLATES, rng, spacing_ns=200_000
    )
    shortconns.write_pcap(str(path), cols)  # 8 s: connections closed over a second ago are quiet enough to retire
    return path, split(path, tmp_path_factory.mktemp("busy-pieces"), 5)


def test_jobs_equal_whole_file_under_pressure(busy_pieces, monkeypatch):
    whole_path, pieces = busy_pieces
    pressured = []
    original = retire.IdleSweep.pressured

    def spy(*args):
        slots = original(*args)
        pressured.append(len(slots))
        return slots

    monkeypatch.setattr(retire.IdleSweep, "pressured", staticmethod(spy))
    whole = document(str(whole_path))
    assert sum(pressured) > 0, "the capture must make the tracker retire under pressure"
    monkeypatch.undo()
    parallel = document(str(pieces[0].parent), "--jobs", "2")
    assert without_added(parallel["resets"]) == whole["resets"]
    assert without_added(parallel["connections"]) == whole["connections"]
    assert parallel["summary"] == whole["summary"]
