"""The pipeline end to end: capture file -> connections -> evidence -> verdicts -> records.

``analyze_capture`` runs every stage on one file and returns an
:class:`Analysis`; :mod:`rstscope.document` turns it into the stable document
that ``rstscope analyze --json`` prints, the lab stores as ``analysis.json``,
and the report and plots read.  Nothing here formats text for people: that is
``report/``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from rstscope import evidence as evidence_mod
from rstscope import prefetch
from rstscope.connections import Connection, Side, Tracker
from rstscope.evidence import ResetEvidence
from rstscope.packets import ReadStats
from rstscope.reader import open_capture
from rstscope.verdicts import Decision, Verdict, classify

CHUNK_PACKETS = 65_536
"""Rows per chunk: small enough that the tracker's temporaries stay in cache and memory stays flat."""
PREFETCH_BYTES = 16 << 20
"""Files at least this large are read in a child process, in parallel with tracking (rstscope.prefetch)."""


NOT_PRIMARY = (Verdict.ECHO, Verdict.IGNORED)
"""RSTs that did not end their connection: the primary RST is its first RST of another verdict."""


@dataclass(kw_only=True)
class ResetRecord:
    """One RST: its evidence and its verdict."""

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
    connections: list[Connection]
    resets: list[ResetRecord]
    listen_queue: dict = field(default_factory=dict)
    """SYN and SYN-ACK trouble, with or without RSTs (see :func:`listen_queue_evidence`)."""
    run: object | None = None
    """The lab run directory (``rstscope.lab.rundir.RunDir``) the capture came from, if any: its kernel
    records and client logs are joined into the document."""

    def verdict_counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for r in self.resets:
            counts[r.verdict.value] += 1
        return {k: v for k, v in counts.items() if v}

    def primary_reset(self, conn_id: int) -> ResetRecord | None:
        """The connection's primary RST: its first RST that ended it (not an echo, not ignored), None if
        it had none."""
        return next((r for r in self.resets_of(conn_id) if r.verdict not in NOT_PRIMARY), None)

    def connection_verdict(self, conn: Connection) -> Verdict | None:
        """The verdict of the connection's primary RST (what happened to it); else its first RST's
        verdict; None without RSTs."""
        primary = self.primary_reset(conn.id)
        if primary is not None:
            return primary.verdict
        resets = self.resets_of(conn.id)
        return resets[0].verdict if resets else None

    def _resets_by_conn(self) -> dict[int, list[ResetRecord]]:
        cache = getattr(self, "_by_conn", None)
        if cache is None:
            cache = {}
            for r in self.resets:
                cache.setdefault(r.evidence.connection, []).append(r)
            self._by_conn = cache
        return cache

    def resets_of(self, conn_id: int) -> list[ResetRecord]:
        return self._resets_by_conn().get(conn_id, [])


def analyze_capture(
    path: str | os.PathLike,
    *,
    progress: Callable[[int, int], None] | None = None,
    zeek_timers: bool = False,
    stream: BinaryIO | None = None,
) -> Analysis:
    """Run the whole pipeline on one capture file.

    ``progress(packets_done, bytes_done)`` is called after each chunk.  ``zeek_timers`` also ends
    connections where Zeek's timers would (for ``conns``; see ``rstscope.connections.keys.ZeekTimers``).
    ``stream``: read this open stream (standard input, a FIFO) instead of the file; ``path`` names it.
    Raises :class:`rstscope.status.InputError` when the file cannot be read at all.
    """
    tracker = Tracker(zeek_timers=zeek_timers)
    with _open(path, stream) as cap:
        for chunk in cap.chunks():
            tracker.feed(chunk)
            if progress is not None:
                progress(cap.stats.records, cap.stats.bytes_read)
        info = CaptureInfo(
            path=str(Path(path)),
            format=cap.format,
            compressed=cap.compressed,
            link_types=sorted({i.link_name for i in cap.interfaces}),
            stats=cap.stats,
        )
    return analysis_of(info, tracker.finish())


def analysis_of(info: CaptureInfo, connections) -> Analysis:
    """The stages after tracking: evidence, verdicts and the listen queue of tracked ``connections``
    (a ``ConnectionStore``; :mod:`rstscope.fleet` builds one from several files or processes)."""
    evidence = evidence_mod.collect(connections.with_resets(), connections.host_ttl)
    resets = [ResetRecord(evidence=ev, decision=classify(ev)) for ev in evidence]
    return Analysis(
        capture=info,
        connections=connections,
        resets=resets,
        listen_queue=listen_queue_evidence(connections),
    )


def _open(path, stream=None):
    """The capture, read in a child process when the file is large enough for that to pay."""
    if stream is not None:  # standard input or a FIFO: read once, here
        return open_capture(path, chunk_packets=CHUNK_PACKETS, stream=stream)
    if prefetch.available() and _size(path) >= PREFETCH_BYTES:
        return prefetch.PrefetchedCapture(path, chunk_packets=CHUNK_PACKETS)
    return open_capture(path, chunk_packets=CHUNK_PACKETS)


def _size(path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # open_capture says what is wrong


def listen_queue_evidence(connections: list[Connection]) -> dict:
    """Listen-queue trouble that needs no RST to be seen.

    With the default ``tcp_abort_on_overflow=0`` a full accept queue resets
    nothing: the server drops the handshake's last ACK and retransmits its
    SYN-ACK; a full SYN queue drops SYNs, which the client retransmits.
    """
    syn_retx, synack_retx, synack_after_ack, unanswered = [], [], [], []
    per_server: dict[str, dict[str, int]] = {}
    for c in connections:
        if not c.syn_frames:
            continue
        server = per_server.setdefault(
            c.resp,
            {"attempts": 0, "syn_retransmitted": 0, "synack_retransmitted": 0, "synack_after_ack": 0,
             "unanswered": 0},
        )  # fmt: skip
        server["attempts"] += 1
        if len(c.syn_frames) > 1:
            syn_retx.append(c.id)
            server["syn_retransmitted"] += 1
        if len(c.synack_frames) > 1:
            synack_retx.append(c.id)
            server["synack_retransmitted"] += 1
        if c.synack_after_ack_frames:
            synack_after_ack.append(c.id)
            server["synack_after_ack"] += 1
        if not c.synack_frames and not c.rst_frames[Side.RESP]:
            unanswered.append(c.id)
            server["unanswered"] += 1
    return {
        "syn_retransmitted": {"count": len(syn_retx), "connections": syn_retx},
        "synack_retransmitted": {"count": len(synack_retx), "connections": synack_retx},
        "synack_after_ack": {"count": len(synack_after_ack), "connections": synack_after_ack},
        "unanswered": {"count": len(unanswered), "connections": unanswered},
        "servers": per_server,
    }
