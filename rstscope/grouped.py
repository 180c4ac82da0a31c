"""Segmented (grouped) running operations on numpy arrays.

The tracker sorts a chunk so that each connection's packets are contiguous
and in capture order, then needs "running maximum of X over this
connection's packets so far" for every packet.  These helpers do that for all
groups at once; a group is a run of equal group index ``gi`` (0, 0, 1, 1, 1, 2, ...).
"""

from __future__ import annotations

import numpy as np

NONE = np.iinfo(np.int64).min // 4
"""Sentinel for "no value yet" in int64 columns (far below any sequence position)."""

_SHIFT = 40  # group offset for maximum.accumulate: values within a group span < 2**40 (1 TiB)


class Groups:
    """Index arrays describing contiguous groups of a sorted array."""

    def __init__(self, start: np.ndarray):
        """``start[i]`` is True where a new group begins (``start[0]`` must be True)."""
        self.start = start
        self.n = len(start)
        self.first_pos = np.flatnonzero(start)
        self.gi = np.cumsum(start) - 1
        self.elem_first = self.first_pos[self.gi]
        self.last_pos = np.empty_like(self.first_pos)
        self.last_pos[:-1] = self.first_pos[1:] - 1
        if len(self.last_pos):
            self.last_pos[-1] = self.n - 1
        self.count = len(self.first_pos)

    def last_valid_pos(self, valid: np.ndarray) -> np.ndarray:
        """Per element: position of the latest ``valid`` element at or before it in its group, else -1."""
        pos = np.where(valid, np.arange(self.n), -1)
        running = np.maximum.accumulate(pos) if self.n else pos
        return np.where(running >= self.elem_first, running, -1)

    def exclusive(self, inclusive: np.ndarray, fill) -> np.ndarray:
        """Shift a running result by one element inside each group (value *before* the element)."""
        out = np.empty_like(inclusive)
        if self.n:
            out[1:] = inclusive[:-1]
            out[self.first_pos] = fill
        return out

    def cumsum(self, values: np.ndarray) -> np.ndarray:
        """Inclusive running sum restarting at each group."""
        total = np.cumsum(values, dtype=np.int64)
        before = np.zeros(self.count, dtype=np.int64)
        if self.count > 1:
            before[1:] = total[self.first_pos[1:] - 1]
        return total - before[self.gi]

    def cummax(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Inclusive running max of ``values`` over ``valid`` elements, NONE before the first one."""
        if not self.n:
            return np.empty(0, dtype=np.int64)
        big = np.iinfo(np.int64).max
        group_min = np.minimum.reduceat(np.where(valid, values, big), self.first_pos)
        group_min = np.where(group_min == big, 0, group_min)
        base = group_min[self.gi]
        rebased = np.where(valid, values - base, 0)
        offset = self.gi.astype(np.int64) << _SHIFT
        running = np.maximum.accumulate(rebased + offset) - offset + base
        seen = self.cumsum(valid.astype(np.int64)) > 0
        return np.where(seen, running, NONE)

    def first(self, values: np.ndarray) -> np.ndarray:
        """Per group: the value of its first element."""
        return values[self.first_pos]

    def last(self, values: np.ndarray) -> np.ndarray:
        """Per group: the value of its last element."""
        return values[self.last_pos]


MEMBER_TABLE_RANGE = 1 << 22
"""Widest span of ids :func:`members` looks up in a table of flags (a 4 MB temporary at most)."""


def members(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``np.isin(values, ids)`` for integer ids, in O(len(values) + span of ids) when that span is at
    most :data:`MEMBER_TABLE_RANGE`: a flag per id in the span, looked up per value.  Retirement asks
    this of every pending row once per batch of connections, and numpy's own choice sorts the pending
    rows each time (O(n log n) per batch, which made small batches cost CPU)."""
    if len(ids) and int(ids.max()) - int(ids.min()) <= MEMBER_TABLE_RANGE:
        return np.isin(values, ids, kind="table")
    return np.isin(values, ids)


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a 1-D array: ``np.unique(values)`` without its check for a masked
    array, whose first call imports ``numpy.ma`` (12-15 ms by ``python -X importtime``; rstscope has no
    masked arrays)."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first]
