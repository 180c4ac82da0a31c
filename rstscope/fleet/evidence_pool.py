"""Evidence and verdicts of a fleet's shards, shared out so that no core waits for another.

Each shard judges the RSTs of its own connections: they are in its tracker's store.  The shards get
equal work (the hash splits the RSTs within 1 %), but not equal speed: on a 2-core virtual machine
one shard took 21.0 CPU s for what the other did in 16.7 (benchmarks/PLAN.md §19), and with a fixed
share the faster one then waited for the slower with a core idle.  So the work is shared out:

1. Before the shards meet after tracking (:func:`share`), each cuts its connections that saw a RST,
   in id order, into a *front* and a *tail* of :data:`TAIL_SHARE`; the tail's *subjects* (their
   connection rows and the rows of the tables evidence reads) go to files, :data:`BATCH` connections
   a file.
2. Then (:func:`judge`) each shard judges its front from its own store, then its tail batch by batch,
   then the other shards' tail batches from the back.  A batch is taken by creating its claim file
   with ``O_EXCL`` in the capture's work directory, which the shards of every engine share (the Dask
   engine's included): each batch is judged once, by whichever shard gets there first.
3. Every part's RST rows and columns go to files of their own (:func:`judge_part`); once all shards
   are done (a barrier), each removes its subject files and gathers its own parts in order into one
   table (:func:`gather`).

The result does not depend on who judged what: evidence of a connection reads only that connection
and the capture's ``host_ttl``, and parts are gathered in id order.
"""

from __future__ import annotations

import bisect
import os
import pickle
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from rstscope import reset_table
from rstscope.connections.rows import AFTER_ROW, CONN_ROW, RST_ROW, reset_subjects, span_positions
from rstscope.fleet import timing

BATCH = 4_096
"""Connections with a RST per tail batch (about 0.3 s of judging: what a shard may wait at the end)."""
TAIL_SHARE = 0.3
"""Share of a shard's connections with a RST that any shard may judge; the rest is judged from the store,
without writing its rows out.  Two shards still end together when one runs up to 1.86x slower than the
other (its front alone, 0.7 of its work, then takes as long as the whole shared at both speeds:
0.7 s <= 2 s / (s + 1)); measured: up to 1.26x."""
SUBJECT_TABLES = {"resets": RST_ROW, "after": AFTER_ROW}
"""The tables evidence reads of a connection (:func:`rstscope.connections.rows.reset_subjects`)."""
SUBJECT_FILES = {"conns": CONN_ROW, **SUBJECT_TABLES}
"""A tail batch's files, by kind: its connection rows, and their rows of each table."""
FRONT = "front"
_READ_BYTES = 1 << 20


def share(store, shard: int, work: Path) -> None:
    """Cut shard ``shard``'s connections that saw a RST into front and tail, and write the tail's
    subjects (local ids) and the cut (``plan-{shard}.npy``: connections, front, tail batches)."""
    ids = np.asarray(store._reset_ids, dtype=np.int64)
    front = len(ids) - int(np.ceil(len(ids) * TAIL_SHARE))
    spill = store._spill  # rstscope.connections.retire.Spill: rows, not objects
    batches = 0
    for start in range(front, len(ids), BATCH):
        rows = spill.rows(ids[start : start + BATCH])
        for name in SUBJECT_TABLES:
            spans = rows[name]
            spill.tables[name].take(span_positions(spans)).tofile(_subject_file(work, shard, batches, name))
            spans[:, 0] = np.cumsum(spans[:, 1]) - spans[:, 1]  # where they are in the batch's file
        rows.tofile(_subject_file(work, shard, batches, "conns"))
        batches += 1
    np.save(work / f"plan-{shard}.npy", np.array([len(ids), front, batches], dtype=np.int64))


def judge(store, shard: int, shards: int, work: Path, gids: list[np.ndarray], host_ttl: dict,
          extend: Callable[[dict, int], None] | None) -> None:  # fmt: skip
    """Evidence and verdicts of shard ``shard``'s front, then of every tail batch it can claim (its own
    first, then the others' from the back); ``gids``: the global ids of each shard's connections."""
    plans = [_plan(work, j) for j in range(shards)]
    ids = np.asarray(store._reset_ids, dtype=np.int64)[: plans[shard].front]
    front = _renumbered(store._batches(ids, store._spill.subjects), gids[shard])
    judge_part(front, work, shard, FRONT, host_ttl, extend)
    others = timing.Stopwatch()
    for b in range(plans[shard].batches):
        if _claim(work, shard, b):
            judge_part(_subjects(work, shard, b, gids[shard]), work, shard, b, host_ttl, extend)
    for j in (*range(shard + 1, shards), *range(shard)):
        for b in reversed(range(plans[j].batches)):
            if _claim(work, j, b):
                with others.timing():
                    judge_part(_subjects(work, j, b, gids[j]), work, j, b, host_ttl, extend)
    others.record("phase 2", f"of which other shards' batches ({others.count})")


def judge_part(subjects: Iterable, work: Path, shard: int, part: int | str, host_ttl: dict,
               extend: Callable[[dict, int], None] | None) -> None:  # fmt: skip
    """One part's reset table: its encoded rows to ``resets-{shard}-{part}`` as they are made, its columns
    (offsets into that file), fixes and first time to ``resets-{shard}-{part}.pickle``."""
    path = _path(work, shard, part, "resets")
    table = reset_table.build(subjects, host_ttl, extend=extend, path=path)  # the rows straight to their file
    with open(f"{path}.pickle", "wb") as f:
        pickle.dump((columns(table), table.fixes, table.first_ns), f)


def columns(table: reset_table.ResetTable) -> dict[str, np.ndarray]:
    """A reset table's columns (those :class:`rstscope.reset_table.ResetTable` is made from)."""
    return {"frame": table.frame, "connection": table.connection, "verdict": table.verdict,
            "connection_primary": table.connection_primary, "in_flight": table.in_flight,
            "findings": table.findings, "offset": table._offset, "length": table._length}  # fmt: skip


def remove_shared(work: Path, shard: int) -> None:
    """Shard ``shard``'s subject and claim files, once every shard has judged."""
    for b in range(_plan(work, shard).batches):
        for kind in SUBJECT_FILES:
            _subject_file(work, shard, b, kind).unlink()
        _path(work, shard, b, "claim").unlink()


def gather(work: Path, shard: int) -> tuple[reset_table.ResetTable, list[str]]:
    """Shard ``shard``'s reset table from its parts, in id order (once every shard has judged); and the
    files of its encoded rows, one after the other (the table's offsets are into them as one)."""
    plan = _plan(work, shard)
    paths = [_path(work, shard, part, "resets") for part in (FRONT, *range(plan.batches))]
    parts = []
    for path in paths:
        with open(f"{path}.pickle", "rb") as f:
            parts.append(pickle.load(f))
    rows = RowFiles(paths)
    joined = {}
    for name in parts[0][0]:
        pieces = [p[0][name] for p in parts]
        if name == "offset":
            pieces = [p + base for p, base in zip(pieces, rows.bases, strict=True)]
        joined[name] = np.concatenate(pieces)
    fixes = set().union(*(p[1] for p in parts))
    first = [p[2] for p in parts if p[2] is not None]
    return reset_table.ResetTable(joined, rows, fixes, min(first) if first else None), [str(p) for p in paths]


class RowFiles:
    """Files of encoded RST rows read as one spill (:class:`rstscope.reset_table.RowSpill`'s reading
    side): offsets run through the files one after the other."""

    def __init__(self, paths: list) -> None:
        self._fds = [os.open(p, os.O_RDONLY) for p in paths]
        self._sizes = [os.fstat(fd).st_size for fd in self._fds]
        self.bases = np.cumsum([0, *self._sizes[:-1]]).tolist() if self._sizes else []
        """Where each file starts in the whole."""
        self._windows = [(0, b"")] * len(paths)

    def read_range(self, offset: int, length: int) -> bytes:
        """Bytes ``[offset, offset + length)`` of the files one after the other."""
        parts = []
        while length > 0:
            j = bisect.bisect_right(self.bases, offset) - 1
            local = offset - self.bases[j]
            n = length if j == len(self._fds) - 1 else min(length, self._sizes[j] - local)  # then the next file
            parts.append(reset_table.pread_exactly(self._fds[j], n, local))
            offset, length = offset + n, length - n
        return b"".join(parts)

    def read(self, offset: int, length: int) -> bytes:
        j = bisect.bisect_right(self.bases, offset) - 1
        local = offset - self.bases[j]
        start, window = self._windows[j]
        if local < start or local + length > start + len(window):
            window = os.pread(self._fds[j], max(_READ_BYTES, length), local)
            start = local
            self._windows[j] = (start, window)
        return window[local - start : local - start + length]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


class _Plan:
    def __init__(self, values: np.ndarray) -> None:
        self.connections, self.front, self.batches = (int(v) for v in values)


def _plan(work: Path, shard: int) -> _Plan:
    return _Plan(np.load(work / f"plan-{shard}.npy"))


def _path(work: Path, shard: int, part: int | str, kind: str) -> Path:
    return work / f"{kind}-{shard}-{part}"


def _subject_file(work: Path, shard: int, batch: int, kind: str) -> Path:
    return work / f"subjects-{shard}-{batch}.{kind}"


def _claim(work: Path, shard: int, batch: int) -> bool:
    """Whether this process took tail batch ``batch`` of shard ``shard`` (no other process can now)."""
    try:
        os.close(os.open(_path(work, shard, batch, "claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def _subjects(work: Path, shard: int, batch: int, gid: np.ndarray) -> list:
    """A tail batch's subjects from its files, with global ids."""
    rows, *tables = (np.fromfile(_subject_file(work, shard, batch, kind), dtype=dtype)
                     for kind, dtype in SUBJECT_FILES.items())  # fmt: skip
    by_name = dict(zip(SUBJECT_TABLES, tables, strict=True))
    rows["id"] = gid[rows["id"]]
    return reset_subjects(rows, lambda name, positions: by_name[name][positions])


def _renumbered(subjects: Iterator, gid: np.ndarray) -> Iterator:
    for s in subjects:
        s.id = int(gid[s.id])
        yield s
