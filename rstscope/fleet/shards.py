"""``--jobs N``: the pieces of a capture decoded and tracked in N processes, with the single-process result.

Phase 1 (:func:`decode_piece`, one task per piece, N at a time): read a piece, drop the rows with a
decode error (the tracker skips them too), and append every other row to one of N shard files by a
symmetric hash of its connection key (4-tuple and tunnel id): both directions of a connection, and
every lifetime of a 4-tuple, land in the same shard.  The piece's frames and timestamps are kept for
the clock (below).

The clock (:func:`schedule`).  The tracker is not only per connection: its idle sweeps run after each
slice it tracks (``FEED_ROWS`` rows of a ``CHUNK_PACKETS``-record chunk) at that slice's last frame
and latest timestamp, and under pressure it retires closed connections when the capture *as a whole*
keeps more than ``LIVE_CLOSED_LIMIT`` of them.  The parent computes the slices the single process
would track (from the pieces' frames), and each shard tracks its rows slice by slice, sweeping at
the same frames and times (:class:`ShardTracker`).  The pressure count is summed over the shards at
every slice (:class:`BarrierExchange`: the shards run in lockstep, one barrier per slice), so a
connection retires in its shard exactly when it would retire in the single process.

Phase 2 (:func:`track_shard`, one process per shard): track the shard over all pieces in frame
order, then do the stages after tracking for its own connections (:func:`.merge.finish_shard`:
global ids, which are the single-process ids since connections are numbered in the order of their
first packet and a frame holds one packet; the capture's ``host_ttl``; evidence, verdicts and the
encoded document rows).  The parent interleaves what the shards wrote (:mod:`.merge`).

Known limit: within a slice, a 64-bit hash collision between two 4-tuples makes the single process
group rows exactly instead (``TupleTable.index``); grouping differs, the result does not.
Memory per process: phase 1 is the reader's (about 80 MB) and the piece's frames and timestamps (16
bytes a row); phase 2 reads its shard files in blocks and holds the connections alive in its shard.
Where the time goes: ``benchmarks/fleet.py --breakdown`` (:mod:`.timing`; benchmarks/PLAN.md §13).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rstscope import collector, scratch
from rstscope.analysis import CHUNK_PACKETS, Analysis
from rstscope.connections import Tracker
from rstscope.connections.retire import joined, opaque, taken
from rstscope.connections.tracker import FEED_ROWS
from rstscope.fleet import rowstream, stitch, timing
from rstscope.fleet.merge import MergedStore, ShardResult, finish_shard, merged_listen_queue, merged_resets
from rstscope.fleet.pieces import Piece, discontinuity
from rstscope.packets import PACKET_DTYPE, ReadStats
from rstscope.reader import open_capture
from rstscope.status import RstscopeError

READ_ROWS = 65_536
"""Rows of a shard file read at once in phase 2 (6.5 MB)."""
BROKEN = "a worker stopped waiting for the others"
BARRIER_TIMEOUT_S = 3600.0
"""A shard waits this long for the others at a slice before giving up (a dead worker aborts sooner)."""


# -- phase 1: decode and partition -------------------------------------------------------------------


def shard_of(rows: np.ndarray, shards: int) -> np.ndarray:
    """The shard of each row: a hash of its connection key, equal for both directions.

    Each endpoint is hashed alone and the two hashes are added, so the order of the endpoints does not
    matter and every bit of both feeds every bit of the sum.  (A symmetric product of the raw keys, as
    ``(a + b) ^ (a * b)``, keeps their low bits biased: it split a short-connection trace 54/46, and
    the larger shard's lockstep partner waited for it at every slice.)"""
    u = np.uint64
    with np.errstate(over="ignore"):
        a = _mix(rows["src_lo"] ^ (rows["src_hi"] * u(0x9E3779B97F4A7C15)) ^ (rows["src_port"].astype(u) << u(48)))
        b = _mix(rows["dst_lo"] ^ (rows["dst_hi"] * u(0x9E3779B97F4A7C15)) ^ (rows["dst_port"].astype(u) << u(48)))
        h = _mix((a + b) ^ (rows["tunnel_id"] * u(0xFF51AFD7ED558CCD)))
    return (h % u(shards)).astype(np.int64)


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: each output bit depends on every input bit."""
    u = np.uint64
    h = h ^ (h >> u(33))
    h = h * u(0xFF51AFD7ED558CCD)
    h = h ^ (h >> u(33))
    h = h * u(0xC4CEB9FE1A85EC53)
    return h ^ (h >> u(33))


@dataclass(kw_only=True)
class Decoded:
    """What phase 1 learned about one piece."""

    index: int
    stats: ReadStats
    format: str
    compressed: bool
    packets: int
    first_ns: int | None
    last_ns: int | None


def decode_piece(path: str, index: int, shards: int, workdir: str) -> Decoded:
    """Phase 1 for one piece: rows to ``{workdir}/rows-{index}-{shard}``, good rows' frames and
    timestamps to ``clock-{index}.npz``."""
    with scratch.writing(os.path.dirname(workdir)):  # the directory the user can change
        return _decode_piece(path, index, shards, workdir)


def _decode_piece(path: str, index: int, shards: int, workdir: str) -> Decoded:
    outs = [open(Path(workdir) / f"rows-{index}-{j}", "wb") for j in range(shards)]  # noqa: SIM115
    frames, times = [], []
    packets, first_ns, last_ns = 0, None, None
    read, part, write = timing.Stopwatch(), timing.Stopwatch(), timing.Stopwatch()
    try:
        with open_capture(path, chunk_packets=CHUNK_PACKETS) as cap:  # no reader child: the pool is the parallelism
            for chunk in timing.timed(cap.chunks(), read):
                packets += len(chunk)
                with part.timing():
                    ts = chunk["ts_ns"]
                    first_ns = int(ts[0]) if first_ns is None else first_ns
                    last_ns = int(ts.max()) if last_ns is None else max(last_ns, int(ts.max()))
                    bad = chunk["decode_error"] != 0
                    good = taken(chunk, ~bad) if bad.any() else chunk  # a copy only then
                    frames.append(good["frame"].copy())
                    times.append(good["ts_ns"].copy())
                    which = shard_of(good, shards)
                with write.timing():
                    for j, out in enumerate(outs):
                        out.write(opaque(good)[which == j])  # rows gathered whole: 12x faster than field by field
            with write.timing():
                np.savez(Path(workdir) / f"clock-{index}.npz", frame=_cat(frames, np.uint64), ts=_cat(times, np.int64))
            return Decoded(index=index, stats=cap.stats, format=cap.format, compressed=cap.compressed,
                           packets=packets, first_ns=first_ns, last_ns=last_ns)  # fmt: skip
    finally:
        for out in outs:
            out.close()
        read.record("phase 1", "read and decode")
        part.record("phase 1", "partition")
        write.record("phase 1", "write rows")


def _cat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


# -- the clock ---------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Schedule:
    """The slices the single process tracks: per slice its last frame (slices are frame ranges), and
    the frame and time its idle sweep runs at."""

    last_frame: np.ndarray
    now_frame: np.ndarray
    now_ns: np.ndarray

    def __len__(self) -> int:
        return len(self.last_frame)


def schedule(clocks: Iterator[tuple[np.ndarray, np.ndarray]]) -> Schedule:
    """The schedule of a capture from its pieces' good rows (global frames, timestamps), in order."""
    bounds, now_frame, now_ns = [], [], []
    carry_f, carry_t = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for item in itertools.chain(clocks, [None]):
        if item is None:
            f, t, last = carry_f, carry_t, True
        else:
            f = np.concatenate([carry_f, item[0].astype(np.int64)])
            t = np.concatenate([carry_t, item[1]])
            last = False
        if not len(f):
            continue
        batch = (f - 1) // CHUNK_PACKETS
        done = len(f) if last else int(np.searchsorted(batch, batch[-1]))  # the last batch may go on
        fb, tb, bb = f[:done], t[:done], batch[:done]
        if done:
            starts_b = np.flatnonzero(np.concatenate([[True], bb[1:] != bb[:-1]]))
            rank = np.arange(done) - np.repeat(starts_b, np.diff(np.append(starts_b, done)))
            key_change = np.concatenate(
                [[True], (bb[1:] != bb[:-1]) | (rank[1:] // FEED_ROWS != rank[:-1] // FEED_ROWS)]
            )
            starts = np.flatnonzero(key_change)
            ends = np.append(starts[1:], done) - 1
            bounds.append(fb[ends])
            now_frame.append(fb[ends])
            now_ns.append(np.maximum.reduceat(tb, starts))
        carry_f, carry_t = f[done:], t[done:]
    return Schedule(
        last_frame=_cat(bounds, np.int64), now_frame=_cat(now_frame, np.int64), now_ns=_cat(now_ns, np.int64)
    )


# -- phase 2: track a shard ---------------------------------------------------------------------------


class BarrierExchange:
    """Pressure counts summed over the shards of one machine: a shared array and a barrier per slice
    (two rows of counts, used alternately, so that a fast shard never overwrites a count that a slow
    one has still to read)."""

    def __init__(self, barrier, counts, shard: int, shards: int) -> None:
        self.barrier, self.counts, self.shard, self.shards = barrier, counts, shard, shards
        self._round = 0
        self.waits = timing.Stopwatch()

    def total(self, count: int) -> int:
        row = (self._round % 2) * self.shards
        self._round += 1
        self.counts[row + self.shard] = count
        with self.waits.timing():
            self.barrier.wait(BARRIER_TIMEOUT_S)
        if self.shard == 0:
            self.counts[2 * self.shards] = self._round  # slices done, for the progress line
        return sum(self.counts[row : row + self.shards])


class ShardTracker(Tracker):
    """A tracker of one shard that sweeps on the whole capture's clock and counts the closed connections
    of all shards under pressure (see the module docstring)."""

    def __init__(self, exchange, *, zeek_timers: bool = False) -> None:
        super().__init__(zeek_timers=zeek_timers)
        self.exchange = exchange
        self._now = (0, 0)

    def track_slice(self, rows: np.ndarray, now_frame: int, now_ns: int) -> None:
        self._now = (now_frame, now_ns)
        if len(rows):
            self.feed(rows)  # a slice is at most FEED_ROWS rows: one step, ending with the sweep on self._now
        else:
            self.sweep(now_frame, now_ns)

    def sweep_clock(self, now_frame: int, now_ns: int) -> tuple[int, int]:
        return self._now

    def closed_kept(self, count: int) -> int:
        return self.exchange.total(count)  # a lockstep round: the capture's count, as one tracker has it


@dataclass(frozen=True, kw_only=True)
class ShardOptions:
    zeek_timers: bool = False
    rows: bool = True
    """Write the connections' rows for the parent (it makes connection objects: not for --json alone)."""


def track_shard(shard: int, pieces: list[tuple[int, int]], sched: Schedule, workdir: str, exchange, info,
                options: ShardOptions = ShardOptions(), stream=None) -> ShardResult | None:  # fmt: skip
    """Phase 2: track shard ``shard`` over ``pieces`` ((piece index, frame offset), in order), one
    slice of the schedule at a time; then the stages after tracking (:func:`.merge.finish_shard`;
    ``info``: the capture's StitchedCaptureInfo; ``stream``: the Connection its rows go through)."""
    tracker = ShardTracker(exchange, zeek_timers=options.zeek_timers)
    source = _shard_rows(shard, pieces, workdir)
    buf = np.zeros(0, dtype=PACKET_DTYPE)
    more = True
    read, track = timing.Stopwatch(), timing.Stopwatch()
    waits = exchange.waits
    with collector.paused():  # as in Tracker.feed
        for k in range(len(sched)):
            bound = int(sched.last_frame[k])
            with read.timing():
                while more and (not len(buf) or int(buf["frame"][-1]) <= bound):
                    rows = next(source, None)
                    more = rows is not None
                    if more:
                        buf = joined([buf, rows], PACKET_DTYPE) if len(buf) else rows
                n = int(np.searchsorted(buf["frame"], np.uint64(bound), side="right"))
            with track.timing():
                tracker.track_slice(buf[:n], int(sched.now_frame[k]), int(sched.now_ns[k]))
            buf = buf[n:]
        with timing.phase("phase 2", "finish tracker"):
            store = tracker.finish()
        del tracker, buf  # its slots and rings are not needed by the stages after tracking
    read.record("phase 2", "read rows")
    track.wall -= waits.wall  # the barrier waits so far happened inside tracking
    track.cpu -= waits.cpu
    track.record("phase 2", "track")
    result = finish_shard(store, shard, output_dir(workdir, pieces), exchange, info, rows=options.rows, stream=stream)
    waits.record("phase 2", f"barrier waits ({waits.count})")
    return result


def output_dir(workdir: str, pieces: list[tuple[int, int]]) -> str:
    """Where phase 2 of one capture (named by its first piece) writes: the captures of one group apart,
    since the parent still reads one capture's files while the next one is tracked."""
    path = Path(workdir) / f"capture-{pieces[0][0]}"
    path.mkdir(exist_ok=True)
    return str(path)


def _shard_rows(shard: int, pieces: list[tuple[int, int]], workdir: str) -> Iterator[np.ndarray]:
    """The shard's rows, piece after piece, in blocks of READ_ROWS (memory stays at a few blocks).  Each
    piece's file goes as soon as it is read: its pages are dropped rather than written to the disk, and
    removing 100 MB files one by one took the parent 0.4 s at the end."""
    for index, offset in pieces:
        path = Path(workdir) / f"rows-{index}-{shard}"
        with open(path, "rb") as f:
            while len(rows := np.fromfile(f, dtype=PACKET_DTYPE, count=READ_ROWS)):
                if offset:
                    rows["frame"] += np.uint64(offset)
                yield rows
        path.unlink()


# -- the run -----------------------------------------------------------------------------------------


def analyze_group(group: list[Piece], options, *, jobs: int, progress=None, warn=lambda m: None,
                  stream: bool = False) -> list[Analysis]:  # fmt: skip
    """Analyse a group of pieces with ``jobs`` processes: the same Analyses as :func:`stitch.analyze_group`.
    ``stream``: the last capture's shards hand their encoded rows to the document as it is written
    (:mod:`.rowstream`; for ``--json`` alone, when nothing is analysed after this group)."""
    return run_engine(group, options, LocalEngine(jobs), progress=progress, warn=warn, stream=stream)


class LocalEngine:
    """Phase 1 in a process pool, phase 2 in ``jobs`` processes of this machine (forkserver: a clean
    process each, without the parent's memory)."""

    streams = hasattr(os, "memfd_create")
    """It can hand a capture's rows over while its shards still run (:mod:`.rowstream`: a Linux ``memfd``)."""

    def __init__(self, jobs: int) -> None:
        self.shards = jobs
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["rstscope.fleet.shards"])  # workers fork with numpy and rstscope loaded

    def workdir(self, group: list[Piece]) -> str:
        return tempfile.mkdtemp(prefix="rstscope-fleet-", dir=scratch.directory())

    def decode(self, group: list[Piece], workdir: str, progress) -> list[Decoded]:
        return _phase1(group, self.shards, workdir, self.ctx, progress)

    def track(self, pieces, sched: Schedule, workdir: str, info, options: ShardOptions,
              progress=None) -> list[ShardResult]:  # fmt: skip
        return run_shards(pieces, sched, self.shards, workdir, self.ctx, info, options, progress)

    def stream(self, pieces, sched: Schedule, workdir: str, info, options: ShardOptions,
               progress=None) -> tuple[list[ShardResult], LiveShards]:  # fmt: skip
        """:meth:`track`, the shards left streaming their rows (``workdir`` is theirs to remove then)."""
        return run_shards(pieces, sched, self.shards, workdir, self.ctx, info, options, progress, stream=True)

    def close(self) -> None:
        pass


def run_engine(group: list[Piece], options, engine, *, progress=None, warn=lambda m: None,
               stream: bool = False) -> list[Analysis]:  # fmt: skip
    """Phase 1, the split into captures, phase 2 and the merge, on any engine (local or Dask); with
    ``stream``, the last capture's rows are streamed if the engine can."""
    workdir = engine.workdir(group)
    handed = False  # the work directory, to the last capture's streaming shards, which remove it
    try:
        with timing.phase("parent", "phase 1 (wait)"):
            decoded = engine.decode(group, workdir, progress)
        results = []
        captures = _captures(group, decoded, options.max_gap_s, warn)
        for k, members in enumerate(captures):
            work = ShardOptions(zeek_timers=options.zeek_timers, rows=options.connection_rows)
            streams = stream and k == len(captures) - 1 and getattr(engine, "streams", False)
            results.append(_phase2(group, members, decoded, engine, workdir, work, progress, stream=streams))
            handed = streams
        return results
    finally:
        if not handed:
            _remove_later(workdir)
        engine.close()


def _phase1(group, jobs, workdir, ctx, progress) -> list[Decoded]:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    decoded: list[Decoded | None] = [None] * len(group)
    packets = nbytes = 0
    with ProcessPoolExecutor(max_workers=min(jobs, len(group)), mp_context=ctx) as pool:
        futures = {pool.submit(decode_piece, str(p.path), i, jobs, workdir): i for i, p in enumerate(group)}
        for done, future in enumerate(as_completed(futures), 1):
            try:
                d = future.result()
            except BrokenProcessPool as exc:
                raise RstscopeError(f"a decoding process ended abruptly (killed, or out of memory?): {exc}") from None
            decoded[d.index] = d
            packets += d.packets
            nbytes += group[d.index].size
            if progress is not None:
                progress(done, packets, nbytes)
    return decoded  # type: ignore[return-value]


def _captures(group: list[Piece], decoded: list[Decoded], max_gap_s: float, warn) -> list[list[int]]:
    """The group's pieces (indices) split into captures where they overlap or leave a gap."""
    captures: list[list[int]] = []
    for i, piece in enumerate(group):
        if captures:
            prev = captures[-1][-1]
            why = discontinuity(group[prev], decoded[prev].last_ns, piece, max_gap_s)
            if why:
                warn(f"{why}: analysed as a separate capture")
                captures.append([])
        else:
            captures.append([])
        captures[-1].append(i)
    return captures


def _phase2(group, members: list[int], decoded: list[Decoded], engine, workdir: str, work: ShardOptions,
            progress, *, stream: bool = False) -> Analysis:  # fmt: skip
    spans, offset = [], 0
    for i in members:
        d = decoded[i]
        spans.append(stitch.Span(path=str(group[i].path), offset=offset, records=d.stats.records,
                                 first_ns=d.first_ns, last_ns=d.last_ns, packets=d.packets))  # fmt: skip
        offset += d.stats.records
    info = stitch.capture_info(
        [group[i] for i in members], spans, [(decoded[i].format, decoded[i].compressed) for i in members],
        stitch.merge_stats([(str(group[i].path), decoded[i].stats) for i in members]),
    )  # fmt: skip
    with timing.phase("parent", "schedule"):
        sched = schedule(itertools.chain.from_iterable(_clock(workdir, i, s.offset)
                                                       for i, s in zip(members, spans, strict=True)))  # fmt: skip
        for i in members:
            (Path(workdir) / f"clock-{i}.npz").unlink()  # 16 bytes a packet, read once
    pieces = [(i, s.offset) for i, s in zip(members, spans, strict=True)]
    live = None
    with timing.phase("parent", "phase 2 (wait)"):
        if stream:
            results, live = engine.stream(pieces, sched, workdir, info, work, progress)
        else:
            results = engine.track(pieces, sched, workdir, info, work, progress)
    try:
        with timing.phase("parent", "merge"):
            out = output_dir(workdir, pieces)
            found = Analysis(capture=info, connections=MergedStore(results, out, live),
                             resets=merged_resets(results, out))  # fmt: skip
            if live is None:  # else it follows the rows (MergedStore.listen_queue)
                found.listen_queue = merged_listen_queue(results)
    except BaseException:
        if live is not None:
            live.close()
        raise
    return found


CLOCK_BLOCK = 4 * CHUNK_PACKETS
"""Rows of a piece's clock the schedule takes at once: its temporaries (a dozen arrays of the block's
length) stay small beside the parent's own memory."""


def _clock(workdir: str, index: int, offset: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """A piece's good rows' global frames and timestamps, in blocks of CLOCK_BLOCK rows."""
    with np.load(Path(workdir) / f"clock-{index}.npz") as z:
        frames, times = z["frame"], z["ts"]
    for start in range(0, len(frames), CLOCK_BLOCK):
        yield frames[start : start + CLOCK_BLOCK].astype(np.int64) + offset, times[start : start + CLOCK_BLOCK]


def run_shards(pieces, sched: Schedule, jobs: int, workdir: str, ctx, info, options: ShardOptions,
               progress=None, *, stream: bool = False):  # fmt: skip
    """Phase 2 in ``jobs`` processes in lockstep; a failing one aborts the others' barrier.  The shards'
    results; with ``stream``, the results as soon as every shard has sent its own, and the
    :class:`LiveShards` that are still sending their rows."""
    barrier = ctx.Barrier(jobs)
    counts = ctx.Array("q", 2 * jobs + 1, lock=False)  # the last: slices done (BarrierExchange)
    pipes = [ctx.Pipe() if stream else (None, None) for _ in range(jobs)]
    procs = [ctx.Process(target=_shard_main, args=(j, pieces, sched, workdir, barrier, counts, jobs, info, options,
                                                   pipes[j][1]))
             for j in range(jobs)]  # fmt: skip
    live = LiveShards(procs, [ours for ours, _ in pipes], workdir) if stream else None
    try:
        for j, p in enumerate(procs):
            (Path(workdir) / f"result-{j}").unlink(missing_ok=True)  # a previous capture's
            p.start()
            if stream:
                pipes[j][1].close()  # the shard's end is the shard's alone: its exit is our end of file
        results: dict[int, ShardResult] = {}
        ended: set[int] = set()  # streams that ended before their result: their processes are ending
        pending = set(range(jobs))
        while pending:
            # Woken at once by a shard's exit or its result (its stream), else every 50 ms for the progress line.
            streams = [live.conn(j) for j in pending if j not in ended] if stream else []
            multiprocessing.connection.wait([procs[j].sentinel for j in pending] + streams, timeout=0.05)
            if progress is not None and hasattr(progress, "tracking"):
                done = min(int(counts[2 * jobs]), len(sched))  # the rounds after tracking count too
                progress.tracking(done, len(sched))
            for j in list(pending):
                if stream and j not in ended and live.ready(j):
                    try:
                        results[j] = live.result(j)
                        pending.discard(j)
                        continue
                    except rowstream.Ended:
                        ended.add(j)
                if procs[j].exitcode is None or (stream and j not in ended and live.ready(j)):
                    continue  # running, or its result is still to be read
                pending.discard(j)
                if procs[j].exitcode != 0:
                    barrier.abort()
    except BaseException:
        if live is not None:
            live.close()
        raise
    finally:
        if live is None:
            for p in procs:
                if p.is_alive():
                    p.kill()
                p.join()
    if live is None:
        return pick([read_outcome(workdir, j) for j in range(jobs)])
    if len(results) == jobs:
        return [results[j] for j in range(jobs)], live
    outcomes = [read_outcome(workdir, j) for j in range(jobs) if j not in results]  # the others were well
    live.close()  # stops them, and removes the work directory
    return pick(outcomes)


class LiveShards:
    """The shard processes of a streaming capture (:mod:`.rowstream`), alive until the parent has read
    their last rows; the work directory is removed with them."""

    JOIN_S = 60.0
    """How long a shard may take to end once it sent its last row."""

    def __init__(self, procs, conns, workdir: str) -> None:
        self.procs = procs
        self._receivers = {j: rowstream.Receiver(conn, functools.partial(self._failed, j))
                           for j, conn in enumerate(conns)}  # fmt: skip
        self._taken = False
        self._workdir = workdir
        self._finalizer = weakref.finalize(self, _stop, procs, workdir)  # also at exit, say on Ctrl-C

    def conn(self, j: int):
        """Shard ``j``'s end of its stream, to wait on."""
        return self._receivers[j].conn

    def ready(self, j: int) -> bool:
        """Whether shard ``j`` has something to say: its result, or its end of file."""
        return self._receivers[j].conn.poll()

    def result(self, j: int) -> ShardResult:
        return self._receivers[j].result()

    def take_receivers(self) -> dict[int, rowstream.Receiver]:
        if self._taken:
            raise RuntimeError("a capture's streamed rows can be read once")
        self._taken = True
        return self._receivers

    def finish(self) -> list:
        """The shards' listen-queue tallies after their last rows; the processes joined."""
        tallies = [self._receivers[j].finish() for j in sorted(self._receivers)]
        for j, p in enumerate(self.procs):
            p.join(self.JOIN_S)
            if p.exitcode != 0:
                self._failed(j, None)
        self.close()
        return tallies

    def _failed(self, j: int, exc: BaseException | None) -> None:
        """Raise why shard ``j`` stopped: its own error, else that it ended before its last row."""
        self.procs[j].join(self.JOIN_S)  # its outcome file is written before it exits
        kind, value = read_outcome(self._workdir, j)
        self.close()
        if kind == "error" and value != BROKEN:
            raise RstscopeError(value)
        raise RstscopeError(f"worker {j} ended before its last row ({exc or 'exit ' + str(self.procs[j].exitcode)})")

    def close(self) -> None:
        """Stop the shards still running, close the streams, remove the work directory."""
        for receiver in self._receivers.values():
            receiver.close()
        self._finalizer()


def _stop(procs, workdir: str) -> None:
    for p in procs:
        if p.is_alive():
            p.kill()
        with contextlib.suppress(Exception):  # at exit, a process never started
            p.join()
    _remove_later(workdir)


def pick(outcomes: list[tuple[str, object]]) -> list[ShardResult]:
    """The shards' results, or the error to raise: a shard's own failure before the others' broken waits."""
    errors = sorted((value != BROKEN, value) for kind, value in outcomes if kind == "error")
    if errors:
        raise RstscopeError(errors[-1][1])
    return [value for _, value in outcomes]


def write_outcome(workdir: str, j: int, outcome: tuple[str, object]) -> None:
    """Shard ``j``'s outcome, for :func:`read_outcome` (a pickle through a file: the shard's process may be
    a child of a Dask worker)."""
    with open(Path(workdir) / f"result-{j}", "wb") as f:
        pickle.dump(outcome, f)


def read_outcome(workdir: str, j: int) -> tuple[str, object]:
    try:
        with open(Path(workdir) / f"result-{j}", "rb") as f:
            return pickle.load(f)
    except OSError:
        return ("error", f"worker {j} ended without a result (killed, or out of memory?)")


def shard_outcome(j, pieces, sched, workdir, exchange, info, options, broken=(threading.BrokenBarrierError,),
                  stream=None):  # fmt: skip
    """Phase 2 of shard ``j`` as ("ok", ShardResult) or ("error", one line), written (:func:`write_outcome`);
    ("ok", None) when its result and rows went through ``stream``."""
    try:
        outcome = ("ok", track_shard(j, pieces, sched, workdir, exchange, info, options, stream))
    except broken:
        outcome = ("error", BROKEN)
    except RstscopeError as exc:  # already one line for the user (no room for the shard's files, ...)
        outcome = ("error", str(exc))
    except BaseException as exc:  # the parent raises it as one line
        outcome = ("error", f"worker {j}: {type(exc).__name__}: {exc}")
    write_outcome(workdir, j, outcome)
    return outcome


def _shard_main(j, pieces, sched, workdir, barrier, counts, jobs, info, options, stream=None) -> None:
    exchange = BarrierExchange(barrier, counts, j, jobs)
    outcome = shard_outcome(j, pieces, sched, workdir, exchange, info, options, stream=stream)
    if outcome[0] != "ok":
        with contextlib.suppress(Exception):
            barrier.abort()
        os._exit(1)


def _remove_later(workdir: str) -> None:
    """The work directory goes once the analysis is done with it: the merged store reads the
    connection files until the document is written, and an open file survives its unlinking."""
    shutil.rmtree(workdir, ignore_errors=True)
