"""The compiled helpers of connection keys (keys_loop.c): grouping rows by whole 4-tuple keys, and the
grouped rows' fields, against plain Python and numpy on the same rows."""

from __future__ import annotations

import numpy as np

from rstscope.connections.keys import grouped_columns
from rstscope.connections.sequence import ffi, lib
from rstscope.packets import PACKET_DTYPE


def _grouped(columns) -> tuple[np.ndarray, np.ndarray]:
    """``tuple_groups`` (keys_loop.c) on six uint64 columns: the order that groups rows of equal key, and
    where groups start (what ``tuple_groups_of_rows`` does after it has made the keys of packet rows)."""
    n = len(columns[0])
    columns = [np.ascontiguousarray(c, dtype=np.uint64) for c in columns]
    keys = ffi.new("struct tuple_keys *", dict(zip(("a_hi", "a_lo", "b_hi", "b_lo", "ports", "tunnel"),
                   (ffi.from_buffer("uint64_t[]", c) for c in columns), strict=True)))  # fmt: skip
    order, start = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.uint8)
    assert lib.tuple_groups(n, keys, ffi.from_buffer("int64_t[]", order), ffi.from_buffer("uint8_t[]", start)) >= 0
    return order, start.view(bool)


def _keys(n: int, seed: int) -> list[np.ndarray]:
    """Six uint64 columns from a small alphabet: many repeats, and keys that differ in one word only."""
    rng = np.random.default_rng(seed)
    words = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    return [words[rng.integers(0, len(words), n)] for _ in range(6)]


def test_rows_grouped_by_whole_key_in_order_of_first_row():
    for seed, n in ((1, 0), (2, 1), (3, 37), (4, 5000)):
        columns = _keys(n, seed)
        order, start = _grouped(columns)
        rows = list(zip(*(c.tolist() for c in columns), strict=True))
        expected: dict[tuple, list[int]] = {}
        for i, key in enumerate(rows):
            expected.setdefault(key, []).append(i)  # dicts keep insertion order: first row first
        assert order.tolist() == [i for group in expected.values() for i in group]
        assert np.flatnonzero(start).tolist() == np.cumsum([0] + [len(g) for g in expected.values()])[:-1].tolist()


def test_grouped_columns_are_the_fields_of_the_ordered_rows():
    rng = np.random.default_rng(5)
    rows = np.zeros(1000, PACKET_DTYPE)
    names = ("flags", "seq", "ack", "payload_len", "ts_ns", "frame", "window", "ttl", "ip_id", "has_ts", "src_hi")
    for name in names:
        info = np.iinfo(rows[name].dtype) if rows[name].dtype != bool else np.iinfo(np.uint8)
        rows[name] = rng.integers(max(info.min, -(2**62)), min(info.max, 2**62), len(rows), endpoint=True)
    rows["has_ts"] = rng.integers(0, 2, len(rows)).astype(bool)
    order = rng.permutation(len(rows))
    got = grouped_columns(rows, order, names)
    for name, column in zip(names, got, strict=True):
        assert column.dtype == np.int64
        assert column.tolist() == rows[name][order].astype(np.int64).tolist(), name


def test_rows_indexed_by_canonical_key_in_one_pass():
    """by_tuple (tuple_groups_of_rows) against the key written out in Python: endpoints ordered by address
    then port, on IPv4 and IPv6 rows, both directions, equal addresses, equal endpoints, tunnels."""
    from rstscope.connections.keys import TupleTable, by_tuple

    rng = np.random.default_rng(7)
    n = 4000
    rows = np.zeros(n, PACKET_DTYPE)
    his = np.array([0, 0, 1, 2**63, 2**64 - 1], dtype=np.uint64)  # mostly IPv4 (a zero high half)
    los = np.array([1, 2, 2**32 - 1, 2**64 - 1], dtype=np.uint64)
    for name, values in (("src_hi", his), ("dst_hi", his), ("src_lo", los), ("dst_lo", los)):
        rows[name] = values[rng.integers(0, len(values), n)]
    for name in ("src_port", "dst_port"):
        rows[name] = np.array([80, 443, 1024, 65535])[rng.integers(0, 4, n)]
    rows["tunnel_id"] = np.array([0, 0, 7, 2**64 - 1], dtype=np.uint64)[rng.integers(0, 4, n)]
    groups: dict[tuple, list[int]] = {}
    src_is_a = []
    for r in rows.tolist():
        src = (r[PACKET_DTYPE.names.index("src_hi")], r[PACKET_DTYPE.names.index("src_lo")],
               r[PACKET_DTYPE.names.index("src_port")])  # fmt: skip
        dst = (r[PACKET_DTYPE.names.index("dst_hi")], r[PACKET_DTYPE.names.index("dst_lo")],
               r[PACKET_DTYPE.names.index("dst_port")])  # fmt: skip
        a, b = (src, dst) if src <= dst else (dst, src)
        src_is_a.append(src <= dst)
        key = (a[0], a[1], b[0], b[1], a[2] << 16 | b[2], r[PACKET_DTYPE.names.index("tunnel_id")])
        groups.setdefault(key, []).append(len(src_is_a) - 1)
    table = TupleTable()
    a_side, order, position, tgroups, keys = by_tuple(rows)
    tids = table.index(keys)
    assert (order[position] == np.arange(n)).all()
    expected_order = [i for members in groups.values() for i in members]
    assert order.tolist() == expected_order
    assert a_side.tolist() == [src_is_a[i] for i in expected_order]
    assert tgroups.first_pos.tolist() == np.cumsum([0] + [len(m) for m in groups.values()])[:-1].tolist()
    assert len(set(tids.tolist())) == len(groups) > 50
    # The index holds the keys written out above: the same ids again, none handed out anew.
    again, recycled = table.ids.assign(np.array(list(groups), dtype=np.uint64))
    assert again.tolist() == tids.tolist() and table.ids.next_tid() == len(groups) and not len(recycled)


class _DictIndex:
    """The 4-tuple index as it was in Python: a dict of keys, forgotten ids handed out last first."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}
        self.keys: dict[int, tuple] = {}
        self.free: list[int] = []
        self.next_tid = 0

    def assign(self, keys: list[tuple]) -> tuple[list[int], list[int]]:
        tids, recycled = [], []
        for key in keys:
            tid = self.ids.get(key)
            if tid is None:
                if self.free:
                    tid = self.free.pop()
                    recycled.append(tid)
                else:
                    tid, self.next_tid = self.next_tid, self.next_tid + 1
                self.ids[key], self.keys[tid] = tid, key
            tids.append(tid)
        return tids, recycled

    def forget(self, tids: list[int], cids: list[int], conn: list[int]) -> None:
        for tid, cid in zip(tids, cids, strict=True):
            if conn[tid] == cid:
                del self.ids[self.keys.pop(tid)]
                conn[tid] = -1
                self.free.append(tid)


def test_tuple_index_is_the_dict_it_replaced():
    """The compiled 4-tuple index (keys_loop.c) hands out, recycles and forgets ids as the dict did, over
    rounds of lookups and retirements that grow and shrink it (probe runs cut by deletions included)."""
    from rstscope.connections.keys import TupleIndex

    rng = np.random.default_rng(7)
    words = np.array([0, 1, 2**63, 2**64 - 1, 12345], dtype=np.uint64)
    index, model = TupleIndex(), _DictIndex()
    conn = np.full(1 << 16, -1, dtype=np.int64)
    model_conn = conn.tolist()
    next_cid = 0
    for _round in range(60):
        keys = np.unique(words[rng.integers(0, len(words), (int(rng.integers(1, 3000)), 6))], axis=0)
        keys = keys[rng.permutation(len(keys))]
        tids, recycled = index.assign(keys)
        expected_tids, expected_recycled = model.assign([tuple(k) for k in keys.tolist()])
        assert tids.tolist() == expected_tids and recycled.tolist() == expected_recycled
        cids = np.arange(next_cid, next_cid + len(tids))
        next_cid += len(tids)
        conn[tids] = cids
        for tid, cid in zip(tids.tolist(), cids.tolist(), strict=True):
            model_conn[tid] = cid
        # Retire some: the current connection (forgets the tuple) or an older one (keeps it).
        pick = rng.random(len(tids)) < 0.6
        old = rng.random(len(tids)) < 0.2
        retired = np.where(old, cids - 1, cids)[pick]
        index.forget(tids[pick], retired, conn)
        model.forget(tids[pick].tolist(), retired.tolist(), model_conn)
        assert conn.tolist() == model_conn
        assert len(index) == len(model.ids) and index.next_tid() == model.next_tid
