"""Retirement and spill: how memory follows the connections alive at once, not the capture's size.

A connection that closed (FIN or RST) and then saw no packet for :data:`STALE_AFTER_FRAMES` frames
retires: the tracker finalises it, its summary goes to the spill file (:class:`Spill`), its slot is
reused and its 4-tuple forgotten.  :class:`IdleSweep` finds those connections; :class:`ConnectionStore`
gives all connections back in id order, reading the retired ones from the spill file one at a time.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from rstscope.connections.records import Connection, TtlRange

SPILL_BATCH = 2_000
"""Retired connections are written to the spill file in batches of this many (a few MB in memory)."""
STALE_AFTER_FRAMES = 100_000
"""A connection's recent segments are forgotten once this many frames went by without one of its event
rows: a later RST cannot be answering them.  This also keeps closed connections small."""
LIVE_CLOSED_LIMIT = 10_000
"""Closed connections kept in memory at most before they have been idle STALE_AFTER_FRAMES frames: past
this many (a reset storm: one short connection, or one bare RST, per few frames), closed connections
idle for PRESSURE_IDLE_FRAMES retire at once.  Memory then stays bounded whatever the share of
connections that end in a RST."""
PRESSURE_IDLE_FRAMES = 5_000
"""Under pressure, a closed connection silent for this many frames retires (a later segment of its
4-tuple then starts a new connection, as after any retirement)..."""
PRESSURE_IDLE_NS = 1_000_000_000
"""... and for this long in capture time too: on a busy link 5,000 frames pass in milliseconds, while the
segments that still belong to a closed connection (the peer's ACKs that draw echo RSTs, a retransmitted
FIN) come up to a round trip later; a second covers the round trips of real paths."""


def is_stale(recent: list[list[tuple]], frame: int) -> bool:
    """Whether a connection's recent segments (see ``Connection._recent``) are too old for ``frame``."""
    last = max(recent[0][-1][0] if recent[0] else 0, recent[1][-1][0] if recent[1] else 0)
    return 0 < last < frame - STALE_AFTER_FRAMES


class IdleSweep:
    """Every STALE_AFTER_FRAMES / 4 frames, the slots of the connections that went idle since the last
    sweep (no packet for STALE_AFTER_FRAMES frames)."""

    def __init__(self) -> None:
        self._next_sweep = STALE_AFTER_FRAMES
        self._swept_cutoff = 0

    def idle(self, now_frame: int, last_frame: np.ndarray, live: np.ndarray) -> np.ndarray | None:
        """Slots idle now (``last_frame``/``live`` per slot), None when no sweep is due."""
        if now_frame < self._next_sweep:
            return None
        self._next_sweep = now_frame + STALE_AFTER_FRAMES // 4
        cutoff = now_frame - STALE_AFTER_FRAMES
        idle = np.flatnonzero(live & (last_frame >= self._swept_cutoff) & (last_frame < cutoff))
        self._swept_cutoff = cutoff
        return idle

    @staticmethod
    def pressured(now_frame: int, now_ns: int, last_frame: np.ndarray, last_ns: np.ndarray,
                  closed: np.ndarray) -> np.ndarray:  # fmt: skip
        """Slots of closed connections (``closed`` per slot) to retire now because too many are kept."""
        if np.count_nonzero(closed) <= LIVE_CLOSED_LIMIT:
            return np.zeros(0, dtype=np.int64)
        quiet = (last_frame < now_frame - PRESSURE_IDLE_FRAMES) & (last_ns < now_ns - PRESSURE_IDLE_NS)
        return np.flatnonzero(closed & quiet)


class Spill:
    """Retired connections: kept in memory up to SPILL_BATCH, then pickled to an anonymous temporary
    file together (offsets indexed by connection id).  Small captures never touch the disk."""

    def __init__(self) -> None:
        self._file = None
        self._pending: dict[int, Connection] = {}
        self._offset = np.zeros(0, dtype=np.int64)
        self._length = np.zeros(0, dtype=np.int64)

    def put(self, c: Connection) -> None:
        self._pending[c.id] = c
        if len(self._pending) >= SPILL_BATCH:
            self._write()

    def _write(self) -> None:
        if self._file is None:
            # Lives as long as the tracker and its store; the OS deletes it when it is closed.
            self._file = tempfile.TemporaryFile(prefix="rstscope-connections-")  # noqa: SIM115
        top = max(self._pending) + 1
        self._offset = fit(self._offset, top, 0)
        self._length = fit(self._length, top, 0)
        self._file.seek(0, os.SEEK_END)
        position = self._file.tell()
        blobs = []
        for cid, c in self._pending.items():
            data = pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)
            self._offset[cid], self._length[cid] = position, len(data)
            position += len(data)
            blobs.append(data)
        self._file.write(b"".join(blobs))
        self._pending.clear()

    def get(self, cid: int) -> Connection:
        c = self._pending.get(cid)
        if c is not None:
            return c
        self._file.seek(int(self._offset[cid]))
        return pickle.loads(self._file.read(int(self._length[cid])))


class ConnectionStore(Sequence):
    """All connections of a capture in id order: the live ones in memory, the retired ones read back
    from the spill file one at a time (so iterating does not hold them all)."""

    def __init__(self, live: list[Connection | None], spill: Spill, reset_ids: np.ndarray,
                 host_ttl: dict[str, TtlRange] | None = None):  # fmt: skip
        """``reset_ids``: the ids of the connections that saw a RST, sorted."""
        self._live = live
        self._spill = spill
        self._reset_ids = reset_ids
        self.host_ttl = host_ttl or {}
        """Per responder address, its TTL range over all connections (see ``Tracker.host_ttl``)."""

    def with_resets(self) -> Iterator[Connection]:
        """Only the connections that saw a RST, in id order (no pass over all the others)."""
        for cid in self._reset_ids.tolist():
            yield self[cid]

    def __len__(self) -> int:
        return len(self._live)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        c = self._live[index]
        return c if c is not None else self._spill.get(index if index >= 0 else len(self) + index)

    def __iter__(self) -> Iterator[Connection]:
        for cid, c in enumerate(self._live):
            yield c if c is not None else self._spill.get(cid)


def fit(array: np.ndarray, size: int, fill: int | bool) -> np.ndarray:
    """``array`` grown (doubling) to hold at least ``size`` entries, new ones set to ``fill``."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array), 1024), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown

