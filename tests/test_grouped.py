"""Segmented running operations: each group restarts, NONE before the first valid element."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope import grouped
from rstscope.grouped import NONE, Groups

START = np.array([True, False, False, True, False, True])
VALUES = np.array([5, 3, 9, 1, 4, 7], dtype=np.int64)


def test_cummax_and_cumsum():
    g = Groups(START)
    valid = np.array([False, True, True, True, False, True])
    assert g.cummax(VALUES, valid).tolist() == [NONE, 3, 9, 1, 1, 7]
    assert g.cumsum(VALUES).tolist() == [5, 8, 17, 1, 5, 7]


def test_positions():
    g = Groups(START)
    valid = np.array([True, False, True, False, True, False])
    assert g.last_valid_pos(valid).tolist() == [0, 0, 2, -1, 4, -1]
    assert g.exclusive(g.last_valid_pos(valid), -1).tolist() == [-1, 0, 0, -1, -1, -1]
    assert g.first(VALUES).tolist() == [5, 1, 7] and g.last(VALUES).tolist() == [9, 4, 7]


@pytest.mark.parametrize("span", [10, 1_000, grouped.MEMBER_TABLE_RANGE, grouped.MEMBER_TABLE_RANGE + 1, 1 << 40])
def test_members_is_isin_whichever_way_it_looks_ids_up(span):
    rng = np.random.default_rng(span % 997)
    ids = rng.integers(0, span, 300, dtype=np.int64)
    ids[0], ids[-1] = 0, span  # the whole span: the table holds span + 1 flags, or the sort is used
    values = np.concatenate([rng.choice(ids, 500), rng.integers(-5, span + 5, 500)])
    assert np.array_equal(grouped.members(values, ids), np.isin(values, ids))
    assert not grouped.members(values, ids[:0]).any()


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.uint16])
def test_distinct_is_unique(dtype):
    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 9, 1_000):
        values = rng.integers(0, 40, n).astype(dtype)
        got = grouped.distinct(values)
        assert got.dtype == dtype and np.array_equal(got, np.unique(values))
