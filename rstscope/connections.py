"""Connections: from packet rows to per-connection state, history and RST observations.

Keys.  A connection is keyed by its 4-tuple, symmetrically: A->B and B->A land
on the same key (the two endpoints are ordered by address, then port).  One
4-tuple can carry several connections over time (port reuse): a new
connection *instance* starts at a SYN without ACK whose sequence number differs
from the tuple's previous SYN (a retransmitted SYN keeps its ISN) or that follows
a FIN or RST on the tuple -- unless an earlier SYN-ACK acknowledged exactly that
SYN -- and at the very first packet of a tuple.  Instances are numbered 0, 1,
2, ... in the order they start, like Wireshark's ``tcp.stream`` (which this id
mirrors) and Zeek's uid.  With ``zeek_timers`` (for ``conns``), Zeek's timers
also end connections (see :meth:`Tracker._timer_splits`).

Originator.  The sender of the instance's first SYN.  When the capture starts
with the SYN-ACK, its receiver.  When no handshake was captured, a heuristic
(``originator_inferred`` is then True): the sender of the first packet, unless
its source port is below 1024 and the destination port is not (or both are and
the source port is the lower), in which case the first packet is taken to come
from the server (Zeek's rule).  When the originator is not the first packet's
sender, the history starts with ``^``.

How it works.  Each chunk of packets is processed in two passes:

1. *Vectorised*: rows are sorted by connection; running values per direction
   are computed for every row with numpy (unwrapped sequence and ack positions,
   the sender's ``snd_nxt`` before the row, the highest ack the peer had sent,
   retransmissions, the peer segment the row follows) and carried over to the
   next chunk per connection.  Bulk data never leaves numpy.
2. *Event pass*: only the rows that change something a person cares about —
   SYN/FIN/RST, the first data and first pure ACK of each direction, the rows
   where the retransmission or zero-window count reaches 1, 10, 100..., every
   row of a connection's first ``EARLY_PACKETS`` and every row after its first
   FIN or RST — go through :meth:`Tracker._event` in capture order, which runs
   the endpoint state table, writes the history and records each RST.

Every state change lives in this file, in :data:`TRANSITIONS` (and the two
tables beside it for Zeek's rules that look at the other side).  An unexpected
transition becomes a finding on the connection (``Finding``), never an
exception.

Memory.  Per-connection state lives in numpy columns addressed by *slot*.  A
connection that closed (FIN or RST) and then saw no packet for
``STALE_AFTER_FRAMES`` frames retires: its summary goes to a spill file, its
slot is reused and its 4-tuple forgotten.  Memory therefore follows the
connections alive at once, not the size of the capture.

Limitations: segments are not reassembled and checksums are not verified;
IP fragments are skipped by the reader; a connection whose SYN was reordered
behind its first data may be split in two.
"""

from __future__ import annotations

import enum
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from rstscope import packets as P
from rstscope.grouped import NONE, Groups
from rstscope.seqnum import SEQ_MOD, seq_diff_array

FEED_ROWS = 32_768
"""Rows tracked at once: the temporaries of a 32K-row slice stay in the CPU caches (measured: 16 %
faster than 64K rows, and 2x smaller steps are slower again)."""
EARLY_PACKETS = 4
RECENT_SEGMENTS = 16
SPILL_BATCH = 10_000
"""Retired connections are written to the spill file in batches of this many (about 25 MB in memory)."""
STALE_AFTER_FRAMES = 100_000
"""A connection's recent segments are forgotten once this many frames went by without one of its event
rows: a later RST cannot be answering them.  This also keeps closed connections small."""
PEER_ACKS_KEPT = 8
"""Per connection side, the last ACK segments (frame, ack) kept across chunks: at a RST, the peer's last
ACKs tell which of them the sender had seen when it reset (see evidence.py, "In flight")."""
AFTER_RESET_KEPT = 16
"""Segments kept after a connection's first RST: whether the supposed sender went on sending and the
receiver went on with the connection tells a forged or ignored RST from a real one."""
PROBES_KEPT = 16
"""Keepalive probes kept per side (the last ones)."""


class Side(enum.IntEnum):
    ORIG = 0
    """The originator: sent the first SYN (the client)."""
    RESP = 1
    """The responder: answered the SYN (the server)."""

    @property
    def peer(self) -> Side:
        return Side(1 - self)

    @property
    def role(self) -> str:
        return "client" if self is Side.ORIG else "server"


class EndpointState(enum.Enum):
    """One endpoint's TCP state as seen from the wire: Zeek's endpoint states, with Zeek's transitions.

    Zeek's ``conn_state`` (see :mod:`rstscope.zeek`) is a function of the two endpoints' final states.
    """

    # Members are singletons compared by identity; enum.Enum would hash the name in Python, which the
    # state table lookups of the event pass pay for on every row.
    __hash__ = object.__hash__

    INACTIVE = "inactive"
    """Nothing sent yet (or only an ACK of the peer's SYN, before its SYN-ACK)."""
    SYN_SENT = "syn_sent"
    """The originator sent a SYN without ACK, and no SYN-ACK answered it yet."""
    SYN_ACK_SENT = "syn_ack_sent"
    """The originator sent a SYN-ACK (its SYN was not captured and its port did not look like a server's)."""
    PARTIAL = "partial"
    """Sent segments without a captured SYN (the capture started mid-connection)."""
    ESTABLISHED = "established"
    """The responder sent its SYN-ACK: both sides are established from that segment on (as in Zeek,
    the originator's third handshake segment changes nothing)."""
    CLOSED = "closed"
    """Sent a FIN."""
    RESET = "reset"
    """Sent a RST."""


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


class Phase(enum.Enum):
    """Where a connection stood when a RST was sent (from both endpoints' states)."""

    HANDSHAKE = "handshake"
    """No side has completed the handshake yet."""
    ESTABLISHED = "established"
    """Both sides past the handshake, nobody closed."""
    CLOSING = "closing"
    """One side sent a FIN."""
    CLOSED = "closed"
    """Both sides sent a FIN."""
    RESET = "reset"
    """A RST had already been sent by either side."""
    MIDSTREAM = "midstream"
    """The capture started after the handshake; nobody closed yet."""


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
  and segments are not reassembled."""


@dataclass(slots=True, kw_only=True)
class Finding:
    """A fact about a connection that did not fit the state table."""

    kind: str
    """Stable dotted id, e.g. ``state.data_after_reset``."""
    frame: int
    side: Side
    detail: str


@dataclass(slots=True, frozen=True)
class SegmentAfterReset:
    """A segment seen after the connection's first RST (sequence numbers relative, as in RstObservation)."""

    frame: int
    ts_ns: int
    side: Side
    flags: int
    seq: int
    ack: int | None
    """None without the ACK flag."""
    payload: int
    ttl: int
    ip_id: int


@dataclass(slots=True, frozen=True)
class TtlRange:
    """The IP TTL (hop limit) of one sender's non-RST packets at the capture point."""

    low: int
    high: int
    packets: int

    @classmethod
    def of(cls, low: int, high: int, packets: int) -> TtlRange | None:
        return cls(low, high, packets) if packets else None

    def merge(self, other: TtlRange | None) -> TtlRange:
        if other is None:
            return self
        return TtlRange(min(self.low, other.low), max(self.high, other.high), self.packets + other.packets)


@dataclass(slots=True, kw_only=True, frozen=True)
class RstObservation:
    """What the wire showed at one RST, before any interpretation (seq values relative to ISN)."""

    frame: int
    """1-based frame number of the RST."""
    ts_ns: int
    side: Side
    """Which side sent it."""
    flags: int
    seq: int
    """RST sequence number, relative to the sender's first sequence number (its ISN when the SYN was seen)."""
    ack: int | None
    """RST acknowledgment number relative to the peer's ISN, None without the ACK flag."""
    seq_raw: int
    snd_nxt: int | None
    """The sender's highest sequence sent before the RST (SYN and FIN count one), None if it sent nothing."""
    peer_acked: int | None
    """The highest ack the peer had sent before the RST (in the sender's sequence space), None if none."""
    sender_acked: int | None
    """The highest ack the sender had sent before the RST (in the peer's sequence space)."""
    peer_snd_nxt: int | None
    """The peer's highest sequence sent before the RST."""
    phase: Phase
    sender_state: EndpointState
    """The sender's state just before the RST."""
    peer_state: EndpointState
    sender_fin_frame: int | None
    """Frame of the sender's first FIN before the RST, None if it had not sent one."""
    peer_fin_frame: int | None
    sender_prior_rst_frame: int | None
    """Frame of the first RST this sender had already sent in this connection."""
    sender_first_payload_frame: int | None
    """Frame of the sender's first segment with payload, None if it had sent no payload before the RST."""
    answered_frame: int | None
    """The last segment the peer sent before this RST (what a reply-RST answers), None if none."""
    answered_flags: int | None
    answered_payload: int | None
    answered_ack: int | None
    """That segment's ack, relative to the sender's ISN (None without ACK)."""
    answered_seq: int | None
    """That segment's seq, relative to the peer's ISN."""
    peer_recent_acks: tuple[tuple[int, int], ...] = ()
    """(frame, ack relative to the sender's ISN) of the peer's last ACK segments before the RST."""
    ttl: int = 0
    """The RST's IP TTL (IPv6 hop limit) at the capture point."""
    ip_id: int = 0
    """The RST's IPv4 identification (0 for IPv6)."""
    tcp_auth: int = 0
    """TCP authentication option kind the RST carried (19 TCP-MD5, 29 TCP-AO), 0 none."""
    has_ts: bool = False
    """The RST carried a timestamps option (Linux's own active resets do when the connection uses them)."""
    prev_ip_id: int | None = None
    """IP ID of the sender's last segment before the RST (not a probe, not a RST), None if none."""
    window: int = 0
    """The RST's raw window field."""
    payload: int = 0
    """Payload bytes on the RST (RFC 1122 allows diagnostic text; it is not stream data)."""
    peer_last_ns: int | None = None
    """Capture time of the peer's last segment before the RST."""
    answered_idle_ns: int | None = None
    """Silence on the connection (both directions) just before the segment the RST follows."""
    keepalive_probes: tuple[tuple[int, int], ...] = ()
    """(frame, time) of the sender's keepalive probes since its last other segment.  A sender that keeps
    probing did not get the answers, whatever the capture point saw of them: Linux probes again only after
    KEEPINTVL when a probe went unanswered, after KEEPIDLE when it was answered."""


@dataclass(slots=True, kw_only=True)
class Connection:
    """One connection instance (one 4-tuple lifetime)."""

    id: int
    """0-based, in order of the first packet: ``tcp.stream eq <id>`` in Wireshark for simple captures."""
    orig_addr: str
    orig_port: int
    resp_addr: str
    resp_port: int
    ip_version: int
    originator_inferred: bool
    """True when no SYN or SYN-ACK told who the originator was (see the module docstring)."""
    first_frame: int
    start_ns: int
    end_ns: int = 0
    last_frame: int = 0
    history: list[str] = field(default_factory=list)
    state: list[EndpointState] = field(default_factory=lambda: [EndpointState.INACTIVE] * 2)
    prev_state: list[EndpointState] = field(default_factory=lambda: [EndpointState.INACTIVE] * 2)
    """Per side, the state before its last change (Zeek's ``prev_state``; one rule in PEER_EFFECTS needs it)."""
    findings: list[Finding] = field(default_factory=list)
    isn: list[int | None] = field(default_factory=lambda: [None, None])
    """Raw ISN per side, when its SYN / SYN-ACK was captured."""
    syn_frames: list[int] = field(default_factory=list)
    """Frames of the originator's SYNs (more than one = SYN retransmitted)."""
    synack_frames: list[int] = field(default_factory=list)
    """Frames of the responder's SYN-ACKs (more than one = SYN-ACK retransmitted)."""
    synack_after_ack_frames: list[int] = field(default_factory=list)
    """SYN-ACKs sent after the client had acknowledged one: the server never saw that ACK
    complete the handshake — typically a full accept queue dropped it."""
    handshake_ack_frame: int | None = None
    """The originator's first segment acknowledging the SYN-ACK."""
    fin_frame: list[int | None] = field(default_factory=lambda: [None, None])
    rst_frames: list[list[int]] = field(default_factory=lambda: [[], []])
    first_payload_frame: list[int | None] = field(default_factory=lambda: [None, None])
    resets: list[RstObservation] = field(default_factory=list)
    after_reset: list[SegmentAfterReset] = field(default_factory=list)
    """The first AFTER_RESET_KEPT segments (RSTs included) after the connection's first RST."""
    keepalive_probes: list[list[tuple[int, int]]] = field(default_factory=lambda: [[], []])
    """Per side, (frame, time) of its last PROBES_KEPT keepalive probes."""
    # Filled from the vectorised aggregates when the capture ends:
    packets: tuple[int, int] = (0, 0)
    payload_bytes: tuple[int, int] = (0, 0)
    """Payload bytes per side, retransmissions included."""
    stream_bytes: tuple[int, int] = (0, 0)
    """Sequence space covered per side (highest sequence sent minus the first), without SYN/FIN."""
    unacked_bytes: tuple[int | None, int | None] = (None, None)
    """Per side, bytes it sent that the peer never acknowledged in the capture (None if unknown)."""
    retransmissions: tuple[int, int] = (0, 0)
    zero_windows: tuple[int, int] = (0, 0)
    ttl: tuple[TtlRange | None, TtlRange | None] = (None, None)
    """Per side, the TTL range of its non-RST packets (None: it sent none)."""
    timestamped: tuple[int, int] = (0, 0)
    """Per side, how many of its non-RST packets carried a timestamps option."""
    # History bookkeeping (letters that repeat only on a new sequence number; log-scale letters).
    _last_flag_seq: list = field(default_factory=lambda: [None] * 6)
    """Per (S/H, F, R) x side: the sequence number of the last segment with that flag."""
    _uncounted: dict = field(default_factory=dict)
    """Per (letter, side), the occurrences Zeek does not count (see HISTORY_LETTERS): subtracted from the
    running count before the log scale is applied."""
    _recent: list[list[tuple]] = field(default_factory=lambda: [[], []])
    """Per side, the last RECENT_SEGMENTS event rows (frame, flags, seq_raw, ack_raw, payload, seq, ack):
    a reply-RST is matched to the segment it answers through them."""

    @property
    def orig(self) -> str:
        return _endpoint(self.orig_addr, self.orig_port)

    @property
    def resp(self) -> str:
        return _endpoint(self.resp_addr, self.resp_port)

    def endpoint(self, side: Side) -> str:
        return self.orig if side is Side.ORIG else self.resp

    @property
    def history_text(self) -> str:
        return "".join(self.history)

    @property
    def saw_syn(self) -> bool:
        return bool(self.syn_frames)

    @property
    def saw_synack(self) -> bool:
        return bool(self.synack_frames)

    def phase(self) -> Phase:
        o, r = self.state
        if EndpointState.RESET in (o, r):
            return Phase.RESET
        closed = (o is EndpointState.CLOSED) + (r is EndpointState.CLOSED)
        if closed == 2:
            return Phase.CLOSED
        if closed == 1:
            return Phase.CLOSING
        if EndpointState.PARTIAL in (o, r) or (not self.syn_frames and not self.synack_frames):
            return Phase.MIDSTREAM
        if o is EndpointState.ESTABLISHED:
            return Phase.ESTABLISHED
        return Phase.HANDSHAKE


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def _event_of(side: Side, flags: int, payload: int) -> Event:
    if flags & P.RST:
        return Event.RST
    if flags & P.FIN:
        return Event.FIN
    if flags & P.SYN:
        if side is Side.RESP:
            return Event.SYN_ACK
        return Event.ORIG_SYN_ACK if flags & P.ACK else Event.SYN
    return Event.DATA if payload else Event.ACK


def _set_state(c: Connection, s: int, new: EndpointState) -> None:
    if c.state[s] is not new:
        c.prev_state[s] = c.state[s]
        c.state[s] = new


_SIDES = (Side.ORIG, Side.RESP)


def _history(c: Connection, side: Side, flags: int, payload: int, seq_raw: int, is_pure_ack: bool) -> None:
    """Append the letter(s) one segment earns, by Zeek's rules (see :data:`HISTORY_LETTERS`)."""
    hist = c.history
    upper = side is Side.ORIG
    control = flags & (P.SYN | P.FIN | P.RST)
    if control & (control - 1):  # two or more of SYN, FIN, RST: only I or Q, once
        ch = "i" if flags & P.FIN and flags & P.RST else "q"
        _letter_once(hist, ch.upper() if upper else ch)
    elif control:
        # S/H, F and R repeat only with a new sequence number; S and H share one key, as in Zeek.
        if control == P.SYN:
            kind, ch, number = "s", ("h" if flags & P.ACK else "s"), seq_raw
        elif control == P.FIN:
            kind, ch, number = "f", "f", (seq_raw + payload) % SEQ_MOD  # a FIN's number follows its payload
        else:
            kind, ch, number = "r", "r", seq_raw
        key = "sfr".index(kind) * 2 + side
        if c._last_flag_seq[key] != number:
            hist.append(ch.upper() if upper else ch)
        c._last_flag_seq[key] = number
    elif payload:
        _letter_once(hist, "D" if upper else "d")
    elif is_pure_ack:
        _letter_once(hist, "A" if upper else "a")


def _letter_once(hist: list[str], letter: str) -> None:
    if letter not in hist:
        hist.append(letter)


def _scaled_letter(c: Connection, side: Side, ch: str, count: int, *, ignored: bool) -> None:
    """A T or W letter at the 1st, 10th, 100th ... occurrence that Zeek counts.

    ``count`` is the side's running count of such rows, this one included (0: this row is not one).
    Rows Zeek ignores (``ignored``) are counted in ``Connection._uncounted`` and taken off."""
    if not count:
        return
    key = (ch, side)
    if ignored:
        c._uncounted[key] = c._uncounted.get(key, 0) + 1
        return
    n = count - c._uncounted.get(key, 0)
    while n >= 10 and n % 10 == 0:
        n //= 10
    if n == 1:  # the 1st, 10th, 100th ... counted occurrence
        c.history.append(ch.upper() if side is Side.ORIG else ch)


def _stale(recent: list[list[tuple]], frame: int) -> bool:
    last = max(recent[0][-1][0] if recent[0] else 0, recent[1][-1][0] if recent[1] else 0)
    return 0 < last < frame - STALE_AFTER_FRAMES


def _none(value: int) -> int | None:
    return None if value == NONE else int(value)


class _ConnArrays:
    """Per-connection carried state for the vectorised pass, one *slot* per live connection.

    A connection's slot is freed when it retires (see ``Tracker._retire_idle``), so these arrays grow
    with the connections alive at once, not with all the connections of the capture."""

    INT_COLUMNS = (
        "orig_is_a",  # 1 if canonical endpoint A is the originator
        "anchor_raw0", "anchor_val0", "anchor_raw1", "anchor_val1",  # seq-space anchor per side (-1 raw: none)
        "last_seq_raw0", "last_seq_raw1",  # previous raw seq per side (for unwrapping), -1 none
        "last_seq_val0", "last_seq_val1",
        "last_ack_raw0", "last_ack_raw1",  # previous raw ack per side (ACK segments only), -1 none
        "last_ack_val0", "last_ack_val1",
        "max_end0", "max_end1",  # highest seq_end per side (NONE: nothing sent)
        "max_ack0", "max_ack1",  # highest ack per side (NONE)
        "pkts0", "pkts1", "bytes0", "bytes1", "retx0", "retx1", "zw0", "zw1", "old0", "old1",
        "seen_data0", "seen_data1", "seen_pure_ack0", "seen_pure_ack1",
        "closing",  # a FIN or RST was seen
        "skipped",  # rows went by without the event pass after the connection's last event row
        "last_frame0", "last_frame1", "last_flags0", "last_flags1", "last_len0", "last_len1",
        "last_ackrel0", "last_ackrel1", "last_seqrel0", "last_seqrel1",
        "first_ns", "last_ns", "first_seq_val0", "first_seq_val1", "last_frame",
        "ttl_min0", "ttl_min1", "ttl_max0", "ttl_max1", "ttl_n0", "ttl_n1",  # non-RST packets per side
        "ts_n0", "ts_n1",  # non-RST packets per side with a timestamps option
        "last_plain_ip_id0", "last_plain_ip_id1",  # IP ID of the side's last plain segment (-1 none)
        "last_ns0", "last_ns1",  # time of the side's last segment (NONE)
        "last_gap0", "last_gap1",  # silence on the connection before the side's last segment
        "last_plain_frame0", "last_plain_frame1",  # the side's last segment that was neither a probe nor a RST
    )  # fmt: skip
    DEFAULTS: ClassVar[dict[str, int]] = {
        "anchor_raw0": -1, "anchor_raw1": -1, "last_seq_raw0": -1, "last_seq_raw1": -1,
        "last_ack_raw0": -1, "last_ack_raw1": -1, "max_end0": NONE, "max_end1": NONE,
        "max_ack0": NONE, "max_ack1": NONE, "last_frame0": -1, "last_frame1": -1,
        "last_ackrel0": NONE, "last_ackrel1": NONE, "last_seqrel0": NONE, "last_seqrel1": NONE,
        "first_seq_val0": NONE, "first_seq_val1": NONE, "ttl_min0": 256, "ttl_min1": 256, "ttl_max0": -1,
        "ttl_max1": -1, "last_ns0": NONE, "last_ns1": NONE,
        "last_plain_frame0": -1, "last_plain_frame1": -1, "last_plain_ip_id0": -1, "last_plain_ip_id1": -1,
    }  # fmt: skip

    def __init__(self) -> None:
        self.size = 0
        self.capacity = 1024
        self.cols = {name: self._new(name, self.capacity) for name in self.INT_COLUMNS}
        self.free: list[int] = []
        """Slots of retired connections, reused by new ones."""

    def allocate(self, k: int) -> np.ndarray:
        """``k`` slots for new connections, every column at its default."""
        reused = self.free[len(self.free) - k :] if k else []
        del self.free[len(self.free) - len(reused) :]
        fresh = k - len(reused)
        self.grow(fresh)
        slots = np.array(reused + list(range(self.size - fresh, self.size)), dtype=np.int64)
        if reused:
            for name, col in self.cols.items():
                col[slots[: len(reused)]] = self.DEFAULTS.get(name, 0)
        return slots

    def _new(self, name: str, n: int) -> np.ndarray:
        return np.full(n, self.DEFAULTS.get(name, 0), dtype=np.int64)

    def grow(self, n_new: int) -> None:
        need = self.size + n_new
        if need > self.capacity:
            cap = max(need, self.capacity * 2)
            for name, old in self.cols.items():
                new = self._new(name, cap)
                new[: self.size] = old[: self.size]
                self.cols[name] = new
            self.capacity = cap
        self.size = need

    def __getitem__(self, name: str) -> np.ndarray:
        return self.cols[name]


class Tracker:
    """Feeds on packet chunks in capture order; ``finish()`` returns the connections."""

    def __init__(self, *, zeek_timers: bool = False) -> None:
        """``zeek_timers``: also end connections the way Zeek's timers do (see :meth:`_timer_splits`)."""
        self.zeek_timers = zeek_timers
        self._timer_state: dict[str, np.ndarray] = {}
        self._tuple_ids: dict[bytes, int] = {}
        self._tuple_conn = np.full(1024, -1, dtype=np.int64)  # current connection per tuple
        self._tuple_syn = np.full(1024, -1, dtype=np.int64)  # last pure-SYN seq per tuple, -1 none
        self._tuple_closed = np.zeros(1024, dtype=np.int64)  # a FIN or RST since the tuple's last SYN
        self._tuple_synack_ack = np.full(1024, -1, dtype=np.int64)  # ack of the tuple's last SYN-ACK, -1 none
        self._arrays = _ConnArrays()
        # Last PEER_ACKS_KEPT ACK segments per connection side: frame and ack, oldest first (-1: none).
        self._ack_ring_frame = np.full((1024, 2, PEER_ACKS_KEPT), -1, dtype=np.int64)
        self._ack_ring_ack = np.full((1024, 2, PEER_ACKS_KEPT), NONE, dtype=np.int64)
        self._rst_peer_acks: dict[int, tuple[tuple[int, int], ...]] = {}
        self._rst_state: dict[int, tuple] = {}
        self.host_ttl: dict[str, TtlRange] = {}
        """Per responder address, the TTL range of its non-RST packets over all its connections (a host
        baseline for a RST on a connection where that host sent nothing else, e.g. at the SYN)."""
        self._reset_ids: set[int] = (
            set()
        )  # connections that saw a RST  # frame -> what the event pass needs about that RST
        self._next_sweep = STALE_AFTER_FRAMES
        self._swept_cutoff = 0
        self._next_tid = 0
        self._tuple_keys: list[bytes | None] = []  # tid -> key, None once forgotten
        self._slot_of = np.full(1024, -1, dtype=np.int64)  # connection id -> slot, -1 once retired
        self._tuple_of = np.full(1024, -1, dtype=np.int64)  # connection id -> tuple id
        self._conn_of_slot = np.full(1024, -1, dtype=np.int64)  # slot -> connection id, -1 free
        self._spill = _Spill()
        self.connections: list[Connection] = []
        self.skipped_decode_errors = 0

    # ----------------------------------------------------------------- pass 1
    def feed(self, chunk: np.ndarray) -> None:
        good = chunk["decode_error"] == 0
        self.skipped_decode_errors += int(len(chunk) - good.sum())
        rows = chunk[good] if not good.all() else chunk
        for start in range(0, len(rows), FEED_ROWS):
            self._feed(rows[start : start + FEED_ROWS])

    def _tuple_index(self, rows: np.ndarray):
        """Canonical endpoint order, tuple ids, and the order that groups rows by tuple."""
        s_hi, s_lo, s_p = rows["src_hi"], rows["src_lo"], rows["src_port"].astype(np.uint64)
        d_hi, d_lo, d_p = rows["dst_hi"], rows["dst_lo"], rows["dst_port"].astype(np.uint64)
        ipv4_only = not (s_hi.any() or d_hi.any())  # IPv4-mapped: the high halves are all zero
        if ipv4_only:
            src_is_a = (s_lo < d_lo) | ((s_lo == d_lo) & (s_p <= d_p))
        else:
            src_is_a = (s_hi < d_hi) | ((s_hi == d_hi) & ((s_lo < d_lo) | ((s_lo == d_lo) & (s_p <= d_p))))
        a_lo, b_lo = np.where(src_is_a, s_lo, d_lo), np.where(src_is_a, d_lo, s_lo)
        ports = np.where(src_is_a, (s_p << np.uint64(16)) | d_p, (d_p << np.uint64(16)) | s_p)
        # A 64-bit hash groups the rows in one sort; equal keys are verified below.
        h = a_lo * np.uint64(0xC2B2AE3D27D4EB4F)
        h ^= b_lo * np.uint64(0xD6E8FEB86659FD93) + (h >> np.uint64(27))
        h ^= ports * np.uint64(0xFF51AFD7ED558CCD) + (h >> np.uint64(33))
        # The tunnel identifier (VNI, GRE key, ERSPAN session) is part of the key: tenants may reuse addresses.
        tunnel = rows["tunnel_id"]
        tunnelled = tunnel.any()
        if tunnelled:
            h ^= tunnel * np.uint64(0x94D049BB133111EB) + (h >> np.uint64(30))
        if ipv4_only:
            columns = (s_hi, a_lo, s_hi, b_lo, ports, tunnel)  # s_hi: zeros, only for the key's shape
            checked = (a_lo, b_lo, ports, tunnel) if tunnelled else (a_lo, b_lo, ports)
        else:
            a_hi, b_hi = np.where(src_is_a, s_hi, d_hi), np.where(src_is_a, d_hi, s_hi)
            h ^= a_hi * np.uint64(0x9E3779B97F4A7C15) + (h >> np.uint64(29))
            h ^= b_hi * np.uint64(0x165667B19E3779F9) + (h >> np.uint64(31))
            columns = (a_hi, a_lo, b_hi, b_lo, ports, tunnel)
            checked = columns if tunnelled else columns[:-1]
        order = np.argsort(h, kind="stable")
        hs = h[order]
        start = np.ones(len(order), dtype=bool)
        start[1:] = hs[1:] != hs[:-1]
        same_hash = ~start[1:]
        if any((sc[1:] != sc[:-1])[same_hash].any() for sc in (c[order] for c in checked)):
            # A hash collision inside this chunk: group exactly instead.
            order = np.lexsort(columns[::-1])
            sorted_columns = [c[order] for c in columns]
            start = np.ones(len(order), dtype=bool)
            start[1:] = np.logical_or.reduce([sc[1:] != sc[:-1] for sc in sorted_columns])
        groups = Groups(start)
        ks = np.ascontiguousarray(np.stack([c[order[groups.first_pos]] for c in columns], axis=1))
        tids = np.empty(groups.count, dtype=np.int64)
        ids = self._tuple_ids
        for g, key in enumerate(ks.view(np.dtype((np.void, ks.shape[1] * 8))).ravel().tolist()):  # 48-byte keys
            tid = ids.get(key)
            if tid is None:
                tid = ids[key] = self._next_tid
                self._next_tid += 1
                self._tuple_keys.append(key)
            tids[g] = tid
        if self._next_tid > len(self._tuple_conn):
            grow = max(self._next_tid, 2 * len(self._tuple_conn)) - len(self._tuple_conn)
            self._tuple_conn = np.concatenate([self._tuple_conn, np.full(grow, -1, dtype=np.int64)])
            self._tuple_syn = np.concatenate([self._tuple_syn, np.full(grow, -1, dtype=np.int64)])
            self._tuple_closed = np.concatenate([self._tuple_closed, np.zeros(grow, dtype=np.int64)])
            self._tuple_synack_ack = np.concatenate([self._tuple_synack_ack, np.full(grow, -1, dtype=np.int64)])
        return src_is_a, order, groups, tids

    def _feed(self, rows: np.ndarray) -> None:
        src_is_a, order, tgroups, tids = self._tuple_index(rows)
        # Columns grouped by tuple, capture order inside each group (gathering whole rows is far slower).
        n = len(order)
        flags = rows["flags"][order].astype(np.int64)
        seq = rows["seq"][order].astype(np.int64)
        ack_raw = rows["ack"][order].astype(np.int64)
        plen = rows["payload_len"][order].astype(np.int64)
        ts = rows["ts_ns"][order]
        frame = rows["frame"][order].astype(np.int64)
        window = rows["window"][order]
        ttl = rows["ttl"][order].astype(np.int64)
        ip_ids = rows["ip_id"][order].astype(np.int64)
        has_ts = rows["has_ts"][order]
        a_side = src_is_a[order]
        tid = tids[tgroups.gi]

        # --- connection instances (port reuse) -------------------------------------
        # A SYN without ACK starts a new connection when its ISN is new, or when a FIN or RST was seen
        # since the tuple's previous SYN -- unless an earlier SYN-ACK already acknowledged exactly this
        # SYN (the capture saw the SYN-ACK first).  Zeek draws the same lines.
        # Only SYN, SYN-ACK, FIN and RST rows matter here: work on those few positions.
        control = flags & (P.SYN | P.ACK | P.RST)
        syn_pos = np.flatnonzero(control == P.SYN)
        synack_pos = np.flatnonzero(control == (P.SYN | P.ACK))
        close_pos = np.flatnonzero(flags & (P.FIN | P.RST))
        gi, group_first, group_last = tgroups.gi, tgroups.first_pos, tgroups.last_pos
        cur = self._tuple_conn[tids]  # per tuple group: the connection carried from earlier chunks
        new_inst = np.zeros(n, dtype=bool)
        new_inst[group_first[cur < 0]] = True  # a tuple's very first packet
        if len(syn_pos):
            g = gi[syn_pos]
            same = np.zeros(len(syn_pos), dtype=bool)
            same[1:] = g[1:] == g[:-1]  # the previous SYN of the same tuple is in this chunk
            prev = np.concatenate([[0], syn_pos[:-1]])
            prev_syn_seq = np.where(same, seq[prev], self._tuple_syn[tids[g]])
            since = np.where(same, prev, group_first[g])
            closes_between = np.searchsorted(close_pos, syn_pos) - np.searchsorted(close_pos, since)
            closed_since_syn = (closes_between > 0) | (~same & (self._tuple_closed[tids[g]] > 0))
            synack_ack = self._tuple_synack_ack[tids[g]]
            if len(synack_pos):  # a SYN-ACK of the same tuple earlier in this chunk overrides the carried one
                k = np.maximum(np.searchsorted(synack_pos, syn_pos) - 1, 0)
                in_chunk = (synack_pos[k] < syn_pos) & (gi[synack_pos[k]] == g)
                synack_ack = np.where(in_chunk, ack_raw[synack_pos[k]], synack_ack)
            acked_by_synack = (synack_ack >= 0) & ((synack_ack - 1) % SEQ_MOD == seq[syn_pos])
            new_inst[syn_pos] |= ~acked_by_synack & ((prev_syn_seq != seq[syn_pos]) | closed_since_syn)
            # Carry, per tuple: its last SYN's seq, and whether a FIN or RST came after it.
            last = np.ones(len(syn_pos), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            last_syn, last_g = syn_pos[last], g[last]
            self._tuple_syn[tids[last_g]] = seq[last_syn]
            closes_after = np.searchsorted(close_pos, group_last[last_g], side="right") - np.searchsorted(
                close_pos, last_syn
            )
            self._tuple_closed[tids[last_g]] = closes_after > 0
            no_syn = np.ones(tgroups.count, dtype=bool)
            no_syn[last_g] = False
        else:
            no_syn = np.ones(tgroups.count, dtype=bool)
        closes_in_group = np.searchsorted(close_pos, group_last, side="right") - np.searchsorted(close_pos, group_first)
        self._tuple_closed[tids[no_syn]] |= closes_in_group[no_syn] > 0
        if len(synack_pos):
            g = gi[synack_pos]
            last = np.ones(len(synack_pos), dtype=bool)
            last[:-1] = g[1:] != g[:-1]
            self._tuple_synack_ack[tids[g[last]]] = ack_raw[synack_pos[last]]
        if self.zeek_timers:
            new_inst = self._timer_splits(new_inst, tgroups, tids, tid, ts.astype(np.int64), flags, a_side)
        # Connection ids: new ones in order of their first packet; each segment repeats its id.
        new_pos = np.flatnonzero(new_inst)
        new_pos = new_pos[np.argsort(order[new_pos], kind="stable")]
        first_id = len(self.connections)
        seg_start = np.union1d(group_first, new_pos)
        seg_conn = cur[gi[seg_start]]
        seg_conn[np.searchsorted(seg_start, new_pos)] = first_id + np.arange(len(new_pos))
        conn_id = np.repeat(seg_conn, np.diff(np.append(seg_start, n)))
        self._tuple_conn[tids] = conn_id[group_last]

        arr = self._arrays
        new_ids = first_id + np.arange(len(new_pos))
        new_slots = arr.allocate(len(new_pos))
        self._slot_of = _fit(self._slot_of, first_id + len(new_pos), -1)
        self._tuple_of = _fit(self._tuple_of, first_id + len(new_pos), -1)
        self._conn_of_slot = _fit(self._conn_of_slot, arr.capacity, -1)
        self._slot_of[new_ids] = new_slots
        self._tuple_of[new_ids] = tid[new_pos]
        self._conn_of_slot[new_slots] = new_ids
        if len(self._ack_ring_frame) < arr.capacity:
            grow = arr.capacity - len(self._ack_ring_frame)
            self._ack_ring_frame = np.concatenate([self._ack_ring_frame, np.full((grow, 2, PEER_ACKS_KEPT), -1)])
            self._ack_ring_ack = np.concatenate([self._ack_ring_ack, np.full((grow, 2, PEER_ACKS_KEPT), NONE)])
        self._ack_ring_frame[new_slots] = -1
        self._ack_ring_ack[new_slots] = NONE
        conn = self._slot_of[conn_id]  # from here on, connections are addressed by their slot
        if len(new_pos):
            first_rows = rows[order[new_pos]]
            columns = ("src_hi", "src_lo", "src_port", "dst_hi", "dst_lo", "dst_port", "flags", "ip_version",
                       "frame", "ts_ns")  # fmt: skip
            for values in zip(*(first_rows[c].tolist() for c in columns), a_side[new_pos].tolist(),
                              new_slots.tolist(), strict=True):  # fmt: skip
                self._new_connection(*values)
        orig_is_a = arr["orig_is_a"][conn].astype(bool)
        side = np.where(a_side == orig_is_a, 0, 1)

        # --- per-connection groups --------------------------------------------------
        cstart = np.ones(n, dtype=bool)
        cstart[1:] = conn[1:] != conn[:-1]
        cg = Groups(cstart)
        conns = cg.first(conn)
        has_ack = (flags & P.ACK) != 0
        is_syn = (flags & P.SYN) != 0
        is_fin = (flags & P.FIN) != 0
        is_rst = (flags & P.RST) != 0
        mask = [side == 0, side == 1]
        # Per side: position of the side's latest row at/before each row, and strictly before it.
        last_of = [cg.last_valid_pos(m) for m in mask]
        prev_of = [cg.exclusive(x, -1) for x in last_of]
        last_ack_of = [cg.last_valid_pos(m & has_ack) for m in mask]

        # Sequence-space anchors: carried, else this chunk's first seq of that side,
        # else the first ack the peer sent for it.
        for s in (0, 1):
            anchor_raw = arr[f"anchor_raw{s}"]
            need = anchor_raw[conns] < 0
            if need.any():
                own_first = _first_pos(cg, mask[s])
                peer_ack_first = _first_pos(cg, mask[1 - s] & has_ack)
                use_own = need & (own_first >= 0)
                use_ack = need & ~use_own & (peer_ack_first >= 0)
                c_own, c_ack = conns[use_own], conns[use_ack]
                anchor_raw[c_own] = seq[own_first[use_own]]
                arr[f"anchor_val{s}"][c_own] = 0
                anchor_raw[c_ack] = ack_raw[peer_ack_first[use_ack]]
                arr[f"anchor_val{s}"][c_ack] = 0

        # Unwrapped numbers per side: each row steps from the side's previous row (or the carried anchor).
        # Acks sent by side s live in the peer's sequence space, so they start from the peer's anchor.
        seq_val = np.zeros(n, dtype=np.int64)
        ack_val = np.full(n, NONE, dtype=np.int64)
        for s in (0, 1):
            p = 1 - s
            seq_val = np.where(
                mask[s], _unwrap(seq, mask[s], prev_of[s], cg, arr, conn, f"last_seq_{{}}{s}", s), seq_val
            )
            am = mask[s] & has_ack
            prev_a = cg.exclusive(last_ack_of[s], -1)
            ack_val = np.where(am, _unwrap(ack_raw, am, prev_a, cg, arr, conn, f"last_ack_{{}}{s}", p), ack_val)

        seq_end = seq_val + plen + is_syn + is_fin
        max_end = []
        max_ack = []
        for s in (0, 1):
            # A RST's sequence number is not data sent: keep it out of snd_nxt.
            max_end.append(np.maximum(cg.cummax(seq_end, mask[s] & ~is_rst), arr[f"max_end{s}"][conn]))
            max_ack.append(np.maximum(cg.cummax(ack_val, mask[s] & has_ack), arr[f"max_ack{s}"][conn]))
        own = side
        own_end_incl = np.where(own == 0, max_end[0], max_end[1])
        own_ack_incl = np.where(own == 0, max_ack[0], max_ack[1])
        snd_nxt_before = _exclusive_carry(own_end_incl, mask, prev_of, arr, "max_end", conn)
        own_ack_before = _exclusive_carry(own_ack_incl, mask, prev_of, arr, "max_ack", conn)
        peer_acked = np.where(own == 0, max_ack[1], max_ack[0])
        peer_snd_nxt = np.where(own == 0, max_end[1], max_end[0])

        retx = (plen > 0) & ~is_syn & (snd_nxt_before != NONE) & (seq_val < snd_nxt_before)
        zero_win = (window == 0) & ~is_syn & ~is_rst
        pure_ack = has_ack & (plen == 0) & ~(is_syn | is_fin | is_rst)
        # Zeek's retransmission (history T): a segment whose payload was all sent before.
        old_data = (plen > 0) & ~is_syn & (snd_nxt_before != NONE) & (seq_val + plen <= snd_nxt_before)
        old_count = np.zeros(n, dtype=np.int64)  # the side's running count at such rows, 0 elsewhere
        zw_count = np.zeros(n, dtype=np.int64)
        letters = np.zeros(n, dtype=bool)
        for s in (0, 1):
            m = mask[s]
            for name, col, running in (("old", old_data, old_count), ("zw", zero_win, zw_count)):
                count = cg.cumsum(m & col) + arr[f"{name}{s}"][conn]
                running[m & col] = count[m & col]
                letters |= m & col & _is_power_of_ten(count)
            for name, col in (("seen_data", plen > 0), ("seen_pure_ack", pure_ack)):
                firsts = m & col & (cg.cumsum(m & col) == 1) & (arr[f"{name}{s}"][conn] == 0)
                letters |= firsts
        # Keepalive probes (as Wireshark tells them): at most one byte, one below the sender's snd_nxt.
        probe = (plen <= 1) & has_ack & ~(is_syn | is_fin | is_rst) & (snd_nxt_before != NONE) & (
            seq_val == snd_nxt_before - 1
        )
        closing = (cg.cumsum(is_fin | is_rst) > 0) | (arr["closing"][conn] > 0)
        closing_before = cg.exclusive(closing, False) | (arr["closing"][conn] > 0)
        index_in_conn = cg.cumsum(np.ones(n, dtype=np.int64)) + arr["pkts0"][conn] + arr["pkts1"][conn]
        control_row = (flags & (P.SYN | P.FIN | P.RST)) != 0
        events = control_row | letters | closing_before | probe | (index_in_conn <= EARLY_PACKETS)
        # Rows skipped since the connection's previous event row: its recent segments are then stale.
        last_event = cg.last_valid_pos(events)
        prev_event = cg.exclusive(last_event, -1)
        row = np.arange(n)
        after_gap = np.where(prev_event >= 0, row - prev_event > 1, (row > cg.elem_first) | (arr["skipped"][conn] > 0))
        final_event = cg.last(last_event)
        arr["skipped"][conns] = (final_event < 0) | (final_event < cg.last_pos)

        # Per side, its latest segment that is neither a keepalive probe nor a RST (probes after it are a run).
        last_plain_of = [cg.last_valid_pos(m & ~probe & ~is_rst) for m in mask]
        # The peer segment each row follows (what a reply-RST answers).
        peer_prev = np.where(side == 0, last_of[1], last_of[0])  # a row is never its own peer: inclusive is fine
        # Silence on the connection before each row (across chunks through the carried last time).
        prev_row = np.arange(n) - 1
        carried_ns = arr["last_ns"][conn]
        seen_before = (arr["pkts0"][conn] + arr["pkts1"][conn]) > 0
        gap = np.where(
            cg.start, np.where(seen_before, ts - carried_ns, 0), ts - ts[np.maximum(prev_row, 0)]
        ).astype(np.int64)

        self._peer_acks_at_resets(np.flatnonzero(is_rst), conn, side, frame, ack_val, last_ack_of, cg)
        self._event_pass(
            np.flatnonzero(events),
            frame, ts, seq, ack_raw, order, conn, conn_id, side, flags, plen, seq_val, ack_val, snd_nxt_before,
            peer_acked,
            own_ack_before, peer_snd_nxt, old_count, zw_count, pure_ack, peer_prev, after_gap,
            rows=rows, ttl=ttl, gap=gap, probe=probe, last_plain_of=last_plain_of, ip_ids=ip_ids,
        )  # fmt: skip

        # --- carry state to the next chunk ------------------------------------------
        arr["first_ns"][conns] = np.where(
            arr["pkts0"][conns] + arr["pkts1"][conns] == 0, cg.first(ts), arr["first_ns"][conns]
        )
        arr["last_ns"][conns] = cg.last(ts)
        arr["last_frame"][conns] = cg.last(frame)
        arr["closing"][conns] = cg.last(closing)
        self._update_ack_ring(conns, frame, ack_val, mask, has_ack, cg)
        for s in (0, 1):
            m = mask[s]
            last = cg.last(last_of[s])
            got = last >= 0
            c, lp = conns[got], last[got]
            arr[f"last_seq_raw{s}"][c] = seq[lp]
            arr[f"last_seq_val{s}"][c] = seq_val[lp]
            arr[f"last_frame{s}"][c] = frame[lp]
            arr[f"last_flags{s}"][c] = flags[lp]
            arr[f"last_len{s}"][c] = plen[lp]
            arr[f"last_ackrel{s}"][c] = ack_val[lp]
            arr[f"last_seqrel{s}"][c] = seq_val[lp]
            arr[f"last_ns{s}"][c] = ts[lp]
            arr[f"last_gap{s}"][c] = gap[lp]
            plain = cg.last(last_plain_of[s])
            arr[f"last_plain_frame{s}"][conns[plain >= 0]] = frame[plain[plain >= 0]]
            arr[f"last_plain_ip_id{s}"][conns[plain >= 0]] = ip_ids[plain[plain >= 0]]
            first = _first_pos(cg, m)
            fresh = (first >= 0) & (arr[f"first_seq_val{s}"][conns] == NONE)
            arr[f"first_seq_val{s}"][conns[fresh]] = seq_val[first[fresh]]
            last_a = cg.last(last_ack_of[s])
            got_a = last_a >= 0
            arr[f"last_ack_raw{s}"][conns[got_a]] = ack_raw[last_a[got_a]]
            arr[f"last_ack_val{s}"][conns[got_a]] = ack_val[last_a[got_a]]
            arr[f"max_end{s}"][conns] = cg.last(max_end[s])
            arr[f"max_ack{s}"][conns] = cg.last(max_ack[s])
            arr[f"pkts{s}"][conns] += np.add.reduceat(m.astype(np.int64), cg.first_pos)
            arr[f"bytes{s}"][conns] += np.add.reduceat(np.where(m, plen, 0), cg.first_pos)
            arr[f"retx{s}"][conns] += np.add.reduceat((m & retx).astype(np.int64), cg.first_pos)
            arr[f"zw{s}"][conns] += np.add.reduceat((m & zero_win).astype(np.int64), cg.first_pos)
            arr[f"old{s}"][conns] += np.add.reduceat((m & old_data).astype(np.int64), cg.first_pos)
            arr[f"seen_data{s}"][conns] |= np.add.reduceat((m & (plen > 0)).astype(np.int64), cg.first_pos) > 0
            arr[f"seen_pure_ack{s}"][conns] |= np.add.reduceat((m & pure_ack).astype(np.int64), cg.first_pos) > 0
            counted = m & ~is_rst  # a RST's TTL is what is being judged: keep it out of the sender's baseline
            arr[f"ttl_n{s}"][conns] += np.add.reduceat(counted.astype(np.int64), cg.first_pos)
            arr[f"ts_n{s}"][conns] += np.add.reduceat((counted & has_ts).astype(np.int64), cg.first_pos)
            arr[f"ttl_min{s}"][conns] = np.minimum(
                arr[f"ttl_min{s}"][conns], np.minimum.reduceat(np.where(counted, ttl, 256), cg.first_pos)
            )
            arr[f"ttl_max{s}"][conns] = np.maximum(
                arr[f"ttl_max{s}"][conns], np.maximum.reduceat(np.where(counted, ttl, -1), cg.first_pos)
            )
        self._retire_idle(int(frame.max()))  # last: the chunk's rows are all counted by now

    def _retire_idle(self, now_frame: int) -> None:
        """Connections idle for STALE_AFTER_FRAMES: forget their recent segments (what ``_event`` would do
        at their next row anyway); if they were closed (FIN or RST), retire them: their summary goes to
        the spill file, their slot and their 4-tuple are freed.  A later packet of that 4-tuple starts
        a new connection, as it would in Zeek once its timers removed the old one.  This is what keeps
        memory bounded by the connections alive at once."""
        if now_frame < self._next_sweep:
            return
        self._next_sweep = now_frame + STALE_AFTER_FRAMES // 4
        cutoff = now_frame - STALE_AFTER_FRAMES
        arr = self._arrays
        last_frame = arr["last_frame"][: arr.size]
        live = self._conn_of_slot[: arr.size] >= 0
        # Only the connections that went idle since the last sweep.
        idle = np.flatnonzero(live & (last_frame >= self._swept_cutoff) & (last_frame < cutoff))
        self._swept_cutoff = cutoff
        closed = arr["closing"][idle] > 0
        for slot, done in zip(idle.tolist(), closed.tolist(), strict=True):
            cid = int(self._conn_of_slot[slot])
            c = self.connections[cid]
            c._recent[0].clear()
            c._recent[1].clear()
            if done:
                self._retire(c, slot)

    def _retire(self, c: Connection, slot: int) -> None:
        self._finalize(c, slot)
        self._spill.put(c)
        self.connections[c.id] = None
        tid = int(self._tuple_of[c.id])
        if self._tuple_conn[tid] == c.id:  # no newer connection on this 4-tuple: forget the 4-tuple
            del self._tuple_ids[self._tuple_keys[tid]]
            self._tuple_keys[tid] = None
            self._tuple_conn[tid] = -1
        self._slot_of[c.id] = -1
        self._conn_of_slot[slot] = -1
        self._arrays.free.append(slot)

    def _peer_acks_at_resets(self, rst_rows, conn, side, frame, ack_val, last_ack_of, cg) -> None:
        """For each RST row: the peer's last PEER_ACKS_KEPT ACK segments before it (this chunk, then carried)."""
        if not len(rst_rows):
            return
        prev_ack_of = [cg.exclusive(x, -1) for x in last_ack_of]
        for r in rst_rows.tolist():
            c, peer = int(conn[r]), 1 - int(side[r])
            found = []
            p = int(last_ack_of[peer][r])
            while p >= 0 and len(found) < PEER_ACKS_KEPT:
                found.append((int(frame[p]), int(ack_val[p])))
                p = int(prev_ack_of[peer][p])
            carried = zip(self._ack_ring_frame[c, peer].tolist(), self._ack_ring_ack[c, peer].tolist(), strict=True)
            older = [(f, a) for f, a in carried if f >= 0]
            acks = (older + found[::-1])[-PEER_ACKS_KEPT:]
            self._rst_peer_acks[int(frame[r])] = tuple(acks)

    def _update_ack_ring(self, conns, frame, ack_val, mask, has_ack, cg) -> None:
        """Append each connection side's ACK segments of this chunk to its ring (keeping the last ones)."""
        k = PEER_ACKS_KEPT
        for s in (0, 1):
            am = mask[s] & has_ack
            running = cg.cumsum(am)
            total = cg.last(running)  # ACK rows of this side per connection
            rank_from_end = total[cg.gi] - running  # 0 for the last ACK row of its connection
            keep = am & (rank_from_end < k)
            fresh = np.minimum(total, k)
            ring_f, ring_a = self._ack_ring_frame[conns, s], self._ack_ring_ack[conns, s]
            new_f = np.full_like(ring_f, -1)
            new_a = np.full_like(ring_a, NONE)
            for slot in range(k):  # slot k-1 is the newest
                from_old = slot < k - fresh
                src = np.minimum(slot + fresh, k - 1)
                new_f[:, slot] = np.where(from_old, ring_f[np.arange(len(conns)), src], -1)
                new_a[:, slot] = np.where(from_old, ring_a[np.arange(len(conns)), src], NONE)
            rows = np.flatnonzero(keep)
            g = cg.gi[rows]
            slot = k - 1 - rank_from_end[rows]
            new_f[g, slot] = frame[rows]
            new_a[g, slot] = ack_val[rows]
            self._ack_ring_frame[conns, s] = new_f
            self._ack_ring_ack[conns, s] = new_a

    ATTEMPT_NS = 5_000_000_000  # Zeek's tcp_attempt_delay
    CLOSE_NS = 5_000_000_000  # Zeek's tcp_close_delay and tcp_reset_delay
    INACTIVITY_NS = 300_000_000_000  # Zeek's tcp_inactivity_timeout

    def _timer_splits(self, new_inst, tgroups, tids, tid, ts, flags, a_side) -> np.ndarray:
        """Zeek's timers as connection boundaries, for ``conns`` to line up with conn.log.

        Zeek removes a connection 5 s after its first SYN if the responder has sent nothing, 5 s after
        the close completed (both FINs, or a RST), and after 5 min without a packet; a later packet of
        the same 4-tuple then starts a new connection.  ``analyze`` does not use this: there a
        connection is one 4-tuple lifetime, as Wireshark's tcp.stream is, so that a SYN retransmitted
        at 7 s stays with its first SYN.  Splits depend on each other, so they are found in rounds.
        """
        st = self._timer_state
        size = len(self._tuple_conn)
        defaults = {"last_ts": NONE, "syn_ts": NONE, "syn_a": 0, "closed_ts": NONE, "fin_a": 0, "fin_b": 0, "rst": 0}
        for name, default in defaults.items():
            if name not in st or len(st[name]) < size:
                old = st.get(name, np.empty(0, dtype=np.int64))
                st[name] = np.concatenate([old, np.full(size - len(old), default, dtype=np.int64)])
        n = len(ts)
        is_syn = (flags & (P.SYN | P.ACK | P.RST)) == P.SYN
        fin, rst = (flags & P.FIN) != 0, (flags & P.RST) != 0
        prev_ts = np.where(tgroups.start, st["last_ts"][tid], np.concatenate([[NONE], ts[:-1]]))
        idle = (prev_ts != NONE) & (ts - prev_ts > self.INACTIVITY_NS)
        for _round in range(n + 1):
            starts = new_inst | idle | tgroups.start
            sg = Groups(starts)
            first = sg.first_pos[sg.gi]
            carried = ~(new_inst | idle)[first]  # the segment continues the tuple's carried connection
            syn_ts = np.where(carried, st["syn_ts"][tid], np.where(is_syn[first], ts[first], NONE))
            syn_a = np.where(carried, st["syn_a"][tid], a_side[first])
            responder = a_side != syn_a.astype(bool)
            answered_before = sg.exclusive(sg.cumsum(responder) > 0, False)
            attempt = (syn_ts != NONE) & ~answered_before & (ts - syn_ts > self.ATTEMPT_NS)
            fin_a = (sg.cumsum(fin & a_side) > 0) | (carried & (st["fin_a"][tid] > 0))
            fin_b = (sg.cumsum(fin & ~a_side) > 0) | (carried & (st["fin_b"][tid] > 0))
            was_reset = (sg.cumsum(rst) > 0) | (carried & (st["rst"][tid] > 0))
            closed = (fin_a & fin_b) | was_reset
            closed_pos = sg.last_valid_pos(closed & ~sg.exclusive(closed, False))  # the row that closed it
            carried_closed = np.where(carried, st["closed_ts"][tid], NONE)
            closed_ts = np.where(
                carried_closed != NONE, carried_closed, np.where(closed_pos >= 0, ts[closed_pos], NONE)
            )
            closed_before = sg.exclusive(closed, False)
            closed_before[sg.first_pos] = carried[sg.first_pos] & (carried_closed[sg.first_pos] != NONE)
            expired = closed_before & (closed_ts != NONE) & (ts - closed_ts > self.CLOSE_NS)
            split = (attempt | expired) & ~(new_inst | idle)
            if not split.any():
                break
            # Only the first split of each segment counts: everything after it is a new connection.
            first_split = split & (sg.cumsum(split) == 1)
            new_inst = new_inst | first_split
        last = tgroups.last_pos
        st["last_ts"][tids] = ts[last]
        st["syn_ts"][tids] = np.where(answered_before[last] | responder[last], NONE, syn_ts[last])
        st["syn_a"][tids] = syn_a[last]
        st["closed_ts"][tids] = closed_ts[last]
        st["fin_a"][tids] = fin_a[last]
        st["fin_b"][tids] = fin_b[last]
        st["rst"][tids] = was_reset[last]
        return new_inst | idle

    def _new_connection(self, src_hi, src_lo, src_port, dst_hi, dst_lo, dst_port, flags, ip_version, frame, ts_ns,
                        src_is_a: bool, slot: int) -> None:  # fmt: skip
        """Create the connection whose first packet has these fields (Python ints)."""
        src = (P.format_addr(src_hi, src_lo), src_port)
        dst = (P.format_addr(dst_hi, dst_lo), dst_port)
        inferred = False
        if flags & P.SYN and not flags & P.ACK:
            src_is_orig = True
        elif flags & P.SYN:
            # A SYN-ACK's sender answered a SYN.  (Zeek keeps it as originator unless its port is one of
            # ``likely_server_ports``, which depends on the scripts loaded: see docs/zeek-agreement.md.)
            src_is_orig = False
        else:
            # Zeek's WantConnection heuristic, with the well-known ports (below 1024) as likely server
            # ports: the first packet comes from the server if its source port is one and its destination
            # port is not, or if both are and the source port is the lower.
            inferred = True
            src_server, dst_server = src[1] < 1024, dst[1] < 1024
            src_is_orig = not (src_server and (not dst_server or src[1] < dst[1]))
        orig, resp = (src, dst) if src_is_orig else (dst, src)
        cid = len(self.connections)
        self._arrays["orig_is_a"][slot] = int(src_is_a == src_is_orig)
        conn = Connection(
            id=cid,
            orig_addr=orig[0],
            orig_port=orig[1],
            resp_addr=resp[0],
            resp_port=resp[1],
            ip_version=ip_version,
            originator_inferred=inferred,
            first_frame=frame,
            start_ns=ts_ns,
        )
        if not src_is_orig:
            conn.history.append("^")  # Zeek's flip: the first packet came from the responder
        self.connections.append(conn)

    # ----------------------------------------------------------------- pass 2
    def _event_pass(self, idx, frame_col, ts, seq_raw, ack_raw, order, conn, conn_id, side, flags, plen, seq_val,
                    ack_val, snd_nxt_before, peer_acked, own_ack_before, peer_snd_nxt, retx_count, zw_count, pure_ack,
                    peer_prev, after_gap, *, rows, ttl, gap, probe, last_plain_of, ip_ids):  # fmt: skip
        if not len(idx):
            return
        idx = idx[np.argsort(order[idx], kind="stable")]  # back to capture order
        # What only a RST needs, for the RST rows: sequence state and the peer segment it follows
        # (from this chunk, else the carried last segment of the peer).
        rst = idx[(flags[idx] & P.RST) != 0]
        if len(rst):
            arr = self._arrays
            pp = peer_prev[rst]
            have_pp = pp >= 0
            ppi = np.maximum(pp, 0)
            c_rst = conn[rst]
            peer_side = 1 - side[rst]

            def carried(name):
                return np.where(peer_side == 0, arr[f"{name}0"][c_rst], arr[f"{name}1"][c_rst])

            def carried_own(name):
                return np.where(peer_side == 1, arr[f"{name}0"][c_rst], arr[f"{name}1"][c_rst])

            rst_rows = rows[order[rst]]
            own_plain = np.where(side[rst] == 0, last_plain_of[0][rst], last_plain_of[1][rst])
            extra = zip(
                snd_nxt_before[rst].tolist(), peer_acked[rst].tolist(), own_ack_before[rst].tolist(),
                peer_snd_nxt[rst].tolist(),
                np.where(have_pp, frame_col[ppi], carried("last_frame")).tolist(),
                np.where(have_pp, flags[ppi], carried("last_flags")).tolist(),
                np.where(have_pp, plen[ppi], carried("last_len")).tolist(),
                np.where(have_pp, ack_val[ppi], carried("last_ackrel")).tolist(),
                np.where(have_pp, seq_val[ppi], carried("last_seqrel")).tolist(),
                np.where(have_pp, ts[ppi], carried("last_ns")).tolist(),
                np.where(have_pp, gap[ppi], carried("last_gap")).tolist(),
                rst_rows["tcp_auth"].tolist(), rst_rows["window"].tolist(),
                np.where(own_plain >= 0, frame_col[np.maximum(own_plain, 0)], carried_own("last_plain_frame")).tolist(),
                rst_rows["has_ts"].tolist(),
                np.where(own_plain >= 0, ip_ids[np.maximum(own_plain, 0)], carried_own("last_plain_ip_id")).tolist(),
                strict=True,
            )  # fmt: skip
            self._rst_state = dict(zip(frame_col[rst].tolist(), extra, strict=True))
        columns = zip(
            frame_col[idx].tolist(), ts[idx].tolist(), conn_id[idx].tolist(), side[idx].tolist(),
            flags[idx].tolist(), plen[idx].tolist(), seq_val[idx].tolist(), ack_val[idx].tolist(),
            seq_raw[idx].tolist(), ack_raw[idx].tolist(), retx_count[idx].tolist(), zw_count[idx].tolist(),
            pure_ack[idx].tolist(), after_gap[idx].tolist(), ttl[idx].tolist(), ip_ids[idx].tolist(),
            probe[idx].tolist(),
            strict=True,
        )  # fmt: skip
        connections = self.connections
        for row in columns:
            self._event(connections[row[2]], row)

    def _event(self, c: Connection, row) -> None:
        (frame, ts, _cid, s, flags, plen, seq, ack, seq_raw, ack_raw, retx_count, zw_count, is_pure_ack,
         after_gap, ttl, ip_id, is_probe) = row  # fmt: skip
        side = _SIDES[s]
        recent = c._recent
        if after_gap or _stale(recent, frame):  # the recent segments no longer are the last ones
            recent[0].clear()
            recent[1].clear()
        syn, fin, rst, ackf = flags & P.SYN, flags & P.FIN, flags & P.RST, flags & P.ACK
        old, peer = c.state[s], c.state[1 - s]
        _history(c, side, flags, plen, seq_raw, is_pure_ack)
        # Log-scale letters, in Zeek's order (window before retransmission).  ``*_count`` is the side's
        # running count at this row (0: not one); the occurrences Zeek ignores are taken off first.
        zw_ignored = rst or old is EndpointState.RESET or peer is EndpointState.CLOSED
        _scaled_letter(c, side, "w", zw_count, ignored=zw_ignored)
        _scaled_letter(c, side, "t", retx_count, ignored=old is EndpointState.RESET)

        if syn and not ackf:
            if side is Side.ORIG:
                c.syn_frames.append(frame)
                if c.isn[0] is None:
                    c.isn[0] = seq_raw
        elif syn and side is Side.RESP:
            if c.synack_frames and c.handshake_ack_frame is not None:
                c.synack_after_ack_frames.append(frame)
            c.synack_frames.append(frame)
            if c.isn[1] is None:
                c.isn[1] = seq_raw
        if plen and c.first_payload_frame[s] is None:
            c.first_payload_frame[s] = frame
        if (
            side is Side.ORIG
            and ackf
            and c.handshake_ack_frame is None
            and c.synack_frames
            and not syn
            and ack != NONE
            and ack >= 1
        ):
            c.handshake_ack_frame = frame
        if fin and c.fin_frame[s] is None:
            c.fin_frame[s] = frame
        if (c.rst_frames[0] or c.rst_frames[1]) and len(c.after_reset) < AFTER_RESET_KEPT:
            segment_ack = _none(ack) if ackf else None
            c.after_reset.append(SegmentAfterReset(frame, ts, side, flags, seq, segment_ack, plen, ttl, ip_id))
        if is_probe:
            probes = c.keepalive_probes[s]
            probes.append((frame, ts))
            del probes[:-PROBES_KEPT]
        if rst:
            (snd_nxt, peer_acked, own_acked, peer_nxt, ans_frame, ans_flags, ans_len, ans_ack,
             ans_seq, peer_last_ns, answered_idle, tcp_auth, window,
             last_plain_frame, has_ts, prev_ip_id) = self._rst_state.pop(frame)  # fmt: skip
            # A bare RST is a reply (its seq is the answered segment's ack).  A RST|ACK is a reply when its
            # numbers say so: to a SYN (Linux, no socket), or seq = the segment's ack and ack = its end, as
            # BSD, Windows and middleboxes answer; an active RST|ACK whose peer had nothing unacknowledged
            # looks the same, and the evidence keeps both readings (see evidence.py).
            answered = _answered_segment(c._recent[1 - s], flags, seq_raw, ack_raw)
            if (
                answered is None
                and ans_frame >= 0
                and _answers(flags, seq, ack, ans_flags, ans_seq, ans_ack, ans_len)  # relative numbers
            ):
                answered = (ans_frame, ans_flags, None, None, ans_len, ans_seq, ans_ack)
            wire = {
                "ttl": ttl, "ip_id": ip_id, "tcp_auth": tcp_auth, "window": window, "payload": plen,
                "has_ts": has_ts, "prev_ip_id": None if prev_ip_id < 0 else prev_ip_id,
                "peer_last_ns": None if ans_frame < 0 else peer_last_ns,
                "answered_idle_ns": None if ans_frame < 0 else answered_idle,
                "keepalive_probes": tuple(p for p in c.keepalive_probes[s] if p[0] > last_plain_frame),
            }  # fmt: skip
            self._record_reset(c, side, frame, ts, flags, seq, ack, seq_raw, snd_nxt, peer_acked, own_acked,
                               peer_nxt, answered, wire)  # fmt: skip
            c.rst_frames[s].append(frame)
        recent = c._recent[s]
        recent.append((frame, flags, seq_raw, ack_raw, plen, seq, ack))
        if len(recent) > RECENT_SEGMENTS:
            del recent[0]

        event = _event_of(side, flags, plen)
        new = PEER_RULES.get((old, event, peer)) or TRANSITIONS.get((old, event))
        if new is None:
            c.findings.append(
                Finding(
                    kind=f"state.{event.value}_after_{old.value}",
                    frame=frame,
                    side=side,
                    detail=f"{side.role} sent {event.value} while {old.value}",
                )
            )
            return
        _set_state(c, s, new)
        peer_new = PEER_EFFECTS.get((old, event, peer, c.prev_state[1 - s])) or PEER_EFFECTS.get(
            (old, event, peer, None)
        )
        if peer_new is not None:
            _set_state(c, 1 - s, peer_new)

    def _record_reset(self, c, side, frame, ts, flags, seq, ack, seq_raw, snd_nxt, peer_acked, own_acked,
                      peer_nxt, answered, wire: dict) -> None:  # fmt: skip
        s = int(side)
        ans_frame, ans_flags, _, _, ans_len, ans_seq, ans_ack = answered or (None,) * 7
        obs = RstObservation(
            frame=frame,
            ts_ns=ts,
            side=side,
            flags=flags,
            seq=seq,
            ack=_none(ack) if flags & P.ACK else None,
            seq_raw=seq_raw,
            snd_nxt=_none(snd_nxt),
            peer_acked=_none(peer_acked),
            sender_acked=_none(own_acked),
            peer_snd_nxt=_none(peer_nxt),
            phase=c.phase(),
            sender_state=c.state[s],
            peer_state=c.state[1 - s],
            sender_fin_frame=c.fin_frame[s],
            peer_fin_frame=c.fin_frame[1 - s],
            sender_prior_rst_frame=c.rst_frames[s][0] if c.rst_frames[s] else None,
            sender_first_payload_frame=c.first_payload_frame[s],
            answered_frame=ans_frame,
            answered_flags=ans_flags,
            answered_payload=ans_len,
            answered_ack=_none(ans_ack) if answered and ans_flags & P.ACK else None,
            answered_seq=_none(ans_seq) if answered else None,
            peer_recent_acks=self._rst_peer_acks.pop(frame, ()),
            **wire,
        )
        c.resets.append(obs)
        self._reset_ids.add(c.id)

    # ----------------------------------------------------------------- the end
    def finish(self) -> ConnectionStore:
        """Copy the vectorised aggregates into the live connections; all connections, in id order."""
        for c in self.connections:
            if c is not None:
                self._finalize(c, int(self._slot_of[c.id]))
        return ConnectionStore(self.connections, self._spill, self._reset_ids, self.host_ttl)

    def _finalize(self, c: Connection, slot: int) -> None:
        arr = self._arrays
        i = slot
        c.end_ns = int(arr["last_ns"][i])
        c.last_frame = int(arr["last_frame"][i])
        c.packets = (int(arr["pkts0"][i]), int(arr["pkts1"][i]))
        c.payload_bytes = (int(arr["bytes0"][i]), int(arr["bytes1"][i]))
        c.retransmissions = (int(arr["retx0"][i]), int(arr["retx1"][i]))
        c.zero_windows = (int(arr["zw0"][i]), int(arr["zw1"][i]))
        stream, unacked = [0, 0], [None, None]
        for s in (0, 1):
            first, end = int(arr[f"first_seq_val{s}"][i]), int(arr[f"max_end{s}"][i])
            if first != NONE and end != NONE:
                syn_fin = (c.isn[s] is not None) + (c.fin_frame[s] is not None)
                stream[s] = max(0, end - first - syn_fin)
                peer_ack = int(arr[f"max_ack{1 - s}"][i])
                if peer_ack != NONE:
                    unacked[s] = max(0, end - peer_ack)
        c.stream_bytes, c.unacked_bytes = tuple(stream), tuple(unacked)
        c.ttl = tuple(
            TtlRange.of(int(arr[f"ttl_min{s}"][i]), int(arr[f"ttl_max{s}"][i]), int(arr[f"ttl_n{s}"][i]))
            for s in (0, 1)
        )
        c.timestamped = (int(arr["ts_n0"][i]), int(arr["ts_n1"][i]))
        if c.ttl[1] is not None:
            self.host_ttl[c.resp_addr] = c.ttl[1].merge(self.host_ttl.get(c.resp_addr))


class _Spill:
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
        self._offset = _fit(self._offset, top, 0)
        self._length = _fit(self._length, top, 0)
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

    def __init__(self, live: list[Connection | None], spill: _Spill, reset_ids: set[int],
                 host_ttl: dict[str, TtlRange] | None = None):  # fmt: skip
        self._live = live
        self._spill = spill
        self._reset_ids = sorted(reset_ids)
        self.host_ttl = host_ttl or {}
        """Per responder address, its TTL range over all connections (see ``Tracker.host_ttl``)."""

    def with_resets(self) -> Iterator[Connection]:
        """Only the connections that saw a RST, in id order (no pass over all the others)."""
        for cid in self._reset_ids:
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


def _fit(array: np.ndarray, size: int, fill: int) -> np.ndarray:
    """``array`` grown (doubling) to hold at least ``size`` entries, new ones set to ``fill``."""
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array), 1024), fill, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def _answers(rst_flags: int, rst_seq: int, rst_ack: int, flags: int, seq: int, ack: int, payload: int) -> bool:
    """Whether a RST is a reply to a segment (RFC 9293 §3.10.7.1 reset generation).

    A segment with ACK draws a bare RST whose seq is the segment's ack (Linux), or a RST|ACK whose seq
    is the segment's ack and whose ack is the segment's end (BSD, Windows, most middleboxes); a segment
    without ACK (a SYN) draws RST|ACK whose ack covers it.  All four numbers in one numbering: raw,
    or relative to each side's first sequence number (``NONE`` for an unknown number).
    """
    if not rst_flags & P.ACK:
        return bool(flags & P.ACK) and ack == rst_seq
    if not flags & P.ACK:
        return flags & P.SYN != 0 and (seq + 1) % SEQ_MOD == rst_ack % SEQ_MOD
    end = seq + payload + bool(flags & P.SYN) + bool(flags & P.FIN)  # SYN and FIN each take a number
    return ack == rst_seq and end % SEQ_MOD == rst_ack % SEQ_MOD


def _answered_segment(recent: list[tuple], rst_flags: int, rst_seq_raw: int, rst_ack_raw: int) -> tuple | None:
    """The latest of the peer's recent segments that the RST answers, or None."""
    for segment in reversed(recent):
        _frame, flags, seq_raw, ack_raw, plen, _seq, _ack = segment
        if _answers(rst_flags, rst_seq_raw, rst_ack_raw, flags, seq_raw, ack_raw, plen):
            return segment
    return None


def _unwrap(raw, mask, prev, groups: Groups, arr, conn, carried: str, space: int) -> np.ndarray:
    """Unwrapped positions of the ``mask`` rows' ``raw`` numbers (other rows: meaningless).

    A row steps from ``prev`` (the previous row of the same series, -1 for none); the first row of a
    series in this chunk steps from the series' carried last value (``carried`` with raw/val), else
    from the anchor of sequence space ``space``.  See :mod:`rstscope.seqnum` for the wraparound rule.
    """
    carried_raw, carried_val = arr[carried.format("raw")][conn], arr[carried.format("val")][conn]
    base_raw = np.where(carried_raw >= 0, carried_raw, arr[f"anchor_raw{space}"][conn])
    base_val = np.where(carried_raw >= 0, carried_val, arr[f"anchor_val{space}"][conn])
    has_prev = prev >= 0
    step = np.where(
        has_prev,
        seq_diff_array(raw[np.maximum(prev, 0)], raw),
        base_val + seq_diff_array(base_raw, raw),
    )
    return groups.cumsum(np.where(mask, step, 0))


def _first_pos(groups: Groups, valid: np.ndarray) -> np.ndarray:
    """Per group: position of its first ``valid`` element, or -1."""
    n = groups.n
    pos = np.where(valid, np.arange(n), n)
    first = np.minimum.reduceat(pos, groups.first_pos) if n else pos
    return np.where(first < n, first, -1)


def _exclusive_carry(own_incl: np.ndarray, mask, prev_of, arr, prefix: str, conn) -> np.ndarray:
    """Per row: the running max of the row's own side *before* the row (carried across chunks)."""
    out = np.empty_like(own_incl)
    for s in (0, 1):
        m = mask[s]
        prev = prev_of[s]
        carried = arr[f"{prefix}{s}"][conn]
        vals = np.where(prev >= 0, own_incl[np.maximum(prev, 0)], carried)
        out = np.where(m, vals, out)
    return out


def _is_power_of_ten(count: np.ndarray) -> np.ndarray:
    """True where a running count is 1, 10, 100, ...: Zeek logs T and W letters on that scale."""
    out = count == 1
    k = 10
    while k <= (count.max() if len(count) else 0):
        out |= count == k
        k *= 10
    return out
