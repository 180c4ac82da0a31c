"""The pipeline end to end: capture file -> connections -> evidence -> verdicts -> records.

``analyze_capture`` runs every stage on one file and returns an
:class:`Analysis`; :mod:`rstscope.document` turns it into the stable document
that ``rstscope analyze --json`` prints, the lab stores as ``analysis.json``,
and the report and plots read.  Nothing here formats text for people: that is
``report/``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from rstscope import columns, judging, prefetch, reset_table
from rstscope.ahead import ahead
from rstscope.connections import Connection, Side, Tracker
from rstscope.connections.retire import RowBatch
from rstscope.evidence import ResetEvidence
from rstscope.fleet import frames as fleet_frames
from rstscope.packets import ReadStats
from rstscope.reader import open_capture
from rstscope.reset_table import VERDICTS, ResetTable
from rstscope.verdicts import Decision, Verdict

CHUNK_PACKETS = 65_536
"""Records per chunk of a stitched capture (``rstscope.fleet``: the rows of records ``[k * CHUNK_PACKETS
+ 1, (k + 1) * CHUNK_PACKETS]``, whatever the pieces), and per chunk its pieces are read (by a fleet's
decoding processes, or by one process, whose tracker takes whole chunks of the merged file)."""
READ_PACKETS = 16_384
"""Records read and decoded at once from a file analysed here, so the most rows of a chunk the tracker
gets.  Against 65 536, measured on 1M-packet captures: peak RSS of ``analyze --json`` (the command and
its reader child) 20-55 MB lower (reset storm 222 -> 195, flood 258 -> 203, short 150 -> 125, long 113
-> 84 MB), identical documents, CPU within noise but on long flows (+10 %: more numpy calls per packet)."""
ROWSPLIT_MAX_RESETS = 200_000
"""More RSTs than this, and ``--json``'s connection rows are all encoded here, the reader child stopped
before the RSTs' table is gathered (:mod:`rstscope.rowsplit`): this process's table of RSTs and the child
beside it would pass 200 MB (measured on storms of a million RSTs, peak of the tree: 208-224 MB with the
child, 187 without; on one million connections with 80,000 RSTs, 176 MB with it)."""
PREFETCH_BYTES = 16 << 20
"""Files at least this large are read in a child process, in parallel with tracking (rstscope.prefetch)."""


@dataclass(kw_only=True)
class ResetRecord:
    """One RST: its evidence and its verdict (what :func:`rstscope.reset_table.build` computes for a RST and
    does not keep)."""

    evidence: ResetEvidence
    decision: Decision

    @property
    def verdict(self) -> Verdict:
        return self.decision.verdict

    @property
    def frame(self) -> int:
        return self.evidence.frame


@dataclass(kw_only=True)
class CaptureInfo:
    path: str
    format: str
    compressed: bool
    link_types: list[str]
    stats: ReadStats


@dataclass(kw_only=True)
class Analysis:
    """Everything ``analyze`` found in one capture."""

    capture: CaptureInfo
    connections: Sequence[Connection]
    """In id order (the tracker's ``ConnectionStore``: retired connections are read back from its spill)."""
    resets: ResetTable
    """Every RST in frame order, as document rows; its columns answer counts and per-connection outcomes."""
    run: object | None = None
    """The lab run directory (``rstscope.lab.rundir.RunDir``) the capture came from, if any: its kernel
    records and client logs are joined into the document."""
    _listen_queue: dict | None = field(default=None, repr=False)

    @property
    def listen_queue(self) -> dict:
        """SYN and SYN-ACK trouble, with or without RSTs (see :func:`listen_queue_evidence`): one pass over
        the connections, made the first time it is asked for unless a writer that reads every connection
        anyway tallied it on the way (``document.write_json``)."""
        if self._listen_queue is None:
            self._listen_queue = listen_queue_evidence(self.connections)
        return self._listen_queue

    @listen_queue.setter
    def listen_queue(self, value: dict) -> None:
        self._listen_queue = value

    @property
    def listen_queue_known(self) -> bool:
        return self._listen_queue is not None

    def verdict_counts(self) -> dict[str, int]:
        return self.resets.verdict_counts()

    def primary_reset(self, conn_id: int) -> dict | None:
        """The connection's primary RST (its document row): its first RST that ended it (not an echo, not
        ignored), None if it had none."""
        marked = [p for p in self.resets.positions_of(conn_id).tolist() if self.resets.connection_primary[p]]
        return orjson.loads(self.resets.raw(marked[0])) if marked else None

    def connection_verdict(self, conn: Connection) -> Verdict | None:
        """The verdict of the connection's primary RST (what happened to it); else its first RST's
        verdict; None without RSTs."""
        outcome = self.resets.outcome_of(conn.id)
        return outcome.verdict if outcome is not None else None

    def resets_of(self, conn_id: int) -> list[dict]:
        """The connection's RSTs (document rows), in frame order."""
        return [orjson.loads(b) for b in self.resets.raw_rows(self.resets.positions_of(conn_id))]

    def verdicts_of(self, conn_id: int) -> list[Verdict]:
        """The verdicts of the connection's RSTs, in frame order (no row read)."""
        return [VERDICTS[c] for c in self.resets.verdict[self.resets.positions_of(conn_id)].tolist()]


def analyze_capture(
    path: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
    judged: Callable[[int, int], None] | None = None,
    zeek_timers: bool = False,
    stream: BinaryIO | None = None,
    encode_rows: bool = False,
) -> Analysis:
    """Run the whole pipeline on one capture file.

    ``progress(packets_done, bytes_done)`` is called after each chunk; ``judged(done, connections)`` as the
    connections that saw a RST get their evidence and verdicts (after tracking).  ``zeek_timers`` also ends
    connections where Zeek's timers would (for ``conns``; see ``rstscope.connections.keys.ZeekTimers``).
    ``stream``: read this open stream (standard input, a FIFO) instead of the file; ``path`` names it.
    ``encode_rows``: every connection's document row will be written (``--json``): the reader child encodes
    half of them (:mod:`rstscope.rowsplit`; the analysis's ``connections`` then hold it: close them, or
    read their rows, to stop it).
    Raises :class:`rstscope.status.InputError` when the file cannot be read at all.
    """
    listen_queue = columns.ListenQueueColumns()  # tallied as connections retire: no pass over them after
    # The reader child's work while tracking (set below, once the capture is open): it judges the RSTs of the
    # connections that retired (judging.WhileTracking) and, for --json, encodes their rows (rowsplit.EarlyUnits).
    while_tracking: list = []

    def retired(batch: RowBatch) -> None:  # connections that retired, their rows final
        listen_queue.add(batch)
        for work in while_tracking:
            work.retired(batch)

    tracker = Tracker(zeek_timers=zeek_timers, on_retired=retired)
    with (
        _open(path, stream) as cap,
        judging.while_tracking(cap, tracker) as judge,
        _rows_while_tracking(cap, tracker, encode_rows) as encoding,
    ):
        while_tracking.extend(work for work in (judge, encoding) if work is not None)
        child = cap if isinstance(cap, prefetch.PrefetchedCapture) else None  # the reader child
        # With a reader child, a thread receives each chunk and prepares it while the one before is tracked.
        chunks = ahead(cap.chunks(), Tracker.sliced) if child is not None else cap.chunks()
        with contextlib.closing(chunks):  # the thread stops before the capture closes, also on an error
            for chunk in chunks:
                tracker.feed(chunk)
                for work in while_tracking:  # jobs for the reader child, given in turn
                    work.poll()
                if progress is not None:
                    progress(cap.stats.records, cap.stats.bytes_read)
        info = CaptureInfo(
            path=str(Path(path)),
            format=cap.format,
            compressed=cap.compressed,
            link_types=sorted({i.link_name for i in cap.interfaces}),
            stats=cap.stats,
        )
        # The reader child, done reading, judges a share of the RSTs left (rstscope.judging).
        store = tracker.finish()
        # --json: the child encodes half of the connection rows too (more than a block of them), but for a
        # storm of RSTs (ROWSPLIT_MAX_RESETS: known from the connections that saw one, else once judged).
        keep = encode_rows and child is not None and len(store) > columns.ROWS_PER_BLOCK
        keep = keep and len(store.reset_ids) <= ROWSPLIT_MAX_RESETS
        out = analysis_of(info, store, child=child, judged=judged, early=judge, keep_child=keep)
        out.listen_queue = listen_queue.result()
        if keep and len(out.resets) > ROWSPLIT_MAX_RESETS:
            child.close()
        elif keep:
            from rstscope import rowsplit

            try:
                out.connections = rowsplit.RowsInChild(out.connections, out.resets, child, encoding)
            except OSError:  # the child is gone: the rows are all encoded here
                return out
            cap.keep()
        return out


def analysis_of(info: CaptureInfo, connections, *, child: prefetch.PrefetchedCapture | None = None,
                judged: Callable[[int, int], None] | None = None, early: judging.WhileTracking | None = None,
                keep_child: bool = False) -> Analysis:  # fmt: skip
    """The stages after tracking: evidence and verdicts of tracked ``connections`` (a ``ConnectionStore``;
    :mod:`rstscope.fleet` builds one from several files or processes).  ``child``: a reader child that
    has read the capture, to judge a share of the RSTs (:mod:`rstscope.judging`), and ``early`` what it
    judged while the capture was tracked (the child is stopped after, unless ``keep_child``);
    ``judged(done, connections)``: told how many of the connections that saw a RST are judged, as they are."""
    # After finish(): the origin of a RST whose sender sent nothing else needs the whole capture's host_ttl.
    extend = None
    if getattr(info, "pieces", None):  # a stitched capture: each RST also says in which file it is

        def extend(row: dict, frame: int) -> None:
            fleet_frames.add_reset_fields(row, info, frame)

    if child is not None and extend is None:
        resets = judging.build(connections, connections.host_ttl, child, judged=judged, early=early,
                               keep_child=keep_child)  # fmt: skip
    else:
        subjects = judging.counted(connections.reset_subjects(), len(connections.reset_ids), judged)
        resets = reset_table.build(subjects, connections.host_ttl, extend=extend)
    return Analysis(capture=info, connections=connections, resets=resets)


def _rows_while_tracking(cap, tracker: Tracker, encode_rows: bool):
    """``rowsplit.while_tracking`` for ``--json`` (``encode_rows``), else nothing."""
    if not encode_rows:
        return contextlib.nullcontext()
    from rstscope import rowsplit  # what it imports, only --json needs

    return rowsplit.while_tracking(cap, tracker)


def _open(path, stream=None, *, chunk_packets: int | None = None):
    """The capture, read in a child process when the file is large enough for that to pay; in chunks of
    ``chunk_packets`` records (by default READ_PACKETS)."""
    chunk_packets = chunk_packets or READ_PACKETS
    if stream is not None:  # standard input or a FIFO: read once, here
        return open_capture(path, chunk_packets=chunk_packets, stream=stream)
    if prefetch.available() and _size(path) >= PREFETCH_BYTES:
        return prefetch.PrefetchedCapture(path, chunk_packets=chunk_packets)
    return open_capture(path, chunk_packets=chunk_packets)


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # open_capture says what is wrong


def listen_queue_evidence(connections: Iterable[Connection]) -> dict:
    """Listen-queue trouble that needs no RST to be seen.

    With the default ``tcp_abort_on_overflow=0`` a full accept queue resets
    nothing: the server drops the handshake's last ACK and retransmits its
    SYN-ACK; a full SYN queue drops SYNs, which the client retransmits.
    """
    if hasattr(connections, "row_batches"):  # the tracker's store: its rows, no Connection objects
        return columns.listen_queue(connections)
    tally = ListenQueueTally()
    for c in connections:
        tally.add(c)
    return tally.result()


class ListenQueueTally:
    """:func:`listen_queue_evidence` one connection object at a time (stores without rows: a fleet's
    merged shards; :class:`rstscope.columns.ListenQueueColumns` counts the tracker's rows)."""

    def __init__(self) -> None:
        self._syn_retx: list[int] = []
        self._synack_retx: list[int] = []
        self._synack_after_ack: list[int] = []
        self._unanswered: list[int] = []
        self._per_server: dict[str, dict[str, int]] = {}

    def add(self, c: Connection) -> None:
        syns = len(c.syn_frames)
        if not syns:
            return
        resp = c.resp
        server = self._per_server.get(resp)
        if server is None:
            server = self._per_server[resp] = {"attempts": 0, "syn_retransmitted": 0, "synack_retransmitted": 0,
                                                 "synack_after_ack": 0, "unanswered": 0}  # fmt: skip
        server["attempts"] += 1
        if syns > 1:
            self._syn_retx.append(c.id)
            server["syn_retransmitted"] += 1
        if len(c.synack_frames) > 1:
            self._synack_retx.append(c.id)
            server["synack_retransmitted"] += 1
        if c.synack_after_ack_frames:
            self._synack_after_ack.append(c.id)
            server["synack_after_ack"] += 1
        if not c.synack_frames and not c.rst_frames[Side.RESP]:
            self._unanswered.append(c.id)
            server["unanswered"] += 1

    def result(self) -> dict:
        return {
            "syn_retransmitted": {"count": len(self._syn_retx), "connections": self._syn_retx},
            "synack_retransmitted": {"count": len(self._synack_retx), "connections": self._synack_retx},
            "synack_after_ack": {"count": len(self._synack_after_ack), "connections": self._synack_after_ack},
            "unanswered": {"count": len(self._unanswered), "connections": self._unanswered},
            "servers": self._per_server,
        }
