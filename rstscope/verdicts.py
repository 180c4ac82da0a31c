"""Verdicts: which failure each RST is, as an ordered decision list.

The rules in :data:`RULES` are tried in order and the first that matches
wins; each is one small function whose docstring names the wire signature and
the Linux reset reason (``tcp:tcp_send_reset`` tracepoint) it corresponds to.
A verdict carries the rule that fired and the findings it rested on.

Limitations:

* A capture shows the wire, not the sockets.  It cannot show data the sender
  had queued but not yet sent when it aborted, nor whether the receiver had
  read what arrived, nor what happened inside a server's accept queue.  Those
  are inferred (``handshake.synack_after_ack``) or come from a lab run's kernel
  records and client logs.
* In-flight figures depend on the capture point (see :mod:`rstscope.evidence`).
* A close race where everything the sender had sent was already acknowledged
  looks like a plain abort on the wire: the lost tail was never sent.  Where
  the sender's data ended on a whole segment, acknowledged just before the RST,
  with no FIN (``rst.transfer_cut_short``), it is reported as ``close-race``
  with a caveat; otherwise as ``abort``.  The client's own outcome (lab runs)
  tells them apart.
* A RST bears the endpoint's address whoever sent it.  Rules that blame the
  endpoint (backlog, close-race, refused ...) come after ``middlebox``, which
  fires when the origin (:mod:`rstscope.origin`) says another device sent it;
  where the origin is undetermined their confidence drops, and ``backlog``,
  whose fix changes the server, needs the origin confirmed.

Confidence: ``high`` when the rule's whole signature holds and the origin is
confirmed; ``medium`` with one caveat (origin undetermined, the primary RST
missing, the connection's start outside the capture ...); ``low`` with two or
more, and for ``unknown``.  The reason lists the caveats.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from types import SimpleNamespace
from typing import NamedTuple

from rstscope.connections import Phase, Side
from rstscope.evidence import ResetEvidence
from rstscope.origin import STRONG_MIDDLEBOX, Origin


class Verdict(enum.Enum):
    """The failure a RST belongs to.  Each member carries its definition, its fix and its kernel reasons."""

    def __new__(cls, value: str, definition: str, fix: str, kernel_reasons: tuple[str, ...]):
        member = object.__new__(cls)
        member._value_ = value
        member.definition = definition
        member.fix = fix
        member.kernel_reasons = kernel_reasons
        return member

    IGNORED = (
        "ignored",
        "A RST that did not end the connection: both sides went on after it. The receiver dropped it (outside "
        "its window, not at its next expected byte, or a TCP-MD5/AO signature it rejects) or never got it. "
        "Not a failure: nothing was lost.",
        "Nothing to fix in the endpoints; if RSTs keep appearing, find who sends them (see 'origin').",
        (),
    )
    MIDDLEBOX = (
        "middlebox",
        "A RST the endpoint whose address it bears did not send: a firewall's reject (at the SYN or "
        "mid-connection), a conntrack/NAT/load-balancer whose state for the connection expired, or an "
        "injector.",
        "Look at the device on the path (firewall rules, idle timeouts, IPS), not at the endpoints.",
        (),
    )
    KEEPALIVE = (
        "keepalive",
        "The sender's keepalive probes went unanswered, so its kernel gave up on the connection and reset it.",
        "Find why the peer stopped answering (host gone, a middlebox dropping the idle flow): keepalive only "
        "detected it.",
        ("TCP_KEEPALIVE_TIMEOUT",),
    )
    BACKLOG = (
        "backlog",
        "The listener reset a connection it never accepted: the accept queue was full.",
        "Raise the listen backlog (listen(fd, N)) and net.core.somaxconn, or accept faster.",
        ("INVALID_SYN", "TCP_FLAGS"),
    )
    CLOSE_RACE = (
        "close-race",
        "A side closed while it still had data in flight (typically with unread data in its receive buffer), "
        "so Linux sent RST instead of FIN: the peer loses the tail and sees ECONNRESET.",
        "Use a lingering close: shutdown(SHUT_WR), read until EOF or a timeout, then close() "
        "(Apache's lingering_close, nginx 'lingering_close on').",
        ("TCP_ABORT_ON_CLOSE", "TCP_STATE", "TCP_ABORT_ON_LINGER", "TCP_DISCONNECT_WITH_DATA"),
    )
    ABORT = (
        "abort",
        "An abortive close with nothing of the sender's in flight (SO_LINGER 0 on an idle connection, "
        "a client giving up).",
        "Usually harmless; if the peer reports ECONNRESET, close with FIN instead of SO_LINGER 0.",
        ("TCP_STATE", "TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_LINGER", "NO_SOCKET"),
    )
    LATE_DATA = (
        "late-data",
        "The sender had already closed with FIN, and the peer sent data afterwards: the closed socket "
        "answered it with RST.",
        "Have the peer stop sending before the close (protocol framing), or close with a lingering close.",
        ("TCP_ABORT_ON_DATA", "TCP_TIMEWAIT_SOCKET", "NO_SOCKET", "TCP_FLAGS"),
    )
    REFUSED = (
        "refused",
        "The RST answers a SYN: nothing listened on that port (connection refused).",
        "Start the server, or connect to the right port.",
        ("NO_SOCKET",),
    )
    ECHO = (
        "echo",
        "A reply to a segment of a connection the sender had already reset or torn down; 'primary' is "
        "the first RST. Not a new failure.",
        "Fix the primary reset.",
        ("TCP_FLAGS", "NO_SOCKET", "TCP_TIMEWAIT_SOCKET"),
    )
    STALE = (
        "stale",
        "The RST answers a segment of a connection whose start and end are not in the capture: "
        "the sender no longer knew it.",
        "Look earlier: capture from before the connection began.",
        ("NO_SOCKET", "TCP_FLAGS"),
    )
    LONE = (
        "lone",
        "Only RSTs of this connection are in the capture: no packet around them tells why.",
        "Capture from before the connection began, and in both directions (or at both ends).",
        (),
    )
    UNKNOWN = (
        "unknown",
        "Not enough evidence to classify this RST; its evidence is still listed.",
        "Capture at the other end too, or reproduce it with 'rstscope lab'.",
        (),
    )


class Confidence(enum.Enum):
    HIGH = "high"
    """The rule's whole signature holds and the RST's origin is confirmed."""
    MEDIUM = "medium"
    """One caveat (see ``confidence_reason``)."""
    LOW = "low"
    """Two or more caveats, or no rule matched."""


class Decision(NamedTuple):
    """A RST's verdict and why (a named tuple: made once per RST, a frozen dataclass costs ~2 µs more)."""

    verdict: Verdict
    rule: str
    """Name of the rule that fired."""
    findings: tuple[str, ...]
    """The finding ids the rule rested on."""
    explanation: str
    """One line a person can paste into a ticket."""
    confidence: Confidence = Confidence.LOW
    confidence_reason: str = ""
    """Why the confidence is what it is: the caveats, or what confirmed the verdict."""
    fix: str = ""
    """What to do: the verdict's fix, made specific where the evidence allows (a middlebox's kind)."""


Rule = Callable[[ResetEvidence], tuple[str, ...] | None]
"""A rule returns the findings it used when it matches, None otherwise."""


def _need(ev: ResetEvidence, *ids: str) -> tuple[str, ...] | None:
    """``ids`` when the RST has all these findings, else None."""
    findings = ev.findings
    for i in ids:  # a loop, not all() over a generator: rules run ~8 times per RST
        if i not in findings:
            return None
    return ids


def ignored(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A RST after which both sides went on: the supposed sender kept sending (it never reset) and the
    receiver kept answering normally (it dropped the RST: outside its window, not at rcv_nxt so it sent
    a challenge ACK (RFC 5961), or a failed TCP-MD5/AO signature). Kernel: no tcp_send_reset at the
    supposed sender; the receiver counts TcpExtTCPChallengeACK or TCPMD5Failure."""
    return _need(ev, "origin.sender_kept_sending", "rst.connection_went_on")


def middlebox(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A RST whose origin is another device (``rstscope.origin``): its TTL is not its sender's, or the
    supposed sender went on after it. Kernel: no tcp_send_reset at either endpoint; the middlebox counts
    it (nft rule counters, conntrack)."""
    return ev.origin_findings if ev.origin is Origin.MIDDLEBOX else None


def refused(ev: ResetEvidence) -> tuple[str, ...] | None:
    """RST|ACK answering a SYN (ack = SYN seq + 1). Kernel: NO_SOCKET, no listener on the port."""
    return _need(ev, "rst.answers_syn")


def echo(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A reply-RST from a side that had already sent a RST on this connection, or to a segment of a
    connection that had already ended (both FINs, or the peer's reset); ``primary`` is the connection's
    first RST, null when it ended with FINs. Kernel: TCP_FLAGS in LISTEN (the socket is gone, the
    listener answers), NO_SOCKET, TCP_TIMEWAIT_SOCKET."""
    if ev.primary is not None and ev.has("rst.after_own_reset"):
        return ("rst.after_own_reset",)
    return _need(ev, "rst.after_connection_closed")


def stale(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A reply-RST on a connection whose handshake is not in the capture, from a side that had sent
    nothing else: the start and end are both outside the capture. Kernel: NO_SOCKET."""
    return _need(ev, "rst.midstream", "rst.answers_segment", "rst.sender_silent")


def lone(ev: ResetEvidence) -> tuple[str, ...] | None:
    """The connection's only packets in the capture are RSTs (a capture started late, a one-way capture,
    a crafted probe): a statement about the capture, not about the failure. Kernel: any."""
    return _need(ev, "rst.only_resets_captured")


def backlog(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A bare RST from the server answering the client's handshake ACK or first data, with seq at the
    server's ISN+1 and no server payload before it (often after SYN-ACK retransmissions). Kernel:
    INVALID_SYN in LISTEN (tcp_abort_on_overflow=1) or TCP_FLAGS in LISTEN (the handshake expired
    after the accept queue silently dropped it). A firewall rejecting the handshake's ACK writes the same
    numbers, so the origin must be confirmed: its fix changes the server."""
    if ev.sender is not Side.RESP or "ACK" in ev.flags.split(",") or ev.origin is not Origin.ENDPOINT:
        return None
    return _need(ev, "rst.answers_segment", "rst.before_server_payload", "rst.seq_at_isn_plus_1")


def late_data(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A RST after the sender's own FIN, answering data the peer sent after that FIN. Kernel:
    TCP_ABORT_ON_DATA (FIN_WAIT), TCP_TIMEWAIT_SOCKET (FIN_WAIT2 mini-socket), NO_SOCKET once gone.
    Also when the late data carried the peer's own FIN (the connection looks closed by then)."""
    if ev.has("rst.after_own_reset"):
        return None
    return _need(ev, "rst.after_own_fin", "rst.answers_data_after_fin")


def keepalive(ev: ResetEvidence) -> tuple[str, ...] | None:
    """An active RST|ACK at the sender's snd_nxt after its keepalive probes (one byte below snd_nxt)
    went unanswered. Kernel: TCP_KEEPALIVE_TIMEOUT."""
    return _need(ev, "rst.after_keepalive_probes", "rst.at_snd_nxt")


def close_race(ev: ResetEvidence) -> tuple[str, ...] | None:
    """An active RST|ACK at the sender's snd_nxt while the peer had not acknowledged data the sender had
    sent (also after the sender's own FIN: shutdown(SHUT_WR) then close() with unread data); or, when that
    RST|ACK is missing from the capture, the first bare reply-RST of a sender that had data in flight; or
    an active RST|ACK with nothing in flight that cut a transfer short (its data ended on a whole segment,
    acknowledged just before: what it had queued was never sent).
    Kernel: TCP_ABORT_ON_CLOSE (close() with unread data, also from FIN_WAIT1), TCP_STATE (SO_LINGER 0),
    TCP_DISCONNECT_WITH_DATA."""
    return (
        _need(ev, "rst.at_snd_nxt", "rst.data_in_flight")
        or _need(ev, "rst.primary_not_captured", "rst.data_in_flight")
        or _need(ev, "rst.at_snd_nxt", "rst.nothing_in_flight", "rst.transfer_cut_short")
    )


def abort(ev: ResetEvidence) -> tuple[str, ...] | None:
    """An active RST|ACK at the sender's snd_nxt with nothing in flight, or a client's RST answering a
    SYN-ACK (it gave up). Kernel: TCP_STATE (SO_LINGER 0), TCP_ABORT_ON_CLOSE with nothing at risk,
    NO_SOCKET for the client that gave up."""
    return (
        _need(ev, "rst.at_snd_nxt", "rst.nothing_in_flight")
        or _need(ev, "rst.primary_not_captured", "rst.nothing_in_flight")
        or _need(ev, "rst.answers_synack")
        or _need(ev, "rst.after_own_syn_unanswered")
    )


RULES: tuple[tuple[Verdict, Rule], ...] = (
    (Verdict.IGNORED, ignored),
    (Verdict.LATE_DATA, late_data),
    (Verdict.ECHO, echo),
    (Verdict.MIDDLEBOX, middlebox),
    (Verdict.REFUSED, refused),
    (Verdict.STALE, stale),
    (Verdict.LONE, lone),
    (Verdict.BACKLOG, backlog),
    (Verdict.KEEPALIVE, keepalive),
    (Verdict.CLOSE_RACE, close_race),
    (Verdict.ABORT, abort),
)
"""The decision list, first match wins; anything left is UNKNOWN."""


_VERDICT, _ORIGIN, _CONFIDENCE = (SimpleNamespace(**e.__members__) for e in (Verdict, Origin, Confidence))
"""The members again, for the functions below that run per RST and compare up to a dozen (why: see
``evidence._SIDE``)."""


def classify(ev: ResetEvidence) -> Decision:
    verdict, rule_name, used = _VERDICT.UNKNOWN, "none", ()
    for candidate, rule in RULES:
        found = rule(ev)
        if found is not None:
            verdict, rule_name, used = candidate, rule.__name__, found
            break
    level, reason = confidence(verdict, ev)
    return Decision(verdict=verdict, rule=rule_name, findings=used, explanation=explain(verdict, ev),
                    confidence=level, confidence_reason=reason, fix=fix(verdict, ev))  # fmt: skip


_BLAMES_ENDPOINT = (Verdict.REFUSED, Verdict.STALE, Verdict.BACKLOG, Verdict.LATE_DATA, Verdict.KEEPALIVE,
                    Verdict.CLOSE_RACE, Verdict.ABORT)  # fmt: skip
"""Verdicts that say the endpoint whose address the RST bears sent it (a tuple: an Enum hashes in Python)."""


def confidence(verdict: Verdict, ev: ResetEvidence) -> tuple[Confidence, str]:
    """How far the verdict can be trusted, and why (see the module docstring)."""
    if verdict is _VERDICT.UNKNOWN:
        return _CONFIDENCE.LOW, "no rule's signature matched"
    if verdict is _VERDICT.LONE:
        return _CONFIDENCE.LOW, "nothing of the connection but its RSTs is in the capture"
    if verdict is _VERDICT.IGNORED:
        return _CONFIDENCE.HIGH, "both sides went on with the connection after the RST"
    if verdict is _VERDICT.MIDDLEBOX:
        strong = [f for f in ev.origin_findings if f in STRONG_MIDDLEBOX]
        if strong:
            return _CONFIDENCE.HIGH, f"origin: {', '.join(strong)} ({ev.sender_ttl})"
        return _CONFIDENCE.MEDIUM, f"only the TTL points elsewhere, by one hop ({ev.sender_ttl}): so can a path change"
    caveats = []
    if verdict in _BLAMES_ENDPOINT and ev.origin is _ORIGIN.UNDETERMINED:
        caveats.append(f"origin not confirmed ({ev.sender_ttl})")
    if verdict is _VERDICT.ECHO and ev.primary is None:
        caveats.append("the connection had ended before; no primary RST")
    if verdict is _VERDICT.STALE:
        caveats.append("the connection's start and end are outside the capture")
    if ev.has("rst.primary_not_captured"):
        caveats.append("the abort's own RST is not in the capture")
    if verdict is _VERDICT.CLOSE_RACE and ev.has("rst.transfer_cut_short"):
        caveats.append("the lost data was never sent: inferred from a transfer ending on a whole segment")
    if not caveats:
        confirmed = f"; sent by the {ev.sender_role} ({ev.sender_ttl})" if ev.origin is _ORIGIN.ENDPOINT else ""
        return _CONFIDENCE.HIGH, f"the rule's whole signature holds{confirmed}"
    return (_CONFIDENCE.MEDIUM if len(caveats) == 1 else _CONFIDENCE.LOW), "; ".join(caveats)


class MiddleboxKind(enum.Enum):
    """What kind of device most likely sent a middlebox RST, from the evidence around it."""

    REJECT_AT_SYN = "reject at the SYN"
    IDLE_TIMEOUT = "idle timeout"
    INJECTION = "injection"
    REJECT_MID_CONNECTION = "reject mid-connection"


def middlebox_kind(ev: ResetEvidence) -> MiddleboxKind:
    if ev.answers == "SYN":
        return MiddleboxKind.REJECT_AT_SYN
    if ev.has("rst.after_idle"):
        return MiddleboxKind.IDLE_TIMEOUT
    if ev.has("origin.sender_kept_sending"):
        return MiddleboxKind.INJECTION
    return MiddleboxKind.REJECT_MID_CONNECTION


_MIDDLEBOX_FIXES = {
    MiddleboxKind.REJECT_AT_SYN: "A firewall on the path rejects connections to this port (the host itself did not "
                                 "refuse): check its rules.",
    MiddleboxKind.IDLE_TIMEOUT: "Send keepalives (TCP keepalive or application pings) more often than the "
                                "middlebox's idle timeout, or raise that timeout.",
    MiddleboxKind.INJECTION: "Find the device that injects resets (IPS, load balancer, censor); TLS does not stop "
                             "it, TCP-AO does.",
    MiddleboxKind.REJECT_MID_CONNECTION: "A firewall or IPS on the path rejected this connection mid-way: check its "
                                         "rules and logs for this flow.",
}  # fmt: skip


def fix(verdict: Verdict, ev: ResetEvidence) -> str:
    """The verdict's fix, specific to the middlebox's kind where there is one."""
    if verdict is _VERDICT.MIDDLEBOX:
        return _MIDDLEBOX_FIXES[middlebox_kind(ev)]
    return verdict.fix


def _bytes(n: int | None) -> str:
    return "an unknown number of bytes" if n is None else f"{n:,} bytes"


_PEER_ROLE = {"client": "server", "server": "client"}


def explain(verdict: Verdict, ev: ResetEvidence) -> str:
    """One plain line about this RST, for a ticket."""
    who = ev.sender_role if ev.sender_role != "unknown" else "one side"
    peer = _PEER_ROLE.get(ev.sender_role, "the peer")
    if verdict is _VERDICT.IGNORED:
        why = []
        if ev.has("rst.challenge_acked"):
            why.append("the receiver answered it with a challenge ACK (RFC 5961)")
        if ev.has("rst.seq_beyond_snd_nxt") or ev.has("rst.seq_below_peer_ack"):
            why.append("its seq was outside the receiver's window")
        if ev.has("rst.carries_auth_option"):
            why.append("it carried a TCP-MD5/AO option")
        tail = f" ({'; '.join(why)})" if why else ""
        return (f"A RST bearing {ev.src}'s address changed nothing{tail}: the {who} sent at least "
                f"{ev.sender_segments_after} more segments and the {peer} went on with the connection.")  # fmt: skip
    if verdict is _VERDICT.MIDDLEBOX:
        kind = middlebox_kind(ev)
        facts = []
        if ev.has("origin.sender_kept_sending"):
            facts.append(f"the {who} sent at least {ev.sender_segments_after} more segments after it")
        if any(f.startswith("origin.ttl_") and f != "origin.ttl_matches_sender" for f in ev.origin_findings):
            facts.append(ev.sender_ttl or "its TTL is not the sender's")
        if ev.has("rst.receiver_reset_sender_segments"):
            facts.append(f"the {peer} then reset the {who}'s segments")
        detail = {
            MiddleboxKind.IDLE_TIMEOUT: f"after {ev.idle_before_s or 0:.1f} s idle, a middlebox idle timeout "
                                        "(conntrack, NAT, load balancer) is likely",
            MiddleboxKind.REJECT_AT_SYN: "a firewall rejected the SYN",
            MiddleboxKind.INJECTION: "the RST was injected",
            MiddleboxKind.REJECT_MID_CONNECTION: "a firewall or IPS rejected the connection mid-way",
        }[kind]  # fmt: skip
        return f"The {who} ({ev.src}) did not send this RST ({'; '.join(facts)}): {detail}."
    if verdict is _VERDICT.KEEPALIVE:
        idle = f" {ev.keepalive_idle_s:.1f} s after the {peer}'s last segment" if ev.keepalive_idle_s else ""
        return (f"The {who} ({ev.src}) reset the connection after {ev.keepalive_probes} keepalive probes went "
                f"unanswered{idle}: the {peer}, or the path to it, was gone.")  # fmt: skip
    if verdict is _VERDICT.BACKLOG:
        extra = []
        if ev.synack_after_ack:
            extra.append(f"SYN-ACK resent {ev.synack_after_ack}x after the client's ACK")
        if ev.client_unacked:
            extra.append(f"{ev.client_unacked:,} request bytes never acknowledged")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return (f"The server ({ev.src}) reset a connection it never accepted{tail}: its listen backlog "
                f"overflowed.")  # fmt: skip
    if verdict is _VERDICT.CLOSE_RACE:
        basis = " (lower bound, from echo RSTs)" if ev.in_flight_basis == "echoes" else ""
        if ev.has("rst.primary_not_captured"):
            basis += " (its own RST is not in the capture: this is the reply to the peer's next segment)"
        if ev.has("rst.transfer_cut_short"):  # only with nothing in flight (_settle_in_flight drops it otherwise)
            return (f"The {who} ({ev.src}) aborted the connection in the middle of sending: all it had sent was "
                    f"acknowledged, but its data ended on a whole segment just before the RST and no FIN came, so "
                    f"it most likely still had data queued, which the RST discarded: the {peer} gets ECONNRESET "
                    f"before the end.")  # fmt: skip
        if ev.sender_fin_frame is not None:
            return (f"The {who} ({ev.src}) sent its FIN (frame {ev.sender_fin_frame}), then aborted while "
                    f"{_bytes(ev.in_flight)}{basis} it had sent were unacknowledged: none of it is retransmitted "
                    f"after the reset, so the {peer} loses whatever of it the path dropped (with nothing "
                    f"dropped it reads all, then EOF).")  # fmt: skip
        return (f"The {who} ({ev.src}) aborted the connection instead of closing it while "
                f"{_bytes(ev.in_flight)}{basis} it had sent were unacknowledged: the {peer} loses the tail "
                f"and gets ECONNRESET.")  # fmt: skip
    if verdict is _VERDICT.ABORT:
        if ev.has("rst.answers_synack"):
            return f"The client ({ev.src}) answered the server's SYN-ACK with RST: it had given up."
        if ev.has("rst.after_own_syn_unanswered"):
            return f"The client ({ev.src}) reset its own connection attempt before the server answered."
        return f"The {who} ({ev.src}) aborted the connection with RST; nothing it had sent was unacknowledged."
    if verdict is _VERDICT.LATE_DATA:
        return (f"The {who} ({ev.src}) had closed with FIN (frame {ev.sender_fin_frame}); the {peer} kept "
                f"sending, and the closed socket answered with RST.")  # fmt: skip
    if verdict is _VERDICT.REFUSED:
        return f"Nothing listened on {ev.src}: the SYN was refused with RST."
    if verdict is _VERDICT.ECHO:
        if ev.primary is None:
            return f"{ev.src} answered a segment of a connection that had already closed: not a new failure."
        return f"Echo of the reset in frame {ev.primary}: {ev.src} no longer knew the connection."
    if verdict is _VERDICT.STALE:
        return f"{ev.src} did not know this connection (it began before the capture) and answered with RST."
    if verdict is _VERDICT.LONE:
        return (f"RST from {ev.src}: the capture holds nothing else of this connection, so nothing says why "
                f"(capture from its start, in both directions).")  # fmt: skip
    return f"RST from {ev.src} in phase {ev.phase.value}: not enough evidence to say why."


def is_loss_verdict(verdict: Verdict) -> bool:
    """Verdicts under which the RST's receiver may have lost data."""
    return verdict in (Verdict.CLOSE_RACE, Verdict.BACKLOG)


__all__ = ["RULES", "Confidence", "Decision", "Phase", "Verdict", "classify", "explain"]
