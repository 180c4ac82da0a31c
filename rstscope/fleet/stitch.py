"""The pieces of one capture read as one.

Frames.  A stitched capture numbers its records as the merged file would (``mergecap -a``): a
piece's record *n* is global frame ``n + offset``, the offset being the records of the pieces
before it.  Everything the analysis reports uses the global frame; :class:`FrameMap` gives back the
file and the frame within it (the document's ``file`` and ``file_frame`` fields).

Chunks.  The tracker's idle sweeps run at chunk boundaries, so where chunks end can matter (a
connection closed and idle for ``STALE_AFTER_FRAMES`` retires at the next sweep; a later packet of its
4-tuple then starts a new connection).  :class:`Rebatcher` makes the boundaries a function of the
global frame numbers alone: one chunk per ``CHUNK_PACKETS`` records, whatever the piece boundaries and
however the reader buffered each file.  That is what lets ``--jobs`` (:mod:`.shards`) reproduce this
run exactly.  Reading the merged file with ``analyze FILE`` chunks by the reader's buffer instead, so
the two agree on every connection except one whose 4-tuple comes back, without a new SYN, right
around its retirement (tests/fleet compares them on captures split by ``editcap``).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rstscope import analysis
from rstscope.analysis import CHUNK_PACKETS, Analysis, CaptureInfo
from rstscope.connections import Tracker
from rstscope.fleet import timing
from rstscope.fleet.pieces import Piece, discontinuity
from rstscope.packets import ReadStats, describe_undecoded


@dataclass(kw_only=True)
class Span:
    """One piece's place in its stitched capture."""

    path: str
    offset: int
    """Global frame of the piece's record 0 (its record n is frame offset + n)."""
    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    """Largest TCP timestamp in the piece (None without TCP)."""
    packets: int = 0
    """TCP rows."""

    def row(self) -> dict:
        return {"path": self.path, "first_frame": self.offset + 1, "records": self.records, "tcp_packets": self.packets,
                "start": _seconds(self.first_ns), "end": _seconds(self.last_ns)}  # fmt: skip


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else round(ns / 1e9, 9)


class FrameMap:
    """Global frame -> (file, frame in file), by the pieces' offsets."""

    def __init__(self, spans: list[Span]) -> None:
        self.spans = spans
        self._starts = [s.offset + 1 for s in spans]
        self._offsets = np.array([s.offset for s in spans], dtype=np.int64)

    def locate(self, frame: int) -> tuple[str, int]:
        span = self.spans[max(0, bisect.bisect_right(self._starts, frame) - 1)]
        return span.path, frame - span.offset

    def locate_all(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`locate` of many frames: each one's span (an index into ``spans``) and frame in its file."""
        span = np.maximum(np.searchsorted(self._starts, frames, side="right") - 1, 0)
        return span, frames.astype(np.int64) - self._offsets[span]


@dataclass(kw_only=True)
class StitchedCaptureInfo(CaptureInfo):
    """A capture made of pieces: ``path`` is its first piece, ``pieces`` all of them."""

    host: str = ""
    pieces: list[Span] = field(default_factory=list)

    @property
    def frames(self) -> FrameMap:
        cached = self.__dict__.get("_frames")
        if cached is None or cached.spans is not self.pieces:
            cached = self.__dict__["_frames"] = FrameMap(self.pieces)
        return cached


def capture_info(pieces: list[Piece], spans: list[Span], formats: list[tuple[str, bool]], stats: ReadStats):
    """The CaptureInfo of pieces read together (``formats``: each piece's format and compression)."""
    return StitchedCaptureInfo(
        path=str(pieces[0].path),
        format=formats[0][0] if len({f for f, _ in formats}) == 1 else "mixed",
        compressed=any(c for _, c in formats),
        link_types=sorted({lt for p in pieces for lt in p.link_types}),
        stats=stats,
        host=pieces[0].host,
        pieces=spans,
    )


def merge_stats(parts: list[tuple[str, ReadStats]]) -> ReadStats:
    """The read statistics of several pieces as one: counts summed; each warning names its piece; one
    'undecoded' warning for all of them."""
    total = ReadStats()
    for path, st in parts:
        for name in ("records", "tcp_packets", "non_ip", "non_tcp", "ip_fragments", "bytes_read"):
            setattr(total, name, getattr(total, name) + getattr(st, name))
        for name in ("undecoded", "unsupported_link", "decode_errors", "link_types", "skipped_blocks"):
            getattr(total, name).update(getattr(st, name))
        own = describe_undecoded(st.undecoded)
        total.warnings.extend(f"{Path(path).name}: {w}" for w in st.warnings if not (own and w == own))
    if total.undecoded:
        total.warnings.append(describe_undecoded(total.undecoded))
    return total


class Rebatcher:
    """Rows with global frames regrouped into the chunks of the merged file: all rows of records
    ``[k * CHUNK_PACKETS + 1, (k + 1) * CHUNK_PACKETS]`` in one chunk."""

    def __init__(self, batch: int = CHUNK_PACKETS) -> None:
        self.batch = batch
        self._pending: list[np.ndarray] = []
        self._index = -1

    def push(self, rows: np.ndarray) -> Iterator[np.ndarray]:
        """Add rows (global frames, ascending); yield the chunks they complete."""
        if not len(rows):
            return
        index = (rows["frame"].astype(np.int64) - 1) // self.batch
        cuts = np.flatnonzero(index[1:] != index[:-1]) + 1
        for part, k in zip(np.split(rows, cuts), index[np.concatenate([[0], cuts])].tolist(), strict=True):
            if k != self._index and self._pending:
                yield self._take()
            self._index = k
            self._pending.append(part)

    def flush(self) -> Iterator[np.ndarray]:
        if self._pending:
            yield self._take()

    def _take(self) -> np.ndarray:
        chunk = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending = []
        return chunk


Progress = Callable[[int, int, int], None]
"""progress(pieces done, packets done, bytes done)."""


@dataclass(kw_only=True)
class _Capture:
    """One stitched capture being read: its tracker, pieces and statistics so far."""

    tracker: Tracker
    pieces: list[Piece] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    stats: list[tuple[str, ReadStats]] = field(default_factory=list)
    formats: list[tuple[str, bool]] = field(default_factory=list)
    rebatch: Rebatcher = field(default_factory=Rebatcher)

    @property
    def next_offset(self) -> int:
        return self.spans[-1].offset + self.spans[-1].records if self.spans else 0

    def finish(self) -> Analysis:
        with timing.phase("single", "finish tracker"):
            for chunk in self.rebatch.flush():
                self.tracker.feed(chunk)
            info = capture_info(self.pieces, self.spans, self.formats, merge_stats(self.stats))
            store = self.tracker.finish()
        return analysis.analysis_of(info, store)


def analyze_group(
    pieces: list[Piece],
    *,
    max_gap_s: float,
    zeek_timers: bool = False,
    progress: Progress | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> list[Analysis]:
    """Analyse a group of pieces (one host and interface, in time order) in this process: one
    Analysis per capture they make (more than one when they overlap or leave a gap: ``warn`` says so)."""
    results: list[Analysis] = []
    current: _Capture | None = None
    packets = nbytes = 0
    reading, tracking = timing.Stopwatch(), timing.Stopwatch()
    for done, piece in enumerate(pieces):
        if current is not None:
            why = discontinuity(current.pieces[-1], current.spans[-1].last_ns, piece, max_gap_s)
            if why:
                warn(f"{why}: analysed as a separate capture")
                results.append(current.finish())
                current = None
        if current is None:
            current = _Capture(tracker=Tracker(zeek_timers=zeek_timers))
        span = Span(path=str(piece.path), offset=current.next_offset)
        # Whole chunks of the merged file: a reader child runs one message ahead of the tracker, so
        # messages of a quarter chunk would leave the tracker waiting for three of every four.
        with analysis._open(piece.path, chunk_packets=CHUNK_PACKETS) as cap:
            for chunk in timing.timed(cap.chunks(), reading):
                span.packets += len(chunk)
                ts = chunk["ts_ns"]
                span.first_ns = int(ts[0]) if span.first_ns is None else span.first_ns
                top = int(ts.max())
                span.last_ns = top if span.last_ns is None else max(span.last_ns, top)
                if span.offset:
                    chunk = chunk.copy()
                    chunk["frame"] += np.uint64(span.offset)
                with tracking.timing():
                    for whole in current.rebatch.push(chunk):
                        current.tracker.feed(whole)
                if progress is not None:
                    progress(done, packets + span.packets, nbytes + cap.stats.bytes_read)
            span.records = cap.stats.records
            current.stats.append((str(piece.path), cap.stats))
            current.formats.append((cap.format, cap.compressed))
        packets += span.packets
        nbytes += piece.size
        current.pieces.append(piece)
        current.spans.append(span)
    reading.record("single", "read (wait for the reader child)")
    tracking.record("single", "track")
    if current is not None:
        results.append(current.finish())
    if progress is not None:
        progress(len(pieces), packets, nbytes)
    return results
