"""Progress of a fleet run on a terminal: pieces done of total, packets/s, time left.

One line on stderr, rewritten in place, only where stderr is a terminal (``env.progress`` decides);
at most :data:`EVERY_S` apart.  Time left is estimated from the bytes read so far against the
pieces' total size.
"""

from __future__ import annotations

import time

EVERY_S = 0.25
"""Smallest interval between two redraws."""


class Progress:
    def __init__(self, env, *, pieces: int, size: int, clock=time.monotonic) -> None:
        self.env = env
        self.pieces = pieces
        self.size = size
        self._clock = clock
        self._start = clock()
        self._shown = 0.0
        self._base_pieces = self._base_packets = self._base_bytes = 0

    def group(self, pieces: int) -> GroupProgress:
        """The callback for one group of ``pieces``: progress(pieces done, packets, bytes) within it."""
        base = (self._base_pieces, self._base_packets, self._base_bytes)
        self._base_pieces += pieces
        return GroupProgress(self, base, pieces)

    def line(self, done: int, packets: int, nbytes: int) -> str:
        elapsed = max(self._clock() - self._start, 1e-9)
        rate = packets / elapsed
        text = f"{done}/{self.pieces} pieces, {packets:,} packets, {rate:,.0f} packets/s"
        if 0 < nbytes < self.size:
            text += f", {elapsed * (self.size - nbytes) / nbytes:.0f} s left"
        return text

    def update(self, done: int, packets: int, nbytes: int) -> None:
        now = self._clock()
        if now - self._shown < EVERY_S and done < self.pieces:
            return
        self._shown = now
        self.env.progress(self.line(done, packets, nbytes))

    def done(self) -> None:
        self.env.progress_done()


class GroupProgress:
    """Progress within one group of pieces: pieces read, then (with --jobs or --dask) the shards'
    tracking, slice by slice."""

    def __init__(self, progress: Progress, base: tuple[int, int, int], pieces: int) -> None:
        self.progress, self.base, self.pieces = progress, base, pieces
        self._packets = 0
        self._tracking_since: float | None = None

    def __call__(self, done: int, packets: int, nbytes: int) -> None:
        self._packets = packets
        self.progress.update(self.base[0] + done, self.base[1] + packets, self.base[2] + nbytes)
        if done >= self.pieces:
            self.progress._base_packets, self.progress._base_bytes = self.base[1] + packets, self.base[2] + nbytes

    def tracking(self, slices_done: int, slices: int) -> None:
        """The shards' progress: while they track, the slices done and the time left to track them (the
        share of slices to go, at the pace since tracking began); then what follows, evidence and the
        rows, which takes about as long again and has no count to show."""
        p = self.progress
        now = p._clock()
        if self._tracking_since is None:
            self._tracking_since = now
        if now - p._shown < EVERY_S:
            return
        p._shown = now
        head = f"{self.base[0] + self.pieces}/{p.pieces} pieces read; "
        if slices_done >= slices:
            p.env.progress(head + "connections tracked; judging RSTs and encoding rows")
            return
        elapsed = now - self._tracking_since
        left = f", {elapsed * (slices - slices_done) / slices_done:.0f} s left to track" if slices_done else ""
        p.env.progress(f"{head}tracking connections: slice {slices_done:,} of {slices:,}{left}")
