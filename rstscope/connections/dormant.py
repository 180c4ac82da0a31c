"""Dormant connections: connections that went idle leave memory, and come back if their 4-tuple does.

A connection that never closed (a half-open handshake of a SYN flood, an unanswered SYN, a connection
the capture left in the middle) cannot retire: a later packet of its 4-tuple still belongs to it.  A
closed one can retire only after a while (see :mod:`.retire`; a reset storm keeps a second's worth of
them).  Once idle for :data:`DORMANT_AFTER_FRAMES` it goes *dormant*: its whole slot (the sequence pass's carried
columns, the event loop's columns and rings, its ACK ring and who it is) becomes one row of a
:class:`~.retire.RecordFile` and the slot is freed; its 4-tuple stays known.  When the 4-tuple sends
again the row is put back in a slot as it was, so tracking goes on exactly as if it had stayed: the
threshold trades memory for reads and writes, never results.
"""

from __future__ import annotations

import numpy as np

from rstscope.connections.events import EventColumns, lib
from rstscope.connections.retire import RecordFile, fit
from rstscope.connections.rows import RING
from rstscope.connections.sequence import PEER_ACKS_KEPT, AckRing, ConnArrays

DORMANT_AFTER_FRAMES = 10_000
"""Connections silent this many frames go dormant.  A SYN flood keeps its half-open connections
alive for seconds (SYN-ACK retransmissions at 1, 3, 7 ... s): short enough to keep only the handshakes
in progress in memory, long enough that a request and its reply do not go dormant in between."""


CLOSED_DORMANT_ABOVE = 40_000
"""Closed connections (in slots or dormant) past which the idle closed ones go dormant too.  A reset storm
keeps a second's worth of them (50,000 at one RST per 20 µs); a busy server of short connections about
LIVE_CLOSED_LIMIT, which stay in their slots: putting them out and back costs more than it saves there
(measured on the short shape: 12.5-13.3 s CPU and 153 MB with them dormant, 10.6-12.8 s and 126 MB
without)."""
COMPACT_AFTER = 1 << 16
"""Dead rows (of connections that woke) the file holds at least before it is compacted."""
COMPACT_BATCH = 4_096
"""Rows copied at once when the file is compacted (about 12 MB)."""


class Dormant:
    """The dormant connections' slot rows, by connection id: one row of int64 numbers per connection
    (the blocks of :attr:`layout`), appended to a :class:`~.retire.RecordFile`; when as many rows are
    dead (their connection woke) as alive, the live ones are copied to a fresh file."""

    def __init__(self, ident: np.dtype) -> None:
        self._ident = ident
        blocks = [(name, 1) for name in ConnArrays.INT_COLUMNS] + [
            ("ev", lib.EV_WIDTH), ("history", lib.HISTORY_MAX // 8), ("probes", 2 * RING * 2),
            ("recent", 2 * RING * lib.SEG), ("ack_frame", 2 * PEER_ACKS_KEPT), ("ack_value", 2 * PEER_ACKS_KEPT),
        ] + [(f"ident.{name}", 1) for name in ident.names]  # fmt: skip
        ends = np.cumsum([width for _, width in blocks]).tolist()
        self.layout = {name: (end - width, end) for (name, width), end in zip(blocks, ends, strict=True)}
        self.dtype = np.dtype([("v", np.int64, ends[-1])])
        self._rows = RecordFile(self.dtype)
        self._at = np.zeros(0, dtype=np.int32)  # connection id -> its row, -1: not dormant (rows: < 2 x live)
        self._dead = 0
        self._closed = np.zeros((0, 3), dtype=np.int64)  # per closed dormant connection: id, last frame, last ns
        self.draining = False
        """Set when every dormant connection is about to wake (the end of the capture): no more compaction."""

    def __len__(self) -> int:
        return int(np.count_nonzero(self._at >= 0))

    def ids(self) -> np.ndarray:
        return np.flatnonzero(self._at >= 0)

    def closed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dormant connections that had closed (FIN or RST): ids, last frames, last times.  They retire
        from here when they would have retired from a slot (the tracker's sweeps look at them too)."""
        return self._closed[:, 0], self._closed[:, 1], self._closed[:, 2]

    def put(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
            ident: np.ndarray) -> None:  # fmt: skip
        """These connections (in these slots) go dormant; the caller frees the slots (and their blocks)."""
        n = len(ids)
        blocks = {name: arrays[name][slots] for name in ConnArrays.INT_COLUMNS}
        blocks.update(ev=columns.ev[slots], history=columns.history[slots].view(np.int64),
                      probes=columns.probes_of(slots), recent=columns.recent_of(slots), ack_frame=acks.frame[slots],
                      ack_value=acks.ack[slots])  # fmt: skip
        who = ident[slots]
        blocks.update({f"ident.{name}": who[name].astype(np.int64) for name in self._ident.names})
        rows = np.empty(n, self.dtype)
        v = rows["v"]
        for name, (start, end) in self.layout.items():
            v[:, start:end] = blocks[name].reshape(n, end - start)
        self._at = fit(self._at, int(ids.max()) + 1, -1)
        self._at[ids] = self._rows.append(rows) + np.arange(n)
        closed = arrays["closing"][slots] > 0
        if closed.any():
            at = slots[closed]
            mine = np.stack([ids[closed], arrays["last_frame"][at], arrays["last_ns"][at]], axis=1)
            self._closed = np.concatenate([self._closed, mine])

    def waking(self, ids: np.ndarray) -> np.ndarray:
        """Of these connection ids (any), the dormant ones, each once."""
        ids = ids[ids < len(self._at)]
        return np.unique(ids[self._at[ids] >= 0])

    def take(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
             ident: np.ndarray) -> None:  # fmt: skip
        """Put these dormant connections back, into these (fresh) slots, as they were."""
        v = self._rows.take(self._at[ids])["v"]
        self._at[ids] = -1
        if len(self._closed):
            self._closed = self._closed[~np.isin(self._closed[:, 0], ids)]
        self._dead += len(ids)

        def block(name):
            start, end = self.layout[name]
            return v[:, start:end]

        for name in ConnArrays.INT_COLUMNS:
            arrays[name][slots] = block(name)[:, 0]
        n = len(ids)
        columns.ev[slots] = block("ev")
        columns.history[slots] = np.ascontiguousarray(block("history")).view(np.int8)
        columns.restore(slots, block("recent").reshape(n, 2, RING, lib.SEG), block("probes").reshape(n, 2, RING, 2))
        acks.frame[slots] = block("ack_frame").reshape(n, 2, PEER_ACKS_KEPT)
        acks.ack[slots] = block("ack_value").reshape(n, 2, PEER_ACKS_KEPT)
        who = np.zeros(n, self._ident)
        for name in self._ident.names:
            who[name] = block(f"ident.{name}")[:, 0].astype(self._ident[name])
        ident[slots] = who
        if self._dead > max(len(self), COMPACT_AFTER) and not self.draining:
            self._compact()

    def _compact(self) -> None:
        """Copy the live rows to a fresh file (the old one, mostly dead rows, is closed and gone)."""
        old, self._rows = self._rows, RecordFile(self.dtype)
        ids = self.ids()
        for start in range(0, len(ids), COMPACT_BATCH):  # small batches: each is in memory twice for a while
            batch = ids[start : start + COMPACT_BATCH]
            self._at[batch] = self._rows.append(old.take(self._at[batch])) + np.arange(len(batch))
        self._dead = 0
