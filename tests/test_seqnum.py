"""Sequence arithmetic across the 32-bit wrap."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope.seqnum import seq_diff, seq_diff_array, unwrap_series


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (0, 10, 10),
        (10, 0, -10),
        (2**32 - 5, 5, 10),  # forward across the wrap
        (5, 2**32 - 5, -10),  # backward across the wrap
        (0, 2**31 - 1, 2**31 - 1),
        (0, 2**31, -(2**31)),  # half the space away: by convention behind
    ],
)
def test_seq_diff(a, b, expected):
    assert seq_diff(a, b) == expected
    assert seq_diff_array(np.array([a]), np.array([b]))[0] == expected


def test_unwrap_series_restarts_per_group():
    raw = np.array([2**32 - 10, 2**32 - 1, 5, 100, 7, 8], dtype=np.int64)
    start = np.array([True, False, False, False, True, False])
    anchor_raw = np.array([2**32 - 10, 0, 0, 0, 5, 0], dtype=np.int64)
    anchor_val = np.array([0, 0, 0, 0, 1000, 0], dtype=np.int64)
    got = unwrap_series(raw, start, anchor_raw, anchor_val)
    assert got.tolist() == [0, 9, 15, 110, 1002, 1003]
