"""The compiled event loop computes what the per-row Python event pass computed: every public field of
every connection, RST observation, finding and segment after a reset, on the differential inputs and on
benchmark shapes large enough to retire and spill (digests in tests/baselines/tracker.json, frozen from
the Python event pass; see tests/tracker_reference.py)."""

from __future__ import annotations

import json

import pytest

from tests import differential, tracker_reference


@pytest.mark.parametrize("group", list(tracker_reference.GROUPS))
def test_tracker_records_match_the_reference(group, tmp_path):
    if group == "corpus" and not differential.CORPUS.is_dir():
        pytest.skip(f"reference corpus not found at {differential.CORPUS}")
    baseline = json.loads(tracker_reference.BASELINE.read_text())
    baseline = {k: v for k, v in baseline.items() if k.split("/")[0] == group}
    current = tracker_reference.digests(group, tmp_path)
    assert current.keys() == baseline.keys()
    changed = sorted(name for name in current if current[name] != baseline[name])
    assert not changed, f"{len(changed)} of {len(current)} inputs changed: {changed[:20]}"
