"""The RSTs of a capture judged by two processes: this one and its reader child.

Evidence and verdicts run connection by connection in Python (25-30 µs a RST); on a storm of resets
that is most of the time (a million bare RSTs: 10-12 s of the command's 18-21 after tracking, on two
processes), and the reader child (:mod:`rstscope.prefetch`) mostly waits for the tracker to take its
chunks.  So the child judges too.
While the capture is tracked it judges the connections that retired (:class:`WhileTracking`; a RST whose
sender sent nothing else is judged against the TTL baseline of its host, which only the whole capture
gives: as if there were none, and again at the end if there is one); after tracking, the rest is shared:

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
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstscope import heap, prefetch, reset_table, scratch
from rstscope.connections.retire import ConnectionsById, RowBatch, SharedSubjects
from rstscope.connections.rows import ResetSubject
from rstscope.prefetch import PendingJob
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


def build(store, host_ttl: dict, child, *, judged: Callable[[int, int], None] | None = None,
          early: WhileTracking | None = None, keep_child: bool = False) -> reset_table.ResetTable:  # fmt: skip
    """The reset table of ``store`` (a tracker's :class:`~rstscope.connections.retire.ConnectionStore`),
    judged here and by ``child`` (:meth:`rstscope.prefetch.PrefetchedCapture.run_in_child`); the same table
    as :func:`rstscope.reset_table.build` gives.  ``judged(done, connections)``: told as batches are done.
    ``early``: what the child judged while the capture was tracked (:class:`WhileTracking`); the rest is
    judged here.  The child is stopped at the end, unless ``keep_child`` (and no error: it has answered
    every job, and writes no more into the work directory)."""
    ids = store.reset_ids
    total = len(ids)
    judged_early = early is not None and early.work is not None  # some jobs were given while tracking
    if not judged_early and total < SHARED_FROM:
        return reset_table.build(counted(store.reset_subjects(), total, judged), host_ttl)
    work = early.work if judged_early else Path(tempfile.mkdtemp(prefix="rstscope-judging-", dir=scratch.directory()))
    try:
        paths: list[Path] = []
        before, batch = 0, BATCH  # connections judged before this call; connections a batch at least
        if judged_early:
            early.recall(host_ttl)
            ids = np.setdiff1d(ids, early.taken(), assume_unique=True)
            paths, before = early.parts(), total - len(ids) - early.in_flight()
            batch = EARLY_BATCH  # what is left is judged in smaller batches: the two processes end closer
        if len(ids) >= 2 * batch:
            paths += _shared(store, ids, host_ttl, child, work, batch, judged, early, before, total)
        else:
            if len(ids):
                judge_part(store.reset_subjects(ids), work, 0, "rest", host_ttl, None)
                paths.append(part_path(work, 0, "rest"))
            if early is not None:
                paths += early.settle(store, host_ttl)
        if judged is not None:
            judged(total, total)
        if not keep_child:
            child.close()  # done: its memory is given back before the parts are gathered
        return gather(paths)
    except BaseException:
        child.close()  # the child stopped: no process left writing into the work directory
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _shared(store, ids: np.ndarray, host_ttl: dict, child, work: Path, batch: int, judged,
            early: WhileTracking | None, before: int, total: int) -> list[Path]:  # fmt: skip
    """Judge the connections ``ids`` here and in ``child``, in batches of ``batch`` connections at least from
    both ends; the parts' paths (and those of the jobs ``early`` still had in the child,
    :meth:`WhileTracking.settle`)."""
    size = max(batch, -(-len(ids) // MAX_BATCHES))
    batches = -(-len(ids) // size)
    subjects, fds = store.shared_subjects(ids)
    try:
        job = child.run_in_child(ChildJudge(subjects, work, batches, size, host_ttl), fds)
    except OSError:  # the child is gone: all of it here
        job = None

    def judge(b: int) -> None:
        judge_part(store.reset_subjects(ids[b * size : (b + 1) * size]), work, 0, b, host_ttl, None)

    def done() -> None:
        if judged is not None:
            finished = [b for b in range(batches) if _finished(work, 0, b)]
            judged(before + sum(min(size, len(ids) - b * size) for b in finished), total)

    for b in range(batches):
        if claim(work, 0, b):
            judge(b)
            done()  # the child's batches too, those finished by now
    late = early.settle(store, host_ttl) if early is not None else []  # their answers come before the job's
    if job is not None:
        with contextlib.suppress(Exception):  # whatever became of the child, its unfinished batches are judged here
            job.result()
    for b in range(batches):
        if not _finished(work, 0, b):
            judge(b)
    return [part_path(work, 0, b) for b in range(batches)] + late


EARLY_BATCH = 512
"""Connections with a RST that retired and wait, at least, before the child is given them to judge while
the capture is tracked; and the smallest batch of those left at the end..."""
EARLY_MOST = 512
"""... and at most this many a job: the child's memory while it judges them adds to the tracker's (on the
1M-packet SYN flood of benchmarks/, the child's peak: 46 MB, 58-61 MB in jobs of 2,048)."""
EARLY_JOBS = 2
"""Jobs given to the child and not answered yet, at most.  The tracker gives new ones once a chunk (a storm
of bare RSTs: 80-90 ms a chunk, 13 ms a job of 512), so more would keep the child busier while the capture
is tracked: with 8, it judged 145,000 of a million bare RSTs then, against 63,500, but the flood, whose
tracker is what everything waits for, took 2 % longer (16 pairs in turn; its judging then competes with
the thread that prepares the tracker's chunks)."""
EARLY_WAITING = 8 * EARLY_MOST
"""Connections that retired waiting for the child at most (more when the tracker goes faster than the
child judges, as in a storm of resets: those are judged at the end)."""


class WhileTracking:
    """RSTs judged while the capture is still being tracked, by the reader child once it has read it.

    On a busy server or a flood, tracking is most of the time and the reader child mostly waits for it.  A
    connection that retired has its rows final in the tracker's spill files, and so is its evidence, but
    for one thing: a RST whose sender sent nothing else in its connection is compared with the TTLs of
    that host's other connections (``host_ttl``, known at the end).  The tracker tells :meth:`retired` of the
    connections as they retire; after each chunk (:meth:`poll`), while :data:`EARLY_BATCH` of them with a
    RST wait and fewer than :data:`EARLY_JOBS` jobs are in progress, the child is given the first
    :data:`EARLY_MOST` (where their rows are, and the files' descriptors); it judges them into a part of
    their own (:class:`EarlyJudge`, :func:`judge_part`) and answers with the hosts whose
    ``host_ttl`` their evidence looked up: it found none, as at the end if the host sends nothing but
    RSTs (a storm of bare ones).  At the end (:meth:`recall`, :meth:`settle`), a job that looked up a host
    that ``host_ttl`` then holds is dropped, and its connections judged again.  Only connections whose
    hosts had no ``host_ttl`` yet when they retired are given for that: one with an entry keeps it.
    :func:`build` judges the rest, and gathers every part in id order: the table does not depend on what
    was judged early.  A job that failed leaves its connections to :func:`build`, and no more jobs are
    given."""

    def __init__(self, child, tracker) -> None:
        self._child, self._tracker = child, tracker
        self.work: Path | None = None
        """The work directory, once a job was given (:func:`build` writes its parts there too)."""
        self._waiting: list[np.ndarray] = []  # ids of retired connections with a RST, not given yet
        self._count = 0  # how many
        self._pending: deque[tuple[PendingJob, str, np.ndarray]] = deque()  # jobs given, not answered: part, ids
        self._parts: list[Path] = []  # parts of the jobs answered
        self._judged: list[np.ndarray] = []  # the ids they judged
        self._looked_up: list[list[str]] = []  # the hosts whose host_ttl their evidence looked up (none found)
        self._jobs = 0
        self._failed = False

    def retired(self, batch: RowBatch) -> None:
        """These connections retired (the tracker's ``on_retired``)."""
        rows = batch.rows
        # Those with RST rows, EARLY_WAITING at most waiting (the others are judged at the end: the child is
        # behind); not those whose responder sent nothing else (its RSTs' evidence looks up its host's
        # host_ttl, as a refused SYN's RST does) to a host that has a host_ttl by now: judged at the end.
        at = np.flatnonzero(rows["resets"][:, 1] > 0)[: EARLY_WAITING - self._count]
        silent = at[rows["ttl_n"][at, 1] == 0]
        known = silent[self._tracker.hosts_with_ttl(rows["resp_hi"][silent], rows["resp_lo"][silent])]
        ids = rows["id"][np.setdiff1d(at, known, assume_unique=True)]
        if len(ids) and not self._failed:
            self._waiting.append(ids)
            self._count += len(ids)

    def poll(self) -> None:
        """Collect the jobs done; give the child new ones while there is enough for them, EARLY_JOBS at most
        given and not answered (the child starts the next as soon as it is done with one: the tracker
        polls once a chunk)."""
        while self._pending and self._pending[0][0].ready():
            self._answer()
        while not self._failed and len(self._pending) < EARLY_JOBS and self._count >= EARLY_BATCH:
            self._give()

    def _give(self) -> None:
        waiting = np.concatenate(self._waiting)
        ids, rest = np.sort(waiting[:EARLY_MOST]), waiting[EARLY_MOST:]
        self._waiting, self._count = [rest] if len(rest) else [], len(rest)
        if self.work is None:
            self.work = Path(tempfile.mkdtemp(prefix="rstscope-judging-", dir=scratch.directory()))
        self._jobs += 1
        part = f"early{self._jobs}"
        subjects, fds = self._tracker.shared_subjects(ids)
        try:
            job = self._child.run_in_child(EarlyJudge(subjects, self.work, part), fds)
        except OSError:  # the child is gone
            self._failed = True
            return
        self._pending.append((job, part, ids))

    def _answer(self) -> bool:
        """Take the oldest job's answer; whether it judged its connections (all of them) or failed."""
        job, part, ids = self._pending.popleft()
        try:
            looked_up = job.result()
        except (RstscopeError, OSError):
            self._failed = True
            return False
        self._parts.append(part_path(self.work, 0, part))
        self._judged.append(ids)
        self._looked_up.append(looked_up)
        return True

    def recall(self, host_ttl: dict, first: int = 0) -> np.ndarray:
        """Drop the parts (of the jobs answered, from the ``first``) whose evidence looked up a host that
        ``host_ttl``, the whole capture's, holds: their connections are to be judged again; their ids."""
        dropped = [i for i in range(first, len(self._parts)) if any(h in host_ttl for h in self._looked_up[i])]
        ids = [self._judged[i] for i in dropped]
        for i in reversed(dropped):
            del self._parts[i], self._judged[i], self._looked_up[i]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    def taken(self) -> np.ndarray:
        """The ids of the connections judged early or being judged (the jobs not answered yet)."""
        ids = [*self._judged, *(ids for _, _, ids in self._pending)]
        return np.sort(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)

    def in_flight(self) -> int:
        """Connections of the jobs not answered yet."""
        return sum(len(ids) for _, _, ids in self._pending)

    def parts(self) -> list[Path]:
        """The parts of the jobs answered so far."""
        return list(self._parts)

    def settle(self, store, host_ttl: dict) -> list[Path]:
        """Wait for the jobs not answered yet; judge here what they left (all of a job that failed, or whose
        evidence looked up a host that ``host_ttl`` holds: :meth:`recall`); the parts that holds."""
        before, left = len(self._parts), []
        while self._pending:
            ids = self._pending[0][2]
            if not self._answer():
                left.append(ids)
        left.append(self.recall(host_ttl, before))
        out = self._parts[before:]
        left = np.concatenate(left) if left else np.zeros(0, dtype=np.int64)
        if len(left):
            judge_part(store.reset_subjects(np.sort(left)), self.work, 0, "late", host_ttl, None)
            out.append(part_path(self.work, 0, "late"))
        return out

    def close(self, *, failed: bool) -> None:
        """Remove the work directory; first, if ``failed`` (its jobs may not all be answered), stop the child:
        no process left writing there."""
        if self.work is not None:
            if failed:
                self._child.close()
            shutil.rmtree(self.work, ignore_errors=True)


@contextlib.contextmanager
def while_tracking(capture, tracker) -> Iterator[WhileTracking | None]:
    """A :class:`WhileTracking` for this capture and tracker if the capture is read by a child, else None;
    its work directory removed at the end, whatever happens (:func:`build` answered its jobs, unless
    something failed)."""
    if not isinstance(capture, prefetch.PrefetchedCapture):
        yield None
        return
    early = WhileTracking(capture, tracker)
    failed = True
    try:
        yield early
        failed = False
    finally:
        early.close(failed=failed)


@dataclass
class EarlyJudge:
    """A job for the child while the capture is tracked: judge these retired connections into part
    ``part``; the hosts whose ``host_ttl`` their evidence looked up (:class:`NoneYet`)."""

    subjects: SharedSubjects
    work: Path
    part: str

    def __call__(self, fds: list[int]) -> list[str]:
        self.subjects.open(fds)
        host_ttl = NoneYet()
        try:
            judge_part(self._ready(), self.work, 0, self.part, host_ttl, None)
        finally:
            self.subjects.close()
        return sorted(host_ttl.looked_up)

    def _ready(self) -> Iterator[ResetSubject]:
        n = len(self.subjects.positions)
        for start in range(0, n, SUBJECTS_AT_ONCE):
            yield from self.subjects.subjects(start, min(start + SUBJECTS_AT_ONCE, n))


class NoneYet:
    """``host_ttl`` while the capture is tracked: no host has one yet.  Evidence judged with it is the
    evidence of the end for as long as the hosts it looked up (``looked_up``) have none then either;
    looked up any other way than ``get``, it fails the job (its connections are judged at the end)."""

    def __init__(self) -> None:
        self.looked_up: set[str] = set()

    def get(self, key, default=None):
        self.looked_up.add(key)
        return default

    def __getitem__(self, key):
        raise LookupError(f"host_ttl[{key!r}] before the capture ended")

    __contains__ = __getitem__


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
    """One reset table from its parts (:func:`judge_part`'s files), in id order; its rows are read from
    the parts' files one after the other (:class:`RowFiles`)."""
    parts = []
    for path in paths:
        with open(f"{path}.pickle", "rb") as f:
            parts.append(pickle.load(f))
    rows = RowFiles(paths)
    joined = {}
    for name in list(parts[0][0]):  # a column at a time, the parts' pieces dropped as it is made
        pieces = [p[0].pop(name) for p in parts]
        if name == "offset":
            pieces = [p + base for p, base in zip(pieces, rows.bases, strict=True)]
        joined[name] = np.concatenate(pieces)
        del pieces
    ids = joined["connection"]
    if np.any(ids[1:] < ids[:-1]):  # parts judged while tracking hold the connections as they retired
        order = np.argsort(ids, kind="stable")  # a connection's RSTs are in one part, in capture order
        del ids
        for name in list(joined):  # one column copied at a time: a storm's table is 40 MB
            joined[name] = joined[name][order]
        del order
        heap.give_back()  # the columns' old places: the outputs start from what the table holds
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
    open_now = _open_now()
    need = open_now + files + DESCRIPTORS_SPARE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        # Those open may be most of it: a directory of thousands of captures keeps each one's files open.
        raise RstscopeError(f"the RSTs' rows are in {files} files, and {open_now} are open already: more than "
                            f"this process may keep open (at most {hard}): raise the limit with ulimit -n")  # fmt: skip
    resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else min(hard, 2 * need), hard))


def _open_now() -> int:
    """Files this process has open (Linux's /proc; elsewhere the spare descriptors stand for them)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0
