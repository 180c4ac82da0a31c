"""The ``--dask`` shards' exchange over TCP (:mod:`rstscope.fleet.shard_process`), without Dask."""

from __future__ import annotations

import threading

import pytest

from rstscope.fleet import shard_process as sp


def _run(shards: int, directory, body) -> list:
    results: list = [None] * shards

    def one(j: int) -> None:
        try:
            results[j] = body(sp.SocketExchange(j, shards, directory, "127.0.0.1"), j)
        except Exception as exc:  # the test looks at it
            results[j] = exc

    threads = [threading.Thread(target=one, args=(j,)) for j in range(shards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
        assert not t.is_alive()
    return results


def test_rounds_sum_the_counts_of_all_shards(tmp_path):
    def body(exchange, j):
        totals = [exchange.total(10 * r + j) for r in range(200)]
        exchange.close()
        return totals

    results = _run(3, tmp_path, body)
    expected = [30 * r + 3 for r in range(200)]
    assert results == [expected] * 3


def test_a_shard_that_goes_away_breaks_the_others(tmp_path):
    def body(exchange, j):
        if j == 2:
            exchange.total(1)
            exchange.close()
            return "left"
        exchange.total(1)
        exchange.total(1)  # shard 2 never sends its count of this round
        return "stayed"

    results = _run(3, tmp_path, body)
    assert results[2] == "left"
    assert all(isinstance(r, sp.Broken) for r in results[:2])


def test_called_off_before_shard_0_listens(tmp_path):
    sp.call_off(tmp_path)
    with pytest.raises(sp.Broken):
        sp.SocketExchange(1, 2, tmp_path, "127.0.0.1")
    with pytest.raises(sp.Broken):
        sp.SocketExchange(0, 2, tmp_path, "127.0.0.1")
