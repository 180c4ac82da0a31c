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
  looks like a plain abort on the wire: the lost tail was never sent.  It is
  reported as ``abort``; the client's own outcome (lab runs) tells them apart.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from rstscope.connections import Phase, Side
from rstscope.evidence import ResetEvidence


class Verdict(enum.Enum):
    """The failure a RST belongs to.  Each member carries its definition, its fix and its kernel reasons."""

    def __new__(cls, value: str, definition: str, fix: str, kernel_reasons: tuple[str, ...]):
        member = object.__new__(cls)
        member._value_ = value
        member.definition = definition
        member.fix = fix
        member.kernel_reasons = kernel_reasons
        return member

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
    UNKNOWN = (
        "unknown",
        "Not enough evidence to classify this RST; its evidence is still listed.",
        "Capture at the other end too, or reproduce it with 'rstscope lab'.",
        (),
    )


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    rule: str
    """Name of the rule that fired."""
    findings: tuple[str, ...]
    """The finding ids the rule rested on."""
    explanation: str
    """One line a person can paste into a ticket."""


Rule = Callable[[ResetEvidence], tuple[str, ...] | None]
"""A rule returns the findings it used when it matches, None otherwise."""


def _need(ev: ResetEvidence, *ids: str) -> tuple[str, ...] | None:
    return ids if all(ev.has(i) for i in ids) else None


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


def backlog(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A bare RST from the server answering the client's handshake ACK or first data, with seq at the
    server's ISN+1 and no server payload before it (often after SYN-ACK retransmissions). Kernel:
    INVALID_SYN in LISTEN (tcp_abort_on_overflow=1) or TCP_FLAGS in LISTEN (the handshake expired
    after the accept queue silently dropped it)."""
    if ev.sender is not Side.RESP or "ACK" in ev.flags.split(","):
        return None
    return _need(ev, "rst.answers_segment", "rst.before_server_payload", "rst.seq_at_isn_plus_1")


def late_data(ev: ResetEvidence) -> tuple[str, ...] | None:
    """A RST after the sender's own FIN, answering data the peer sent after that FIN. Kernel:
    TCP_ABORT_ON_DATA (FIN_WAIT), TCP_TIMEWAIT_SOCKET (FIN_WAIT2 mini-socket), NO_SOCKET once gone."""
    return _need(ev, "rst.after_own_fin", "rst.answers_data_after_fin")


def close_race(ev: ResetEvidence) -> tuple[str, ...] | None:
    """An active RST|ACK at the sender's snd_nxt, no FIN before it, while the peer had not acknowledged
    data the sender had sent; or, when that RST|ACK is missing from the capture, the first bare reply-RST
    of a sender that had data in flight. Kernel: TCP_ABORT_ON_CLOSE (close() with unread data),
    TCP_STATE (SO_LINGER 0), TCP_DISCONNECT_WITH_DATA."""
    if ev.sender_fin_frame is not None:
        return None
    return _need(ev, "rst.at_snd_nxt", "rst.data_in_flight") or _need(
        ev, "rst.primary_not_captured", "rst.data_in_flight"
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
    (Verdict.REFUSED, refused),
    (Verdict.ECHO, echo),
    (Verdict.STALE, stale),
    (Verdict.BACKLOG, backlog),
    (Verdict.LATE_DATA, late_data),
    (Verdict.CLOSE_RACE, close_race),
    (Verdict.ABORT, abort),
)
"""The decision list, first match wins; anything left is UNKNOWN."""


def classify(ev: ResetEvidence) -> Decision:
    for verdict, rule in RULES:
        used = rule(ev)
        if used is not None:
            return Decision(verdict=verdict, rule=rule.__name__, findings=used, explanation=explain(verdict, ev))
    return Decision(verdict=Verdict.UNKNOWN, rule="none", findings=(), explanation=explain(Verdict.UNKNOWN, ev))


def _bytes(n: int | None) -> str:
    return "an unknown number of bytes" if n is None else f"{n:,} bytes"


def explain(verdict: Verdict, ev: ResetEvidence) -> str:
    """One plain line about this RST, for a ticket."""
    who = ev.sender_role if ev.sender_role != "unknown" else "one side"
    peer = {"client": "server", "server": "client"}.get(ev.sender_role, "the peer")
    if verdict is Verdict.BACKLOG:
        extra = []
        if ev.synack_after_ack:
            extra.append(f"SYN-ACK resent {ev.synack_after_ack}x after the client's ACK")
        if ev.client_unacked:
            extra.append(f"{ev.client_unacked:,} request bytes never acknowledged")
        tail = f" ({'; '.join(extra)})" if extra else ""
        return (f"The server ({ev.src}) reset a connection it never accepted{tail}: its listen backlog "
                f"overflowed.")  # fmt: skip
    if verdict is Verdict.CLOSE_RACE:
        basis = " (lower bound, from echo RSTs)" if ev.in_flight_basis == "echoes" else ""
        if ev.has("rst.primary_not_captured"):
            basis += " (its own RST is not in the capture: this is the reply to the peer's next segment)"
        return (f"The {who} ({ev.src}) aborted the connection instead of closing it while "
                f"{_bytes(ev.in_flight)}{basis} it had sent were unacknowledged: the {peer} loses the tail "
                f"and gets ECONNRESET.")  # fmt: skip
    if verdict is Verdict.ABORT:
        if ev.has("rst.answers_synack"):
            return f"The client ({ev.src}) answered the server's SYN-ACK with RST: it had given up."
        if ev.has("rst.after_own_syn_unanswered"):
            return f"The client ({ev.src}) reset its own connection attempt before the server answered."
        return f"The {who} ({ev.src}) aborted the connection with RST; nothing it had sent was unacknowledged."
    if verdict is Verdict.LATE_DATA:
        return (f"The {who} ({ev.src}) had closed with FIN (frame {ev.sender_fin_frame}); the {peer} kept "
                f"sending, and the closed socket answered with RST.")  # fmt: skip
    if verdict is Verdict.REFUSED:
        return f"Nothing listened on {ev.src}: the SYN was refused with RST."
    if verdict is Verdict.ECHO:
        if ev.primary is None:
            return f"{ev.src} answered a segment of a connection that had already closed: not a new failure."
        return f"Echo of the reset in frame {ev.primary}: {ev.src} no longer knew the connection."
    if verdict is Verdict.STALE:
        return f"{ev.src} did not know this connection (it began before the capture) and answered with RST."
    return f"RST from {ev.src} in phase {ev.phase.value}: not enough evidence to say why."


def is_loss_verdict(verdict: Verdict) -> bool:
    """Verdicts under which the RST's receiver may have lost data."""
    return verdict in (Verdict.CLOSE_RACE, Verdict.BACKLOG)


__all__ = ["RULES", "Decision", "Phase", "Verdict", "classify", "explain"]
