"""Connections: from packet rows to per-connection state, history and RST observations.

The stages, one module each, in the order a chunk of rows goes through them:

============  ========================================================================================
keys          4-tuple keys (symmetric: A->B and B->A are one key), connection instances on one tuple
              (port reuse), the originator rule, Zeek's timers (``conns``)
sequence      the vectorised pass: unwrapped sequence and ack positions, snd_nxt, what the peer acked,
              retransmissions, keepalive probes, in flight; carried per connection between chunks;
              which rows are *events*
events        the event rows in capture order, one compiled loop per chunk (``event_loop.c``, built at
              install by cffi): history, the state table, findings, what each RST saw
state         the endpoint state table (every state change lives there) and the history alphabet
retire        closed, idle connections retire to a spill file of rows: memory follows the connections
              alive at once, not the size of the capture
tracker       :class:`Tracker`, which drives them; ``finish()`` gives a :class:`ConnectionStore`
rows          a connection as compact rows (while retired) and as the records again (when read)
records       the records all this produces (:class:`Connection`, :class:`RstObservation`, ...)
============  ========================================================================================

Instances are numbered 0, 1, 2, ... in the order they start, like Wireshark's ``tcp.stream`` (which
this id mirrors) and Zeek's uid.

Limitations: segments are not reassembled and checksums are not verified; IP fragments are skipped by
the reader; a connection whose SYN was reordered behind its first data may be split in two.
"""

from rstscope.connections.records import (
    Connection,
    EndpointState,
    Finding,
    Phase,
    RstObservation,
    SegmentAfterReset,
    Side,
    TtlRange,
)
from rstscope.connections.retire import ConnectionStore
from rstscope.connections.state import HISTORY_LETTERS, PEER_EFFECTS, PEER_RULES, TRANSITIONS, Event
from rstscope.connections.tracker import Tracker

__all__ = [
    "HISTORY_LETTERS",
    "PEER_EFFECTS",
    "PEER_RULES",
    "TRANSITIONS",
    "Connection",
    "ConnectionStore",
    "EndpointState",
    "Event",
    "Finding",
    "Phase",
    "RstObservation",
    "SegmentAfterReset",
    "Side",
    "Tracker",
    "TtlRange",
]
