"""Reading the analysis document, for the report and the plots alike: a connection's outcome, its
Wireshark ``tcp.stream`` index, its RSTs, the example connections worth a graph, ``--connection``
lookup, the kernel counters of a lab run, and the number formats both print.

Only reads the document (``api.document()``); :mod:`.sections` builds the report's blocks and
:mod:`.plots` draws the figures from what is here.
"""

from __future__ import annotations

from collections.abc import Iterable

from rstscope.status import InputError
from rstscope.verdicts import Verdict

OUTCOME_CLEAN = "clean"
"""No RST, both sides closed with FIN."""
OUTCOME_INCOMPLETE = "no FIN, no RST"
"""No RST and no complete FIN exchange: a handshake that never finished, a timeout, or a connection
still open when the capture ended."""

OUTCOME_ORDER: tuple[str, ...] = (
    Verdict.CLOSE_RACE.value,
    Verdict.BACKLOG.value,
    Verdict.LATE_DATA.value,
    Verdict.ABORT.value,
    Verdict.REFUSED.value,
    Verdict.STALE.value,
    Verdict.UNKNOWN.value,
    Verdict.ECHO.value,
    OUTCOME_CLEAN,
    OUTCOME_INCOMPLETE,
)
"""Connection outcomes in legend order: a connection's verdict, else how it ended without a RST."""


def connection_outcome(conn: dict) -> str:
    """A connection's verdict (of its first non-echo RST), else ``clean`` or ``no FIN, no RST``."""
    if conn.get("verdict"):
        return conn["verdict"]
    return OUTCOME_CLEAN if conn.get("phase") == "closed" else OUTCOME_INCOMPLETE


def client_reset(conn: dict) -> bool:
    """True when the lab's client read ECONNRESET on this connection (lab runs only)."""
    return str(conn.get("client_outcome") or "").startswith("ECONNRESET")


def stream_indices(doc: dict) -> dict[tuple[int, int], int]:
    """(capture, connection id) -> Wireshark's ``tcp.stream`` index: the rank of the connection's
    first frame within its capture (Wireshark numbers streams in order of their first packet)."""
    ranks: dict[tuple[int, int], int] = {}
    per_capture: dict[int, list[dict]] = {}
    for conn in doc["connections"]:
        per_capture.setdefault(conn.get("capture", 0), []).append(conn)
    for capture, conns in per_capture.items():
        for rank, conn in enumerate(sorted(conns, key=lambda c: c["first_frame"])):
            ranks[(capture, conn["id"])] = rank
    return ranks


def resets_by_connection(doc: dict) -> dict[tuple[int, int], list[dict]]:
    """(capture, connection id) -> its RST records in frame order."""
    out: dict[tuple[int, int], list[dict]] = {}
    for reset in doc["resets"]:
        if reset.get("connection") is not None:
            out.setdefault((reset.get("capture", 0), reset["connection"]), []).append(reset)
    for rows in out.values():
        rows.sort(key=lambda r: r["frame"])
    return out


def primary_reset(conn: dict, resets: list[dict]) -> dict | None:
    """The connection's first non-echo RST (what happened to it), else its first RST."""
    return next((r for r in resets if r["verdict"] != Verdict.ECHO.value), resets[0] if resets else None)


def format_bytes(n: int | float | None) -> str:
    """``93.0 kB``-style (decimal units, as network people count)."""
    if n is None:
        return "?"
    for unit, size in (("MB", 1_000_000), ("kB", 1_000)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def first_syn_time(doc: dict) -> float:
    """Time zero of the figures and the report: the first connection's start (its SYN)."""
    return min((c["start"] for c in doc["connections"]), default=0.0)


def find_connection(doc: dict, spec: str) -> dict:
    """The connection named by ``spec``.

    ``N``               the connection id (as ``rstscope analyze`` and this report print it);
    ``tcp.stream=N``    Wireshark's stream index;
    ``A:P-B:P``         a 4-tuple, either order (``,`` or a space also separate the ends);
    ``A:P`` or ``:P``   one endpoint or a port, when it names a single connection.
    Raises InputError when nothing or more than one connection matches.
    """
    spec = spec.strip()
    conns = doc["connections"]
    if spec.isdigit():
        found = [c for c in conns if c["id"] == int(spec)]
    elif spec.replace(" ", "").startswith(("tcp.stream=", "tcp.stream==")):
        number = spec.replace(" ", "").split("=")[-1]
        if not number.isdigit():
            raise InputError(f"--connection {spec!r}: tcp.stream wants a number")
        ranks = stream_indices(doc)
        found = [c for c in conns if ranks[(c.get("capture", 0), c["id"])] == int(number)]
    else:
        ends = _split_tuple(spec)
        found = [c for c in conns if _matches(c, ends)]
    if not found:
        raise InputError(f"--connection {spec!r}: no such connection ({len(conns)} in the capture)")
    if len(found) > 1:
        names = ", ".join(f"{c['id']} ({c['client']} -> {c['server']})" for c in found[:5])
        raise InputError(f"--connection {spec!r} matches {len(found)} connections: {names}; give the id")
    return found[0]


def _split_tuple(spec: str) -> list[str]:
    for sep in (" - ", "->", ",", " ", "-"):
        if sep in spec and not (sep == "-" and spec.count("-") != 1):
            parts = [p.strip() for p in spec.split(sep) if p.strip()]
            if len(parts) == 2:
                return parts
    return [spec]


def _matches(conn: dict, ends: list[str]) -> bool:
    def same(endpoint: str, pattern: str) -> bool:
        if pattern.startswith(":"):
            return endpoint.rpartition(":")[2] == pattern[1:]
        return endpoint == pattern

    a, b = conn["client"], conn["server"]
    if len(ends) == 2:
        return (same(a, ends[0]) and same(b, ends[1])) or (same(a, ends[1]) and same(b, ends[0]))
    return same(a, ends[0]) or same(b, ends[0])


def example_connections(doc: dict, limit: int = 3) -> list[dict]:
    """Connections worth a time-sequence graph: for each loss verdict, then each other verdict, the
    connection with the most bytes in flight at its reset; at most ``limit``."""
    best: dict[str, dict] = {}
    for conn in doc["connections"]:
        verdict = conn.get("verdict")
        if not verdict or verdict == Verdict.ECHO.value:
            continue
        key = (conn.get("in_flight_at_reset") or 0, -conn["id"])
        if verdict not in best or key > (best[verdict].get("in_flight_at_reset") or 0, -best[verdict]["id"]):
            best[verdict] = conn
    order = [v.value for v in Verdict]
    picked = sorted(best.values(), key=lambda c: (not c["lost_data"], order.index(c["verdict"])))
    if not picked and doc["connections"]:  # no RST at all: the biggest connection shows what "fine" looks like
        picked = [max(doc["connections"], key=lambda c: (sum(c["stream_bytes"].values()), -c["id"]))]
    return picked[:limit]


def listen_queue_trouble(doc: dict) -> bool:
    """True when the listen-queue figure has something to show (retransmitted or unanswered handshakes,
    backlog or refused resets)."""
    lq = doc.get("listen_queue") or {}
    if any(lq.get(k) for k in ("syn_retransmitted", "synack_retransmitted", "synack_after_ack", "unanswered")):
        return True
    return any(v in (doc["summary"].get("by_verdict") or {}) for v in ("backlog", "refused"))


LISTEN_COUNTERS: tuple[str, ...] = (
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPReqQFullDoCookies",
    "TcpExtSyncookiesSent",
    "TcpExtSyncookiesRecv",
    "TcpExtEmbryonicRsts",
    "TcpExtTCPSynRetrans",
)
"""Kernel counters about the listen queues (RESETS.md, "Backlog reset")."""


def kernel_counters(doc: dict, side: str = "server", names: Iterable[str] | None = None) -> dict[str, int] | None:
    """Non-zero counter deltas of one namespace in a lab run, None without a run."""
    nstat = ((doc.get("ground_truth") or {}).get("nstat") or {}).get(side)
    if nstat is None:
        return None
    keep = set(names) if names is not None else None
    return {k: v for k, v in nstat.items() if v and (keep is None or k in keep)}
