"""How far the capture-only verdicts agree with what really happened, under a strict mapping.

Per run directory, after ``groundtruth.join`` has matched each RST to the kernel's
``tcp_send_reset`` record and labelled it (``truth.label``), four figures:

1. **Primary agreement**: for each RST that is the first of its connection (not
   an echo) and has a truth, the verdict must be the ONE verdict the truth means.
2. **Echo agreement**, apart: every later RST on a connection must be ``echo``.
3. **Origin agreement**: the analyzer's ``origin`` must be the truth's
   (``endpoint`` when an endpoint's kernel logged it, ``middlebox`` when the
   forger logged it or a router rule rejected with it).  ``undetermined`` and a
   missing ``origin`` never agree.
4. **Client agreement**, per connection of a client attempt: the connection's
   verdict (its first RST that is neither an echo nor ignored) against what the
   application saw (:data:`CLIENT_AGREEMENT`).  ``unknown`` and ``echo`` (a
   connection whose every RST is an echo: the RST that ended it was not
   explained) agree with no outcome; ``abort`` (nothing at risk) also disagrees
   when the client read fewer bytes than the server sent.  A ``close-race`` whose
   sender had sent its FIN before the RST (``shutdown`` then ``close``) also agrees
   with ``ok``: the whole stream had left the sender, FIN last, so on a path that
   keeps order and loses nothing the client reads it all and EOF before the RST
   arrives; the data in flight was at risk (never retransmitted after the reset),
   not necessarily lost.

The strict mapping (implemented in :mod:`rstscope.lab.truth`; first row that
applies wins; "first RST" = the first on its connection that was not ignored,
every later RST on the connection is an echo):

============================== ======================================= ===========
ground truth                   wire fact                               verdict
============================== ======================================= ===========
forger's log: intent ignored   (the receiver kept the connection)      ignored
no endpoint record; forged, or                                         middlebox
a router rule rejected with it
any endpoint reason            a RST came first on the connection      echo
TCP_ABORT_ON_CLOSE, TCP_STATE, data in flight at the RST (payload sent  close-race
TCP_ABORT_ON_LINGER,           and not acknowledged by the ACKs the
TCP_DISCONNECT_WITH_DATA       peer sent before the kernel logged the
                               RST), or the client read less than the
                               server wrote
  the same                     nothing in flight, nothing lost         abort
TCP_ABORT_ON_DATA              data in flight                          close-race
  the same                     nothing in flight                       late-data
TCP_TIMEWAIT_SOCKET                                                    late-data
TCP_KEEPALIVE_TIMEOUT                                                  keepalive
TCP_ABORT_ON_MEMORY                                                    abort
INVALID_SYN/LISTEN,                                                    backlog
TCP_FLAGS/LISTEN (first RST)
NO_SOCKET                      answers a SYN                           refused
  the same                     the sender had sent its FIN before      late-data
  the same                     otherwise                               stale
any other reason                                                       stale
============================== ======================================= ===========

``unknown`` matches no row: it never agrees.  RSTs without a truth (no kernel
trace in the run, or a RST neither an endpoint nor the router owns) are counted
as ``unmatched`` and not scored.

Held-out runs: a run directory with a path component named ``holdout`` (e.g.
``captures/validation/holdout/...``; ``rstscope validate --presets all --holdout 1``
puts one extra run per preset there) is scored separately, so that rules can be
written on the other runs and checked on these only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rstscope.lab import groundtruth
from rstscope.lab.rundir import RunDir

HOLDOUT_DIR = "holdout"
"""A run directory under a folder of this name is held out (scored apart)."""

CLIENT_AGREEMENT: dict[str, frozenset[str]] = {
    "close-race": frozenset({"ECONNRESET@read", "short-read", "ECONNRESET@write", "EPIPE@write"}),
    "abort": frozenset({"ECONNRESET@read", "short-read", "ECONNRESET@write", "EPIPE@write", "ok"}),
    "late-data": frozenset({"EPIPE@write", "ECONNRESET@write", "ECONNRESET@read", "ok"}),
    "backlog": frozenset({"ECONNRESET@read", "ECONNRESET@write", "EPIPE@write", "ECONNRESET@connect", "timeout"}),
    "refused": frozenset({"ECONNREFUSED@connect"}),
    "middlebox": frozenset(
        {"ECONNRESET@read", "ECONNRESET@write", "EPIPE@write", "ECONNREFUSED@connect", "ECONNRESET@connect"}
        | {"short-read"}
    ),
    "keepalive": frozenset({"ECONNRESET@read", "ECONNRESET@write", "EPIPE@write", "timeout"}),
    "ignored": frozenset({"ok"}),
    "stale": frozenset({"ok"}),
    "none": frozenset({"ok", "timeout"}),
}
"""Connection verdict -> client outcomes that agree (``none``: no RST; ``echo``, ``unknown``: no outcome)."""

MIDDLEBOX_NEVER = frozenset({"backlog", "close-race", "refused"})
"""Verdicts whose fix points at the server: never right for a RST of middlebox origin."""


def is_held_out(path: Path) -> bool:
    return HOLDOUT_DIR in Path(path).parts


def _sender_fin_first(connection_id, resets: list[dict]) -> bool:
    """Whether the connection's close-race RST came after its sender's own FIN."""
    return any(
        r.get("connection") == connection_id and r.get("verdict") == "close-race" and r.get("sender_fin_frame")
        for r in resets
    )


def connection_verdict(connection_id, resets: list[dict]) -> str:
    """The verdict of the connection's first RST that is neither an echo nor ignored;
    ``ignored`` or ``echo`` when it only has those; ``none`` without RSTs."""
    own = [r for r in resets if r.get("connection") == connection_id]
    if not own:
        return "none"
    for skip in ({"echo", "ignored"}, {"echo"}):
        chosen = [r for r in own if r.get("verdict") not in skip]
        if chosen:
            return chosen[0].get("verdict") or "unknown"
    return "echo"


@dataclass(kw_only=True)
class Disagreement:
    run: str
    kind: str
    """``primary``, ``echo``, ``origin`` (per RST) or ``client`` (per connection)."""
    frame: int | None
    connection: object
    verdict: str
    """The analyzer's verdict (or origin, for ``origin``)."""
    truth: str
    """What the ground truth says: ``verdict (reason)``, the origin, or the client outcome."""
    evidence: str


@dataclass(kw_only=True)
class Validation:
    runs: list[str] = field(default_factory=list)
    matrix: Counter = field(default_factory=Counter)
    """(truth reason, analyzer verdict) -> primary RSTs: the per-reason confusion table."""
    primary_agree: int = 0
    primary_total: int = 0
    echo_agree: int = 0
    echo_total: int = 0
    echo_matrix: Counter = field(default_factory=Counter)
    """Analyzer verdict -> echo RSTs."""
    origin_agree: int = 0
    origin_total: int = 0
    origin_matrix: Counter = field(default_factory=Counter)
    """(truth origin, analyzer origin) -> RSTs."""
    middlebox_misnamed: int = 0
    """RSTs of middlebox origin called backlog, close-race or refused."""
    unmatched: int = 0
    """RSTs without a truth (not scored)."""
    client_matrix: Counter = field(default_factory=Counter)
    """(connection verdict, client outcome) -> connections."""
    client_agree: int = 0
    client_total: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def primary_agreement(self) -> float | None:
        return self.primary_agree / self.primary_total if self.primary_total else None

    @property
    def echo_agreement(self) -> float | None:
        return self.echo_agree / self.echo_total if self.echo_total else None

    @property
    def origin_agreement(self) -> float | None:
        return self.origin_agree / self.origin_total if self.origin_total else None

    @property
    def client_agreement(self) -> float | None:
        return self.client_agree / self.client_total if self.client_total else None

    def to_json(self) -> dict:
        def figure(agree: int, total: int) -> dict:
            return {"agree": agree, "total": total, "agreement": agree / total if total else None}

        return {
            "runs": self.runs,
            "primary": {
                **figure(self.primary_agree, self.primary_total),
                "unmatched": self.unmatched,
                "matrix": [{"reason": r, "verdict": v, "count": n} for (r, v), n in sorted(self.matrix.items())],
            },
            "echo": {**figure(self.echo_agree, self.echo_total), "verdicts": dict(self.echo_matrix)},
            "origin": {
                **figure(self.origin_agree, self.origin_total),
                "matrix": [{"truth": t, "origin": o, "count": n} for (t, o), n in sorted(self.origin_matrix.items())],
                "middlebox_called_backlog_close_race_or_refused": self.middlebox_misnamed,
            },
            "client": {
                **figure(self.client_agree, self.client_total),
                "matrix": [
                    {"verdict": v, "outcome": o, "count": n} for (v, o), n in sorted(self.client_matrix.items())
                ],
            },
            "disagreements": [d.__dict__ for d in self.disagreements],
            "notes": self.notes,
        }


def _evidence(reset: dict, truth: dict) -> str:
    kernel = reset.get("kernel") or {}
    where = truth["reason"]
    if kernel:
        where = f"kernel {where} state {kernel.get('state')} in {kernel.get('netns')}"
    return (
        f"{reset.get('src')} -> {reset.get('dst')} {reset.get('flags')} at {reset.get('time')}; {where}; "
        f"truth rule: {truth['rule']}; analyzer rule {reset.get('rule')}: {reset.get('explanation', '')}"
    )


def validate_doc(doc: dict, run_name: str, result: Validation) -> None:
    """Add one joined document (``groundtruth.join`` output) to ``result``."""
    resets = doc.get("resets", [])
    for reset in resets:
        truth = reset.get("truth")
        verdict = reset.get("verdict") or "unknown"
        if truth is None:
            result.unmatched += 1
            continue
        if truth["echo"]:
            result.echo_total += 1
            result.echo_matrix[verdict] += 1
            agrees = verdict == "echo"
            result.echo_agree += agrees
        else:
            result.primary_total += 1
            result.matrix[(truth["reason"], verdict)] += 1
            agrees = verdict == truth["verdict"]
            result.primary_agree += agrees
        if not agrees:
            result.disagreements.append(
                Disagreement(
                    run=run_name, kind="echo" if truth["echo"] else "primary", frame=reset.get("frame"),
                    connection=reset.get("connection"), verdict=verdict,
                    truth=f"{truth['verdict']} ({truth['reason']})", evidence=_evidence(reset, truth),
                )
            )  # fmt: skip
        origin = reset.get("origin")
        result.origin_total += 1
        result.origin_matrix[(truth["origin"], str(origin))] += 1
        if origin == truth["origin"]:
            result.origin_agree += 1
        else:
            result.disagreements.append(
                Disagreement(
                    run=run_name, kind="origin", frame=reset.get("frame"), connection=reset.get("connection"),
                    verdict=str(origin), truth=truth["origin"],
                    evidence=f"findings {reset.get('origin_findings')}; " + _evidence(reset, truth),
                )
            )  # fmt: skip
        if truth["origin"] == "middlebox" and verdict in MIDDLEBOX_NEVER:
            result.middlebox_misnamed += 1
    for connection in doc.get("connections", []):
        outcome = connection.get("client_outcome")
        if outcome is None:
            continue
        verdict = connection_verdict(connection.get("id"), resets)
        result.client_matrix[(verdict, outcome)] += 1
        result.client_total += 1
        lost = groundtruth.client_lost_bytes(connection)
        harmless_claim_wrong = verdict == "abort" and lost > 0
        agreeing = CLIENT_AGREEMENT.get(verdict, frozenset())
        if verdict == "close-race" and _sender_fin_first(connection.get("id"), resets):
            agreeing = agreeing | {"ok"}
        if outcome in agreeing and not harmless_claim_wrong:
            result.client_agree += 1
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
