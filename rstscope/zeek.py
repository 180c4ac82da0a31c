"""Zeek's view of a connection: ``conn_state``, byte counts, and conn.log rows.

Zeek (https://zeek.org) summarises every TCP connection in ``conn.log`` with a
``conn_state`` code and a ``history`` string.  rstscope computes both the way
Zeek defines them, so a capture can be read side by side with Zeek's logs:

* the endpoint states come from the tracker's state table
  (:data:`rstscope.connections.TRANSITIONS`, Zeek's transitions), and
  :func:`conn_state` is Zeek's decision list over the two final states
  (``scripts/base/protocols/conn/main.zeek``, ``conn_state()``);
* the history letters are written by the tracker
  (:data:`rstscope.connections.HISTORY_LETTERS`);
* :func:`stream_size` is Zeek's ``TCP_Endpoint::Size()``: sequence space, not
  payload counted packet by packet.

Limits (measured against Zeek's own test baselines in ``docs/zeek-agreement.md``):
checksums are not verified (Zeek without ``-C`` ignores bad-checksum packets
and logs ``C``), segments are not reassembled (no ``G`` letters, no
``missed_bytes``), ``service`` is not detected, ``orig_ip_bytes`` /
``resp_ip_bytes`` need the IP total length, which the tracker does not sum
yet, and connections are split by SYN sequence numbers only: Zeek also ends a
connection on its timers (5 s after a close or an unanswered SYN, inactivity
timeouts) and starts a new one at a SYN after a close.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from rstscope.connections import Connection, EndpointState, Side

S = EndpointState


class ConnState(enum.Enum):
    """Zeek's ``conn_state`` codes for TCP, each with Zeek's definition (paraphrased from ``main.zeek``)."""

    def __new__(cls, value: str, definition: str):
        member = object.__new__(cls)
        member._value_ = value
        member.definition = definition
        return member

    S0 = ("S0", "Connection attempt seen (SYN), no reply.")
    S1 = ("S1", "Connection established, not terminated.")
    SF = ("SF", "Normal establishment and termination: both sides closed.")
    REJ = (
        "REJ",
        "Connection attempt rejected: the responder reset it while the originator was still in its handshake.",
    )
    S2 = ("S2", "Established; the originator attempted to close, no reply from the responder.")
    S3 = ("S3", "Established; the responder attempted to close, no reply from the originator.")
    RSTO = ("RSTO", "Established; the originator aborted it (sent a RST).")
    RSTR = ("RSTR", "The responder sent a RST.")
    RSTOS0 = ("RSTOS0", "The originator sent a SYN followed by a RST; no SYN-ACK from the responder.")
    RSTRH = ("RSTRH", "The responder sent a SYN-ACK followed by a RST; no SYN from the (purported) originator.")
    SH = ("SH", "The originator sent a SYN followed by a FIN (half-open); no SYN-ACK from the responder.")
    SHR = ("SHR", "The responder sent a SYN-ACK followed by a FIN; no SYN from the originator.")
    OTH = ("OTH", "No SYN seen, just midstream traffic; and whatever matches no rule above.")


_RSTOS0_HISTORY = re.compile(r"\^?S[^HAFGIQ]*R.*")
"""Zeek's pattern: the originator's SYN, later its RST, and none of its H, A, F, G, I, Q in between."""


def conn_state(conn: Connection) -> ConnState:
    """Zeek's ``conn_state()``: an ordered decision list over the two endpoints' final states."""
    orig, resp = conn.state
    orig_silent = orig in (S.INACTIVE, S.PARTIAL)  # Zeek's "o_inactive": no handshake from the originator
    resp_silent = resp in (S.INACTIVE, S.PARTIAL)
    if resp is S.RESET:
        no_payload = stream_size(conn, Side.ORIG) == 0 and stream_size(conn, Side.RESP) == 0
        if orig in (S.SYN_SENT, S.SYN_ACK_SENT) or (orig is S.RESET and no_payload):
            return ConnState.REJ
        return ConnState.RSTRH if orig_silent else ConnState.RSTR
    if orig is S.RESET:
        if not resp_silent:
            return ConnState.RSTO
        return ConnState.RSTOS0 if _RSTOS0_HISTORY.fullmatch(conn.history_text) else ConnState.OTH
    if orig is S.CLOSED and resp is S.CLOSED:
        return ConnState.SF
    if orig is S.CLOSED:
        return ConnState.SH if resp_silent else ConnState.S2
    if resp is S.CLOSED:
        return ConnState.SHR if orig_silent else ConnState.S3
    if orig is S.SYN_SENT and resp is S.INACTIVE:
        return ConnState.S0
    if orig is S.ESTABLISHED and resp is S.ESTABLISHED:
        return ConnState.S1
    return ConnState.OTH


def stream_size(conn: Connection, side: Side) -> int:
    """Zeek's ``orig_bytes`` / ``resp_bytes``: the sequence space a side covered, less its SYN and FIN.

    From sequence numbers, so retransmissions count once and bytes the capture missed count too
    (Zeek also extends it to what the peer acknowledged; the tracker keeps that only as far as the
    last RST or FIN rows: see ``docs/zeek-agreement.md``)."""
    return conn.stream_bytes[side]


# --------------------------------------------------------------------------- conn.log rows


@dataclass(kw_only=True, frozen=True)
class ConnLogRow:
    """One conn.log row.  None is Zeek's unset value (``-``)."""

    ts: float
    """Time of the connection's first packet (seconds since the epoch)."""
    uid: str
    """A stable id derived from the connection (Zeek's are random)."""
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    duration: float | None
    """Last packet minus first, None for a single-packet connection (as Zeek)."""
    orig_bytes: int
    resp_bytes: int
    conn_state: str
    history: str
    orig_pkts: int
    resp_pkts: int
    proto: str = "tcp"
    service: str | None = None
    """Not detected: rstscope does no protocol analysis."""
    local_orig: bool | None = None
    local_resp: bool | None = None
    missed_bytes: int | None = None
    """Unknown: segments are not reassembled."""
    orig_ip_bytes: int | None = None
    """Unknown until the tracker sums IP total lengths."""
    resp_ip_bytes: int | None = None
    tunnel_parents: str | None = None


CONN_LOG_FIELDS = (
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"), ("duration", "interval"),
    ("orig_bytes", "count"), ("resp_bytes", "count"), ("conn_state", "string"), ("local_orig", "bool"),
    ("local_resp", "bool"), ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"),
)  # fmt: skip
"""conn.log's ``#fields`` and ``#types``, in Zeek's column order."""


def conn_log_row(conn: Connection) -> ConnLogRow:
    duration = (conn.end_ns - conn.start_ns) / 1e9
    return ConnLogRow(
        ts=conn.start_ns / 1e9,
        uid=_uid(conn),
        orig_h=conn.orig_addr,
        orig_p=conn.orig_port,
        resp_h=conn.resp_addr,
        resp_p=conn.resp_port,
        duration=duration if duration > 0 else None,
        orig_bytes=stream_size(conn, Side.ORIG),
        resp_bytes=stream_size(conn, Side.RESP),
        conn_state=conn_state(conn).value,
        history=conn.history_text,
        orig_pkts=conn.packets[Side.ORIG],
        resp_pkts=conn.packets[Side.RESP],
    )


def _uid(conn: Connection) -> str:
    """``C`` + 17 base-62 characters, like Zeek's uids, but a hash of the connection (stable across runs)."""
    key = f"{conn.start_ns} {conn.orig} {conn.resp} {conn.id}".encode()
    import hashlib  # here: 4 ms of every command's start, for the few that make uids

    n = int.from_bytes(hashlib.blake2b(key, digest_size=16).digest(), "big")
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    chars = []
    for _ in range(17):
        n, r = divmod(n, 62)
        chars.append(alphabet[r])
    return "C" + "".join(chars)


def _value(name: str, value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "T" if value else "F"
    if name == "ts":
        return f"{value:.6f}"
    if name == "duration":
        return f"{value:.6f}"
    return str(value)


def write_conn_log(rows: Iterable[ConnLogRow], out: TextIO, *, clock=time.time) -> None:
    """Write rows as Zeek's ASCII conn.log (TSV with Zeek's ``#`` header and footer lines)."""
    stamp = time.strftime("%Y-%m-%d-%H-%M-%S", time.localtime(clock()))
    out.write("#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n")
    out.write(f"#open\t{stamp}\n")
    out.write("#fields\t" + "\t".join(name for name, _ in CONN_LOG_FIELDS) + "\n")
    out.write("#types\t" + "\t".join(kind for _, kind in CONN_LOG_FIELDS) + "\n")
    for row in rows:
        out.write("\t".join(_value(name, getattr(row, name.removeprefix("id."))) for name, _ in CONN_LOG_FIELDS))
        out.write("\n")
    out.write(f"#close\t{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(clock()))}\n")
