"""The shards' stages after tracking and the parent's merge: global ids, the listen-queue tally, rows read
back by global id (the documents themselves are compared in test_shards and test_cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope import judging
from rstscope.fleet import merge, run, shards, stitch
from rstscope.fleet import pieces as pieces_mod


def test_global_ids_number_connections_by_first_frame():
    firsts = [np.array([1, 5, 9]), np.array([2, 3, 10])]
    assert [g.tolist() for g in merge._global_ids(firsts)] == [[0, 3, 4], [1, 2, 5]]


def test_listen_queue_merged_in_single_process_order():
    def shard(syn_retx, servers, first):
        empty = {"count": 0, "connections": []}
        listen = {"syn_retransmitted": {"count": len(syn_retx), "connections": syn_retx},
                  "synack_retransmitted": empty, "synack_after_ack": empty, "unanswered": empty,
                  "servers": servers}  # fmt: skip
        return merge.ShardResult(shard=0, gid=np.zeros(0, np.int64), overflow={}, reset_ids=np.zeros(0, np.int64),
                                 resets={}, reset_files=[], fixes=set(), first_ns=None,
                                 row_length=np.zeros(0, np.int64), listen=listen, server_first=first,
                                 host_ttl={})  # fmt: skip

    a = shard([4], {"s1": {"attempts": 2}, "s2": {"attempts": 1}}, {"s1": 3, "s2": 4})
    b = shard([0, 7], {"s2": {"attempts": 5}}, {"s2": 1})
    merged = merge.merged_listen_queue([a, b])
    assert merged["syn_retransmitted"] == {"count": 3, "connections": [0, 4, 7]}
    assert list(merged["servers"].items()) == [("s2", {"attempts": 6}), ("s1", {"attempts": 2})]


def test_merged_store_reads_connections_in_any_order(busy_pieces):
    """Connections by global id from the merged store: the single process's, in any order and in slices."""
    _, pieces = busy_pieces
    group = [pieces_mod.probe(p, "") for p in pieces]
    single = stitch.analyze_group(group, max_gap_s=300.0)[0]
    parallel = shards.analyze_group(group, run.Options(jobs=2), jobs=2)[0]
    n = len(single.connections)
    assert len(parallel.connections) == n
    picks = [n - 1, 0, n // 2, 7, n // 3]
    assert [parallel.connections[i] for i in picks] == [single.connections[i] for i in picks]
    assert parallel.connections[10:20] == single.connections[10:20]
    assert list(parallel.connections.with_resets()) == list(single.connections.with_resets())


def test_spill_reads_ranges_across_the_shards_files(tmp_path):
    """The shards' RST-row files read as one: a range may span files (an empty one among them); a range
    past the end is an error, not short data (here: the last file's byte 7 of 8 wanted)."""

    contents = [b"abcdef", b"", b"ghij", b"klmnopq"]
    paths = []
    for j, data in enumerate(contents):
        paths.append(tmp_path / f"reset-rows-{j}")
        paths[-1].write_bytes(data)
    spill, whole = judging.RowFiles(paths), b"".join(contents)
    for offset in range(len(whole)):
        for length in range(len(whole) - offset + 1):
            assert spill.read_range(offset, length) == whole[offset : offset + length]
    with pytest.raises(OSError, match="ended at byte 7, not 8"):
        spill.read_range(15, 3)
