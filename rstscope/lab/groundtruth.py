"""Join the analyzer's verdicts with what the kernel and the clients say happened.

:func:`join` takes the analyzer's document (``Analysis.to_json()``: ``resets``,
``connections``, ...) and a :class:`~rstscope.lab.rundir.RunDir`, and adds:

* per reset, ``kernel``: the ``tcp_send_reset`` record that produced it
  (``reason``, ``state``, ``netns``, ``time``, ``listener``), or None;
* per connection, ``client_outcome``: what the application saw (``ok``,
  ``ECONNRESET@read``, ``short-read``, ``timeout``, ``EPIPE@write`` ...), from
  clients.jsonl by client port and time, or None when no attempt matches;
* per reset, ``truth``: what it really was under the strict mapping (``truth.py``:
  verdict, origin, reason, echo, rule), or None; ``kernel_agrees``: the verdict is
  that one (None without a truth);
* ``ground_truth``: a summary (kernel reasons, client outcomes, counters, the
  router's rule counters, primary/echo/origin agreement).

How kernel records are matched to RST packets (RESETS.md, "lessons"): by the
sender's endpoint and by order, not by exact time.  The kernel logs a reset when
it is sent; behind a tbf queue it reaches the client-side capture up to the
queue's latency later.  So, for each record in time order, the first RST not yet
matched, from the same sender to the same peer, seen no earlier than the record
(minus :data:`EARLY`) and no later than ``window`` after it, is its packet.
Records written for a listening socket print ``dest=0.0.0.0:0``: they are
matched in a second pass to the remaining RSTs from the listener's address, to
any peer.  RSTs are taken in capture (frame) order.  A RST the capture lost
leaves its record unmatched (counted), and a RST with no record (no tracefs, or
another host's) has ``kernel: null``.
"""

from __future__ import annotations

import copy
import json
from collections import Counter

from rstscope.lab import truth
from rstscope.lab.rundir import RunDir

EARLY = 0.05
"""Seconds a packet may appear *before* its record (clocks agree to ~1 ms; on loopback the
record can be written a few µs after the peer handled the RST)."""
WINDOW = 2.0
"""Default seconds a RST may take to reach the capture after the kernel logged it."""


def _window_for(run: RunDir) -> float:
    """Queue latency of the run's link plus a margin (a 200 ms tbf queue delays a RST ≤ 200 ms)."""
    queue = str(run.run.get("options", {}).get("queue") or "")
    seconds = None
    for unit, scale in (("ms", 1e-3), ("us", 1e-6), ("s", 1.0)):
        if queue.endswith(unit):
            try:
                seconds = float(queue[: -len(unit)]) * scale
            except ValueError:
                seconds = None
            break
    return WINDOW if seconds is None else max(WINDOW, seconds + 1.0)


def match_resets(resets: list[dict], records: list[dict], *, window: float = WINDOW) -> dict[int, dict]:
    """Map reset index (in ``resets``) -> its ``tcp_send_reset`` record.  See the module docstring."""
    sends = sorted((r for r in records if r.get("event") == "tcp_send_reset"), key=lambda r: r["time"])
    # Capture order, not timestamp order: the capture point sees packets in wire order, but their
    # timestamps can be a few µs out of order (seen on veth), and the primary RST and its first
    # echo are often that close.
    order = sorted(range(len(resets)), key=lambda i: (resets[i].get("frame") or 0, resets[i].get("time", 0.0)))
    matched: dict[int, dict] = {}

    def take(record: dict, accept) -> None:
        for index in order:
            if index in matched or not accept(resets[index]):
                continue
            lag = resets[index].get("time", 0.0) - record["time"]
            if lag < -EARLY:
                continue
            if lag > window:
                return  # the record's packet was not captured; do not steal a later one
            matched[index] = record
            return

    for record in sends:
        if not record.get("listener"):
            take(record, lambda reset, r=record: reset.get("src") == r.get("src") and reset.get("dst") == r.get("dst"))
    for record in sends:
        if record.get("listener"):
            take(record, lambda reset, r=record: reset.get("src") == r.get("src"))
    return matched


def kernel_summary(record: dict) -> dict:
    """The part of a ``tcp_send_reset`` record attached to a reset."""
    return {
        "reason": record.get("reason"),
        "state": record.get("state"),
        "netns": record.get("netns"),
        "time": record.get("time"),
        "listener": bool(record.get("listener")),
        "active": record.get("active"),
    }


def _port(endpoint: str | None) -> int | None:
    if not endpoint:
        return None
    try:
        return int(endpoint.rpartition(":")[2])
    except ValueError:
        return None


def client_attempts_by_port(clients: list[dict]) -> dict[int, list[dict]]:
    by_port: dict[int, list[dict]] = {}
    for attempt in clients:
        if attempt.get("client_port") is not None:
            by_port.setdefault(int(attempt["client_port"]), []).append(attempt)
    return by_port


def find_attempt(connection: dict, by_port: dict[int, list[dict]]) -> dict | None:
    """The client attempt of a connection: same client port, connection start within the attempt."""
    candidates = by_port.get(_port(connection.get("client")), [])
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    start = connection.get("start")
    if start is None:
        return candidates[0]
    for attempt in candidates:
        if attempt.get("t_start", 0) - 1.0 <= start <= attempt.get("t_end", 0) + 1.0:
            return attempt
    return min(candidates, key=lambda a: abs(a.get("t_start", 0) - start))


def join(doc: dict, run: RunDir) -> dict:
    """The analyzer's document with kernel reasons, client outcomes and a ``ground_truth`` block."""
    doc = copy.deepcopy(doc)
    resets: list[dict] = doc.setdefault("resets", [])
    connections: list[dict] = doc.setdefault("connections", [])
    matched = match_resets(resets, run.kernel, window=_window_for(run))
    for index, reset in enumerate(resets):
        record = matched.get(index)
        reset["kernel"] = kernel_summary(record) if record is not None else None

    by_port = client_attempts_by_port(run.clients)
    used: set[int] = set()
    for connection in connections:
        attempt = find_attempt(connection, by_port) if run.clients else None
        connection["client_outcome"] = attempt.get("outcome") if attempt else None
        if attempt is not None:
            used.add(id(attempt))
            connection["client_bytes_read"] = attempt.get("bytes_read")
            connection["client_bytes_expected"] = attempt.get("bytes_expected")

    lost = {c.get("id"): client_lost_bytes(c) > 0 for c in connections}
    truths = truth.label(resets, run, lost_by_connection=lost)
    for index, reset in enumerate(resets):
        found = truths.get(index)
        reset["truth"] = found.to_json() if found else None
        reset["kernel_agrees"] = reset.get("verdict") == found.verdict if found else None
    primaries = [t for t in truths.values() if not t.echo]

    sends = [r for r in run.kernel if r.get("event") == "tcp_send_reset"]
    matched_ids = {id(r) for r in matched.values()}
    reasons = Counter(_reason_key(r) for r in sends)
    verdict_by_reason: dict[str, Counter] = {}
    for index, record in matched.items():
        verdict_by_reason.setdefault(_reason_key(record), Counter())[resets[index].get("verdict", "unknown")] += 1
    outcomes = Counter(a.get("outcome", "?") for a in run.clients)
    doc["ground_truth"] = {
        "run": run.path.name,
        "scenario": run.scenario,
        "kernel_available": run.kernel_available,
        "kernel_resets": len(sends),
        "kernel_reasons": dict(reasons.most_common()),
        "resets": len(resets),
        "resets_matched": len(matched),
        "resets_unmatched_frames": [r.get("frame") for i, r in enumerate(resets) if i not in matched][:50],
        "kernel_unmatched": sum(1 for r in sends if id(r) not in matched_ids),
        "verdict_by_reason": {k: dict(v) for k, v in verdict_by_reason.items()},
        "kernel_agreement": _ratio(
            sum(1 for i, t in truths.items() if not t.echo and resets[i].get("verdict") == t.verdict), len(primaries)
        ),
        "echo_agreement": _ratio(
            sum(1 for i, t in truths.items() if t.echo and resets[i].get("verdict") == t.verdict),
            len(truths) - len(primaries),
        ),
        "origin_agreement": _ratio(
            sum(1 for i, t in truths.items() if resets[i].get("origin") == t.origin), len(truths)
        ),
        "truth_verdicts": dict(Counter(t.verdict for t in truths.values()).most_common()),
        "middlebox_resets": sum(1 for t in truths.values() if t.origin == "middlebox"),
        "forged_resets": len(truth.forged_resets(run)),
        "nft": run.run.get("nft"),
        "listen_overflow_drops": sum(1 for r in run.kernel if r.get("event") == "kfree_skb"),
        "synack_retransmits": sum(1 for r in run.kernel if r.get("event") == "tcp_retransmit_synack"),
        "client_attempts": len(run.clients),
        "client_outcomes": dict(outcomes.most_common()),
        "client_attempts_without_connection": sum(1 for a in run.clients if id(a) not in used),
        "nstat": {side: data.get("counters", {}) for side, data in run.nstat.items()},
    }
    return doc


def nft_counters(before: str | None, after: str | None) -> dict:
    """Per rule of the router's table (by comment, else ``handle N``): packets and bytes before,
    after and in between, from ``nft -j list table`` outputs.  Unreadable output gives ``error``."""
    rules: dict[str, dict] = {}
    for when, text in (("before", before), ("after", after)):
        if not text:
            continue
        try:
            items = json.loads(text).get("nftables", [])
        except (ValueError, AttributeError):
            return {"error": f"nft output ({when}) is not JSON"}
        for item in items:
            rule = item.get("rule") if isinstance(item, dict) else None
            if not rule:
                continue
            name = rule.get("comment") or f"handle {rule.get('handle')}"
            counter = next((e["counter"] for e in rule.get("expr", []) if isinstance(e, dict) and "counter" in e), None)
            if counter is None:
                continue
            entry = rules.setdefault(name, {"chain": rule.get("chain"), "before": {"packets": 0, "bytes": 0}})
            entry[when] = {"packets": counter.get("packets", 0), "bytes": counter.get("bytes", 0)}
    for entry in rules.values():
        after_ = entry.get("after", entry["before"])
        entry["packets"] = after_["packets"] - entry["before"]["packets"]
        entry["bytes"] = after_["bytes"] - entry["before"]["bytes"]
    return {"rules": rules}


def client_lost_bytes(connection: dict) -> int:
    """Bytes the client expected and did not read (0 when unknown)."""
    expected = connection.get("client_bytes_expected")
    read = connection.get("client_bytes_read")
    if expected is None or read is None:
        return 0
    return max(0, expected - read)


def _reason_key(record: dict) -> str:
    """``TCP_FLAGS/LISTEN`` for a listener's reset, else the bare reason."""
    reason = record.get("reason") or "NOT_SPECIFIED"
    return f"{reason}/LISTEN" if record.get("state") == "TCP_LISTEN" else reason


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None
