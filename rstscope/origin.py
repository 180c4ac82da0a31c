"""Origin: did the endpoint whose address a RST bears send it, or something on the path?

A RST carries the endpoint's addresses whoever sent it: a firewall's ``reject with tcp reset``, a
load balancer or NAT whose state expired, an injector.  What the wire can still tell (RESETS.md,
"Middleboxes, forged and ignored resets"):

* **TTL / hop limit.**  A sender's packets reach the capture point with one TTL (its initial TTL, 64,
  128 or 255 by stack, minus the hops between).  A RST sent by a device nearer or farther arrives
  with another.  The baseline is the supposed sender's own non-RST packets in the same direction on
  this connection, else (a RST at the SYN) the same host's packets on its other connections.  Its
  whole range counts as the sender's, so a path change during the capture widens it instead of
  raising an alarm; one hop off a constant TTL is only suspected (a path change does the same).
* **What happened after.**  A real endpoint that reset keeps no connection: it sends nothing more but
  reply RSTs.  A supposed sender that went on sending never reset (forged or middlebox RST); the
  receiver's kernel then answers those segments with RSTs of its own, or, if it too went on, the RST
  changed nothing (see ``ignored`` in :mod:`rstscope.verdicts`).
* **IP ID, options and window.**  A forger that copies the sender's IP ID may reuse the ID of the
  sender's last or next genuine packet; Linux's own active RST|ACK carries the timestamps its segments
  carry and advertises its receive window, most middleboxes and forgers send no options and a zero
  window.  Supporting evidence only: stacks differ too much for these to decide alone; they tip a TTL
  that is one hop outside a varying range.

Limits: a forged RST that copies the TTL and comes alone, with nothing after it, looks exactly like
the endpoint's own (``undetermined`` or ``endpoint``); a firewall on the endpoint's own host sends
with the host's TTL.  Without any packet of the sender to compare, the origin is ``undetermined``.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from rstscope.connections import TtlRange

INITIAL_TTLS = (32, 64, 128, 255)
"""Initial TTLs in use: old Windows 32; Linux, BSD, macOS 64; Windows 128; network gear 255 (RFC 1700)."""


class Origin(enum.Enum):
    ENDPOINT = "endpoint"
    """The endpoint whose address the RST bears sent it (its TTL matches that host's packets)."""
    MIDDLEBOX = "middlebox"
    """Something on the path sent it: its TTL is not the sender's, or the sender went on after it."""
    UNDETERMINED = "undetermined"
    """Nothing to compare it with, or the evidence is too weak either way."""


def initial_ttl(ttl: int) -> int:
    """The smallest common initial TTL at or above ``ttl``."""
    return next(t for t in INITIAL_TTLS if ttl <= t)


def hops(ttl: int) -> int:
    """Hops between the sender and the capture point, assuming the usual initial TTL."""
    return initial_ttl(ttl) - ttl


@dataclass(frozen=True, kw_only=True)
class TtlComparison:
    finding: str
    """One of the ``origin.ttl_*`` finding ids."""
    detail: str
    """What was compared, for the explanation: 'TTL 64 vs 63 on 12 of the server's packets'."""


@functools.lru_cache(maxsize=4096)  # pure; a reset storm asks the same few questions per RST
def compare_ttl(ttl: int, baseline: TtlRange | None, *, whose: str) -> TtlComparison:
    """How a RST's TTL compares with its supposed sender's own packets (``baseline``)."""
    if baseline is None:
        return TtlComparison(finding="origin.no_ttl_baseline", detail=f"no other packet of {whose} to compare")
    seen = str(baseline.low) if baseline.low == baseline.high else f"{baseline.low}-{baseline.high}"
    detail = f"TTL {ttl} vs {seen} on {baseline.packets:,} of {whose} packets"
    if baseline.low <= ttl <= baseline.high:
        return TtlComparison(finding="origin.ttl_matches_sender", detail=detail)
    nearest = baseline.low if ttl < baseline.low else baseline.high
    other_stack = initial_ttl(ttl) != initial_ttl(nearest)
    if not other_stack and abs(ttl - nearest) == 1:
        steady = baseline.low == baseline.high and baseline.packets >= 3
        return TtlComparison(finding="origin.ttl_one_hop_off" if steady else "origin.ttl_near_sender", detail=detail)
    return TtlComparison(finding="origin.ttl_differs", detail=detail)


STRONG_MIDDLEBOX = ("origin.sender_kept_sending", "origin.ttl_differs")
"""Each alone shows that the endpoint did not send the RST."""
SUSPECTED_MIDDLEBOX = ("origin.ttl_one_hop_off",)
"""Points at another sender unless something says the endpoint sent it."""
SUPPORTING_MIDDLEBOX = ("origin.ip_id_reused", "origin.options_differ", "origin.window_differs")
"""Never decides alone; with a TTL just outside the sender's (varying) range it does."""


def judge(findings: list[str] | tuple[str, ...]) -> tuple[Origin, tuple[str, ...]]:
    """The origin and the finding ids it rests on, as a decision list (first match wins)."""
    return _judge(tuple(findings))


@functools.lru_cache(maxsize=4096)  # pure; RSTs share a few lists of findings (evidence asks per RST)
def _judge(findings: tuple[str, ...]) -> tuple[Origin, tuple[str, ...]]:
    strong = tuple(f for f in STRONG_MIDDLEBOX if f in findings)
    if strong:
        return Origin.MIDDLEBOX, strong + tuple(f for f in SUPPORTING_MIDDLEBOX if f in findings)
    supporting = tuple(f for f in SUPPORTING_MIDDLEBOX if f in findings)
    if "origin.ttl_one_hop_off" in findings:
        return Origin.MIDDLEBOX, ("origin.ttl_one_hop_off", *supporting)
    if "origin.ttl_near_sender" in findings and supporting:
        return Origin.MIDDLEBOX, ("origin.ttl_near_sender", *supporting)
    if "origin.ttl_matches_sender" in findings:
        return Origin.ENDPOINT, ("origin.ttl_matches_sender",)
    return Origin.UNDETERMINED, tuple(f for f in findings if f.startswith("origin."))
