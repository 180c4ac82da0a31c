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

    def group(self, pieces: int):
        """The callback for one group of ``pieces``: progress(pieces done, packets, bytes) within it."""
        base = (self._base_pieces, self._base_packets, self._base_bytes)
        self._base_pieces += pieces

        def report(done: int, packets: int, nbytes: int) -> None:
            self.update(base[0] + done, base[1] + packets, base[2] + nbytes)
            if done >= pieces:
                self._base_packets, self._base_bytes = base[1] + packets, base[2] + nbytes

        return report

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
