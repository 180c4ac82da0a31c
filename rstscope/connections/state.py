"""State table and history: what one segment does to its sender's state, and the letters it earns.

Every state change lives in this module, in :data:`TRANSITIONS` (and the two tables beside it for
Zeek's rules that look at the other side).  An unexpected transition becomes a finding on the
connection (``state.<event>_after_<state>``), never an exception.  The history alphabet is
:data:`HISTORY_LETTERS`.
"""

from __future__ import annotations

import enum

import numpy as np

from rstscope import packets as P
from rstscope.connections.records import EndpointState


class Event(enum.Enum):
    """What one segment does to its sender's state: one per segment, by precedence RST > FIN > SYN > data > ack.

    SYN segments are told apart by who sends them, as Zeek does: the originator's SYN opens, the
    responder's SYN (with or without ACK) answers.
    """

    # Members are singletons compared by identity; enum.Enum would hash the name in Python, which the
    # state table lookups of the event pass pay for on every row.
    __hash__ = object.__hash__

    SYN = "syn"
    """SYN without ACK from the originator."""
    SYN_ACK = "syn_ack"
    """SYN from the responder: its SYN-ACK, or a bare SYN (simultaneous open)."""
    ORIG_SYN_ACK = "orig_syn_ack"
    """SYN-ACK from the originator (it was kept as originator although it answered a SYN)."""
    DATA = "data"
    """Payload, no SYN, FIN or RST."""
    ACK = "ack"
    """No payload, no SYN, FIN or RST."""
    FIN = "fin"
    RST = "rst"


S, E = EndpointState, Event
TRANSITIONS: dict[tuple[EndpointState, Event], EndpointState] = {
    # Handshake (Zeek: UpdateInactiveState, UpdateSYN_SentState).
    (S.INACTIVE, E.SYN): S.SYN_SENT,
    (S.INACTIVE, E.ORIG_SYN_ACK): S.SYN_ACK_SENT,
    (S.INACTIVE, E.SYN_ACK): S.ESTABLISHED,  # and the peer, if in SYN_SENT (PEER_EFFECTS)
    (S.SYN_SENT, E.SYN): S.SYN_SENT,  # SYN retransmitted
    (S.SYN_SENT, E.ACK): S.SYN_SENT,  # an ACK of nothing: only the SYN-ACK establishes
    (S.SYN_ACK_SENT, E.ORIG_SYN_ACK): S.SYN_ACK_SENT,
    (S.SYN_ACK_SENT, E.ACK): S.SYN_ACK_SENT,
    # Capture started mid-connection (see PEER_RULES for the exceptions).
    (S.INACTIVE, E.ACK): S.PARTIAL,
    (S.INACTIVE, E.DATA): S.PARTIAL,
    (S.PARTIAL, E.ACK): S.PARTIAL,
    (S.PARTIAL, E.DATA): S.PARTIAL,
    (S.PARTIAL, E.SYN): S.PARTIAL,
    (S.PARTIAL, E.SYN_ACK): S.PARTIAL,
    # Steady state.
    (S.ESTABLISHED, E.ACK): S.ESTABLISHED,
    (S.ESTABLISHED, E.DATA): S.ESTABLISHED,
    (S.ESTABLISHED, E.SYN): S.ESTABLISHED,  # SYN retransmitted after the SYN-ACK
    (S.ESTABLISHED, E.SYN_ACK): S.ESTABLISHED,  # SYN-ACK retransmitted
    # Closing: a FIN from any state but RESET closes that side; ACKs and FINs after it are normal.
    (S.INACTIVE, E.FIN): S.CLOSED,
    (S.SYN_SENT, E.FIN): S.CLOSED,
    (S.SYN_ACK_SENT, E.FIN): S.CLOSED,
    (S.PARTIAL, E.FIN): S.CLOSED,
    (S.ESTABLISHED, E.FIN): S.CLOSED,
    (S.CLOSED, E.FIN): S.CLOSED,  # FIN retransmitted
    (S.CLOSED, E.ACK): S.CLOSED,
    # Reset: from any state (but see PEER_RULES for a RST after both FINs).
    (S.INACTIVE, E.RST): S.RESET,
    (S.SYN_SENT, E.RST): S.RESET,
    (S.SYN_ACK_SENT, E.RST): S.RESET,
    (S.PARTIAL, E.RST): S.RESET,
    (S.ESTABLISHED, E.RST): S.RESET,
    (S.CLOSED, E.RST): S.RESET,
    (S.RESET, E.RST): S.RESET,  # echoes: a side that reset answers later segments with RSTs
}
"""Sender state x event -> new sender state.  A pair not listed is unexpected (Zeek logs most of them
as a "weird", e.g. data before the SYN-ACK, SYN after a FIN, data after a RST): the state does not
change and a ``<event>_after_<state>`` finding is recorded."""

PEER_RULES: dict[tuple[EndpointState, Event, EndpointState], EndpointState] = {
    # The SYN-ACK was captured, the SYN was not: the originator's first ACK establishes it.
    (S.INACTIVE, E.ACK, S.ESTABLISHED): S.ESTABLISHED,
    (S.INACTIVE, E.DATA, S.ESTABLISHED): S.ESTABLISHED,
    # Some stacks ACK a SYN before sending their SYN-ACK: that ACK is not a partial connection.
    (S.INACTIVE, E.ACK, S.SYN_SENT): S.INACTIVE,
    # A SYN after mid-stream segments, the peer silent so far: the connection starts over.
    (S.PARTIAL, E.SYN, S.INACTIVE): S.SYN_SENT,
    # A RST after both sides sent a FIN leaves the FIN exchange standing (the connection closed normally).
    (S.CLOSED, E.RST, S.CLOSED): S.CLOSED,
}
"""Sender state x event x peer state -> new sender state: the cases where Zeek looks at the peer.
Checked before :data:`TRANSITIONS`."""

PEER_EFFECTS: dict[tuple[EndpointState, Event, EndpointState, EndpointState | None], EndpointState] = {
    # The responder's SYN-ACK establishes the originator that sent the SYN (or the SYN-ACK, when reversed).
    (S.INACTIVE, E.SYN_ACK, S.SYN_SENT, None): S.ESTABLISHED,
    (S.INACTIVE, E.SYN_ACK, S.SYN_ACK_SENT, None): S.ESTABLISHED,
    # The peer sent a FIN and then a RST; now this side's FIN: that was a normal close after all.
    (S.ESTABLISHED, E.FIN, S.RESET, S.CLOSED): S.CLOSED,
    (S.PARTIAL, E.FIN, S.RESET, S.CLOSED): S.CLOSED,
}
"""Sender's old state x event x peer state x peer's previous state (None: any) -> the peer's new state."""
del S, E


HISTORY_LETTERS = {
    "S": "SYN without ACK",
    "H": "SYN-ACK (the handshake reply)",
    "A": "pure ACK (no payload, no SYN/FIN/RST)",
    "D": "segment with payload (no SYN/FIN/RST)",
    "F": "FIN",
    "R": "RST",
    "T": "retransmitted payload (again at 10, 100, ... occurrences)",
    "W": "zero window advertised (again at 10, 100, ...)",
    "I": "inconsistent flags (FIN and RST together)",
    "Q": "multi-flag SYN (SYN with FIN or RST)",
    "^": "the originator is not the sender of the first packet (Zeek's direction flip)",
}
"""Zeek's history alphabet (``Conn::Info$history``): upper case for the originator, lower case for
the responder.  Zeek's rules, one per letter kind:

* A segment with two or more of SYN, FIN, RST gives only ``I`` (FIN and RST) or ``Q`` (otherwise).
* A, D, I and Q appear at most once per side.
* S and H (one kind), F and R each appear again only when the sequence number differs from the
  previous such segment of that side (for F: the sequence number after the segment's payload).
* T and W are logged on a log scale: at the 1st, 10th, 100th ... occurrence per side.  A zero window
  does not count with a RST, from a side that reset, or after the peer's FIN; a retransmission does
  not count from a side that reset.
* Zeek's ``C`` (bad checksum) and ``G`` (content gap) are never written: checksums are not verified
  and segments are not reassembled.

The compiled event loop (``event_loop.c``) writes the letters by these rules."""


def events_of(side: np.ndarray, flags: np.ndarray, payload: np.ndarray) -> np.ndarray:
    """Per segment, its :class:`Event`'s index in ``list(Event)``: by precedence RST > FIN > SYN > data > ack."""
    code = {e: i for i, e in enumerate(Event)}
    syn_event = np.where(
        side == 1, code[Event.SYN_ACK], np.where(flags & P.ACK, code[Event.ORIG_SYN_ACK], code[Event.SYN])
    )
    return np.select(
        [(flags & P.RST) != 0, (flags & P.FIN) != 0, (flags & P.SYN) != 0, payload > 0],
        [code[Event.RST], code[Event.FIN], syn_event, code[Event.DATA]],
        code[Event.ACK],
    ).astype(np.int64)


def tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three state tables as int8 arrays indexed by ``list(EndpointState)`` and ``list(Event)``
    positions (-1: no entry), for the compiled event loop: transitions [state, event], peer rules
    [state, event, peer], peer effects [state, event, peer, peer's previous state or len(states) for any]."""
    si = {st: i for i, st in enumerate(EndpointState)}
    ei = {e: i for i, e in enumerate(Event)}
    ns, ne = len(si), len(ei)
    transitions = np.full((ns, ne), -1, np.int8)
    for (st, e), new in TRANSITIONS.items():
        transitions[si[st], ei[e]] = si[new]
    peer_rules = np.full((ns, ne, ns), -1, np.int8)
    for (st, e, peer), new in PEER_RULES.items():
        peer_rules[si[st], ei[e], si[peer]] = si[new]
    effects = np.full((ns, ne, ns, ns + 1), -1, np.int8)
    for (st, e, peer, prev), new in PEER_EFFECTS.items():
        effects[si[st], ei[e], si[peer], ns if prev is None else si[prev]] = si[new]
    return transitions, peer_rules, effects
