"""Every verdict, and the evidence numbers behind it, on deterministic scapy-built captures."""

from __future__ import annotations

import pytest
from scapy.utils import wrpcap

from rstscope import api
from rstscope.analysis import analyze_capture
from tests import scenarios, scenarios_wild

SCENARIOS = scenarios.ALL + scenarios_wild.WILD


@pytest.fixture(params=SCENARIOS, ids=lambda f: f.__name__)
def scenario(request):
    return request.param()


def _analyze(tmp_path, scenario):
    path = tmp_path / f"{scenario.name}.pcap"
    wrpcap(str(path), scenario.packets)
    analysis = analyze_capture(path)
    return analysis, api.document(analysis)


def test_verdicts(tmp_path, scenario):
    _, doc = _analyze(tmp_path, scenario)
    got = {r["frame"]: r["verdict"] for r in doc["resets"]}
    assert got == scenario.verdicts


def test_evidence_numbers(tmp_path, scenario):
    _, doc = _analyze(tmp_path, scenario)
    resets = {r["frame"]: r for r in doc["resets"]}
    for key, fields in scenario.expect.items():
        if isinstance(key, int):
            for name, value in fields.items():
                assert resets[key][name] == value, (key, name)
    if "connections" in scenario.expect:
        assert len(doc["connections"]) == scenario.expect["connections"]
    if "server_retransmissions" in scenario.expect:
        assert doc["connections"][0]["retransmissions"]["server"] == scenario.expect["server_retransmissions"]
    if "lost_data" in scenario.expect:
        assert doc["summary"]["connections_lost_data"] == scenario.expect["lost_data"]
    if "originator_inferred" in scenario.expect:
        assert doc["connections"][0]["originator_inferred"] is scenario.expect["originator_inferred"]


def test_every_verdict_is_exercised():
    """The scenario set covers the whole verdict vocabulary."""
    from rstscope.verdicts import Verdict

    seen = {v for f in SCENARIOS for v in f().verdicts.values()}
    assert seen == {v.value for v in Verdict}


def test_a_transfer_cut_short_is_told_by_its_whole_segments(tmp_path):
    """The finding behind the unsent tail's close race, and only there: not after a partial last segment,
    not after a pause, not on the other scenarios' aborts."""
    _, doc = _analyze(tmp_path, scenarios.close_race_unsent_tail())
    (cut,) = doc["resets"]
    assert "rst.transfer_cut_short" in cut["findings"] and cut["rule"] == "close_race"
    assert "never sent" in cut["confidence_reason"] and "whole segment" in cut["explanation"]
    for make in (scenarios.abort_after_whole_response, scenarios.abort_idle, scenarios.close_race_last_ack_echoed):
        _, doc = _analyze(tmp_path, make())
        assert not any("rst.transfer_cut_short" in r["findings"] for r in doc["resets"]), make.__name__
