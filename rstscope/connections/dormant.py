"""Dormant connections: open connections that went idle leave memory, and come back if their 4-tuple does.

A connection that never closed (a half-open handshake of a SYN flood, an unanswered SYN, a connection
the capture left in the middle) cannot retire: a later packet of its 4-tuple still belongs to it.  Once
idle for :data:`DORMANT_AFTER_FRAMES` it goes *dormant*: its whole slot (the sequence pass's carried
columns, the event loop's columns and rings, its ACK ring and who it is) becomes one row of a
:class:`~.retire.RecordFile` and the slot is freed; its 4-tuple stays known.  When the 4-tuple sends
again the row is put back in a slot as it was, so tracking goes on exactly as if it had stayed: the
threshold trades memory for reads and writes, never results.  A row freed by a connection that woke
is written over by the next one to go dormant.
"""

from __future__ import annotations

import numpy as np

from rstscope.connections.events import EventColumns, lib
from rstscope.connections.retire import RecordFile, fit
from rstscope.connections.rows import RING
from rstscope.connections.sequence import PEER_ACKS_KEPT, AckRing, ConnArrays

DORMANT_AFTER_FRAMES = 10_000
"""Open connections silent this many frames go dormant.  A SYN flood keeps its half-open connections
alive for seconds (SYN-ACK retransmissions at 1, 3, 7 ... s): short enough to keep only the handshakes
in progress in memory, long enough that a request and its reply do not go dormant in between."""


class Dormant:
    """The dormant connections' slot rows, by connection id."""

    def __init__(self, ident: np.dtype) -> None:
        self.dtype = np.dtype(
            [(name, np.int64) for name in ConnArrays.INT_COLUMNS]
            + [
                ("ev", np.int64, lib.EV_WIDTH),
                ("history", np.int8, lib.HISTORY_MAX),
                ("probes", np.int64, (2, RING, 2)),
                ("recent", np.int64, (2, RING, lib.SEG)),
                ("ack_frame", np.int64, (2, PEER_ACKS_KEPT)),
                ("ack_value", np.int64, (2, PEER_ACKS_KEPT)),
                ("ident", ident),
            ]
        )
        self._rows = RecordFile(self.dtype)
        self._at = np.zeros(0, dtype=np.int64)  # connection id -> its row, -1: not dormant
        self._free = np.zeros(0, dtype=np.int64)  # rows of connections that woke, written over next

    def __len__(self) -> int:
        return int(np.count_nonzero(self._at >= 0))

    def ids(self) -> np.ndarray:
        return np.flatnonzero(self._at >= 0)

    def put(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
            ident: np.ndarray) -> None:  # fmt: skip
        """These connections (in these slots) go dormant; the caller frees the slots."""
        rows = np.zeros(len(ids), self.dtype)
        for name in ConnArrays.INT_COLUMNS:
            rows[name] = arrays[name][slots]
        rows["ev"], rows["history"], rows["probes"] = columns.ev[slots], columns.history[slots], columns.probes[slots]
        rows["recent"] = columns.recent[slots]
        rows["ack_frame"], rows["ack_value"], rows["ident"] = acks.frame[slots], acks.ack[slots], ident[slots]
        self._at = fit(self._at, int(ids.max()) + 1, -1)
        reuse = min(len(ids), len(self._free))
        at, self._free = self._free[:reuse], self._free[reuse:]
        self._rows.put(at, rows[:reuse])
        self._at[ids] = np.concatenate([at, self._rows.append(rows[reuse:]) + np.arange(len(ids) - reuse)])

    def waking(self, ids: np.ndarray) -> np.ndarray:
        """Of these connection ids (any), the dormant ones, each once."""
        ids = ids[ids < len(self._at)]
        return np.unique(ids[self._at[ids] >= 0])

    def take(self, ids: np.ndarray, slots: np.ndarray, arrays: ConnArrays, columns: EventColumns, acks: AckRing,
             ident: np.ndarray) -> None:  # fmt: skip
        """Put these dormant connections back, into these (fresh) slots, as they were."""
        rows = self._rows.take(self._at[ids])
        self._free = np.concatenate([self._free, self._at[ids]])
        self._at[ids] = -1
        for name in ConnArrays.INT_COLUMNS:
            arrays[name][slots] = rows[name]
        columns.ev[slots], columns.history[slots], columns.probes[slots] = rows["ev"], rows["history"], rows["probes"]
        columns.recent[slots] = rows["recent"]
        acks.frame[slots], acks.ack[slots], ident[slots] = rows["ack_frame"], rows["ack_value"], rows["ident"]
