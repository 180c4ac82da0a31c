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

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from rstscope import judging, reset_table
from rstscope.connections.retire import SUBJECT_FILES, SUBJECT_TABLES
from rstscope.connections.rows import reset_subjects, span_positions
from rstscope.fleet import timing
from rstscope.judging import FRONT, claim, judge_part, part_path

BATCH = 4_096
"""Connections with a RST per tail batch (about 0.3 s of judging: what a shard may wait at the end)."""
TAIL_SHARE = 0.3
"""Share of a shard's connections with a RST that any shard may judge; the rest is judged from the store,
without writing its rows out.  Two shards still end together when one runs up to 1.86x slower than the
other (its front alone, 0.7 of its work, then takes as long as the whole shared at both speeds:
0.7 s <= 2 s / (s + 1)); measured: up to 1.26x."""


def share(store, shard: int, work: Path) -> None:
    """Cut shard ``shard``'s connections that saw a RST into front and tail, and write the tail's
    subjects (local ids) and the cut (``plan-{shard}.npy``: connections, front, tail batches)."""
    ids = np.asarray(store.reset_ids, dtype=np.int64)
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
    ids = np.asarray(store.reset_ids, dtype=np.int64)[: plans[shard].front]
    front = _renumbered(store.reset_subjects(ids), gids[shard])
    judge_part(front, work, shard, FRONT, host_ttl, extend)
    others = timing.Stopwatch()
    for b in range(plans[shard].batches):
        if claim(work, shard, b):
            judge_part(_subjects(work, shard, b, gids[shard]), work, shard, b, host_ttl, extend)
    for j in (*range(shard + 1, shards), *range(shard)):
        for b in reversed(range(plans[j].batches)):
            if claim(work, j, b):
                with others.timing():
                    judge_part(_subjects(work, j, b, gids[j]), work, j, b, host_ttl, extend)
    others.record("phase 2", f"of which other shards' batches ({others.count})")


def remove_shared(work: Path, shard: int) -> None:
    """Shard ``shard``'s subject and claim files, once every shard has judged."""
    for b in range(_plan(work, shard).batches):
        for kind in SUBJECT_FILES:
            _subject_file(work, shard, b, kind).unlink()
        part_path(work, shard, b, "claim").unlink()


def gather(work: Path, shard: int) -> tuple[reset_table.ResetTable, list[str]]:
    """Shard ``shard``'s reset table from its parts, in id order (once every shard has judged); and the
    files of its encoded rows, one after the other (the table's offsets are into them as one)."""
    paths = [part_path(work, shard, part) for part in (FRONT, *range(_plan(work, shard).batches))]
    return judging.gather(paths), [str(p) for p in paths]


class _Plan:
    def __init__(self, values: np.ndarray) -> None:
        self.connections, self.front, self.batches = (int(v) for v in values)


def _plan(work: Path, shard: int) -> _Plan:
    return _Plan(np.load(work / f"plan-{shard}.npy"))


def _subject_file(work: Path, shard: int, batch: int, kind: str) -> Path:
    return work / f"subjects-{shard}-{batch}.{kind}"


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
