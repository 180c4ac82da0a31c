"""The finding registry: unique ids, and every id a verdict rule relies on is registered."""

from __future__ import annotations

import ast
import inspect

import pytest

from rstscope import evidence, verdicts
from rstscope.connections.records import TtlRange
from rstscope.evidence import FINDINGS, FindingKind, Severity


def test_registering_an_id_twice_fails():
    kind = FindingKind(id="x.y", severity=Severity.INFO, summary="s")
    with pytest.raises(ValueError, match=r"x\.y"):
        evidence._kinds(kind, kind)


def _string_constants(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_rules_and_detectors_name_only_registered_findings():
    dotted = {s for s in _string_constants(verdicts) | _string_constants(evidence)
              if s.count(".") == 1 and s.split(".")[0] in {"rst", "handshake"} and " " not in s}  # fmt: skip
    assert dotted and dotted <= set(FINDINGS), dotted - set(FINDINGS)


def test_every_finding_has_a_summary_sentence():
    for kind in FINDINGS.values():
        assert kind.summary.endswith(".") and kind.summary[0].isupper(), kind.id


def test_every_verdict_has_definition_fix_and_a_rule_or_default():
    ruled = {v for v, _ in verdicts.RULES}
    for v in verdicts.Verdict:
        assert v.definition and v.fix
        assert v in ruled or v is verdicts.Verdict.UNKNOWN


class _AnyHostTtl(dict):
    """A ``host_ttl`` that gives every address a TTL range no packet of the scenarios has."""

    def get(self, key, default=None):
        return TtlRange(3, 3, 1)


def test_evidence_looks_up_host_ttl_only_for_a_responder_that_sent_nothing_else(tmp_path):
    """What lets RSTs be judged while the capture is still tracked (rstscope.judging.WhileTracking): the
    evidence of a connection looks up ``host_ttl`` (with ``get``: judging.NoneYet fails anything else) only
    for its responder's address, only when the responder sent nothing but RSTs (no TTL of its own to compare
    a RST with); evidence that looked up nothing is the same whatever ``host_ttl`` holds.  Checked on every
    scenario's connections."""
    from scapy.utils import wrpcap

    from rstscope.analysis import analyze_capture
    from rstscope.connections.records import Side
    from rstscope.judging import NoneYet
    from tests import scenarios, scenarios_wild

    reading = not_reading = 0
    for make in scenarios.ALL + scenarios_wild.WILD:
        scenario = make()
        path = tmp_path / f"{scenario.name}.pcap"
        wrpcap(str(path), scenario.packets)
        for conn in analyze_capture(path).connections.with_resets():
            recorder = NoneYet()
            found = [(e.findings, e.origin) for e in evidence.of_connection(conn, recorder)]
            silent_responder_reset = conn.ttl[Side.RESP] is None and any(o.side is Side.RESP for o in conn.resets)
            assert recorder.looked_up == ({conn.resp_addr} if silent_responder_reset else set()), scenario.name
            if recorder.looked_up:
                reading += 1
                assert "origin.no_ttl_baseline" in {f for findings, _ in found for f in findings}
            else:
                not_reading += 1
                assert found == [(e.findings, e.origin) for e in evidence.of_connection(conn, _AnyHostTtl())]
    assert reading >= 3 and not_reading >= 30  # refused SYNs and firewall resets at the SYN; the rest
