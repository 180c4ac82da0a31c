"""Evidence: the facts around each RST, and nothing else.

Evidence says what the wire showed ("server RST|ACK at its snd_nxt, 0.4 ms
after its last data; 52,128 bytes it had sent were not acknowledged"), never
which failure it was: that is :mod:`rstscope.verdicts`.  Each fact that can
support a verdict is a *finding* with a stable dotted id, registered once in
:data:`FINDINGS`; every finding points at frames.

Sequence numbers below are relative to the sender's first sequence number
(its ISN when the handshake was captured), as in Wireshark.

In flight.  What matters is the data the sender had not had acknowledged
when it *sent* the RST.  Two estimates, and the evidence says which one a
figure is (``in_flight_basis``):

* ``capture``: RST seq minus the highest ack the peer had sent before the RST
  passed the capture point.  Exact on a capture taken at the resetting side;
  at the other side it is often 0 because that side acknowledged each segment
  as it arrived, right before the RST.
* ``echoes``: after an abort, every segment the peer still sends draws an
  echo RST whose seq is that segment's ack.  Those segments reached the
  sender after it reset, so it had not seen them: RST seq minus the lowest
  such ack is a lower bound of what was in flight at the reset.
"""

from __future__ import annotations

import enum
import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace

from rstscope import packets as P
from rstscope.connections import Connection, EndpointState, Phase, RstObservation, Side, TtlRange
from rstscope.origin import Origin, compare_ttl, judge
from rstscope.seqnum import seq_diff


class Severity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, kw_only=True)
class FindingKind:
    id: str
    severity: Severity
    summary: str


def _kinds(*kinds: FindingKind) -> dict[str, FindingKind]:
    registry: dict[str, FindingKind] = {}
    for kind in kinds:
        if kind.id in registry:
            raise ValueError(f"finding id registered twice: {kind.id}")
        registry[kind.id] = kind
    return registry


_W, _I, _E = Severity.WARNING, Severity.INFO, Severity.ERROR
FINDINGS: dict[str, FindingKind] = _kinds(
    FindingKind(id="rst.answers_syn", severity=_W, summary="The RST answers a SYN: nothing listened on that port."),
    FindingKind(id="rst.answers_segment", severity=_I,
                summary="The RST is a reply to a peer segment (its seq is that segment's ack), not an active close."),
    FindingKind(id="rst.after_own_reset", severity=_I,
                summary="The sender had already reset this connection: an echo of that first reset."),
    FindingKind(id="rst.after_connection_closed", severity=_I,
                summary="The connection had already ended (both sides had sent FIN, or the peer had reset it): "
                        "this RST answers a segment of a connection its sender no longer had."),
    FindingKind(id="rst.after_own_fin", severity=_W,
                summary="The sender had closed with FIN before this RST."),
    FindingKind(id="rst.answers_data_after_fin", severity=_W,
                summary="The RST answers data that reached the sender after its FIN (late data; at the capture "
                        "point the data may appear before the FIN when the two crossed)."),
    FindingKind(id="rst.after_own_syn_unanswered", severity=_I,
                summary="The client reset its own connection attempt before any answer to its SYN."),
    FindingKind(id="rst.at_snd_nxt", severity=_I,
                summary="The RST carries the sender's next sequence number: an active reset (close or abort)."),
    FindingKind(id="rst.data_in_flight", severity=_E,
                summary="The sender had sent data the peer had not acknowledged when it reset: that data is at risk."),
    FindingKind(id="rst.in_flight_from_echoes", severity=_E,
                summary="Echo RSTs show the peer was still acknowledging data the sender had sent before resetting "
                        "(lower bound of what was in flight)."),
    FindingKind(id="rst.nothing_in_flight", severity=_I,
                summary="Everything the sender had sent was acknowledged when it reset."),
    FindingKind(id="rst.transfer_cut_short", severity=_W,
                summary="The sender's data ended on a whole segment, acknowledged just before the RST, with no FIN: "
                        "it was most likely still sending, and the RST discarded what it had queued and not sent."),
    FindingKind(id="rst.before_server_payload", severity=_W,
                summary="The server reset the connection before sending any payload."),
    FindingKind(id="rst.seq_at_isn_plus_1", severity=_I,
                summary="The RST seq is the sender's ISN+1: it had sent nothing after its SYN-ACK."),
    FindingKind(id="rst.peer_data_unacknowledged", severity=_W,
                summary="The peer had sent data that the RST's sender never acknowledged."),
    FindingKind(id="rst.midstream", severity=_I,
                summary="The connection's start is not in the capture (common when a capture starts mid-connection)."),
    FindingKind(id="rst.sender_silent", severity=_I,
                summary="The sender sent nothing but RSTs in this capture: it did not know the connection."),
    FindingKind(id="handshake.syn_retransmitted", severity=_W,
                summary="The client retransmitted its SYN: suspected SYN-queue pressure or loss."),
    FindingKind(id="handshake.synack_retransmitted", severity=_W,
                summary="The server retransmitted its SYN-ACK."),
    FindingKind(id="handshake.synack_after_ack", severity=_E,
                summary="The server retransmitted its SYN-ACK after the client had acknowledged it: the server "
                        "dropped the handshake's last ACK, as a full accept queue does (suspected)."),
    FindingKind(id="handshake.client_data_unacknowledged", severity=_W,
                summary="The client sent data that the server never acknowledged."),
    FindingKind(id="rst.primary_not_captured", severity=_W,
                summary="A bare reply-RST from a side that had sent data and no RST before (and no FIN, or a FIN "
                        "still unacknowledged): its socket was already aborted, but the RST of that abort is "
                        "not in the capture (lost on the way, or dropped before the capture point)."),
    FindingKind(id="rst.answers_synack", severity=_I,
                summary="The client reset in reply to a SYN-ACK: it had given up on the connection."),
    FindingKind(id="rst.after_keepalive_probes", severity=_W,
                summary="The sender's keepalive probes went unanswered before it reset (the peer, or the path "
                        "to it, was gone)."),
    FindingKind(id="rst.after_idle", severity=_W,
                summary="The RST follows a segment sent after the connection had been idle for seconds: state "
                        "kept on the path (conntrack, NAT, a load balancer) may have expired meanwhile."),
    FindingKind(id="rst.seq_beyond_snd_nxt", severity=_W,
                summary="The RST's seq lies beyond anything the sender was seen to send: outside the receiver's "
                        "window unless the capture missed the sender's data."),
    FindingKind(id="rst.seq_below_peer_ack", severity=_W,
                summary="The RST's seq lies below what the receiver had already acknowledged: outside its "
                        "window, so the receiver drops it."),
    FindingKind(id="rst.challenge_acked", severity=_I,
                summary="The receiver answered with a duplicate ACK below the RST's seq: an RFC 5961 challenge "
                        "ACK (the RST was in its window but not at its next expected byte)."),
    FindingKind(id="rst.carries_auth_option", severity=_W,
                summary="The RST carries a TCP-MD5 or TCP-AO option: a receiver that checks it drops the RST "
                        "when the signature is wrong."),
    FindingKind(id="rst.carries_data", severity=_I,
                summary="The RST carries payload (RFC 1122 diagnostic text, not stream data)."),
    FindingKind(id="rst.only_resets_captured", severity=_W,
                summary="The capture holds no packet of this connection but RSTs: nothing tells why (a capture "
                        "that started late, or saw one direction only)."),
    FindingKind(id="rst.with_syn_or_fin", severity=_W,
                summary="The RST also carries SYN or FIN: a combination no stack sends (a crafted or scanning "
                        "packet)."),
    FindingKind(id="origin.host_kernel_reply", severity=_I,
                summary="The RST answers the SYN-ACK to a SYN its host's kernel did not know (a raw-socket SYN, "
                        "as half-open scanners send): the host's kernel sent it, whatever the program did next."),
    FindingKind(id="rst.connection_went_on", severity=_W,
                summary="Both sides went on with the connection after this RST: it changed nothing."),
    FindingKind(id="rst.receiver_reset_sender_segments", severity=_I,
                summary="The receiver answered the supposed sender's later segments with RSTs: it had accepted "
                        "the RST and dropped the connection."),
    FindingKind(id="origin.ttl_matches_sender", severity=_I,
                summary="The RST's TTL (hop limit) is one the sender's own packets had at the capture point."),
    FindingKind(id="origin.ttl_one_hop_off", severity=_W,
                summary="The RST's TTL is one hop off the sender's otherwise constant TTL: suspected to come "
                        "from a device one hop nearer or farther (a path change can do the same)."),
    FindingKind(id="origin.ttl_near_sender", severity=_I,
                summary="The RST's TTL is one hop outside the range of the sender's TTLs, which varied: too "
                        "close to tell."),
    FindingKind(id="origin.ttl_differs", severity=_E,
                summary="The RST's TTL is two or more hops, or another stack's initial TTL, away from every "
                        "packet of the sender: another device sent it."),
    FindingKind(id="origin.no_ttl_baseline", severity=_I,
                summary="No other packet of the sender to compare the RST's TTL with (common at a closed port, "
                        "or when the capture starts late)."),
    FindingKind(id="origin.sender_kept_sending", severity=_E,
                summary="The supposed sender went on sending after its own RST: it never reset the connection "
                        "(a forged or middlebox RST)."),
    FindingKind(id="origin.ip_id_reused", severity=_W,
                summary="The RST carries the IP ID of the supposed sender's previous or a later packet: a copy "
                        "(suspected forgery; supporting evidence only, some stacks repeat IDs)."),
    FindingKind(id="origin.window_differs", severity=_W,
                summary="This active RST|ACK advertises a zero window, which the sender never did; Linux's own "
                        "active resets advertise its receive window (supporting evidence only: other stacks, "
                        "and most middleboxes, send 0)."),
    FindingKind(id="origin.options_differ", severity=_W,
                summary="Every segment of the sender carried TCP timestamps, this active RST|ACK none: Linux's "
                        "own active resets carry them (supporting evidence only: other stacks differ)."),
)  # fmt: skip
del _W, _I, _E


@dataclass(kw_only=True, slots=True)
class ResetEvidence:
    """Everything known about one RST.  Field docstrings are the report's legend."""

    frame: int
    """Frame number of the RST (1-based, as Wireshark's frame.number)."""
    time_ns: int
    """Capture time of the RST, ns since the epoch."""
    connection: int
    """Connection id (see ``conns``)."""
    sender: Side
    sender_role: str
    """client, server, or unknown (no handshake captured and no port hint)."""
    src: str
    """Sender ip:port."""
    dst: str
    """Receiver ip:port."""
    flags: str
    """RST or RST,ACK (and any other flag set)."""
    phase: Phase
    """Connection phase when the RST was sent: handshake, established, closing, closed, reset, midstream."""
    seq: int
    """RST sequence number, relative."""
    seq_vs_snd_nxt: int | None
    """RST seq minus the sender's highest sequence seen sent before it (0: exact; >0: the sender had sent
    bytes this capture never saw; None: the sender sent nothing before)."""
    in_flight: int | None
    """Best estimate of the bytes the sender had sent that the peer had not acknowledged when the RST was sent."""
    in_flight_basis: str | None
    """Which estimate ``in_flight`` is: capture (sequence state at the capture point), echoes (lower bound),
    or reply (a RST answering a segment: its sender had no connection state, so nothing in flight)."""
    in_flight_capture: int | None
    """RST seq minus the peer's highest ack seen before the RST at the capture point."""
    in_flight_echoes: int | None
    """RST seq minus the lowest ack among the peer segments that drew echo RSTs (a lower bound)."""
    peer_unacked: int | None
    """Bytes of the peer's data the sender never acknowledged (peer's highest seq minus the RST's ack)."""
    sender_fin_frame: int | None
    """Frame of the sender's FIN before the RST, if any."""
    answers_frame: int | None
    """For a reply-RST, the frame of the peer segment it answers."""
    answers: str | None
    """What that segment was: SYN, SYN-ACK, data, ACK, FIN."""
    primary: int | None
    """For an echo, the frame of the first RST of the connection."""
    syn_retransmissions: int
    synack_retransmissions: int
    synack_after_ack: int
    """SYN-ACKs the server sent after the client had acknowledged one."""
    client_unacked: int | None
    """Bytes the client had sent that the server never acknowledged, at the RST."""
    echoes: int = 0
    """Echo RSTs that followed this one (primary RSTs only)."""
    peer_in_flight: int | None = None
    """Bytes the RST's receiver had sent that the RST's sender had not acknowledged (what the receiver
    may have lost); None when unknown."""
    ttl: int = 0
    """The RST's IP TTL (hop limit) at the capture point."""
    sender_ttl: str | None = None
    """The TTL comparison the origin rests on, e.g. 'TTL 64 vs 63 on 12 of the server's packets'."""
    origin: Origin = Origin.UNDETERMINED
    """endpoint (the address's owner sent it), middlebox (something on the path did), undetermined."""
    origin_findings: tuple[str, ...] = ()
    """The finding ids the origin rests on."""
    sender_segments_after: int = 0
    """Non-RST segments the supposed sender sent after this RST (among the first segments after the
    connection's first RST that are kept: a lower bound)."""
    receiver_segments_after: int = 0
    """Non-RST segments the RST's receiver sent after this RST."""
    idle_before_s: float | None = None
    """Silence on the connection, in seconds, before the segment this RST follows."""
    keepalive_probes: int = 0
    """The sender's unanswered keepalive probes before this RST."""
    keepalive_idle_s: float | None = None
    """Seconds from the peer's last segment to this RST (keepalive resets)."""
    findings: list[str] = field(default_factory=list)
    """Finding ids (see FINDINGS) that hold for this RST."""

    def has(self, finding: str) -> bool:
        return finding in self.findings


def _segment_kind(flags: int | None, payload: int | None) -> str | None:
    if flags is None:
        return None
    if flags & P.SYN:
        return "SYN-ACK" if flags & P.ACK else "SYN"
    if flags & P.FIN:
        return "FIN"
    if payload:
        return "data"
    return "ACK"


def sender_role(conn: Connection, side: Side) -> str:
    """client/server; unknown when the originator was inferred without any port hint."""
    if conn.originator_inferred and not (conn.resp_port < 1024 <= conn.orig_port):
        return "unknown"
    return _ROLE[side]


_ROLE = tuple(side.role for side in Side)
_PEER = tuple(side.peer for side in Side)
"""``Side.role`` and ``Side.peer`` by side (enum properties cost a call each; evidence asks per RST)."""
_flag_names = functools.cache(P.flag_names)


_new, _init_evidence = object.__new__, ResetEvidence.__init__
_SIDE, _PHASE, _STATE, _ORIGIN = (SimpleNamespace(**e.__members__) for e in (Side, Phase, EndpointState, Origin))
"""The members again, for the functions that run per RST: on Python 3.11 ``Side.RESP`` goes through
``EnumType.__getattr__``'s hook (~0.13 µs a read), a namespace's attribute does not (~0.04 µs)."""


IDLE_SECONDS = 3.0
"""Silence before a segment that makes path state (conntrack, NAT, load balancer) a suspect when that
segment draws a RST from the path."""

SEGMENT_MIN = 536
"""The smallest segment size taken for a full one (RFC 9293's default MSS): smaller steps of the peer's
ACKs say nothing of where the sender's data would have gone on."""
CUT_ACK_STEPS = 3
"""Advancing ACKs of the peer, at least, that must all acknowledge whole segments (``rst.transfer_cut_short``)."""
CUT_PAUSE_NS = 1_000_000_000
"""A sender cut short resets soon after the peer acknowledged its last segment: within this much."""


def collect(connections: Iterable[Connection], host_ttl: dict[str, TtlRange] | None = None) -> list[ResetEvidence]:
    """Evidence for every RST of these connections, in capture order.

    ``host_ttl``: per responder address, its TTL range over all its connections (the baseline for a RST
    on a connection where that host sent nothing else)."""
    out: list[ResetEvidence] = []
    for conn in connections:
        out.extend(of_connection(conn, host_ttl or {}))
    out.sort(key=lambda e: e.frame)
    return out


def of_connection(conn: Connection, host_ttl: dict[str, TtlRange]) -> list[ResetEvidence]:
    """Evidence for the RSTs of one connection, in the order it saw them (``collect`` for one connection:
    what a RST's evidence needs never lies in another connection, ``host_ttl`` apart)."""
    items = [_evidence(conn, obs) for obs in conn.resets]
    for obs, ev in zip(conn.resets, items, strict=True):
        _after_reset(conn, obs, ev)
        _origin(conn, obs, ev, host_ttl)
    if len(items) > 1:  # a RST's primary is an earlier RST: a lone RST has no echoes
        _count_echoes(conn, items)
    for ev in items:
        _settle_in_flight(ev)
    return items


def _count_echoes(conn: Connection, items: list[ResetEvidence]) -> None:
    """Each primary RST's echoes, and the in-flight bound they give (:func:`_in_flight_from_echoes`)."""
    observations = {obs.frame: obs for obs in conn.resets}
    by_frame = {e.frame: e for e in items}
    echoed: dict[int, list[RstObservation]] = {}
    for obs, ev in zip(conn.resets, items, strict=True):
        if ev.primary is not None and ev.primary in by_frame and not obs.flags & P.ACK:
            echoed.setdefault(ev.primary, []).append(obs)
            by_frame[ev.primary].echoes += 1
    for primary_frame, echoes in echoed.items():
        primary = by_frame[primary_frame]
        bound = _in_flight_from_echoes(observations[primary_frame], echoes)
        if bound is not None and (primary.in_flight_echoes is None or bound > primary.in_flight_echoes):
            primary.in_flight_echoes = bound


def _data_end(obs: RstObservation) -> int | None:
    """Where the sender's data ended at the RST: its seq, but never beyond what it was seen to send, and
    without the FIN's sequence number (a FIN is not a byte of data).  None if it was never seen."""
    if obs.snd_nxt is None:
        return None
    end = min(obs.seq, obs.snd_nxt)
    return end - 1 if obs.sender_fin_frame is not None and end == obs.snd_nxt else end


def _in_flight_from_echoes(primary: RstObservation, echoes: list[RstObservation]) -> int | None:
    """What the sender had in flight when it reset, judged by the peer's ACKs that drew echoes.

    A bare echo's seq is the ack of the segment that drew it: that segment reached the sender after it
    reset, and so did every segment the peer sent after it (acks only grow).  The lowest echoed ack
    ``low`` therefore bounds what the sender had seen acknowledged: it had seen at most the peer's
    highest ack below ``low`` (or ``low`` itself, when more segments carried it than drew echoes).
    When the peer's recent ACKs do not reach back that far, ``low`` is the answer, a lower bound of
    the data in flight.  Echoes that answer segments captured after the primary RST say nothing
    about this and are left out.  None without such echoes.
    """
    echoed = [e.seq for e in echoes if e.answered_frame is None or e.answered_frame < primary.frame]
    if not echoed:
        return None
    low = min(echoed)
    acks = [ack for _frame, ack in primary.peer_recent_acks]
    below = [a for a in acks if a < low]
    if acks.count(low) > echoed.count(low):
        below.append(low)  # one segment with that ack arrived before the reset
    acked_at_reset = max(below) if below else low
    end = _data_end(primary)
    in_flight = (primary.seq if end is None else end) - acked_at_reset
    return in_flight if in_flight > 0 else None


def _evidence(conn: Connection, obs: RstObservation) -> ResetEvidence:
    # The observation's fields as locals: each is read several times, and this runs once per RST.
    side, flags, seq, ack, snd_nxt, peer_acked = obs.side, obs.flags, obs.seq, obs.ack, obs.snd_nxt, obs.peer_acked
    peer_snd_nxt, answered_frame, answered_payload = obs.peer_snd_nxt, obs.answered_frame, obs.answered_payload
    fin_frame, prior_rst = obs.sender_fin_frame, obs.sender_prior_rst_frame
    first_payload = obs.sender_first_payload_frame
    resp = side is _SIDE.RESP
    findings: list[str] = []
    add = findings.append
    seq_vs = seq - snd_nxt if snd_nxt is not None else None
    in_flight_capture = None
    data_end = _data_end(obs)
    if peer_acked is not None and data_end is not None:
        in_flight_capture = max(0, data_end - peer_acked)
    peer_unacked = None
    if ack is not None and peer_snd_nxt is not None:
        peer_unacked = max(0, peer_snd_nxt - ack)

    answers = _segment_kind(obs.answered_flags, answered_payload)
    ended = obs.phase is _PHASE.CLOSED or (obs.peer_state is _STATE.RESET)
    primary = prior_rst
    if primary is None and ended and answered_frame is not None:
        primary = min((f for frames in conn.rst_frames for f in frames if f < obs.frame), default=None)
    if answered_frame is not None:
        add("rst.answers_segment")
    if answers == "SYN" and snd_nxt is None:  # a SYN-ACK sender answering a SYN is something else
        add("rst.answers_syn")
    if answers == "SYN-ACK" and side is _SIDE.ORIG:
        add("rst.answers_synack")
    if prior_rst is not None:
        add("rst.after_own_reset")
    if ended and answered_frame is not None:
        add("rst.after_connection_closed")
    if fin_frame is not None:
        add("rst.after_own_fin")
        if answered_payload:  # the RST came after the FIN, so the data reached the sender after it
            add("rst.answers_data_after_fin")
    if side is _SIDE.ORIG and obs.sender_state is _STATE.SYN_SENT and obs.peer_state is _STATE.INACTIVE:
        add("rst.after_own_syn_unanswered")
    if flags & P.ACK and seq_vs is not None and seq_vs >= 0 and answers != "SYN":
        # Also a RST|ACK whose numbers make it a reply: with nothing in flight the two readings agree.
        add("rst.at_snd_nxt")
    if seq_vs is not None and seq_vs > 0:
        add("rst.seq_beyond_snd_nxt")
    if answered_frame is None and peer_acked is not None and seq < peer_acked:
        add("rst.seq_below_peer_ack")
    if obs.tcp_auth:
        add("rst.carries_auth_option")
    if obs.payload:
        add("rst.carries_data")
    if flags & (P.SYN | P.FIN):
        add("rst.with_syn_or_fin")
    packets, rst_frames = conn.packets[0] + conn.packets[1], conn.rst_frames
    if packets and packets == len(rst_frames[0]) + len(rst_frames[1]):
        add("rst.only_resets_captured")
    if obs.keepalive_probes and flags & P.ACK:
        add("rst.after_keepalive_probes")
    idle_before_s = None if obs.answered_idle_ns is None else obs.answered_idle_ns / 1e9
    if idle_before_s is not None and idle_before_s >= IDLE_SECONDS:
        add("rst.after_idle")
    if resp and first_payload is None:
        add("rst.before_server_payload")
    if resp and conn.isn[1] is not None and seq_diff(conn.isn[1], obs.seq_raw) == 1:
        add("rst.seq_at_isn_plus_1")
    if peer_unacked:
        add("rst.peer_data_unacknowledged")
    if obs.phase is _PHASE.MIDSTREAM or (not conn.saw_syn and not conn.saw_synack):
        add("rst.midstream")
    if snd_nxt is None:
        add("rst.sender_silent")
    elif (flags & P.ACK and seq_vs == 0 and in_flight_capture == 0 and fin_frame is None and prior_rst is None
          and _transfer_cut_short(obs, data_end)):  # fmt: skip
        add("rst.transfer_cut_short")  # dropped again if echoes show data in flight (_settle_in_flight)
    # A bare reply-RST from a side that had sent data and had not reset before: its socket was already
    # gone.  Without a FIN before, that socket was aborted; after its FIN, it was aborted too when the peer
    # still had its data or FIN to acknowledge and the reply answers no data (data would be late data).
    fin_unacked = snd_nxt is not None and peer_acked is not None and peer_acked < snd_nxt
    primary_missing = (
        not flags & P.ACK  # Linux's own aborts always carry ACK: a bare RST is a reply
        and first_payload is not None
        and prior_rst is None
        and (fin_frame is None or (fin_unacked and not answered_payload))
    )
    in_flight_echoes = None
    if primary_missing:
        add("rst.primary_not_captured")
        sent = snd_nxt - (fin_frame is not None) if snd_nxt is not None else None
        if sent is not None and peer_acked is not None:
            in_flight_capture = max(0, sent - peer_acked)  # at the unseen abort, not at this reply
        if sent is not None:
            # This reply's seq is the ack of a segment that reached the sender after its abort, as an
            # echo's is: the sender had not seen anything acknowledged beyond it.
            in_flight_echoes = max(0, sent - seq) or None
    syn_rx = max(0, len(conn.syn_frames) - 1)
    synack_rx = max(0, obs.synacks_before - 1)
    synack_after_ack = obs.synacks_after_ack_before
    if syn_rx:
        add("handshake.syn_retransmitted")
    if synack_rx:
        add("handshake.synack_retransmitted")
    if synack_after_ack:
        add("handshake.synack_after_ack")
    peer_in_flight = _peer_in_flight(conn, obs)
    client_unacked = None
    if resp:
        client_unacked = peer_unacked if ack is not None else _peer_unacked_bare(obs)
    elif snd_nxt is not None and peer_acked is not None:
        client_unacked = max(0, snd_nxt - peer_acked)
    if client_unacked and resp and first_payload is None:
        add("handshake.client_data_unacknowledged")
    # ResetEvidence.__init__ called directly: calling the class would pack these keywords into a dict
    # and unpack them again (type.__call__), ~1 µs per RST.
    ev = _new(ResetEvidence)
    _init_evidence(
        ev,
        frame=obs.frame,
        time_ns=obs.ts_ns,
        connection=conn.id,
        sender=side,
        sender_role=sender_role(conn, side),
        src=conn.endpoint(side),
        dst=conn.endpoint(_PEER[side]),
        flags=_flag_names(obs.flags),
        phase=obs.phase,
        seq=obs.seq,
        seq_vs_snd_nxt=seq_vs,
        in_flight=None,
        in_flight_basis=None,
        in_flight_capture=in_flight_capture,
        in_flight_echoes=in_flight_echoes,
        peer_unacked=peer_unacked,
        sender_fin_frame=obs.sender_fin_frame,
        answers_frame=obs.answered_frame,
        answers=answers,
        primary=primary,
        syn_retransmissions=syn_rx,
        synack_retransmissions=synack_rx,
        synack_after_ack=synack_after_ack,
        client_unacked=client_unacked,
        peer_in_flight=peer_in_flight,
        ttl=obs.ttl,
        idle_before_s=idle_before_s,
        keepalive_probes=len(obs.keepalive_probes),
        keepalive_idle_s=None if obs.peer_last_ns is None else (obs.ts_ns - obs.peer_last_ns) / 1e9,
        findings=findings,
    )
    return ev


def _transfer_cut_short(obs: RstObservation, data_end: int | None) -> bool:
    """Whether the sender reset in the middle of sending (``rst.transfer_cut_short``).

    Its data is invisible once queued and not sent, but where the sent part ended is not: the peer's last
    ACKs (at least CUT_ACK_STEPS advancing ones) each acknowledged a whole number of segments of one size
    (their steps' greatest common divisor is the smallest step, at least SEGMENT_MIN bytes) up to the
    sender's last byte, and the RST came within CUT_PAUSE_NS of that last ACK.  A transfer that had ended
    would end on a partial segment (1 chance in the segment size not to) and send a FIN on close; a sender
    whose window or congestion window stopped it, and which then closed with unread data or SO_LINGER 0,
    shows exactly this.  What else could: a response whose length is a whole number of segments, aborted
    at once; it is the rare case, and the verdict says what it rests on."""
    acks = obs.peer_recent_acks
    if data_end is None or len(acks) <= CUT_ACK_STEPS or acks[-1][1] != data_end:
        return False
    if obs.peer_last_ns is None or obs.ts_ns - obs.peer_last_ns > CUT_PAUSE_NS:
        return False
    steps = [b - a for (_, a), (_, b) in itertools.pairwise(acks) if b != a]
    if len(steps) < CUT_ACK_STEPS or min(steps) < SEGMENT_MIN:  # a negative step: reordered, say nothing
        return False
    return math.gcd(*steps) == min(steps)


def _peer_unacked_bare(obs: RstObservation) -> int | None:
    """Peer data a bare RST's sender never acknowledged: judged by the sender's own last ack."""
    if obs.peer_snd_nxt is None:
        return None
    acked = obs.sender_acked if obs.sender_acked is not None else 0
    return max(0, obs.peer_snd_nxt - acked)


def _peer_in_flight(conn: Connection, obs: RstObservation) -> int | None:
    """The receiver's data the RST's sender had not acknowledged: by the RST's own ack, else by the
    sender's last ack; the receiver's FIN (and SYN) are not data."""
    if obs.peer_snd_nxt is None:
        return None
    acked = obs.ack if obs.ack is not None else obs.sender_acked
    if acked is None:
        acked = 1 if conn.isn[_PEER[obs.side]] is not None else 0  # nothing acknowledged beyond the SYN
    end = obs.peer_snd_nxt - (1 if obs.peer_fin_frame is not None and acked < obs.peer_snd_nxt else 0)
    return max(0, end - acked)


def _after_reset(conn: Connection, obs: RstObservation, ev: ResetEvidence) -> None:
    """What both sides did after the RST: the facts behind ``ignored`` and a forged RST's origin.

    A real endpoint that reset sends nothing more but reply RSTs.  Its own segments captured after the RST
    may be older ones overtaken on the path (or merged late from another tap); new data, a FIN, or an ack of
    data the peer sent after the RST may not."""
    later = [seg for seg in conn.after_reset if seg.frame > obs.frame] if conn.after_reset else ()
    if later:
        sender = [seg for seg in later if seg.side is obs.side and not seg.flags & P.RST]
        receiver = [seg for seg in later if seg.side is _PEER[obs.side]]
        receiver_own = [seg for seg in receiver if not seg.flags & P.RST]
        ev.sender_segments_after, ev.receiver_segments_after = len(sender), len(receiver_own)
    if ev.answers == "SYN-ACK" and obs.side is Side.ORIG and obs.answered_frame is not None:
        # The client's kernel had no socket for the SYN (sent from a raw socket): it answered the SYN-ACK
        # itself; what the program sends later does not make the RST someone else's.
        ev.findings.append("origin.host_kernel_reply")
        return
    if not later:  # nothing after it: no challenge ACK, nobody went on
        return
    # RFC 5961: the receiver's answer to an in-window RST not at its rcv_nxt repeats its last ACK.
    challenge = next((seg for seg in receiver_own if not seg.payload), None)
    if challenge is not None and challenge.ack is not None and challenge.ack == obs.peer_acked < obs.seq:
        ev.findings.append("rst.challenge_acked")
    snd_nxt = obs.snd_nxt if obs.snd_nxt is not None else obs.seq
    own_ack = obs.ack if obs.ack is not None else obs.sender_acked
    went_on = any(
        seg.seq + seg.payload + bool(seg.flags & P.FIN) > snd_nxt
        or (own_ack is not None and seg.ack is not None and seg.ack > own_ack)
        for seg in sender
    )
    if not went_on:
        return
    ev.findings.append("origin.sender_kept_sending")
    first = sender[0].frame
    if any(seg.flags & P.RST and seg.frame > first for seg in receiver):
        ev.findings.append("rst.receiver_reset_sender_segments")
    elif any(seg.frame > first or seg.flags & P.FIN for seg in receiver_own):
        ev.findings.append("rst.connection_went_on")


def _origin(conn: Connection, obs: RstObservation, ev: ResetEvidence, host_ttl: dict[str, TtlRange]) -> None:
    """Compare the RST's TTL with its supposed sender's packets, then judge the origin (rstscope.origin)."""
    own = conn.ttl[obs.side]
    baseline, whose = own, f"the {ev.sender_role}'s" if ev.sender_role != "unknown" else "its"
    if baseline is None and obs.side is _SIDE.RESP:
        baseline, whose = host_ttl.get(conn.resp_addr), f"{conn.resp_addr}'s"
    comparison = compare_ttl(obs.ttl, baseline, whose=whose)
    ev.findings.append(comparison.finding)
    if obs.ip_id and (obs.ip_id == obs.prev_ip_id or _ip_id_later(conn, obs)):
        ev.findings.append("origin.ip_id_reused")
    sent = own.packets if own is not None else 0
    # Every segment timestamped, as Linux sends them, and an active RST (at snd_nxt).
    linux_like = sent and conn.timestamped[obs.side] == sent and ev.has("rst.at_snd_nxt")
    if linux_like and not obs.has_ts:
        ev.findings.append("origin.options_differ")
    if linux_like and obs.window == 0 and not conn.zero_windows[obs.side]:
        ev.findings.append("origin.window_differs")
    ev.sender_ttl = comparison.detail
    ev.origin, ev.origin_findings = judge(ev.findings)


def _ip_id_later(conn: Connection, obs: RstObservation) -> bool:
    """Whether the RST's sender sent a packet with the RST's IP ID after it."""
    if not conn.after_reset:  # the common case: no generator made
        return False
    return any(seg.ip_id == obs.ip_id and seg.frame > obs.frame and seg.side is obs.side for seg in conn.after_reset)


def _settle_in_flight(ev: ResetEvidence) -> None:
    """Pick the in-flight figure and add the in-flight findings (after echoes are known)."""
    if ev.origin is _ORIGIN.MIDDLEBOX or ev.has("rst.connection_went_on"):
        # The supposed sender did not reset, or the RST changed nothing: its seq says nothing of its data.
        return
    if ev.answers_frame is not None and not ev.has("rst.at_snd_nxt") and not ev.has("rst.primary_not_captured"):
        # A reply-RST comes from a side with no socket (or a listener): nothing of its own in flight.
        ev.in_flight, ev.in_flight_basis = 0, "reply"
        return
    candidates = [(v, basis) for v, basis in ((ev.in_flight_capture, "capture"), (ev.in_flight_echoes, "echoes"))
                  if v is not None]  # fmt: skip
    if not candidates:
        return
    # The larger estimate wins (both are lower bounds of the truth); on a tie, the direct one.
    ev.in_flight, ev.in_flight_basis = max(candidates, key=lambda c: (c[0], c[1] == "capture"))
    if ev.in_flight_echoes:
        ev.findings.append("rst.in_flight_from_echoes")
    if ev.in_flight:
        ev.findings.append("rst.data_in_flight")
        if ev.has("rst.transfer_cut_short"):  # what was lost is seen (echoes): nothing left to infer
            ev.findings.remove("rst.transfer_cut_short")
    else:
        ev.findings.append("rst.nothing_in_flight")
