"""The end of a shard's work and the parent's merge: the stages after tracking, done in the shards.

Measured (benchmarks/PLAN.md §13): after tracking, one process spends most of its time making
connection objects from their rows, computing evidence and verdicts and encoding the document's rows;
done in the parent, that serial part kept ``--jobs 2`` slower than one process.  So each shard, once
tracked (:func:`finish_shard`):

1. writes its connections' rows (:data:`.rows.CONN_ROW` and its tables, numpy files, no pickling) and
   learns the global ids (the single process's: connections numbered by first frame, over all
   shards) and the capture's ``host_ttl``, exchanging both through the work directory at one more
   lockstep round;
2. computes evidence and verdicts of RSTs (:func:`rstscope.reset_table.build`, global ids): its own and,
   once done, any other shard's that are still waiting (:mod:`.evidence_pool`), and after one more round
   encodes its connections' document rows and listen-queue tally: to files of the work directory, or,
   for the last capture of a ``--json`` run, to the parent as it writes the document (:mod:`.rowstream`).

The parent (:class:`MergedStore`, :func:`merged_resets`, :func:`merged_listen_queue`) only
interleaves: RST rows in frame order, connection rows in id order, bytes copied as the shards
encoded them.  Connection objects are made in the parent only for outputs other than ``--json``
(the text summary, CSV, Parquet), from the rows the shards wrote.
"""

from __future__ import annotations

import itertools
import os
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rstscope import columns, judging, reset_table, scratch
from rstscope.connections import Connection, TtlRange
from rstscope.connections.retire import TABLES, ConnectionsById
from rstscope.connections.rows import CONN_ROW, connections, span_positions
from rstscope.fleet import evidence_pool, rowstream, timing
from rstscope.fleet import frames as fleet_frames

BATCH = 4_096
"""Connections handled at once (rows read, written or made into objects)."""
CAPTURE_0 = b'{"capture":0,'
"""How a connection row encoded in a shard starts (``capture`` is the row's first key)."""


@dataclass(kw_only=True)
class ShardResult:
    """What a shard sends back (its files are in the work directory, named by the shard)."""

    shard: int
    gid: np.ndarray
    """Global id of each of its connections, in its own id order (ascending)."""
    overflow: dict[int, list[int]]
    """Global id -> history letter codes past the row's 24."""
    reset_ids: np.ndarray
    """Global ids of its connections that saw a RST, ascending."""
    resets: dict[str, np.ndarray]
    """Its reset table's columns (global connection ids; offsets into ``reset_files`` one after the other)."""
    reset_files: list[str]
    """The files of its RSTs' encoded rows (:func:`.evidence_pool.gather`)."""
    fixes: set[tuple[str, str]]
    first_ns: int | None
    row_length: np.ndarray | None
    """Length of each connection's encoded document row in ``conn-json-{shard}``, in its id order (None
    when the rows are streamed: :mod:`.rowstream`)."""
    listen: dict | None
    server_first: dict[str, int] | None
    """Per server of ``listen["servers"]``, the global id of its first connection with a SYN (these two
    are None when the rows are streamed: they follow them, as a :class:`Tally`)."""
    host_ttl: dict[str, TtlRange]
    """The whole capture's."""
    rows: bool = True
    """Whether its connections' rows are in the work directory (the parent can make connection objects)."""


# -- in the shard ------------------------------------------------------------------------------------


def finish_shard(store, shard: int, workdir: str, exchange, info, *, rows: bool = True,
                 stream=None) -> ShardResult | None:  # fmt: skip
    """Everything after tracking for one shard's ``store`` (a ConnectionStore); ``exchange`` is the
    lockstep exchange of the tracking (its ``total`` is a barrier), ``info`` the capture's
    StitchedCaptureInfo (for the file fields of the rows); ``rows``: write the connections' rows for
    the parent (not needed when it only copies the encoded document rows).  With ``stream`` (this
    shard's Connection to the parent, :mod:`.rowstream`), the result goes to the parent before the
    connections' document rows, which follow through shared memory; None is returned then."""
    with scratch.writing(Path(workdir).parent.parent):  # {scratch}/rstscope-fleet-*/capture-N
        return _finish_shard(store, shard, Path(workdir), exchange, info, rows=rows, stream=stream)


def _finish_shard(store, shard: int, work: Path, exchange, info, *, rows: bool, stream) -> ShardResult | None:
    with timing.phase("phase 2", "write rows" if rows else "first frames"):
        first = _dump_rows(store, shard, work) if rows else _first_frames(store)
        np.save(work / f"first-{shard}.npy", first)
        with open(work / f"ttl-{shard}.pickle", "wb") as f:
            pickle.dump(dict(store.host_ttl), f)
    with timing.phase("phase 2", "share evidence"):
        evidence_pool.share(store, shard, work)
    with exchange.waits.timing():
        exchange.total(0)  # a barrier: every shard's first frames, host TTLs and shared evidence are written
    with timing.phase("phase 2", "global ids"):
        gids = _global_ids([np.load(work / f"first-{j}.npy") for j in range(exchange.shards)])
        gid = gids[shard]
        host_ttl: dict[str, TtlRange] = {}
        for j in range(exchange.shards):
            with open(work / f"ttl-{j}.pickle", "rb") as f:
                for host, ttl in pickle.load(f).items():
                    host_ttl[host] = ttl.merge(host_ttl.get(host))

    with timing.phase("phase 2", "evidence and verdicts"):
        extend = None
        if getattr(info, "pieces", None):

            def extend(row: dict, frame: int) -> None:
                fleet_frames.add_reset_fields(row, info, frame)

        evidence_pool.judge(store, shard, exchange.shards, work, gids, host_ttl, extend)
    with exchange.waits.timing():
        exchange.total(0)  # a barrier: every shard's RSTs are judged, whoever judged them
    with timing.phase("phase 2", "gather resets"):
        evidence_pool.remove_shared(work, shard)
        table, reset_files = evidence_pool.gather(work, shard)
        resets = table.columns()
    spill = store._spill  # the tracker's own store (rstscope.connections.retire): its long histories
    result = ShardResult(
        shard=shard, gid=gid, overflow={int(gid[k]): v for k, v in spill.overflow.items()},
        reset_ids=gid[np.asarray(store.reset_ids, dtype=np.int64)], resets=resets, reset_files=reset_files,
        fixes=table.fixes, first_ns=table.first_ns, row_length=None, listen=None, server_first=None,
        host_ttl=host_ttl, rows=rows,
    )  # fmt: skip
    sink = rowstream.Sender(stream) if stream is not None else _RowsToFile(work / f"conn-json-{shard}")
    if stream is not None:
        sink.result(result)  # the parent writes the document's head meanwhile
    with timing.phase("phase 2", "encode connection rows"):
        try:
            tally = _write_connection_rows(_GlobalRows(store, gid), table, info, sink)
        finally:
            table._spill.close()  # the parent reads those files itself
    if stream is not None:
        sink.end(tally)
        return None
    result.row_length, result.listen, result.server_first = sink.close(), tally.listen, tally.server_first
    return result


def _dump_rows(store, shard: int, work: Path) -> np.ndarray:
    """The store's connection rows (local ids, in id order) and their table rows to files of their
    own, spans rebased; the first frame of each connection."""
    spill = store._spill  # rstscope.connections.retire.Spill: rows, not objects
    n = len(store)
    first = np.zeros(n, dtype=np.int64)
    written = dict.fromkeys(TABLES, 0)
    outs = {name: open(work / f"{name}-{shard}", "wb") for name in ("conns", *TABLES)}  # noqa: SIM115
    try:
        for start in range(0, n, BATCH):
            ids = np.arange(start, min(n, start + BATCH))
            rows = spill.rows(ids)
            first[ids] = rows["first_frame"]
            for name in TABLES:
                spans = rows[name]
                table = spill.tables[name].take(span_positions(spans))
                table.tofile(outs[name])
                counts = spans[:, 1]
                spans[:, 0] = written[name] + np.cumsum(counts) - counts
                written[name] += len(table)
            rows.tofile(outs["conns"])
    finally:
        for f in outs.values():
            f.close()
    return first


def _first_frames(store) -> np.ndarray:
    """The first frame of each of the store's connections, in id order."""
    spill = store._spill
    n = len(store)
    first = np.zeros(n, dtype=np.int64)
    for start in range(0, n, BATCH):
        ids = np.arange(start, min(n, start + BATCH))
        first[ids] = spill.rows(ids)["first_frame"]
    return first


def _global_ids(firsts: list[np.ndarray]) -> list[np.ndarray]:
    """Global ids of each shard's connections: all connections numbered in order of their first frame (a
    frame holds one packet, so no two connections share one)."""
    every = np.concatenate(firsts)
    order = np.argsort(every, kind="stable")
    global_of = np.empty(len(every), dtype=np.int64)
    global_of[order] = np.arange(len(every))
    bounds = np.cumsum([0, *map(len, firsts)])
    return [global_of[lo:hi] for lo, hi in itertools.pairwise(bounds.tolist())]


class Tally(NamedTuple):
    """A shard's listen-queue tally (:func:`merged_listen_queue` reads a ShardResult the same way)."""

    listen: dict
    server_first: dict[str, int]


def _write_connection_rows(store: _GlobalRows, table, info, sink) -> Tally:
    """Each connection's document row (capture 0), encoded from the rows in batches (:mod:`rstscope.columns`,
    as the single process does), to ``sink`` (its ``block(data, lengths)``); its listen-queue tally, and
    each server's first connection with a SYN."""
    tally = columns.ListenQueueColumns()
    for block, ends in columns.connection_row_blocks(store, table, 0, info, tally, separator=b""):
        sink.block(block, np.diff(ends, prepend=0))
    return Tally(tally.result(), tally.first_attempt)


class _RowsToFile:
    """Encoded rows to a file of the work directory, their lengths kept (the parent reads them back once
    the shard has ended: ``conn-json-{shard}``)."""

    def __init__(self, path: Path) -> None:
        self._out = open(path, "wb")  # noqa: SIM115
        self._lengths: list[np.ndarray] = []

    def block(self, data, lengths: np.ndarray) -> None:
        self._out.write(data)
        self._lengths.append(lengths)

    def close(self) -> np.ndarray:
        """Each row's length, in order (a row < 2 GB)."""
        self._out.close()
        return np.concatenate(self._lengths).astype(np.int32) if self._lengths else np.zeros(0, dtype=np.int32)


class _GlobalRows:
    """A shard's store as row batches with the capture's global ids (``gid``: increasing with the local
    ids, since both number connections by their first frame)."""

    def __init__(self, store, gid: np.ndarray) -> None:
        self._store, self._gid = store, gid

    def row_batches(self) -> Iterator[_GlobalBatch]:
        for batch in self._store.row_batches():
            yield _GlobalBatch(batch, self._gid)


class _GlobalBatch:
    """A :class:`rstscope.connections.retire.RowBatch` whose rows carry global ids."""

    __slots__ = ("_batch", "_histories", "rows")

    def __init__(self, batch, gid: np.ndarray) -> None:
        self._batch = batch
        self._histories = batch.histories()  # with the local ids: the spill's long histories are keyed by them
        self.rows = batch.rows  # read for this batch alone (RowBatch): renumbered in place, not copied (4 MB)
        self.rows["id"] = gid[self.rows["id"]]

    def table(self, name: str, which: np.ndarray | None = None) -> np.ndarray:
        return self._batch.table(name, which)

    def histories(self) -> list[str]:
        return self._histories


# -- in the parent -----------------------------------------------------------------------------------


class _RowFile:
    """Rows of one dtype in a file, read by position (runs of near positions in one read each)."""

    GAP = 64

    def __init__(self, path: Path, dtype: np.dtype) -> None:
        self.dtype = dtype
        self._fd = os.open(path, os.O_RDONLY)

    def take(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty(len(positions), self.dtype)
        if not len(positions):
            return out
        size = self.dtype.itemsize
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        cuts = np.flatnonzero(np.diff(sorted_pos) > self.GAP) + 1
        for run in np.split(np.arange(len(sorted_pos)), cuts):
            lo, hi = int(sorted_pos[run[0]]), int(sorted_pos[run[-1]]) + 1
            rows = np.frombuffer(os.pread(self._fd, (hi - lo) * size, lo * size), self.dtype)
            out[order[run]] = rows[sorted_pos[run] - lo]
        return out

    def close(self) -> None:
        os.close(self._fd)


class MergedStore(ConnectionsById):
    """The shards' connections as one ConnectionStore: global ids in order of the first packet (the
    single process's numbering); their document rows as the shards encoded them
    (:meth:`encoded_row_blocks`), or connection objects made from the shards' rows."""

    BATCH = BATCH  # the module's: connections made per read, as for the shards' files

    def __init__(self, results: list[ShardResult], workdir: str, live=None) -> None:
        """``live``: the shards still streaming their rows (:class:`.shards.LiveShards`), else they are in
        the files of ``workdir``."""
        work = Path(workdir)
        # What it reads later, and nothing else of the results: their reset columns (merged_resets copies
        # them) and ids are a third of the parent's memory while it writes the document.
        self._results = [_Kept(r.shard, r.rows, r.row_length, r.overflow) for r in results]
        n = sum(len(r.gid) for r in results)
        self._shard = np.zeros(n, dtype=np.min_scalar_type(-max(len(results), 1)))
        self._local = np.zeros(n, dtype=np.int32 if n < 2**31 else np.int64)  # position within its shard
        for r in results:
            self._shard[r.gid] = r.shard
            self._local[r.gid] = np.arange(len(r.gid))
        with_rows = [r for r in results if r.rows]  # all shards or none
        self._conns = {r.shard: _RowFile(work / f"conns-{r.shard}", CONN_ROW) for r in with_rows}
        self._tables = {r.shard: {name: _RowFile(work / f"{name}-{r.shard}", dtype) for name, dtype in TABLES.items()}
                        for r in with_rows}  # fmt: skip
        self._live = live
        self._tallies = None if live is not None else results
        self._json = {} if live is not None else {r.shard: os.open(work / f"conn-json-{r.shard}", os.O_RDONLY)
                                                  for r in results}  # fmt: skip
        self._reset_ids = np.sort(np.concatenate([r.reset_ids for r in results])) if results else self._local
        self.host_ttl: dict[str, TtlRange] = results[0].host_ttl if results else {}

    def __len__(self) -> int:
        return len(self._shard)

    def _get(self, gids: np.ndarray) -> list[Connection]:
        if len(self._conns) < len(self._results):
            raise RuntimeError("the shards kept their connection rows (run.Options.connection_rows was False)")
        out: dict[int, Connection] = {}
        shard = self._shard[gids]
        for r in self._results:
            mine = gids[shard == r.shard]
            if not len(mine):
                continue
            rows = self._conns[r.shard].take(self._local[mine])
            rows["id"] = mine
            tables = self._tables[r.shard]
            made = connections(rows, lambda name, pos, t=tables: t[name].take(pos), r.overflow)
            out.update(zip(mine.tolist(), made, strict=True))
        return [out[g] for g in gids.tolist()]

    def encoded_row_blocks(self, capture_index: int, separator: bytes) -> Iterator[bytearray]:
        """The connections' document rows in id order, as the shards encoded them (for capture 0) but with
        ``capture`` set to ``capture_index``: blocks of up to BATCH rows joined by ``separator``.  Streamed
        rows can be read once; then :meth:`listen_queue` is known."""
        if self._live is not None:
            sources = self._live.take_receivers()
        else:
            sources = {r.shard: _EncodedFile(self._json[r.shard], r.row_length) for r in self._results}
        for start in range(0, len(self), BATCH):
            shard = self._shard[start : start + BATCH]
            data, size = [], 0
            begin, length = np.zeros(len(shard), np.int64), np.zeros(len(shard), np.int64)
            for j, source in sources.items():
                mine = shard == j  # the batch's rows of shard j: its next rows, in order
                lengths = source.take(int(np.count_nonzero(mine)), data)
                begin[mine] = size + np.cumsum(lengths) - lengths
                length[mine] = lengths
                size += int(lengths.sum())
            joined = b"".join(data)  # the one copy out of the shards' rings (or files)
            data.clear()
            for source in sources.values():
                source.release()
            yield as_capture(joined, begin, length, capture_index, separator)
        if self._live is not None:
            self._tallies = self._live.finish()

    def listen_queue(self) -> dict:
        """The listen-queue tally of the whole capture (of streamed rows: once they were read)."""
        if self._tallies is None:
            raise RuntimeError("the shards' listen-queue tallies follow their rows: read encoded_row_blocks first")
        return merged_listen_queue(self._tallies)

    def close(self) -> None:
        for f in self._conns.values():
            f.close()
        for tables in self._tables.values():
            for f in tables.values():
                f.close()
        for fd in self._json.values():
            os.close(fd)
        self._conns, self._tables, self._json = {}, {}, {}
        if self._live is not None:
            self._live.close()


def as_capture(joined: bytes, begin: np.ndarray, length: np.ndarray, capture_index: int, separator: bytes):
    """Rows encoded for capture 0 (each starts with :data:`CAPTURE_0`; row ``i`` is ``length[i]`` bytes of
    ``joined`` from ``begin[i]``), joined by ``separator``, with ``capture`` set to ``capture_index``."""
    skip = len(CAPTURE_0)
    return columns.join_rows(joined, begin + skip, length - skip, separator, head=b'{"capture":%d,' % capture_index)


class _EncodedFile:
    """A shard's encoded rows in ``conn-json-{shard}`` (``fd``), read in order (``lengths``: each row's)."""

    def __init__(self, fd: int, lengths: np.ndarray) -> None:
        self._fd, self._lengths = fd, lengths
        self._row = self._offset = 0

    def take(self, count: int, parts: list) -> np.ndarray:
        """The next ``count`` rows: their bytes appended to ``parts``, and each row's length."""
        lengths = np.asarray(self._lengths[self._row : self._row + count], dtype=np.int64)
        data = os.pread(self._fd, int(lengths.sum()), self._offset)
        self._row += count
        self._offset += len(data)
        parts.append(data)
        return lengths

    def release(self) -> None:
        pass


class _Kept(NamedTuple):
    """What the merged store keeps of a shard's result."""

    shard: int
    rows: bool
    row_length: np.ndarray | None
    overflow: dict[int, list[int]]


def merged_resets(results: list[ShardResult], workdir: str) -> reset_table.ResetTable:
    """The shards' reset tables as one (columns sorted by connection, rows in frame order)."""
    if not results:
        return reset_table.empty()
    spill = judging.RowFiles([path for r in results for path in r.reset_files])
    bases = np.cumsum([0, *(len(r.reset_files) for r in results)])[:-1]  # each shard's first file
    columns = {}
    for name in results[0].resets:
        parts = [r.resets[name] for r in results]
        if name == "offset":
            parts = [p + spill.bases[b] for p, b in zip(parts, bases.tolist(), strict=True)]
        columns[name] = np.concatenate(parts)
    order = np.argsort(columns["connection"], kind="stable")
    columns = {name: col[order] for name, col in columns.items()}
    first = [r.first_ns for r in results if r.first_ns is not None]
    fixes = set().union(*(r.fixes for r in results))
    return reset_table.ResetTable(columns, spill, fixes, min(first) if first else None)


def merged_listen_queue(results: list[ShardResult] | list[Tally]) -> dict:
    """The listen-queue tally of the whole capture from the shards' (the single process's values and
    order: connection lists by id, servers in order of their first connection with a SYN)."""
    out = {}
    for key in ("syn_retransmitted", "synack_retransmitted", "synack_after_ack", "unanswered"):
        ids = sorted(i for r in results for i in r.listen[key]["connections"])
        out[key] = {"count": len(ids), "connections": ids}
    first: dict[str, int] = {}
    for r in results:
        for server, gid in r.server_first.items():
            first[server] = min(gid, first.get(server, gid))
    servers: dict[str, dict[str, int]] = {}
    for server in sorted(first, key=first.__getitem__):
        total: dict[str, int] = {}
        for r in results:
            for k, v in r.listen["servers"].get(server, {}).items():
                total[k] = total.get(k, 0) + v
        servers[server] = total
    out["servers"] = servers
    return out
