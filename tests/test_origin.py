"""Origin of a RST: the TTL comparison and the decision list (the wire cases are in test_verdicts)."""

from __future__ import annotations

import pytest

from rstscope.connections import TtlRange
from rstscope.evidence import FINDINGS
from rstscope.origin import (
    STRONG_MIDDLEBOX,
    SUPPORTING_MIDDLEBOX,
    SUSPECTED_MIDDLEBOX,
    Origin,
    compare_ttl,
    hops,
    judge,
)


@pytest.mark.parametrize(
    ("ttl", "initial", "hop_count"),
    [
        # Linux/BSD/macOS start at 64, Windows at 128, routers at 255, very old Windows at 32
        (64, 64, 0), (63, 64, 1), (44, 64, 20), (128, 128, 0), (117, 128, 11), (255, 255, 0), (240, 255, 15),
        (30, 32, 2),
    ],
)  # fmt: skip
def test_hops_from_the_usual_initial_ttls(ttl, initial, hop_count):
    assert hops(ttl) == hop_count
    assert ttl + hop_count == initial


@pytest.mark.parametrize(
    ("ttl", "baseline", "finding"),
    [
        # the sender's own packets
        (63, TtlRange(63, 63, 10), "origin.ttl_matches_sender"),
        (62, TtlRange(61, 63, 10), "origin.ttl_matches_sender"),  # a path change widened the range
        # one hop off: suspected when the sender's TTL never moved, too close to tell when it did
        (64, TtlRange(63, 63, 10), "origin.ttl_one_hop_off"),
        (64, TtlRange(63, 63, 2), "origin.ttl_near_sender"),  # too few packets to call it steady
        (64, TtlRange(62, 63, 10), "origin.ttl_near_sender"),
        # two hops, or another stack's initial TTL
        (61, TtlRange(63, 63, 10), "origin.ttl_differs"),
        (64, TtlRange(127, 127, 10), "origin.ttl_differs"),  # a Linux device before a Windows server
        (128, TtlRange(127, 127, 10), "origin.ttl_one_hop_off"),  # both start at 128: one hop
        (65, TtlRange(64, 64, 10), "origin.ttl_differs"),  # 65 can only start at 128: another stack
        (40, None, "origin.no_ttl_baseline"),
    ],
)
def test_compare_ttl(ttl, baseline, finding):
    assert compare_ttl(ttl, baseline, whose="the server's").finding == finding


def test_comparison_names_what_was_compared():
    detail = compare_ttl(64, TtlRange(63, 63, 12), whose="the server's").detail
    assert detail == "TTL 64 vs 63 on 12 of the server's packets"


@pytest.mark.parametrize(
    ("findings", "origin"),
    [
        (["origin.ttl_matches_sender"], Origin.ENDPOINT),
        (["origin.ttl_differs"], Origin.MIDDLEBOX),
        (["origin.ttl_one_hop_off"], Origin.MIDDLEBOX),
        # the sender went on after its own RST: not its RST, whatever the TTL says (a forger copies it)
        (["origin.ttl_matches_sender", "origin.sender_kept_sending"], Origin.MIDDLEBOX),
        # an IP ID alone never decides
        (["origin.ttl_matches_sender", "origin.ip_id_reused"], Origin.ENDPOINT),
        (["origin.ttl_near_sender"], Origin.UNDETERMINED),
        # supporting evidence tips a TTL just outside a varying range, never a matching one
        (["origin.ttl_near_sender", "origin.options_differ"], Origin.MIDDLEBOX),
        (["origin.ttl_matches_sender", "origin.options_differ"], Origin.ENDPOINT),
        (["origin.no_ttl_baseline", "origin.ip_id_reused"], Origin.UNDETERMINED),
        (["origin.no_ttl_baseline"], Origin.UNDETERMINED),
        ([], Origin.UNDETERMINED),
    ],
)
def test_judge(findings, origin):
    got, used = judge(findings)
    assert got is origin
    assert set(used) <= set(findings)
    if origin is Origin.MIDDLEBOX:
        assert used


def test_origin_findings_are_registered():
    for finding in STRONG_MIDDLEBOX + SUSPECTED_MIDDLEBOX + SUPPORTING_MIDDLEBOX:
        assert finding in FINDINGS
    for finding in ("origin.ttl_matches_sender", "origin.ttl_near_sender", "origin.no_ttl_baseline"):
        assert finding in FINDINGS
