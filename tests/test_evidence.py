"""The finding registry: unique ids, and every id a verdict rule relies on is registered."""

from __future__ import annotations

import ast
import inspect

import pytest

from rstscope import evidence, verdicts
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
