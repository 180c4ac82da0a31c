"""Sequence arithmetic across the 32-bit wrap."""

from __future__ import annotations

import numpy as np
import pytest

from rstscope.seqnum import seq_diff, seq_diff_array


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
