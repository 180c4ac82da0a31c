"""The RSTs of a capture judged by two processes: this one and its reader child, once it has read the capture.

Evidence and verdicts run connection by connection in Python (about 35 µs a RST), after tracking; on a
storm of resets that is most of the time (a million bare RSTs: ~35 s of 47), while the reader child
(:mod:`rstscope.prefetch`) is done and its core idle.  So the child judges too:

1. The connections that saw a RST are cut, in id order, into batches (:data:`BATCH` connections at
   least, :data:`MAX_BATCHES` batches at most).  The child is sent
   where their rows are in the tracker's spill files, and the files' descriptors (:meth:`~rstscope.
   connections.retire.Spill.shared`: nothing is copied).
2. This process judges batches from the front, the child from the back; a batch is taken by creating
   its claim file (``O_EXCL``) in a work directory, so each is judged once, by whoever gets there first,
   and the two end within a batch of each other whatever their speeds.
3. Each batch's RST rows and columns go to files of their own (:func:`judge_part`); the table is
   gathered from them in id order (:func:`gather`).

The result does not depend on who judged what: evidence of a connection reads only that connection and
the capture's ``host_ttl``, and parts are gathered in id order.  A batch the child claimed but did not
finish (it died) is judged here.  A fleet's shards share their evidence the same way
(:mod:`rstscope.fleet.evidence_pool`), with the parts and files of this module.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import pickle
import resource
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstscope import reset_table, scratch
from rstscope.connections.retire import ConnectionsById, SharedSubjects
from rstscope.connections.rows import ResetSubject
from rstscope.status import RstscopeError

BATCH = 2_048
"""Connections with a RST per batch at least (about 0.07 s of judging: what one process may wait for the
other; each batch costs a file and about a millisecond)..."""
MAX_BATCHES = 64
"""... and at most this many batches (each batch's file stays open while the table is read: in batches of
2,048, a million RSTs would hold 489 descriptors, and three million more than the 1,024 a process may open
by default)."""
SUBJECTS_AT_ONCE = ConnectionsById.BATCH
"""Connections whose subjects are made at once (a batch of a million RSTs' table is 15,625)."""
SHARED_FROM = 2 * BATCH
"""Fewer connections with a RST than this (one batch) are judged here alone."""
FRONT = "front"
WINDOWS_BYTES = 16 << 20
"""Rows are read through a window of each file's bytes (at most 1 MB, at least 64 KB); the last windows
used are kept, up to this many bytes in all.  Rows in frame order go back and forth between a fleet's
shards' files (they hold alternate connections), and a table of millions of RSTs is dozens of files or,
in a fleet, hundreds (a 1 MB window of each, kept, took 412 MB)."""
_READ_BYTES = 1 << 20
_MIN_WINDOW = 64 << 10


# -- one capture, two processes ------------------------------------------------------------------------


def build(store, host_ttl: dict, child, *, judged: Callable[[int, int], None] | None = None) -> reset_table.ResetTable:
    """The reset table of ``store`` (a tracker's :class:`~rstscope.connections.retire.ConnectionStore`),
    judged here and by ``child`` (:meth:`rstscope.prefetch.PrefetchedCapture.run_in_child`); the same table
    as :func:`rstscope.reset_table.build` gives.  ``judged(done, connections)``: told as batches are done."""
    ids = store.reset_ids
    if len(ids) < SHARED_FROM:
        return reset_table.build(counted(store.reset_subjects(), len(ids), judged), host_ttl)
    work = Path(tempfile.mkdtemp(prefix="rstscope-judging-", dir=scratch.directory()))
    try:
        size = max(BATCH, -(-len(ids) // MAX_BATCHES))
        batches = -(-len(ids) // size)
        subjects, fds = store.shared_subjects(ids)
        job = child.run_in_child(ChildJudge(subjects, work, batches, size, host_ttl), fds)

        def judge(b: int) -> None:
            judge_part(store.reset_subjects(ids[b * size : (b + 1) * size]), work, 0, b, host_ttl, None)

        def done() -> None:
            if judged is not None:
                finished = [b for b in range(batches) if _finished(work, 0, b)]
                judged(sum(min(size, len(ids) - b * size) for b in finished), len(ids))

        for b in range(batches):
            if claim(work, 0, b):
                judge(b)
                done()  # the child's batches too, those finished by now
        with contextlib.suppress(Exception):  # whatever became of the child, its unfinished batches are judged here
            job.result()
        for b in range(batches):
            if not _finished(work, 0, b):
                judge(b)
        done()
        return gather([part_path(work, 0, b) for b in range(batches)])
    finally:
        child.close()  # the child stopped: no process left writing into the work directory
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class ChildJudge:
    """The child's share: batches from the back, while this process takes them from the front."""

    subjects: SharedSubjects
    """The connections that saw a RST, in id order."""
    work: Path
    batches: int
    size: int
    """Connections a batch."""
    host_ttl: dict

    def __call__(self, fds: list[int]) -> int:
        """Judge every batch still unclaimed; how many."""
        self.subjects.open(fds)
        judged = 0
        try:
            for b in reversed(range(self.batches)):
                if claim(self.work, 0, b):
                    judge_part(self._subjects(b), self.work, 0, b, self.host_ttl, None)
                    judged += 1
        finally:
            self.subjects.close()
        return judged

    def _subjects(self, batch: int) -> Iterator[ResetSubject]:
        """A batch's subjects, made SUBJECTS_AT_ONCE at a time (as the store makes them here)."""
        end = min((batch + 1) * self.size, len(self.subjects.positions))
        for start in range(batch * self.size, end, SUBJECTS_AT_ONCE):
            yield from self.subjects.subjects(start, min(start + SUBJECTS_AT_ONCE, end))


def counted(subjects: Iterable, connections: int, judged: Callable[[int, int], None] | None) -> Iterator:
    """``subjects`` (of ``connections`` connections), telling ``judged(done, connections)`` every
    :data:`SUBJECTS_AT_ONCE` of them and at the end (the evidence of each is made as it is taken)."""
    if judged is None:
        yield from subjects
        return
    done = 0
    for subject in subjects:
        if done and done % SUBJECTS_AT_ONCE == 0:
            judged(done, connections)
        yield subject
        done += 1
    judged(done, connections)


# -- parts of a reset table, judged by any process -------------------------------------------------------


def judge_part(subjects: Iterable, work: Path, shard: int, part: int | str, host_ttl: dict,
               extend: Callable[[dict, int], None] | None) -> None:  # fmt: skip
    """One part's reset table: its encoded rows to ``resets-{shard}-{part}`` as they are made, its columns
    (offsets into that file), fixes and first time to ``resets-{shard}-{part}.pickle`` (written last, and
    whole: a part is finished when its pickle is there)."""
    path = part_path(work, shard, part)
    table = reset_table.build(subjects, host_ttl, extend=extend, path=path)  # the rows straight to their file
    with open(f"{path}.pickle.part", "wb") as f:
        pickle.dump((table.columns(), table.fixes, table.first_ns), f)
    os.replace(f"{path}.pickle.part", f"{path}.pickle")


def claim(work: Path, shard: int, part: int) -> bool:
    """Whether this process took part ``part`` of shard ``shard`` (no other process can now)."""
    try:
        os.close(os.open(part_path(work, shard, part, "claim"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        return False
    return True


def part_path(work: Path, shard: int, part: int | str, kind: str = "resets") -> Path:
    return work / f"{kind}-{shard}-{part}"


def _finished(work: Path, shard: int, part: int | str) -> bool:
    return Path(f"{part_path(work, shard, part)}.pickle").exists()


def gather(paths: list[Path]) -> reset_table.ResetTable:
    """One reset table from its parts (:func:`judge_part`'s files, in id order); its rows are read from
    the parts' files one after the other (:class:`RowFiles`)."""
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
    return reset_table.ResetTable(joined, rows, fixes, min(first) if first else None)


class RowFiles:
    """Files of encoded RST rows read as one spill (:class:`rstscope.reset_table.RowSpill`'s reading
    side): offsets run through the files one after the other.  The files are open from here on: they may
    be removed.  Reads of a row go through windows of the files (:data:`WINDOWS_BYTES`)."""

    def __init__(self, paths: list) -> None:
        room_for(len(paths))
        self._fds = [os.open(p, os.O_RDONLY) for p in paths]
        self._sizes = [os.fstat(fd).st_size for fd in self._fds]
        self.bases = np.cumsum([0, *self._sizes[:-1]]).tolist() if self._sizes else []
        """Where each file starts in the whole."""
        self._window_bytes = min(_READ_BYTES, max(_MIN_WINDOW, WINDOWS_BYTES // max(1, len(paths))))
        self._windows: dict[int, tuple[int, bytes]] = {}  # file -> (offset, bytes), least recently used first

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
        start, window = self._windows.pop(j, (0, b""))
        if local < start or local + length > start + len(window):
            window, start = os.pread(self._fds[j], max(self._window_bytes, length), local), local
        self._windows[j] = (start, window)  # the most recently used, last
        if len(self._windows) * self._window_bytes > WINDOWS_BYTES:
            del self._windows[next(iter(self._windows))]
        return window[local - start : local - start + length]

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


DESCRIPTORS_SPARE = 256
"""Descriptors left free beside a table's files (the outputs, the pipes, the libraries')."""


def room_for(files: int) -> None:
    """Room to keep ``files`` more files open: the soft limit on open files raised toward the hard one when
    it is too low for them (a fleet's table of millions of RSTs is hundreds of files, and 1,024 is a common
    soft limit; Go's runtime raises it to the hard limit at start for the same reason), else an error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = _open_now() + files + DESCRIPTORS_SPARE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        raise RstscopeError(f"the RSTs' rows are in {files} files, more than this process may keep open "
                            f"(at most {hard}): raise the limit with ulimit -n")  # fmt: skip
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(hard, 2 * need), hard))


def _open_now() -> int:
    """Files this process has open (Linux's /proc; elsewhere the spare descriptors stand for them)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
