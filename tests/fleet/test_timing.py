"""Phase timings for ``benchmarks/fleet.py --breakdown``: off unless the environment names a file."""

from __future__ import annotations

import json

from rstscope.fleet import timing


def test_off_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(timing.ENV, raising=False)
    with timing.phase("parent", "nothing"):
        pass
    assert not list(tmp_path.iterdir())


def test_phases_and_stopwatches_append_lines(monkeypatch, tmp_path):
    path = tmp_path / "timings"
    monkeypatch.setenv(timing.ENV, str(path))
    with timing.phase("parent", "merge"):
        sum(range(10_000))
    watch = timing.Stopwatch()
    for _ in range(3):
        with watch.timing():
            pass
    watch.record("phase 2", "barrier waits")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["role"], r["phase"]) for r in lines] == [("parent", "merge"), ("phase 2", "barrier waits")]
    assert watch.count == 3 and all(r["wall"] >= 0 and r["cpu"] >= 0 for r in lines)


def test_timed_yields_every_item_and_times_each_fetch():
    watch = timing.Stopwatch()
    assert list(timing.timed(iter([3, 1, 2]), watch)) == [3, 1, 2]
    assert watch.count == 4  # three items and the fetch that found the end
