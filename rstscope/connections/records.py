"""The records the tracker produces: sides, endpoint states, phases, RST observations, connections.

Everything here is plain data (enums and dataclasses) that evidence, verdicts, the document and the
report read; the tracker's machinery lives in the modules beside this one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
    synacks_before: int = 0
    """The responder's SYN-ACKs before the RST."""
    synacks_after_ack_before: int = 0
    """Of those, the ones sent after the client had acknowledged one (see ``Connection.synack_after_ack_frames``)."""


@dataclass(slots=True)
class Frames:
    """Frames of one kind of segment that may repeat (SYNs, SYN-ACKs): how many, the first and the last.

    ``len()`` is the number of such segments.  The frames in between are not kept, so that a connection
    whose SYN was retransmitted two million times costs no more memory than one that sent it twice."""

    count: int = 0
    first: int | None = None
    last: int | None = None

    def append(self, frame: int) -> None:
        """One more such segment, at ``frame`` (frames come in capture order)."""
        self.count += 1
        if self.first is None:
            self.first = frame
        self.last = frame

    def before(self, frame: int) -> int:
        """How many came before ``frame``, asked while ``frame`` is the latest frame seen (the event pass)."""
        return self.count - (self.last == frame)

    def __len__(self) -> int:
        return self.count


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
    tunnel_id: int = 0
    """The outer identifier (VNI, GRE key, ERSPAN session; see ``packets.PACKET_DTYPE``) of a connection
    seen inside a tunnel, part of its key; 0 when not tunnelled."""
    end_ns: int = 0
    last_frame: int = 0
    history: list[str] = field(default_factory=list)
    state: list[EndpointState] = field(default_factory=lambda: [EndpointState.INACTIVE] * 2)
    prev_state: list[EndpointState] = field(default_factory=lambda: [EndpointState.INACTIVE] * 2)
    """Per side, the state before its last change (Zeek's ``prev_state``; one rule in PEER_EFFECTS needs it)."""
    findings: list[Finding] = field(default_factory=list)
    isn: list[int | None] = field(default_factory=lambda: [None, None])
    """Raw ISN per side, when its SYN / SYN-ACK was captured."""
    syn_frames: Frames = field(default_factory=Frames)
    """Frames of the originator's SYNs (more than one = SYN retransmitted)."""
    synack_frames: Frames = field(default_factory=Frames)
    """Frames of the responder's SYN-ACKs (more than one = SYN-ACK retransmitted)."""
    synack_after_ack_frames: Frames = field(default_factory=Frames)
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
        return phase_of(self.state[0], self.state[1], bool(self.syn_frames), bool(self.synack_frames))


def phase_of(o: EndpointState, r: EndpointState, saw_syn: bool, saw_synack: bool) -> Phase:
    """Where a connection stands, from the originator's and the responder's states and its handshake."""
    if EndpointState.RESET in (o, r):
        return Phase.RESET
    closed = (o is EndpointState.CLOSED) + (r is EndpointState.CLOSED)
    if closed == 2:
        return Phase.CLOSED
    if closed == 1:
        return Phase.CLOSING
    if EndpointState.PARTIAL in (o, r) or (not saw_syn and not saw_synack):
        return Phase.MIDSTREAM
    if o is EndpointState.ESTABLISHED:
        return Phase.ESTABLISHED
    return Phase.HANDSHAKE


def _endpoint(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
