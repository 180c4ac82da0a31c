"""The compiled helpers of connection keys (keys_loop.c): grouping rows by whole 4-tuple keys, and the
grouped rows' fields, against plain Python and numpy on the same rows."""

from __future__ import annotations

import numpy as np

from rstscope.connections.keys import _grouped, grouped_columns
from rstscope.packets import PACKET_DTYPE


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
