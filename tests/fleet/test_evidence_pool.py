"""Evidence shared out between the shards (rstscope.fleet.evidence_pool): whoever judges a tail batch,
each shard gathers the reset table it would have built alone."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope import reset_table
from rstscope.connections import Tracker
from rstscope.fleet import evidence_pool, merge, shards
from rstscope.reader import read_all
from tests import shortconns


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory):
    """A short-connection capture's rows split between two shards by the fleet's hash, each tracked alone."""
    path = tmp_path_factory.mktemp("pool") / "short.pcap"
    shortconns.generate(str(path), 3_000)
    table, _stats = read_all(path)
    table = table[table["decode_error"] == 0]
    which = shards.shard_of(table, 2)
    stores = []
    for j in range(2):
        tracker = Tracker()
        tracker.feed(table[which == j])
        stores.append(tracker.finish())
    return stores


def _alone(store, gid: np.ndarray, host_ttl: dict) -> reset_table.ResetTable:
    """The shard's table built the way one process builds it: every subject from its own store."""
    return reset_table.build(evidence_pool._renumbered(store.reset_subjects(), gid), host_ttl)


def _same(gathered: reset_table.ResetTable, alone: reset_table.ResetTable) -> None:
    assert len(gathered) == len(alone) > 0
    for name in ("frame", "connection", "verdict", "connection_primary", "in_flight", "findings"):
        assert np.array_equal(getattr(gathered, name), getattr(alone, name)), name
    assert list(gathered.raw_rows()) == list(alone.raw_rows())
    assert (gathered.fixes, gathered.first_ns) == (alone.fixes, alone.first_ns)


@pytest.mark.parametrize("batch", [7, 64, 4_096])
def test_a_shard_that_finishes_first_judges_the_others_tail(two_shards, tmp_path, monkeypatch, batch):
    monkeypatch.setattr(evidence_pool, "BATCH", batch)
    stores = two_shards
    for j, store in enumerate(stores):
        evidence_pool.share(store, j, tmp_path)
    gids = merge._global_ids([store._spill.rows(np.arange(len(store)))["first_frame"] for store in stores])
    host_ttl = {}
    for store in stores:
        for host, ttl in store.host_ttl.items():
            host_ttl[host] = ttl.merge(host_ttl.get(host))

    tail = evidence_pool._plan(tmp_path, 1).batches
    assert tail >= (2 if batch < 4_096 else 1)
    evidence_pool.judge(stores[0], 0, 2, tmp_path, gids, host_ttl, None)  # shard 1 has not started yet
    assert all((tmp_path / f"resets-1-{b}").exists() for b in range(tail)), "shard 0 judged shard 1's tail"
    assert not (tmp_path / "resets-1-front").exists()  # the front is its owner's alone
    evidence_pool.judge(stores[1], 1, 2, tmp_path, gids, host_ttl, None)  # its own front; its tail is taken

    for j, store in enumerate(stores):
        gathered, files = evidence_pool.gather(tmp_path, j)
        assert len(files) == 1 + evidence_pool._plan(tmp_path, j).batches
        _same(gathered, _alone(store, gids[j], host_ttl))
