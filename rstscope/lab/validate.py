"""How far the capture-only verdicts agree with the kernel and with the clients.

Two checks per run directory:

1. **Verdict vs kernel reason**, per RST that has a matched ``tcp_send_reset``
   record.  The table :data:`KERNEL_AGREEMENT` says which verdicts agree with each
   kernel reason (a listener's reasons are keyed ``REASON/LISTEN``).  RSTs with
   no record are counted apart (``unmatched``): they are a matching or capture
   problem, not a verdict problem.
2. **Verdict vs client outcome**, per connection of a client attempt.  A
   connection's verdict is the verdict of its first non-echo RST (``none`` when it
   has no RST); :data:`CLIENT_AGREEMENT` lists the outcomes it agrees with.  An
   ``abort`` verdict (nothing at risk) also disagrees when the client read fewer
   bytes than the server sent.

The mapping (what the kernel's reason means on the wire):

=============================== ===================================================
kernel reason                   verdicts that agree
=============================== ===================================================
TCP_ABORT_ON_CLOSE              close-race; abort (a close whose peer already left:
                                nothing at risk)
TCP_ABORT_ON_DATA               late-data; close-race (data hit a FIN_WAIT socket
                                whose response was still queued)
TCP_TIMEWAIT_SOCKET             late-data; stale
TCP_STATE, TCP_ABORT_ON_LINGER, abort; close-race (an abortive close, e.g. SO_LINGER
TCP_DISCONNECT_WITH_DATA        {1, 0}, with response data still in flight: on the
                                wire it is the close race, and the peer loses data)
TCP_ABORT_ON_MEMORY,            abort
TCP_KEEPALIVE_TIMEOUT
INVALID_SYN/LISTEN              backlog
TCP_FLAGS/LISTEN                echo (after an abort); backlog (data after a silent
                                accept-queue drop); stale
NO_SOCKET                       refused; echo; stale; late-data
other reasons (sequence checks) echo; stale
=============================== ===================================================

``unknown`` never agrees: a verdict the analyzer could not make is a miss.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from rstscope.lab import groundtruth
from rstscope.lab.rundir import RunDir

KERNEL_AGREEMENT: dict[str, frozenset[str]] = {
    "TCP_ABORT_ON_CLOSE": frozenset({"close-race", "abort"}),
    "TCP_ABORT_ON_DATA": frozenset({"late-data", "close-race"}),
    "TCP_TIMEWAIT_SOCKET": frozenset({"late-data", "stale"}),
    "TCP_STATE": frozenset({"abort", "close-race"}),
    "TCP_ABORT_ON_LINGER": frozenset({"abort", "close-race"}),
    "TCP_ABORT_ON_MEMORY": frozenset({"abort"}),
    "TCP_DISCONNECT_WITH_DATA": frozenset({"abort", "close-race"}),
    "TCP_KEEPALIVE_TIMEOUT": frozenset({"abort"}),
    "INVALID_SYN/LISTEN": frozenset({"backlog"}),
    "TCP_FLAGS/LISTEN": frozenset({"echo", "backlog", "stale"}),
    "NO_SOCKET": frozenset({"refused", "echo", "stale", "late-data"}),
}
"""Kernel reason (``/LISTEN`` for a listener's reset) -> the verdicts that agree with it."""

OTHER_REASONS = frozenset({"echo", "stale"})
"""Verdicts that agree with any reason not in KERNEL_AGREEMENT (sequence and flag checks)."""

CLIENT_AGREEMENT: dict[str, frozenset[str]] = {
    "close-race": frozenset({"ECONNRESET@read", "short-read", "ECONNRESET@write", "EPIPE@write"}),
    "abort": frozenset({"ECONNRESET@read", "short-read", "ECONNRESET@write", "EPIPE@write", "ok"}),
    "late-data": frozenset({"EPIPE@write", "ECONNRESET@write", "ECONNRESET@read", "ok"}),
    "backlog": frozenset({"ECONNRESET@read", "ECONNRESET@write", "EPIPE@write", "ECONNRESET@connect", "timeout"}),
    "refused": frozenset({"ECONNREFUSED@connect"}),
    "none": frozenset({"ok", "timeout"}),
}
"""Connection verdict -> client outcomes that agree with it (``none``: no RST on the connection)."""


def reason_key(kernel: dict) -> str:
    reason = kernel.get("reason") or "NOT_SPECIFIED"
    return f"{reason}/LISTEN" if kernel.get("state") == "TCP_LISTEN" or kernel.get("listener") else reason


def verdict_agrees(verdict: str | None, kernel: dict | None) -> bool | None:
    """Whether a verdict agrees with the kernel's record (None when there is no record)."""
    if kernel is None:
        return None
    if verdict in (None, "unknown"):
        return False
    key = reason_key(kernel)
    if key in KERNEL_AGREEMENT:
        return verdict in KERNEL_AGREEMENT[key]
    bare = key.removesuffix("/LISTEN")
    if bare in KERNEL_AGREEMENT:
        return verdict in KERNEL_AGREEMENT[bare]
    return verdict in OTHER_REASONS


def connection_verdict(connection_id, resets: list[dict]) -> str:
    """The verdict of the connection's first non-echo RST; ``echo`` if it only has echoes; ``none``."""
    own = [r for r in resets if r.get("connection") == connection_id]
    if not own:
        return "none"
    primary = [r for r in own if r.get("verdict") != "echo"]
    return (primary or own)[0].get("verdict") or "unknown"


@dataclass(kw_only=True)
class Disagreement:
    run: str
    kind: str
    """``kernel`` (verdict vs reason) or ``client`` (verdict vs outcome)."""
    frame: int | None
    connection: object
    verdict: str
    truth: str
    """The kernel reason or the client outcome."""
    evidence: str


@dataclass(kw_only=True)
class Validation:
    runs: list[str] = field(default_factory=list)
    matrix: Counter = field(default_factory=Counter)
    """(kernel reason key, verdict) -> RSTs."""
    kernel_agree: int = 0
    kernel_total: int = 0
    """RSTs with a matched kernel record."""
    unmatched: int = 0
    """RSTs without a kernel record (no tracefs, or capture/trace mismatch)."""
    client_matrix: Counter = field(default_factory=Counter)
    """(connection verdict, client outcome) -> connections."""
    client_agree: int = 0
    client_total: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def kernel_agreement(self) -> float | None:
        return self.kernel_agree / self.kernel_total if self.kernel_total else None

    @property
    def client_agreement(self) -> float | None:
        return self.client_agree / self.client_total if self.client_total else None

    def to_json(self) -> dict:
        return {
            "runs": self.runs,
            "kernel": {
                "agree": self.kernel_agree,
                "total": self.kernel_total,
                "agreement": self.kernel_agreement,
                "unmatched": self.unmatched,
                "matrix": [{"reason": r, "verdict": v, "count": n} for (r, v), n in sorted(self.matrix.items())],
            },
            "client": {
                "agree": self.client_agree,
                "total": self.client_total,
                "agreement": self.client_agreement,
                "matrix": [
                    {"verdict": v, "outcome": o, "count": n} for (v, o), n in sorted(self.client_matrix.items())
                ],
            },
            "disagreements": [d.__dict__ for d in self.disagreements],
            "notes": self.notes,
        }


def validate_doc(doc: dict, run_name: str, result: Validation) -> None:
    """Add one joined document (``groundtruth.join`` output) to ``result``."""
    resets = doc.get("resets", [])
    for reset in resets:
        kernel = reset.get("kernel")
        verdict = reset.get("verdict") or "unknown"
        if kernel is None:
            result.unmatched += 1
            continue
        key = reason_key(kernel)
        result.matrix[(key, verdict)] += 1
        result.kernel_total += 1
        if verdict_agrees(verdict, kernel):
            result.kernel_agree += 1
        else:
            result.disagreements.append(
                Disagreement(
                    run=run_name,
                    kind="kernel",
                    frame=reset.get("frame"),
                    connection=reset.get("connection"),
                    verdict=verdict,
                    truth=key,
                    evidence=f"{reset.get('src')} -> {reset.get('dst')} at {reset.get('time')}; "
                    f"kernel {key} state {kernel.get('state')} in {kernel.get('netns')} "
                    f"at {kernel.get('time')}; analyzer: {reset.get('explanation', '')}",
                )
            )
    for connection in doc.get("connections", []):
        outcome = connection.get("client_outcome")
        if outcome is None:
            continue
        verdict = connection_verdict(connection.get("id"), resets)
        result.client_matrix[(verdict, outcome)] += 1
        result.client_total += 1
        allowed = CLIENT_AGREEMENT.get(verdict)
        lost = _bytes_lost(connection)
        harmless_claim_wrong = verdict == "abort" and lost > 0
        if (allowed is None or outcome in allowed) and not harmless_claim_wrong:
            result.client_agree += 1  # echo-only / stale connections: the client outcome says nothing
            continue
        result.disagreements.append(
            Disagreement(
                run=run_name,
                kind="client",
                frame=None,
                connection=connection.get("id"),
                verdict=verdict,
                truth=outcome,
                evidence=f"{connection.get('client')} -> {connection.get('server')}: client read "
                f"{connection.get('client_bytes_read')} of {connection.get('client_bytes_expected')} bytes, "
                f"outcome {outcome}; capture verdict {verdict}"
                + (", which says nothing was at risk" if harmless_claim_wrong else ""),
            )
        )


def _bytes_lost(connection: dict) -> int:
    expected = connection.get("client_bytes_expected")
    read = connection.get("client_bytes_read")
    if expected is None or read is None:
        return 0
    return max(0, expected - read)


def validate_runs(runs: list[RunDir], analyze=None) -> Validation:
    """Validate run directories.  ``analyze(run) -> doc`` re-analyzes a capture; default: analysis.json."""
    result = Validation()
    for run in runs:
        result.runs.append(str(run.path))
        doc = analyze(run) if analyze is not None else run.analysis
        if doc is None:
            result.notes.append(f"{run.path}: no analysis (analysis.json missing and the analyzer unavailable)")
            continue
        doc = groundtruth.join(doc, run)  # always with the current matching rules (join is idempotent)
        if not run.kernel_available:
            result.notes.append(f"{run.path}: no kernel trace in this run; only client outcomes are checked")
        validate_doc(doc, run.path.name, result)
    return result
