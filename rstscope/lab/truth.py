"""What each RST of a lab run really was: the strict mapping from ground truth to one verdict.

Used by ``groundtruth.join`` (``truth`` and ``kernel_agrees`` per reset) and by
``validate`` (the agreement figures).  Neither the analyzer's verdicts nor its
derived fields are read here: the truth rests on the kernel's ``tcp_send_reset``
record matched to the RST, the router's ground truth (the forger's log, the nft
reject counters), the pair's own logs, and wire facts this module measures in
the capture itself (:class:`WireFacts`).

Origin: a RST matched to an endpoint's kernel record is the ``endpoint``'s.  A RST
with no record, in a run whose kernel trace worked, is the ``middlebox``'s when
the forger logged it (same addresses and seq) or the router's reject rules
counted at least that many rejections; otherwise it has no truth (a capture or
matching problem: counted apart, never scored).

The strict mapping itself is the table in :mod:`rstscope.lab.validate`'s
docstring (one copy, so that it cannot drift); :func:`endpoint_verdict` and
:func:`label` implement it row by row.

``unknown`` matches no row: it never agrees.  A FIN is not a byte of data: in
flight counts payload only.  Limits: the capture is taken at the client, so the
ACKs that had reached the server when it reset are taken as those the client
sent before the kernel's timestamp (the client->server queue is empty at those
times in the presets); a RST the capture lost leaves its record unmatched.
"""

from __future__ import annotations

from dataclasses import dataclass

from rstscope.lab.rundir import RunDir, read_jsonl

INJECTOR_LOG = "injector.jsonl"
"""The forger's log in the run directory (``rstscope.lab.inject``)."""

ABORTIVE_CLOSE = frozenset({"TCP_ABORT_ON_CLOSE", "TCP_STATE", "TCP_ABORT_ON_LINGER", "TCP_DISCONNECT_WITH_DATA"})
"""Reasons of a close() or disconnect that aborts: close-race with data in flight, else abort."""
FIXED: dict[str, str] = {
    "TCP_TIMEWAIT_SOCKET": "late-data",
    "TCP_KEEPALIVE_TIMEOUT": "keepalive",
    "TCP_ABORT_ON_MEMORY": "abort",
    "INVALID_SYN/LISTEN": "backlog",
    "TCP_FLAGS/LISTEN": "backlog",
}
"""Reasons that mean one verdict whatever the wire shows (as a connection's first RST)."""
ECHO, IGNORED, MIDDLEBOX = "echo", "ignored", "middlebox"


def reason_key(kernel: dict) -> str:
    """``TCP_FLAGS/LISTEN`` for a listener's reset, else the bare reason."""
    reason = kernel.get("reason") or "NOT_SPECIFIED"
    return f"{reason}/LISTEN" if kernel.get("state") == "TCP_LISTEN" or kernel.get("listener") else reason


@dataclass(frozen=True, kw_only=True)
class WireFacts:
    """What the capture shows around one RST, measured here (not by the analyzer)."""

    answers_syn: bool
    """The peer's last segment before the RST was a SYN (no SYN-ACK from the sender)."""
    in_flight: int
    """Payload bytes the sender had sent and the peer had not acknowledged when the RST was sent."""
    sender_fin_before: bool
    """The sender had sent its FIN before this RST."""
    seq: int = 0
    """The RST's raw sequence number (to find it in the forger's log)."""
    at_rcv_nxt: bool = True
    """The seq is the receiver's next expected byte (the sender's last segment end, FIN included):
    the only seq a Linux receiver accepts (RFC 5961)."""
    closed: bool = False
    """Both sides had sent their FIN before: the RST reaches a connection that already ended."""


@dataclass(frozen=True, kw_only=True)
class Truth:
    verdict: str
    """The one verdict the ground truth means (the strict mapping above)."""
    origin: str
    """``endpoint`` or ``middlebox``."""
    reason: str
    """Kernel reason key, or ``middlebox:<what>`` (``forged``, ``nft <rule>``)."""
    echo: bool
    """A RST came earlier on the connection: scored apart."""
    rule: str
    """The row of the mapping that gave the verdict."""

    def to_json(self) -> dict:
        return {"verdict": self.verdict, "origin": self.origin, "reason": self.reason, "echo": self.echo,
                "rule": self.rule}  # fmt: skip


def endpoint_verdict(key: str, facts: WireFacts | None, lost: bool) -> tuple[str, str]:
    """(verdict, row) for a connection's first RST from an endpoint with reason ``key``."""
    in_flight = lost or (facts is not None and facts.in_flight > 0)
    if key in ABORTIVE_CLOSE:
        return ("close-race", f"{key} with data in flight") if in_flight else ("abort", f"{key}, nothing in flight")
    if key == "TCP_ABORT_ON_DATA":
        return ("close-race", f"{key} with data in flight") if in_flight else ("late-data", key)
    if key in FIXED:
        return FIXED[key], key
    if key == "NO_SOCKET":
        if facts is not None and facts.answers_syn:
            return "refused", "NO_SOCKET answering a SYN"
        if facts is not None and facts.sender_fin_before:
            return "late-data", "NO_SOCKET after the sender's FIN"
        return "stale", "NO_SOCKET"
    return "stale", f"other reason ({key})"


# --------------------------------------------------------------------------- wire facts


def _u32(a: int) -> int:
    return a & 0xFFFFFFFF


def wire_facts(run: RunDir, rst_times: dict[int, float]) -> dict[int, WireFacts]:
    """Facts per RST frame (``rst_times``: frame -> when it was sent, on the capture's clock)."""
    if run.capture is None or not rst_times:
        return {}
    from rstscope import packets
    from rstscope.reader import read_all

    try:
        table, _ = read_all(run.capture)
    except Exception:  # an unreadable capture has no wire facts; the truth falls back to the logs
        return {}
    flows: dict[tuple, dict] = {}
    facts: dict[int, WireFacts] = {}
    for row in table:
        src = (int(row["src_hi"]), int(row["src_lo"]), int(row["src_port"]))
        dst = (int(row["dst_hi"]), int(row["dst_lo"]), int(row["dst_port"]))
        key = (min(src, dst), max(src, dst))
        flags, seq, ack = int(row["flags"]), int(row["seq"]), int(row["ack"])
        flow = flows.setdefault(key, {})
        mine = flow.setdefault(src, {"isn": None, "data_end": 0, "fin": False, "synack": False, "acks": [],
                                     "last_syn": False})  # fmt: skip
        peer = flow.setdefault(dst, {"isn": None, "data_end": 0, "fin": False, "synack": False, "acks": [],
                                     "last_syn": False})  # fmt: skip
        frame = int(row["frame"])
        if flags & packets.RST:
            if frame in rst_times:
                facts[frame] = _facts_at(mine, peer, rst_times[frame], seq)
            continue
        if flags & packets.SYN:
            mine["isn"] = seq
            mine["synack"] = bool(flags & packets.ACK)
            mine["last_syn"] = not flags & packets.ACK
            mine["data_end"] = 0
            continue
        mine["last_syn"] = False
        if mine["isn"] is None:
            mine["isn"] = _u32(seq - 1)  # the capture began mid-connection
        end = _u32(seq - mine["isn"]) + int(row["payload_len"])
        mine["data_end"] = max(mine["data_end"], end)
        if flags & packets.FIN:
            mine["fin"] = True
        if flags & packets.ACK and peer["isn"] is not None:
            mine["acks"].append((int(row["ts_ns"]) / 1e9, _u32(ack - peer["isn"])))
    return facts


def _facts_at(sender: dict, peer: dict, sent_at: float, seq: int) -> WireFacts:
    acked = max((a for t, a in peer["acks"] if t <= sent_at), default=1)
    next_seq = None if sender["isn"] is None else _u32(sender["isn"] + sender["data_end"] + sender["fin"])
    return WireFacts(
        answers_syn=peer["last_syn"] and not sender["synack"],
        in_flight=max(0, sender["data_end"] - acked),
        sender_fin_before=sender["fin"],
        seq=seq,
        at_rcv_nxt=next_seq is None or next_seq == seq,
        closed=sender["fin"] and peer["fin"],
    )


# --------------------------------------------------------------------------- the router's ground truth


def forged_resets(run: RunDir) -> list[dict]:
    """The forger's log of RSTs it sent (empty when the run had no forger)."""
    return [r for r in read_jsonl(run.path / INJECTOR_LOG) if r.get("event") == "forged_rst"]


def nft_rejections(run: RunDir) -> dict[str, int]:
    """Packets each router rule that answers with a RST rejected, by rule comment."""
    rules = (run.run.get("nft") or {}).get("rules", {})
    return {name: entry.get("packets", 0) for name, entry in rules.items() if name.startswith(("reject", "ct-invalid"))}


# --------------------------------------------------------------------------- labelling


def label(resets: list[dict], run: RunDir, *, lost_by_connection: dict | None = None) -> dict[int, Truth]:
    """Reset index -> its :class:`Truth`.  ``resets`` carry ``kernel`` (the joined record or None).

    ``lost_by_connection``: connection id -> True when its client read less than the server wrote.
    """
    lost_by_connection = lost_by_connection or {}
    forged = forged_resets(run)
    rejections = dict(nft_rejections(run))
    rst_times = {}
    for reset in resets:
        if reset.get("frame") is not None:
            kernel = reset.get("kernel")
            rst_times[reset["frame"]] = kernel["time"] if kernel and kernel.get("time") else reset.get("time", 0.0)
    facts = wire_facts(run, rst_times)
    order = sorted(range(len(resets)), key=lambda i: resets[i].get("frame") or 0)
    ended: set = set()
    truths: dict[int, Truth] = {}
    for index in order:
        reset = resets[index]
        connection = reset.get("connection")
        kernel = reset.get("kernel")
        if kernel is not None:
            key = reason_key(kernel)
            if connection in ended:
                truths[index] = Truth(verdict=ECHO, origin="endpoint", reason=key, echo=True, rule="after a RST")
                continue
            lost = bool(lost_by_connection.get(connection))
            verdict, row = endpoint_verdict(key, facts.get(reset.get("frame")), lost)
            truths[index] = Truth(verdict=verdict, origin="endpoint", reason=key, echo=False, rule=row)
            ended.add(connection)
            continue
        if not run.kernel_available:
            continue  # without the endpoints' records nothing says who sent it
        wire = facts.get(reset.get("frame"))
        log = _forged_match(reset, wire, forged)
        if log is not None:
            why = log.get("why")
            missed = wire is not None and (not wire.at_rcv_nxt or wire.closed)
            if log.get("intent") != "ignored" and missed:
                why = "aimed at rcv_nxt, but it arrived " + ("after the connection ended" if wire.closed
                                                             else "when rcv_nxt had moved on")  # fmt: skip
            ignored = log.get("intent") == "ignored" or missed
            truths[index] = Truth(
                verdict=IGNORED if ignored else MIDDLEBOX,
                origin="middlebox",
                reason="middlebox:forged",
                echo=False,
                rule=f"forged RST, {why}",
            )
            if not ignored:
                ended.add(connection)
            continue
        rule = next((name for name, left in rejections.items() if left > 0), None)
        if rule is None:
            continue  # no endpoint and no middlebox owns it: not scored
        rejections[rule] -= 1
        truths[index] = Truth(
            verdict=MIDDLEBOX, origin="middlebox", reason=f"middlebox:nft {rule}", echo=False,
            rule=f"no endpoint sent it; the router's rule {rule!r} rejected with a RST",
        )  # fmt: skip
        ended.add(connection)
    return truths


def _forged_match(reset: dict, facts: WireFacts | None, forged: list[dict]) -> dict | None:
    """The forger's record of this RST: same addresses and, when the capture was read, same seq."""
    for log in forged:
        if log.get("src") != reset.get("src") or log.get("dst") != reset.get("dst"):
            continue
        if facts is None or facts.seq == log.get("seq"):
            forged.remove(log)
            return log
    return None
