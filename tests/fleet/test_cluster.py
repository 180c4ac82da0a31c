"""``--dask ADDRESS`` on a LocalCluster of two worker processes: the single-process document."""

from __future__ import annotations

import pytest

from tests.fleet.conftest import document, rstscope

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as c:
        yield c


def test_dask_equals_single_process(cluster, short_pieces, sample_pieces):
    for pieces in (short_pieces, sample_pieces):
        single = document(str(pieces[0].parent), "--jobs", "1")
        on_dask = document(str(pieces[0].parent), "--dask", cluster.scheduler_address)
        assert on_dask == single
    assert not list(short_pieces[0].parent.glob(".rstscope-fleet-*"))  # the shared work directory is removed


def test_unreachable_scheduler():
    status, _, err = rstscope("analyze", "captures/close-race/capture.pcapng", "--dask", "tcp://127.0.0.1:1")
    assert status == 2 and "cannot reach the scheduler" in err


def test_dask_equals_single_process_under_pressure(cluster, busy_pieces):
    _, pieces = busy_pieces
    single = document(str(pieces[0].parent), "--jobs", "1")
    assert document(str(pieces[0].parent), "--dask", cluster.scheduler_address) == single
